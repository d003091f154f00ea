//! The cart service's own settings: where inventory, vendor and order are and how it
//! waits on them. Each has a default and an environment variable.

use mp_events::Currency;

#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Base URL of the inventory service (reservations).
    #[arg(long, env = "INVENTORY_URL", default_value = "http://127.0.0.1:5003")]
    pub inventory_url: String,
    /// Base URL of the vendor service (the catalog).
    #[arg(long, env = "VENDOR_URL", default_value = "http://127.0.0.1:5004")]
    pub vendor_url: String,
    /// Base URL of the order service (payment-method hand-off at checkout).
    #[arg(long, env = "ORDER_URL", default_value = "http://127.0.0.1:5001")]
    pub order_url: String,
    /// Timeout of each call to another service, in milliseconds.
    #[arg(long, env = "CART_CALL_TIMEOUT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub call_timeout_ms: u64,
    /// Tax rate in basis points of the subtotal (2000 = 20 %), rounded half up.
    #[arg(long, env = "CART_TAX_RATE_BPS", default_value_t = 2000,
          value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub tax_rate_bps: u32,
    /// Currency of new carts (ISO 4217); a cart takes only products priced in it.
    #[arg(long, env = "CART_CURRENCY", default_value = "EUR")]
    pub currency: Currency,
    /// A cart without changes for this long is abandoned and its stock released.
    #[arg(long, env = "CART_IDLE_SECS", default_value_t = 900,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_secs: u64,
    /// How often the idle worker looks for idle carts, in milliseconds.
    #[arg(long, env = "CART_IDLE_CHECK_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(10..))]
    pub idle_check_ms: u64,
    /// How long a checkout holds its Idempotency-Key before a retry may take over.
    #[arg(long, env = "CHECKOUT_LEASE_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub checkout_lease_secs: u64,
    /// How long Idempotency-Keys of checkouts are remembered, in hours.
    #[arg(long, env = "CHECKOUT_KEY_RETENTION_HOURS", default_value_t = 24,
          value_parser = clap::value_parser!(u64).range(1..=8760))]
    pub checkout_key_retention_hours: u64,
}

pub type Config = mp_common::config::Config<Settings>;
