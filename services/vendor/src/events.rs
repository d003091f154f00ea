//! Handlers of consumed events: stock figures from the inventory service.
//!
//! Both run as `vendor.stock` (the catalog's name). In the consumer's transaction they
//! record each product's on-hand, reserved and available stock unless a report with a
//! higher stock version is already recorded (versions, never clocks); once that transaction committed, they store the products' new reads
//! in the cache (see [`crate::cache`]), so cached reads show the new figures at once.

use async_trait::async_trait;
use mp_events::catalog::{InventoryCreated, InventoryUpdated, StockLevel};
use mp_events::{Envelope, EventHandler, HandlerError};
use sqlx::{PgConnection, PgPool};

use crate::cache::{self, ProductCache};
use crate::db;

/// What both stock handlers need.
#[derive(Clone)]
pub struct Stock {
    pub db: PgPool,
    pub cache: ProductCache,
}

impl Stock {
    async fn record(conn: &mut PgConnection, levels: &[StockLevel]) -> Result<(), HandlerError> {
        for level in levels {
            if !db::record_stock(conn, level).await? {
                tracing::info!(product_id = %level.product_id, "older stock report ignored");
            }
        }
        Ok(())
    }

    /// Refreshes the cached reads of the products concerned. A refresh only ever stores a
    /// newer version, so running again after a redelivery is harmless.
    async fn refresh(&self, levels: &[StockLevel]) {
        for level in levels {
            if let Err(e) = cache::refresh(&self.db, &self.cache, level.product_id).await {
                // The entry's TTL bounds how long it can show the previous figures.
                tracing::warn!(product_id = %level.product_id, error = %format!("{e:#}"), "cache refresh after a stock report failed");
            }
        }
    }
}

/// `inventory.created`: the first stock figures of a new product.
pub struct StockCreated(pub Stock);

#[async_trait]
impl EventHandler for StockCreated {
    type Event = InventoryCreated;
    const NAME: &'static str = "vendor.stock";

    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &Envelope<InventoryCreated>,
    ) -> Result<(), HandlerError> {
        Stock::record(conn, std::slice::from_ref(&event.payload.level)).await
    }

    async fn after_commit(&self, event: &Envelope<InventoryCreated>) {
        self.0
            .refresh(std::slice::from_ref(&event.payload.level))
            .await;
    }
}

/// `inventory.updated`: new stock figures after an adjustment, a sale or a release (a
/// rejected commit carries the unchanged figures, which are recorded all the same).
pub struct StockUpdated(pub Stock);

#[async_trait]
impl EventHandler for StockUpdated {
    type Event = InventoryUpdated;
    const NAME: &'static str = "vendor.stock";

    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &Envelope<InventoryUpdated>,
    ) -> Result<(), HandlerError> {
        Stock::record(conn, &event.payload.levels).await
    }

    async fn after_commit(&self, event: &Envelope<InventoryUpdated>) {
        self.0.refresh(&event.payload.levels).await;
    }
}
