//! Queries on the inventory schema. Every function takes the connection (or transaction)
//! it runs on, so callers decide what commits together.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::MovementKind;

mp_common::text_enum!(MovementKind);

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

pub async fn mark_initial_stock_recorded(
    conn: &mut PgConnection,
    product_id: Uuid,
) -> sqlx::Result<()> {
    // A change that publishes a level: it gets its own version.
    sqlx::query(
        "update stock_items set initial_stock_recorded = true, version = version + 1
         where product_id = $1",
    )
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
    pub kind: MovementKind,
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

/// Changes on-hand stock by `m.delta` and writes its ledger row, in one round trip
/// (the row stays locked from here to the commit, so the fewer trips the better on a
/// product many orders buy at once). Guarded so that on-hand never goes below zero:
/// `None` when the item is missing or has fewer than `-delta` units. (The CHECK on the
/// column would refuse it too; the guard turns that into an answer instead of an
/// error.)
pub async fn move_stock(
    conn: &mut PgConnection,
    product_id: Uuid,
    m: &NewMovement<'_>,
) -> sqlx::Result<Option<(StockItem, Movement)>> {
    #[derive(sqlx::FromRow)]
    struct Moved {
        #[sqlx(flatten)]
        item: StockItem,
        movement_seq: i64,
        movement_at: DateTime<Utc>,
    }
    let id = Uuid::now_v7();
    let moved: Option<Moved> = sqlx::query_as(&format!(
        "with item as (
             update stock_items
             set on_hand = on_hand + $2, version = version + 1, updated_at = now()
             where product_id = $1 and on_hand + $2 >= 0
             returning {ITEM_COLUMNS}),
         movement as (
             insert into stock_movements
                 (id, product_id, kind, delta, reason, reference, actor_id, on_hand_after)
             select $3, product_id, $4, $2, $5, $6, $7, on_hand from item
             returning seq, created_at)
         select item.*, movement.seq as movement_seq, movement.created_at as movement_at
         from item, movement"
    ))
    .bind(product_id)
    .bind(m.delta)
    .bind(id)
    .bind(m.kind.as_str())
    .bind(m.reason)
    .bind(m.reference)
    .bind(m.actor_id)
    .fetch_optional(conn)
    .await?;
    Ok(moved.map(|moved| {
        let movement = Movement {
            seq: moved.movement_seq,
            id,
            product_id,
            kind: m.kind,
            delta: m.delta,
            reason: m.reason.to_owned(),
            reference: m.reference.map(str::to_owned),
            actor_id: m.actor_id,
            on_hand_after: moved.item.on_hand,
            created_at: moved.movement_at,
        };
        (moved.item, movement)
    }))
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
///
/// The record is written as `committed` with the order's lines, so that a commit needs
/// no second write of it; a rejection changes it in the same transaction
/// ([`settle_order`]).
pub async fn claim_order(
    conn: &mut PgConnection,
    order_id: Uuid,
    cart_id: Uuid,
    items: &[CommittedLine],
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "insert into order_commits (order_id, cart_id, status, items)
         values ($1, $2, 'committed', $3)
         on conflict (order_id) do nothing",
    )
    .bind(order_id)
    .bind(cart_id)
    .bind(Json(items))
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
/// commit stock for it: true if it did. False if the order's record exists: then this
/// statement waited for the transaction that wrote it to end, so the record can now be
/// read (and released) as committed.
pub async fn void_order(
    conn: &mut PgConnection,
    order_id: Uuid,
    cart_id: Uuid,
) -> sqlx::Result<bool> {
    Ok(sqlx::query(
        "insert into order_commits (order_id, cart_id, status) values ($1, $2, 'void')
         on conflict (order_id) do nothing",
    )
    .bind(order_id)
    .bind(cart_id)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// A reservation's durable copy. `quantity` 0 is a tombstone: the reservation ended
/// with `generation`, which keeps older copies from bringing it back.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Reservation {
    pub product_id: Uuid,
    pub cart_id: Uuid,
    pub quantity: i64,
    pub expires_at: DateTime<Utc>,
    pub generation: i64,
    pub updated_at: DateTime<Utc>,
}

const RESERVATION_COLUMNS: &str =
    "product_id, cart_id, quantity, expires_at, generation, updated_at";

/// The next reservation generation: one per change of any reservation.
pub async fn next_generation(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("select nextval('reservation_generation')")
        .fetch_one(pool)
        .await
}

/// Writes the durable copy of a reservation made in Redis with `generation`, unless a
/// newer change of it is already here. One statement, no explicit transaction.
pub async fn upsert_reservation(
    pool: &PgPool,
    product_id: Uuid,
    cart_id: Uuid,
    quantity: i64,
    expires_at: DateTime<Utc>,
    generation: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "insert into reservations (product_id, cart_id, quantity, expires_at, generation)
         values ($1, $2, $3, $4, $5)
         on conflict (product_id, cart_id) do update
         set quantity = excluded.quantity, expires_at = excluded.expires_at,
             generation = excluded.generation, updated_at = now()
         where reservations.generation < excluded.generation",
    )
    .bind(product_id)
    .bind(cart_id)
    .bind(quantity)
    .bind(expires_at)
    .bind(generation)
    .execute(pool)
    .await
    .map(drop)
}

/// Ends a cart's reservation of a product with a new generation (a tombstone, written
/// even if nothing was held, so that a reservation still on its way is older than
/// this end). `None` if the product has no stock item.
pub async fn end_reservation(
    conn: &mut PgConnection,
    cart_id: Uuid,
    product_id: Uuid,
) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "insert into reservations (product_id, cart_id, quantity, expires_at, generation)
         select $1, $2, 0, now(), nextval('reservation_generation')
         where exists (select 1 from stock_items where product_id = $1)
         on conflict (product_id, cart_id) do update
         set quantity = 0, expires_at = excluded.expires_at,
             generation = excluded.generation, updated_at = now()
         returning generation",
    )
    .bind(product_id)
    .bind(cart_id)
    .fetch_optional(conn)
    .await
}

