//! Reservations and the on-hand mirror in Redis.
//!
//! Per product, four keys share one hash tag (so they live in one cluster slot and
//! one script may touch them all):
//!
//! * `<prefix>:inv:{<product>}:stock`: HASH `on_hand`, `active`, `version` (a mirror
//!   of the PostgreSQL row, written only by a newer version), `reserved`, the sum of
//!   the live reservations below, kept by the scripts, and `settle_until` right after a
//!   rebuild (see below);
//! * `<prefix>:inv:{<product>}:res-qty`: HASH cart id -> reserved quantity;
//! * `<prefix>:inv:{<product>}:res-gen`: HASH cart id -> generation of the entry;
//! * `<prefix>:inv:{<product>}:res-exp`: ZSET cart id -> expiry (Unix ms).
//!
//! Every change runs as one Lua script, so check-and-reserve is atomic. Each script
//! first drops the product's expired entries and takes the time from Redis (`TIME`),
//! so replicas with skewed clocks agree on what has expired. The reservation keys
//! expire with their last entry; when they are gone, `reserved` is 0.
//!
//! Generations order the changes of a (product, cart) entry: every change carries one
//! (from the PostgreSQL sequence `reservation_generation`), and a script applies it only
//! over an older one. An ended reservation stays as a tombstone (in `res-gen` and
//! `res-exp`, not in `res-qty`) for [`TOMBSTONE_MS`], so an older copy arriving late (a
//! rebuild that read PostgreSQL before the release, a slow undo) cannot bring it back.
//! Expired entries are dropped with their generation: nothing older can revive them,
//! since a rebuild sends only unexpired reservations.
//!
//! The mirror is soft state. A script that finds it missing answers so, and the caller
//! loads it from PostgreSQL (with the unexpired reservations and recent tombstones kept
//! there) through [`Store::sync`]; the same script is how commits refresh it and how
//! reconciliation repairs it. PostgreSQL's guard on `on_hand`, not this mirror, is what
//! prevents overselling, and the commit honours the reservations PostgreSQL holds.
//!
//! Settling: a reservation is written to Redis first and to PostgreSQL right after. If
//! Redis loses its data between the two, a rebuild does not see that reservation yet.
//! So a rebuilt mirror refuses new reservations for [`SETTLE_MS`] (longer than a
//! durable write may take: its pool's acquire timeout plus its statement timeout), and
//! then catches up with a second pass over PostgreSQL before it takes reservations
//! again: no reservation answered 201 is lost to a Redis loss.

use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::Script;
use redis::aio::ConnectionManager;
use uuid::Uuid;

use mp_common::redis::RedisKeys;

use crate::db::{MirrorRow, Reservation};

/// How long an ended reservation's generation is kept in Redis, in milliseconds.
pub const TOMBSTONE_MS: i64 = 600_000;
/// How long a rebuilt mirror waits for reservation writes that were on their way when
/// Redis lost its data, in milliseconds.
pub const SETTLE_MS: i64 = 3_000;

/// Helpers every script starts with. KEYS: 1 stock hash, 2 expiry zset, 3 quantity
/// hash, 4 generation hash.
const PRELUDE: &str = include_str!("lua/prelude.lua");

/// ARGV: cart, quantity, ttl ms, generation, replaces ('' or a generation). Sets the
/// cart's reservation to `quantity` (0 ends it), taking only the difference from what
/// it already holds; with `replaces`, only while the entry has that generation.
/// Returns {0} without a mirror (or a settled one still to catch up); {5, ms} while the
/// mirror settles; {1, prev, prev_exp, free_after, exp} when reserved; {2, prev,
/// prev_exp, most} when short (`most` = what this cart could hold in all); {3, prev,
/// prev_exp, 0} when the product is inactive; {4, prev, prev_exp, most} when the entry
/// already has this generation or a newer one (a later change of this cart won).
const RESERVE: &str = include_str!("lua/reserve.lua");

/// ARGV: cart, generation. Ends the cart's reservation with that generation (a
/// tombstone), unless the entry is as new or newer. Returns the quantity it held, or
/// -1 when a newer change was kept.
const RELEASE: &str = include_str!("lua/release.lua");

/// ARGV: cart, quantity, expiry ms, generation. Undoes the change of that generation
/// whose durable copy could not be written: puts back what the cart held before
/// (quantity 0 or a past expiry ends it), keeping the generation, and only while the
/// entry still has that generation, so a newer change is never overwritten. Returns 1
/// if undone.
const UNDO: &str = include_str!("lua/undo.lua");

/// ARGV: a cart id or ''. Returns {0} without a mirror, else {1, reserved, the cart's}.
const LEVEL: &str = include_str!("lua/level.lua");

/// ARGV: on_hand, active (1/0), version, verify (1/0), mode, then (cart, quantity,
/// expiry ms, generation) quadruples. Writes the mirror from PostgreSQL.
///
/// Modes: 0 no reservations sent; 1 rebuild: every unexpired reservation and recent
/// tombstone of the product, each applied only over an older generation (none already
/// present with the same or a newer one is replaced); 2 apply: some carts' committed
/// rows, as mode 1, and a row of the same generation extends the entry's expiry; 3
/// fresh: as 1 for the first build of the product's mirror ever, without settling.
///
/// A missing mirror comes back as state 5 (send the rows) in modes 0 and 2 (mode 2
/// still applies its rows, so what it carries is never lost); mode 1 rebuilds it and
/// lets it settle (see the module docs). A settled mirror still to catch up answers 5
/// in mode 0; mode 1 catches it up. An existing mirror takes on-hand and the active
/// flag only from a newer version. With verify, `reserved` is recounted. Returns
/// {state, restored, recounted}: state 0 in sync, 1 rebuilt, 2 updated from a newer
/// version, 3 differed at the same version (repaired), 4 Redis is newer (kept), 5
/// missing or settled (resend with mode 1).
const SYNC: &str = include_str!("lua/sync.lua");

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
    /// A newer change of this cart's reservation was applied first; this one is not.
    Superseded {
        available: i64,
    },
}

