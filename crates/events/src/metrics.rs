//! Prometheus metrics of the messaging backbone, registered in the service's registry.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

#[derive(Clone)]
pub struct EventMetrics {
    pub outbox_published: IntCounter,
    pub outbox_publish_failures: IntCounter,
    pub outbox_unroutable: IntCounter,
    pub outbox_pending: IntGauge,
    pub outbox_oldest_pending_seconds: IntGauge,
    pub outbox_publish_seconds: Histogram,
    pub consumed: IntCounterVec,
    pub handler_seconds: HistogramVec,
    pub hop_seconds: HistogramVec,
    pub dead_letters: IntGauge,
}

impl EventMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let fast = vec![
            0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ];
        let m = Self {
            outbox_published: IntCounter::new("outbox_published_total", "Events the relay published and RabbitMQ confirmed.")?,
            outbox_publish_failures: IntCounter::new(
                "outbox_publish_failures_total",
                "Relay batches that failed to publish (left for the next attempt).",
            )?,
            outbox_unroutable: IntCounter::new(
                "outbox_unroutable_total",
                "Events RabbitMQ returned because no queue is bound for them although the \
                 catalog names consumers (kept unsent and tried again).",
            )?,
            outbox_pending: IntGauge::new("outbox_pending", "Events written to the outbox and not yet published.")?,
            outbox_oldest_pending_seconds: IntGauge::new(
                "outbox_oldest_pending_seconds",
                "Age of the oldest unpublished outbox event (outbox lag).",
            )?,
            outbox_publish_seconds: Histogram::with_opts(
                HistogramOpts::new("outbox_publish_seconds", "Time to publish one relay batch with confirms.")
                    .buckets(fast.clone()),
            )?,
            consumed: IntCounterVec::new(
                Opts::new(
                    "events_consumed_total",
                    "Deliveries handled, by event type, handler and outcome (ok, duplicate, skipped: not its concern, retried, dead_lettered, unhandled).",
                ),
                &["event_type", "handler", "outcome"],
            )?,
            handler_seconds: HistogramVec::new(
                HistogramOpts::new("event_handler_seconds", "Time a handler took, transaction included.")
                    .buckets(fast.clone()),
                &["handler"],
            )?,
            hop_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "event_hop_seconds",
                    "From the event's creation in the publisher's transaction to the handler's commit.",
                )
                .buckets(fast),
                &["event_type"],
            )?,
            dead_letters: IntGauge::new("dead_letter_messages", "Messages waiting in this service's dead-letter queue.")?,
        };
        registry.register(Box::new(m.outbox_published.clone()))?;
        registry.register(Box::new(m.outbox_publish_failures.clone()))?;
        registry.register(Box::new(m.outbox_unroutable.clone()))?;
        registry.register(Box::new(m.outbox_pending.clone()))?;
        registry.register(Box::new(m.outbox_oldest_pending_seconds.clone()))?;
        registry.register(Box::new(m.outbox_publish_seconds.clone()))?;
        registry.register(Box::new(m.consumed.clone()))?;
        registry.register(Box::new(m.handler_seconds.clone()))?;
        registry.register(Box::new(m.hop_seconds.clone()))?;
        registry.register(Box::new(m.dead_letters.clone()))?;
        Ok(m)
    }

    /// Metrics registered nowhere (for tools and tests that do not expose them).
    pub fn unregistered() -> Self {
        Self::new(&Registry::new()).expect("fresh registry")
    }
}
