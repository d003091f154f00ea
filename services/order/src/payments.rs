//! Payments: the [`PaymentGateway`] trait, the built-in test gateway, and an adapter
//! for Stripe's PaymentIntents API.
//!
//! A charge is a payment intent at the provider: created once per order (no money moves),
//! then confirmed with the customer's payment method. The intent is what makes a charge
//! happen at most once: the provider captures an intent once, however often it is
//! confirmed, so retries never charge twice. Its state ([`ChargeState`]) can be asked for
//! at any time ([`PaymentGateway::retrieve`]): an answer that was lost, a time-out or a
//! `processing` intent is resolved by asking, never taken for a "no". An intent that is
//! not captured can be cancelled, after which it never will be; one that is captured is
//! refunded.
//!
//! Every call carries an idempotency key derived from the order (`order-{id}-intent`,
//! `order-{id}-confirm-{attempt}`, `{intent}-cancel`, `order-{id}-refund`). Tokens and
//! keys are [`SecretString`]s: they never appear in `Debug` output, errors or logs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use mp_events::Money;
use mp_events::backoff::{Retryable, delay_for_attempt, policy};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use uuid::Uuid;

use crate::config::{GatewayKind, Settings};

/// A payment intent to create for an order's total.
#[derive(Debug, Clone)]
pub struct IntentRequest {
    pub order_id: Uuid,
    pub amount: Money,
}

/// A refund of an order's captured intent.
#[derive(Debug, Clone)]
pub struct RefundRequest {
    pub order_id: Uuid,
    pub amount: Money,
    /// The provider's id of the captured intent.
    pub intent_id: String,
}

/// Where a payment intent stands at the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeState {
    /// Not confirmed (or its last confirmation did not go through): nothing captured,
    /// and it can still be confirmed or cancelled.
    Open,
    /// Confirmed and being processed (a bank debit, a slow network): not known yet.
    Processing,
    /// The money is captured.
    Succeeded,
    /// The payment method was declined: nothing captured.
    Declined(String),
    /// Cancelled: nothing captured, and nothing ever will be.
    Canceled,
}

/// The provider accepted a refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refunded {
    pub provider_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// No answer worth acting on: the provider is down, slow or overloaded, or the
    /// answer was lost. What happened is not known; ask again.
    #[error("transient: {0}")]
    Transient(String),
    /// The provider refused the request itself (an invalid token, a bad request).
    #[error("refused: {0}")]
    Refused(String),
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
    /// Creates the order's payment intent, or returns the one created before with the
    /// same key. Moves no money.
    async fn create_intent(&self, req: &IntentRequest) -> Result<String, PaymentError>;
    /// Confirms the intent with the customer's payment method: the charge.
    async fn confirm(
        &self,
        intent_id: &str,
        payment_token: &SecretString,
        idempotency_key: &str,
    ) -> Result<ChargeState, PaymentError>;
    /// The intent's state now.
    async fn retrieve(&self, intent_id: &str) -> Result<ChargeState, PaymentError>;
    /// Cancels an intent that is not captured; answers the state after the call, which
    /// is `Succeeded` for one that was captured meanwhile (refund that one instead).
    async fn cancel(&self, intent_id: &str) -> Result<ChargeState, PaymentError>;
    /// Refunds a captured intent.
    async fn refund(&self, req: &RefundRequest) -> Result<Refunded, PaymentError>;
}

pub fn intent_key(order_id: Uuid) -> String {
    format!("order-{order_id}-intent")
}

/// Each confirmation attempt gets a key of its own: a provider replays the stored
/// answer of a key (a server error included), and an attempt is made only after asking
/// what the intent's state is, so a new key can never capture twice.
pub fn confirm_key(order_id: Uuid, attempt: i32) -> String {
    format!("order-{order_id}-confirm-{attempt}")
}

pub fn refund_key(order_id: Uuid) -> String {
    format!("order-{order_id}-refund")
}

