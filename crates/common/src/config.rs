//! Settings shared by every service. Each has a default that works on a developer
//! machine with PostgreSQL, RabbitMQ and Redis on localhost; every one can be set by an
//! environment variable (or a command-line flag: run a service with `--help`).

use std::net::SocketAddr;
use std::time::Duration;

use mp_events::topology::QueueType;
use mp_events::{Service, Topology};
use secrecy::SecretString;

#[derive(Clone, clap::Args)]
pub struct CommonConfig {
    /// Address to listen on [default: 0.0.0.0:<the service's port>].
    #[arg(long, env = "LISTEN_ADDR")]
    pub listen_addr: Option<SocketAddr>,

    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/marketplace"
    )]
    pub database_url: String,

    /// PostgreSQL schema the service owns [default: the service's schema].
    #[arg(long, env = "DB_SCHEMA")]
    pub db_schema: Option<String>,

    #[arg(long, env = "DB_MAX_CONNECTIONS", default_value_t = 10)]
    pub db_max_connections: u32,

    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,

    /// Prefix of exchange and queue names.
    #[arg(long, env = "AMQP_PREFIX", default_value = "marketplace")]
    pub amqp_prefix: String,

    /// `quorum` (replicated, the default) or `classic`.
    #[arg(long, env = "AMQP_QUEUE_TYPE", default_value = "quorum")]
    pub amqp_queue_type: QueueType,

    /// Deliveries a consumer handles at once.
    #[arg(long, env = "AMQP_PREFETCH", default_value_t = 64)]
    pub amqp_prefetch: u16,

    /// Backoff before each retry of a failed event, in milliseconds.
    #[arg(
        long,
        env = "RETRY_DELAYS_MS",
        value_delimiter = ',',
        default_value = "1000,5000,30000,120000"
    )]
    pub retry_delays_ms: Vec<u64>,

    /// Deliveries of one message before RabbitMQ itself dead-letters it (quorum queues):
    /// a message that keeps crashing consumers ends in the DLQ instead of looping.
    #[arg(long, env = "AMQP_DELIVERY_LIMIT", default_value_t = 10)]
    pub amqp_delivery_limit: u32,

    /// Longest wait for RabbitMQ to confirm a relay batch, in milliseconds. A broker
    /// that blocks publishers (memory or disk alarm) then shows in readiness and lag.
    #[arg(long, env = "PUBLISH_TIMEOUT_MS", default_value_t = 5000)]
    pub publish_timeout_ms: u64,

    /// How long published outbox rows are kept, in seconds (for inspection only).
    #[arg(long, env = "OUTBOX_RETENTION_SECS", default_value_t = 600)]
    pub outbox_retention_secs: u64,

    /// How long the inbox remembers handled events, in hours. A redelivery or redrive
    /// of an event older than this could apply it twice, so `dlq redrive` refuses
    /// such events unless forced.
    #[arg(long, env = "INBOX_RETENTION_HOURS", default_value_t = 168)]
    pub inbox_retention_hours: u64,

    /// Longest one event handler may run, in seconds; then it is retried.
    #[arg(long, env = "HANDLER_TIMEOUT_SECS", default_value_t = 30)]
    pub handler_timeout_secs: u64,

    /// Delete queues unused this long (milliseconds); for throw-away test prefixes only.
    #[arg(long, env = "AMQP_QUEUE_EXPIRES_MS")]
    pub amqp_queue_expires_ms: Option<u64>,

    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,

    /// A PEM bundle of CA certificates to trust for outgoing TLS besides the system's
    /// (PostgreSQL's sslrootcert unless the URL names one, rediss://, amqps://, HTTPS).
    #[arg(long, env = "TLS_CA_FILE")]
    pub tls_ca_file: Option<std::path::PathBuf>,

    /// Prefix of every Redis key.
    #[arg(long, env = "REDIS_PREFIX", default_value = "mp")]
    pub redis_prefix: String,

    /// The private key (PKCS#8 PEM, P-256) that signs user access tokens: the customer
    /// service's alone. `<service> keys --out DIR` makes a whole key set.
    #[arg(long, env = "JWT_SIGNING_KEY", hide_env_values = true)]
    pub jwt_signing_key: Option<SecretString>,

    /// This service's own private key (PKCS#8 PEM, P-256), which signs the tokens it
    /// presents to other services.
    #[arg(long, env = "SERVICE_KEY", hide_env_values = true)]
    pub service_key: Option<SecretString>,

    /// Public keys to trust, as a JWKS (`{"keys": [...]}`): every service's key, and
    /// previous user keys during a rotation.
    #[arg(long, env = "TRUSTED_KEYS", hide_env_values = true)]
    pub trusted_keys: Option<String>,

    /// Where the customer service publishes the user keys; fetched when a token names a
    /// key not known yet.
    #[arg(
        long,
        env = "JWKS_URL",
        default_value = "http://127.0.0.1:5000/.well-known/jwks.json"
    )]
    pub jwks_url: String,

    /// How often the JWKS is read again, in seconds: a user key that left it (retired
    /// after a rotation, revoked after a leak) is no longer trusted after at most this
    /// long. Keys in TRUSTED_KEYS are trusted regardless.
    #[arg(long, env = "JWKS_REFRESH_SECS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub jwks_refresh_secs: u64,

    /// Development mode: keys that are not configured are the development keys, which
    /// are public. Never in a real deployment: outside development mode a service
    /// refuses to start without its keys, and refuses the development keys.
    #[arg(long, env = "DEV_MODE", default_value_t = false)]
    pub dev_mode: bool,

    /// Lifetime of access tokens, in seconds.
    #[arg(long, env = "ACCESS_TOKEN_TTL_SECS", default_value_t = 900)]
    pub access_token_ttl_secs: u64,

    /// Longest a request may take, in seconds.
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = 15)]
    pub request_timeout_secs: u64,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "BODY_LIMIT_BYTES", default_value_t = 256 * 1024)]
    pub body_limit_bytes: usize,

    /// Time given to in-flight work at shutdown, in seconds.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 20)]
    pub shutdown_grace_secs: u64,

    /// `json` (default) or `pretty`.
    #[arg(long, env = "LOG_FORMAT", default_value = "json")]
    pub log_format: String,
}

