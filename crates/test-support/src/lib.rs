//! Test environments against the real PostgreSQL, RabbitMQ and Redis.
//!
//! A [`TestEnv`] gives one test its own PostgreSQL schemas (`t_<id>_<service>`), its own
//! RabbitMQ names (`t_<id>.*`, deleted by the broker once unused) and its own Redis key
//! prefix, so the whole suite runs in parallel. Services run in-process on port 0
//! through their `run(config, listener, shutdown)`. Dropping the env stops nothing by
//! itself; [`TestService`]s stop when dropped, and the env drops its schemas and keys.

use std::time::{Duration, Instant};

use mp_common::CommonConfig;
use mp_events::Service;
use mp_events::topology::QueueType;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use mp_events;

pub mod api;
pub mod client;
pub mod clients;
pub mod pg;
pub mod smtp;
pub mod tls;

pub mod proxy;

pub struct TestEnv {
    pub id: String,
    base: CommonConfig,
    /// The project's own PostgreSQL and Redis URLs, as the environment found them: the
    /// test's pools, set-up and clean-up use these, whatever [`TestEnv::configure`]
    /// gives the services (a proxy that is gone by the time the env drops, say).
    direct_db: String,
    direct_redis: String,
    /// Per service, when [`TestEnv::with_own_credentials`] made them: its PostgreSQL
    /// and Redis URLs, as its own role and user.
    credentials: std::collections::HashMap<Service, (String, String)>,
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl TestEnv {
    pub fn new() -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .with_test_writer()
            .try_init();
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let mut base = CommonConfig::from_env();
        base.amqp_prefix = format!("t_{id}");
        base.redis_prefix = format!("t_{id}");
        base.retry_delays_ms = vec![50, 100, 200];
        base.amqp_queue_expires_ms = Some(120_000);
        base.db_max_connections = 5;
        // Classic queues: cheap for the broker to declare and expire. Hundreds of
        // throw-away quorum queues from parallel tests stall a single RabbitMQ node for
        // seconds. Tests of delivery guarantees switch back with `with_quorum_queues`.
        base.amqp_queue_type = QueueType::Classic;
        base.shutdown_grace_secs = 5;
        // Development keys: every service derives the same (public) keys, so tests can
        // sign user tokens and speak for any service. Nothing fetches a JWKS.
        base.dev_mode = true;
        base.jwks_url = String::new();
        Self {
            id,
            direct_db: base.database_url.clone(),
            direct_redis: base.redis_url.clone(),
            base,
            credentials: Default::default(),
        }
    }

    /// Gives every service of this environment what production gives it: a PostgreSQL
    /// role of its own that owns its schema (created here for it) and has no rights on
    /// any other, and a Redis user restricted to its own keys
    /// ([`mp_common::redis::acl_rules`]). Services spawned afterwards use them; the
    /// environment drops them with itself. (The project role needs CREATEROLE, which
    /// `make infra` gives it.)
    pub async fn with_own_credentials(mut self) -> Self {
        let pool = sqlx::PgPool::connect(&self.direct_db)
            .await
            .expect("connect to PostgreSQL");
        let pg: sqlx::postgres::PgConnectOptions = self.direct_db.parse().expect("DATABASE_URL");
        let mut redis = self.redis().await;
        let redis_url = url_parts::Url::parse(&self.direct_redis);
        for service in Service::ALL {
            let name = format!("t_{}_{}", self.id, service);
            let password = uuid::Uuid::new_v4().simple().to_string();
            for statement in [
                format!("create role {name} login password '{password}'"),
                format!("grant {name} to current_user"),
                format!(
                    "create schema {} authorization {name}",
                    self.schema(service)
                ),
            ] {
                sqlx::query(&statement)
                    .execute(&pool)
                    .await
                    .unwrap_or_else(|e| panic!("{statement}: {e}"));
            }
            let db_url = format!(
                "postgres://{name}:{password}@{}:{}/{}?sslmode=disable",
                pg.get_host(),
                pg.get_port(),
                pg.get_database().unwrap_or("marketplace")
            );
            let rules = mp_common::redis::acl_rules(service, &self.base.redis_prefix);
            let _: () = redis::cmd("ACL")
                .arg("SETUSER")
                .arg(&name)
                .arg("reset")
                .arg("on")
                .arg(format!(">{password}"))
                .arg(&rules)
                .query_async(&mut redis)
                .await
                .expect("ACL SETUSER");
            self.credentials
                .insert(service, (db_url, redis_url.with_user(&name, &password)));
        }
        pool.close().await;
        self
    }

