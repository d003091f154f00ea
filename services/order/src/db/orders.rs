//! Orders: the order row with its lines and status history, its transitions, and the
//! lists that read them.

use chrono::{DateTime, Utc};
use mp_events::catalog::{CartCheckout, OrderStatus, ShippingAddress};
use mp_events::{Currency, Money};
use sqlx::types::Json;
use sqlx::{FromRow, PgConnection};
use uuid::Uuid;

use crate::domain::Step;

#[derive(Debug, Clone, FromRow)]
pub struct OrderRow {
    pub id: Uuid,
    pub cart_id: Uuid,
    pub customer_id: Uuid,
    pub status: OrderStatus,
    pub version: i64,
    pub currency: Currency,
    pub subtotal: i64,
    pub tax: i64,
    pub total: i64,
    pub shipping_address: Json<ShippingAddress>,
    pub stock_committed: bool,
    pub failure_reason: Option<String>,
    pub saga_step: Option<Step>,
    pub step_since: Option<DateTime<Utc>>,
    /// The provider's payment intent for the order, once created.
    pub payment_intent: Option<String>,
    /// Whether a driver ever worked on the charge (so the provider may hold something).
    pub charge_started: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl OrderRow {
    pub fn subtotal(&self) -> Money {
        Money::new(self.subtotal, self.currency)
    }

    pub fn tax(&self) -> Money {
        Money::new(self.tax, self.currency)
    }

    pub fn total(&self) -> Money {
        Money::new(self.total, self.currency)
    }
}

pub(super) const ORDER_COLUMNS: &str = "id, cart_id, customer_id, status, version, currency, subtotal, \
     tax, total, shipping_address, stock_committed, failure_reason, saga_step, step_since, \
     payment_intent, charge_started, created_at, updated_at";

#[derive(Debug, Clone, FromRow)]
pub struct ItemRow {
    pub order_id: Uuid,
    pub line_no: i32,
    pub product_id: Uuid,
    pub vendor_id: Uuid,
    pub name: String,
    pub quantity: i64,
    pub unit_price: i64,
}

#[derive(Debug, Clone, FromRow)]
pub struct HistoryRow {
    pub from_status: Option<OrderStatus>,
    pub to_status: OrderStatus,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
    pub by: String,
}

/// Creates the order `pending`, waiting on its charge, with its lines and first history
/// entry. `false` when an order for the cart (or with the id) exists already.
///
/// The order is created claimed by this process's saga driver for `lease_secs` (its
/// first attempt): the creating handler hands it over in memory once committed, so a
/// new order needs no claiming round trip. A process that dies first leaves a lease
/// that runs out, and any driver claims the order then.
pub async fn insert_order(
    conn: &mut PgConnection,
    c: &CartCheckout,
    lease_secs: f64,
) -> sqlx::Result<bool> {
    let inserted = sqlx::query(
        "insert into orders (id, cart_id, customer_id, status, currency, subtotal, tax, total,
                             shipping_address, saga_step, step_since, next_attempt_at,
                             claimed_until, step_attempts, charge_started)
         values ($1, $2, $3, 'pending', $4, $5, $6, $7, $8, 'charge', now(), now(),
                 now() + $9 * interval '1 second', 1, true)
         on conflict do nothing",
    )
    .bind(c.order_id)
    .bind(c.cart_id)
    .bind(c.customer_id)
    .bind(c.total.currency())
    .bind(c.subtotal.amount())
    .bind(c.tax.amount())
    .bind(c.total.amount())
    .bind(Json(&c.shipping_address))
    .bind(lease_secs)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if !inserted {
        return Ok(false);
    }
    for (i, item) in c.items.iter().enumerate() {
        sqlx::query(
            "insert into order_items (order_id, line_no, product_id, vendor_id, name, quantity,
                                      unit_price)
             values ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(c.order_id)
        .bind(i as i32 + 1)
        .bind(item.product_id)
        .bind(item.vendor_id)
        .bind(&item.name)
        .bind(item.quantity)
        .bind(item.unit_price.amount())
        .execute(&mut *conn)
        .await?;
    }
    insert_history(conn, c.order_id, None, OrderStatus::Pending, None, "system").await?;
    Ok(true)
}

