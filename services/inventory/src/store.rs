//! Reservations and the on-hand mirror in Redis.
//!
//! Per product, three keys share one hash tag (so they live in one cluster slot and
//! one script may touch them all):
//!
//! * `<prefix>:inv:{<product>}:stock`: HASH `on_hand`, `active`, `version` (a mirror
//!   of the PostgreSQL row, written only by a newer version) and `reserved`, the sum of
//!   the live reservations below, kept by the scripts;
//! * `<prefix>:inv:{<product>}:res-qty`: HASH cart id -> reserved quantity;
//! * `<prefix>:inv:{<product>}:res-exp`: ZSET cart id -> expiry (Unix ms).
//!
//! Every change runs as one Lua script, so check-and-reserve is atomic. Each script
//! first drops the product's expired reservations and takes the time from Redis
//! (`TIME`), so replicas with skewed clocks agree on what has expired. The reservation
//! keys expire with their last reservation; when they are gone, `reserved` is 0.
//!
//! The mirror is soft state. A script that finds it missing answers so, and the caller
//! loads it from PostgreSQL (with the unexpired reservations kept there) through
//! [`Store::sync`]; the same script is how commits refresh it and how reconciliation
//! repairs it. PostgreSQL's guard on `on_hand`, not this mirror, is what prevents
//! overselling.

use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::Script;
use redis::aio::ConnectionManager;
use uuid::Uuid;

use mp_common::redis::RedisKeys;

use crate::db::{MirrorRow, Reservation};

/// Helpers every script starts with. KEYS: 1 stock hash, 2 expiry zset, 3 quantity hash.
const PRELUDE: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Lets the reservation keys expire with their last reservation.
local function touch()
  local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
  if last[2] then
    local at = math.floor(tonumber(last[2])) + 1000
    redis.call('PEXPIREAT', KEYS[2], at)
    redis.call('PEXPIREAT', KEYS[3], at)
  else
    redis.call('DEL', KEYS[2], KEYS[3])
  end
end

-- Drops expired reservations and returns the live total. Needs the stock hash.
local function prune(now)
  if redis.call('EXISTS', KEYS[3]) == 0 then
    redis.call('DEL', KEYS[2])
    redis.call('HSET', KEYS[1], 'reserved', 0)
    return 0
  end
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1000)
  for _, cart in ipairs(expired) do
    local q = redis.call('HGET', KEYS[3], cart)
    if q then
      redis.call('HDEL', KEYS[3], cart)
      redis.call('HINCRBY', KEYS[1], 'reserved', -tonumber(q))
    end
    redis.call('ZREM', KEYS[2], cart)
  end
  if #expired > 0 then touch() end
  return tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
end

-- Recomputes `reserved` from the entries; returns 1 if the stored total was wrong.
local function recount(now)
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
  for _, cart in ipairs(expired) do
    redis.call('HDEL', KEYS[3], cart)
    redis.call('ZREM', KEYS[2], cart)
  end
  local total = 0
  for _, q in ipairs(redis.call('HVALS', KEYS[3])) do total = total + tonumber(q) end
  local before = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
  redis.call('HSET', KEYS[1], 'reserved', total)
  touch()
  if before ~= total then return 1 end
  return 0
end
"#;

/// ARGV: cart, quantity, ttl ms. Sets the cart's reservation to `quantity`, taking only
/// the difference from what it already holds.
/// Returns {0} without a mirror; {1, prev, prev_exp, free_after, exp} when reserved;
/// {2, prev, prev_exp, most} when short (`most` = what this cart could hold in all);
/// {3, prev, prev_exp, 0} when the product is inactive.
const RESERVE: &str = r#"
local now = now_ms()
local stock = redis.call('HMGET', KEYS[1], 'on_hand', 'active')
if not stock[1] then return {0} end
local reserved = prune(now)
local cart = ARGV[1]
local want = tonumber(ARGV[2])
local prev = tonumber(redis.call('HGET', KEYS[3], cart) or '0')
local prev_exp = tonumber(redis.call('ZSCORE', KEYS[2], cart) or '0')
local free = tonumber(stock[1]) - reserved
if stock[2] ~= '1' and want > prev then return {3, prev, prev_exp, 0} end
if want > prev and want - prev > free then
  local most = free + prev
  if most < 0 then most = 0 end
  return {2, prev, prev_exp, most}
end
local exp = now + tonumber(ARGV[3])
redis.call('HSET', KEYS[3], cart, want)
redis.call('ZADD', KEYS[2], exp, cart)
redis.call('HINCRBY', KEYS[1], 'reserved', want - prev)
touch()
return {1, prev, prev_exp, free - (want - prev), exp}
"#;

