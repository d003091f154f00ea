//! Queries on the `orders` schema. Each takes a connection (or a transaction), so the
//! caller decides what runs together.

use chrono::{DateTime, Utc};
use mp_events::catalog::{CartCheckout, OrderStatus, ShippingAddress};
use sqlx::types::Json;
use sqlx::{FromRow, PgConnection};
use uuid::Uuid;

use crate::domain::{PaymentKind, PaymentStatus, Step};

mp_common::text_enum!(Step, PaymentKind, PaymentStatus);

#[derive(Debug, Clone, FromRow)]
pub struct OrderRow {
    pub id: Uuid,
    pub cart_id: Uuid,
    pub customer_id: Uuid,
    pub status: OrderStatus,
    pub version: i64,
    pub currency: String,
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

const ORDER_COLUMNS: &str = "id, cart_id, customer_id, status, version, currency, subtotal, \
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

#[derive(Debug, Clone, FromRow)]
pub struct ShipmentRow {
    pub id: Uuid,
    pub order_id: Uuid,
    pub vendor_id: Uuid,
    pub carrier: String,
    pub tracking_number: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, FromRow)]
pub struct PaymentRow {
    pub id: Uuid,
    pub kind: PaymentKind,
    pub status: PaymentStatus,
    pub gateway: String,
    pub provider_id: Option<String>,
    pub amount: i64,
    pub currency: String,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
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
    .bind(&c.total.currency)
    .bind(c.subtotal.amount)
    .bind(c.tax.amount)
    .bind(c.total.amount)
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
        .bind(item.unit_price.amount)
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

/// Sets the saga's step without a status change (e.g. a refund of a charge that
/// arrived after the order was cancelled).
pub async fn set_step(conn: &mut PgConnection, id: Uuid, step: Option<Step>) -> sqlx::Result<()> {
    sqlx::query(
        "update orders set saga_step = $2,
             step_since = case when $2::text is null then null else now() end,
             next_attempt_at = case when $2::text is null then null else now() end,
             step_attempts = 0, claimed_until = null, updated_at = now()
         where id = $1",
    )
    .bind(id)
    .bind(step.map(Step::as_str))
    .execute(conn)
    .await?;
    Ok(())
}

/// Gives a claimed order back to the driver after `delay_ms` (a transient failure).
pub async fn retry_step_later(
    conn: &mut PgConnection,
    id: Uuid,
    delay_ms: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "update orders set claimed_until = null,
             next_attempt_at = now() + $2 * interval '1 millisecond'
         where id = $1",
    )
    .bind(id)
    .bind(delay_ms as f64)
    .execute(conn)
    .await?;
    Ok(())
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

pub async fn shipments(conn: &mut PgConnection, order_id: Uuid) -> sqlx::Result<Vec<ShipmentRow>> {
    sqlx::query_as(
        "select id, order_id, vendor_id, carrier, tracking_number, created_at from shipments
         where order_id = $1 order by created_at, id",
    )
    .bind(order_id)
    .fetch_all(conn)
    .await
}

pub struct NewShipment<'a> {
    pub order_id: Uuid,
    pub vendor_id: Uuid,
    pub carrier: &'a str,
    pub tracking_number: &'a str,
    pub shipped_by: Uuid,
}

/// Records a vendor's shipment; `None` when the vendor has shipped already.
pub async fn insert_shipment(
    conn: &mut PgConnection,
    s: &NewShipment<'_>,
) -> sqlx::Result<Option<ShipmentRow>> {
    sqlx::query_as(
        "insert into shipments (id, order_id, vendor_id, carrier, tracking_number, shipped_by)
         values ($1, $2, $3, $4, $5, $6)
         on conflict (order_id, vendor_id) do nothing
         returning id, order_id, vendor_id, carrier, tracking_number, created_at",
    )
    .bind(Uuid::now_v7())
    .bind(s.order_id)
    .bind(s.vendor_id)
    .bind(s.carrier)
    .bind(s.tracking_number)
    .bind(s.shipped_by)
    .fetch_optional(conn)
    .await
}

