//! The order service (port 5001): orders, items, status history, payments and the
//! checkout saga.
//!
//! * The cart hands over the payment token by an internal call
//!   (`PUT /api/internal/orders/{id}/payment-method`), kept in `payment_methods` only
//!   until the charge ends: it never enters an event, the outbox or a log.
//! * `order.create` (on `cart.checkout`) creates the order `pending` with the saga's
//!   first step, `charge`. The saga driver ([`saga`]), a supervised worker, claims due
//!   orders with a lease, calls the [`payments`] gateway outside any transaction, and
//!   records the outcome, the transition and its events in one transaction. The saga's
//!   state is in the order row, so a killed service resumes where it stopped.
//! * `order.stock` (on `inventory.updated`) confirms the order, or rejects it and
//!   schedules the refund.
//! * Orders waiting on a step past its soft timeout are counted by step and listed for
//!   admins; past the hard timeout they are compensated.
//!
//! Layout: [`routes`] (HTTP) and [`events`] (consumed events) call [`orders`] (the
//! operations both share) and [`saga`], which use [`db`] (queries) and [`domain`]
//! (rules, no I/O); [`payments`] talks to the provider; [`metrics`].

pub mod db;
pub mod domain;
pub mod events;
pub mod metrics;
pub mod orders;
pub mod payments;
pub mod routes;
pub mod saga;

use std::sync::Arc;
use std::time::Duration;

use mp_common::Infra;
use mp_events::Service;
use secrecy::SecretString;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/orders");

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GatewayKind {
    /// The built-in test gateway (`tok_visa`, `tok_declined`, `tok_error`).
    Test,
    /// Stripe's PaymentIntents API at `STRIPE_API_URL` with `STRIPE_SECRET_KEY`.
    Stripe,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Which payment gateway charges orders.
    #[arg(long, env = "PAYMENT_GATEWAY", value_enum, default_value = "test")]
    pub payment_gateway: GatewayKind,
    /// Base URL of the Stripe-compatible API.
    #[arg(long, env = "STRIPE_API_URL", default_value = "https://api.stripe.com")]
    pub stripe_api_url: String,
    /// Secret API key for the Stripe gateway.
    #[arg(long, env = "STRIPE_SECRET_KEY", hide_env_values = true,
          value_parser = |s: &str| Ok::<_, String>(SecretString::from(s.to_owned())))]
    pub stripe_secret_key: Option<SecretString>,
    /// Timeout of one payment provider call, in milliseconds.
    #[arg(long, env = "PAYMENT_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub payment_timeout_ms: u64,
    /// Retries of a transiently failing payment call before it counts as declined.
    #[arg(long, env = "PAYMENT_RETRIES", default_value_t = 3,
          value_parser = clap::value_parser!(u64).range(0..=20))]
    pub payment_retries: u64,
    /// First retry delay of a payment call, in milliseconds (doubling, with jitter).
    #[arg(long, env = "PAYMENT_RETRY_MIN_MS", default_value_t = 200)]
    pub payment_retry_min_ms: u64,
    /// How often the saga driver looks for due work when nothing wakes it, in ms.
    #[arg(long, env = "SAGA_POLL_MS", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(10..))]
    pub saga_poll_ms: u64,
    /// How long a driver holds a claimed order before another may take it over, in s.
    #[arg(long, env = "SAGA_LEASE_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub saga_lease_secs: u64,
    /// An order waiting on a step longer than this is counted as stuck, in seconds.
    #[arg(long, env = "SAGA_SOFT_TIMEOUT_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub saga_soft_timeout_secs: u64,
    /// Past this an order waiting on its charge or its stock is compensated, in s.
    #[arg(long, env = "SAGA_HARD_TIMEOUT_SECS", default_value_t = 900,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub saga_hard_timeout_secs: u64,
    /// Orders the saga driver works on at once (each holds a database connection only
    /// between provider calls, never during one).
    #[arg(long, env = "SAGA_CONCURRENCY", default_value_t = 32,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub saga_concurrency: u64,
    /// New checkouts are refused (503 with Retry-After at the payment hand-off) while
    /// this many orders are in the saga: a checkout then waits about this many divided by
    /// the orders the saga completes per second.
    #[arg(long, env = "SAGA_MAX_IN_FLIGHT", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub saga_max_in_flight: u64,
    /// Unused payment tokens are deleted after this many hours.
    #[arg(long, env = "PAYMENT_METHOD_TTL_HOURS", default_value_t = 24,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub payment_method_ttl_hours: u64,
}

pub type Config = mp_common::config::Config<Settings>;

fn gateway(s: &Settings) -> anyhow::Result<payments::Gateway> {
    Ok(match s.payment_gateway {
        GatewayKind::Test => Arc::new(payments::TestGateway::default()),
        GatewayKind::Stripe => {
            let key = s
                .stripe_secret_key
                .clone()
                .ok_or_else(|| anyhow::anyhow!("PAYMENT_GATEWAY=stripe needs STRIPE_SECRET_KEY"))?;
            Arc::new(payments::StripeGateway::new(
                &s.stripe_api_url,
                key,
                Duration::from_millis(s.payment_timeout_ms),
            ))
        }
    })
}

pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let s = &config.settings;
    let gateway = gateway(s)?;
    let infra = Infra::connect(Service::Order, &config.common, &MIGRATOR, &shutdown).await?;
    let orders = orders::Orders {
        db: infra.db.clone(),
        metrics: metrics::OrderMetrics::new(&infra.metrics.registry)?,
        wake: Arc::default(),
        handoff: saga::Handoff::default(),
        lease: Duration::from_secs(s.saga_lease_secs),
        admission: Arc::new(orders::Admission::new(s.saga_max_in_flight as i64)),
        timeouts: domain::Timeouts {
            soft: Duration::from_secs(s.saga_soft_timeout_secs),
            hard: Duration::from_secs(s.saga_hard_timeout_secs),
        },
    };
    let driver = saga::Driver {
        orders: orders.clone(),
        gateway,
        retry: payments::RetryPolicy {
            min_delay: Duration::from_millis(s.payment_retry_min_ms),
            max_delay: Duration::from_secs(5),
            retries: s.payment_retries as usize,
        },
        poll: Duration::from_millis(s.saga_poll_ms),
        lease: Duration::from_secs(s.saga_lease_secs),
        payment_method_ttl: Duration::from_secs(s.payment_method_ttl_hours * 3600),
        concurrency: s.saga_concurrency as usize,
    };
    let consumer = infra
        .consumer()
        .handle(events::CreateOrder::new(orders.clone()))
        .handle(events::StockOutcome(orders.clone()));
    let state = routes::AppState {
        orders,
        auth: infra.auth.clone(),
    };
    mp_common::serve(
        infra,
        routes::router(state),
        routes::ApiDoc::openapi(),
        Some(consumer),
        vec![driver.worker()],
        listener,
        shutdown,
    )
    .await
}

/// The binary's entry point: the command line and the runtime around [`run`]. It lives in
/// the library so a release build instantiates the generic start-up code once, here,
/// instead of again in the binary.
pub fn main() -> std::process::ExitCode {
    mp_common::cli::main(mp_events::Service::Order, &MIGRATOR, run)
}
