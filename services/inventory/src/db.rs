//! Queries on the inventory schema. Every function takes the connection (or transaction)
//! it runs on, so callers decide what commits together.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::MovementKind;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StockItem {
    pub product_id: Uuid,
    pub vendor_id: Uuid,
    pub sku: String,
    pub name: String,
    pub active: bool,
    pub low_stock_threshold: i64,
    pub on_hand: i64,
    pub revision: i64,
    pub initial_stock_recorded: bool,
    pub low_stock_armed: bool,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const ITEM_COLUMNS: &str = "product_id, vendor_id, sku, name, active, low_stock_threshold, \
    on_hand, revision, initial_stock_recorded, low_stock_armed, version, created_at, updated_at";

/// Product data carried by `vendor.product.created` and `vendor.product.updated`.
pub struct ProductData<'a> {
    pub product_id: Uuid,
    pub vendor_id: Uuid,
    pub sku: &'a str,
    pub name: &'a str,
    pub active: bool,
    pub low_stock_threshold: i64,
    pub revision: i64,
}

pub async fn item(conn: &mut PgConnection, product_id: Uuid) -> sqlx::Result<Option<StockItem>> {
    sqlx::query_as(&format!(
        "select {ITEM_COLUMNS} from stock_items where product_id = $1"
    ))
    .bind(product_id)
    .fetch_optional(conn)
    .await
}

pub async fn item_for_update(
    conn: &mut PgConnection,
    product_id: Uuid,
) -> sqlx::Result<Option<StockItem>> {
    sqlx::query_as(&format!(
        "select {ITEM_COLUMNS} from stock_items where product_id = $1 for update"
    ))
    .bind(product_id)
    .fetch_optional(conn)
    .await
}

/// Locks the items of `product_ids` in product id order (the one lock order everywhere).
pub async fn items_for_update(
    conn: &mut PgConnection,
    product_ids: &[Uuid],
) -> sqlx::Result<Vec<StockItem>> {
    sqlx::query_as(&format!(
        "select {ITEM_COLUMNS} from stock_items where product_id = any($1)
         order by product_id for update"
    ))
    .bind(product_ids)
    .fetch_all(conn)
    .await
}

/// Creates the item with no stock unless it exists; true if it was created.
pub async fn insert_item_if_absent(
    conn: &mut PgConnection,
    p: &ProductData<'_>,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "insert into stock_items
             (product_id, vendor_id, sku, name, active, low_stock_threshold, revision)
         values ($1, $2, $3, $4, $5, $6, $7)
         on conflict (product_id) do nothing",
    )
    .bind(p.product_id)
    .bind(p.vendor_id)
    .bind(p.sku)
    .bind(p.name)
    .bind(p.active)
    .bind(p.low_stock_threshold)
    .bind(p.revision)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Applies the product's metadata if `p.revision` is newer than the stored one.
pub async fn update_metadata(
    conn: &mut PgConnection,
    p: &ProductData<'_>,
) -> sqlx::Result<Option<StockItem>> {
    sqlx::query_as(&format!(
        "update stock_items
         set sku = $2, name = $3, active = $4, low_stock_threshold = $5, revision = $6,
             version = version + 1, updated_at = now()
         where product_id = $1 and revision < $6
         returning {ITEM_COLUMNS}"
    ))
    .bind(p.product_id)
    .bind(p.sku)
    .bind(p.name)
    .bind(p.active)
    .bind(p.low_stock_threshold)
    .bind(p.revision)
    .fetch_optional(conn)
    .await
}

/// Changes on-hand stock by `delta`, guarded so that it never goes below zero: `None`
/// when the item is missing or has fewer than `-delta` units. (The CHECK on the column
/// would refuse it too; the guard turns that into an answer instead of an error.)
pub async fn change_on_hand(
    conn: &mut PgConnection,
    product_id: Uuid,
    delta: i64,
) -> sqlx::Result<Option<StockItem>> {
    sqlx::query_as(&format!(
        "update stock_items
         set on_hand = on_hand + $2, version = version + 1, updated_at = now()
         where product_id = $1 and on_hand + $2 >= 0
         returning {ITEM_COLUMNS}"
    ))
    .bind(product_id)
    .bind(delta)
    .fetch_optional(conn)
    .await
}

