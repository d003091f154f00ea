//! A local stand-in for Stripe's PaymentIntents API, with state: intents are created,
//! confirmed, retrieved, cancelled and refunded as the real API does, and it checks
//! Bearer authentication and `Idempotency-Key` headers (replaying the stored answer of a
//! key). The payment method decides what a confirmation does:
//!
//! | token | confirmation |
//! |---|---|
//! | `pm_card_visa` | succeeds |
//! | `pm_card_declined` | 402 `card_error`, `insufficient_funds` |
//! | `pm_server_error` | 500, nothing changes |
//! | `pm_late` | succeeds, but answers only after [`LATE`] (past the client's time-out) |
//! | `pm_hang` | succeeds, and never answers |
//! | `pm_held` | waits until [`FakeStripe::release`], then succeeds |
//! | `pm_processing` | `processing`; succeeds after it has been read twice |

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde_json::{Value, json};
use tokio::sync::Notify;

pub const KEY: &str = "sk_test_local";
/// How late `pm_late` answers; the tests' client gives up after 300 ms.
pub const LATE: Duration = Duration::from_millis(1_500);

#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub authorization: String,
    pub idempotency_key: String,
    pub form: HashMap<String, String>,
}

#[derive(Debug, Clone, Default)]
pub struct Intent {
    pub order_id: String,
    pub amount: i64,
    pub status: String,
    pub last_payment_error: Option<Value>,
    /// How often the money was captured (never more than once, or the fake is broken).
    pub captured: u32,
    pub refunded: u32,
    /// Reads left before a processing intent succeeds.
    processing_reads: u32,
}

#[derive(Default)]
struct Inner {
    intents: HashMap<String, Intent>,
    /// Stored answers by idempotency key.
    replies: HashMap<String, (StatusCode, Value)>,
    seen: Vec<Seen>,
}

#[derive(Clone)]
pub struct FakeStripe {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    released: Arc<Notify>,
}

fn intent_json(id: &str, i: &Intent) -> Value {
    json!({"id": id, "object": "payment_intent", "amount": i.amount, "status": i.status,
           "metadata": {"order_id": i.order_id}, "last_payment_error": i.last_payment_error})
}

fn error(status: StatusCode, body: Value) -> (StatusCode, Value) {
    (status, json!({ "error": body }))
}

