//! The customer service's own settings: the administrator `make up` creates, refresh
//! token lifetime, the login throttle and the proxies whose forwarded address it
//! believes. Each has a default and an environment variable; the password is a
//! `SecretString`, never printed.

use secrecy::SecretString;

#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Email of the administrator ensured at start-up (with ADMIN_PASSWORD).
    #[arg(long, env = "ADMIN_EMAIL")]
    pub admin_email: Option<String>,
    /// Never in `Debug` output or a log line.
    #[arg(long, env = "ADMIN_PASSWORD", hide_env_values = true,
          value_parser = |s: &str| Ok::<_, String>(SecretString::from(s.to_owned())))]
    pub admin_password: Option<SecretString>,
    /// Lifetime of a login session (refresh token), in seconds.
    #[arg(long, env = "REFRESH_TOKEN_TTL_SECS", default_value_t = 14 * 24 * 3600)]
    pub refresh_token_ttl_secs: u64,
    /// Failed logins per email before that email is refused for a while.
    #[arg(long, env = "LOGIN_MAX_FAILURES", default_value_t = 5)]
    pub login_max_failures: u32,
    /// How long an email's failed logins are remembered, in seconds. Short on purpose:
    /// anyone can fail logins for someone else's email.
    #[arg(long, env = "LOGIN_FAILURE_WINDOW_SECS", default_value_t = 60)]
    pub login_failure_window_secs: u64,
    /// Failed logins per client address (whatever the emails) before that address is
    /// refused for a while.
    #[arg(long, env = "LOGIN_MAX_FAILURES_PER_ADDRESS", default_value_t = 30)]
    pub login_max_failures_per_address: u32,
    /// How long a client address's failed logins are remembered, in seconds.
    #[arg(long, env = "LOGIN_ADDRESS_WINDOW_SECS", default_value_t = 900)]
    pub login_address_window_secs: u64,
    /// The proxies in front of the service (Kong), comma-separated addresses or CIDR
    /// ranges: only from them is `X-Forwarded-For` believed, and the client is the
    /// right-most hop none of them made. Empty: the header is ignored.
    #[arg(long, env = "TRUSTED_PROXIES", default_value = "",
          value_parser = |s: &str| crate::domain::parse_proxies(s))]
    pub trusted_proxies: crate::domain::TrustedProxies,
}

pub type Config = mp_common::config::Config<Settings>;
