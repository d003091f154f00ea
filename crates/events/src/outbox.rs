//! Transactional outbox and its relay.
//!
//! [`enqueue`] writes an event into the `outbox` table through the caller's connection, so
//! it commits or rolls back with the state change; whoever commits that transaction
//! calls [`committed`], which wakes the relays of this process (the consumer does after
//! every handler, the HTTP layer after every request that may write, the workers after
//! their own transactions), and a relay also polls as a safety net (rows of another
//! process, a forgotten wake-up). The [`Relay`] claims committed rows
//! with a lease (`claimed_until`, in one short statement with `FOR UPDATE SKIP LOCKED`),
//! publishes them with publisher confirms outside any transaction, every wait bounded by
//! a timeout, and marks them sent. Any number of replicas can run relays. A relay that
//! dies after publishing and before marking leaves the rows to be published again when
//! the lease ends; the consumers' inbox absorbs the copy. [`Housekeeping`] (lag gauges,
//! pruning published rows after minutes and the inbox after its retention) is a worker
//! of its own.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use lapin::options::BasicPublishOptions;
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel};
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::backoff::Delays;
use crate::broker::Broker;
use crate::catalog::{Event, Service};
use crate::envelope::Envelope;
use crate::metrics::EventMetrics;

/// Counts commits that wrote outbox rows in this process; every relay watches it.
static COMMITS: LazyLock<watch::Sender<u64>> = LazyLock::new(|| watch::channel(0).0);

tokio::task_local! {
    /// Set by [`enqueue`] inside [`tracking`]: the scope wrote outbox rows.
    static WROTE: std::cell::Cell<bool>;
}

/// Wakes this process's relays: a transaction that wrote outbox rows has committed.
/// Costs a counter increment; a relay that is busy sees it when it is done. (Instead
/// of NOTIFY from the database, which serializes every notifying commit of the whole
/// database on one lock.)
pub fn committed() {
    COMMITS.send_modify(|n| *n = n.wrapping_add(1));
}

/// Runs `work` (a request, a handler) and wakes the relays afterwards if it called
/// [`enqueue`], and only then: most requests and handlers write no event, and a relay
/// woken for nothing still asks the database. Whoever commits the transaction returns
/// from `work` after the commit, so the wake-up comes after it.
pub async fn tracking<F: Future>(work: F) -> F::Output {
    let (output, wrote) = WROTE
        .scope(std::cell::Cell::new(false), async {
            let output = work.await;
            (output, WROTE.with(std::cell::Cell::get))
        })
        .await;
    if wrote {
        committed();
    }
    output
}

/// Writes `payload` as an event into the outbox, in the caller's transaction.
pub async fn enqueue<E: Event>(
    conn: &mut PgConnection,
    source: Service,
    payload: E,
) -> Result<Uuid, sqlx::Error> {
    let envelope = Envelope::new(source, payload);
    let _ = WROTE.try_with(|wrote| wrote.set(true));
    sqlx::query("insert into outbox (id, event_type, envelope) values ($1, $2, $3)")
        .bind(envelope.id)
        .bind(&envelope.event_type)
        .bind(sqlx::types::Json(&envelope))
        .execute(conn)
        .await?;
    Ok(envelope.id)
}

/// An outbox row claimed by a relay.
#[derive(Debug, sqlx::FromRow)]
pub struct OutboxRow {
    pub seq: i64,
    pub id: Uuid,
    pub event_type: String,
    pub envelope: sqlx::types::Json<Envelope>,
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("broker did not confirm event {0}")]
    NotConfirmed(Uuid),
    #[error("no queue is bound for event {0} ({1}), which the catalog says is consumed")]
    Unroutable(Uuid, String),
    #[error("broker did not confirm within {0:?} (is it blocking publishers?)")]
    TimedOut(Duration),
}