/// How transient failures are retried: within one call a few quick retries, across the
/// saga's attempts with backoff up to `max_delay`.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Confirmation attempts after the first before a charge that keeps failing
    /// transiently (and, the provider says, captured nothing) is declined.
    pub retries: usize,
}

impl RetryPolicy {
    /// The wait before the saga's attempt after `attempt` (1 for the first).
    pub fn delay_after(&self, attempt: i32) -> Duration {
        delay_for_attempt(self.min_delay, self.max_delay, attempt.max(1) as u32)
    }
}

/// Runs `call`, retrying transient failures twice with short backoff: for calls that
/// only ask or that are idempotent (create, retrieve, cancel, refund). What is still
/// transient after that is returned as it is.
pub async fn quick_retries<T, F, Fut>(
    policy_: RetryPolicy,
    what: &str,
    call: F,
) -> Result<T, PaymentError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, PaymentError>>,
{
    call.retry(
        policy(
            policy_.min_delay,
            policy_.max_delay.min(Duration::from_secs(1)),
        )
        .with_max_times(2),
    )
    .when(PaymentError::is_transient)
    .notify(|e, after| tracing::warn!(error = %e, ?after, "{what} failed; retrying"))
    .await
}

/// The built-in gateway, like a provider's test mode: confirmed with `tok_visa` an
/// intent succeeds, with `tok_declined` it is declined, with `tok_error` the call fails
/// transiently and nothing is captured. Any other token is declined as invalid.
///
/// Its intents live in this process's memory (keyed by order, so a repeated create
/// finds the same one): after a restart an intent it had reads as open, which in test
/// mode moves no money either way.
#[derive(Debug, Default)]
pub struct TestGateway {
    intents: Mutex<HashMap<String, ChargeState>>,
}

impl TestGateway {
    fn state(&self, intent_id: &str) -> ChargeState {
        self.intents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(intent_id)
            .cloned()
            .unwrap_or(ChargeState::Open)
    }

    fn set(&self, intent_id: &str, state: ChargeState) {
        self.intents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(intent_id.to_owned(), state);
    }
}

#[async_trait]
impl PaymentGateway for TestGateway {
    fn name(&self) -> &'static str {
        "test"
    }

    async fn create_intent(&self, req: &IntentRequest) -> Result<String, PaymentError> {
        Ok(format!("test_pi_{}", req.order_id.simple()))
    }

    async fn confirm(
        &self,
        intent_id: &str,
        payment_token: &SecretString,
        _idempotency_key: &str,
    ) -> Result<ChargeState, PaymentError> {
        match self.state(intent_id) {
            ChargeState::Open | ChargeState::Declined(_) => {}
            other => return Ok(other),
        }
        let state = match payment_token.expose_secret() {
            "tok_visa" => ChargeState::Succeeded,
            "tok_declined" => ChargeState::Declined("card_declined".into()),
            "tok_error" => {
                return Err(PaymentError::Transient(
                    "test gateway: processing error".into(),
                ));
            }
            _ => ChargeState::Declined("invalid payment token".into()),
        };
        self.set(intent_id, state.clone());
        Ok(state)
    }

    async fn retrieve(&self, intent_id: &str) -> Result<ChargeState, PaymentError> {
        Ok(self.state(intent_id))
    }

    async fn cancel(&self, intent_id: &str) -> Result<ChargeState, PaymentError> {
        let state = match self.state(intent_id) {
            ChargeState::Succeeded => ChargeState::Succeeded,
            ChargeState::Processing => ChargeState::Processing,
            _ => ChargeState::Canceled,
        };
        self.set(intent_id, state.clone());
        Ok(state)
    }

    async fn refund(&self, req: &RefundRequest) -> Result<Refunded, PaymentError> {
        Ok(Refunded {
            provider_id: format!("test_re_{}", req.order_id.simple()),
        })
    }
}

