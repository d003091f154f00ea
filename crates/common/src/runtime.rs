//! Start-up and shutdown of a service.
//!
//! [`Infra::connect`] waits for PostgreSQL and Redis (retrying, so a service started
//! before its dependencies simply waits), creates the service's schema and applies its
//! migrations. [`serve`] runs the HTTP server, the outbox relay and the consumer until
//! the shutdown token fires; then in-flight requests and deliveries finish, the relay and
//! consumer stop, and connections close.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use mp_events::backoff::Delays;
use mp_events::outbox::Housekeeping;
use mp_events::{Broker, Consumer, EventMetrics, Relay, Service};
use redis::aio::ConnectionManager;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::openapi::OpenApi;

use crate::auth::{Authenticator, TokenKeys};
use crate::config::CommonConfig;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::redis::RedisKeys;
use crate::supervisor::{Supervisor, Worker};

/// Everything a service's handlers and workers need from the outside world.
#[derive(Clone)]
pub struct Infra {
    pub service: Service,
    pub config: CommonConfig,
    pub schema: String,
    pub db: PgPool,
    pub redis: ConnectionManager,
    pub redis_keys: RedisKeys,
    pub broker: Broker,
    pub metrics: Metrics,
    pub event_metrics: EventMetrics,
    pub tokens: Arc<TokenKeys>,
    pub auth: Authenticator,
}

fn valid_schema(schema: &str) -> bool {
    !schema.is_empty()
        && schema.len() <= 48
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !schema.as_bytes()[0].is_ascii_digit()
}

/// The common migrations (outbox, inbox) followed by the service's own.
pub fn migrator(service_migrations: &Migrator) -> Migrator {
    let mut migrations: Vec<_> = mp_events::MIGRATOR.iter().cloned().collect();
    migrations.extend(service_migrations.iter().cloned());
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

/// A pool whose connections work in `schema`; creates the schema and migrates it.
pub async fn connect_db(
    config: &CommonConfig,
    schema: &str,
    migrations: &Migrator,
) -> anyhow::Result<PgPool> {
    anyhow::ensure!(valid_schema(schema), "invalid schema name {schema:?}");
    crate::tls::init(config)?;
    let mut options: PgConnectOptions = config.database_url.parse().context("DATABASE_URL")?;
    if let Some(ca) = &config.tls_ca_file
        && !config.database_url.contains("sslrootcert")
    {
        options = options.ssl_root_cert(ca);
    }
    let options = options
        .options([("search_path", schema)])
        .application_name(schema);
    let pool = PgPoolOptions::new()
        .max_connections(config.db_max_connections)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(3))
        .connect_with(options)
        .await?;
    // Created only when missing: CREATE SCHEMA checks the right to create in the
    // database even with IF NOT EXISTS, and a service's own role has no such right
    // where an administrator made its schema for it (`create schema ... authorization`).
    let exists: bool =
        sqlx::query_scalar("select exists (select 1 from pg_namespace where nspname = $1)")
            .bind(schema)
            .fetch_one(&pool)
            .await?;
    if !exists {
        sqlx::query(&format!("create schema {schema}"))
            .execute(&pool)
            .await
            .with_context(|| {
                format!(
                    "creating schema {schema} (if this role may not create schemas, have an \
                     administrator run: create schema {schema} authorization <this role>)"
                )
            })?;
    }
    migrator(migrations)
        .run(&pool)
        .await
        .context("applying migrations")?;
    Ok(pool)
}

async fn retrying<T, F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    mut attempt: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let mut delays = Delays::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "{what} not available yet; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => anyhow::bail!("shut down while waiting for {what}"),
                    _ = tokio::time::sleep(delays.next_delay()) => {}
                }
            }
        }
    }
}

