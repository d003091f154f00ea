//! SMS: a local JSON-lines file for development, or a provider shaped like Twilio's
//! Messages API (`POST /2010-04-01/Accounts/{sid}/Messages.json`, form fields `To`,
//! `From` and `Body`, basic auth with the account SID and auth token).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use crate::config::{Settings, SmsProvider};
use crate::domain::SendError;

#[derive(Clone)]
pub enum SmsSender {
    File(FileSink),
    Twilio(Twilio),
}

impl SmsSender {
    pub fn new(s: &Settings) -> anyhow::Result<Self> {
        Ok(match s.sms_provider {
            SmsProvider::File => SmsSender::File(FileSink {
                path: s.sms_file.clone(),
                from: s.sms_from.clone(),
                lock: Arc::new(tokio::sync::Mutex::new(())),
            }),
            SmsProvider::Twilio => SmsSender::Twilio(Twilio::new(
                &s.sms_api_url,
                &s.sms_account_sid,
                s.sms_auth_token
                    .clone()
                    .context("SMS_AUTH_TOKEN is required with SMS_PROVIDER=twilio")?,
                &s.sms_from,
                Duration::from_millis(s.send_timeout_ms),
            )?),
        })
    }

    /// Sends `body` to `to`; `id` is the notification's id.
    pub async fn send(&self, id: Uuid, to: &str, body: &str) -> Result<(), SendError> {
        match self {
            SmsSender::File(sink) => sink.send(id, to, body).await,
            SmsSender::Twilio(twilio) => twilio.send(to, body).await,
        }
    }
}

/// Appends each SMS as one JSON line: `{"id", "at", "from", "to", "body"}`.
#[derive(Clone)]
pub struct FileSink {
    path: PathBuf,
    from: String,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl FileSink {
    async fn send(&self, id: Uuid, to: &str, body: &str) -> Result<(), SendError> {
        let mut line = serde_json::to_string(&serde_json::json!({
            "id": id,
            "at": Utc::now(),
            "from": self.from,
            "to": to,
            "body": body,
        }))
        .expect("a JSON object serializes");
        line.push('\n');
        let _guard = self.lock.lock().await;
        let unavailable = |e: std::io::Error| {
            SendError::Unavailable(format!("SMS file {}: {e}", self.path.display()))
        };
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir).await.map_err(unavailable)?;
        }
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .await
            .map_err(unavailable)?;
        file.write_all(line.as_bytes()).await.map_err(unavailable)?;
        file.flush().await.map_err(unavailable)
    }
}

/// A client of a Twilio-Messages-shaped REST API.
#[derive(Clone)]
pub struct Twilio {
    http: reqwest::Client,
    url: String,
    account_sid: String,
    auth_token: SecretString,
    from: String,
}

impl Twilio {
    pub fn new(
        base_url: &str,
        account_sid: &str,
        auth_token: SecretString,
        from: &str,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !account_sid.is_empty(),
            "SMS_ACCOUNT_SID is required with SMS_PROVIDER=twilio"
        );
        let http = mp_common::client::http_client_builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()?;
        Ok(Self {
            http,
            url: format!(
                "{}/2010-04-01/Accounts/{account_sid}/Messages.json",
                base_url.trim_end_matches('/')
            ),
            account_sid: account_sid.to_owned(),
            auth_token,
            from: from.to_owned(),
        })
    }

    pub async fn send(&self, to: &str, body: &str) -> Result<(), SendError> {
        let response = self
            .http
            .post(&self.url)
            .basic_auth(&self.account_sid, Some(self.auth_token.expose_secret()))
            .form(&[("To", to), ("From", self.from.as_str()), ("Body", body)])
            .send()
            .await
            .map_err(|e| SendError::Unavailable(format!("SMS provider: {}", without_url(e))))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        // Twilio's error body: {"code": 21211, "message": "...", "status": 400}.
        let detail = response
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| {
                let message = v["message"].as_str()?.to_owned();
                Some(match v["code"].as_i64() {
                    Some(code) => format!("{message} (code {code})"),
                    None => message,
                })
            })
            .unwrap_or_default();
        let reason = format!("SMS provider answered {status}: {detail}");
        Err(
            if status.is_server_error()
                || status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::UNAUTHORIZED
                || status == StatusCode::FORBIDDEN
            {
                // Down, throttled or misconfigured: nobody's message gets through, so
                // none is given up; they wait until it works again.
                SendError::Unavailable(reason)
            } else {
                SendError::Permanent(reason)
            },
        )
    }
}

/// A request error without the URL, which holds the account SID.
fn without_url(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    format!("{kind}: {}", e.without_url())
}
