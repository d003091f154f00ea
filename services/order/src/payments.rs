//! Payments: the [`PaymentGateway`] trait, the built-in test gateway, and an adapter
//! for Stripe's PaymentIntents and refunds API.
//!
//! Every call carries an idempotency key derived from the order and the operation
//! (`order-{id}-charge`, `order-{id}-refund`), so a retried or repeated call never
//! charges twice at the provider. Transient failures (5xx, 429, timeouts, connection
//! errors) are retried with exponential backoff ([`with_retries`]); a charge still
//! failing after the retries counts as declined. Tokens and keys are [`SecretString`]s:
//! they never appear in `Debug` output, errors or logs.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use mp_events::Money;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use uuid::Uuid;

/// A charge of an order.
#[derive(Debug)]
pub struct ChargeRequest {
    pub order_id: Uuid,
    pub amount: Money,
    pub payment_token: SecretString,
    pub idempotency_key: String,
}

/// A refund of an order's successful charge.
#[derive(Debug)]
pub struct RefundRequest {
    pub order_id: Uuid,
    pub amount: Money,
    /// The provider's id of the charge.
    pub charge_id: String,
    pub idempotency_key: String,
}

/// The provider accepted the charge or refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approved {
    pub provider_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// A final no: the card was declined, the token is invalid.
    #[error("declined: {0}")]
    Declined(String),
    /// Worth another try: the provider is down, slow or overloaded.
    #[error("transient: {0}")]
    Transient(String),
}

impl PaymentError {
    pub fn is_transient(&self) -> bool {
        matches!(self, PaymentError::Transient(_))
    }
}

#[async_trait]
pub trait PaymentGateway: Send + Sync + 'static {
    /// Recorded with each payment attempt.
    fn name(&self) -> &'static str;
    async fn charge(&self, req: &ChargeRequest) -> Result<Approved, PaymentError>;
    async fn refund(&self, req: &RefundRequest) -> Result<Approved, PaymentError>;
}

pub fn charge_key(order_id: Uuid) -> String {
    format!("order-{order_id}-charge")
}

pub fn refund_key(order_id: Uuid) -> String {
    format!("order-{order_id}-refund")
}

/// How transient failures are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub min_delay: Duration,
    pub max_delay: Duration,
    pub retries: usize,
}

/// Runs `call`, retrying transient failures with exponential backoff and jitter. What
/// is still transient after the last retry is returned as it is.
pub async fn with_retries<F, Fut>(
    policy: RetryPolicy,
    what: &str,
    call: F,
) -> Result<Approved, PaymentError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Approved, PaymentError>>,
{
    call.retry(
        ExponentialBuilder::default()
            .with_min_delay(policy.min_delay)
            .with_max_delay(policy.max_delay)
            .with_max_times(policy.retries)
            .with_jitter(),
    )
    .when(PaymentError::is_transient)
    .notify(|e, after| tracing::warn!(error = %e, ?after, "{what} failed; retrying"))
    .await
}

/// The built-in gateway, like a provider's test mode: `tok_visa` is approved,
/// `tok_declined` is declined and `tok_error` always fails transiently. Any other
/// token is declined as invalid. Answers are derived from the idempotency key, so a
/// repeated call gives the same provider id.
#[derive(Debug, Default)]
pub struct TestGateway;

#[async_trait]
impl PaymentGateway for TestGateway {
    fn name(&self) -> &'static str {
        "test"
    }

    async fn charge(&self, req: &ChargeRequest) -> Result<Approved, PaymentError> {
        match req.payment_token.expose_secret() {
            "tok_visa" => Ok(Approved {
                provider_id: format!("test_ch_{}", req.order_id.simple()),
            }),
            "tok_declined" => Err(PaymentError::Declined("card_declined".into())),
            "tok_error" => Err(PaymentError::Transient(
                "test gateway: processing error".into(),
            )),
            _ => Err(PaymentError::Declined("invalid payment token".into())),
        }
    }

    async fn refund(&self, req: &RefundRequest) -> Result<Approved, PaymentError> {
        Ok(Approved {
            provider_id: format!("test_re_{}", req.order_id.simple()),
        })
    }
}

