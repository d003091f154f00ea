//! The inventory service (port 5003): stock levels, the stock movement ledger,
//! reservations and low-stock alerts.
//!
//! * PostgreSQL is the source of truth: `stock_items.on_hand` (never negative, changed
//!   only with a guard) and the `stock_movements` ledger, written together, so on-hand
//!   always equals the sum of the ledger and no commit can oversell.
//! * Redis holds reservations and a mirror of on-hand ([`store`]), checked and changed
//!   atomically by Lua scripts: the gate that answers add-to-cart. It is soft state:
//!   every reservation is also written to PostgreSQL with its generation (one number
//!   per change of any reservation, so every copy is ordered without clocks; ended
//!   reservations stay as tombstones for a day), and [`reconcile`] rebuilds Redis
//!   from there at start-up, periodically, and on demand whenever a script finds the
//!   mirror missing. A rebuilt mirror settles briefly before it takes reservations, so
//!   writes on their way during the loss are not lost.
//! * Commits honour reservations: an order takes at most what is on hand less the live
//!   reservations of other carts, decided from PostgreSQL alone in the commit's
//!   transaction. No handler calls Redis inside a transaction; Redis follows after the
//!   commit, from the committed state.
//! * Stock levels in events carry the stock item's `version`, bumped by every change
//!   that publishes a level.
//! * Events in ([`events`]): product created/updated make and update stock items, cart
//!   items confirm and release reservations, orders commit and release stock. Events
//!   out, through the outbox: `inventory.created`, `inventory.updated`,
//!   `inventory.low_stock`.
//!
//! Layout: [`routes`] (HTTP), [`events`] (consumed events), [`stock`] (operations both
//! share), [`domain`] (rules), [`db`] (queries), [`store`] (Redis), [`reconcile`],
//! [`metrics`].

pub mod config;
pub mod db;
pub mod domain;
pub mod events;
pub mod metrics;
pub mod reconcile;
pub mod routes;
pub mod stock;
pub mod store;

use std::time::Duration;

use mp_common::{Infra, Worker};
use mp_events::Service;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

pub use stock::Inventory;

pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/inventory");

pub use config::{Config, Settings};

/// The bound of a reservation's durable write: the pool's acquire timeout plus the
/// statement timeout stay below `store::SETTLE_MS`, so a rebuilt mirror has seen every
/// write that was on its way when Redis lost its data.
const RESERVATION_WRITE_TIMEOUT: Duration = Duration::from_millis(1_000);

/// The pool for the durable copies of reservations: sessions in the service's schema
/// with `synchronous_commit=off` (see `Inventory::set_reservation`) and a statement
/// timeout, half the size of the main pool (at least 2). Connects lazily; the main pool
/// has already migrated the schema.
fn reservations_pool(
    common: &mp_common::config::CommonConfig,
    schema: &str,
) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = common.database_url.parse()?;
    let timeout = RESERVATION_WRITE_TIMEOUT.as_millis().to_string();
    let options = options
        .options([
            ("search_path", schema),
            ("synchronous_commit", "off"),
            ("statement_timeout", timeout.as_str()),
        ])
        .application_name(&format!("{schema}_reservations"));
    Ok(PgPoolOptions::new()
        .max_connections((common.db_max_connections / 2).max(2))
        .acquire_timeout(RESERVATION_WRITE_TIMEOUT)
        .connect_lazy_with(options))
}

pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let infra = Infra::connect(Service::Inventory, &config.common, &MIGRATOR, &shutdown).await?;
    let s = &config.settings;
    let inventory = Inventory {
        db: infra.db.clone(),
        reservations_db: reservations_pool(&config.common, &infra.schema)?,
        store: store::Store::new(
            infra.redis.clone(),
            infra.redis_keys.clone(),
            Duration::from_secs(s.reservation_ttl_secs),
        ),
        metrics: metrics::InventoryMetrics::new(&infra.metrics.registry)?,
    };
    let consumer = infra
        .consumer()
        .handle(events::CreateStockItem(inventory.clone()))
        .handle(events::UpdateStockItem(inventory.clone()))
        .handle(events::CheckReservation(inventory.clone()))
        .handle(events::ReleaseReservation(inventory.clone()))
        .handle(events::CommitOrder(inventory.clone()))
        .handle(events::RestockOrder(inventory.clone()));
    let reconciler = {
        let inventory = inventory.clone();
        let interval = Duration::from_millis(s.reconcile_interval_ms);
        Worker::infallible("reconciler", move |token| {
            reconcile::run(inventory.clone(), interval, token)
        })
    };
    let state = routes::AppState {
        inventory,
        auth: infra.auth.clone(),
    };
    mp_common::serve(
        infra,
        routes::router(state),
        routes::ApiDoc::openapi(),
        Some(consumer),
        vec![reconciler],
        listener,
        shutdown,
    )
    .await
}

/// The binary's entry point: the command line and the runtime around [`run`]. It lives in
/// the library so a release build instantiates the generic start-up code once, here,
/// instead of again in the binary.
pub fn main() -> std::process::ExitCode {
    mp_common::cli::main(mp_events::Service::Inventory, &MIGRATOR, run)
}
