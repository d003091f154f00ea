//! The consumer runner.
//!
//! A [`Consumer`] reads its service's queue and dispatches each delivery to the handlers
//! registered for its type. Each handler runs in its own PostgreSQL transaction that
//! first records `(event id, handler)` in the inbox, so a redelivered event has one
//! effect. The delivery is acked only after every handler's transaction committed (or
//! found the event already handled).
//!
//! A handler's [`HandlerError::Transient`] sends the message to the retry queue of the
//! next backoff step; once the steps are used up, or on [`HandlerError::Permanent`], or
//! when the message is not a valid envelope, it goes to the dead-letter queue with the
//! reason in its headers, and the messages behind it keep flowing.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use futures::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel};
use sqlx::{PgConnection, PgPool};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::backoff::{Delays, Retryable, policy};
use crate::broker::Broker;
use crate::catalog::{Event, Service, catalog};
use crate::envelope::Envelope;
use crate::metrics::EventMetrics;
use crate::outbox::sleep_or_cancel;
use crate::topology::Topology;

pub const ATTEMPTS_HEADER: &str = "x-attempts";
pub const REASON_HEADER: &str = "x-dead-letter-reason";
pub const HANDLER_HEADER: &str = "x-dead-letter-handler";
pub const DEAD_LETTERED_AT_HEADER: &str = "x-dead-lettered-at";
pub const ROUTING_KEY_HEADER: &str = "x-original-routing-key";

/// Why a handler did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Worth retrying later (a serialization conflict, a deadlock): counts as one of the
    /// message's attempts.
    #[error("{0:#}")]
    Transient(anyhow::Error),
    /// A dependency cannot be reached (PostgreSQL, Redis down or refusing connections):
    /// not the message's fault, so it costs the message no attempt. The consumer puts it
    /// back and pauses until the dependency answers again, however long that takes.
    #[error("{0:#}")]
    Unavailable(anyhow::Error),
    /// Will never succeed (invalid payload, broken invariant): dead-letter at once.
    #[error("{0:#}")]
    Permanent(anyhow::Error),
}

impl HandlerError {
    pub fn permanent(msg: impl std::fmt::Display) -> Self {
        Self::Permanent(anyhow::anyhow!("{msg}"))
    }
    pub fn transient(msg: impl std::fmt::Display) -> Self {
        Self::Transient(anyhow::anyhow!("{msg}"))
    }
}

impl From<sqlx::Error> for HandlerError {
    fn from(e: sqlx::Error) -> Self {
        let code = match &e {
            sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
            _ => None,
        };
        match (&e, code.as_deref()) {
            // PostgreSQL is away: no connection, a broken one, or the server going down.
            (
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::Protocol(_)
                | sqlx::Error::Tls(_),
                _,
            ) => Self::Unavailable(e.into()),
            // Class 08: connection exception; 57P01-57P03: admin or crash shutdown,
            // cannot connect now; 53300: too many connections.
            (_, Some(c)) if c.starts_with("08") || c.starts_with("57P") || c == "53300" => {
                Self::Unavailable(e.into())
            }
            // Class 40: serialization failure, deadlock; 53: insufficient resources;
            // 57: other operator intervention (a cancelled statement).
            (_, Some(c)) if c.starts_with("40") || c.starts_with("53") || c.starts_with("57") => {
                Self::Transient(e.into())
            }
            _ => Self::Permanent(e.into()),
        }
    }
}

impl From<redis::RedisError> for HandlerError {
    fn from(e: redis::RedisError) -> Self {
        if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_timeout()
        {
            Self::Unavailable(e.into())
        } else {
            Self::Transient(e.into())
        }
    }
}

/// A handler of one event type. `NAME` is its inbox key, as listed in the catalog.
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    type Event: Event;
    const NAME: &'static str;

    /// Applies the event through `conn`, inside the transaction that also records it in
    /// the inbox. Side effects outside PostgreSQL must be idempotent.
    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &Envelope<Self::Event>,
    ) -> Result<(), HandlerError>;

    /// Whether the event concerns this handler at all. One that does not is passed over
    /// without a transaction or an inbox row: it has no effect to repeat. (Inventory's
    /// restock sees every `order.updated` but acts only on failures and cancellations.)
    fn concerns(&self, _event: &Envelope<Self::Event>) -> bool {
        true
    }

    /// Runs after the transaction of [`handle`](Self::handle) committed, and again when
    /// a redelivery finds the event already in the inbox (its effect committed, but the
    /// process may have stopped before this ran). For idempotent follow-ups outside
    /// PostgreSQL that must see the committed state, such as refreshing a cache. The
    /// delivery is acked whatever happens here, so failures are the handler's to log.
    async fn after_commit(&self, _event: &Envelope<Self::Event>) {}
}

