//! The in-process cache of single product reads, in front of the Redis cache: a hot
//! product is answered from memory, with no network round trip.
//!
//! It must never show a price older than a write some replica has already answered. Every
//! replica subscribes to one Redis Pub/Sub channel of product changes (under the Redis
//! prefix, so replicas sharing a schema and prefix share it). The rules:
//!
//! * **A writer waits for every replica.** After its commit and its store in Redis, a
//!   writer publishes the product id with a sequence number ([`LocalCache::invalidate`]).
//!   `PUBLISH` answers how many subscribers received it; each of them drops its entry and
//!   acknowledges on the writer's own channel. The writer answers its client once all
//!   have acknowledged, so a read anywhere after that answer misses and loads the new
//!   state (from Redis, which already holds it, or from PostgreSQL).
//! * **A replica serves from memory only under a lease.** Each replica publishes a
//!   heartbeat to itself every quarter lease and may serve from memory only until one
//!   lease after sending the last heartbeat it has received back. Redis delivers a
//!   subscriber's messages in the order it ran the `PUBLISH`es, so a heartbeat received is
//!   proof that every change published before it was received too. A writer that hears
//!   nothing from a replica (wedged, or cut off from Redis) waits one lease at most: by
//!   then that replica has stopped serving from memory. A replica that cannot reach Redis
//!   at all has the same fate, so a writer that cannot publish waits one lease too.
//! * **A fill never puts back an old read.** A reader takes a [`Ticket`] (the count of
//!   changes received so far) before it looks in Redis or PostgreSQL and keeps what it
//!   loaded only if no change arrived meanwhile.
//! * A replica drops everything when its subscription (re)starts: changes published while
//!   it was not subscribed never reached it.
//!
//! Memory is bounded by the bytes of the cached bodies ([`quick_cache`], evicting the
//! least used); hits and misses are counted in `vendor_product_local_cache_total`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use futures::StreamExt;
use mp_common::redis::RedisKeys;
use mp_events::backoff::Delays;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use quick_cache::Weighter;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Longest wait for a connection or a subscription to Redis.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
struct BodyWeight;

impl Weighter<Uuid, Bytes> for BodyWeight {
    fn weight(&self, _id: &Uuid, body: &Bytes) -> u64 {
        // The key and the bookkeeping cost about as much as a small body.
        body.len() as u64 + 64
    }
}

/// The state of a read before it looked anywhere: see [`LocalCache::keep`].
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

struct Waiter {
    acks: AtomicUsize,
    notify: Notify,
}

pub struct LocalCache {
    entries: quick_cache::sync::Cache<Uuid, Bytes, BodyWeight>,
    /// Changes received (and subscription restarts): a fill that started before the
    /// latest one is not kept.
    changes: AtomicU64,
    /// Nanoseconds since `origin` until which this replica may serve from memory.
    fresh_until: AtomicU64,
    origin: Instant,
    lease: Duration,
    replica: Uuid,
    next_seq: AtomicU64,
    waiters: Mutex<HashMap<u64, Arc<Waiter>>>,
    redis: ConnectionManager,
    client: redis::Client,
    changes_channel: String,
    /// `<acks_prefix><replica>`: acknowledgements for and heartbeats of that replica.
    acks_prefix: String,
    acks_channel: String,
    hits: IntCounter,
    misses: IntCounter,
    bytes: IntGauge,
}