/// How the relay and the outbox housekeeping behave.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    pub batch_size: i64,
    /// How often to look for rows without a notification (a missed NOTIFY, a relay that
    /// died holding a claim).
    pub poll_interval: Duration,
    /// Longest wait for a channel, and for RabbitMQ to confirm a batch.
    pub publish_timeout: Duration,
    /// How long a claim keeps other relays off its rows; longer than a publish can take.
    pub lease: Duration,
    /// How long published rows are kept for inspection.
    pub outbox_retention: Duration,
    /// How long the inbox remembers handled events (see `dlq redrive`).
    pub inbox_retention: Duration,
    /// How often housekeeping refreshes the lag gauges.
    pub housekeeping_interval: Duration,
    /// How often housekeeping prunes published outbox rows and old inbox rows (each
    /// pass reads past the rows kept, so not with every gauge refresh).
    pub prune_interval: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            batch_size: 200,
            poll_interval: Duration::from_millis(250),
            publish_timeout: Duration::from_secs(5),
            lease: Duration::from_secs(30),
            outbox_retention: Duration::from_secs(600),
            inbox_retention: Duration::from_secs(7 * 24 * 3600),
            housekeeping_interval: Duration::from_secs(2),
            prune_interval: Duration::from_secs(30),
        }
    }
}

/// Publishes committed outbox rows. Rows are claimed with a lease in one short statement,
/// published outside any transaction with every wait bounded, then marked sent. Any
/// number of relays can run; a relay that dies after publishing and before marking
/// leaves its rows to be published again when the lease ends, and the consumers' inbox
/// absorbs the copy.
pub struct Relay {
    pool: PgPool,
    broker: Broker,
    metrics: EventMetrics,
    /// Event types the catalog names consumers for.
    consumed: std::collections::HashSet<&'static str>,
    pub settings: RelaySettings,
}

impl Relay {
    pub fn new(pool: PgPool, broker: Broker, metrics: EventMetrics) -> Self {
        Self {
            pool,
            broker,
            metrics,
            consumed: crate::catalog::catalog()
                .iter()
                .filter(|spec| !spec.consumers.is_empty())
                .map(|spec| spec.event_type)
                .collect(),
            settings: RelaySettings::default(),
        }
    }

    pub fn with_settings(mut self, settings: RelaySettings) -> Self {
        self.settings = settings;
        self
    }

