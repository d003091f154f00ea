//! The inventory service: what the API and the event handlers do to stock. Ledger
//! movements with their low-stock alerts, vendors' adjustments, stock levels,
//! reservations with the mirror loaded on demand, and mirror refreshes from PostgreSQL.
//!
//! Inside a transaction only PostgreSQL is used (levels, alerts, movements); every
//! Redis write happens after the commit and re-reads the committed state, so a slow
//! Redis never holds a row lock.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mp_common::{ApiError, AuthUser};
use mp_events::catalog::{InventoryLowStock, InventoryUpdated, StockChange, StockLevel};
use mp_events::{HandlerError, Service};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::db::{self, Movement, NewMovement, StockItem};
use crate::domain::{LowStock, MovementKind, low_stock};
use crate::metrics::InventoryMetrics;
use crate::store::{
    Attempt, Reserve, Rows, SETTLE_MS, Store, SyncOutcome, SyncState, TOMBSTONE_MS,
};

/// A failure of PostgreSQL or Redis.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("PostgreSQL: {0}")]
    Db(#[from] sqlx::Error),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::Db(e) => e.into(),
            Error::Redis(e) => e.into(),
        }
    }
}

impl From<Error> for HandlerError {
    fn from(e: Error) -> Self {
        match e {
            Error::Db(e) => e.into(),
            Error::Redis(e) => e.into(),
        }
    }
}

/// Why a vendor's read or adjustment of stock was refused (or failed).
#[derive(Debug, thiserror::Error)]
pub enum StockError {
    #[error("no such stock item")]
    NotFound,
    /// The caller is neither a member of the product's vendor nor an admin.
    #[error("only the vendor's members and admins manage this stock")]
    Forbidden,
    /// Removing this much would take on-hand below zero.
    #[error("on hand is {on_hand}; removing {removing} would take it below zero")]
    Insufficient {
        on_hand: i64,
        available: i64,
        removing: u64,
    },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

impl From<Error> for StockError {
    fn from(e: Error) -> Self {
        match e {
            Error::Db(e) => e.into(),
            Error::Redis(e) => e.into(),
        }
    }
}

/// Why a cart's reservation was not set (or failed).
#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    #[error("no such stock item")]
    NotFound,
    /// Not enough stock: `available` is the most this cart could hold in all.
    #[error("only {available} available")]
    Insufficient { available: i64 },
    #[error("the product is inactive")]
    Inactive,
    /// A newer change of this cart's reservation was applied first; it stands.
    #[error("a later change of this reservation was made at the same time")]
    Superseded { available: i64 },
    /// The durable copy could not be written; the change in Redis was undone (or, if
    /// even that failed, expires).
    #[error("the reservation's durable copy: {0}")]
    Copy(sqlx::Error),
    /// The task writing the durable copy panicked or was cancelled.
    #[error("the reservation's durable copy failed: {0}")]
    CopyTask(tokio::task::JoinError),
    #[error(transparent)]
    Backend(#[from] Error),
}

/// A reservation as set.
#[derive(Debug, Clone)]
pub struct Reserved {
    /// When it lapses unless renewed.
    pub expires_at: DateTime<Utc>,
    /// Units of the product still free for other carts.
    pub available: i64,
    /// This change of the reservation.
    pub generation: i64,
}

/// Everything the handlers and workers need; cheap to clone.
#[derive(Clone)]
pub struct Inventory {
    pub db: PgPool,
    /// A small pool whose sessions commit without waiting for the WAL flush, for the
    /// durable copies of reservations (see [`Inventory::set_reservation`]).
    pub reservations_db: PgPool,
    pub store: Store,
    pub metrics: InventoryMetrics,
}

impl Inventory {
    /// Changes on-hand stock by `m.delta` (guarded: never below zero), writes the ledger
    /// row and settles the low-stock alert, all on `conn`, whose transaction the caller
    /// commits. PostgreSQL only. `None` if the item is missing or short.
    pub async fn apply_movement(
        &self,
        conn: &mut PgConnection,
        product_id: Uuid,
        m: &NewMovement<'_>,
    ) -> sqlx::Result<Option<(StockItem, Movement)>> {
        let Some((item, movement)) = db::move_stock(conn, product_id, m).await? else {
            return Ok(None);
        };
        let item = self.settle_low_stock(conn, item).await?;
        Ok(Some((item, movement)))
    }

