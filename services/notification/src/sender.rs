//! The sender: a supervised worker that delivers stored notifications.
//!
//! Each round claims due pending rows in one statement (`for update skip locked`, a
//! lease in `claimed_until`, the attempt counted), so the transaction has ended before
//! any SMTP or HTTP call; replicas never take the same row, and a row whose sender died
//! is taken again once its lease expires. The claimed messages are sent concurrently,
//! each with a timeout, and each outcome is written on its own:
//!
//! * accepted: `sent`, with `sent_at`;
//! * provider unreachable or down: pending again after a backoff (backon), however long
//!   the outage lasts: a down provider delays messages, it loses none;
//! * refused for now: retried with backoff until `SEND_MAX_ATTEMPTS`, then `failed`;
//! * refused for good: `failed` at once, with the reason.
//!
//! A failing message is pushed back by its own backoff, so other recipients' messages,
//! and the other channel, keep flowing.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::db::{self, Claimed};
use crate::delivery::{Mailer, SmsSender};
use crate::domain::{AfterFailure, Channel, RetryPolicy, SendError};
use crate::metrics::NotificationMetrics;

#[derive(Clone)]
pub struct Sender {
    /// Each channel has a sender of its own, so a slow SMTP server never holds up SMS.
    pub channel: Channel,
    pub db: PgPool,
    pub mailer: Mailer,
    pub sms: SmsSender,
    pub metrics: NotificationMetrics,
    pub policy: RetryPolicy,
    pub wake: Arc<Notify>,
    pub batch: u32,
    pub lease: Duration,
    pub poll: Duration,
}

impl Sender {
    /// Runs until `shutdown`; messages in flight then finish (each within its timeout).
    pub async fn run(self, shutdown: CancellationToken) {
        // The queue-age gauge at most once a second, not once a round.
        let mut measured: Option<std::time::Instant> = None;
        while !shutdown.is_cancelled() {
            let claimed = match db::claim_due(
                &self.db,
                self.channel,
                i64::from(self.batch),
                self.lease.as_millis() as i64,
            )
            .await
            {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim notifications; retrying");
                    Vec::new()
                }
            };
            let full = claimed.len() as u32 >= self.batch;
            futures::stream::iter(claimed)
                .for_each_concurrent(None, |n| self.deliver(n))
                .await;
            if measured.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                match db::oldest_pending_age(&self.db).await {
                    Ok(age) => self.metrics.oldest_pending.set(age),
                    Err(e) => tracing::warn!(error = %e, "cannot measure the pending queue"),
                }
                measured = Some(std::time::Instant::now());
            }
            if !full {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(self.poll) => {}
                }
            }
        }
    }

    async fn attempt(&self, n: &Claimed) -> Result<(), SendError> {
        let to = n.recipient.as_deref().ok_or_else(|| {
            SendError::Permanent("no recipient address or phone number".to_owned())
        })?;
        match Channel::parse(&n.channel) {
            Ok(Channel::Email) => {
                self.mailer
                    .send(n.id, to, &n.subject, &n.body_text, n.body_html.as_deref())
                    .await
            }
            Ok(Channel::Sms) => self.sms.send(n.id, to, &n.body_text).await,
            Err(e) => Err(SendError::Permanent(format!("channel {}: {e}", n.channel))),
        }
    }

    async fn deliver(&self, n: Claimed) {
        let outcome = self.attempt(&n).await;
        let labels = [n.channel.as_str(), n.template.as_str()];
        let attempts = n.attempts.max(1) as u32;
        let written = match outcome {
            Ok(()) => {
                self.metrics.sent.with_label_values(&labels).inc();
                tracing::info!(notification_id = %n.id, channel = %n.channel, template = %n.template, attempts, "notification sent");
                db::mark_sent(&self.db, n.id).await
            }
            Err(error) => match self.policy.after_failure(&error, attempts) {
                AfterFailure::RetryIn(delay) => {
                    self.metrics.retried.with_label_values(&labels).inc();
                    tracing::warn!(notification_id = %n.id, channel = %n.channel, template = %n.template, attempts, retry_in_ms = delay.as_millis() as u64, error = %error, "notification not sent; will retry");
                    db::mark_retry(&self.db, n.id, &error.to_string(), delay.as_millis() as i64)
                        .await
                }
                AfterFailure::Fail => {
                    self.metrics.failed.with_label_values(&labels).inc();
                    tracing::warn!(notification_id = %n.id, channel = %n.channel, template = %n.template, attempts, error = %error, "notification failed");
                    db::mark_failed(&self.db, n.id, &error.to_string()).await
                }
            },
        };
        if let Err(e) = written {
            // The lease runs out and the message is tried again: at worst sent twice,
            // recognisable by its Message-ID.
            tracing::error!(notification_id = %n.id, error = %e, "cannot record the outcome of a notification");
        }
    }
}
