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

/// A multiplexed connection that reconnects by itself.
pub async fn connect(url: &str) -> redis::RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_secs(2))
        .set_response_timeout(Duration::from_secs(2))
        .set_number_of_retries(2);
    redis::Client::open(url)?
        .get_connection_manager_with_config(config)
        .await
}
