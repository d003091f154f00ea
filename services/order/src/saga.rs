//! The saga driver: a supervised worker that charges and refunds orders, and watches
//! the saga's timeouts.
//!
//! The saga's state lives in the order row (`saga_step`, `step_since`,
//! `next_attempt_at`, `claimed_until`), so a killed service resumes where it stopped.
//! Every call to the gateway is recorded in `payments`, each transiently failed try
//! as an attempt of its own.
//!
//! A round claims due orders with `for update skip locked` and a lease (one committed
//! statement), calls the gateway with no transaction open, then records the payment
//! attempt, the transition and its events in one new transaction. A driver that dies
//! mid-call leaves a lease that runs out; the next one repeats the call with the same
//! idempotency key, and the partial unique index on `payments` keeps one successful
//! charge per order whatever happens.
//!
//! Each round also counts orders waiting on a step past the soft timeout (the
//! `order_saga_stuck` gauge, by step), compensates those past the hard timeout (a
//! charge that never finished fails the order; stock never confirmed rejects it and
//! refunds), and purges unused payment tokens.

use std::time::{Duration, Instant};

use mp_common::Worker;
use mp_events::Money;
use mp_events::catalog::OrderStatus;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use crate::db::{self, Change, Claimed, NewPayment};
use crate::domain::{Actor, Step};
use crate::orders::{Orders, TransitionError, status_of};
use crate::payments::{
    self, Approved, ChargeRequest, Gateway, PaymentError, RefundRequest, RetryPolicy,
};

/// How long an order may wait on a step: past `soft` it counts as stuck, past `hard`
/// it is compensated.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub soft: Duration,
    pub hard: Duration,
}

const BATCH: i64 = 32;
const SCAN_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Driver {
    pub orders: Orders,
    pub gateway: Gateway,
    pub retry: RetryPolicy,
    pub poll: Duration,
    pub lease: Duration,
    pub payment_method_ttl: Duration,
}

impl Driver {
    pub fn worker(&self) -> Worker {
        let driver = self.clone();
        Worker::new("saga", move |token| driver.clone().run(token))
    }

    async fn run(self, token: CancellationToken) -> anyhow::Result<()> {
        let mut last_scan: Option<Instant> = None;
        while !token.is_cancelled() {
            let claimed = {
                let mut conn = self.orders.db.acquire().await?;
                db::claim_due(&mut conn, self.lease.as_secs_f64(), BATCH).await?
            };
            let busy = !claimed.is_empty();
            futures::future::join_all(claimed.into_iter().map(|c| self.work(c))).await;
            if last_scan.is_none_or(|at| at.elapsed() >= SCAN_EVERY) {
                self.scan().await?;
                last_scan = Some(Instant::now());
            }
            if !busy {
                tokio::select! {
                    () = token.cancelled() => {}
                    () = self.orders.wake.notified() => {}
                    () = tokio::time::sleep(self.poll) => {}
                }
            }
        }
        Ok(())
    }

    async fn work(&self, claimed: Claimed) {
        let id = claimed.id;
        let result = match Step::parse(&claimed.saga_step) {
            Some(Step::Charge) => self.charge(&claimed).await,
            Some(Step::Refund) => self.refund(&claimed).await,
            _ => Ok(()),
        };
        if let Err(e) = result {
            // The lease runs out and the step is tried again.
            tracing::error!(order_id = %id, error = ?e, "saga step failed; will retry");
        }
    }

    async fn charge(&self, c: &Claimed) -> anyhow::Result<()> {
        let (method, order) = {
            let mut conn = self.orders.db.acquire().await?;
            (
                db::payment_method(&mut conn, c.id).await?,
                db::order(&mut conn, c.id).await?,
            )
        };
        let Some(order) = order else { return Ok(()) };
        let amount = Money::new(c.total, &c.currency);
        let outcome = match method {
            Some((customer_id, token)) if customer_id == order.customer_id => {
                let request = ChargeRequest {
                    order_id: c.id,
                    amount,
                    payment_token: SecretString::from(token),
                    idempotency_key: payments::charge_key(c.id),
                };
                let started = Instant::now();
                let outcome = payments::with_retries(self.retry, "charge", || async {
                    let outcome = self.gateway.charge(&request).await;
                    self.record_transient(c, "charge", &outcome).await;
                    outcome
                })
                .await;
                self.orders
                    .metrics
                    .charge_seconds
                    .observe(started.elapsed().as_secs_f64());
                outcome
            }
            _ => Err(PaymentError::Declined("no payment method".into())),
        };
        self.count("charge", &outcome);
        self.record_charge(c, outcome).await
    }

