//! Email over SMTP with lettre: HTML with a plain-text alternative, and a `Message-ID`
//! made from the notification id, so a resend after a crash is recognisably the same
//! message.

use std::time::Duration;

use anyhow::Context;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;
use uuid::Uuid;

use crate::config::{Settings, SmtpTls};
use crate::domain::SendError;

#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// The right-hand side of Message-IDs: the sender's domain.
    domain: String,
    timeout: Duration,
}

/// The Message-ID of notification `id`, e.g. `<0193...@marketplace.local>`.
pub fn message_id(id: Uuid, domain: &str) -> String {
    format!("<{id}@{domain}>")
}

impl Mailer {
    pub fn new(s: &Settings) -> anyhow::Result<Self> {
        let from: Mailbox = s.mail_from.parse().context("MAIL_FROM is not a mailbox")?;
        let domain = from.email.domain().to_owned();
        let timeout = Duration::from_millis(s.send_timeout_ms);
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.smtp_host)
            .port(s.smtp_port)
            .timeout(Some(timeout));
        match s.smtp_tls {
            SmtpTls::None => {}
            SmtpTls::Starttls => {
                builder = builder.tls(Tls::Required(TlsParameters::new(s.smtp_host.clone())?));
            }
            SmtpTls::Tls => {
                builder = builder.tls(Tls::Wrapper(TlsParameters::new(s.smtp_host.clone())?));
            }
        }
        if let Some(user) = &s.smtp_username {
            let password = s
                .smtp_password
                .as_ref()
                .map(|p| p.expose_secret().to_owned())
                .unwrap_or_default();
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        Ok(Self {
            transport: builder.build(),
            from,
            domain,
            timeout,
        })
    }

    /// Sends one email; `id` is the notification's id.
    pub async fn send(
        &self,
        id: Uuid,
        to: &str,
        subject: &str,
        text: &str,
        html: Option<&str>,
    ) -> Result<(), SendError> {
        let to: Mailbox = to
            .parse()
            .map_err(|e| SendError::Permanent(format!("invalid recipient address: {e}")))?;
        let builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .message_id(Some(message_id(id, &self.domain)));
        let message = match html {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(
                text.to_owned(),
                html.to_owned(),
            )),
            None => builder.body(text.to_owned()),
        }
        .map_err(|e| SendError::Permanent(format!("cannot build the message: {e}")))?;
        match tokio::time::timeout(self.timeout, self.transport.send(message)).await {
            Err(_) => Err(SendError::Unavailable(format!(
                "SMTP server did not answer within {:?}",
                self.timeout
            ))),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(classify(&e)),
        }
    }
}

fn classify(e: &lettre::transport::smtp::Error) -> SendError {
    let reason = format!("SMTP: {e}");
    let code = e.status().map(|c| c.to_string());
    if code.as_deref() == Some("421") {
        // "Service not available": the server, not this message.
        SendError::Unavailable(reason)
    } else if e.is_permanent() {
        SendError::Permanent(reason)
    } else if e.is_transient() {
        SendError::Transient(reason)
    } else {
        SendError::Unavailable(reason)
    }
}