    /// A vendor member's (or an admin's) adjustment of on-hand stock by `delta` (checked
    /// already), with its ledger row, low-stock alert and `inventory.updated`, in one
    /// transaction; the Redis mirror follows after the commit.
    pub async fn adjust(
        &self,
        user: &AuthUser,
        product_id: Uuid,
        delta: i64,
        reason: &str,
    ) -> Result<(StockItem, Movement, StockLevel), StockError> {
        let mut tx = self.db.begin().await?;
        let item = db::item_for_update(&mut tx, product_id)
            .await?
            .ok_or(StockError::NotFound)?;
        if !user.can_manage_vendor(item.vendor_id) {
            return Err(StockError::Forbidden);
        }
        let movement = NewMovement {
            kind: MovementKind::Adjustment,
            delta,
            reason,
            reference: None,
            actor_id: Some(user.id),
        };
        let Some((item, movement)) = self.apply_movement(&mut tx, product_id, &movement).await?
        else {
            let level = self.level(&mut tx, &item).await?;
            return Err(StockError::Insufficient {
                on_hand: item.on_hand,
                available: level.available,
                removing: delta.unsigned_abs(),
            });
        };
        let level = self.level(&mut tx, &item).await?;
        mp_events::enqueue(
            &mut tx,
            Service::Inventory,
            InventoryUpdated {
                change: StockChange::Adjustment,
                order_id: None,
                levels: vec![level.clone()],
                shortages: vec![],
            },
        )
        .await?;
        tx.commit().await?;
        // Redis only after the commit: the row lock is never held across a Redis call.
        self.mirror_logged(&[product_id], None).await;
        tracing::info!(%product_id, delta, on_hand = item.on_hand, "stock adjusted");
        Ok((item, movement, level))
    }

    /// The item, if `user` may manage its stock (a member of its vendor, or an admin).
    pub async fn managed_item(
        &self,
        user: &AuthUser,
        product_id: Uuid,
    ) -> Result<StockItem, StockError> {
        let item = db::item(&mut *self.db.acquire().await?, product_id)
            .await?
            .ok_or(StockError::NotFound)?;
        if !user.can_manage_vendor(item.vendor_id) {
            return Err(StockError::Forbidden);
        }
        Ok(item)
    }

    /// The item with its current level, for a vendor member (or an admin).
    pub async fn stock(
        &self,
        user: &AuthUser,
        product_id: Uuid,
    ) -> Result<(StockItem, StockLevel), StockError> {
        let item = self.managed_item(user, product_id).await?;
        let level = self.current_level(&item).await?;
        Ok((item, level))
    }

    /// Up to `limit` movements of the item's ledger, newest first, strictly before
    /// `before_seq`, for a vendor member (or an admin).
    pub async fn movements(
        &self,
        user: &AuthUser,
        product_id: Uuid,
        before_seq: Option<i64>,
        limit: i64,
    ) -> Result<Vec<Movement>, StockError> {
        self.managed_item(user, product_id).await?;
        let rows = db::movements(
            &mut *self.db.acquire().await?,
            product_id,
            before_seq,
            limit,
        )
        .await?;
        Ok(rows)
    }

