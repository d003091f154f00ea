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

mod dispatch;
mod headers;
mod inbox;
mod requeue;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use sqlx::{PgConnection, PgPool};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use self::dispatch::{ErasedHandler, Typed};
pub use self::headers::{
    ATTEMPTS_HEADER, DEAD_LETTERED_AT_HEADER, HANDLER_HEADER, REASON_HEADER, ROUTING_KEY_HEADER,
};
pub(crate) use self::headers::{header_str, header_u32, headers_of};
use self::requeue::Publisher;
use crate::backoff::Delays;
use crate::broker::Broker;
use crate::catalog::{Event, Service, catalog};
use crate::envelope::Envelope;
use crate::metrics::EventMetrics;
use crate::outbox::sleep_or_cancel;

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
        let publisher = Publisher::new(broker.clone());
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
            publisher,
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
}

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

async fn ack(delivery: &Delivery) {
    if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
        // The channel died: the broker redelivers the message and the inbox absorbs it.
        tracing::warn!(error = %e, "ack failed; the message will be redelivered");
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    /// A PostgreSQL error with an SQLSTATE code.
    #[derive(Debug)]
    struct Sqlstate(&'static str);

    impl std::fmt::Display for Sqlstate {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "error {}", self.0)
        }
    }

    impl std::error::Error for Sqlstate {}

    impl sqlx::error::DatabaseError for Sqlstate {
        fn message(&self) -> &str {
            "error"
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn kind(e: &HandlerError) -> &'static str {
        match e {
            HandlerError::Transient(_) => "transient",
            HandlerError::Unavailable(_) => "unavailable",
            HandlerError::Permanent(_) => "permanent",
        }
    }

    fn of_sqlstate(code: &'static str) -> &'static str {
        kind(&HandlerError::from(sqlx::Error::Database(Box::new(
            Sqlstate(code),
        ))))
    }

    #[test]
    fn postgres_out_of_reach_is_unavailable() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        for e in [
            sqlx::Error::Io(refused),
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::WorkerCrashed,
            sqlx::Error::Protocol("unexpected end".into()),
        ] {
            assert_eq!(kind(&HandlerError::from(e)), "unavailable");
        }
    }

    #[test]
    fn a_connection_exception_a_shutdown_or_too_many_connections_is_unavailable() {
        // 08006 connection failure, 57P01 admin shutdown, 57P03 cannot connect now,
        // 53300 too many connections.
        for code in ["08006", "08001", "57P01", "57P02", "57P03", "53300"] {
            assert_eq!(of_sqlstate(code), "unavailable", "{code}");
        }
    }

    #[test]
    fn a_conflict_or_a_lack_of_resources_is_worth_retrying() {
        // 40001 serialization failure, 40P01 deadlock, 53200 out of memory, 57014 query
        // cancelled.
        for code in ["40001", "40P01", "53200", "53100", "57014"] {
            assert_eq!(of_sqlstate(code), "transient", "{code}");
        }
    }

    #[test]
    fn any_other_database_error_is_permanent() {
        // 23505 unique violation, 22P02 invalid text, 42P01 undefined table.
        for code in ["23505", "22P02", "42P01"] {
            assert_eq!(of_sqlstate(code), "permanent", "{code}");
        }
        assert_eq!(
            kind(&HandlerError::from(sqlx::Error::RowNotFound)),
            "permanent"
        );
    }

    #[test]
    fn redis_out_of_reach_is_unavailable_and_anything_else_from_it_transient() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(
            kind(&HandlerError::from(redis::RedisError::from(refused))),
            "unavailable"
        );
        let busy = redis::RedisError::from((redis::ErrorKind::BusyLoadingError, "loading"));
        assert_eq!(kind(&HandlerError::from(busy)), "transient");
        let typed = redis::RedisError::from((redis::ErrorKind::TypeError, "not a number"));
        assert_eq!(kind(&HandlerError::from(typed)), "transient");
    }

    #[test]
    fn a_handler_error_displays_its_whole_cause_chain() {
        let e = HandlerError::Transient(anyhow::anyhow!("deadlock").context("reserving"));
        assert_eq!(e.to_string(), "reserving: deadlock");
        assert_eq!(
            HandlerError::permanent("bad payload").to_string(),
            "bad payload"
        );
    }
}
