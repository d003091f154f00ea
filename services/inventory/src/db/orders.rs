//! Orders' stock records: one per order, claimed before a commit so that a redelivered
//! or late order event can never commit or release stock twice.

use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

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
