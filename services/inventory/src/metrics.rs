//! The inventory service's own Prometheus metrics, registered beside the common ones.

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub struct InventoryMetrics {
    /// Differences between Redis and PostgreSQL found (and repaired) by reconciliation.
    pub drift: IntCounterVec,
    pub reconcile_runs: IntCounterVec,
    pub reservations: IntCounterVec,
    pub check_shortfalls: IntCounter,
    pub orders: IntCounterVec,
    pub low_stock_alerts: IntCounter,
}

impl InventoryMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let drift = IntCounterVec::new(
            Opts::new(
                "inventory_reconcile_drift_total",
                "Differences between the Redis stock mirror and PostgreSQL repaired by \
                 reconciliation, by kind: mirror_missing, on_hand_stale, on_hand_mismatch, \
                 reserved_recounted, reservations_restored.",
            ),
            &["kind"],
        )?;
        let reconcile_runs = IntCounterVec::new(
            Opts::new(
                "inventory_reconcile_runs_total",
                "Reconciliation runs of the Redis stock mirror, by outcome (ok, error).",
            ),
            &["outcome"],
        )?;
        let reservations = IntCounterVec::new(
            Opts::new(
                "inventory_reservations_total",
                "Reservation requests, by outcome (reserved, insufficient, inactive, superseded).",
            ),
            &["outcome"],
        )?;
        let check_shortfalls = IntCounter::new(
            "inventory_reservation_check_shortfalls_total",
            "cart.item.added events whose reservation could not be confirmed for lack of stock.",
        )?;
        let orders = IntCounterVec::new(
            Opts::new(
                "inventory_order_stock_total",
                "Order stock operations, by outcome (committed, rejected, released).",
            ),
            &["outcome"],
        )?;
        let low_stock_alerts = IntCounter::new(
            "inventory_low_stock_alerts_total",
            "inventory.low_stock events emitted.",
        )?;
        registry.register(Box::new(drift.clone()))?;
        registry.register(Box::new(reconcile_runs.clone()))?;
        registry.register(Box::new(reservations.clone()))?;
        registry.register(Box::new(check_shortfalls.clone()))?;
        registry.register(Box::new(orders.clone()))?;
        registry.register(Box::new(low_stock_alerts.clone()))?;
        // Every known series from the start, so dashboards and alerts see zeros.
        for kind in [
            "mirror_missing",
            "on_hand_stale",
            "on_hand_mismatch",
            "reserved_recounted",
            "reservations_restored",
        ] {
            drift.with_label_values(&[kind]);
        }
        for outcome in ["ok", "error"] {
            reconcile_runs.with_label_values(&[outcome]);
        }
        for outcome in ["reserved", "insufficient", "inactive", "superseded"] {
            reservations.with_label_values(&[outcome]);
        }
        for outcome in ["committed", "rejected", "released"] {
            orders.with_label_values(&[outcome]);
        }
        Ok(Self {
            drift,
            reconcile_runs,
            reservations,
            check_shortfalls,
            orders,
            low_stock_alerts,
        })
    }
}
