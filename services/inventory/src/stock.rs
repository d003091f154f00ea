//! The operations the API and the event handlers share: ledger movements with their
//! low-stock alerts, stock levels, reservations with the mirror loaded on demand, and
//! mirror refreshes from PostgreSQL.

use std::collections::HashMap;

use chrono::Utc;
use mp_common::ApiError;
use mp_events::catalog::{InventoryLowStock, StockLevel};
use mp_events::{HandlerError, Service};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::db::{self, Movement, NewMovement, StockItem};
use crate::domain::{LowStock, low_stock};
use crate::metrics::InventoryMetrics;
use crate::store::{Reserve, Store, SyncOutcome, SyncState};

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

/// Everything the handlers and workers need; cheap to clone.
#[derive(Clone)]
pub struct Inventory {
    pub db: PgPool,
    pub store: Store,
    pub metrics: InventoryMetrics,
}

impl Inventory {
    /// Changes on-hand stock by `m.delta` (guarded: never below zero), writes the ledger
    /// row and settles the low-stock alert, all on `conn`, whose transaction the caller
    /// commits. `None` if the item is missing or short. `cart`: the cart whose
    /// reservations this change consumes, left out of the alert's available stock.
    pub async fn apply_movement(
        &self,
        conn: &mut PgConnection,
        product_id: Uuid,
        m: &NewMovement<'_>,
        cart: Option<Uuid>,
    ) -> sqlx::Result<Option<(StockItem, Movement)>> {
        let Some(item) = db::change_on_hand(conn, product_id, m.delta).await? else {
            return Ok(None);
        };
        let movement = db::insert_movement(conn, product_id, m, item.on_hand).await?;
        let item = self.settle_low_stock(conn, item, cart).await?;
        Ok(Some((item, movement)))
    }

    /// Fires `inventory.low_stock` if `item` is at or below its threshold and armed, or
    /// re-arms it above the threshold. Items still waiting for their initial stock are
    /// left alone: their zero is not a level yet.
    pub async fn settle_low_stock(
        &self,
        conn: &mut PgConnection,
        mut item: StockItem,
        cart: Option<Uuid>,
    ) -> sqlx::Result<StockItem> {
        if !item.initial_stock_recorded {
            return Ok(item);
        }
        match low_stock(item.low_stock_armed, item.on_hand, item.low_stock_threshold) {
            LowStock::Fire => {
                db::set_low_stock_armed(conn, item.product_id, false).await?;
                item.low_stock_armed = false;
                let level = self.level(&item, cart).await;
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

    /// The item's level for an event: on-hand from PostgreSQL, reservations from Redis
    /// (less `exclude`'s). Reservations are soft state: if Redis cannot say, the level
    /// shows none rather than failing the change it reports.
    pub async fn level(&self, item: &StockItem, exclude: Option<Uuid>) -> StockLevel {
        let reserved = match self.store.reserved(item.product_id, exclude).await {
            Ok(r) => r.unwrap_or(0),
            Err(e) => {
                tracing::warn!(error = %e, product_id = %item.product_id, "reservations unknown; reporting none");
                0
            }
        };
        stock_level(item, reserved)
    }

    /// The item's level for a read, loading the mirror (and the reservations kept in
    /// PostgreSQL) if Redis lost it.
    pub async fn current_level(&self, item: &StockItem) -> Result<StockLevel, Error> {
        for _ in 0..3 {
            if let Some(reserved) = self.store.reserved(item.product_id, None).await? {
                return Ok(stock_level(item, reserved));
            }
            self.refresh(&[item.product_id], false).await?;
        }
        Ok(stock_level(item, 0))
    }

    /// Sets a reservation, loading the mirror first if Redis lost it. `None` if the
    /// product has no stock item. A connection is taken from the pool only to load.
    pub async fn reserve(
        &self,
        product_id: Uuid,
        cart_id: Uuid,
        quantity: i64,
    ) -> Result<Option<Reserve>, Error> {
        if let Some(outcome) = self.store.reserve(product_id, cart_id, quantity).await? {
            return Ok(Some(outcome));
        }
        let mut conn = self.db.acquire().await?;
        self.reserve_in(&mut conn, product_id, cart_id, quantity)
            .await
    }

    /// [`Inventory::reserve`] for an event handler, loading through its transaction's
    /// connection (a second connection from the pool could wait on handlers that hold
    /// the others).
    pub async fn reserve_in(
        &self,
        conn: &mut PgConnection,
        product_id: Uuid,
        cart_id: Uuid,
        quantity: i64,
    ) -> Result<Option<Reserve>, Error> {
        for _ in 0..3 {
            if let Some(outcome) = self.store.reserve(product_id, cart_id, quantity).await? {
                return Ok(Some(outcome));
            }
            if self
                .refresh_in(conn, &[product_id], false)
                .await?
                .is_empty()
            {
                return Ok(None);
            }
        }
        Err(mirror_unstable())
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
        self.refresh_in(&mut conn, product_ids, verify).await
    }

    /// [`Inventory::refresh`] reading through `conn`.
    pub async fn refresh_in(
        &self,
        conn: &mut PgConnection,
        product_ids: &[Uuid],
        verify: bool,
    ) -> Result<Vec<(Uuid, SyncOutcome)>, Error> {
        let rows = db::mirror_rows(conn, product_ids).await?;
        self.sync_rows(conn, &rows, verify).await
    }

    /// Writes the mirrors of `rows`. Unexpired reservations are loaded and sent only
    /// for mirrors that turn out to be missing, so a pass over intact mirrors never
    /// ships every reservation through Redis.
    pub async fn sync_rows(
        &self,
        conn: &mut PgConnection,
        rows: &[db::MirrorRow],
        verify: bool,
    ) -> Result<Vec<(Uuid, SyncOutcome)>, Error> {
        let mut outcomes = Vec::with_capacity(rows.len());
        let mut missing = Vec::new();
        for row in rows {
            let outcome = self.store.sync(row, None, verify).await?;
            if outcome.state == SyncState::Missing {
                missing.push(row);
            } else {
                outcomes.push((row.product_id, outcome));
            }
        }
        if missing.is_empty() {
            return Ok(outcomes);
        }
        let ids: Vec<Uuid> = missing.iter().map(|r| r.product_id).collect();
        let reservations = db::live_reservations(conn, &ids).await?;
        let mut by_product: HashMap<Uuid, Vec<&db::Reservation>> = HashMap::new();
        for r in &reservations {
            by_product.entry(r.product_id).or_default().push(r);
        }
        for row in missing {
            let held = by_product
                .get(&row.product_id)
                .map_or(&[][..], Vec::as_slice);
            outcomes.push((
                row.product_id,
                self.store.sync(row, Some(held), verify).await?,
            ));
        }
        Ok(outcomes)
    }

    /// After a commit: refreshes the mirror of `product_ids`, logging failures (the
    /// periodic reconciliation repairs what this misses).
    pub async fn refresh_logged(&self, product_ids: &[Uuid]) {
        if let Err(e) = self.refresh(product_ids, false).await {
            tracing::warn!(error = %e, "could not refresh the stock mirror; reconciliation will");
        }
    }

    /// Releases `cart`'s reservations of `product_ids` in Redis, logging failures (they
    /// expire by themselves).
    pub async fn release_logged(&self, cart_id: Uuid, product_ids: &[Uuid]) {
        for &product_id in product_ids {
            if let Err(e) = self.store.release(product_id, cart_id).await {
                tracing::warn!(error = %e, %product_id, %cart_id, "could not release a reservation; it will expire");
            }
        }
    }
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