    /// Uses quorum queues, as production does (for tests of delivery guarantees).
    pub fn with_quorum_queues(mut self) -> Self {
        self.base.amqp_queue_type = QueueType::Quorum;
        self
    }

    /// The configuration of `service` in this environment.
    pub fn config(&self, service: Service) -> CommonConfig {
        let mut c = self.base.clone();
        c.db_schema = Some(self.schema(service));
        if let Some((db, redis)) = self.credentials.get(&service) {
            c.database_url = db.clone();
            c.redis_url = redis.clone();
        }
        c
    }

    pub fn schema(&self, service: Service) -> String {
        format!("t_{}_{}", self.id, service)
    }

    /// Changes the base configuration for services spawned afterwards.
    pub fn configure(&mut self, f: impl FnOnce(&mut CommonConfig)) {
        f(&mut self.base)
    }

    /// Starts a service in this process and waits until it is ready.
    pub async fn spawn<F, Fut>(&self, service: Service, run: F) -> TestService
    where
        F: FnOnce(CommonConfig, TcpListener, CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let svc = self.start(service, run).await;
        svc.wait_ready(Duration::from_secs(20)).await;
        svc
    }

    /// Starts a service in this process without waiting for readiness.
    pub async fn start<F, Fut>(&self, service: Service, run: F) -> TestService
    where
        F: FnOnce(CommonConfig, TcpListener, CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        let base_url = format!("http://{}", listener.local_addr().expect("local addr"));
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(run(self.config(service), listener, shutdown.clone()));
        TestService {
            service,
            base_url,
            shutdown,
            handle: Some(handle),
            http: reqwest::Client::new(),
        }
    }

    /// A database pool on `service`'s schema in this environment.
    pub async fn db(&self, service: Service) -> sqlx::PgPool {
        let options: sqlx::postgres::PgConnectOptions =
            self.direct_db.parse().expect("DATABASE_URL");
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(3)
            .connect_with(
                options
                    .options([("search_path", self.schema(service).as_str())])
                    .application_name(&format!("t_{}_test", self.id)),
            )
            .await
            .expect("connect to PostgreSQL")
    }

