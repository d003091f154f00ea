//! Payment tokens handed over for orders not created yet (the hand-off between the
//! checkout call and `cart.checkout`), and their purge.

use sqlx::{FromRow, PgConnection};
use uuid::Uuid;

use super::orders::{ORDER_COLUMNS, OrderRow};

/// The order with the payment token handed over for it (and the customer it belongs
/// to), in one read.
pub async fn order_with_method(
    conn: &mut PgConnection,
    id: Uuid,
) -> sqlx::Result<Option<(OrderRow, Option<(Uuid, String)>)>> {
    #[derive(FromRow)]
    struct Row {
        #[sqlx(flatten)]
        order: OrderRow,
        method_customer: Option<Uuid>,
        method_token: Option<String>,
    }
    let columns = ORDER_COLUMNS
        .split(", ")
        .map(|c| format!("o.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    let row: Option<Row> = sqlx::query_as(&format!(
        "select {columns}, m.customer_id as method_customer, m.payment_token as method_token
         from orders o left join payment_methods m on m.order_id = o.id
         where o.id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| (r.order, r.method_customer.zip(r.method_token))))
}

pub enum Stored {
    /// Stored now, or the same token was stored before.
    Same,
    /// Another token is stored for the order.
    Different,
}

pub async fn put_payment_method(
    conn: &mut PgConnection,
    order_id: Uuid,
    customer_id: Uuid,
    cart_id: Uuid,
    token: &str,
) -> sqlx::Result<Stored> {
    // The select cannot see a row a concurrent call inserted after this statement
    // began (it waited for it in `on conflict`); a second run does.
    let mut attempts = 0;
    let stored: (Uuid, Uuid, String) = loop {
        attempts += 1;
        let row: Option<(Uuid, Uuid, String)> = sqlx::query_as(
            "with ins as (
             insert into payment_methods (order_id, customer_id, cart_id, payment_token)
             values ($1, $2, $3, $4)
             on conflict (order_id) do nothing
             returning customer_id, cart_id, payment_token)
         select customer_id, cart_id, payment_token from ins
         union all
         select customer_id, cart_id, payment_token from payment_methods where order_id = $1
         limit 1",
        )
        .bind(order_id)
        .bind(customer_id)
        .bind(cart_id)
        .bind(token)
        .fetch_optional(&mut *conn)
        .await?;
        match row {
            Some(row) => break row,
            None if attempts < 3 => continue,
            None => return Err(sqlx::Error::RowNotFound),
        }
    };
    Ok(
        if stored.0 == customer_id && stored.1 == cart_id && stored.2 == token {
            Stored::Same
        } else {
            Stored::Different
        },
    )
}

/// The payment token handed over for the order, with the customer it belongs to.
pub async fn payment_method(
    conn: &mut PgConnection,
    order_id: Uuid,
) -> sqlx::Result<Option<(Uuid, String)>> {
    sqlx::query_as("select customer_id, payment_token from payment_methods where order_id = $1")
        .bind(order_id)
        .fetch_optional(conn)
        .await
}

pub async fn delete_payment_method(conn: &mut PgConnection, order_id: Uuid) -> sqlx::Result<()> {
    sqlx::query("delete from payment_methods where order_id = $1")
        .bind(order_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Deletes tokens older than `ttl_secs` that no order waits to charge with.
pub async fn purge_payment_methods(conn: &mut PgConnection, ttl_secs: f64) -> sqlx::Result<u64> {
    Ok(sqlx::query(
        "delete from payment_methods p
         where created_at < now() - $1 * interval '1 second'
           and not exists (select 1 from orders o
                           where o.id = p.order_id and o.saga_step = 'charge')",
    )
    .bind(ttl_secs)
    .execute(conn)
    .await?
    .rows_affected())
}
