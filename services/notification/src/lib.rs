//! The notification service (port 5002): email and SMS deliveries, templates and the contact read model.
//!
//! Its domain arrives in a later issue; until then it runs the common parts (health,
//! metrics, API docs, outbox relay) on its own schema.

use mp_common::CommonConfig;
use mp_events::Service;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub static MIGRATOR: Migrator = Migrator::DEFAULT;

pub type Config = CommonConfig;

pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    mp_common::runtime::serve_without_domain(
        Service::Notification,
        &config,
        &MIGRATOR,
        listener,
        shutdown,
    )
    .await
}
