//! Redis connection and key naming.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Builds keys under the configured prefix (`mp:auth:revoked:<sid>`), so several
/// deployments or test runs can share one Redis.
#[derive(Clone, Debug)]
pub struct RedisKeys {
    prefix: Arc<str>,
}

impl RedisKeys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn key(&self, rest: impl std::fmt::Display) -> String {
        format!("{}:{}", self.prefix, rest)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// The commands a service's Redis user may run: everything a client needs, nothing that
/// administers the server (`-@admin`, `-@dangerous`: no FLUSHALL, KEYS, CONFIG, ACL,
/// DEBUG...). Which keys it may touch is what sets the users apart.
const ACL_COMMANDS: &str = "-@all +@read +@write +@keyspace +@string +@hash +@set \
    +@sortedset +@list +@scripting +@pubsub +@transaction +@connection +@fast +@slow \
    -@admin -@dangerous";

/// The Redis ACL rules of `service`'s user, for key prefix `prefix`: its own keys in
/// full (the customer service: sessions, revocations, login throttles; inventory:
/// reservations and the stock mirror; vendor: the product cache and its channels), and
/// for every service read access to sessions and revocation markers (verifying a token)
/// and the key that records when Redis last lost its data (`auth:epoch`, which a
/// verifier that finds it missing sets). So no service but the customer service can
/// write a session or delete a revocation marker, and none can read another's keys.
pub fn acl_rules(service: mp_events::Service, prefix: &str) -> Vec<String> {
    use mp_events::Service::*;
    let mut rules = vec!["resetkeys".to_owned(), "resetchannels".to_owned()];
    rules.extend(ACL_COMMANDS.split_whitespace().map(str::to_owned));
    match service {
        Customer => rules.push(format!("~{prefix}:auth:*")),
        Inventory => rules.push(format!("~{prefix}:inv:*")),
        Vendor => {
            rules.push(format!("~{prefix}:vendor:*"));
            rules.push(format!("&{prefix}:vendor:*"));
        }
        Order | Notification | Cart => {}
    }
    if service != Customer {
        rules.push(format!("%R~{prefix}:auth:session:*"));
        rules.push(format!("%R~{prefix}:auth:revoked:*"));
        rules.push(format!("~{prefix}:auth:epoch"));
    }
    rules
}

/// The rules of Kong's user: its rate-limit counters only.
pub fn kong_acl_rules() -> Vec<String> {
    let mut rules = vec!["resetkeys".to_owned(), "resetchannels".to_owned()];
    rules.extend(ACL_COMMANDS.split_whitespace().map(str::to_owned));
    rules.push("~ratelimit:*".to_owned());
    rules
}

/// A multiplexed connection that reconnects by itself. `rediss://` speaks TLS,
/// trusting the extra CA bundle when one is configured (see [`crate::tls`]), else the
/// system's roots, and checks the certificate against the URL's host.
pub async fn connect(url: &str) -> redis::RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_secs(2))
        .set_response_timeout(Duration::from_secs(2))
        .set_number_of_retries(2);
    let client = match crate::tls::extra_ca() {
        Some(ca) if url.starts_with("rediss://") => redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.to_vec()),
            },
        )?,
        _ => redis::Client::open(url)?,
    };
    // One plain connection first, bounded: a refused certificate or password is an
    // answer at once (the manager would retry it with growing pauses for minutes).
    match tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connecting to Redis timed out",
            )));
        }
    }
    client.get_connection_manager_with_config(config).await
}