/// Stripe's PaymentIntents API (and any provider speaking its shape): an intent per
/// order, confirmed with the payment method, retrieved to resolve an unknown outcome,
/// cancelled or refunded. Form-encoded, Bearer secret key, `Idempotency-Key` header.
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
    #[serde(default)]
    status: String,
    #[serde(default)]
    last_payment_error: Option<StripeError>,
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
    /// The intent as it is after a failed confirmation or cancellation.
    #[serde(default)]
    payment_intent: Option<Box<StripeObject>>,
}

impl StripeError {
    fn reason(&self) -> String {
        self.decline_code
            .clone()
            .or_else(|| self.code.clone())
            .or_else(|| self.kind.clone())
            .unwrap_or_else(|| "error".into())
    }
}

/// What an answer said: an object, or an error with the HTTP status.
enum Answer {
    Object(StripeObject),
    Error(reqwest::StatusCode, Option<StripeError>),
}

fn state_of(object: &StripeObject) -> ChargeState {
    match object.status.as_str() {
        "succeeded" => ChargeState::Succeeded,
        "processing" | "requires_capture" => ChargeState::Processing,
        "canceled" => ChargeState::Canceled,
        // Off-session, nobody can authenticate: as good as declined.
        "requires_action" => ChargeState::Declined("authentication_required".into()),
        _ => match &object.last_payment_error {
            Some(e) => ChargeState::Declined(e.reason()),
            None => ChargeState::Open,
        },
    }
}

fn transient_status(status: reqwest::StatusCode) -> bool {
    // 409: the same idempotency key is being processed; 401: a rotated key. Both may
    // pass on a later try.
    status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::CONFLICT
        || status == reqwest::StatusCode::UNAUTHORIZED
}

impl StripeGateway {
    pub fn new(base_url: &str, secret_key: SecretString, timeout: Duration) -> Self {
        let http = mp_common::client::http_client_builder()
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

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        idempotency_key: Option<&str>,
        form: &[(&str, String)],
    ) -> Result<Answer, PaymentError> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base_url))
            .bearer_auth(self.secret_key.expose_secret());
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        if !form.is_empty() {
            request = request.form(form);
        }
        let response = request.send().await.map_err(|e| {
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
            return serde_json::from_slice(&body)
                .map(Answer::Object)
                .map_err(|_| {
                    PaymentError::Transient("payment provider answer is not an object".into())
                });
        }
        let error = serde_json::from_slice::<StripeErrorBody>(&body)
            .ok()
            .map(|b| b.error);
        if transient_status(status) {
            let reason = error
                .as_ref()
                .map_or_else(|| "error".into(), StripeError::reason);
            return Err(PaymentError::Transient(format!(
                "payment provider answered {}: {reason}",
                status.as_u16()
            )));
        }
        Ok(Answer::Error(status, error))
    }

    fn refused(status: reqwest::StatusCode, error: Option<StripeError>) -> PaymentError {
        PaymentError::Refused(
            error.map_or_else(|| format!("HTTP {}", status.as_u16()), |e| e.reason()),
        )
    }
}

