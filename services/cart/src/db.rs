//! Queries on the `cart` schema. Each takes the caller's connection or transaction.

use chrono::{DateTime, Utc};
use mp_events::{Currency, Money};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::CartStatus;

mp_common::text_enum!(CartStatus);

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Cart {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub status: CartStatus,
    pub currency: Currency,
    pub order_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_activity_at: DateTime<Utc>,
    pub checked_out_at: Option<DateTime<Utc>>,
    pub abandoned_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Item {
    pub cart_id: Uuid,
    pub product_id: Uuid,
    pub vendor_id: Uuid,
    pub name: String,
    pub quantity: i64,
    pub unit_price: i64,
    pub added_price: i64,
    pub price_revision: i64,
    pub generation: i64,
    pub added_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const CART: &str = "id, customer_id, status, currency, order_id, created_at, updated_at, \
                    last_activity_at, checked_out_at, abandoned_at";

pub async fn cart(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Cart>> {
    sqlx::query_as(&format!("select {CART} from carts where id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

pub async fn cart_for_update(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Cart>> {
    sqlx::query_as(&format!(
        "select {CART} from carts where id = $1 for update"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

pub async fn open_cart(conn: &mut PgConnection, customer_id: Uuid) -> sqlx::Result<Option<Cart>> {
    sqlx::query_as(&format!(
        "select {CART} from carts where customer_id = $1 and status = 'open'"
    ))
    .bind(customer_id)
    .fetch_optional(conn)
    .await
}

/// Inserts an open cart, or returns `None` when the customer already has one (a
/// concurrent request made it).
pub async fn insert_cart(
    conn: &mut PgConnection,
    id: Uuid,
    customer_id: Uuid,
    currency: Currency,
) -> sqlx::Result<Option<Cart>> {
    sqlx::query_as(&format!(
        "insert into carts (id, customer_id, currency) values ($1, $2, $3)
         on conflict (customer_id) where status = 'open' do nothing
         returning {CART}"
    ))
    .bind(id)
    .bind(customer_id)
    .bind(currency)
    .fetch_optional(conn)
    .await
}

/// Records activity on the cart (it is not idle).
pub async fn touch(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<()> {
    sqlx::query("update carts set last_activity_at = now(), updated_at = now() where id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

const ITEM: &str = "cart_id, product_id, vendor_id, name, quantity, unit_price, added_price, \
                    price_revision, generation, added_at, updated_at";

pub async fn items(conn: &mut PgConnection, cart_id: Uuid) -> sqlx::Result<Vec<Item>> {
    sqlx::query_as(&format!(
        "select {ITEM} from cart_items where cart_id = $1 order by added_at, product_id"
    ))
    .bind(cart_id)
    .fetch_all(conn)
    .await
}

pub async fn item(
    conn: &mut PgConnection,
    cart_id: Uuid,
    product_id: Uuid,
) -> sqlx::Result<Option<Item>> {
    sqlx::query_as(&format!(
        "select {ITEM} from cart_items where cart_id = $1 and product_id = $2"
    ))
    .bind(cart_id)
    .bind(product_id)
    .fetch_optional(conn)
    .await
}

/// A line as the catalog and inventory described it at the time of a change.
pub struct LineUpdate<'a> {
    pub cart_id: Uuid,
    pub product_id: Uuid,
    pub vendor_id: Uuid,
    pub name: &'a str,
    pub quantity: i64,
    pub unit_price: i64,
    pub price_revision: i64,
    pub generation: i64,
}

/// Inserts the line or sets its quantity and reservation generation. The catalog's name
/// and price replace the stored ones only when they come from a newer revision.
pub async fn upsert_item(conn: &mut PgConnection, l: &LineUpdate<'_>) -> sqlx::Result<Item> {
    sqlx::query_as(&format!(
        "insert into cart_items (cart_id, product_id, vendor_id, name, quantity, unit_price,
                                 added_price, price_revision, generation)
         values ($1, $2, $3, $4, $5, $6, $6, $7, $8)
         on conflict (cart_id, product_id) do update set
             quantity = excluded.quantity,
             generation = greatest(cart_items.generation, excluded.generation),
             name = case when excluded.price_revision > cart_items.price_revision
                         then excluded.name else cart_items.name end,
             unit_price = case when excluded.price_revision > cart_items.price_revision
                               then excluded.unit_price else cart_items.unit_price end,
             price_revision = greatest(cart_items.price_revision, excluded.price_revision),
             updated_at = now()
         returning {ITEM}"
    ))
    .bind(l.cart_id)
    .bind(l.product_id)
    .bind(l.vendor_id)
    .bind(l.name)
    .bind(l.quantity)
    .bind(l.unit_price)
    .bind(l.price_revision)
    .bind(l.generation)
    .fetch_one(conn)
    .await
}

/// Sets a line's quantity (the reservation for it was made with `generation`).
pub async fn set_quantity(
    conn: &mut PgConnection,
    cart_id: Uuid,
    product_id: Uuid,
    quantity: i64,
    generation: i64,
) -> sqlx::Result<Option<Item>> {
    sqlx::query_as(&format!(
        "update cart_items set quantity = $3, generation = greatest(generation, $4),
                updated_at = now()
         where cart_id = $1 and product_id = $2
         returning {ITEM}"
    ))
    .bind(cart_id)
    .bind(product_id)
    .bind(quantity)
    .bind(generation)
    .fetch_optional(conn)
    .await
}

/// What became of a renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    Recorded,
    /// The line holds another quantity now.
    Changed(i64),
    /// The line was removed.
    Gone,
}

/// Records the generation of a renewal made with `quantity`, if the line still holds it.
pub async fn record_renewal(
    conn: &mut PgConnection,
    cart_id: Uuid,
    product_id: Uuid,
    quantity: i64,
    generation: i64,
) -> sqlx::Result<Renewal> {
    let updated = sqlx::query(
        "update cart_items set generation = greatest(generation, $4)
         where cart_id = $1 and product_id = $2 and quantity = $3",
    )
    .bind(cart_id)
    .bind(product_id)
    .bind(quantity)
    .bind(generation)
    .execute(&mut *conn)
    .await?;
    if updated.rows_affected() == 1 {
        return Ok(Renewal::Recorded);
    }
    Ok(item(conn, cart_id, product_id)
        .await?
        .map_or(Renewal::Gone, |i| Renewal::Changed(i.quantity)))
}

pub async fn delete_item(
    conn: &mut PgConnection,
    cart_id: Uuid,
    product_id: Uuid,
) -> sqlx::Result<Option<Item>> {
    sqlx::query_as(&format!(
        "delete from cart_items where cart_id = $1 and product_id = $2 returning {ITEM}"
    ))
    .bind(cart_id)
    .bind(product_id)
    .fetch_optional(conn)
    .await
}

/// Marks an open cart checked out for `order_id`; false when it was not open.
pub async fn mark_checked_out(
    conn: &mut PgConnection,
    cart_id: Uuid,
    order_id: Uuid,
) -> sqlx::Result<bool> {
    let r = sqlx::query(
        "update carts set status = 'checked_out', order_id = $2, checked_out_at = now(),
                updated_at = now(), last_activity_at = now()
         where id = $1 and status = 'open'",
    )
    .bind(cart_id)
    .bind(order_id)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Abandons up to `limit` open carts idle for `idle_secs` or more and returns them.
/// Carts locked by a request in progress are skipped (that request is activity).
pub async fn abandon_idle(
    conn: &mut PgConnection,
    idle_secs: f64,
    limit: i64,
) -> sqlx::Result<Vec<Cart>> {
    sqlx::query_as(&format!(
        "update carts set status = 'abandoned', abandoned_at = now(), updated_at = now()
         where id in (
             select id from carts
             where status = 'open'
               and last_activity_at <= now() - make_interval(secs => $1)
             order by last_activity_at
             limit $2
             for update skip locked)
         returning {CART}"
    ))
    .bind(idle_secs)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Applies a product's new name and price to the lines of open carts that hold an
/// older revision of it. Lines in another currency keep their price. Returns how many
/// lines changed.
/// Takes the catalog's current price of lines as the one the customer has now seen
/// (`added_price` too, so the cart no longer flags them as changed).
pub async fn accept_prices(
    conn: &mut PgConnection,
    cart_id: Uuid,
    lines: &[(Uuid, i64, i64)],
) -> sqlx::Result<()> {
    for &(product_id, price, revision) in lines {
        sqlx::query(
            "update cart_items set unit_price = $3, added_price = $3,
                 price_revision = greatest(price_revision, $4), updated_at = now()
             where cart_id = $1 and product_id = $2",
        )
        .bind(cart_id)
        .bind(product_id)
        .bind(price)
        .bind(revision)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

pub async fn refresh_prices(
    conn: &mut PgConnection,
    product_id: Uuid,
    name: &str,
    price: Money,
    revision: i64,
) -> sqlx::Result<u64> {
    let r = sqlx::query(
        "update cart_items i set
             name = $2,
             unit_price = case when c.currency = $4 then $3 else i.unit_price end,
             price_revision = $5,
             updated_at = now()
         from carts c
         where c.id = i.cart_id and c.status = 'open'
           and i.product_id = $1 and i.price_revision < $5",
    )
    .bind(product_id)
    .bind(name)
    .bind(price.amount())
    .bind(price.currency())
    .bind(revision)
    .execute(conn)
    .await?;
    Ok(r.rows_affected())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CheckoutRequest {
    pub customer_id: Uuid,
    pub idempotency_key: String,
    pub cart_id: Uuid,
    pub fingerprint: String,
    pub order_id: Uuid,
    pub status: String,
    /// Whether the lease of an in-flight request still runs.
    pub leased: bool,
    pub response_status: Option<i32>,
    pub response_body: Option<Value>,
}

const REQUEST: &str = "customer_id, idempotency_key, cart_id, fingerprint, order_id, status, \
                       coalesce(locked_until > now(), false) as leased, response_status, \
                       response_body";

/// Records a new in-flight request holding its key for `lease_secs`; `None` when the key
/// is already known.
pub async fn insert_request(
    conn: &mut PgConnection,
    customer_id: Uuid,
    key: &str,
    cart_id: Uuid,
    fingerprint: &str,
    order_id: Uuid,
    lease_secs: f64,
) -> sqlx::Result<Option<CheckoutRequest>> {
    sqlx::query_as(&format!(
        "insert into checkout_requests
             (customer_id, idempotency_key, cart_id, fingerprint, order_id, status, locked_until)
         values ($1, $2, $3, $4, $5, 'in_flight', now() + make_interval(secs => $6))
         on conflict do nothing
         returning {REQUEST}"
    ))
    .bind(customer_id)
    .bind(key)
    .bind(cart_id)
    .bind(fingerprint)
    .bind(order_id)
    .bind(lease_secs)
    .fetch_optional(conn)
    .await
}

pub async fn request_for_update(
    conn: &mut PgConnection,
    customer_id: Uuid,
    key: &str,
) -> sqlx::Result<Option<CheckoutRequest>> {
    sqlx::query_as(&format!(
        "select {REQUEST} from checkout_requests
         where customer_id = $1 and idempotency_key = $2 for update"
    ))
    .bind(customer_id)
    .bind(key)
    .fetch_optional(conn)
    .await
}

/// Takes the key's lease (for `lease_secs`), or gives it up with `lease_secs = 0`.
pub async fn lease_request(
    conn: &mut PgConnection,
    customer_id: Uuid,
    key: &str,
    lease_secs: f64,
) -> sqlx::Result<()> {
    sqlx::query(
        "update checkout_requests
         set locked_until = now() + make_interval(secs => $3), updated_at = now()
         where customer_id = $1 and idempotency_key = $2 and status = 'in_flight'",
    )
    .bind(customer_id)
    .bind(key)
    .bind(lease_secs)
    .execute(conn)
    .await?;
    Ok(())
}

/// Stores the final response of a request.
pub async fn finish_request(
    conn: &mut PgConnection,
    customer_id: Uuid,
    key: &str,
    status: u16,
    body: &Value,
) -> sqlx::Result<()> {
    sqlx::query(
        "update checkout_requests
         set status = 'done', locked_until = null, response_status = $3,
             response_body = $4, updated_at = now()
         where customer_id = $1 and idempotency_key = $2",
    )
    .bind(customer_id)
    .bind(key)
    .bind(i32::from(status))
    .bind(body)
    .execute(conn)
    .await?;
    Ok(())
}

/// Forgets Idempotency-Keys older than `hours`: a retry after that is a new request
/// (which a checked-out cart refuses with 409).
pub async fn purge_requests(conn: &mut PgConnection, hours: i64) -> sqlx::Result<u64> {
    let r = sqlx::query(
        "delete from checkout_requests where created_at < now() - make_interval(hours => $1::int)",
    )
    .bind(hours)
    .execute(conn)
    .await?;
    Ok(r.rows_affected())
}