    /// Records a transiently failed call as an attempt of its own (the final outcome
    /// is recorded with the transition). A failure to record it is only logged: the
    /// attempt changed nothing.
    async fn record_transient(
        &self,
        c: &Claimed,
        kind: &str,
        outcome: &Result<Approved, PaymentError>,
    ) {
        let Err(PaymentError::Transient(error)) = outcome else {
            return;
        };
        let key = match kind {
            "charge" => payments::charge_key(c.id),
            _ => payments::refund_key(c.id),
        };
        let recorded = async {
            let mut conn = self.orders.db.acquire().await?;
            db::insert_payment(
                &mut conn,
                &NewPayment {
                    order_id: c.id,
                    kind,
                    status: "failed",
                    gateway: self.gateway.name(),
                    idempotency_key: &key,
                    provider_id: None,
                    amount: c.total,
                    currency: &c.currency,
                    error: Some(error),
                },
            )
            .await
        }
        .await;
        if let Err(e) = recorded {
            tracing::warn!(order_id = %c.id, error = %e, "could not record a failed payment attempt");
        }
    }

    fn count(&self, operation: &str, outcome: &Result<Approved, PaymentError>) {
        let label = match outcome {
            Ok(_) => "approved",
            Err(PaymentError::Declined(_)) => "declined",
            Err(PaymentError::Transient(_)) => "transient",
        };
        self.orders
            .metrics
            .payments
            .with_label_values(&[operation, label])
            .inc();
    }

