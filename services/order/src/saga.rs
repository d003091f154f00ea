//! The saga driver: a supervised worker that charges orders, settles what failed or
//! cancelled orders hold at the payment provider, and watches the saga's timeouts.
//!
//! The saga's state lives in the order row (`saga_step`, `step_since`,
//! `next_attempt_at`, `claimed_until`, `step_attempts`, `payment_intent`), so a killed
//! service resumes where it stopped. No transaction is open while the provider is
//! called, and no database connection is held while waiting for it.
//!
//! **Work.** A new order arrives claimed (its creating handler leased it and hands it
//! over in memory, [`crate::orders::Handoff`]); anything else due is claimed with `for update skip
//! locked` and a lease, in one committed statement, as slots free up. At most
//! `concurrency` orders are worked on at once, each on its own, so one slow provider
//! call holds one slot, not a batch. A driver that dies leaves leases that run out;
//! the next one takes over.
//!
//! **A charge** is the order's payment intent at the provider ([`payments`]): created
//! once (no money moves) and kept in the order row before it is ever confirmed, then
//! confirmed with the customer's payment method, each confirmation recorded first as a
//! `requested` payment attempt. An answer is recorded with the transition in one
//! transaction. An answer that does not come (a time-out, a lost connection, a driver
//! killed) or a `processing` intent is an outcome not known yet, never a decline: the
//! driver asks the provider for the intent's state, now and before every later
//! attempt, and acts on what it says; if it cannot ask, it tries again later. Only an
//! intent the provider says captured nothing is confirmed again (the intent is captured
//! at most once whatever happens); one that keeps failing that way is declined after the
//! configured retries.
//!
//! **Settling** (the `refund` step) runs for every order that ends without being
//! confirmed (declined after failures, cancelled, rejected, timed out) once a charge
//! was started: it asks the provider and refunds an intent that was captured, cancels one
//! that was not (so no late confirmation can capture it), and waits on one still
//! processing. So an order ends with money captured only if it is confirmed.
//!
//! **Each round** also counts orders waiting on a step past the soft timeout (the
//! `order_saga_stuck` gauge, by step), compensates those past the hard timeout, and
//! purges unused payment tokens.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mp_common::Worker;
use mp_events::catalog::OrderStatus;
use secrecy::SecretString;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::db::{self, Change, Claimed, NewPayment, OrderRow};
use crate::domain::{Actor, PaymentKind, PaymentStatus, Step};
use crate::orders::{Orders, TransitionError};
use crate::payments::{
    self, ChargeState, Gateway, IntentRequest, PaymentError, RefundRequest, RetryPolicy,
    quick_retries,
};

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
    /// Orders worked on at once.
    pub concurrency: usize,
}

/// What a step attempt ended in, for the order row.
enum Next {
    /// Done with this step (the order moved on, or there was nothing to do).
    Done,
    /// Not finished: try again after the backoff for this attempt.
    Later(String),
}

/// How a charge ended, as far as the order is concerned.
enum Charged {
    Approved,
    Declined(String),
    /// Declined after confirmations that failed transiently (the provider says nothing
    /// was captured): the intent is cancelled afterwards, so that none of them can
    /// still capture it.
    GaveUp(String),
}

impl Driver {
    pub fn worker(&self) -> Worker {
        let driver = self.clone();
        Worker::new("saga", move |token| driver.clone().run(token))
    }