    /// Fires `inventory.low_stock` if `item` is at or below its threshold and armed, or
    /// re-arms it above the threshold. Items still waiting for their initial stock are
    /// left alone: their zero is not a level yet.
    pub async fn settle_low_stock(
        &self,
        conn: &mut PgConnection,
        mut item: StockItem,
    ) -> sqlx::Result<StockItem> {
        if !item.initial_stock_recorded {
            return Ok(item);
        }
        match low_stock(item.low_stock_armed, item.on_hand, item.low_stock_threshold) {
            LowStock::Fire => {
                db::set_low_stock_armed(conn, item.product_id, false).await?;
                item.low_stock_armed = false;
                let level = self.level(conn, &item).await?;
                mp_events::enqueue(
                    conn,
                    Service::Inventory,
                    InventoryLowStock {
                        product_id: item.product_id,
                        vendor_id: item.vendor_id,
                        sku: item.sku.clone(),
                        name: item.name.clone(),
                        available: level.available,
                        low_stock_threshold: item.low_stock_threshold,
                        at: Utc::now(),
                    },
                )
                .await?;
                self.metrics.low_stock_alerts.inc();
                tracing::info!(product_id = %item.product_id, on_hand = item.on_hand, "low stock");
            }
            LowStock::Rearm => {
                db::set_low_stock_armed(conn, item.product_id, true).await?;
                item.low_stock_armed = true;
            }
            LowStock::Unchanged => {}
        }
        Ok(item)
    }

    /// The item's level for an event, from PostgreSQL alone (through `conn`, in the
    /// caller's transaction): on-hand from the row, reserved from the live reservations
    /// kept there; the version is the row's.
    pub async fn level(
        &self,
        conn: &mut PgConnection,
        item: &StockItem,
    ) -> sqlx::Result<StockLevel> {
        let reserved = db::reserved_totals(conn, &[item.product_id], None)
            .await?
            .get(&item.product_id)
            .copied()
            .unwrap_or(0);
        Ok(stock_level(item, reserved))
    }

    /// The item's level for a read, from the Redis mirror, loading it (and the
    /// reservations kept in PostgreSQL) if Redis lost it.
    pub async fn current_level(&self, item: &StockItem) -> Result<StockLevel, Error> {
        for _ in 0..3 {
            if let Some(reserved) = self.store.reserved(item.product_id, None).await? {
                return Ok(stock_level(item, reserved));
            }
            self.refresh(&[item.product_id], false).await?;
        }
        Ok(stock_level(item, 0))
    }

    /// Sets a reservation as change `generation` (with `replaces`, only over the entry
    /// of that generation), loading the mirror first if Redis
    /// lost it and waiting while a rebuilt mirror settles. `None` if the product has no
    /// stock item. A connection is taken from the pool only to load.
    pub async fn reserve(
        &self,
        product_id: Uuid,
        cart_id: Uuid,
        quantity: i64,
        generation: i64,
        replaces: Option<i64>,
    ) -> Result<Option<Reserve>, Error> {
        for _ in 0..4 {
            match self
                .store
                .reserve(product_id, cart_id, quantity, generation, replaces)
                .await?
            {
                Attempt::Done(outcome) => return Ok(Some(outcome)),
                Attempt::Missing => {}
                Attempt::Settling(wait) => {
                    // A little past the end, so Redis' clock has passed it too.
                    let wait = wait.min(Duration::from_millis(SETTLE_MS as u64));
                    tokio::time::sleep(wait + Duration::from_millis(10)).await
                }
            }
            if self.refresh(&[product_id], false).await?.is_empty() {
                return Ok(None);
            }
        }
        Err(mirror_unstable())
    }