#[async_trait]
trait ErasedHandler: Send + Sync {
    fn name(&self) -> &'static str;
    fn concerns_raw(&self, raw: &Envelope) -> bool;
    async fn handle_raw(&self, conn: &mut PgConnection, raw: &Envelope)
    -> Result<(), HandlerError>;
    async fn after_commit_raw(&self, raw: &Envelope);
}

struct Typed<H>(H);

#[async_trait]
impl<H: EventHandler> ErasedHandler for Typed<H> {
    fn name(&self) -> &'static str {
        H::NAME
    }
    fn concerns_raw(&self, raw: &Envelope) -> bool {
        // An undecodable payload concerns it: `handle_raw` dead-letters it with the reason.
        raw.decode::<H::Event>()
            .map_or(true, |event| self.0.concerns(&event))
    }
    async fn handle_raw(
        &self,
        conn: &mut PgConnection,
        raw: &Envelope,
    ) -> Result<(), HandlerError> {
        let event = raw.decode::<H::Event>().map_err(|e| {
            HandlerError::permanent(format!("invalid {} payload: {e}", H::Event::TYPE))
        })?;
        self.0.handle(conn, &event).await
    }
    async fn after_commit_raw(&self, raw: &Envelope) {
        if let Ok(event) = raw.decode::<H::Event>() {
            self.0.after_commit(&event).await;
        }
    }
}

enum Outcome {
    Done,
    Duplicate,
}

pub struct Consumer {
    service: Service,
    broker: Broker,
    pool: PgPool,
    metrics: EventMetrics,
    handlers: HashMap<&'static str, Vec<Arc<dyn ErasedHandler>>>,
    /// The catalog's publisher of each event type: anything else is not authentic.
    publishers: HashMap<&'static str, Service>,
    /// Deliveries taken from the broker at once (unacked).
    pub prefetch: u16,
    /// Handlers running at once. Each holds a database connection for its transaction,
    /// so this stays below the pool size and HTTP handlers always find connections.
    pub concurrency: usize,
    /// Longest one handler may run; then it counts as a transient failure (or, when
    /// PostgreSQL does not answer either, as a dependency that is down).
    pub handler_timeout: Duration,
    /// Set while a dependency is down: the consumer takes no new deliveries until it
    /// answers again.
    dependency_down: std::sync::atomic::AtomicBool,
    publisher: Publisher,
}

impl Consumer {
    pub fn new(service: Service, broker: Broker, pool: PgPool, metrics: EventMetrics) -> Self {
        let publisher_broker = broker.clone();
        // Half the pool, at least one: the other half serves HTTP requests.
        let concurrency = (pool.options().get_max_connections() as usize / 2).max(1);
        Self {
            service,
            broker,
            pool,
            metrics,
            handlers: HashMap::new(),
            publishers: catalog()
                .iter()
                .map(|s| (s.event_type, s.publisher))
                .collect(),
            prefetch: 32,
            concurrency,
            handler_timeout: Duration::from_secs(30),
            dependency_down: std::sync::atomic::AtomicBool::new(false),
            publisher: Publisher {
                broker: publisher_broker,
                channel: tokio::sync::Mutex::new(None),
            },
        }
    }

    /// Registers a handler. Panics if the catalog does not list it for this service,
    /// because the queue would not be bound to its events.
    pub fn handle<H: EventHandler>(mut self, handler: H) -> Self {
        let listed = catalog().iter().any(|s| {
            s.event_type == H::Event::TYPE && s.consumers.contains(&(self.service, H::NAME))
        });
        assert!(
            listed,
            "the catalog does not list handler {} of {} for {}",
            H::NAME,
            H::Event::TYPE,
            self.service
        );
        self.handlers
            .entry(H::Event::TYPE)
            .or_default()
            .push(Arc::new(Typed(handler)));
        self
    }

    pub fn is_empty(&self) -> bool {
        self.handlers.is_empty()
    }