    /// Claims up to `limit` unsent rows, oldest first, that no live claim holds, until
    /// `lease` from now. One statement: its row locks last only as long as it runs. A
    /// claim is live until its lease ends, or until the database connection that made it
    /// is gone (its process died): a crashed relay's rows go out again at once.
    pub async fn claim(
        pool: &PgPool,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<OutboxRow>, sqlx::Error> {
        let mut rows: Vec<OutboxRow> = sqlx::query_as(
            "update outbox set claimed_until = now() + make_interval(secs => $2),
                 claimed_by = pg_backend_pid()
             where seq in (
                 select seq from outbox o
                 where published_at is null
                   and (claimed_until is null or claimed_until < now()
                        or not exists (select 1 from pg_stat_activity a where a.pid = o.claimed_by))
                 order by seq limit $1 for update skip locked)
             returning seq, id, event_type, envelope",
        )
        .bind(limit)
        .bind(lease.as_secs_f64())
        .fetch_all(pool)
        .await?;
        rows.sort_by_key(|r| r.seq);
        Ok(rows)
    }

    /// Publishes rows and waits for RabbitMQ to confirm every one. An event that the
    /// catalog says is consumed is published `mandatory`: if no queue is bound for it
    /// (a queue deleted by hand, a binding missing), RabbitMQ returns it instead of
    /// confirming and dropping it, and it stays unsent. (Events nobody consumes, such as
    /// `cart.created`, have no queue by design.)
    /// Answers the `seq`s of the rows RabbitMQ returned.
    pub async fn publish(
        &self,
        channel: &Channel,
        rows: &[OutboxRow],
    ) -> Result<Vec<i64>, RelayError> {
        let exchange = self.broker.topology().exchange();
        let mut confirms = Vec::with_capacity(rows.len());
        for row in rows {
            let body = serde_json::to_vec(&row.envelope.0).expect("an envelope serializes");
            let mandatory = self.consumed.contains(row.event_type.as_str());
            let confirm = channel
                .basic_publish(
                    &exchange,
                    &row.event_type,
                    BasicPublishOptions {
                        mandatory,
                        ..Default::default()
                    },
                    &body,
                    properties(&row.envelope),
                )
                .await?;
            confirms.push((row, confirm));
        }
        let mut returned = Vec::new();
        for (row, confirm) in confirms {
            match confirm.await? {
                Confirmation::Ack(None) => {}
                Confirmation::Ack(Some(_)) => returned.push(row.seq),
                _ => return Err(RelayError::NotConfirmed(row.id)),
            }
        }
        Ok(returned)
    }

    async fn mark_published(&self, rows: &[OutboxRow]) -> Result<(), sqlx::Error> {
        let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        sqlx::query(
            "update outbox set published_at = now(), claimed_until = null, claimed_by = null
             where seq = any($1)",
        )
        .bind(&seqs)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Gives claimed rows back at once after a failed publish (else the lease would).
    async fn unclaim(&self, rows: &[OutboxRow]) {
        let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        if let Err(e) = sqlx::query(
            "update outbox set claimed_until = null, claimed_by = null
             where seq = any($1) and published_at is null",
        )
        .bind(&seqs)
        .execute(&self.pool)
        .await
        {
            tracing::warn!(error = %e, "could not release claimed outbox rows; their lease will");
        }
    }

    /// One claim-publish-mark round on `channel`; returns how many events went out.
    pub async fn relay_batch(&self, channel: &Channel) -> Result<usize, RelayError> {
        let s = &self.settings;
        let rows = Self::claim(&self.pool, s.batch_size, s.lease).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let started = Instant::now();
        let published =
            match tokio::time::timeout(s.publish_timeout, self.publish(channel, &rows)).await {
                Ok(r) => r,
                Err(_) => Err(RelayError::TimedOut(s.publish_timeout)),
            };
        let returned = match published {
            Ok(returned) => returned,
            Err(e) => {
                self.unclaim(&rows).await;
                return Err(e);
            }
        };
        let (sent, unroutable): (Vec<OutboxRow>, Vec<OutboxRow>) =
            rows.into_iter().partition(|r| !returned.contains(&r.seq));
        self.mark_published(&sent).await?;
        self.metrics
            .outbox_publish_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.outbox_published.inc_by(sent.len() as u64);
        if let Some(first) = unroutable.first() {
            // Kept unsent, tried again after a backoff: the queue may come back (a
            // service starting declares every queue).
            self.metrics
                .outbox_unroutable
                .inc_by(unroutable.len() as u64);
            self.unclaim(&unroutable).await;
            return Err(RelayError::Unroutable(first.id, first.event_type.clone()));
        }
        Ok(sent.len())
    }

    async fn open_channel(&self) -> Result<Channel, RelayError> {
        match tokio::time::timeout(self.settings.publish_timeout, self.broker.confirm_channel())
            .await
        {
            Ok(r) => Ok(r?),
            Err(_) => Err(RelayError::TimedOut(self.settings.publish_timeout)),
        }
    }

    /// Publishes until `shutdown`, woken by [`committed`] and by a poll as a safety net.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut commits = COMMITS.subscribe();
        let mut channel: Option<Channel> = None;
        let mut delays = Delays::new(Duration::from_millis(100), Duration::from_secs(5));
        while !shutdown.is_cancelled() {
            // Commits from here on wake the next wait; earlier ones this batch sees.
            commits.borrow_and_update();
            let batch = async {
                let ch = match &channel {
                    Some(ch) if ch.status().connected() => ch.clone(),
                    _ => {
                        let ch = self.open_channel().await?;
                        channel = Some(ch.clone());
                        ch
                    }
                };
                self.relay_batch(&ch).await
            };
            match batch.await {
                Ok(n) => {
                    delays.reset();
                    self.broker.set_publish_problem(None);
                    if n as i64 == self.settings.batch_size {
                        continue;
                    }
                }
                Err(e) => {
                    self.metrics.outbox_publish_failures.inc();
                    tracing::warn!(error = %e, "relay batch failed; rows stay unsent");
                    if !matches!(e, RelayError::Database(_)) {
                        self.broker.set_publish_problem(Some(format!("relay: {e}")));
                    }
                    // A channel that timed out may be stuck behind a blocked connection:
                    // never reuse it.
                    if let Some(ch) = channel.take() {
                        tokio::spawn(async move {
                            let _ = tokio::time::timeout(
                                Duration::from_secs(1),
                                ch.close(200, "relay batch failed"),
                            )
                            .await;
                        });
                    }
                    sleep_or_cancel(&shutdown, delays.next_delay()).await;
                    continue;
                }
            }
            // Nothing (more) to send: wait for a commit in this process or the next poll.
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = commits.changed() => {}
                _ = tokio::time::sleep(self.settings.poll_interval) => {}
            }
        }
        if let Some(ch) = channel {
            let _ =
                tokio::time::timeout(Duration::from_secs(1), ch.close(200, "relay stopped")).await;
        }
    }
}