pub async fn mark_initial_stock_recorded(
    conn: &mut PgConnection,
    product_id: Uuid,
) -> sqlx::Result<()> {
    sqlx::query("update stock_items set initial_stock_recorded = true where product_id = $1")
        .bind(product_id)
        .execute(conn)
        .await
        .map(drop)
}

pub async fn set_low_stock_armed(
    conn: &mut PgConnection,
    product_id: Uuid,
    armed: bool,
) -> sqlx::Result<()> {
    sqlx::query("update stock_items set low_stock_armed = $2 where product_id = $1")
        .bind(product_id)
        .bind(armed)
        .execute(conn)
        .await
        .map(drop)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Movement {
    pub seq: i64,
    pub id: Uuid,
    pub product_id: Uuid,
    pub kind: String,
    pub delta: i64,
    pub reason: String,
    pub reference: Option<String>,
    pub actor_id: Option<Uuid>,
    pub on_hand_after: i64,
    pub created_at: DateTime<Utc>,
}

const MOVEMENT_COLUMNS: &str =
    "seq, id, product_id, kind, delta, reason, reference, actor_id, on_hand_after, created_at";

pub struct NewMovement<'a> {
    pub kind: MovementKind,
    pub delta: i64,
    pub reason: &'a str,
    pub reference: Option<&'a str>,
    pub actor_id: Option<Uuid>,
}