    /// Consumes until `shutdown`, reconnecting after broker failures. In-flight
    /// deliveries finish before it returns.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let this = self;
        let mut delays = Delays::new(Duration::from_millis(100), Duration::from_secs(5));
        while !shutdown.is_cancelled() {
            match this.clone().consume(&shutdown).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, service = %this.service, "consumer lost its channel; reconnecting");
                    sleep_or_cancel(&shutdown, delays.next_delay()).await;
                }
            }
        }
    }

    async fn consume(self: Arc<Self>, shutdown: &CancellationToken) -> Result<(), lapin::Error> {
        let topology = self.broker.topology();
        // Deliveries come on the consuming connection; retries and dead letters leave on
        // the publishing one, so a broker that blocks publishers (a resource alarm)
        // never holds up receiving and acknowledging.
        let channel = self.broker.channel().await?;
        timed(channel.basic_qos(self.prefetch.max(1), BasicQosOptions::default())).await?;
        let slots = Arc::new(Semaphore::new(self.concurrency.max(1)));
        let tag = format!("{}-{}", self.service, uuid::Uuid::new_v4());
        let mut deliveries = timed(channel.basic_consume(
            &topology.queue(self.service),
            &tag,
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ))
        .await?;
        let mut in_flight = JoinSet::new();
        let mut dlq_probe = tokio::time::interval(Duration::from_secs(10));
        let result = loop {
            while in_flight.try_join_next().is_some() {}
            if self.dependency_down.load(Relaxed) {
                // Take nothing new while a dependency is down; what was taken is put
                // back (without costing an attempt). Resume once PostgreSQL answers.
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        let _ = channel.basic_cancel(&tag, BasicCancelOptions::default()).await;
                        break Ok(());
                    }
                    () = self.wait_for_database() => {}
                }
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = channel.basic_cancel(&tag, BasicCancelOptions::default()).await;
                    break Ok(());
                }
                _ = dlq_probe.tick() => {
                    // Bounded: a broker slow to answer must not stall the deliveries.
                    let _ = tokio::time::timeout(Duration::from_secs(5), self.probe_dead_letters()).await;
                }
                next = deliveries.next() => match next {
                    Some(Ok(delivery)) => {
                        let Ok(slot) = slots.clone().acquire_owned().await else {
                            break Ok(());
                        };
                        let this = self.clone();
                        in_flight.spawn(async move {
                            this.process(delivery).await;
                            drop(slot);
                        });
                    }
                    Some(Err(e)) => break Err(e),
                    None => break Err(lapin::Error::InvalidChannelState(lapin::ChannelState::Closed)),
                }
            }
        };
        while in_flight.join_next().await.is_some() {}
        if result.is_ok() {
            let _ = timed(channel.close(200, "consumer stopped")).await;
        }
        self.publisher.close().await;
        result
    }

    /// Whether PostgreSQL answers now (within two seconds).
    async fn database_answers(&self) -> bool {
        let probe = sqlx::query("select 1").execute(&self.pool);
        matches!(
            tokio::time::timeout(Duration::from_secs(2), probe).await,
            Ok(Ok(_))
        )
    }

    /// Waits, probing with backoff, until PostgreSQL answers; then lets the consumer
    /// take deliveries again.
    async fn wait_for_database(&self) {
        let mut delays = Delays::new(Duration::from_millis(100), Duration::from_secs(5));
        while !self.database_answers().await {
            tokio::time::sleep(delays.next_delay()).await;
        }
        if self.dependency_down.swap(false, Relaxed) {
            tracing::info!(service = %self.service, "dependency answers again; consuming");
        }
    }

    /// Updates the dead-letter gauge. On a channel of its own: a failed passive declare
    /// closes its channel, and that must never be the consuming one.
    async fn probe_dead_letters(&self) {
        let Ok(channel) = self.broker.channel().await else {
            return;
        };
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let queue = self.broker.topology().dead_letter_queue(self.service);
        if let Ok(q) = channel
            .queue_declare(&queue, passive, FieldTable::default())
            .await
        {
            self.metrics.dead_letters.set(i64::from(q.message_count()));
            let _ = channel.close(200, "probed").await;
        }
    }

    /// Handles one delivery: its retries and dead letters leave on the publishing
    /// connection, its ack on the delivery's own channel.
    async fn process(&self, delivery: Delivery) {
        let attempts = header_u32(&delivery.properties, ATTEMPTS_HEADER).unwrap_or(0) + 1;
        let envelope: Envelope = match serde_json::from_slice(&delivery.data) {
            Ok(e) => e,
            Err(e) => {
                let key = delivery.routing_key.to_string();
                self.metrics
                    .consumed
                    .with_label_values(&[&key, "", "dead_lettered"])
                    .inc();
                tracing::error!(error = %e, routing_key = %key, "malformed message; dead-lettering");
                self.dead_letter(
                    &delivery,
                    attempts,
                    None,
                    &format!("malformed envelope: {e}"),
                )
                .await;
                return;
            }
        };
        let ctx = envelope.context();
        let span = tracing::info_span!(
            "event",
            service = %self.service,
            event_type = %envelope.event_type,
            event_id = %envelope.id,
            correlation_id = %envelope.correlation_id,
            trace_id = %ctx.trace_id,
            attempt = attempts,
        );
        ctx.scope(
            self.dispatch(&delivery, &envelope, attempts)
                .instrument(span),
        )
        .await;
    }

    async fn dispatch(&self, delivery: &Delivery, envelope: &Envelope, attempts: u32) {
        if let Some(&publisher) = self.publishers.get(envelope.event_type.as_str())
            && publisher.as_str() != envelope.source
        {
            self.metrics
                .consumed
                .with_label_values(&[&envelope.event_type, "", "dead_lettered"])
                .inc();
            let reason = format!(
                "not authentic: {} events are published by the {publisher} service, this one claims to come from {}",
                envelope.event_type, envelope.source
            );
            tracing::error!(reason = %reason, "dead-lettering");
            self.dead_letter(delivery, attempts, None, &reason).await;
            return;
        }
        let Some(handlers) = self.handlers.get(envelope.event_type.as_str()) else {
            self.metrics
                .consumed
                .with_label_values(&[&envelope.event_type, "", "unhandled"])
                .inc();
            tracing::warn!("no handler for this event type; acking");
            ack(delivery).await;
            return;
        };
        for handler in handlers {
            if !handler.concerns_raw(envelope) {
                self.metrics
                    .consumed
                    .with_label_values(&[envelope.event_type.as_str(), handler.name(), "skipped"])
                    .inc();
                continue;
            }
            let started = Instant::now();
            let result = self.guarded(handler.as_ref(), envelope).await;
            self.metrics
                .handler_seconds
                .with_label_values(&[handler.name()])
                .observe(started.elapsed().as_secs_f64());
            let labels = |outcome| [envelope.event_type.as_str(), handler.name(), outcome];
            match result {
                Ok(Outcome::Done) => {
                    self.metrics.consumed.with_label_values(&labels("ok")).inc();
                    let hop = (Utc::now() - envelope.occurred_at)
                        .num_microseconds()
                        .unwrap_or(0) as f64
                        / 1e6;
                    self.metrics
                        .hop_seconds
                        .with_label_values(&[&envelope.event_type])
                        .observe(hop.max(0.0));
                }
                Ok(Outcome::Duplicate) => {
                    self.metrics
                        .consumed
                        .with_label_values(&labels("duplicate"))
                        .inc();
                    tracing::info!(handler = handler.name(), "already handled; skipping");
                }
                Err(HandlerError::Unavailable(e)) => {
                    self.metrics
                        .consumed
                        .with_label_values(&labels("unavailable"))
                        .inc();
                    if !self.dependency_down.swap(true, Relaxed) {
                        tracing::warn!(handler = handler.name(), error = %format!("{e:#}"), "a dependency is down; pausing the consumer until it answers");
                    }
                    // Back through the shortest delay, with the attempts it had: the
                    // outage costs it nothing, however long it lasts.
                    self.put_back(delivery, attempts - 1).await;
                    return;
                }
                Err(HandlerError::Transient(e))
                    if attempts < self.broker.topology().max_attempts() =>
                {
                    self.metrics
                        .consumed
                        .with_label_values(&labels("retried"))
                        .inc();
                    tracing::warn!(handler = handler.name(), error = %format!("{e:#}"), "transient failure; retrying later");
                    self.retry(delivery, attempts).await;
                    return;
                }
                Err(e) => {
                    self.metrics
                        .consumed
                        .with_label_values(&labels("dead_lettered"))
                        .inc();
                    let reason = match &e {
                        HandlerError::Transient(err) | HandlerError::Unavailable(err) => {
                            format!("gave up after {attempts} attempts: {err:#}")
                        }
                        HandlerError::Permanent(err) => format!("{err:#}"),
                    };
                    tracing::error!(handler = handler.name(), reason = %reason, "dead-lettering");
                    self.dead_letter(delivery, attempts, Some(handler.name()), &reason)
                        .await;
                    return;
                }
            }
        }
        ack(delivery).await;
    }

    /// Runs a handler under the timeout, turning a panic into a transient failure, so a
    /// delivery always ends acked, retried or dead-lettered, never leaked.
    async fn guarded(
        &self,
        handler: &dyn ErasedHandler,
        envelope: &Envelope,
    ) -> Result<Outcome, HandlerError> {
        let run = AssertUnwindSafe(self.run_handler(handler, envelope)).catch_unwind();
        match tokio::time::timeout(self.handler_timeout, run).await {
            Ok(Ok(result)) => result,
            Ok(Err(panic)) => Err(HandlerError::transient(format!(
                "handler panicked: {}",
                panic_message(&panic)
            ))),
            Err(_) => {
                let why = format!("handler timed out after {:?}", self.handler_timeout);
                if self.database_answers().await {
                    Err(HandlerError::transient(why))
                } else {
                    Err(HandlerError::Unavailable(anyhow::anyhow!(
                        "{why}; PostgreSQL does not answer"
                    )))
                }
            }
        }
    }

    async fn run_handler(
        &self,
        handler: &dyn ErasedHandler,
        envelope: &Envelope,
    ) -> Result<Outcome, HandlerError> {
        let mut tx = self.pool.begin().await?;
        let fresh = sqlx::query(
            "insert into inbox (event_id, handler) values ($1, $2) on conflict do nothing",
        )
        .bind(envelope.id)
        .bind(handler.name())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !fresh {
            drop(tx);
            handler.after_commit_raw(envelope).await;
            return Ok(Outcome::Duplicate);
        }
        crate::outbox::tracking(async {
            handler.handle_raw(&mut tx, envelope).await?;
            tx.commit().await.map_err(HandlerError::from)
        })
        .await?;
        handler.after_commit_raw(envelope).await;
        Ok(Outcome::Done)
    }

    async fn retry(&self, delivery: &Delivery, attempts: u32) {
        let topology = self.broker.topology();
        let step = topology
            .retry_step(attempts)
            .unwrap_or(topology.retry_delays.len().saturating_sub(1));
        self.delay(delivery, step, attempts).await;
    }

    /// Puts a delivery back through the shortest delay with the attempts it had.
    async fn put_back(&self, delivery: &Delivery, attempts: u32) {
        self.delay(delivery, 0, attempts).await;
    }

    /// Republishes the delivery to the retry queue of `step`, recording `attempts`.
    async fn delay(&self, delivery: &Delivery, step: usize, attempts: u32) {
        let topology = self.broker.topology();
        let mut headers = headers_of(&delivery.properties);
        headers.insert(ATTEMPTS_HEADER.into(), AMQPValue::LongUInt(attempts));
        let props = delivery.properties.clone().with_headers(headers);
        republish(
            &self.publisher,
            delivery,
            &topology.service_exchange(self.service),
            &Topology::retry_key(step),
            props,
        )
        .await;
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery,
        attempts: u32,
        handler: Option<&str>,
        reason: &str,
    ) {
        let mut headers = headers_of(&delivery.properties);
        let text = |s: &str| AMQPValue::LongString(LongString::from(s));
        headers.insert(ATTEMPTS_HEADER.into(), AMQPValue::LongUInt(attempts));
        headers.insert(
            REASON_HEADER.into(),
            text(&reason.chars().take(2000).collect::<String>()),
        );
        headers.insert(HANDLER_HEADER.into(), text(handler.unwrap_or("")));
        headers.insert(
            DEAD_LETTERED_AT_HEADER.into(),
            text(&Utc::now().to_rfc3339()),
        );
        headers.insert(
            ROUTING_KEY_HEADER.into(),
            text(delivery.routing_key.as_str()),
        );
        let props = delivery.properties.clone().with_headers(headers);
        republish(
            &self.publisher,
            delivery,
            &self.broker.topology().service_exchange(self.service),
            Topology::DEAD_LETTER_KEY,
            props,
        )
        .await;
    }
}

