//! What the Redis mirror of stock is built from: the items' on-hand rows, and whether
//! a mirror was ever built.

use sqlx::PgConnection;
use uuid::Uuid;

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
