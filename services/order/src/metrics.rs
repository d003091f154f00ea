//! The order service's own Prometheus metrics, registered beside the common ones.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    exponential_buckets,
};

#[derive(Clone)]
pub struct OrderMetrics {
    /// Orders reaching a status through the saga or a user, by status.
    pub outcomes: IntCounterVec,
    /// Payment calls by operation and outcome.
    pub payments: IntCounterVec,
    /// Time of one charge including its retries.
    pub charge_seconds: Histogram,
    /// Orders waiting on a step longer than its soft timeout, by step.
    pub stuck: IntGaugeVec,
    /// Orders compensated after the hard timeout, by step.
    pub compensated: IntCounterVec,
    /// Orders in the saga, as admission last counted them.
    pub in_flight: IntGauge,
    /// Payment hand-offs refused because the saga was at its limit.
    pub shed: IntCounter,
}

impl OrderMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let outcomes = IntCounterVec::new(
            Opts::new(
                "order_checkout_outcomes_total",
                "Orders reaching a status (paid, confirmed, payment_failed, rejected, \
                 cancelled, shipped, delivered).",
            ),
            &["status"],
        )?;
        let payments = IntCounterVec::new(
            Opts::new(
                "order_payments_total",
                "Payment gateway calls by operation and outcome: charge (approved, \
                 declined, processing, unknown: no answer, asked for), retrieve (answered, \
                 transient), refund (approved, declined, transient).",
            ),
            &["operation", "outcome"],
        )?;
        let charge_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "order_charge_duration_seconds",
                "Time of one confirmation of a charge at the payment gateway.",
            )
            .buckets(exponential_buckets(0.001, 2.0, 16)?),
        )?;
        let stuck = IntGaugeVec::new(
            Opts::new(
                "order_saga_stuck",
                "Orders waiting on a saga step (charge, stock, refund) longer than its \
                 soft timeout.",
            ),
            &["step"],
        )?;
        let compensated = IntCounterVec::new(
            Opts::new(
                "order_saga_compensations_total",
                "Orders compensated after waiting past the hard timeout, by step.",
            ),
            &["step"],
        )?;
        let in_flight = IntGauge::new(
            "order_saga_in_flight",
            "Orders in the saga (charge or stock commit, entered within the last minute), \
             as last counted for a new checkout; new checkouts are shed at SAGA_MAX_IN_FLIGHT.",
        )?;
        let shed = IntCounter::new(
            "order_checkouts_shed_total",
            "Payment hand-offs (new checkouts) refused with 503 because the saga was at its limit.",
        )?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(shed.clone()))?;
        registry.register(Box::new(outcomes.clone()))?;
        registry.register(Box::new(payments.clone()))?;
        registry.register(Box::new(charge_seconds.clone()))?;
        registry.register(Box::new(stuck.clone()))?;
        registry.register(Box::new(compensated.clone()))?;
        for step in crate::domain::Step::ALL {
            stuck.with_label_values(&[step.as_str()]).set(0);
        }
        Ok(Self {
            outcomes,
            payments,
            charge_seconds,
            stuck,
            compensated,
            in_flight,
            shed,
        })
    }
}