impl FakeStripe {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = Self {
            url: format!("http://{}", listener.local_addr().unwrap()),
            inner: Arc::default(),
            released: Arc::default(),
        };
        let app = fake.router();
        tokio::spawn(async move { axum::serve(listener, app).await });
        fake
    }

    /// Over HTTPS with `leaf` (at `https://localhost:<port>`).
    pub async fn start_https(leaf: &mp_test_support::tls::Leaf) -> Self {
        let mut fake = Self {
            url: String::new(),
            inner: Arc::default(),
            released: Arc::default(),
        };
        let addr = mp_test_support::tls::serve_https(fake.router(), leaf).await;
        fake.url = format!("https://localhost:{}", addr.port());
        fake
    }

    fn router(&self) -> Router {
        Router::new()
            .route("/v1/payment_intents", post(create))
            .route("/v1/payment_intents/{id}", get(retrieve))
            .route("/v1/payment_intents/{id}/confirm", post(confirm))
            .route("/v1/payment_intents/{id}/cancel", post(cancel))
            .route("/v1/refunds", post(refund))
            .with_state(self.clone())
    }

    /// Lets every `pm_held` confirmation waiting now go on.
    pub fn release(&self) {
        self.released.notify_waiters();
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.inner.lock().unwrap().seen.clone()
    }

    /// The order's intent as the provider holds it.
    pub fn intent_of(&self, order_id: uuid::Uuid) -> Option<Intent> {
        let order_id = order_id.to_string();
        self.inner
            .lock()
            .unwrap()
            .intents
            .values()
            .find(|i| i.order_id == order_id)
            .cloned()
    }

    /// How many confirmations of the order's intent the provider has seen.
    pub fn confirmations(&self, order_id: uuid::Uuid) -> usize {
        let Some(id) = self.intent_id_of(order_id) else {
            return 0;
        };
        self.seen()
            .iter()
            .filter(|s| s.path == format!("/v1/payment_intents/{id}/confirm"))
            .count()
    }

    fn intent_id_of(&self, order_id: uuid::Uuid) -> Option<String> {
        let order_id = order_id.to_string();
        self.inner
            .lock()
            .unwrap()
            .intents
            .iter()
            .find(|(_, i)| i.order_id == order_id)
            .map(|(id, _)| id.clone())
    }

    /// Records the request and checks its key; `Err` is the answer to give instead.
    fn admit(
        &self,
        method: &str,
        path: &str,
        headers: &HeaderMap,
        form: &HashMap<String, String>,
    ) -> Result<Option<String>, (StatusCode, Value)> {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let seen = Seen {
            method: method.to_owned(),
            path: path.to_owned(),
            authorization: header("authorization"),
            idempotency_key: header("idempotency-key"),
            form: form.clone(),
        };
        self.inner.lock().unwrap().seen.push(seen.clone());
        if seen.authorization != format!("Bearer {KEY}") {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                json!({"type": "invalid_request_error", "message": "Invalid API Key"}),
            ));
        }
        if method == "GET" {
            return Ok(None);
        }
        if seen.idempotency_key.is_empty() {
            return Err(error(
                StatusCode::BAD_REQUEST,
                json!({"type": "invalid_request_error", "message": "Idempotency-Key needed"}),
            ));
        }
        if let Some(stored) = self
            .inner
            .lock()
            .unwrap()
            .replies
            .get(&seen.idempotency_key)
        {
            return Err(stored.clone());
        }
        Ok(Some(seen.idempotency_key))
    }

    fn store(&self, key: Option<String>, reply: (StatusCode, Value)) -> Response {
        if let Some(key) = key {
            self.inner
                .lock()
                .unwrap()
                .replies
                .insert(key, reply.clone());
        }
        (reply.0, Json(reply.1)).into_response()
    }
}

async fn create(
    State(f): State<FakeStripe>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let key = match f.admit("POST", "/v1/payment_intents", &headers, &form) {
        Ok(key) => key,
        Err((status, body)) => return (status, Json(body)).into_response(),
    };
    let id = format!("pi_{}", uuid::Uuid::new_v4().simple());
    let intent = Intent {
        order_id: form.get("metadata[order_id]").cloned().unwrap_or_default(),
        amount: form.get("amount").and_then(|a| a.parse().ok()).unwrap_or(0),
        status: "requires_payment_method".into(),
        ..Default::default()
    };
    let body = intent_json(&id, &intent);
    f.inner.lock().unwrap().intents.insert(id, intent);
    f.store(key, (StatusCode::OK, body))
}

async fn retrieve(
    State(f): State<FakeStripe>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/v1/payment_intents/{id}");
    if let Err((status, body)) = f.admit("GET", &path, &headers, &HashMap::new()) {
        return (status, Json(body)).into_response();
    }
    let mut inner = f.inner.lock().unwrap();
    let Some(intent) = inner.intents.get_mut(&id) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"type": "invalid_request_error", "code": "resource_missing"}})),
        )
            .into_response();
    };
    if intent.status == "processing" {
        intent.processing_reads = intent.processing_reads.saturating_sub(1);
        if intent.processing_reads == 0 {
            intent.status = "succeeded".into();
            intent.captured += 1;
        }
    }
    Json(intent_json(&id, intent)).into_response()
}

