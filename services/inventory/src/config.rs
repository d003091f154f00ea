//! The inventory service's own settings: how long reservations hold, how often Redis
//! is reconciled with PostgreSQL. Each has a default and an environment variable.

#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// How long a reservation holds stock unless renewed, in seconds.
    #[arg(long, env = "RESERVATION_TTL_SECS", default_value_t = 900,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub reservation_ttl_secs: u64,
    /// How often Redis is reconciled with PostgreSQL, in milliseconds (also at start).
    #[arg(long, env = "RECONCILE_INTERVAL_MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(10..))]
    pub reconcile_interval_ms: u64,
}

pub type Config = mp_common::config::Config<Settings>;