pub async fn payments(conn: &mut PgConnection, order_id: Uuid) -> sqlx::Result<Vec<PaymentRow>> {
    sqlx::query_as(
        "select id, kind, status, gateway, provider_id, amount, currency, error, created_at
         from payments where order_id = $1 order by created_at, id",
    )
    .bind(order_id)
    .fetch_all(conn)
    .await
}

pub async fn succeeded_payment(
    conn: &mut PgConnection,
    order_id: Uuid,
    kind: PaymentKind,
) -> sqlx::Result<Option<PaymentRow>> {
    sqlx::query_as(
        "select id, kind, status, gateway, provider_id, amount, currency, error, created_at
         from payments where order_id = $1 and kind = $2 and status = 'succeeded'",
    )
    .bind(order_id)
    .bind(kind)
    .fetch_optional(conn)
    .await
}

pub struct NewPayment<'a> {
    pub order_id: Uuid,
    pub kind: PaymentKind,
    pub status: PaymentStatus,
    pub gateway: &'a str,
    pub idempotency_key: &'a str,
    pub provider_id: Option<&'a str>,
    pub amount: i64,
    pub currency: &'a str,
    pub error: Option<&'a str>,
}

/// Records a payment attempt; `false` for a second success of the same kind (the
/// partial unique indexes allow only one).
pub async fn insert_payment(conn: &mut PgConnection, p: &NewPayment<'_>) -> sqlx::Result<bool> {
    Ok(sqlx::query(
        "insert into payments (id, order_id, kind, status, gateway, idempotency_key,
                               provider_id, amount, currency, error)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         on conflict do nothing",
    )
    .bind(Uuid::now_v7())
    .bind(p.order_id)
    .bind(p.kind)
    .bind(p.status)
    .bind(p.gateway)
    .bind(p.idempotency_key)
    .bind(p.provider_id)
    .bind(p.amount)
    .bind(p.currency)
    .bind(p.error)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
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

/// Orders waiting on a step for longer than `soft_secs`, newest first.
pub async fn stuck(
    conn: &mut PgConnection,
    soft_secs: f64,
    after: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<OrderRow>> {
    sqlx::query_as(&format!(
        "select {ORDER_COLUMNS} from orders
         where saga_step is not null and step_since < now() - $1 * interval '1 second'
           and ($2::uuid is null or id < $2)
         order by id desc limit $3"
    ))
    .bind(soft_secs)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// How many orders are in the saga: waiting on their charge or their stock, or handed a
/// payment method but not created yet; those that entered their step more than
/// `window_secs` ago are stuck (counted elsewhere), not load. Index reads only (the
/// order look-up per payment method is a scalar subquery, so it stays a key look-up).
pub async fn in_flight(conn: &mut PgConnection, window_secs: f64) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "select (select count(*) from orders
                 where saga_step in ('charge', 'stock')
                   and step_since > now() - $1 * interval '1 second')
              + (select count(*) filter (
                            where (select 1 from orders o where o.id = p.order_id) is null)
                 from payment_methods p
                 where p.created_at > now() - $1 * interval '1 second')",
    )
    .bind(window_secs)
    .fetch_one(conn)
    .await
}

/// How many orders wait on each step for longer than `soft_secs`.
pub async fn stuck_counts(
    conn: &mut PgConnection,
    soft_secs: f64,
) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as(
        "select saga_step, count(*) from orders
         where saga_step is not null and step_since < now() - $1 * interval '1 second'
         group by saga_step",
    )
    .bind(soft_secs)
    .fetch_all(conn)
    .await
}

/// A claimed piece of saga work: the order, its step and which attempt at it this is.
#[derive(Debug, Clone, FromRow)]
pub struct Claimed {
    pub id: Uuid,
    pub saga_step: Step,
    pub step_attempts: i32,
}

