//! The login throttle, and the client address it counts by.
//!
//! Every login attempt is counted before the password is checked (increment, then
//! compare), per email for a short while and per client address for longer, so guesses
//! sent in parallel cannot all pass while the first is still being hashed. A successful
//! login forgets the email's count and is not counted against the address.
//!
//! The client address is the TCP peer's, unless the peer is one of the trusted proxies
//! (`TRUSTED_PROXIES`, Kong): then it is the right-most `X-Forwarded-For` hop that is not
//! a trusted proxy. A client can write anything into the header; what the proxies
//! append comes after it, so the right-most untrusted hop is the one a proxy saw.

use std::net::IpAddr;

use axum::http::{HeaderMap, StatusCode, header};
use mp_common::{ApiResult, Problem};
use redis::aio::ConnectionManager;

use crate::domain::TrustedProxies;

/// The TCP peer's address, where the server records it.
pub struct Peer(pub Option<IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

#[derive(Clone)]
pub struct LoginThrottle {
    pub redis: ConnectionManager,
    pub keys: mp_common::redis::RedisKeys,
    /// Attempts per email within `window_secs` before that email is refused until the
    /// window ends. The window is short: anyone can fail logins for a victim's email,
    /// so a long block would be a way to lock them out.
    pub max_failures: u32,
    pub window_secs: u64,
    /// Attempts per client address (any emails) within `address_window_secs`: one
    /// client guessing many accounts is blocked for long.
    pub max_failures_per_address: u32,
    pub address_window_secs: u64,
    /// Proxies whose `X-Forwarded-For` hops are believed (Kong's addresses).
    pub trusted_proxies: std::sync::Arc<TrustedProxies>,
}

impl LoginThrottle {
    fn email_key(&self, email: &str) -> String {
        self.keys.key(format_args!("auth:login-failures:{email}"))
    }

    fn address_key(&self, address: &str) -> String {
        self.keys
            .key(format_args!("auth:login-failures-addr:{address}"))
    }

    /// The client's address (see the module docs).
    pub fn client_address(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> String {
        let forwarded_for = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok());
        self.trusted_proxies.client(peer, forwarded_for)
    }

    /// Counts a login attempt for `email` and `address`; 429 with Retry-After when
    /// either is past its limit (the attempt counts all the same).
    pub async fn attempt(&self, email: &str, address: &str) -> ApiResult<()> {
        let (email_key, address_key) = (self.email_key(email), self.address_key(address));
        let (by_email, email_ttl, by_address, address_ttl): (u32, i64, u32, i64) = redis::pipe()
            .incr(&email_key, 1)
            .cmd("EXPIRE")
            .arg(&email_key)
            .arg(self.window_secs)
            .arg("NX")
            .ignore()
            .ttl(&email_key)
            .incr(&address_key, 1)
            .cmd("EXPIRE")
            .arg(&address_key)
            .arg(self.address_window_secs)
            .arg("NX")
            .ignore()
            .ttl(&address_key)
            .query_async(&mut self.redis.clone())
            .await?;
        let wait = if by_address > self.max_failures_per_address {
            Some(address_ttl)
        } else if by_email > self.max_failures {
            Some(email_ttl)
        } else {
            None
        };
        match wait {
            Some(ttl) => Err(Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many failed logins; try again later.",
            )
            .kind("too-many-logins")
            .header(header::RETRY_AFTER, ttl.max(1).to_string())
            .into()),
            None => Ok(()),
        }
    }

    /// A successful login: the email's attempts are forgotten and this one is taken
    /// back from the address's.
    pub async fn succeeded(&self, email: &str, address: &str) -> ApiResult<()> {
        let _: () = redis::pipe()
            .del(self.email_key(email))
            .ignore()
            .decr(self.address_key(address), 1)
            .ignore()
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(())
    }
}