    /// A command that runs a service binary as its own process in this environment,
    /// and the base URL it will listen on.
    pub fn command(&self, service: Service, program: &str) -> (std::process::Command, String) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let c = self.config(service);
        let mut cmd = std::process::Command::new(program);
        cmd.env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("DATABASE_URL", &c.database_url)
            .env("DB_SCHEMA", c.db_schema.as_deref().unwrap_or_default())
            .env("AMQP_URL", &c.amqp_url)
            .env("AMQP_PREFIX", &c.amqp_prefix)
            .env("AMQP_QUEUE_TYPE", c.amqp_queue_type.as_str())
            .env("REDIS_URL", &c.redis_url)
            .env("REDIS_PREFIX", &c.redis_prefix)
            .env(
                "RETRY_DELAYS_MS",
                c.retry_delays_ms
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            )
            .env(
                "AMQP_QUEUE_EXPIRES_MS",
                c.amqp_queue_expires_ms.unwrap_or(120_000).to_string(),
            )
            .env("DEV_MODE", "true")
            .env("JWKS_URL", "")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null());
        (cmd, format!("http://127.0.0.1:{port}"))
    }

    /// Forces RabbitMQ to close `service`'s connection in this environment, as a broker
    /// restart would (other tests' connections are untouched).
    pub async fn drop_broker_connection(&self, service: Service) {
        // Both of the service's connections: "<prefix>.<service>.publish" and ".consume".
        let name = format!("\"{}.{}.", self.base.amqp_prefix, service);
        let out = tokio::task::spawn_blocking(|| {
            std::process::Command::new("rabbitmqctl")
                .args([
                    "list_connections",
                    "pid",
                    "client_properties",
                    "-q",
                    "--no-table-headers",
                ])
                .output()
        })
        .await
        .expect("join")
        .expect("rabbitmqctl runs");
        let listing = String::from_utf8_lossy(&out.stdout).into_owned();
        let pids: Vec<String> = listing
            .lines()
            .filter(|l| l.contains(&name))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect();
        assert!(!pids.is_empty(), "no RabbitMQ connection named {name}");
        for pid in pids {
            let status = tokio::task::spawn_blocking(move || {
                std::process::Command::new("rabbitmqctl")
                    .args(["close_connection", &pid, "test: broker restart"])
                    .output()
            })
            .await
            .expect("join")
            .expect("rabbitmqctl runs");
            assert!(
                status.status.success(),
                "{}",
                String::from_utf8_lossy(&status.stderr)
            );
        }
    }

    pub async fn redis(&self) -> redis::aio::ConnectionManager {
        mp_common::redis::connect(&self.direct_redis)
            .await
            .expect("connect to Redis")
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let (url, redis_url, id) = (
            self.direct_db.clone(),
            self.direct_redis.clone(),
            self.id.clone(),
        );
        let with_users = !self.credentials.is_empty();
        // Drop runs outside async context; clean up on a thread with its own runtime.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Ok(pool) = sqlx::PgPool::connect(&url).await {
                    // The services of this env may still hold transactions on the test's
                    // runtime, which is blocked in this drop: end their sessions first
                    // (pools name their connections after their schema).
                    let pattern = format!("t\\_{id}\\_%");
                    let _ = sqlx::query(
                        "select pg_terminate_backend(pid) from pg_stat_activity
                         where application_name like $1 and pid <> pg_backend_pid()",
                    )
                    .bind(&pattern)
                    .execute(&pool)
                    .await;
                    let schemas: Vec<String> = sqlx::query_scalar(
                        "select nspname::text from pg_namespace where nspname like $1",
                    )
                    .bind(&pattern)
                    .fetch_all(&pool)
                    .await
                    .unwrap_or_default();
                    let _ = sqlx::query("set lock_timeout = '5s'").execute(&pool).await;
                    for schema in schemas {
                        let _ = sqlx::query(&format!("drop schema if exists {schema} cascade"))
                            .execute(&pool)
                            .await;
                    }
                    let roles: Vec<String> = sqlx::query_scalar(
                        "select rolname::text from pg_roles where rolname like $1",
                    )
                    .bind(&pattern)
                    .fetch_all(&pool)
                    .await
                    .unwrap_or_default();
                    for role in roles {
                        let _ = sqlx::query(&format!("drop owned by {role}"))
                            .execute(&pool)
                            .await;
                        let _ = sqlx::query(&format!("drop role if exists {role}"))
                            .execute(&pool)
                            .await;
                    }
                    pool.close().await;
                }
                if let Ok(client) = redis::Client::open(redis_url)
                    && let Ok(mut conn) = client.get_multiplexed_async_connection().await
                {
                    let keys: Vec<String> = redis::cmd("KEYS")
                        .arg(format!("t_{id}:*"))
                        .query_async(&mut conn)
                        .await
                        .unwrap_or_default();
                    if !keys.is_empty() {
                        let _: Result<(), _> =
                            redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
                    }
                    if with_users {
                        for service in Service::ALL {
                            let _: Result<(), _> = redis::cmd("ACL")
                                .arg("DELUSER")
                                .arg(format!("t_{id}_{service}"))
                                .query_async(&mut conn)
                                .await;
                        }
                    }
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// A service running inside the test process.
pub struct TestService {
    pub service: Service,
    pub base_url: String,
    pub shutdown: CancellationToken,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
    http: reqwest::Client,
}

impl TestService {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    async fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(r) = self.http.get(self.url("/health/ready")).send().await
                && r.status() == StatusCode::OK
            {
                return;
            }
            if let Some(h) = &self.handle
                && h.is_finished()
            {
                panic!("{} exited before becoming ready", self.service);
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready within {timeout:?}",
                self.service
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// This service's HTTP API, for typed calls ([`client::Api`]).
    pub fn api(&self) -> client::Api {
        client::Api::with_client(self.base_url.clone(), self.http.clone())
    }

    /// Sends a request; returns the status and the JSON body (`Null` when empty); see
    /// [`client::Api::call`].
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.api().call(method, path, token, body).await
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Stops the service gracefully and returns how its `run` ended.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.handle.take() {
            Some(h) => h.await?,
            None => Ok(()),
        }
    }
}

impl Drop for TestService {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Waits until a service at `base_url` reports ready.
pub async fn wait_ready(base_url: &str, timeout: Duration) {
    let http = reqwest::Client::new();
    eventually(&format!("{base_url} to be ready"), timeout, || {
        let req = http.get(format!("{base_url}/health/ready")).send();
        async move {
            req.await
                .ok()
                .filter(|r| r.status() == StatusCode::OK)
                .map(drop)
        }
    })
    .await;
}

/// Polls `probe` until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Publishes `envelope` on `broker`'s exchange, as its publisher's relay would (with
/// publisher confirms), waiting up to 30 s for RabbitMQ to be reachable.
pub async fn publish_envelope<E: mp_events::Event>(
    broker: &mp_events::Broker,
    envelope: &mp_events::Envelope<E>,
) {
    use lapin::BasicProperties;
    use lapin::options::BasicPublishOptions;

    let channel = eventually(
        "RabbitMQ to accept a publisher channel",
        Duration::from_secs(30),
        || async { broker.confirm_channel().await.ok() },
    )
    .await;
    channel
        .basic_publish(
            &broker.topology().exchange(),
            E::TYPE,
            BasicPublishOptions::default(),
            &serde_json::to_vec(envelope).expect("envelope serializes"),
            BasicProperties::default()
                .with_message_id(envelope.id.to_string().into())
                .with_content_type("application/json".into())
                .with_delivery_mode(2),
        )
        .await
        .expect("published")
        .await
        .expect("confirmed");
    let _ = channel.close(200, "done").await;
}

/// Publishes `payload` as an event of `source` (see [`publish_envelope`]).
pub async fn publish<E: mp_events::Event>(
    broker: &mp_events::Broker,
    source: Service,
    payload: E,
) -> mp_events::Envelope<E> {
    let envelope = mp_events::Envelope::new(source, payload);
    publish_envelope(broker, &envelope).await;
    envelope
}

/// Putting a user and password into a Redis URL.
mod url_parts {
    pub struct Url {
        scheme: String,
        rest: String,
    }

    impl Url {
        /// `redis://[user:pass@]host:port[/db]`: keeps the scheme and what follows the
        /// credentials.
        pub fn parse(url: &str) -> Self {
            let (scheme, rest) = url.split_once("://").unwrap_or(("redis", url));
            let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
            Self {
                scheme: scheme.to_owned(),
                rest: rest.to_owned(),
            }
        }

        pub fn with_user(&self, user: &str, password: &str) -> String {
            format!("{}://{user}:{password}@{}", self.scheme, self.rest)
        }
    }
}
