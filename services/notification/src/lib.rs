//! The notification service (port 5002): email and SMS deliveries, templates and the
//! contact read model.
//!
//! * Contacts ([`events`], `notification.contact`): names, emails and phones of
//!   customers and vendors, copied from their events, so sending never calls another
//!   service.
//! * Messages ([`notify`]): `order.updated` (confirmed, payment failed, rejected,
//!   cancelled) and `order.shipped` give the customer an email and an SMS;
//!   `inventory.low_stock` gives the vendor an email. Each is rendered from
//!   [`templates`] and stored once per (event, channel, recipient) in the consumer's
//!   transaction.
//! * Delivery ([`sender`]): one supervised worker per channel claims due messages and
//!   sends them through [`delivery`] (SMTP with lettre; SMS to a local file or a
//!   Twilio-shaped API), outside any transaction, retrying with backoff.
//! * API ([`routes`]): `GET /api/notifications`. Metrics ([`metrics`]): sent, failed
//!   and retried per channel and template, and the age of the oldest pending message.
//!
//! Layout: [`routes`] and [`events`] (the ways in), [`notify`] (the service layer),
//! [`db`] (queries), [`domain`] (rules), [`templates`], [`delivery`], [`sender`].

pub mod config;
pub mod db;
pub mod delivery;
pub mod domain;
pub mod events;
pub mod metrics;
pub mod notify;
pub mod routes;
pub mod sender;
pub mod templates;

use std::sync::Arc;
use std::time::Duration;

use mp_common::{Infra, Worker};
use mp_events::Service;
use mp_events::catalog::{CustomerCreated, CustomerUpdated, VendorCreated, VendorUpdated};
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

pub use config::Settings;

use crate::domain::{Channel, RetryPolicy};

pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/notification");

pub type Config = mp_common::config::Config<Settings>;

pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let s = &config.settings;
    // Configuration mistakes stop the start-up, before any connection is made.
    let mailer = delivery::Mailer::new(s)?;
    let sms = delivery::SmsSender::new(s)?;
    let templates = templates::Templates::new()?;

    let infra = Infra::connect(Service::Notification, &config.common, &MIGRATOR, &shutdown).await?;
    let metrics = metrics::NotificationMetrics::new(&infra.metrics.registry)?;
    let senders = [
        ("sender-email", Channel::Email, Arc::new(Notify::new())),
        ("sender-sms", Channel::Sms, Arc::new(Notify::new())),
    ];
    let notifier = notify::Notifier {
        db: infra.db.clone(),
        templates,
        metrics: metrics.clone(),
        wake: senders.iter().map(|(_, _, w)| w.clone()).collect(),
    };
    let consumer = infra
        .consumer()
        .handle(events::ContactHandler::<CustomerCreated>::default())
        .handle(events::ContactHandler::<CustomerUpdated>::default())
        .handle(events::ContactHandler::<VendorCreated>::default())
        .handle(events::ContactHandler::<VendorUpdated>::default())
        .handle(events::OrderUpdatedNotice(notifier.clone()))
        .handle(events::OrderShippedNotice(notifier.clone()))
        .handle(events::LowStockNotice(notifier));

    let policy = RetryPolicy {
        min: Duration::from_millis(s.send_retry_min_ms),
        max: Duration::from_millis(s.send_retry_max_ms.max(s.send_retry_min_ms)),
        max_attempts: s.send_max_attempts,
    };
    let workers = senders
        .into_iter()
        .map(|(name, channel, wake)| {
            let sender = sender::Sender {
                channel,
                db: infra.db.clone(),
                mailer: mailer.clone(),
                sms: sms.clone(),
                metrics: metrics.clone(),
                policy,
                wake,
                batch: s.send_batch.max(1),
                lease: Duration::from_millis(s.send_lease_ms),
                poll: Duration::from_millis(s.send_poll_ms),
            };
            Worker::infallible(name, move |token| sender.clone().run(token))
        })
        .collect();

    let state = routes::AppState {
        notifications: notify::Notifications {
            db: infra.db.clone(),
        },
        auth: infra.auth.clone(),
    };
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
    mp_common::cli::main(mp_events::Service::Notification, &MIGRATOR, run)
}