/// Claims up to `limit` orders whose charge or refund is due, leasing them for
/// `lease_secs`. One statement: committed as soon as it returns.
pub async fn claim_due(
    conn: &mut PgConnection,
    lease_secs: f64,
    limit: i64,
) -> sqlx::Result<Vec<Claimed>> {
    sqlx::query_as(
        "update orders set claimed_until = now() + $1 * interval '1 second',
                           step_attempts = step_attempts + 1,
                           charge_started = charge_started or saga_step = 'charge'
         where id in (select id from orders
                      where saga_step in ('charge', 'refund') and next_attempt_at <= now()
                        and (claimed_until is null or claimed_until < now())
                      order by next_attempt_at limit $2
                      for update skip locked)
         returning id, saga_step, step_attempts",
    )
    .bind(lease_secs)
    .bind(limit)
    .fetch_all(conn)
    .await
}

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

/// Keeps the provider's intent id for the order (before it is ever confirmed).
pub async fn set_intent(conn: &mut PgConnection, id: Uuid, intent: &str) -> sqlx::Result<()> {
    sqlx::query("update orders set payment_intent = $2 where id = $1 and payment_intent is null")
        .bind(id)
        .bind(intent)
        .execute(conn)
        .await
        .map(drop)
}

/// Records the outcome of the order's latest charge attempt still `requested` (or a new
/// attempt row if there is none, e.g. an approval found by asking the provider); earlier
/// attempts still `requested` captured nothing (the provider says so) and become
/// `failed`. One statement.
pub async fn settle_charge(conn: &mut PgConnection, p: &NewPayment<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "with latest as (
             select id from payments
             where order_id = $2 and kind = 'charge' and status = 'requested'
             order by created_at desc, id desc limit 1),
         settled as (
             update payments set status = $4, provider_id = coalesce($7, provider_id),
                                 error = $10
             where id in (select id from latest)
             returning id),
         earlier as (
             update payments set status = 'failed',
                                 error = coalesce(error, 'nothing captured, the provider says')
             where order_id = $2 and kind = 'charge' and status = 'requested'
               and id not in (select id from latest))
         insert into payments (id, order_id, kind, status, gateway, idempotency_key,
                               provider_id, amount, currency, error)
         select $1, $2, $3, $4, $5, $6, $7, $8, $9, $10
         where not exists (select 1 from settled)
         on conflict do nothing",
    )
    .bind(Uuid::now_v7())
    .bind(p.order_id)
    .bind(p.kind)
    .bind(p.status)
    .bind(p.gateway)
    .bind(p.idempotency_key)
    .bind(p.provider_id)
    .bind(p.amount)
    .bind(p.currency)
    .bind(p.error)
    .execute(conn)
    .await
    .map(drop)
}

/// Marks the order's charge attempts still `requested` as `failed`: the provider says
/// nothing was captured.
pub async fn fail_requested_charges(
    conn: &mut PgConnection,
    order_id: Uuid,
    error: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "update payments set status = 'failed', error = $2
         where order_id = $1 and kind = 'charge' and status = 'requested'",
    )
    .bind(order_id)
    .bind(error)
    .execute(conn)
    .await
    .map(drop)
}

/// Orders that waited on their charge or their stock past `hard_secs` and are not
/// being worked on, locked (skipping those locked elsewhere).
pub async fn overdue_for_update(
    conn: &mut PgConnection,
    hard_secs: f64,
    limit: i64,
) -> sqlx::Result<Vec<OrderRow>> {
    sqlx::query_as(&format!(
        "select {ORDER_COLUMNS} from orders
         where saga_step in ('charge', 'stock')
           and step_since < now() - $1 * interval '1 second'
           and (claimed_until is null or claimed_until < now())
         order by step_since limit $2
         for update skip locked"
    ))
    .bind(hard_secs)
    .bind(limit)
    .fetch_all(conn)
    .await
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
