//! The cart service (port 5005): carts, items, price calculation and checkout requests.
//!
//! * A customer has at most one open cart. Adding, changing and removing lines reserve
//!   and release stock synchronously at inventory; names, prices and vendors come from
//!   the vendor's public catalog. Every cart is in one currency: new carts take
//!   `CART_CURRENCY` (EUR by default) and accept only products priced in it.
//! * Prices: line totals, subtotal, tax at `CART_TAX_RATE_BPS` basis points of the
//!   subtotal rounded half up ([`domain::tax`]), total. `vendor.product.updated`
//!   refreshes the prices of open carts by product revision ([`events`]); each line
//!   keeps the price it was added at, and says whether the price changed.
//! * Idle carts: every change moves `last_activity_at` and renews the reservations of
//!   the other lines. The `idle_carts` worker abandons carts idle past
//!   `CART_IDLE_SECS`: `abandoned` with a `cart.item.removed` per line in one
//!   transaction, then the reservations are released at inventory outside it.
//! * Concurrent changes of one line: a change writes only if the line is as it read it
//!   and holds no newer reservation (by inventory's `generation`); otherwise it reserves
//!   again, so the cart and inventory agree. Item events carry the generation.
//! * Checkout ([`checkout`]): an Idempotency-Key record (scoped to the
//!   cart's customer, remembered `CHECKOUT_KEY_RETENTION_HOURS`) holds the key with a
//!   lease and the chosen order id; every line is re-reserved; the payment token goes
//!   to the order service by `PUT /api/internal/orders/{id}/payment-method` (never into
//!   an event or a log); then one transaction marks the cart checked out, writes
//!   `cart.checkout` to the outbox and stores the response that replays answer. A
//!   failure before that gives the key back (its order id stays for the retry).
//!
//! Layout: [`routes`] (HTTP), [`events`] (consumed events) and the idle worker call
//! [`carts`] and [`checkout`] (the operations), which use [`clients`] (calls to other
//! services), [`db`] (queries) and [`domain`] (rules, no I/O); [`metrics`].

pub mod carts;
pub mod checkout;
pub mod clients;
pub mod config;
pub mod db;
pub mod domain;
pub mod events;
pub mod metrics;
pub mod routes;

use std::time::Duration;

use mp_common::{Infra, Worker};
use mp_events::Service;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

pub use carts::Carts;

pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/cart");

pub use config::{Config, Settings};

pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let s = &config.settings;
    let infra = Infra::connect(Service::Cart, &config.common, &MIGRATOR, &shutdown).await?;
    let carts = Carts {
        db: infra.db.clone(),
        clients: clients::Clients::new(
            infra.tokens.clone(),
            &s.inventory_url,
            &s.vendor_url,
            &s.order_url,
            Duration::from_millis(s.call_timeout_ms),
        ),
        tax_rate_bps: s.tax_rate_bps,
        currency: s.currency,
        checkout_lease: Duration::from_secs(s.checkout_lease_secs),
        metrics: metrics::CartMetrics::new(&infra.metrics.registry)?,
        busy_until: Default::default(),
    };
    let consumer = infra.consumer().handle(events::PriceRefresh);
    let idle = {
        let carts = carts.clone();
        let idle = Duration::from_secs(s.idle_secs);
        let every = Duration::from_millis(s.idle_check_ms);
        let retention = s.checkout_key_retention_hours as i64;
        Worker::new("idle_carts", move |token| {
            idle_carts(carts.clone(), idle, every, retention, token)
        })
    };
    let state = routes::AppState {
        carts,
        auth: infra.auth.clone(),
    };
    mp_common::serve(
        infra,
        routes::router(state),
        routes::ApiDoc::openapi(),
        Some(consumer),
        vec![idle],
        listener,
        shutdown,
    )
    .await
}

/// The idle worker: abandons idle carts every `every` until shutdown, and forgets
/// Idempotency-Keys past their retention. A failed round (database down) is logged and
/// retried at the next tick.
async fn idle_carts(
    carts: Carts,
    idle: Duration,
    every: Duration,
    key_retention_hours: i64,
    token: CancellationToken,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = token.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        loop {
            match carts.abandon_idle(idle).await {
                // A full batch: there may be more.
                Ok(100..) => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "abandoning idle carts failed; retrying at the next tick");
                    break;
                }
            }
        }
        let purged = async {
            crate::db::purge_requests(&mut *carts.db.acquire().await?, key_retention_hours).await
        };
        if let Err(e) = purged.await {
            tracing::warn!(error = %e, "forgetting old Idempotency-Keys failed; retrying at the next tick");
        }
    }
}

/// The binary's entry point: the command line and the runtime around [`run`]. It lives in
/// the library so a release build instantiates the generic start-up code once, here,
/// instead of again in the binary.
pub fn main() -> std::process::ExitCode {
    mp_common::cli::main(mp_events::Service::Cart, &MIGRATOR, run)
}
