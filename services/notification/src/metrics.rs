//! The notification service's own Prometheus metrics, registered beside the common ones.

use prometheus::{Gauge, IntCounterVec, Opts, Registry};

use crate::domain::TEMPLATES;

#[derive(Clone)]
pub struct NotificationMetrics {
    /// Messages the provider accepted, by channel and template.
    pub sent: IntCounterVec,
    /// Messages given up on (refused for good, attempts used up, no contact).
    pub failed: IntCounterVec,
    /// Failed attempts that were scheduled again.
    pub retried: IntCounterVec,
    /// Age of the oldest pending message, in seconds (0 when none is pending).
    pub oldest_pending: Gauge,
}

impl NotificationMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let labels = &["channel", "template"];
        let sent = IntCounterVec::new(
            Opts::new(
                "notifications_sent_total",
                "Notifications accepted by the email or SMS provider.",
            ),
            labels,
        )?;
        let failed = IntCounterVec::new(
            Opts::new(
                "notifications_failed_total",
                "Notifications given up on: refused for good, out of attempts, or no contact.",
            ),
            labels,
        )?;
        let retried = IntCounterVec::new(
            Opts::new(
                "notifications_retried_total",
                "Failed delivery attempts scheduled to be tried again.",
            ),
            labels,
        )?;
        let oldest_pending = Gauge::new(
            "notifications_oldest_pending_age_seconds",
            "Age of the oldest notification not yet sent (0 when none is pending).",
        )?;
        registry.register(Box::new(sent.clone()))?;
        registry.register(Box::new(failed.clone()))?;
        registry.register(Box::new(retried.clone()))?;
        registry.register(Box::new(oldest_pending.clone()))?;
        // Every series from the start, so dashboards and alerts see zeros.
        for template in TEMPLATES {
            let channels: &[&str] = if template == crate::domain::LOW_STOCK_TEMPLATE {
                &["email"]
            } else {
                &["email", "sms"]
            };
            for channel in channels {
                for counter in [&sent, &failed, &retried] {
                    counter.with_label_values(&[channel, template]);
                }
            }
        }
        Ok(Self {
            sent,
            failed,
            retried,
            oldest_pending,
        })
    }
}