impl Infra {
    pub async fn connect(
        service: Service,
        config: &CommonConfig,
        migrations: &Migrator,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let schema = config.schema(service);
        let db = retrying("PostgreSQL", shutdown, || {
            connect_db(config, &schema, migrations)
        })
        .await?;
        let redis = retrying("Redis", shutdown, || async {
            Ok(crate::redis::connect(&config.redis_url).await?)
        })
        .await?;
        let redis_keys = RedisKeys::new(&config.redis_prefix);
        let broker = Broker::new(config.amqp_url.clone(), config.topology(), Some(service))
            .with_tls_ca(crate::tls::extra_ca().map(|ca| String::from_utf8_lossy(ca).into_owned()));
        // Declare the topology now so events published from the first request have
        // their queues; a broker that is down only delays this (readiness shows it).
        if let Err(e) = broker.connection().await {
            tracing::warn!(error = %e, "RabbitMQ not available yet; will keep trying");
        }
        let metrics = Metrics::new()?;
        let event_metrics = EventMetrics::new(&metrics.registry)?;
        let tokens = Arc::new(TokenKeys::for_service(config, Some(service))?);
        let auth = Authenticator::new(tokens.clone(), redis.clone(), redis_keys.clone(), service);
        // Where Redis' memory of sessions begins: set once (see `session_refusal`).
        if let Err(e) = auth.ensure_epoch().await {
            tracing::warn!(error = %e, "could not record the session epoch yet");
        }
        Ok(Self {
            service,
            config: config.clone(),
            schema,
            db,
            redis,
            redis_keys,
            broker,
            metrics,
            event_metrics,
            tokens,
            auth,
        })
    }

    /// A consumer for this service's queue (register handlers on it).
    pub fn consumer(&self) -> Consumer {
        let mut consumer = Consumer::new(
            self.service,
            self.broker.clone(),
            self.db.clone(),
            self.event_metrics.clone(),
        );
        consumer.prefetch = self.config.amqp_prefetch;
        consumer.handler_timeout = Duration::from_secs(self.config.handler_timeout_secs);
        consumer
    }
}

/// Runs the service until `shutdown` fires, then stops it gracefully.
///
/// Besides the HTTP server it runs, each under the [`Supervisor`], the outbox relay, the
/// consumer (when it has handlers) and the service's own `workers`.
pub async fn serve(
    infra: Infra,
    api: Router,
    openapi: OpenApi,
    consumer: Option<Consumer>,
    workers: Vec<Worker>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut supervisor = Supervisor::new(&infra.metrics.registry)?;
    let health = Health {
        db: infra.db.clone(),
        broker: infra.broker.clone(),
        redis: infra.redis.clone(),
        service: infra.service.as_str(),
        workers: supervisor.status(),
        up: crate::health::dependency_gauge(&infra.metrics.registry)?,
    };
    supervisor.spawn(health.probe_worker(), shutdown.clone());
    let app = crate::http::app(
        infra.service.as_str(),
        api,
        openapi,
        health,
        infra.metrics.clone(),
        Duration::from_secs(infra.config.request_timeout_secs),
        infra.config.body_limit_bytes,
    );

    let settings = infra.config.relay_settings();
    let relay = {
        let (infra, settings) = (infra.clone(), settings.clone());
        Worker::infallible("relay", move |token| {
            Relay::new(
                infra.db.clone(),
                infra.broker.clone(),
                infra.event_metrics.clone(),
            )
            .with_settings(settings.clone())
            .run(token)
        })
    };
    supervisor.spawn(relay, shutdown.clone());
    let housekeeping = {
        let infra = infra.clone();
        Worker::infallible("outbox_housekeeping", move |token| {
            Housekeeping {
                pool: infra.db.clone(),
                metrics: infra.event_metrics.clone(),
                settings: settings.clone(),
            }
            .run(token)
        })
    };
    supervisor.spawn(housekeeping, shutdown.clone());
    if let Some(consumer) = consumer.filter(|c| !c.is_empty()) {
        let consumer = Arc::new(consumer);
        supervisor.spawn(
            Worker::infallible("consumer", move |token| consumer.clone().run(token)),
            shutdown.clone(),
        );
    }
    for worker in workers {
        supervisor.spawn(worker, shutdown.clone());
    }

    tracing::info!(service = %infra.service, addr = %listener.local_addr()?, "listening");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.clone().cancelled_owned())
    .await?;

    let grace = Duration::from_secs(infra.config.shutdown_grace_secs);
    if !supervisor.join(grace).await {
        tracing::warn!("workers did not stop within the grace period");
    }
    infra.broker.close().await;
    infra.db.close().await;
    tracing::info!(service = %infra.service, "stopped");
    Ok(())
}

/// A token cancelled on SIGTERM or Ctrl-C.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler installs");
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown requested");
        cancel.cancel();
    });
    token
}

/// Runs a service that has no API or consumers of its own yet: health, metrics, docs
/// and the outbox relay on its schema.
pub async fn serve_without_domain(
    service: Service,
    config: &CommonConfig,
    migrations: &Migrator,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let infra = Infra::connect(service, config, migrations, &shutdown).await?;
    serve(
        infra,
        Router::new(),
        OpenApi::default(),
        None,
        Vec::new(),
        listener,
        shutdown,
    )
    .await
}