/// Like a derived `Debug`, with the passwords of connection URLs hidden (keys are
/// `SecretString`s, which hide themselves).
impl std::fmt::Debug for CommonConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommonConfig")
            .field("listen_addr", &self.listen_addr)
            .field("database_url", &redact_url(&self.database_url))
            .field("db_schema", &self.db_schema)
            .field("db_max_connections", &self.db_max_connections)
            .field("amqp_url", &redact_url(&self.amqp_url))
            .field("amqp_prefix", &self.amqp_prefix)
            .field("amqp_queue_type", &self.amqp_queue_type)
            .field("amqp_prefetch", &self.amqp_prefetch)
            .field("retry_delays_ms", &self.retry_delays_ms)
            .field("amqp_delivery_limit", &self.amqp_delivery_limit)
            .field("publish_timeout_ms", &self.publish_timeout_ms)
            .field("outbox_retention_secs", &self.outbox_retention_secs)
            .field("inbox_retention_hours", &self.inbox_retention_hours)
            .field("handler_timeout_secs", &self.handler_timeout_secs)
            .field("amqp_queue_expires_ms", &self.amqp_queue_expires_ms)
            .field("redis_url", &redact_url(&self.redis_url))
            .field("tls_ca_file", &self.tls_ca_file)
            .field("redis_prefix", &self.redis_prefix)
            .field("jwt_signing_key", &self.jwt_signing_key)
            .field("service_key", &self.service_key)
            .field("trusted_keys", &self.trusted_keys)
            .field("jwks_url", &self.jwks_url)
            .field("jwks_refresh_secs", &self.jwks_refresh_secs)
            .field("dev_mode", &self.dev_mode)
            .field("access_token_ttl_secs", &self.access_token_ttl_secs)
            .field("request_timeout_secs", &self.request_timeout_secs)
            .field("body_limit_bytes", &self.body_limit_bytes)
            .field("shutdown_grace_secs", &self.shutdown_grace_secs)
            .field("log_format", &self.log_format)
            .finish()
    }
}

