//! The Redis cache of single product reads (`GET /api/products/{id}`).
//!
//! A cached entry is `<version>:<json>`: the product's `cache_version` (which grows with
//! every change of the product or its stock) and the response body. Three rules keep a
//! read after a write from ever showing the old state:
//!
//! * A writer stores the new state *after* its transaction commits, and only over an
//!   older version ([`ProductCache::put`], one Lua script, so the compare and the set are
//!   atomic). Two writers finishing in either order leave the newer state.
//! * A reader that missed fills the key only if it is still missing (`SET NX`), so a slow
//!   reader that loaded the old state before a write cannot put it back over the writer's.
//! * A product change also sends a PostgreSQL notification, delivered only on commit, to
//!   every replica's [`Refresher`], which reloads the product and stores it (by the same
//!   version rule). This repairs the cache when a writer died or lost Redis between its
//!   commit and its store.
//! * Stock reports consumed from RabbitMQ are committed by the consumer runner; their
//!   handlers refresh the entry in `after_commit` (see [`crate::events`]).
//!
//! Entries expire after a TTL as the last safety net. Redis is soft state: when it fails,
//! reads go to PostgreSQL.
//!
//! In front of Redis sits the in-process cache of [`crate::local_cache`]: a writer's last step,
//! after its store here, makes every replica drop its copy before the write is answered.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use mp_events::backoff::Delays;
use prometheus::{IntCounterVec, Opts, Registry};
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use mp_common::redis::RedisKeys;

use crate::db;
use crate::local_cache::{LocalCache, Ticket};
use crate::responses::ProductResponse;