    async fn run(self, token: CancellationToken) -> anyhow::Result<()> {
        let mut handed = self.orders.handoff.receiver().lock_owned().await;
        let slots = Arc::new(Semaphore::new(self.concurrency.max(1)));
        // Orders being worked on here: a repeated hand-over or claim of one is ignored.
        let working: Arc<Mutex<HashSet<Uuid>>> = Arc::default();
        let mut tasks = JoinSet::new();
        let mut last_scan: Option<Instant> = None;
        let spawn = |tasks: &mut JoinSet<()>, claimed: Claimed| {
            if !working
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(claimed.id)
            {
                return;
            }
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                // No slot: the lease runs out and a claim takes it up again.
                working
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&claimed.id);
                return;
            };
            let driver = self.clone();
            let working = working.clone();
            tasks.spawn(async move {
                driver.work(claimed.clone()).await;
                working
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&claimed.id);
                drop(slot);
            });
        };
        // Whether to look for due work in the database: at start, on a wake-up, on the
        // poll, and again while claims come back full. (A hand-over or a finished task
        // needs no query.)
        let mut look = true;
        let mut poll = tokio::time::interval(self.poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !token.is_cancelled() {
            while tasks.try_join_next().is_some() {}
            while slots.available_permits() > 0
                && let Ok(c) = handed.try_recv()
            {
                spawn(&mut tasks, c);
            }
            let free = slots.available_permits().min(BATCH as usize);
            if look && free > 0 {
                let claimed = {
                    let mut conn = self.orders.db.acquire().await?;
                    db::claim_due(&mut conn, self.lease.as_secs_f64(), free as i64).await?
                };
                look = claimed.len() == free;
                for c in claimed {
                    spawn(&mut tasks, c);
                }
            }
            if last_scan.is_none_or(|at| at.elapsed() >= SCAN_EVERY) {
                self.scan().await?;
                last_scan = Some(Instant::now());
            }
            if look && slots.available_permits() > 0 {
                continue;
            }
            tokio::select! {
                () = token.cancelled() => {}
                Some(c) = handed.recv(), if slots.available_permits() > 0 => spawn(&mut tasks, c),
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                () = self.orders.wake.notified() => look = true,
                _ = poll.tick() => look = true,
            }
        }
        // In-flight steps finish (every provider call has its time-out); what does not
        // finish keeps its lease and is taken up again after it.
        while tasks.join_next().await.is_some() {}
        Ok(())
    }

    async fn work(&self, c: Claimed) {
        let result = match c.saga_step {
            Step::Charge => self.charge(&c).await,
            Step::Refund => self.settle(&c).await,
            Step::Stock => Ok(Next::Done),
        };
        let why = match result {
            Ok(Next::Done) => return,
            Ok(Next::Later(why)) => why,
            Err(e) => format!("{e:#}"),
        };
        let delay = self.retry.delay_after(c.step_attempts);
        tracing::warn!(order_id = %c.id, step = c.saga_step.as_str(), attempt = c.step_attempts, ?delay, reason = why, "saga step not finished; trying again later");
        let rescheduled = async {
            let mut conn = self.orders.db.acquire().await?;
            db::retry_step_later(&mut conn, c.id, delay.as_millis() as i64).await
        };
        if let Err(e) = rescheduled.await {
            // The lease runs out and the step is taken up again then.
            tracing::error!(order_id = %c.id, error = %e, "could not reschedule a saga step");
        }
    }

    fn count(&self, operation: &str, outcome: &str) {
        self.orders
            .metrics
            .payments
            .with_label_values(&[operation, outcome])
            .inc();
    }

    /// Asks the provider for the intent's state (a few quick retries).
    async fn retrieve(&self, intent: &str) -> Result<ChargeState, PaymentError> {
        let state = quick_retries(self.retry, "payment lookup", || {
            self.gateway.retrieve(intent)
        })
        .await;
        self.count(
            "retrieve",
            match &state {
                Ok(_) => "answered",
                Err(_) => "transient",
            },
        );
        state
    }

    /// The order's intent: the one kept, or a new one created and kept before anything
    /// confirms it. `None` (try later) if the provider cannot be reached.
    async fn intent(&self, order: &OrderRow) -> anyhow::Result<Result<String, PaymentError>> {
        if let Some(intent) = &order.payment_intent {
            return Ok(Ok(intent.clone()));
        }
        let request = IntentRequest {
            order_id: order.id,
            amount: order.total(),
        };
        let created = quick_retries(self.retry, "payment intent", || {
            self.gateway.create_intent(&request)
        })
        .await;
        if let Ok(intent) = &created {
            db::set_intent(&mut *self.orders.db.acquire().await?, order.id, intent).await?;
        }
        Ok(created)
    }

    async fn charge(&self, c: &Claimed) -> anyhow::Result<Next> {
        let Some((order, method)) =
            db::order_with_method(&mut *self.orders.db.acquire().await?, c.id).await?
        else {
            return Ok(Next::Done);
        };
        if order.saga_step != Some(Step::Charge) {
            return Ok(Next::Done);
        }
        let attempts = c.step_attempts;
        let max_attempts = self.retry.retries as i32 + 1;
        let intent = match self.intent(&order).await? {
            Ok(intent) => intent,
            Err(PaymentError::Transient(e)) => return Ok(Next::Later(e)),
            Err(PaymentError::Refused(e)) => {
                return self.record(c, Charged::Declined(e), None).await;
            }
        };
        // An earlier attempt may have confirmed it: ask before confirming again.
        if attempts > 1 {
            match self.retrieve(&intent).await {
                Ok(ChargeState::Succeeded) => {
                    return self.record(c, Charged::Approved, Some(&intent)).await;
                }
                Ok(ChargeState::Processing) => {
                    return Ok(Next::Later("the payment is still processing".into()));
                }
                Ok(ChargeState::Canceled) => {
                    return self
                        .record(
                            c,
                            Charged::Declined("payment canceled".into()),
                            Some(&intent),
                        )
                        .await;
                }
                Ok(ChargeState::Open | ChargeState::Declined(_)) => {}
                Err(e) => return Ok(Next::Later(format!("could not ask the provider: {e}"))),
            }
            if attempts > max_attempts {
                return self
                    .record(
                        c,
                        Charged::GaveUp("payment declined after retries".into()),
                        Some(&intent),
                    )
                    .await;
            }
        }
        let token = match method {
            Some((customer_id, token)) if customer_id == order.customer_id => {
                SecretString::from(token)
            }
            _ => {
                return self
                    .record(
                        c,
                        Charged::Declined("no payment method".into()),
                        Some(&intent),
                    )
                    .await;
            }
        };
        let key = payments::confirm_key(c.id, attempts);
        db::insert_payment(
            &mut *self.orders.db.acquire().await?,
            &NewPayment {
                order_id: c.id,
                kind: PaymentKind::Charge,
                status: PaymentStatus::Requested,
                gateway: self.gateway.name(),
                idempotency_key: &key,
                provider_id: Some(&intent),
                amount: order.total(),
                error: None,
            },
        )
        .await?;
        let started = Instant::now();
        let confirmed = self.gateway.confirm(&intent, &token, &key).await;
        self.orders
            .metrics
            .charge_seconds
            .observe(started.elapsed().as_secs_f64());
        let state = match confirmed {
            Ok(state) => state,
            Err(PaymentError::Refused(e)) => {
                self.count("charge", "declined");
                return self.record(c, Charged::Declined(e), Some(&intent)).await;
            }
            Err(PaymentError::Transient(e)) => {
                // The outcome is not known: ask.
                self.count("charge", "unknown");
                match self.retrieve(&intent).await {
                    Ok(ChargeState::Open | ChargeState::Declined(_)) => {
                        db::fail_requested_charges(&mut *self.orders.db.acquire().await?, c.id, &e)
                            .await?;
                        if attempts >= max_attempts {
                            return self
                                .record(
                                    c,
                                    Charged::GaveUp(format!("payment declined after retries: {e}")),
                                    Some(&intent),
                                )
                                .await;
                        }
                        return Ok(Next::Later(e));
                    }
                    Ok(state) => state,
                    Err(lookup) => {
                        return Ok(Next::Later(format!(
                            "charge outcome unknown ({e}); could not ask the provider: {lookup}"
                        )));
                    }
                }
            }
        };
        match state {
            ChargeState::Succeeded => {
                self.count("charge", "approved");
                self.record(c, Charged::Approved, Some(&intent)).await
            }
            ChargeState::Declined(e) => {
                self.count("charge", "declined");
                self.record(c, Charged::Declined(e), Some(&intent)).await
            }
            ChargeState::Canceled => {
                self.record(
                    c,
                    Charged::Declined("payment canceled".into()),
                    Some(&intent),
                )
                .await
            }
            ChargeState::Processing => {
                self.count("charge", "processing");
                Ok(Next::Later("the payment is processing".into()))
            }
            ChargeState::Open => Ok(Next::Later(
                "the provider left the payment unconfirmed".into(),
            )),
        }
    }

    /// Records a charge's outcome with the order's transition (paid and on to the stock,
    /// or failed), in one transaction. An order that moved on meanwhile (cancelled, timed
    /// out) keeps its status: its settling step deals with the money.
    async fn record(
        &self,
        c: &Claimed,
        outcome: Charged,
        intent: Option<&str>,
    ) -> anyhow::Result<Next> {
        let mut tx = self.orders.db.begin().await?;
        let Some(order) = db::order_for_update(&mut tx, c.id).await? else {
            return Ok(Next::Done);
        };
        let (status, error) = match &outcome {
            Charged::Approved => (PaymentStatus::Succeeded, None),
            Charged::Declined(e) => (PaymentStatus::Declined, Some(e.as_str())),
            Charged::GaveUp(e) => (PaymentStatus::Failed, Some(e.as_str())),
        };
        let key = payments::confirm_key(c.id, c.step_attempts);
        if let Charged::GaveUp(e) = &outcome {
            // Each attempt is recorded already; any still `requested` captured nothing.
            db::fail_requested_charges(&mut tx, c.id, e).await?;
        } else {
            db::settle_charge(
                &mut tx,
                &NewPayment {
                    order_id: c.id,
                    kind: PaymentKind::Charge,
                    status,
                    gateway: self.gateway.name(),
                    idempotency_key: &key,
                    provider_id: intent,
                    amount: order.total(),
                    error,
                },
            )
            .await?;
        }
        let moved_on = order.saga_step != Some(Step::Charge);
        if moved_on {
            // Cancelled or timed out meanwhile: its settling step may have been claimed
            // (and passed over here while this charge ran): due now.
            if order.saga_step == Some(Step::Refund) {
                db::retry_step_later(&mut tx, c.id, 0).await?;
            }
        } else {
            let (to, reason, step) = match &outcome {
                Charged::Approved => (OrderStatus::Paid, None, Some(Step::Stock)),
                Charged::Declined(e) => (
                    OrderStatus::PaymentFailed,
                    Some(format!("payment declined: {e}")),
                    None,
                ),
                Charged::GaveUp(e) => (
                    OrderStatus::PaymentFailed,
                    Some(e.clone()),
                    Some(Step::Refund),
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
                    return Ok(Next::Done);
                }
            }
        }
        db::delete_payment_method(&mut tx, c.id).await?;
        tx.commit().await?;
        mp_events::outbox::committed();
        if moved_on || matches!(outcome, Charged::GaveUp(_)) {
            self.orders.wake.notify_one();
        }
        Ok(Next::Done)
    }

    /// The `refund` step of an order that ended without being confirmed: whatever the
    /// provider captured is refunded, an intent it did not capture is cancelled.
    async fn settle(&self, c: &Claimed) -> anyhow::Result<Next> {
        let Some(order) = db::order(&mut *self.orders.db.acquire().await?, c.id).await? else {
            return Ok(Next::Done);
        };
        if order.saga_step != Some(Step::Refund) {
            return Ok(Next::Done);
        }
        if !order.charge_started && order.payment_intent.is_none() {
            // No driver ever worked on its charge: the provider holds nothing.
            return self.settled(&order, None).await;
        }
        let intent = match self.intent(&order).await? {
            Ok(intent) => intent,
            Err(e) => return Ok(Next::Later(format!("could not reach the provider: {e}"))),
        };
        let state = match self.retrieve(&intent).await {
            Ok(ChargeState::Open | ChargeState::Declined(_)) => {
                match quick_retries(self.retry, "payment cancel", || {
                    self.gateway.cancel(&intent)
                })
                .await
                {
                    Ok(state) => state,
                    Err(e) => return Ok(Next::Later(format!("could not cancel the payment: {e}"))),
                }
            }
            Ok(state) => state,
            Err(e) => return Ok(Next::Later(format!("could not ask the provider: {e}"))),
        };
        match state {
            ChargeState::Succeeded => self.refund(&order, &intent).await,
            ChargeState::Processing => Ok(Next::Later(
                "the payment is still processing; it is refunded or cancelled once it settles"
                    .into(),
            )),
            // Cancelled (or refused for good): nothing captured, nothing ever will be.
            _ => {
                db::fail_requested_charges(
                    &mut *self.orders.db.acquire().await?,
                    c.id,
                    "nothing captured: the payment was cancelled",
                )
                .await?;
                self.settled(&order, None).await
            }
        }
    }

    /// Refunds the order's captured intent and records it.
    async fn refund(&self, order: &OrderRow, intent: &str) -> anyhow::Result<Next> {
        let request = RefundRequest {
            order_id: order.id,
            amount: order.total(),
            intent_id: intent.to_owned(),
        };
        let refunded = quick_retries(self.retry, "refund", || self.gateway.refund(&request)).await;
        match refunded {
            Ok(r) => {
                self.count("refund", "approved");
                self.settled(order, Some((intent, &r.provider_id))).await
            }
            Err(e) => {
                self.count(
                    "refund",
                    if e.is_transient() {
                        "transient"
                    } else {
                        "declined"
                    },
                );
                Ok(Next::Later(format!("refund failed: {e}")))
            }
        }
    }

    /// Ends the settling step; with a refund, records the captured charge (if no
    /// attempt recorded it: its answer was lost) and the refund.
    async fn settled(
        &self,
        order: &OrderRow,
        refund: Option<(&str, &str)>,
    ) -> anyhow::Result<Next> {
        let mut tx = self.orders.db.begin().await?;
        if let Some((intent, refund_id)) = refund {
            if db::succeeded_payment(&mut tx, order.id, PaymentKind::Charge)
                .await?
                .is_none()
            {
                db::settle_charge(
                    &mut tx,
                    &NewPayment {
                        order_id: order.id,
                        kind: PaymentKind::Charge,
                        status: PaymentStatus::Succeeded,
                        gateway: self.gateway.name(),
                        idempotency_key: &payments::intent_key(order.id),
                        provider_id: Some(intent),
                        amount: order.total(),
                        error: None,
                    },
                )
                .await?;
            }
            db::insert_payment(
                &mut tx,
                &NewPayment {
                    order_id: order.id,
                    kind: PaymentKind::Refund,
                    status: PaymentStatus::Succeeded,
                    gateway: self.gateway.name(),
                    idempotency_key: &payments::refund_key(order.id),
                    provider_id: Some(refund_id),
                    amount: order.total(),
                    error: None,
                },
            )
            .await?;
            tracing::info!(order_id = %order.id, "refunded");
        }
        db::set_step(&mut tx, order.id, None).await?;
        tx.commit().await?;
        Ok(Next::Done)
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
        let mut settle = false;
        for order in overdue {
            let step = order.saga_step.map(Step::as_str).unwrap_or_default();
            let (to, reason) = match order.status {
                OrderStatus::Pending => (
                    OrderStatus::PaymentFailed,
                    "timed out waiting for the payment",
                ),
                _ => (
                    OrderStatus::Rejected,
                    "timed out waiting for the stock commit",
                ),
            };
            // Whatever the provider holds for it is settled (refunded or cancelled).
            let started = order.charge_started || order.payment_intent.is_some();
            let change = Change {
                reason: Some(reason),
                stock_committed: false,
                step: Some(started.then_some(Step::Refund)),
            };
            match self
                .orders
                .transition(&mut tx, &order, to, Actor::System, change)
                .await
            {
                Ok(()) => {
                    settle |= started;
                    db::delete_payment_method(&mut tx, order.id).await?;
                    self.orders
                        .metrics
                        .compensated
                        .with_label_values(&[step])
                        .inc();
                    tracing::warn!(order_id = %order.id, step, reason, "saga step timed out; compensated");
                }
                Err(TransitionError::Db(e)) => return Err(e.into()),
                Err(e) => tracing::warn!(order_id = %order.id, error = %e, "not compensated"),
            }
        }
        tx.commit().await?;
        mp_events::outbox::committed();
        if settle {
            self.orders.wake.notify_one();
        }
        Ok(())
    }
}