/// `scheme://user:***@host/...`: a URL without its password.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}://{user}:***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod redaction_tests {
    use super::*;

    #[test]
    fn debug_output_hides_connection_passwords() {
        let mut c = CommonConfig::from_env();
        c.database_url = "postgres://marketplace:s3cret@db:5432/marketplace".into();
        c.amqp_url = "amqps://order:hunter2@mq/%2f".into();
        c.redis_url = "rediss://:redispw@cache:6379".into();
        let text = format!("{c:?}");
        for secret in ["s3cret", "hunter2", "redispw"] {
            assert!(!text.contains(secret), "{text}");
        }
        assert!(
            text.contains("postgres://marketplace:***@db:5432/marketplace"),
            "{text}"
        );
    }
}

impl CommonConfig {
    /// Defaults overridden by the environment, without reading command-line arguments.
    pub fn from_env() -> Self {
        from_env()
    }

    pub fn schema(&self, service: Service) -> String {
        self.db_schema
            .clone()
            .unwrap_or_else(|| service.default_schema().to_owned())
    }

    pub fn listen_addr(&self, service: Service) -> SocketAddr {
        self.listen_addr
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], service.default_port())))
    }

    pub fn topology(&self) -> Topology {
        Topology {
            prefix: self.amqp_prefix.clone(),
            queue_type: self.amqp_queue_type,
            retry_delays: self
                .retry_delays_ms
                .iter()
                .copied()
                .map(Duration::from_millis)
                .collect(),
            queue_expires: self.amqp_queue_expires_ms.map(Duration::from_millis),
            delivery_limit: self.amqp_delivery_limit,
        }
    }

    /// The outbox relay's and housekeeping's settings.
    pub fn relay_settings(&self) -> mp_events::outbox::RelaySettings {
        mp_events::outbox::RelaySettings {
            publish_timeout: Duration::from_millis(self.publish_timeout_ms),
            outbox_retention: Duration::from_secs(self.outbox_retention_secs),
            inbox_retention: self.inbox_retention(),
            ..Default::default()
        }
    }

    pub fn inbox_retention(&self) -> Duration {
        Duration::from_secs(self.inbox_retention_hours * 3600)
    }
}

/// A service's own configuration: the common part plus its own settings.
pub trait ServiceConfig: clap::Args + Send + 'static {
    fn common(&self) -> &CommonConfig;
}

/// The configuration of a service with settings of its own (`S`).
#[derive(Debug, Clone, clap::Args)]
pub struct Config<S: clap::Args> {
    #[command(flatten)]
    pub common: CommonConfig,
    #[command(flatten)]
    pub settings: S,
}

impl<S: clap::Args> Config<S> {
    /// `common` with the service's settings from the environment (for tests and tools).
    pub fn with_common(common: CommonConfig) -> Self {
        Self {
            common,
            settings: from_env(),
        }
    }
}

impl<S: clap::Args + Send + 'static> ServiceConfig for Config<S> {
    fn common(&self) -> &CommonConfig {
        &self.common
    }
}

impl ServiceConfig for CommonConfig {
    fn common(&self) -> &CommonConfig {
        self
    }
}

/// Any settings struct with its defaults overridden by the environment, ignoring the
/// command line (for tests and tools).
pub fn from_env<A: clap::Args>() -> A {
    #[derive(clap::Parser)]
    struct Only<A: clap::Args> {
        #[command(flatten)]
        args: A,
    }
    <Only<A> as clap::Parser>::parse_from(["service"]).args
}
