//! The order API: orders for customers, vendor members and admins ([`orders`]), the
//! admin view of stuck sagas ([`admin`]) and the cart's payment-method hand-off
//! ([`internal`]).
//!
//! Error policy: every failure is problem+json (through [`mp_common::ApiError`]). Checks
//! run in this order: authentication (401), the body and query field by field (400 for
//! malformed JSON, 422 listing invalid fields), the order exists and the caller may see
//! it (404 otherwise, so ids of others' orders reveal nothing), the caller may act on it
//! (403), then the status machine (409 naming the current status and the allowed next
//! ones).

pub mod admin;
pub mod internal;
pub mod orders;

use axum::Router;
use axum::extract::FromRef;
use axum::routing::{get, post, put};
use mp_common::{Authenticator, Problem};
use utoipa::OpenApi;

use crate::orders::Orders;

#[derive(Clone, FromRef)]
pub struct AppState {
    pub orders: Orders,
    pub auth: Authenticator,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/orders", get(orders::list_orders))
        .route("/api/orders/{id}", get(orders::get_order))
        .route("/api/orders/{id}/cancel", post(orders::cancel_order))
        .route("/api/orders/{id}/ship", post(orders::ship_order))
        .route("/api/orders/{id}/deliver", post(orders::deliver_order))
        .route("/api/admin/orders/stuck", get(admin::list_stuck_orders))
        .route(
            "/api/internal/orders/{id}/payment-method",
            put(internal::put_payment_method),
        )
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(
    paths(
        orders::list_orders,
        orders::get_order,
        orders::cancel_order,
        orders::ship_order,
        orders::deliver_order,
        admin::list_stuck_orders,
        internal::put_payment_method,
    ),
    components(schemas(Problem, mp_common::FieldError, mp_events::Money)),
    tags(
        (name = "orders", description = "Orders, their status history, shipping and delivery"),
        (name = "admin", description = "Operator views"),
        (name = "internal", description = "Service-to-service (cart only)"),
    )
)]
pub struct ApiDoc;
