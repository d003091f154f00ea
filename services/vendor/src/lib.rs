//! The vendor service (port 5004): vendors, members, products, prices and the public
//! catalog.
//!
//! * [`routes`]: the HTTP API (vendors and members, products, the catalog).
//! * [`domain`]: what valid vendor and product data is; page cursors.
//! * [`db`]: queries on the `vendor` schema.
//! * [`cache`]: the Redis cache of single product reads and what keeps it fresh.
//! * [`events`]: stock figures consumed from the inventory service.
//!
//! Publishes `vendor.created`, `vendor.product.created` and `vendor.product.updated`
//! through the outbox; consumes `inventory.created` and `inventory.updated`.

pub mod cache;
pub mod db;
pub mod domain;
pub mod events;
pub mod routes;

use std::time::Duration;

use mp_common::{Infra, Worker};
use mp_events::Service;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/vendor");

#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// How long a cached product read may live, in seconds. Changes refresh the cache at
    /// once; the TTL only bounds staleness if a refresh was lost.
    #[arg(long, env = "PRODUCT_CACHE_TTL_SECS", default_value_t = 600)]
    pub product_cache_ttl_secs: u64,
}

pub type Config = mp_common::config::Config<Settings>;

pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let infra = Infra::connect(Service::Vendor, &config.common, &MIGRATOR, &shutdown).await?;
    let cache = cache::ProductCache::new(
        infra.redis.clone(),
        infra.redis_keys.clone(),
        Duration::from_secs(config.settings.product_cache_ttl_secs),
        &infra.metrics.registry,
    )?;
    let refresher = cache::Refresher {
        db: infra.db.clone(),
        cache: cache.clone(),
        channel: db::changes_channel(&infra.schema),
    };
    let refresher =
        Worker::infallible("cache_refresher", move |token| refresher.clone().run(token));
    let stock = events::Stock {
        db: infra.db.clone(),
        cache: cache.clone(),
    };
    let state = routes::AppState {
        db: infra.db.clone(),
        auth: infra.auth.clone(),
        cache,
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
        vec![refresher],
        listener,
        shutdown,
    )
    .await
}
