//! Reconciliation of Redis with PostgreSQL, at start-up and then periodically.
//!
//! Redis is soft state. Each run walks every stock item and writes its mirror through
//! the same versioned script commits use: a missing mirror (Redis restarted, flushed or
//! evicted the key) is rebuilt, with the unexpired reservations whose durable copies
//! PostgreSQL keeps; a mirror whose on-hand differs is corrected; the reserved total is
//! recounted from the entries; a rebuilt mirror that has settled catches up with the
//! reservations written meanwhile. Every repair is counted in
//! `inventory_reconcile_drift_total` by kind. Tombstones and expired reservations older
//! than a day are purged. Replicas may reconcile at the same time: the script applies a
//! version only once and never moves a mirror backwards.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::db;
use crate::stock::{Error, Inventory};
use crate::store::{SyncOutcome, SyncState};

const PAGE: i64 = 500;

/// What one run found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub items: u64,
    pub mirror_missing: u64,
    pub on_hand_stale: u64,
    pub on_hand_mismatch: u64,
    pub reserved_recounted: u64,
    pub reservations_restored: u64,
}

impl Report {
    fn add(&mut self, o: SyncOutcome) {
        self.items += 1;
        match o.state {
            SyncState::Rebuilt => self.mirror_missing += 1,
            SyncState::Updated => self.on_hand_stale += 1,
            SyncState::Repaired => self.on_hand_mismatch += 1,
            SyncState::InSync | SyncState::Newer | SyncState::Missing => {}
        }
        self.reserved_recounted += u64::from(o.recounted);
        self.reservations_restored += o.restored.max(0) as u64;
    }

    pub fn drift(&self) -> u64 {
        self.mirror_missing
            + self.on_hand_stale
            + self.on_hand_mismatch
            + self.reserved_recounted
            + self.reservations_restored
    }
}

/// One pass over every stock item.
pub async fn reconcile_once(inv: &Inventory) -> Result<Report, Error> {
    db::purge_reservations(&inv.db).await?;
    let mut report = Report::default();
    let mut after: Option<Uuid> = None;
    loop {
        let mut conn = inv.db.acquire().await?;
        let rows = db::mirror_page(&mut conn, after, PAGE).await?;
        let Some(last) = rows.last() else { break };
        after = Some(last.product_id);
        for (_, outcome) in inv.sync_rows(&mut conn, &rows, true).await? {
            report.add(outcome);
        }
        if (rows.len() as i64) < PAGE {
            break;
        }
    }
    let m = &inv.metrics.drift;
    m.with_label_values(&["mirror_missing"])
        .inc_by(report.mirror_missing);
    m.with_label_values(&["on_hand_stale"])
        .inc_by(report.on_hand_stale);
    m.with_label_values(&["on_hand_mismatch"])
        .inc_by(report.on_hand_mismatch);
    m.with_label_values(&["reserved_recounted"])
        .inc_by(report.reserved_recounted);
    m.with_label_values(&["reservations_restored"])
        .inc_by(report.reservations_restored);
    Ok(report)
}

/// Reconciles at once, then every `interval`, until `shutdown`.
pub async fn run(inv: Inventory, interval: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        match reconcile_once(&inv).await {
            Ok(report) => {
                inv.metrics.reconcile_runs.with_label_values(&["ok"]).inc();
                if report.drift() > 0 {
                    tracing::warn!(?report, "reconciliation repaired the Redis stock mirror");
                } else {
                    tracing::debug!(items = report.items, "Redis stock mirror in sync");
                }
            }
            Err(e) => {
                inv.metrics
                    .reconcile_runs
                    .with_label_values(&["error"])
                    .inc();
                tracing::warn!(error = %e, "reconciliation failed; will try again");
            }
        }
    }
}
