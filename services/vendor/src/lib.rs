//! The vendor service (port 5004): vendors, members, products, prices and the public
//! catalog.
//!
//! * [`routes`]: the HTTP API (vendors and members, products, the catalog); handlers
//!   parse and call the [`catalog`] service, which holds the rules and every
//!   transaction and outbox row.
//! * [`responses`]: a product as the API serves it and the caches keep it.
//! * [`domain`]: what valid vendor and product data is.
//! * [`db`]: queries on the `vendor` schema.
//! * [`cache`]: the Redis cache of single product reads and what keeps it fresh.
//! * [`local_cache`]: the in-process cache in front of it, invalidated on every replica before
//!   a write is answered.
//! * [`events`]: stock figures consumed from the inventory service.
//!
//! Publishes `vendor.created`, `vendor.product.created` and `vendor.product.updated`
//! through the outbox; consumes `inventory.created` and `inventory.updated`.

pub mod cache;
pub mod catalog;
pub mod config;
pub mod db;
pub mod domain;
pub mod events;
pub mod local_cache;
pub mod responses;
pub mod routes;

use std::time::Duration;

use mp_common::{Infra, Worker};
use mp_events::Service;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/vendor");

pub use config::{Config, Settings};

pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let infra = Infra::connect(Service::Vendor, &config.common, &MIGRATOR, &shutdown).await?;
    let mut cache = cache::ProductCache::new(
        infra.redis.clone(),
        infra.redis_keys.clone(),
        Duration::from_secs(config.settings.product_cache_ttl_secs),
        &infra.metrics.registry,
    )?;
    let mut workers = Vec::new();
    if config.settings.product_local_cache_mb > 0 {
        let local = local_cache::LocalCache::new(
            redis::Client::open(config.common.redis_url.as_str())?,
            infra.redis.clone(),
            &infra.redis_keys,
            config.settings.product_local_cache_mb << 20,
            Duration::from_millis(config.settings.product_local_cache_lease_ms.max(10)),
            &infra.metrics.registry,
        )?;
        cache = cache.with_local(local.clone());
        workers.push(Worker::infallible("product_changes", move |token| {
            local.clone().run(token)
        }));
    }
    let refresher = cache::Refresher {
        db: infra.db.clone(),
        cache: cache.clone(),
        channel: db::changes_channel(&infra.schema),
    };
    workers.push(Worker::infallible("cache_refresher", move |token| {
        refresher.clone().run(token)
    }));
    let stock = events::Stock {
        db: infra.db.clone(),
        cache: cache.clone(),
    };
    let state = routes::AppState {
        catalog: catalog::Catalog {
            db: infra.db.clone(),
            cache: std::sync::Arc::new(cache),
        },
        auth: infra.auth.clone(),
    };
    let consumer = infra
        .consumer()
        .handle(events::StockCreated(stock.clone()))
        .handle(events::StockUpdated(stock));
    mp_common::serve(
        infra,
        routes::router(state),
        routes::ApiDoc::openapi(),
        Some(consumer),
        workers,
        listener,
        shutdown,
    )
    .await
}

/// The binary's entry point: the command line and the runtime around [`run`]. It lives in
/// the library so a release build instantiates the generic start-up code once, here,
/// instead of again in the binary.
pub fn main() -> std::process::ExitCode {
    mp_common::cli::main(mp_events::Service::Vendor, &MIGRATOR, run)
}
