//! Consumed events: `vendor.product.updated` refreshes the prices of open carts
//! (handler `cart.price_refresh`).
//!
//! Ordered by the product's `revision`, never by arrival: a line takes the new name and
//! price only from a revision newer than the one it holds, so a late or redelivered
//! older update changes nothing. A line keeps `added_price`, the price when it was
//! added, so the cart can show which prices changed since.

use async_trait::async_trait;
use mp_events::catalog::VendorProductUpdated;
use mp_events::{Envelope, EventHandler, HandlerError};
use sqlx::PgConnection;

use crate::db;

pub struct PriceRefresh;

#[async_trait]
impl EventHandler for PriceRefresh {
    type Event = VendorProductUpdated;
    const NAME: &'static str = "cart.price_refresh";

    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &Envelope<VendorProductUpdated>,
    ) -> Result<(), HandlerError> {
        let p = &event.payload;
        let changed = db::refresh_prices(conn, p.product_id, &p.name, p.price, p.revision).await?;
        if changed > 0 {
            tracing::info!(product_id = %p.product_id, revision = p.revision, lines = changed, "cart prices refreshed");
        }
        Ok(())
    }
}