    /// Sets what a cart holds of a product to `quantity` (checked already; 0 ends it,
    /// only with `replaces`), with `replaces` only over the change of that generation,
    /// then writes the durable copy. Round trips: the generation, the Redis script, the
    /// durable copy (one statement). Counts every outcome in the metrics.
    pub async fn set_reservation(
        &self,
        product_id: Uuid,
        cart_id: Uuid,
        quantity: i64,
        replaces: Option<i64>,
    ) -> Result<Reserved, ReserveError> {
        let generation = db::next_generation(&self.reservations_db)
            .await
            .map_err(Error::from)?;
        let outcome = self
            .reserve(product_id, cart_id, quantity, generation, replaces)
            .await?
            .ok_or(ReserveError::NotFound)?;
        let (previous, previous_expires_ms, available, expires_at) = match outcome {
            Reserve::Reserved {
                previous,
                previous_expires_ms,
                available,
                expires_at,
            } => (previous, previous_expires_ms, available, expires_at),
            Reserve::Insufficient { available } => {
                self.count_reservation("insufficient");
                return Err(ReserveError::Insufficient { available });
            }
            Reserve::Inactive => {
                self.count_reservation("inactive");
                return Err(ReserveError::Inactive);
            }
            Reserve::Superseded { available } => {
                self.count_reservation("superseded");
                return Err(ReserveError::Superseded { available });
            }
        };
        // The durable copy, from which reservations come back if Redis loses them: one
        // statement on a pool whose sessions use synchronous_commit=off, so no explicit
        // transaction and no wait for the WAL flush. A crash of PostgreSQL loses at most
        // the last moment of copies (those reservations are then not restored after a
        // Redis loss), never stock, which the guarded commit protects; waiting put every
        // checkpoint's disk stall into add-to-cart latency. An older generation never
        // overwrites a newer one. If it cannot be written, undo the change in Redis (only
        // while the entry still has our generation) so that both agree, and say so.
        //
        // It runs as its own task: if the caller goes away (its timeout, a dropped
        // connection) the request's future is dropped, but the copy (or the undo) still
        // happens, so Redis never keeps a reservation PostgreSQL does not know.
        let written = tokio::spawn({
            let inv = self.clone();
            async move {
                let written = db::upsert_reservation(
                    &inv.reservations_db,
                    product_id,
                    cart_id,
                    quantity,
                    expires_at,
                    generation,
                )
                .await;
                if written.is_err() {
                    let undo = inv
                        .store
                        .undo(product_id, cart_id, previous, previous_expires_ms, generation)
                        .await;
                    if let Err(undo) = undo {
                        tracing::warn!(error = %undo, %cart_id, %product_id, "could not undo a reservation; it will expire");
                    }
                }
                written
            }
        })
        .await
        .map_err(ReserveError::CopyTask)?;
        written.map_err(ReserveError::Copy)?;
        self.count_reservation("reserved");
        Ok(Reserved {
            expires_at,
            available,
            generation,
        })
    }

    fn count_reservation(&self, outcome: &str) {
        self.metrics
            .reservations
            .with_label_values(&[outcome])
            .inc();
    }

    /// Ends a cart's reservation of a product. PostgreSQL first, with a new generation:
    /// a rebuild that reads it afterwards sees the tombstone, and one that read before
    /// sends an older generation, which Redis refuses once the release is applied.
    /// Idempotent; nothing happens for a product without a stock item.
    pub async fn end_reservation(&self, cart_id: Uuid, product_id: Uuid) -> Result<(), Error> {
        let ended =
            db::end_reservation(&mut *self.db.acquire().await?, cart_id, product_id).await?;
        if let Some(generation) = ended {
            self.store.release(product_id, cart_id, generation).await?;
        }
        Ok(())
    }

    /// Writes the Redis mirror of `product_ids` from PostgreSQL's committed state,
    /// rebuilding a missing one with its unexpired reservations. Returns an outcome per
    /// product that has a stock item.
    pub async fn refresh(
        &self,
        product_ids: &[Uuid],
        verify: bool,
    ) -> Result<Vec<(Uuid, SyncOutcome)>, Error> {
        let mut conn = self.db.acquire().await?;
        let rows = db::mirror_rows(&mut conn, product_ids).await?;
        self.sync_rows(&mut conn, &rows, verify).await
    }

    /// Writes the mirrors of `rows`. Reservations are loaded and sent only for mirrors
    /// that turn out to be missing (or settled and waiting to catch up), so a pass over
    /// intact mirrors never ships every reservation through Redis. The connection is
    /// used for reads only, outside any transaction.
    pub async fn sync_rows(
        &self,
        conn: &mut PgConnection,
        rows: &[db::MirrorRow],
        verify: bool,
    ) -> Result<Vec<(Uuid, SyncOutcome)>, Error> {
        let mut outcomes = Vec::with_capacity(rows.len());
        let mut missing = Vec::new();
        for row in rows {
            let outcome = self.store.sync(row, Rows::None, verify).await?;
            if outcome.state == SyncState::Missing {
                missing.push(row);
            } else {
                outcomes.push((row.product_id, outcome));
            }
        }
        outcomes.extend(self.rebuild(conn, &missing, verify).await?);
        Ok(outcomes)
    }

