//! The Stripe-shaped adapter against a local server that checks what a PaymentIntents
//! API would: form fields, Bearer authentication and the `Idempotency-Key` header.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Form, Json, Router};
use mp_events::Money;
use order::payments::{
    self, ChargeRequest, PaymentError, PaymentGateway, RefundRequest, RetryPolicy, StripeGateway,
};
use order::{GatewayKind, Settings};
use secrecy::SecretString;
use serde_json::json;
use uuid::Uuid;

use crate::harness::{Harness, settings};

const KEY: &str = "sk_test_local";

#[derive(Debug, Clone)]
struct Seen {
    path: String,
    authorization: String,
    idempotency_key: String,
    form: HashMap<String, String>,
}

#[derive(Clone, Default)]
struct Provider {
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn answer(
    provider: &Provider,
    path: &str,
    headers: &HeaderMap,
    form: HashMap<String, String>,
) -> axum::response::Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let seen = Seen {
        path: path.to_owned(),
        authorization: header("authorization"),
        idempotency_key: header("idempotency-key"),
        form: form.clone(),
    };
    provider.seen.lock().unwrap().push(seen.clone());
    if seen.authorization != format!("Bearer {KEY}") {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"type": "invalid_request_error", "message": "Invalid API Key"}})),
        )
            .into_response();
    }
    if seen.idempotency_key.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"type": "invalid_request_error"}})),
        )
            .into_response();
    }
    if path == "/v1/refunds" {
        return Json(json!({"id": "re_1", "object": "refund", "status": "succeeded"}))
            .into_response();
    }
    match form.get("payment_method").map(String::as_str) {
        Some("pm_card_visa") => Json(json!({
            "id": format!("pi_{}", seen.idempotency_key),
            "object": "payment_intent",
            "status": "succeeded"
        }))
        .into_response(),
        Some("pm_card_declined") => (
            StatusCode::PAYMENT_REQUIRED,
            Json(
                json!({"error": {"type": "card_error", "code": "card_declined",
                                  "decline_code": "insufficient_funds",
                                  "message": "Your card has insufficient funds."}}),
            ),
        )
            .into_response(),
        Some("pm_server_error") => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": {"type": "api_error"}})),
        )
            .into_response(),
        Some("pm_slow") => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Json(json!({"id": "pi_slow", "status": "succeeded"})).into_response()
        }
        _ => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"type": "invalid_request_error", "code": "resource_missing"}})),
        )
            .into_response(),
    }
}

/// Starts the fake provider; returns its base URL and what it saw.
async fn provider() -> (String, Provider) {
    let provider = Provider::default();
    let app = Router::new()
        .route(
            "/v1/payment_intents",
            post(
                |State(p): State<Provider>,
                 headers: HeaderMap,
                 Form(form): Form<HashMap<String, String>>| async move {
                    answer(&p, "/v1/payment_intents", &headers, form).await
                },
            ),
        )
        .route(
            "/v1/refunds",
            post(
                |State(p): State<Provider>,
                 headers: HeaderMap,
                 Form(form): Form<HashMap<String, String>>| async move {
                    answer(&p, "/v1/refunds", &headers, form).await
                },
            ),
        )
        .with_state(provider.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, provider)
}

fn gateway(url: &str, key: &str) -> StripeGateway {
    StripeGateway::new(
        url,
        SecretString::from(key.to_owned()),
        Duration::from_millis(300),
    )
}

fn charge(token: &str) -> ChargeRequest {
    let order_id = Uuid::now_v7();
    ChargeRequest {
        order_id,
        amount: Money::new(2399, "EUR"),
        payment_token: SecretString::from(token.to_owned()),
        idempotency_key: payments::charge_key(order_id),
    }
}