/// Refreshes the outbox lag gauges and prunes published outbox rows and old inbox rows.
/// Its own worker, so a relay stuck on the broker never freezes the lag metrics.
pub struct Housekeeping {
    pub pool: PgPool,
    pub metrics: EventMetrics,
    pub settings: RelaySettings,
}

impl Housekeeping {
    /// Rows deleted per statement, so pruning never holds many locks for long.
    const PRUNE_BATCH: i64 = 5000;

    /// Refreshes the gauges and prunes.
    pub async fn once(&self) -> Result<(), sqlx::Error> {
        self.gauges().await?;
        self.prune().await
    }

    /// Refreshes the outbox lag gauges.
    pub async fn gauges(&self) -> Result<(), sqlx::Error> {
        let (pending, oldest): (i64, Option<f64>) = sqlx::query_as(
            "select count(*), extract(epoch from now() - min(created_at))::float8
             from outbox where published_at is null",
        )
        .fetch_one(&self.pool)
        .await?;
        self.metrics.outbox_pending.set(pending);
        self.metrics
            .outbox_oldest_pending_seconds
            .set(oldest.unwrap_or(0.0) as i64);
        Ok(())
    }

    /// Deletes published outbox rows past their retention and inbox rows past theirs,
    /// oldest first, a batch per statement.
    pub async fn prune(&self) -> Result<(), sqlx::Error> {
        let outbox = self.settings.outbox_retention.as_secs_f64();
        while sqlx::query(
            "delete from outbox where seq in (
                 select seq from outbox where published_at < now() - make_interval(secs => $1)
                 order by published_at limit $2)",
        )
        .bind(outbox)
        .bind(Self::PRUNE_BATCH)
        .execute(&self.pool)
        .await?
        .rows_affected() as i64
            == Self::PRUNE_BATCH
        {}
        let inbox = self.settings.inbox_retention.as_secs_f64();
        while sqlx::query(
            "delete from inbox where ctid in (
                 select ctid from inbox where processed_at < now() - make_interval(secs => $1)
                 limit $2)",
        )
        .bind(inbox)
        .bind(Self::PRUNE_BATCH)
        .execute(&self.pool)
        .await?
        .rows_affected() as i64
            == Self::PRUNE_BATCH
        {}
        Ok(())
    }

    /// Refreshes the gauges every `housekeeping_interval` and prunes every
    /// `prune_interval`, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.settings.housekeeping_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pruned: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.gauges().await {
                tracing::warn!(error = %e, "outbox housekeeping failed");
                continue;
            }
            if pruned.is_none_or(|at| at.elapsed() >= self.settings.prune_interval) {
                match self.prune().await {
                    Ok(()) => pruned = Some(Instant::now()),
                    Err(e) => tracing::warn!(error = %e, "outbox pruning failed"),
                }
            }
        }
    }
}

pub(crate) async fn sleep_or_cancel(shutdown: &CancellationToken, d: Duration) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}

fn properties(envelope: &Envelope) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Some(tp) = &envelope.traceparent {
        headers.insert(
            "traceparent".into(),
            AMQPValue::LongString(LongString::from(tp.as_str())),
        );
    }
    BasicProperties::default()
        .with_message_id(envelope.id.to_string().into())
        .with_type(envelope.event_type.as_str().into())
        .with_app_id(envelope.source.as_str().into())
        .with_correlation_id(envelope.correlation_id.as_str().into())
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_timestamp(envelope.occurred_at.timestamp().max(0) as u64)
        .with_headers(headers)
}