pub async fn insert_history(
    conn: &mut PgConnection,
    order_id: Uuid,
    from: Option<OrderStatus>,
    to: OrderStatus,
    reason: Option<&str>,
    by: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "insert into order_status_history (order_id, from_status, to_status, reason, by)
         values ($1, $2, $3, $4, $5)",
    )
    .bind(order_id)
    .bind(from)
    .bind(to)
    .bind(reason)
    .bind(by)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn order(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<OrderRow>> {
    sqlx::query_as(&format!("select {ORDER_COLUMNS} from orders where id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// The order, locked until the transaction ends.
pub async fn order_for_update(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<OrderRow>> {
    sqlx::query_as(&format!(
        "select {ORDER_COLUMNS} from orders where id = $1 for update"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// What a transition changes besides the status.
#[derive(Debug, Clone, Default)]
pub struct Change<'a> {
    pub reason: Option<&'a str>,
    pub stock_committed: bool,
    /// `Some(step)` sets the saga's next step (due now); `Some(None)` ends the saga;
    /// `None` leaves it.
    pub step: Option<Option<Step>>,
}

/// Moves the order from `version` to `to`; `false` if another change came first.
pub async fn update_status(
    conn: &mut PgConnection,
    order: &OrderRow,
    to: OrderStatus,
    change: &Change<'_>,
) -> sqlx::Result<bool> {
    let (set_step, step) = match change.step {
        None => (false, None),
        Some(step) => (true, step.map(Step::as_str)),
    };
    let updated = sqlx::query(
        "update orders set
             status = $3, version = version + 1, updated_at = now(),
             failure_reason = coalesce($4, failure_reason),
             stock_committed = stock_committed or $5,
             saga_step = case when $6 then $7 else saga_step end,
             step_since = case when $6 then case when $7 is null then null else now() end
                          else step_since end,
             next_attempt_at = case when $6 then case when $7 is null then null else now() end
                               else next_attempt_at end,
             step_attempts = case when $6 then 0 else step_attempts end,
             claimed_until = case when $6 then null else claimed_until end
         where id = $1 and version = $2",
    )
    .bind(order.id)
    .bind(order.version)
    .bind(to)
    .bind(change.reason)
    .bind(change.stock_committed)
    .bind(set_step)
    .bind(step)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(updated == 1)
}

pub async fn items(conn: &mut PgConnection, order_ids: &[Uuid]) -> sqlx::Result<Vec<ItemRow>> {
    sqlx::query_as(
        "select order_id, line_no, product_id, vendor_id, name, quantity, unit_price
         from order_items where order_id = any($1) order by order_id, line_no",
    )
    .bind(order_ids)
    .fetch_all(conn)
    .await
}

pub async fn history(conn: &mut PgConnection, order_id: Uuid) -> sqlx::Result<Vec<HistoryRow>> {
    sqlx::query_as(
        "select from_status, to_status, reason, at, by from order_status_history
         where order_id = $1 order by seq",
    )
    .bind(order_id)
    .fetch_all(conn)
    .await
}

/// Whom a list shows: an admin sees every order; anyone else their own orders and
/// those holding lines of their vendors.
pub struct Scope<'a> {
    pub admin: bool,
    pub customer_id: Uuid,
    pub vendors: &'a [Uuid],
}

/// Orders newest first (ids are UUIDv7), after `after`.
pub async fn list(
    conn: &mut PgConnection,
    scope: &Scope<'_>,
    status: Option<OrderStatus>,
    after: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<OrderRow>> {
    sqlx::query_as(&format!(
        "select {ORDER_COLUMNS} from orders o
         where ($1::uuid is null or o.id < $1)
           and ($2::text is null or o.status = $2::text)
           and ($3 or o.customer_id = $4
                or exists (select 1 from order_items i
                           where i.order_id = o.id and i.vendor_id = any($5)))
         order by o.id desc limit $6"
    ))
    .bind(after)
    .bind(status)
    .bind(scope.admin)
    .bind(scope.customer_id)
    .bind(scope.vendors)
    .bind(limit)
    .fetch_all(conn)
    .await
}
