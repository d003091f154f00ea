//! Login sessions in Redis, with rotating refresh tokens.
//!
//! A refresh token is `<session id>.<secret>`. The session hash keeps the SHA-256 of the
//! current secret; rotating replaces it and remembers the old one. Presenting an old
//! (already rotated) secret means the token was stolen or replayed: the whole session is
//! revoked, which also kills its access tokens at once. Each step is one Lua script, so
//! two concurrent refreshes with the same token cannot both succeed.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mp_common::Authenticator;
use mp_common::redis::RedisKeys;
use rand::RngCore;
use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};
use uuid::Uuid;

#[derive(Clone)]
pub struct Sessions {
    redis: ConnectionManager,
    keys: RedisKeys,
    ttl: Duration,
    auth: Authenticator,
}

/// What presenting a refresh token led to.
#[derive(Debug, PartialEq)]
pub enum Refresh {
    /// Rotated: the session's customer and the new refresh token.
    Rotated {
        customer_id: Uuid,
        session_id: Uuid,
        refresh_token: String,
    },
    /// Unknown, expired or malformed.
    Invalid,
    /// A rotated token came back: the session is now revoked.
    Reused,
}

const ROTATE: &str = r"
local current = redis.call('HGET', KEYS[1], 'current')
if not current then return {0} end
if current == ARGV[1] then
  redis.call('HSET', KEYS[1], 'current', ARGV[2])
  redis.call('SADD', KEYS[2], ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  redis.call('EXPIRE', KEYS[2], ARGV[3])
  return {1, redis.call('HGET', KEYS[1], 'customer_id')}
end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then
  redis.call('DEL', KEYS[1], KEYS[2])
  return {-1}
end
return {0}
";

fn hash(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    URL_SAFE_NO_PAD.encode(digest)
}

fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

impl Sessions {
    pub fn new(
        redis: ConnectionManager,
        keys: RedisKeys,
        ttl: Duration,
        auth: Authenticator,
    ) -> Self {
        Self {
            redis,
            keys,
            ttl,
            auth,
        }
    }

    fn session_key(&self, sid: Uuid) -> String {
        self.keys.key(format_args!("auth:session:{sid}"))
    }

    fn used_key(&self, sid: Uuid) -> String {
        self.keys.key(format_args!("auth:session:{sid}:used"))
    }

    /// Opens a session; returns its id and first refresh token.
    pub async fn open(&self, customer_id: Uuid) -> redis::RedisResult<(Uuid, String)> {
        let sid = Uuid::new_v4();
        let secret = new_secret();
        let key = self.session_key(sid);
        redis::pipe()
            .atomic()
            .hset(&key, "customer_id", customer_id.to_string())
            .hset(&key, "current", hash(&secret))
            .expire(&key, self.ttl.as_secs() as i64)
            .query_async::<()>(&mut self.redis.clone())
            .await?;
        Ok((sid, format!("{sid}.{secret}")))
    }

    pub async fn refresh(&self, token: &str) -> redis::RedisResult<Refresh> {
        let Some((sid, secret)) = token
            .split_once('.')
            .and_then(|(s, t)| Some((s.parse::<Uuid>().ok()?, t)))
        else {
            return Ok(Refresh::Invalid);
        };
        let next = new_secret();
        let result: Vec<redis::Value> = redis::Script::new(ROTATE)
            .key(self.session_key(sid))
            .key(self.used_key(sid))
            .arg(hash(secret))
            .arg(hash(&next))
            .arg(self.ttl.as_secs())
            .invoke_async(&mut self.redis.clone())
            .await?;
        let code: i64 = result
            .first()
            .map(redis::from_redis_value)
            .transpose()?
            .unwrap_or(0);
        match code {
            1 => {
                let customer: String = result
                    .get(1)
                    .map(redis::from_redis_value)
                    .transpose()?
                    .unwrap_or_default();
                match customer.parse() {
                    Ok(customer_id) => Ok(Refresh::Rotated {
                        customer_id,
                        session_id: sid,
                        refresh_token: format!("{sid}.{next}"),
                    }),
                    Err(_) => Ok(Refresh::Invalid),
                }
            }
            -1 => {
                self.auth.revoke_session(sid).await?;
                Ok(Refresh::Reused)
            }
            _ => Ok(Refresh::Invalid),
        }
    }

    /// Ends a session: its refresh token stops working and its access tokens are
    /// rejected from now on.
    pub async fn close(&self, sid: Uuid) -> redis::RedisResult<()> {
        self.auth.revoke_session(sid).await?;
        redis::cmd("DEL")
            .arg(self.session_key(sid))
            .arg(self.used_key(sid))
            .query_async::<()>(&mut self.redis.clone())
            .await
    }
}