/// Publishes a copy of the delivery to `queue` and acks the original once the broker
/// confirmed the copy. A failing publish is retried with backoff; if it still fails, the
/// original is requeued after a pause (never at once, which would loop hot), so nothing
/// is lost.
async fn republish(
    publisher: &Publisher,
    delivery: &Delivery,
    exchange: &str,
    routing_key: &str,
    props: BasicProperties,
) {
    let publish = || async {
        let channel = publisher.channel().await?;
        let confirm = timed(channel.basic_publish(
            exchange,
            routing_key,
            // Unroutable (a missing binding) comes back instead of vanishing.
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            &delivery.data,
            props.clone(),
        ))
        .await?;
        match tokio::time::timeout(REPUBLISH_TIMEOUT, confirm).await {
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(_)))) => Err(anyhow::anyhow!(
                "no queue is bound to {exchange} {routing_key}"
            )),
            Ok(Ok(_)) => Err(anyhow::anyhow!("the broker refused the message")),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => {
                // A channel that does not confirm may sit behind a blocked connection.
                publisher.discard().await;
                Err(anyhow::anyhow!("no confirm within {REPUBLISH_TIMEOUT:?}"))
            }
        }
    };
    let confirmed = publish
        .retry(policy(Duration::from_millis(100), Duration::from_secs(2)).with_max_times(3))
        .await;
    match confirmed {
        Ok(()) => ack(delivery).await,
        Err(e) => {
            tracing::warn!(exchange, routing_key, error = %format!("{e:#}"), "could not move the message; requeueing it after a pause");
            tokio::time::sleep(REQUEUE_PAUSE).await;
            let _ = delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await;
        }
    }
}

