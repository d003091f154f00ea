//! The vendor service's own settings: how long product reads are cached and the
//! in-process cache in front of Redis. Each has a default and an environment variable.

#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// How long a cached product read may live, in seconds. Changes refresh the cache at
    /// once; the TTL only bounds staleness if a refresh was lost.
    #[arg(long, env = "PRODUCT_CACHE_TTL_SECS", default_value_t = 600)]
    pub product_cache_ttl_secs: u64,

    /// Memory for the in-process cache of product reads, in MiB (0 turns it off).
    #[arg(long, env = "PRODUCT_LOCAL_CACHE_MB", default_value_t = 64)]
    pub product_local_cache_mb: u64,

    /// How long a replica may serve from its in-process cache after its last heartbeat
    /// through Redis, in milliseconds; also the longest a write waits for a replica
    /// that does not acknowledge it.
    #[arg(long, env = "PRODUCT_LOCAL_CACHE_LEASE_MS", default_value_t = 1000)]
    pub product_local_cache_lease_ms: u64,
}

pub type Config = mp_common::config::Config<Settings>;