/// ARGV: cart. Removes the cart's reservation; returns the quantity it held.
const RELEASE: &str = r#"
if not redis.call('HGET', KEYS[3], ARGV[1]) then return 0 end
if redis.call('EXISTS', KEYS[1]) == 1 then prune(now_ms()) end
local q = redis.call('HGET', KEYS[3], ARGV[1])
if not q then return 0 end
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'reserved', -tonumber(q))
end
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
touch()
return tonumber(q)
"#;

/// ARGV: cart, quantity, expiry ms. Puts a reservation back as it was (quantity 0 or a
/// past expiry removes it), without checking stock: undoes a change whose durable copy
/// could not be written.
const PUT_BACK: &str = r#"
local now = now_ms()
local has_stock = redis.call('EXISTS', KEYS[1]) == 1
if has_stock then prune(now) end
local cur = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
local q = tonumber(ARGV[2])
local exp = tonumber(ARGV[3])
if q > 0 and exp > now then
  redis.call('HSET', KEYS[3], ARGV[1], q)
  redis.call('ZADD', KEYS[2], exp, ARGV[1])
else
  q = 0
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
if has_stock then redis.call('HINCRBY', KEYS[1], 'reserved', q - cur) end
touch()
return q
"#;

/// ARGV: a cart id or ''. Returns {0} without a mirror, else {1, reserved, the cart's}.
const LEVEL: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
local reserved = prune(now_ms())
local mine = 0
if ARGV[1] ~= '' then mine = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0') end
return {1, reserved, mine}
"#;

/// ARGV: on_hand, active (1/0), version, verify (1/0), with reservations (1/0), then
/// (cart, quantity, expiry ms) triples. Writes the mirror from PostgreSQL: a missing
/// mirror is rebuilt with the given unexpired reservations (none already present is
/// replaced), or, when they were not sent, reported missing (5) so the caller loads and
/// sends them: the common case (mirror present) never ships every reservation of a
/// product through the script. An existing mirror takes the values only from a newer
/// version. With verify, also recounts `reserved`. Returns {state, restored,
/// recounted}: state 0 in sync, 1 rebuilt, 2 updated from a newer version, 3 differed
/// at the same version (repaired), 4 Redis is newer (kept), 5 missing (resend).
const SYNC: &str = r#"
local now = now_ms()
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ARGV[5] ~= '1' then return {5, 0, 0} end
  redis.call('HSET', KEYS[1], 'on_hand', ARGV[1], 'active', ARGV[2], 'version', ARGV[3], 'reserved', 0)
  local restored = 0
  for i = 6, #ARGV, 3 do
    local exp = tonumber(ARGV[i + 2])
    if exp > now and redis.call('HEXISTS', KEYS[3], ARGV[i]) == 0 then
      redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
      redis.call('ZADD', KEYS[2], exp, ARGV[i])
      restored = restored + 1
    end
  end
  recount(now)
  return {1, restored, 0}
end
local state = 0
local cur = redis.call('HMGET', KEYS[1], 'on_hand', 'active', 'version')
local version = tonumber(cur[3] or '-1')
local incoming = tonumber(ARGV[3])
local differs = cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2]
if incoming > version then
  if differs then state = 2 end
  redis.call('HSET', KEYS[1], 'on_hand', ARGV[1], 'active', ARGV[2], 'version', ARGV[3])
elseif incoming == version then
  if differs then
    state = 3
    redis.call('HSET', KEYS[1], 'on_hand', ARGV[1], 'active', ARGV[2])
  end
else
  state = 4
end
local recounted = 0
if ARGV[4] == '1' then recounted = recount(now) end
return {state, 0, recounted}
"#;

/// The outcome of setting a reservation.
#[derive(Debug, Clone, PartialEq)]
pub enum Reserve {
    Reserved {
        /// What the cart held before (0 if nothing), with its expiry in Unix ms.
        previous: i64,
        previous_expires_ms: i64,
        /// Stock left for other carts.
        available: i64,
        expires_at: DateTime<Utc>,
    },
    /// Not enough stock: `available` is the most this cart could hold in all.
    Insufficient {
        available: i64,
    },
    Inactive,
}

/// What a mirror write found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncOutcome {
    pub state: SyncState,
    /// Reservations put back from PostgreSQL into a rebuilt mirror.
    pub restored: i64,
    /// The stored reservation total was wrong and was recounted.
    pub recounted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncState {
    #[default]
    InSync,
    /// The mirror was missing and has been rebuilt.
    Rebuilt,
    /// The mirror held an older version's values and took the new ones.
    Updated,
    /// The mirror differed from PostgreSQL at the same version and was repaired.
    Repaired,
    /// Redis already holds a newer version; nothing written.
    Newer,
    /// The mirror is missing and no reservations were sent to rebuild it with.
    Missing,
}