pub async fn insert_movement(
    conn: &mut PgConnection,
    product_id: Uuid,
    m: &NewMovement<'_>,
    on_hand_after: i64,
) -> sqlx::Result<Movement> {
    sqlx::query_as(&format!(
        "insert into stock_movements
             (id, product_id, kind, delta, reason, reference, actor_id, on_hand_after)
         values ($1, $2, $3, $4, $5, $6, $7, $8)
         returning {MOVEMENT_COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(product_id)
    .bind(m.kind.as_str())
    .bind(m.delta)
    .bind(m.reason)
    .bind(m.reference)
    .bind(m.actor_id)
    .bind(on_hand_after)
    .fetch_one(conn)
    .await
}

/// A page of an item's ledger, newest first, strictly before `before_seq`.
pub async fn movements(
    conn: &mut PgConnection,
    product_id: Uuid,
    before_seq: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<Movement>> {
    sqlx::query_as(&format!(
        "select {MOVEMENT_COLUMNS} from stock_movements
         where product_id = $1 and ($2::bigint is null or seq < $2)
         order by seq desc limit $3"
    ))
    .bind(product_id)
    .bind(before_seq)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// One line of a committed order, as stored for its release.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CommittedLine {
    pub product_id: Uuid,
    pub quantity: i64,
}

/// Claims `order_id` for a commit: false if the order was seen before (committed,
/// rejected, released or void), in which case nothing may happen again. A concurrent
/// claim of the same order waits on the primary key until this transaction ends.
pub async fn claim_order(
    conn: &mut PgConnection,
    order_id: Uuid,
    cart_id: Uuid,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "insert into order_commits (order_id, cart_id, status) values ($1, $2, 'committed')
         on conflict (order_id) do nothing",
    )
    .bind(order_id)
    .bind(cart_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn settle_order(
    conn: &mut PgConnection,
    order_id: Uuid,
    status: &str,
    items: &[CommittedLine],
) -> sqlx::Result<()> {
    sqlx::query(
        "update order_commits set status = $2, items = $3, updated_at = now() where order_id = $1",
    )
    .bind(order_id)
    .bind(status)
    .bind(Json(items))
    .execute(conn)
    .await
    .map(drop)
}

/// Marks a committed order released and returns what it had committed; `None` if its
/// stock is not committed (never, rejected, or already released).
pub async fn release_order(
    conn: &mut PgConnection,
    order_id: Uuid,
) -> sqlx::Result<Option<Vec<CommittedLine>>> {
    let items: Option<Json<Vec<CommittedLine>>> = sqlx::query_scalar(
        "update order_commits set status = 'released', updated_at = now()
         where order_id = $1 and status = 'committed' returning items",
    )
    .bind(order_id)
    .fetch_optional(conn)
    .await?;
    Ok(items.map(|j| j.0))
}

/// Records that `order_id` ended before any commit, so a late `order.created` cannot
/// commit stock for it. Does nothing if the order is known.
pub async fn void_order(
    conn: &mut PgConnection,
    order_id: Uuid,
    cart_id: Uuid,
) -> sqlx::Result<()> {
    sqlx::query(
        "insert into order_commits (order_id, cart_id, status) values ($1, $2, 'void')
         on conflict (order_id) do nothing",
    )
    .bind(order_id)
    .bind(cart_id)
    .execute(conn)
    .await
    .map(drop)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Reservation {
    pub product_id: Uuid,
    pub cart_id: Uuid,
    pub quantity: i64,
    pub expires_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Writes the durable copy of a reservation. A copy with a later expiry wins, so two
/// racing writes of one (cart, product) keep the one Redis applied last.
pub async fn upsert_reservation(
    conn: &mut PgConnection,
    product_id: Uuid,
    cart_id: Uuid,
    quantity: i64,
    expires_at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "insert into reservations (product_id, cart_id, quantity, expires_at)
         values ($1, $2, $3, $4)
         on conflict (product_id, cart_id) do update
         set quantity = excluded.quantity, expires_at = excluded.expires_at, updated_at = now()
         where reservations.expires_at <= excluded.expires_at",
    )
    .bind(product_id)
    .bind(cart_id)
    .bind(quantity)
    .bind(expires_at)
    .execute(conn)
    .await
    .map(drop)
}

pub async fn reservation_for_update(
    conn: &mut PgConnection,
    product_id: Uuid,
    cart_id: Uuid,
) -> sqlx::Result<Option<Reservation>> {
    sqlx::query_as(
        "select product_id, cart_id, quantity, expires_at, updated_at from reservations
         where product_id = $1 and cart_id = $2 for update",
    )
    .bind(product_id)
    .bind(cart_id)
    .fetch_optional(conn)
    .await
}

pub async fn delete_reservations(
    conn: &mut PgConnection,
    cart_id: Uuid,
    product_ids: &[Uuid],
) -> sqlx::Result<()> {
    sqlx::query("delete from reservations where cart_id = $1 and product_id = any($2)")
        .bind(cart_id)
        .bind(product_ids)
        .execute(conn)
        .await
        .map(drop)
}

/// Unexpired reservations of `product_ids`.
pub async fn live_reservations(
    conn: &mut PgConnection,
    product_ids: &[Uuid],
) -> sqlx::Result<Vec<Reservation>> {
    sqlx::query_as(
        "select product_id, cart_id, quantity, expires_at, updated_at from reservations
         where product_id = any($1) and expires_at > now()",
    )
    .bind(product_ids)
    .fetch_all(conn)
    .await
}

/// Drops durable copies of reservations that expired more than a minute ago.
pub async fn purge_expired_reservations(pool: &PgPool) -> sqlx::Result<u64> {
    Ok(
        sqlx::query("delete from reservations where expires_at < now() - interval '1 minute'")
            .execute(pool)
            .await?
            .rows_affected(),
    )
}

/// What the Redis mirror of an item holds.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MirrorRow {
    pub product_id: Uuid,
    pub on_hand: i64,
    pub active: bool,
    pub version: i64,
}

pub async fn mirror_rows(
    conn: &mut PgConnection,
    product_ids: &[Uuid],
) -> sqlx::Result<Vec<MirrorRow>> {
    sqlx::query_as(
        "select product_id, on_hand, active, version from stock_items where product_id = any($1)",
    )
    .bind(product_ids)
    .fetch_all(conn)
    .await
}

/// Every item in product id order, a page at a time (for reconciliation).
pub async fn mirror_page(
    conn: &mut PgConnection,
    after: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<MirrorRow>> {
    sqlx::query_as(
        "select product_id, on_hand, active, version from stock_items
         where ($1::uuid is null or product_id > $1) order by product_id limit $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}