#[async_trait]
impl PaymentGateway for StripeGateway {
    fn name(&self) -> &'static str {
        "stripe"
    }

    async fn create_intent(&self, req: &IntentRequest) -> Result<String, PaymentError> {
        let form = [
            ("amount", req.amount.amount().to_string()),
            (
                "currency",
                req.amount.currency().code().to_ascii_lowercase(),
            ),
            ("metadata[order_id]", req.order_id.to_string()),
        ];
        let key = intent_key(req.order_id);
        match self
            .call(
                reqwest::Method::POST,
                "/v1/payment_intents",
                Some(&key),
                &form,
            )
            .await?
        {
            Answer::Object(o) => Ok(o.id),
            Answer::Error(status, e) => Err(Self::refused(status, e)),
        }
    }

    async fn confirm(
        &self,
        intent_id: &str,
        payment_token: &SecretString,
        idempotency_key: &str,
    ) -> Result<ChargeState, PaymentError> {
        let form = [("payment_method", payment_token.expose_secret().to_owned())];
        let path = format!("/v1/payment_intents/{intent_id}/confirm");
        match self
            .call(reqwest::Method::POST, &path, Some(idempotency_key), &form)
            .await?
        {
            Answer::Object(o) => Ok(state_of(&o)),
            // A card error carries the intent as it stands: declined.
            Answer::Error(_, Some(e)) if e.kind.as_deref() == Some("card_error") => {
                Ok(ChargeState::Declined(e.reason()))
            }
            // Confirming an intent that is no longer open (captured by an earlier
            // attempt, cancelled): its state says what it is.
            Answer::Error(_, Some(e))
                if e.code.as_deref() == Some("payment_intent_unexpected_state") =>
            {
                match e.payment_intent {
                    Some(intent) => Ok(state_of(&intent)),
                    None => Err(PaymentError::Transient(
                        "intent in an unexpected state".into(),
                    )),
                }
            }
            Answer::Error(status, e) => Err(Self::refused(status, e)),
        }
    }

    async fn retrieve(&self, intent_id: &str) -> Result<ChargeState, PaymentError> {
        let path = format!("/v1/payment_intents/{intent_id}");
        match self.call(reqwest::Method::GET, &path, None, &[]).await? {
            Answer::Object(o) => Ok(state_of(&o)),
            // Asking must never turn into a "no": an intent we hold the id of exists.
            Answer::Error(status, e) => Err(PaymentError::Transient(format!(
                "could not read the payment intent: {}",
                Self::refused(status, e)
            ))),
        }
    }

    async fn cancel(&self, intent_id: &str) -> Result<ChargeState, PaymentError> {
        let path = format!("/v1/payment_intents/{intent_id}/cancel");
        let key = format!("{intent_id}-cancel");
        match self
            .call(reqwest::Method::POST, &path, Some(&key), &[])
            .await?
        {
            Answer::Object(o) => Ok(state_of(&o)),
            Answer::Error(_, Some(e)) if e.payment_intent.is_some() => {
                Ok(state_of(e.payment_intent.as_deref().expect("checked")))
            }
            // Whatever else: ask.
            Answer::Error(..) => self.retrieve(intent_id).await,
        }
    }

    async fn refund(&self, req: &RefundRequest) -> Result<Refunded, PaymentError> {
        let form = [
            ("payment_intent", req.intent_id.clone()),
            ("amount", req.amount.amount().to_string()),
            ("metadata[order_id]", req.order_id.to_string()),
        ];
        let key = refund_key(req.order_id);
        match self
            .call(reqwest::Method::POST, "/v1/refunds", Some(&key), &form)
            .await?
        {
            Answer::Object(o) if matches!(o.status.as_str(), "succeeded" | "pending") => {
                Ok(Refunded { provider_id: o.id })
            }
            Answer::Object(o) => Err(PaymentError::Refused(format!(
                "refund {} ended {}",
                o.id, o.status
            ))),
            Answer::Error(status, e) => Err(Self::refused(status, e)),
        }
    }
}

pub type Gateway = Arc<dyn PaymentGateway>;

/// The gateway the settings name (`PAYMENT_GATEWAY`).
pub fn from_settings(s: &Settings) -> anyhow::Result<Gateway> {
    Ok(match s.payment_gateway {
        GatewayKind::Test => Arc::new(TestGateway::default()),
        GatewayKind::Stripe => {
            let key = s
                .stripe_secret_key
                .clone()
                .ok_or_else(|| anyhow::anyhow!("PAYMENT_GATEWAY=stripe needs STRIPE_SECRET_KEY"))?;
            Arc::new(StripeGateway::new(
                &s.stripe_api_url,
                key,
                Duration::from_millis(s.payment_timeout_ms),
            ))
        }
    })
}
