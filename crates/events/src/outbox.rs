//! Transactional outbox and its relay.
//!
//! [`enqueue`] writes an event into the `outbox` table through the caller's connection, so
//! it commits or rolls back with the state change. The [`Relay`] publishes committed rows
//! with publisher confirms and marks them sent in one transaction that holds the rows with
//! `FOR UPDATE SKIP LOCKED`: any number of replicas can run relays, and no row is published
//! by two of them at once. A relay that dies after publishing and before committing leaves
//! the rows unsent; they are published again and the consumers' inbox absorbs the copy.

use std::time::{Duration, Instant};

use lapin::options::BasicPublishOptions;
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel};
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::broker::Broker;
use crate::catalog::{Event, Service};
use crate::envelope::Envelope;
use crate::metrics::EventMetrics;

/// Writes `payload` as an event into the outbox, in the caller's transaction.
pub async fn enqueue<E: Event>(
    conn: &mut PgConnection,
    source: Service,
    payload: E,
) -> Result<Uuid, sqlx::Error> {
    let envelope = Envelope::new(source, payload);
    sqlx::query("insert into outbox (id, event_type, envelope) values ($1, $2, $3)")
        .bind(envelope.id)
        .bind(&envelope.event_type)
        .bind(sqlx::types::Json(&envelope))
        .execute(conn)
        .await?;
    Ok(envelope.id)
}

/// An outbox row held by a relay transaction.
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
}

pub struct Relay {
    pool: PgPool,
    broker: Broker,
    schema: String,
    metrics: EventMetrics,
    pub batch_size: i64,
    /// How often to look for rows without a notification (a missed NOTIFY, a relay that
    /// died holding rows).
    pub poll_interval: Duration,
    /// How long published rows are kept for inspection.
    pub retention: Duration,
}

impl Relay {
    pub fn new(
        pool: PgPool,
        broker: Broker,
        schema: impl Into<String>,
        metrics: EventMetrics,
    ) -> Self {
        Self {
            pool,
            broker,
            schema: schema.into(),
            metrics,
            batch_size: 200,
            poll_interval: Duration::from_millis(500),
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }

    /// Locks up to `limit` unsent rows, oldest first, skipping rows another relay holds.
    pub async fn claim(conn: &mut PgConnection, limit: i64) -> Result<Vec<OutboxRow>, sqlx::Error> {
        sqlx::query_as(
            "select seq, id, event_type, envelope from outbox
             where published_at is null order by seq limit $1 for update skip locked",
        )
        .bind(limit)
        .fetch_all(conn)
        .await
    }

    /// Publishes rows and waits for RabbitMQ to confirm every one.
    pub async fn publish(&self, channel: &Channel, rows: &[OutboxRow]) -> Result<(), RelayError> {
        let exchange = self.broker.topology().exchange();
        let mut confirms = Vec::with_capacity(rows.len());
        for row in rows {
            let body = serde_json::to_vec(&row.envelope.0).expect("an envelope serializes");
            let confirm = channel
                .basic_publish(
                    &exchange,
                    &row.event_type,
                    BasicPublishOptions::default(),
                    &body,
                    properties(&row.envelope),
                )
                .await?;
            confirms.push((row.id, confirm));
        }
        for (id, confirm) in confirms {
            match confirm.await? {
                Confirmation::Ack(_) => {}
                _ => return Err(RelayError::NotConfirmed(id)),
            }
        }
        Ok(())
    }

    pub async fn mark_published(
        conn: &mut PgConnection,
        rows: &[OutboxRow],
    ) -> Result<(), sqlx::Error> {
        let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        sqlx::query("update outbox set published_at = now() where seq = any($1)")
            .bind(&seqs)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// One claim-publish-mark round; returns how many events went out.
    pub async fn relay_batch(&self, channel: &Channel) -> Result<usize, RelayError> {
        let mut tx = self.pool.begin().await?;
        let rows = Self::claim(&mut tx, self.batch_size).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let started = Instant::now();
        self.publish(channel, &rows).await?;
        Self::mark_published(&mut tx, &rows).await?;
        tx.commit().await?;
        self.metrics
            .outbox_publish_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.outbox_published.inc_by(rows.len() as u64);
        Ok(rows.len())
    }

    async fn listen(&self) -> Option<PgListener> {
        let mut listener = PgListener::connect_with(&self.pool).await.ok()?;
        listener
            .listen(&format!("outbox_{}", self.schema))
            .await
            .ok()?;
        Some(listener)
    }

    /// Refreshes the lag gauges and drops rows published longer ago than the retention.
    async fn housekeeping(&self) -> Result<(), sqlx::Error> {
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
        let retention = self.retention.as_secs_f64();
        sqlx::query("delete from outbox where published_at < now() - make_interval(secs => $1)")
            .bind(retention)
            .execute(&self.pool)
            .await?;
        sqlx::query("delete from inbox where processed_at < now() - make_interval(secs => $1)")
            .bind(retention * 4.0)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Publishes until `shutdown`, woken by NOTIFY and by a poll as a safety net.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut listener = None;
        let mut channel: Option<Channel> = None;
        let mut backoff = Duration::from_millis(100);
        let mut last_housekeeping = Instant::now() - Duration::from_secs(3600);
        while !shutdown.is_cancelled() {
            if listener.is_none() {
                listener = self.listen().await;
            }
            if last_housekeeping.elapsed() > Duration::from_secs(15) {
                last_housekeeping = Instant::now();
                if let Err(e) = self.housekeeping().await {
                    tracing::warn!(error = %e, "outbox housekeeping failed");
                }
            }
            let ch = match &channel {
                Some(ch) if ch.status().connected() => ch.clone(),
                _ => match self.broker.confirm_channel().await {
                    Ok(ch) => {
                        channel = Some(ch.clone());
                        ch
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "relay cannot reach RabbitMQ; retrying");
                        sleep_or_cancel(&shutdown, backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                },
            };
            match self.relay_batch(&ch).await {
                Ok(n) => {
                    backoff = Duration::from_millis(100);
                    if n as i64 == self.batch_size {
                        continue;
                    }
                }
                Err(e) => {
                    self.metrics.outbox_publish_failures.inc();
                    tracing::warn!(error = %e, "relay batch failed; rows stay unsent");
                    channel = None;
                    sleep_or_cancel(&shutdown, backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
            // Nothing (more) to send: wait for a commit's notification or the next poll.
            let wait = async {
                match listener.as_mut() {
                    Some(l) => {
                        if tokio::time::timeout(self.poll_interval, l.recv())
                            .await
                            .is_ok_and(|r| r.is_err())
                        {
                            listener = None;
                        }
                    }
                    None => tokio::time::sleep(self.poll_interval).await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = wait => {}
            }
        }
        if let Some(ch) = channel {
            let _ = ch.close(200, "relay stopped").await;
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