#[derive(Clone)]
pub struct Store {
    redis: ConnectionManager,
    keys: RedisKeys,
    ttl: Duration,
    reserve: Script,
    release: Script,
    put_back: Script,
    level: Script,
    sync: Script,
}

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}\n{body}"))
}

fn datetime_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl Store {
    pub fn new(redis: ConnectionManager, keys: RedisKeys, ttl: Duration) -> Self {
        Self {
            redis,
            keys,
            ttl,
            reserve: script(RESERVE),
            release: script(RELEASE),
            put_back: script(PUT_BACK),
            level: script(LEVEL),
            sync: script(SYNC),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn product_keys(&self, product_id: Uuid) -> [String; 3] {
        [
            self.keys.key(format_args!("inv:{{{product_id}}}:stock")),
            self.keys.key(format_args!("inv:{{{product_id}}}:res-exp")),
            self.keys.key(format_args!("inv:{{{product_id}}}:res-qty")),
        ]
    }

    /// Sets `cart`'s reservation of `product` to `quantity`; `None` when the mirror is
    /// missing (load it with [`Store::sync`] and ask again).
    pub async fn reserve(
        &self,
        product_id: Uuid,
        cart_id: Uuid,
        quantity: i64,
    ) -> redis::RedisResult<Option<Reserve>> {
        let r: Vec<i64> = self
            .reserve
            .key(&self.product_keys(product_id)[..])
            .arg(cart_id.to_string())
            .arg(quantity)
            .arg(self.ttl.as_millis() as i64)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(match r.as_slice() {
            [1, previous, previous_expires_ms, available, exp] => Some(Reserve::Reserved {
                previous: *previous,
                previous_expires_ms: *previous_expires_ms,
                // Below zero only after stock was adjusted under existing reservations.
                available: (*available).max(0),
                expires_at: datetime_ms(*exp),
            }),
            [2, _, _, most] => Some(Reserve::Insufficient { available: *most }),
            [3, ..] => Some(Reserve::Inactive),
            _ => None,
        })
    }

    /// Removes `cart`'s reservation of `product`; returns the quantity it held.
    pub async fn release(&self, product_id: Uuid, cart_id: Uuid) -> redis::RedisResult<i64> {
        self.release
            .key(&self.product_keys(product_id)[..])
            .arg(cart_id.to_string())
            .invoke_async(&mut self.redis.clone())
            .await
    }

    /// Restores a reservation to an earlier state (see `PUT_BACK`).
    pub async fn put_back(
        &self,
        product_id: Uuid,
        cart_id: Uuid,
        quantity: i64,
        expires_ms: i64,
    ) -> redis::RedisResult<()> {
        self.put_back
            .key(&self.product_keys(product_id)[..])
            .arg(cart_id.to_string())
            .arg(quantity)
            .arg(expires_ms)
            .invoke_async::<i64>(&mut self.redis.clone())
            .await
            .map(drop)
    }

    /// Units reserved by live reservations of `product`, less those of `exclude`;
    /// `None` when the mirror is missing.
    pub async fn reserved(
        &self,
        product_id: Uuid,
        exclude: Option<Uuid>,
    ) -> redis::RedisResult<Option<i64>> {
        let r: Vec<i64> = self
            .level
            .key(&self.product_keys(product_id)[..])
            .arg(exclude.map(|c| c.to_string()).unwrap_or_default())
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(match r.as_slice() {
            [1, reserved, mine] => Some((reserved - mine).max(0)),
            _ => None,
        })
    }

    /// Writes the mirror of one item from PostgreSQL (see `SYNC`). Without
    /// `reservations`, a missing mirror comes back as [`SyncState::Missing`].
    pub async fn sync(
        &self,
        row: &MirrorRow,
        reservations: Option<&[&Reservation]>,
        verify: bool,
    ) -> redis::RedisResult<SyncOutcome> {
        let keys = self.product_keys(row.product_id);
        let mut call = self.sync.key(&keys[..]);
        call.arg(row.on_hand)
            .arg(i64::from(row.active))
            .arg(row.version)
            .arg(i64::from(verify))
            .arg(i64::from(reservations.is_some()));
        for r in reservations.unwrap_or_default() {
            call.arg(r.cart_id.to_string())
                .arg(r.quantity)
                .arg(r.expires_at.timestamp_millis());
        }
        let r: Vec<i64> = call.invoke_async(&mut self.redis.clone()).await?;
        let state = match r.first() {
            Some(1) => SyncState::Rebuilt,
            Some(2) => SyncState::Updated,
            Some(3) => SyncState::Repaired,
            Some(4) => SyncState::Newer,
            Some(5) => SyncState::Missing,
            _ => SyncState::InSync,
        };
        Ok(SyncOutcome {
            state,
            restored: r.get(1).copied().unwrap_or(0),
            recounted: r.get(2).is_some_and(|&n| n == 1),
        })
    }
}