/// Stripe's PaymentIntents API (and any provider speaking its shape): a confirmed
/// PaymentIntent per charge, a refund of that intent per refund. Form-encoded, Bearer
/// secret key, `Idempotency-Key` header.
pub struct StripeGateway {
    http: reqwest::Client,
    base_url: String,
    secret_key: SecretString,
}

impl std::fmt::Debug for StripeGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeGateway")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct StripeObject {
    id: String,
    status: String,
}

#[derive(Deserialize)]
struct StripeErrorBody {
    error: StripeError,
}

#[derive(Deserialize)]
struct StripeError {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    decline_code: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

impl StripeGateway {
    pub fn new(base_url: &str, secret_key: SecretString, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .expect("an HTTP client builds");
        Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            secret_key,
        }
    }

    async fn post(
        &self,
        path: &str,
        idempotency_key: &str,
        form: &[(&str, String)],
        approved: &[&str],
    ) -> Result<Approved, PaymentError> {
        let response = self
            .http
            .post(format!("{}{path}", self.base_url))
            .bearer_auth(self.secret_key.expose_secret())
            .header("Idempotency-Key", idempotency_key)
            .form(form)
            .send()
            .await
            .map_err(|e| {
                // Never the URL with a query or anything from the request body.
                let kind = if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "connection failed"
                } else {
                    "request failed"
                };
                PaymentError::Transient(format!("payment provider {kind}"))
            })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| {
            PaymentError::Transient(format!(
                "payment provider answer unreadable{}",
                if e.is_timeout() { " (timed out)" } else { "" }
            ))
        })?;
        if status.is_success() {
            let object: StripeObject = serde_json::from_slice(&body).map_err(|_| {
                PaymentError::Transient("payment provider answer is not an object".into())
            })?;
            return if approved.contains(&object.status.as_str()) {
                Ok(Approved {
                    provider_id: object.id,
                })
            } else if object.status == "processing" || object.status == "pending" {
                Err(PaymentError::Transient(format!(
                    "payment {} is still {}",
                    object.id, object.status
                )))
            } else {
                Err(PaymentError::Declined(format!(
                    "payment {} ended {}",
                    object.id, object.status
                )))
            };
        }
        let reason = serde_json::from_slice::<StripeErrorBody>(&body)
            .ok()
            .map(|b| {
                b.error
                    .decline_code
                    .or(b.error.code)
                    .or(b.error.kind)
                    .unwrap_or_else(|| "error".into())
            })
            .unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
        if status.is_server_error()
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || status == reqwest::StatusCode::CONFLICT
            || status == reqwest::StatusCode::UNAUTHORIZED
        {
            // 409 is Stripe's "the same idempotency key is being processed"; 401 a
            // rotated key: both may pass on a later try.
            Err(PaymentError::Transient(format!(
                "payment provider answered {}: {reason}",
                status.as_u16()
            )))
        } else {
            Err(PaymentError::Declined(reason))
        }
    }
}

#[async_trait]
impl PaymentGateway for StripeGateway {
    fn name(&self) -> &'static str {
        "stripe"
    }

    async fn charge(&self, req: &ChargeRequest) -> Result<Approved, PaymentError> {
        let form = [
            ("amount", req.amount.amount.to_string()),
            ("currency", req.amount.currency.to_ascii_lowercase()),
            (
                "payment_method",
                req.payment_token.expose_secret().to_owned(),
            ),
            ("confirm", "true".to_owned()),
            ("metadata[order_id]", req.order_id.to_string()),
        ];
        self.post(
            "/v1/payment_intents",
            &req.idempotency_key,
            &form,
            &["succeeded"],
        )
        .await
    }

    async fn refund(&self, req: &RefundRequest) -> Result<Approved, PaymentError> {
        let form = [
            ("payment_intent", req.charge_id.clone()),
            ("amount", req.amount.amount.to_string()),
            ("metadata[order_id]", req.order_id.to_string()),
        ];
        self.post(
            "/v1/refunds",
            &req.idempotency_key,
            &form,
            &["succeeded", "pending"],
        )
        .await
    }
}

pub type Gateway = Arc<dyn PaymentGateway>;
