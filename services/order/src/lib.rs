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
//! Layout: [`routes`] (HTTP) and [`events`] (consumed events) parse and call the
//! [`orders`] service (every transaction and outbox row is there); the [`saga`] driver
//! uses it too. Below them [`db`] (queries) and [`domain`] (rules such as the status
//! machine and who sees what, no I/O); [`payments`] talks to the provider; [`config`]
//! holds the settings, [`metrics`] the service's own metrics.

pub mod config;
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
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

pub use config::{Config, GatewayKind, Settings};

pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/orders");

pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let s = &config.settings;
    let gateway = payments::from_settings(s)?;
    let infra = Infra::connect(Service::Order, &config.common, &MIGRATOR, &shutdown).await?;
    let orders = orders::Orders {
        db: infra.db.clone(),
        metrics: metrics::OrderMetrics::new(&infra.metrics.registry)?,
        wake: Arc::default(),
        handoff: orders::Handoff::default(),
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