#[tokio::test]
async fn an_approved_charge_sends_a_confirmed_payment_intent_with_auth_and_idempotency_key() {
    let (url, provider) = provider().await;
    let gw = gateway(&url, KEY);
    let req = charge("pm_card_visa");
    let approved = gw.charge(&req).await.unwrap();
    assert_eq!(
        approved.provider_id,
        format!("pi_order-{}-charge", req.order_id)
    );

    let seen = provider.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.path, "/v1/payment_intents");
    assert_eq!(seen.authorization, format!("Bearer {KEY}"));
    assert_eq!(
        seen.idempotency_key,
        format!("order-{}-charge", req.order_id)
    );
    assert_eq!(seen.form["amount"], "2399");
    assert_eq!(seen.form["currency"], "eur");
    assert_eq!(seen.form["payment_method"], "pm_card_visa");
    assert_eq!(seen.form["confirm"], "true");

    let refund = RefundRequest {
        order_id: req.order_id,
        amount: Money::new(2399, "EUR"),
        charge_id: approved.provider_id.clone(),
        idempotency_key: payments::refund_key(req.order_id),
    };
    assert_eq!(gw.refund(&refund).await.unwrap().provider_id, "re_1");
    let seen = provider.seen.lock().unwrap()[1].clone();
    assert_eq!(seen.path, "/v1/refunds");
    assert_eq!(seen.form["payment_intent"], approved.provider_id);
    assert_eq!(
        seen.idempotency_key,
        format!("order-{}-refund", req.order_id)
    );
}

#[tokio::test]
async fn card_errors_are_declines_and_server_errors_and_timeouts_are_transient() {
    let (url, _provider) = provider().await;
    let gw = gateway(&url, KEY);
    assert_eq!(
        gw.charge(&charge("pm_card_declined")).await,
        Err(PaymentError::Declined("insufficient_funds".into()))
    );
    assert_eq!(
        gw.charge(&charge("pm_unknown")).await,
        Err(PaymentError::Declined("resource_missing".into()))
    );
    let server = gw.charge(&charge("pm_server_error")).await.unwrap_err();
    assert!(server.is_transient(), "{server:?}");
    let slow = gw.charge(&charge("pm_slow")).await.unwrap_err();
    assert_eq!(
        slow,
        PaymentError::Transient("payment provider timed out".into())
    );
    let wrong_key = gateway(&url, "sk_test_wrong")
        .charge(&charge("pm_card_visa"))
        .await
        .unwrap_err();
    assert!(wrong_key.is_transient(), "{wrong_key:?}");
}

#[tokio::test]
async fn a_transient_failure_is_retried_with_the_same_idempotency_key_then_given_up() {
    let (url, provider) = provider().await;
    let gw = gateway(&url, KEY);
    let req = charge("pm_server_error");
    let policy = RetryPolicy {
        min_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        retries: 3,
    };
    let outcome = payments::with_retries(policy, "charge", || gw.charge(&req)).await;
    assert!(outcome.unwrap_err().is_transient());
    let seen = provider.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4, "the first try and three retries");
    assert!(
        seen.iter()
            .all(|s| s.idempotency_key == req.idempotency_key)
    );
}

#[tokio::test]
async fn the_secret_key_and_the_token_never_show_in_debug_output() {
    let gw = gateway("http://127.0.0.1:9", KEY);
    let req = charge("pm_card_visa");
    let text = format!("{gw:?} {req:?}");
    assert!(
        !text.contains(KEY) && !text.contains("pm_card_visa"),
        "{text}"
    );
}

#[tokio::test]
async fn configured_for_stripe_the_service_charges_through_the_provider() {
    let (url, provider) = provider().await;
    let s = Settings {
        payment_gateway: GatewayKind::Stripe,
        stripe_api_url: url,
        stripe_secret_key: Some(SecretString::from(KEY.to_owned())),
        ..settings()
    };
    let h = Harness::start_with(s, false).await;
    let paid = h
        .checkout(&[(Uuid::now_v7(), Uuid::now_v7(), 1)], "pm_card_visa")
        .await;
    let declined = h
        .checkout(&[(Uuid::now_v7(), Uuid::now_v7(), 1)], "pm_card_declined")
        .await;
    h.wait_status(&paid, "paid").await;
    let order = h.wait_status(&declined, "payment_failed").await;
    assert!(
        order["failure_reason"]
            .as_str()
            .unwrap()
            .contains("insufficient_funds"),
        "{order}"
    );
    let provider_id: String = sqlx::query_scalar(
        "select provider_id from payments where order_id = $1 and status = 'succeeded'",
    )
    .bind(paid.order_id)
    .fetch_one(&h.db)
    .await
    .unwrap();
    assert_eq!(provider_id, format!("pi_order-{}-charge", paid.order_id));
    assert_eq!(provider.seen.lock().unwrap().len(), 2);
}