    /// Rebuilds (or catches up) the mirrors of `rows` with every unexpired reservation
    /// and recent tombstone PostgreSQL holds for them.
    async fn rebuild(
        &self,
        conn: &mut PgConnection,
        rows: &[&db::MirrorRow],
        verify: bool,
    ) -> Result<Vec<(Uuid, SyncOutcome)>, Error> {
        if rows.is_empty() {
            return Ok(vec![]);
        }
        let ids: Vec<Uuid> = rows.iter().map(|r| r.product_id).collect();
        let first = db::claim_first_mirror(conn, &ids).await?;
        let reservations = db::mirror_reservations(conn, &ids, TOMBSTONE_MS).await?;
        let by_product = by_product(&reservations);
        let mut outcomes = Vec::with_capacity(rows.len());
        for row in rows {
            let held = by_product
                .get(&row.product_id)
                .map_or(&[][..], Vec::as_slice);
            let rows = if first.contains(&row.product_id) {
                Rows::Fresh
            } else {
                Rows::Rebuild(held)
            };
            outcomes.push((row.product_id, self.store.sync(row, rows, verify).await?));
        }
        Ok(outcomes)
    }

    /// After a commit (and again for a redelivered duplicate): applies PostgreSQL's
    /// committed state of `product_ids` to Redis, the on-hand mirror and `cart`'s
    /// reservations (ended ones as tombstones). Idempotent: it re-reads PostgreSQL and
    /// every write is ordered by version or generation. Failures are logged: the
    /// periodic reconciliation repairs the mirror, and reservations expire by
    /// themselves.
    pub async fn mirror_logged(&self, product_ids: &[Uuid], cart_id: Option<Uuid>) {
        if let Err(e) = self.mirror(product_ids, cart_id).await {
            tracing::warn!(error = %e, "could not bring the Redis mirror up to date; reconciliation will");
        }
    }

    async fn mirror(&self, product_ids: &[Uuid], cart_id: Option<Uuid>) -> Result<(), Error> {
        let mut conn = self.db.acquire().await?;
        let rows = db::mirror_rows(&mut conn, product_ids).await?;
        let reservations = match cart_id {
            Some(cart_id) => db::cart_reservations(&mut conn, cart_id, product_ids).await?,
            None => vec![],
        };
        let by_product = by_product(&reservations);
        let mut missing = Vec::new();
        for row in &rows {
            let cart_rows = by_product
                .get(&row.product_id)
                .map_or(&[][..], Vec::as_slice);
            let outcome = self.store.sync(row, Rows::Apply(cart_rows), false).await?;
            if outcome.state == SyncState::Missing {
                missing.push(row);
            }
        }
        self.rebuild(&mut conn, &missing, false).await?;
        Ok(())
    }
}

fn by_product(reservations: &[db::Reservation]) -> HashMap<Uuid, Vec<&db::Reservation>> {
    let mut by_product: HashMap<Uuid, Vec<&db::Reservation>> = HashMap::new();
    for r in reservations {
        by_product.entry(r.product_id).or_default().push(r);
    }
    by_product
}

fn mirror_unstable() -> Error {
    Error::Redis(redis::RedisError::from((
        redis::ErrorKind::IoError,
        "the stock mirror keeps disappearing",
    )))
}

pub fn stock_level(item: &StockItem, reserved: i64) -> StockLevel {
    StockLevel {
        product_id: item.product_id,
        vendor_id: item.vendor_id,
        on_hand: item.on_hand,
        reserved,
        available: (item.on_hand - reserved).max(0),
        version: item.version,
    }
}