impl LocalCache {
    pub fn new(
        client: redis::Client,
        redis: ConnectionManager,
        keys: &RedisKeys,
        max_bytes: u64,
        lease: Duration,
        registry: &Registry,
    ) -> prometheus::Result<Arc<Self>> {
        let outcomes = IntCounterVec::new(
            Opts::new(
                "vendor_product_local_cache_total",
                "Single product reads by the in-process cache: hit (answered from memory) \
                 or miss (looked up in Redis, then PostgreSQL).",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(outcomes.clone()))?;
        let bytes = IntGauge::new(
            "vendor_product_local_cache_bytes",
            "Weight of the in-process product cache (bodies plus 64 bytes an entry).",
        )?;
        registry.register(Box::new(bytes.clone()))?;
        let replica = Uuid::new_v4();
        // quick_cache wants an estimate of the entry count: bodies are about 500 bytes.
        let estimated = (max_bytes / 600).clamp(16, 1 << 20) as usize;
        Ok(Arc::new(Self {
            entries: quick_cache::sync::Cache::with_weighter(estimated, max_bytes, BodyWeight),
            changes: AtomicU64::new(0),
            fresh_until: AtomicU64::new(0),
            origin: Instant::now(),
            lease,
            replica,
            next_seq: AtomicU64::new(1),
            waiters: Mutex::new(HashMap::new()),
            redis,
            client,
            changes_channel: keys.key("vendor:product-changes"),
            acks_prefix: keys.key("vendor:product-acks:"),
            acks_channel: keys.key(format_args!("vendor:product-acks:{replica}")),
            hits: outcomes.with_label_values(&["hit"]),
            misses: outcomes.with_label_values(&["miss"]),
            bytes,
        }))
    }

    fn now(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    fn fresh(&self) -> bool {
        self.now() < self.fresh_until.load(Ordering::Acquire)
    }

    /// The product's body from memory, if this replica holds it and its lease runs.
    pub fn get(&self, id: Uuid) -> Option<Bytes> {
        let body = if self.fresh() {
            self.entries.get(&id)
        } else {
            None
        };
        match body {
            Some(_) => self.hits.inc(),
            None => self.misses.inc(),
        }
        body
    }

    pub fn ticket(&self) -> Ticket {
        Ticket(self.changes.load(Ordering::Acquire))
    }

    /// Keeps a body loaded after `ticket` was taken, unless a change arrived meanwhile.
    pub fn keep(&self, ticket: Ticket, id: Uuid, body: Bytes) {
        if !self.fresh() || self.changes.load(Ordering::Acquire) != ticket.0 {
            return;
        }
        self.entries.insert(id, body);
        // A change that arrived during the insert may have missed the new entry.
        if self.changes.load(Ordering::Acquire) != ticket.0 {
            self.entries.remove(&id);
        }
        self.bytes.set(self.entries.weight() as i64);
    }

    fn forget(&self, id: Uuid) {
        // Counted first, so a fill racing with this removal is not kept.
        self.changes.fetch_add(1, Ordering::AcqRel);
        self.entries.remove(&id);
        self.bytes.set(self.entries.weight() as i64);
    }

    fn forget_all(&self) {
        self.changes.fetch_add(1, Ordering::AcqRel);
        self.entries.clear();
        self.bytes.set(0);
    }

    /// A writer's last step after its commit and its store in Redis: every replica drops
    /// the product before this returns (or has stopped serving from memory; see the
    /// module documentation). Waits one lease at most.
    pub async fn invalidate(&self, id: Uuid) {
        self.forget(id);
        let started = Instant::now();
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let waiter = Arc::new(Waiter {
            acks: AtomicUsize::new(0),
            notify: Notify::new(),
        });
        self.waiters
            .lock()
            .expect("waiters")
            .insert(seq, waiter.clone());
        let message = format!("{id} {} {seq}", self.replica);
        let published = tokio::time::timeout(
            self.lease,
            self.redis
                .clone()
                .publish::<_, _, usize>(&self.changes_channel, message),
        )
        .await;
        let deadline = started + self.lease + Duration::from_millis(20);
        match published {
            Ok(Ok(receivers)) => loop {
                let notified = waiter.notify.notified();
                if waiter.acks.load(Ordering::Acquire) >= receivers {
                    break;
                }
                if tokio::time::timeout_at(deadline.into(), notified)
                    .await
                    .is_err()
                {
                    tracing::warn!(product_id = %id, receivers, acks = waiter.acks.load(Ordering::Acquire),
                        "not every replica acknowledged a product change; waited one lease");
                    break;
                }
            },
            Ok(Err(e)) => {
                tracing::warn!(product_id = %id, error = %e, "cannot publish a product change; waiting one lease");
                tokio::time::sleep_until(deadline.into()).await;
            }
            Err(_) => {
                tracing::warn!(product_id = %id, "publishing a product change timed out; waiting one lease");
                tokio::time::sleep_until(deadline.into()).await;
            }
        }
        self.waiters.lock().expect("waiters").remove(&seq);
    }

    /// Tells every replica to drop the product, without waiting (changes nobody is
    /// waiting to read: stock reports, repairs by the refresher).
    pub async fn announce(&self, id: Uuid) {
        self.forget(id);
        let sent = tokio::time::timeout(
            CONNECT_TIMEOUT,
            self.redis
                .clone()
                .publish::<_, _, usize>(&self.changes_channel, format!("{id} - 0")),
        )
        .await;
        if !matches!(sent, Ok(Ok(_))) {
            // Replicas that miss it keep the old body until the next change or their
            // next resubscription; the Redis entry is fresh all the same.
            tracing::warn!(product_id = %id, "cannot announce a product change");
        }
    }

    async fn on_change(&self, payload: &str) {
        let mut parts = payload.split(' ');
        let (Some(id), Some(writer), Some(seq)) = (parts.next(), parts.next(), parts.next()) else {
            tracing::warn!(payload, "unexpected product change message");
            return;
        };
        match id.parse::<Uuid>() {
            Ok(id) => self.forget(id),
            // Whatever it was, nothing cached may outlive it.
            Err(_) => self.forget_all(),
        }
        if writer == "-" {
            return;
        }
        let channel = format!("{}{writer}", self.acks_prefix);
        let acked = tokio::time::timeout(
            CONNECT_TIMEOUT,
            self.redis
                .clone()
                .publish::<_, _, usize>(channel, format!("ack {seq}")),
        )
        .await;
        if !matches!(acked, Ok(Ok(_))) {
            tracing::warn!("cannot acknowledge a product change; its writer waits one lease");
        }
    }

    fn on_ack(&self, payload: &str) {
        if let Some(sent) = payload.strip_prefix("beat ") {
            if let Ok(sent) = sent.parse::<u64>() {
                let until = sent + self.lease.as_nanos() as u64;
                self.fresh_until.fetch_max(until, Ordering::AcqRel);
            }
        } else if let Some(seq) = payload.strip_prefix("ack ") {
            let waiter = seq
                .parse::<u64>()
                .ok()
                .and_then(|seq| self.waiters.lock().expect("waiters").get(&seq).cloned());
            if let Some(waiter) = waiter {
                waiter.acks.fetch_add(1, Ordering::AcqRel);
                waiter.notify.notify_waiters();
            }
        }
    }

    /// The subscription and the heartbeat: a worker, until shutdown.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut delays = Delays::new(Duration::from_millis(100), Duration::from_secs(5));
        while !shutdown.is_cancelled() {
            match self.subscribe().await {
                Ok(stream) => {
                    delays.reset();
                    self.forget_all();
                    self.listen(stream, &shutdown).await;
                    // Not subscribed any more: changes may be missed from here on.
                    self.fresh_until.store(0, Ordering::Release);
                    self.forget_all();
                    if shutdown.is_cancelled() {
                        return;
                    }
                    tracing::warn!("product change subscription ended; subscribing again");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot subscribe to product changes; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delays.next_delay()) => {}
                    }
                }
            }
        }
    }

    async fn subscribe(&self) -> redis::RedisResult<redis::aio::PubSubStream> {
        let connect = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(&self.changes_channel).await?;
            pubsub.subscribe(&self.acks_channel).await?;
            Ok(pubsub.into_on_message())
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .unwrap_or_else(|_| {
                Err(redis::RedisError::from((
                    redis::ErrorKind::IoError,
                    "subscribing timed out",
                )))
            })
    }

    async fn listen(&self, mut stream: redis::aio::PubSubStream, shutdown: &CancellationToken) {
        let mut beat = tokio::time::interval(self.lease / 4);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = beat.tick() => {
                    let sent = self.now();
                    let published = tokio::time::timeout(
                        CONNECT_TIMEOUT,
                        self.redis.clone().publish::<_, _, usize>(&self.acks_channel, format!("beat {sent}")),
                    )
                    .await;
                    if !matches!(published, Ok(Ok(_))) {
                        tracing::warn!("cannot send the product cache heartbeat");
                    }
                }
                message = stream.next() => {
                    let Some(message) = message else { return };
                    let Ok(payload) = std::str::from_utf8(message.get_payload_bytes()) else {
                        continue;
                    };
                    if message.get_channel_name() == self.changes_channel {
                        self.on_change(payload).await;
                    } else {
                        self.on_ack(payload);
                    }
                }
            }
        }
    }
}
