//! The cart's hand-off of a payment token, before it commits `cart.checkout`: the
//! token reaches the order service only over this authenticated call, never in an
//! event. Answers 204 when stored, and again for the same token; 409 for another
//! token; 403 for any caller but the cart service.

use axum::extract::State;
use axum::http::StatusCode;
use mp_common::{ApiError, ApiJson, ApiPath, ApiResult, Problem, ServiceCaller, Validation};
use mp_events::Service;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain;
use crate::orders::{Orders, PaymentMethodError};

/// The payment method for an order the cart is about to check out.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentMethodRequest {
    pub customer_id: Uuid,
    pub cart_id: Uuid,
    /// The provider's token for the card (`tok_visa` with the test gateway): 1 to 255
    /// visible ASCII characters, no spaces.
    #[schema(
        value_type = String,
        min_length = 1,
        max_length = 255,
        pattern = "^[\\u0021-\\u007e]+$",
        example = "tok_visa"
    )]
    pub payment_token: SecretString,
}

/// Store the payment token for an order (cart service only).
#[utoipa::path(put, path = "/api/internal/orders/{id}/payment-method", tag = "internal",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The order id the cart chose")),
    request_body = PaymentMethodRequest,
    responses(
        (status = 204, description = "Stored (or the same token was stored before)"),
        (status = 400, description = "Malformed JSON", body = Problem),
        (status = 401, description = "No service token", body = Problem),
        (status = 403, description = "A service other than cart", body = Problem),
        (status = 409, description = "Another payment method is stored for the order", body = Problem),
        (status = 422, description = "Invalid fields", body = Problem),
        (status = 503, description = "A new order while the saga is at its limit (`checkout-busy`, with Retry-After)", body = Problem),
    ))]
pub async fn put_payment_method(
    State(orders): State<Orders>,
    caller: ServiceCaller,
    ApiPath(order_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<PaymentMethodRequest>,
) -> ApiResult<StatusCode> {
    caller.allow(&[Service::Cart])?;
    let token = body.payment_token.expose_secret();
    let mut v = Validation::new();
    v.field("payment_token", domain::check_payment_token(token));
    v.finish()?;
    orders
        .put_payment_method(order_id, body.customer_id, body.cart_id, token)
        .await
        .map_err(|e| match e {
            PaymentMethodError::Conflict => conflict().into(),
            PaymentMethodError::Busy => busy().into(),
            PaymentMethodError::Db(e) => ApiError::from(e),
        })?;
    Ok(StatusCode::NO_CONTENT)
}

fn busy() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "Checkout is busy: too many orders are being processed. Retry in a moment.",
    )
    .kind("checkout-busy")
    .title("Checkout busy")
    .header(axum::http::header::RETRY_AFTER, "1")
}

fn conflict() -> Problem {
    Problem::conflict(
        "payment-method-exists",
        "Another payment method is already stored for this order.",
    )
    .title("Payment method exists")
}
