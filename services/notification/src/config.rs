//! The notification service's own settings: where email and SMS go, and how the sender
//! retries. Every one has a default that works with `make up` and can be set by an
//! environment variable; credentials are [`SecretString`]s, never printed.

use std::path::PathBuf;

use secrecy::SecretString;

/// How SMS leave the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SmsProvider {
    /// Append each message as a JSON line to `SMS_FILE` (the local sink of `make up`).
    File,
    /// POST to a Twilio-Messages-shaped REST API at `SMS_API_URL`.
    Twilio,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SmtpTls {
    /// Plain text (a local mail catcher).
    None,
    /// STARTTLS after connecting (port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// SMTP server host.
    #[arg(long, env = "SMTP_HOST", default_value = "127.0.0.1")]
    pub smtp_host: String,
    /// SMTP server port (MailDev listens on 1025).
    #[arg(long, env = "SMTP_PORT", default_value_t = 1025)]
    pub smtp_port: u16,
    #[arg(long, env = "SMTP_TLS", value_enum, default_value_t = SmtpTls::None)]
    pub smtp_tls: SmtpTls,
    /// SMTP user name; no authentication when absent.
    #[arg(long, env = "SMTP_USERNAME")]
    pub smtp_username: Option<String>,
    #[arg(long, env = "SMTP_PASSWORD", hide_env_values = true)]
    pub smtp_password: Option<SecretString>,
    /// Sender of every email; its domain also names the Message-IDs.
    #[arg(
        long,
        env = "MAIL_FROM",
        default_value = "Marketplace <no-reply@marketplace.local>"
    )]
    pub mail_from: String,

    #[arg(long, env = "SMS_PROVIDER", value_enum, default_value_t = SmsProvider::File)]
    pub sms_provider: SmsProvider,
    /// The JSON-lines file the `file` provider appends to.
    #[arg(long, env = "SMS_FILE", default_value = ".local/sms.log")]
    pub sms_file: PathBuf,
    /// Base URL of the Twilio-shaped API.
    #[arg(long, env = "SMS_API_URL", default_value = "https://api.twilio.com")]
    pub sms_api_url: String,
    /// Account SID: the user name of basic auth and part of the path.
    #[arg(long, env = "SMS_ACCOUNT_SID", default_value = "")]
    pub sms_account_sid: String,
    /// Auth token: the password of basic auth.
    #[arg(long, env = "SMS_AUTH_TOKEN", hide_env_values = true)]
    pub sms_auth_token: Option<SecretString>,
    /// The sending number (E.164).
    #[arg(long, env = "SMS_FROM", default_value = "+15005550006")]
    pub sms_from: String,

    /// Longest an SMTP or SMS call may take, in milliseconds.
    #[arg(long, env = "SEND_TIMEOUT_MS", default_value_t = 10_000)]
    pub send_timeout_ms: u64,
    /// Attempts before a message the provider keeps refusing is marked failed.
    #[arg(long, env = "SEND_MAX_ATTEMPTS", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub send_max_attempts: u32,
    /// First retry delay, in milliseconds; doubles with each attempt.
    #[arg(long, env = "SEND_RETRY_MIN_MS", default_value_t = 1_000)]
    pub send_retry_min_ms: u64,
    /// Longest retry delay, in milliseconds.
    #[arg(long, env = "SEND_RETRY_MAX_MS", default_value_t = 300_000)]
    pub send_retry_max_ms: u64,
    /// How long a sender holds a claimed message before another may take it, in ms.
    #[arg(long, env = "SEND_LEASE_MS", default_value_t = 60_000)]
    pub send_lease_ms: u64,
    /// How often the sender looks for due messages when nothing wakes it, in ms.
    #[arg(long, env = "SEND_POLL_MS", default_value_t = 1_000)]
    pub send_poll_ms: u64,
    /// Messages claimed (and sent concurrently) at once.
    #[arg(long, env = "SEND_BATCH", default_value_t = 32)]
    pub send_batch: u32,
}

impl Settings {
    /// The defaults, overridden by the environment.
    pub fn from_env() -> Self {
        mp_common::config::from_env()
    }
}
