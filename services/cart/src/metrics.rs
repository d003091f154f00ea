//! The cart service's own Prometheus metrics, registered beside the common ones.

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub struct CartMetrics {
    pub carts_opened: IntCounter,
    pub carts_abandoned: IntCounter,
    pub item_changes: IntCounterVec,
    pub checkouts: IntCounterVec,
}

impl CartMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let carts_opened = IntCounter::new("cart_carts_opened_total", "Carts opened.")?;
        let carts_abandoned = IntCounter::new(
            "cart_carts_abandoned_total",
            "Open carts abandoned by the idle worker (their reservations released).",
        )?;
        let item_changes = IntCounterVec::new(
            Opts::new(
                "cart_item_changes_total",
                "Changes of cart lines, by outcome: added, changed, removed, or the \
                 problem that refused it (insufficient-stock, product-inactive, ...).",
            ),
            &["outcome"],
        )?;
        let checkouts = IntCounterVec::new(
            Opts::new(
                "cart_checkouts_total",
                "Checkout requests, by outcome: accepted, replayed, unavailable, error, or \
                 the problem that refused it (request-in-progress, idempotency-key-reused, \
                 lines-unavailable, cart-checked-out, ...).",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(carts_opened.clone()))?;
        registry.register(Box::new(carts_abandoned.clone()))?;
        registry.register(Box::new(item_changes.clone()))?;
        registry.register(Box::new(checkouts.clone()))?;
        Ok(Self {
            carts_opened,
            carts_abandoned,
            item_changes,
            checkouts,
        })
    }
}