/// Stores `ARGV[2]` (`<version>:<json>`) unless the entry holds version `ARGV[1]` or later.
const PUT_IF_NEWER: &str = r"
local current = redis.call('GET', KEYS[1])
if current then
  local version = tonumber(string.match(current, '^(%d+):'))
  if version and version >= tonumber(ARGV[1]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
";

/// Version of the cached body's shape (bump when `ProductResponse` changes).
const FORMAT: u32 = 1;

#[derive(Clone)]
pub struct ProductCache {
    /// The in-process layer in front of Redis (see [`crate::local_cache`]), when configured.
    local: Option<Arc<LocalCache>>,
    redis: ConnectionManager,
    keys: RedisKeys,
    ttl: Duration,
    put_script: Arc<Script>,
    outcomes: IntCounterVec,
}

fn entry(version: i64, json: &[u8]) -> Vec<u8> {
    let mut value = format!("{version}:").into_bytes();
    value.extend_from_slice(json);
    value
}

impl ProductCache {
    pub fn new(
        redis: ConnectionManager,
        keys: RedisKeys,
        ttl: Duration,
        registry: &Registry,
    ) -> prometheus::Result<Self> {
        let outcomes = IntCounterVec::new(
            Opts::new(
                "vendor_product_cache_total",
                "Product cache operations, by outcome: hit, miss, fill, put, stale (a store \
                 refused because the cache already held a newer version), error.",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(outcomes.clone()))?;
        Ok(Self {
            local: None,
            redis,
            keys,
            ttl,
            put_script: Arc::new(Script::new(PUT_IF_NEWER)),
            outcomes,
        })
    }

    /// Puts the in-process cache in front of Redis.
    pub fn with_local(mut self, local: Arc<LocalCache>) -> Self {
        self.local = Some(local);
        self
    }

    /// The product's body from this process's memory (no network round trip).
    pub fn local(&self, id: Uuid) -> Option<Bytes> {
        self.local.as_ref()?.get(id)
    }

    /// Taken before a lookup in Redis or PostgreSQL; see [`ProductCache::keep`].
    pub fn ticket(&self) -> Option<Ticket> {
        self.local.as_ref().map(|n| n.ticket())
    }

    /// Keeps a body loaded after `ticket` in memory, unless the product changed meanwhile.
    pub fn keep(&self, ticket: Option<Ticket>, id: Uuid, body: &Bytes) {
        if let (Some(local), Some(ticket)) = (&self.local, ticket) {
            local.keep(ticket, id, body.clone());
        }
    }

    /// A writer's last step, after its store: every replica drops its in-process copy
    /// before this returns (see [`crate::local_cache`]).
    pub async fn invalidate(&self, id: Uuid) {
        if let Some(local) = &self.local {
            local.invalidate(id).await;
        }
    }

    /// The entry of a product. The format number changes with the shape of the cached
    /// body, so a deploy never serves entries written by the previous version.
    pub fn key(&self, id: Uuid) -> String {
        self.keys.key(format_args!("vendor:product:{FORMAT}:{id}"))
    }

    fn count(&self, outcome: &str) {
        self.outcomes.with_label_values(&[outcome]).inc();
    }

    fn ttl_ms(&self) -> u64 {
        self.ttl.as_millis().max(1) as u64
    }

    /// The cached response body, if any.
    pub async fn get(&self, id: Uuid) -> redis::RedisResult<Option<Bytes>> {
        let value: Option<Vec<u8>> =
            self.redis
                .clone()
                .get(self.key(id))
                .await
                .inspect_err(|_| {
                    self.count("error");
                })?;
        let body = value.and_then(|v| {
            let colon = v.iter().position(|&b| b == b':')?;
            Some(Bytes::from(v).slice(colon + 1..))
        });
        self.count(if body.is_some() { "hit" } else { "miss" });
        Ok(body)
    }

    /// A reader's fill after a miss: only into a missing key.
    pub async fn fill(&self, id: Uuid, version: i64, json: &[u8]) -> redis::RedisResult<bool> {
        let stored: Option<String> = redis::cmd("SET")
            .arg(self.key(id))
            .arg(entry(version, json))
            .arg("NX")
            .arg("PX")
            .arg(self.ttl_ms())
            .query_async(&mut self.redis.clone())
            .await
            .inspect_err(|_| self.count("error"))?;
        self.count(if stored.is_some() { "fill" } else { "stale" });
        Ok(stored.is_some())
    }

    /// A writer's store after its commit: replaces only an older version.
    pub async fn put(&self, id: Uuid, version: i64, json: &[u8]) -> redis::RedisResult<bool> {
        let stored: i64 = self
            .put_script
            .key(self.key(id))
            .arg(version)
            .arg(entry(version, json))
            .arg(self.ttl_ms())
            .invoke_async(&mut self.redis.clone())
            .await
            .inspect_err(|_| self.count("error"))?;
        self.count(if stored == 1 { "put" } else { "stale" });
        Ok(stored == 1)
    }

    pub async fn remove(&self, id: Uuid) -> redis::RedisResult<()> {
        self.redis.clone().del(self.key(id)).await
    }
}

/// Loads the product's committed state and stores it in the cache (newer versions only).
pub async fn refresh(db: &PgPool, cache: &ProductCache, id: Uuid) -> anyhow::Result<()> {
    let view = db::product_view(&mut *db.acquire().await?, id).await?;
    match view {
        Some(view) => {
            let version = view.product.cache_version;
            let json = serde_json::to_vec(&ProductResponse::from(view))?;
            cache.put(id, version, &json).await?;
        }
        None => cache.remove(id).await?,
    }
    if let Some(local) = &cache.local {
        local.announce(id).await;
    }
    Ok(())
}

/// Listens for committed product changes and refreshes their cache entries.
#[derive(Clone)]
pub struct Refresher {
    pub db: PgPool,
    pub cache: ProductCache,
    pub channel: String,
}

impl Refresher {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut delays = Delays::new(Duration::from_millis(100), Duration::from_secs(5));
        while !shutdown.is_cancelled() {
            let mut listener = match self.listen().await {
                Ok(l) => {
                    delays.reset();
                    l
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cache refresher cannot listen; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delays.next_delay()) => {}
                    }
                    continue;
                }
            };
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    next = listener.try_recv() => next,
                };
                match next {
                    Ok(Some(n)) => match n.payload().parse::<Uuid>() {
                        Ok(id) => {
                            if let Err(e) = refresh(&self.db, &self.cache, id).await {
                                // The entry keeps its TTL; the next change refreshes it again.
                                tracing::warn!(product_id = %id, error = %format!("{e:#}"), "cache refresh failed");
                            }
                        }
                        Err(_) => tracing::warn!(payload = n.payload(), "unexpected notification"),
                    },
                    // The connection dropped: notifications sent meanwhile are lost; the
                    // TTL bounds how long an entry they concerned can lag.
                    Ok(None) | Err(_) => {
                        tracing::warn!("cache refresher lost its connection; relistening");
                        break;
                    }
                }
            }
        }
    }

    async fn listen(&self) -> Result<PgListener, sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.db).await?;
        listener.listen(&self.channel).await?;
        Ok(listener)
    }
}
