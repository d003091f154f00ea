//! The order service's own settings: the payment gateway and how the saga driver
//! works, each with a default that works with `make up` and an environment variable;
//! the provider's key is a [`SecretString`], never printed.

use secrecy::SecretString;

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