async fn confirm(
    State(f): State<FakeStripe>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let path = format!("/v1/payment_intents/{id}/confirm");
    let key = match f.admit("POST", &path, &headers, &form) {
        Ok(key) => key,
        Err((status, body)) => return (status, Json(body)).into_response(),
    };
    let method = form.get("payment_method").cloned().unwrap_or_default();
    if method == "pm_held" {
        f.released.notified().await;
    }
    let reply = {
        let mut inner = f.inner.lock().unwrap();
        let Some(intent) = inner.intents.get_mut(&id) else {
            return (
                StatusCode::NOT_FOUND,
                Json(json!({"error": {"code": "resource_missing"}})),
            )
                .into_response();
        };
        if !matches!(
            intent.status.as_str(),
            "requires_payment_method" | "requires_confirmation"
        ) {
            error(
                StatusCode::BAD_REQUEST,
                json!({"type": "invalid_request_error", "code": "payment_intent_unexpected_state",
                       "payment_intent": intent_json(&id, intent)}),
            )
        } else {
            match method.as_str() {
                "pm_card_visa" | "pm_late" | "pm_hang" | "pm_held" => {
                    intent.status = "succeeded".into();
                    intent.last_payment_error = None;
                    intent.captured += 1;
                    (StatusCode::OK, intent_json(&id, intent))
                }
                "pm_processing" => {
                    intent.status = "processing".into();
                    intent.processing_reads = 2;
                    (StatusCode::OK, intent_json(&id, intent))
                }
                "pm_card_declined" => {
                    let e = json!({"type": "card_error", "code": "card_declined",
                                   "decline_code": "insufficient_funds",
                                   "message": "Your card has insufficient funds."});
                    intent.status = "requires_payment_method".into();
                    intent.last_payment_error = Some(e.clone());
                    let mut body = e;
                    body["payment_intent"] = intent_json(&id, intent);
                    error(StatusCode::PAYMENT_REQUIRED, body)
                }
                "pm_server_error" => {
                    return (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        Json(json!({"error": {"type": "api_error"}})),
                    )
                        .into_response();
                }
                _ => error(
                    StatusCode::BAD_REQUEST,
                    json!({"type": "invalid_request_error", "code": "resource_missing"}),
                ),
            }
        }
    };
    match method.as_str() {
        "pm_late" => tokio::time::sleep(LATE).await,
        "pm_hang" => std::future::pending::<()>().await,
        _ => {}
    }
    f.store(key, reply)
}

async fn cancel(
    State(f): State<FakeStripe>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/v1/payment_intents/{id}/cancel");
    let key = match f.admit("POST", &path, &headers, &HashMap::new()) {
        Ok(key) => key,
        Err((status, body)) => return (status, Json(body)).into_response(),
    };
    let reply = {
        let mut inner = f.inner.lock().unwrap();
        let Some(intent) = inner.intents.get_mut(&id) else {
            return (
                StatusCode::NOT_FOUND,
                Json(json!({"error": {"code": "resource_missing"}})),
            )
                .into_response();
        };
        if matches!(intent.status.as_str(), "succeeded" | "processing") {
            error(
                StatusCode::BAD_REQUEST,
                json!({"type": "invalid_request_error", "code": "payment_intent_unexpected_state",
                       "payment_intent": intent_json(&id, intent)}),
            )
        } else {
            intent.status = "canceled".into();
            (StatusCode::OK, intent_json(&id, intent))
        }
    };
    f.store(key, reply)
}

async fn refund(
    State(f): State<FakeStripe>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let key = match f.admit("POST", "/v1/refunds", &headers, &form) {
        Ok(key) => key,
        Err((status, body)) => return (status, Json(body)).into_response(),
    };
    let reply = {
        let mut inner = f.inner.lock().unwrap();
        let id = form.get("payment_intent").cloned().unwrap_or_default();
        match inner.intents.get_mut(&id) {
            Some(intent) if intent.status == "succeeded" => {
                intent.refunded += 1;
                (
                    StatusCode::OK,
                    json!({"id": format!("re_{}", uuid::Uuid::new_v4().simple()),
                           "object": "refund", "status": "succeeded"}),
                )
            }
            _ => error(
                StatusCode::BAD_REQUEST,
                json!({"type": "invalid_request_error", "code": "charge_not_captured"}),
            ),
        }
    };
    f.store(key, reply)
}