/// The consumer's channel for retries and dead letters, on the publishing connection:
/// opened when first needed, and again after it broke or stopped confirming.
struct Publisher {
    broker: Broker,
    channel: tokio::sync::Mutex<Option<Channel>>,
}

impl Publisher {
    async fn channel(&self) -> anyhow::Result<Channel> {
        let mut current = self.channel.lock().await;
        if let Some(ch) = current.as_ref().filter(|ch| ch.status().connected()) {
            return Ok(ch.clone());
        }
        let fresh = self.broker.confirm_channel().await?;
        *current = Some(fresh.clone());
        Ok(fresh)
    }

    async fn discard(&self) {
        if let Some(ch) = self.channel.lock().await.take() {
            tokio::spawn(async move {
                let _ = timed(ch.close(200, "stopped confirming")).await;
            });
        }
    }

    async fn close(&self) {
        if let Some(ch) = self.channel.lock().await.take() {
            let _ = timed(ch.close(200, "consumer stopped")).await;
        }
    }
}

const REPUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for the broker's answer to a channel operation.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

/// `op` bounded by [`BROKER_TIMEOUT`].
async fn timed<T>(op: impl Future<Output = Result<T, lapin::Error>>) -> Result<T, lapin::Error> {
    tokio::time::timeout(BROKER_TIMEOUT, op)
        .await
        .map_err(|_| {
            lapin::Error::IOError(Arc::new(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the broker did not answer",
            )))
        })?
}
const REQUEUE_PAUSE: Duration = Duration::from_secs(2);

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}

async fn ack(delivery: &Delivery) {
    if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
        // The channel died: the broker redelivers the message and the inbox absorbs it.
        tracing::warn!(error = %e, "ack failed; the message will be redelivered");
    }
}

pub(crate) fn headers_of(props: &BasicProperties) -> FieldTable {
    props.headers().clone().unwrap_or_default()
}

pub(crate) fn header_u32(props: &BasicProperties, name: &str) -> Option<u32> {
    match props.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongUInt(v) => Some(*v),
        AMQPValue::LongInt(v) => u32::try_from(*v).ok(),
        AMQPValue::LongLongInt(v) => u32::try_from(*v).ok(),
        AMQPValue::ShortInt(v) => u32::try_from(*v).ok(),
        AMQPValue::ShortUInt(v) => Some(u32::from(*v)),
        _ => None,
    }
}

pub(crate) fn header_str(props: &BasicProperties, name: &str) -> Option<String> {
    match props.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}