/// What a reservation script answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    Done(Reserve),
    /// The mirror is missing (or settled and still to catch up): sync, then retry.
    Missing,
    /// The mirror was just rebuilt and settles for this long.
    Settling(Duration),
}

/// What a mirror write found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncOutcome {
    pub state: SyncState,
    /// Reservations put back from PostgreSQL into the mirror.
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
    /// The mirror is missing (or settled and waits to catch up): send every reservation.
    Missing,
}

/// Reservations sent with a mirror write.
#[derive(Debug, Clone, Copy)]
pub enum Rows<'a> {
    /// None: a missing mirror is reported as [`SyncState::Missing`].
    None,
    /// Every unexpired reservation and recent tombstone of the product.
    Rebuild(&'a [&'a Reservation]),
    /// The first build of a product's mirror ever: built without settling, since no
    /// reservation can be on its way before a mirror exists.
    Fresh,
    /// Some carts' committed rows, applied over older generations.
    Apply(&'a [&'a Reservation]),
}

#[derive(Clone)]
pub struct Store {
    redis: ConnectionManager,
    keys: RedisKeys,
    ttl: Duration,
    reserve: Script,
    release: Script,
    undo: Script,
    level: Script,
    sync: Script,
}

fn script(body: &str) -> Script {
    Script::new(&format!(
        "local TOMBSTONE_MS = {TOMBSTONE_MS}\nlocal SETTLE_MS = {SETTLE_MS}\n{PRELUDE}\n{body}"
    ))
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
            undo: script(UNDO),
            level: script(LEVEL),
            sync: script(SYNC),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn product_keys(&self, product_id: Uuid) -> [String; 4] {
        [
            self.keys.key(format_args!("inv:{{{product_id}}}:stock")),
            self.keys.key(format_args!("inv:{{{product_id}}}:res-exp")),
            self.keys.key(format_args!("inv:{{{product_id}}}:res-qty")),
            self.keys.key(format_args!("inv:{{{product_id}}}:res-gen")),
        ]
    }

    /// Sets `cart`'s reservation of `product` to `quantity` as change `generation`.
    pub async fn reserve(
        &self,
        product_id: Uuid,
        cart_id: Uuid,
        quantity: i64,
        generation: i64,
        replaces: Option<i64>,
    ) -> redis::RedisResult<Attempt> {
        let r: Vec<i64> = self
            .reserve
            .key(&self.product_keys(product_id)[..])
            .arg(cart_id.to_string())
            .arg(quantity)
            .arg(self.ttl.as_millis() as i64)
            .arg(generation)
            .arg(replaces.map(|g| g.to_string()).unwrap_or_default())
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(match r.as_slice() {
            [1, previous, previous_expires_ms, available, exp] => {
                Attempt::Done(Reserve::Reserved {
                    previous: *previous,
                    previous_expires_ms: *previous_expires_ms,
                    // Below zero only after stock was adjusted under existing reservations.
                    available: (*available).max(0),
                    expires_at: datetime_ms(*exp),
                })
            }
            [2, _, _, most] => Attempt::Done(Reserve::Insufficient { available: *most }),
            [3, ..] => Attempt::Done(Reserve::Inactive),
            [4, _, _, most] => Attempt::Done(Reserve::Superseded { available: *most }),
            [5, ms] => Attempt::Settling(Duration::from_millis((*ms).max(1) as u64)),
            _ => Attempt::Missing,
        })
    }

    /// Ends `cart`'s reservation of `product` as change `generation`; returns the
    /// quantity it held (`None` if a newer change was kept).
    pub async fn release(
        &self,
        product_id: Uuid,
        cart_id: Uuid,
        generation: i64,
    ) -> redis::RedisResult<Option<i64>> {
        let held: i64 = self
            .release
            .key(&self.product_keys(product_id)[..])
            .arg(cart_id.to_string())
            .arg(generation)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok((held >= 0).then_some(held))
    }

    /// Undoes change `generation` of a reservation, putting back what the cart held
    /// before, unless a newer change was made since (see `UNDO`). True if undone.
    pub async fn undo(
        &self,
        product_id: Uuid,
        cart_id: Uuid,
        previous: i64,
        previous_expires_ms: i64,
        generation: i64,
    ) -> redis::RedisResult<bool> {
        let undone: i64 = self
            .undo
            .key(&self.product_keys(product_id)[..])
            .arg(cart_id.to_string())
            .arg(previous)
            .arg(previous_expires_ms)
            .arg(generation)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(undone == 1)
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

    /// Writes the mirror of one item from PostgreSQL (see `SYNC`).
    pub async fn sync(
        &self,
        row: &MirrorRow,
        rows: Rows<'_>,
        verify: bool,
    ) -> redis::RedisResult<SyncOutcome> {
        let keys = self.product_keys(row.product_id);
        let (mode, reservations) = match rows {
            Rows::None => (0, &[][..]),
            Rows::Rebuild(r) => (1, r),
            Rows::Fresh => (3, &[][..]),
            Rows::Apply(r) => (2, r),
        };
        let mut call = self.sync.key(&keys[..]);
        call.arg(row.on_hand)
            .arg(i64::from(row.active))
            .arg(row.version)
            .arg(i64::from(verify))
            .arg(mode);
        for r in reservations {
            call.arg(r.cart_id.to_string())
                .arg(r.quantity)
                .arg(r.expires_at.timestamp_millis())
                .arg(r.generation);
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
