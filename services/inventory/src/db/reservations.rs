//! Reservations' durable copies (Redis holds the live ones; see `store.rs`), their
//! generations and tombstones.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

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