/// Ends the cart's reservations of `product_ids` that still hold stock, each with a new
/// generation; with `up_to`, only those of that generation or older. Returns the
/// products whose reservation ended.
pub async fn end_reservations(
    conn: &mut PgConnection,
    cart_id: Uuid,
    product_ids: &[Uuid],
    up_to: Option<i64>,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "update reservations
         set quantity = 0, generation = nextval('reservation_generation'), updated_at = now()
         where cart_id = $1 and product_id = any($2) and quantity > 0
           and ($3::bigint is null or generation <= $3)
         returning product_id",
    )
    .bind(cart_id)
    .bind(product_ids)
    .bind(up_to)
    .fetch_all(conn)
    .await
}

pub async fn reservation_for_update(
    conn: &mut PgConnection,
    product_id: Uuid,
    cart_id: Uuid,
) -> sqlx::Result<Option<Reservation>> {
    sqlx::query_as(&format!(
        "select {RESERVATION_COLUMNS} from reservations
         where product_id = $1 and cart_id = $2 for update"
    ))
    .bind(product_id)
    .bind(cart_id)
    .fetch_optional(conn)
    .await
}

/// Extends a reservation (same generation: it is the same reservation, held longer).
pub async fn extend_reservation(
    conn: &mut PgConnection,
    product_id: Uuid,
    cart_id: Uuid,
    ttl_ms: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "update reservations
         set expires_at = greatest(expires_at, now() + make_interval(secs => $3::double precision / 1000)),
             updated_at = now()
         where product_id = $1 and cart_id = $2",
    )
    .bind(product_id)
    .bind(cart_id)
    .bind(ttl_ms)
    .execute(conn)
    .await
    .map(drop)
}

/// Units held by live reservations (quantity > 0, unexpired) per product, leaving out
/// `exclude`'s.
pub async fn reserved_totals(
    conn: &mut PgConnection,
    product_ids: &[Uuid],
    exclude: Option<Uuid>,
) -> sqlx::Result<HashMap<Uuid, i64>> {
    let rows: Vec<(Uuid, i64)> = sqlx::query_as(
        "select product_id, sum(quantity)::bigint from reservations
         where product_id = any($1) and quantity > 0 and expires_at > now()
           and ($2::uuid is null or cart_id <> $2)
         group by product_id",
    )
    .bind(product_ids)
    .bind(exclude)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// The live reservations of a product (quantity > 0, unexpired).
pub async fn live_reservations(
    conn: &mut PgConnection,
    product_id: Uuid,
) -> sqlx::Result<Vec<crate::domain::Held>> {
    let rows: Vec<(Uuid, i64, i64)> = sqlx::query_as(
        "select cart_id, quantity, generation from reservations
         where product_id = $1 and quantity > 0 and expires_at > now()",
    )
    .bind(product_id)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(cart_id, quantity, generation)| crate::domain::Held {
            cart_id,
            quantity,
            generation,
        })
        .collect())
}

/// What a mirror rebuild of `product_ids` sends: the live reservations, and the
/// tombstones young enough that an older copy could still be on its way.
pub async fn mirror_reservations(
    conn: &mut PgConnection,
    product_ids: &[Uuid],
    tombstone_window_ms: i64,
) -> sqlx::Result<Vec<Reservation>> {
    sqlx::query_as(&format!(
        "select {RESERVATION_COLUMNS} from reservations
         where product_id = any($1)
           and ((quantity > 0 and expires_at > now())
                or (quantity = 0 and updated_at > now() - make_interval(secs => $2::double precision / 1000)))"
    ))
    .bind(product_ids)
    .bind(tombstone_window_ms)
    .fetch_all(conn)
    .await
}

/// Marks the mirrors of `product_ids` as built and returns those that never were:
/// their first build cannot have reservations on their way. Marked before the build,
/// so a rebuild after a loss of a first build always settles. Autocommit.
pub async fn claim_first_mirror(
    conn: &mut PgConnection,
    product_ids: &[Uuid],
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "update stock_items set mirrored = true
         where product_id = any($1) and not mirrored
         returning product_id",
    )
    .bind(product_ids)
    .fetch_all(conn)
    .await
}

/// The cart's reservations of `product_ids`, tombstones included.
pub async fn cart_reservations(
    conn: &mut PgConnection,
    cart_id: Uuid,
    product_ids: &[Uuid],
) -> sqlx::Result<Vec<Reservation>> {
    sqlx::query_as(&format!(
        "select {RESERVATION_COLUMNS} from reservations
         where cart_id = $1 and product_id = any($2)"
    ))
    .bind(cart_id)
    .bind(product_ids)
    .fetch_all(conn)
    .await
}

/// Drops tombstones and expired reservations older than a day: no copy that old is
/// still on its way.
pub async fn purge_reservations(pool: &PgPool) -> sqlx::Result<u64> {
    Ok(sqlx::query(
        "delete from reservations
         where (quantity = 0 and updated_at < now() - interval '1 day')
            or (quantity > 0 and expires_at < now() - interval '1 day')",
    )
    .execute(pool)
    .await?
    .rows_affected())
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