    async fn record_charge(
        &self,
        c: &Claimed,
        outcome: Result<Approved, PaymentError>,
    ) -> anyhow::Result<()> {
        let key = payments::charge_key(c.id);
        let mut tx = self.orders.db.begin().await?;
        let Some(order) = db::order_for_update(&mut tx, c.id).await? else {
            return Ok(());
        };
        let (status, provider_id, error) = match &outcome {
            Ok(a) => ("succeeded", Some(a.provider_id.as_str()), None),
            Err(PaymentError::Declined(e)) => ("declined", None, Some(e.clone())),
            Err(PaymentError::Transient(e)) => ("failed", None, Some(e.clone())),
        };
        // A transient failure was recorded as its attempt already.
        if !matches!(outcome, Err(PaymentError::Transient(_))) {
            db::insert_payment(
                &mut tx,
                &NewPayment {
                    order_id: c.id,
                    kind: "charge",
                    status,
                    gateway: self.gateway.name(),
                    idempotency_key: &key,
                    provider_id,
                    amount: c.total,
                    currency: &c.currency,
                    error: error.as_deref(),
                },
            )
            .await?;
        }
        if order.saga_step.as_deref() != Some(Step::Charge.as_str()) {
            // Cancelled (or timed out) while the charge was under way: give the money
            // back if it went through and no refund is planned yet.
            let failed = matches!(
                status_of(&order),
                OrderStatus::Cancelled | OrderStatus::PaymentFailed | OrderStatus::Rejected
            );
            if outcome.is_ok() && failed && order.saga_step.is_none() {
                db::set_step(&mut tx, c.id, Some(Step::Refund)).await?;
                self.orders.wake.notify_one();
            }
            db::delete_payment_method(&mut tx, c.id).await?;
            tx.commit().await?;
            mp_events::outbox::committed();
            return Ok(());
        }
        let (to, reason, step) = match &outcome {
            Ok(_) => (OrderStatus::Paid, None, Some(Step::Stock)),
            Err(PaymentError::Declined(e)) => (
                OrderStatus::PaymentFailed,
                Some(format!("payment declined: {e}")),
                None,
            ),
            Err(PaymentError::Transient(e)) => (
                OrderStatus::PaymentFailed,
                Some(format!("payment declined after retries: {e}")),
                None,
            ),
        };
        let change = Change {
            reason: reason.as_deref(),
            stock_committed: false,
            step: Some(step),
        };
        match self
            .orders
            .transition(&mut tx, &order, to, Actor::System, change)
            .await
        {
            Ok(()) => {}
            Err(TransitionError::Db(e)) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(order_id = %c.id, error = %e, "charge outcome not applied");
                return Ok(());
            }
        }
        db::delete_payment_method(&mut tx, c.id).await?;
        tx.commit().await?;
        mp_events::outbox::committed();
        Ok(())
    }

    async fn refund(&self, c: &Claimed) -> anyhow::Result<()> {
        let (charge, refunded) = {
            let mut conn = self.orders.db.acquire().await?;
            (
                db::succeeded_payment(&mut conn, c.id, "charge").await?,
                db::succeeded_payment(&mut conn, c.id, "refund").await?,
            )
        };
        let (Some(charge), None) = (charge, refunded) else {
            // Nothing was charged, or it was refunded already.
            db::set_step(&mut *self.orders.db.acquire().await?, c.id, None).await?;
            return Ok(());
        };
        let key = payments::refund_key(c.id);
        let request = RefundRequest {
            order_id: c.id,
            amount: Money::new(charge.amount, &charge.currency),
            charge_id: charge.provider_id.clone().unwrap_or_default(),
            idempotency_key: key.clone(),
        };
        let outcome = payments::with_retries(self.retry, "refund", || async {
            let outcome = self.gateway.refund(&request).await;
            self.record_transient(c, "refund", &outcome).await;
            outcome
        })
        .await;
        self.count("refund", &outcome);
        let mut tx = self.orders.db.begin().await?;
        let (status, provider_id, error) = match &outcome {
            Ok(a) => ("succeeded", Some(a.provider_id.as_str()), None),
            Err(PaymentError::Declined(e)) => ("declined", None, Some(e.as_str())),
            Err(PaymentError::Transient(e)) => ("failed", None, Some(e.as_str())),
        };
        if !matches!(outcome, Err(PaymentError::Transient(_))) {
            db::insert_payment(
                &mut tx,
                &NewPayment {
                    order_id: c.id,
                    kind: "refund",
                    status,
                    gateway: self.gateway.name(),
                    idempotency_key: &key,
                    provider_id,
                    amount: charge.amount,
                    currency: &charge.currency,
                    error,
                },
            )
            .await?;
        }
        if outcome.is_ok() {
            db::set_step(&mut tx, c.id, None).await?;
            tracing::info!(order_id = %c.id, "refunded");
        } else {
            // The order stays waiting on its refund (visible as stuck past the soft
            // timeout) and is tried again later, backing off up to five minutes.
            let delay = (i64::from(c.step_attempts).pow(2) * 1_000).min(300_000);
            db::retry_step_later(&mut tx, c.id, delay).await?;
            tracing::warn!(order_id = %c.id, error = error.unwrap_or_default(), "refund failed; will retry");
        }
        tx.commit().await?;
        mp_events::outbox::committed();
        Ok(())
    }

    /// Counts stuck orders by step, compensates those past the hard timeout, purges
    /// unused payment tokens.
    async fn scan(&self) -> anyhow::Result<()> {
        let timeouts = self.orders.timeouts;
        let counts = {
            let mut conn = self.orders.db.acquire().await?;
            db::purge_payment_methods(&mut conn, self.payment_method_ttl.as_secs_f64()).await?;
            db::stuck_counts(&mut conn, timeouts.soft.as_secs_f64()).await?
        };
        for step in Step::ALL {
            let n = counts
                .iter()
                .find(|(s, _)| s == step.as_str())
                .map_or(0, |(_, n)| *n);
            self.orders
                .metrics
                .stuck
                .with_label_values(&[step.as_str()])
                .set(n);
        }
        let mut tx = self.orders.db.begin().await?;
        let overdue = db::overdue_for_update(&mut tx, timeouts.hard.as_secs_f64(), BATCH).await?;
        let mut refunds = false;
        for order in overdue {
            let step = order.saga_step.clone().unwrap_or_default();
            let charged = db::succeeded_payment(&mut tx, order.id, "charge")
                .await?
                .is_some();
            let (to, reason) = match status_of(&order) {
                OrderStatus::Pending => (
                    OrderStatus::PaymentFailed,
                    "timed out waiting for the payment",
                ),
                _ => (
                    OrderStatus::Rejected,
                    "timed out waiting for the stock commit",
                ),
            };
            let change = Change {
                reason: Some(reason),
                stock_committed: false,
                step: Some(charged.then_some(Step::Refund)),
            };
            match self
                .orders
                .transition(&mut tx, &order, to, Actor::System, change)
                .await
            {
                Ok(()) => {
                    refunds |= charged;
                    db::delete_payment_method(&mut tx, order.id).await?;
                    self.orders
                        .metrics
                        .compensated
                        .with_label_values(&[step.as_str()])
                        .inc();
                    tracing::warn!(order_id = %order.id, step, reason, "saga step timed out; compensated");
                }
                Err(TransitionError::Db(e)) => return Err(e.into()),
                Err(e) => tracing::warn!(order_id = %order.id, error = %e, "not compensated"),
            }
        }
        tx.commit().await?;
        mp_events::outbox::committed();
        if refunds {
            self.orders.wake.notify_one();
        }
        Ok(())
    }
}
