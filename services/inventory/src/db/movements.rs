//! The stock ledger: every change of on-hand stock is a movement, written in the same
//! statement as the change.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::items::{ITEM_COLUMNS, StockItem};
use crate::domain::MovementKind;

mp_common::text_enum!(MovementKind);

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
