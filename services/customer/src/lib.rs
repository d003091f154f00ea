//! The customer service (port 5000): accounts, credentials, profiles, roles and login
//! sessions. It issues the access tokens every other service verifies.
//!
//! Layout: [`routes`] (HTTP) and [`events`] (consumed events) call the services:
//! [`accounts`] (registration, hashing, profiles, the administrator; every transaction
//! and outbox row), [`sessions`] (refresh tokens and revocations in Redis) and
//! [`throttle`] (the login throttle). Below them [`db`] (queries) and [`domain`] (the
//! rules for emails, names, phones and passwords, no I/O).

pub mod accounts;
pub mod config;
pub mod db;
pub mod domain;
pub mod events;
pub mod routes;
pub mod sessions;
pub mod throttle;

use std::time::Duration;

use mp_common::Infra;
use mp_events::Service;
use secrecy::ExposeSecret;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/customer");

pub use config::{Config, Settings};

pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let infra = Infra::connect(Service::Customer, &config.common, &MIGRATOR, &shutdown).await?;
    anyhow::ensure!(
        infra.tokens.signs_users(),
        "JWT_SIGNING_KEY is not set: the customer service signs the access tokens (`customer keys --out DIR` makes a key set), or DEV_MODE=true for local development"
    );
    let s = &config.settings;
    let accounts = accounts::Accounts {
        db: infra.db.clone(),
    };
    if let (Some(email), Some(password)) = (&s.admin_email, &s.admin_password) {
        accounts
            .ensure_admin(email, password.expose_secret())
            .await?;
    }
    let state = routes::AppState {
        accounts,
        auth: infra.auth.clone(),
        tokens: infra.tokens.clone(),
        sessions: sessions::Sessions::new(
            infra.redis.clone(),
            infra.redis_keys.clone(),
            Duration::from_secs(s.refresh_token_ttl_secs),
            infra.auth.clone(),
        ),
        throttle: throttle::LoginThrottle {
            redis: infra.redis.clone(),
            keys: infra.redis_keys.clone(),
            max_failures: s.login_max_failures,
            window_secs: s.login_failure_window_secs,
            max_failures_per_address: s.login_max_failures_per_address,
            address_window_secs: s.login_address_window_secs,
            trusted_proxies: std::sync::Arc::new(s.trusted_proxies.clone()),
        },
    };
    let consumer = infra
        .consumer()
        .handle(events::GrantVendorMembership)
        .handle(events::GrantAddedMembership);
    mp_common::serve(
        infra,
        routes::router(state),
        routes::ApiDoc::openapi(),
        Some(consumer),
        Vec::new(),
        listener,
        shutdown,
    )
    .await
}

/// The binary's entry point: the command line and the runtime around [`run`]. It lives in
/// the library so a release build instantiates the generic start-up code once, here,
/// instead of again in the binary.
pub fn main() -> std::process::ExitCode {
    mp_common::cli::main(mp_events::Service::Customer, &MIGRATOR, run)
}
