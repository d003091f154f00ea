//! Reservations: the stock a cart holds of a product, set and released by the cart
//! and order services.

use axum::extract::State;
use axum::http::{HeaderName, StatusCode, header};
use axum::routing::{delete, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use mp_common::{ApiError, ApiJson, ApiPath, ApiResult, Problem, ServiceCaller};
use mp_events::Service;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use crate::domain;
use crate::stock::{Inventory, ReserveError, Reserved};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/reservations", post(create_reservation))
        .route(
            "/api/reservations/{cart_id}/{product_id}",
            delete(delete_reservation),
        )
}

/// Sets what a cart holds of a product.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReservationRequest {
    pub cart_id: Uuid,
    pub product_id: Uuid,
    /// The cart's whole quantity of the product (not an increment), 1 to 1000000; 0
    /// (ending it) only with `replaces`.
    #[schema(example = 2, minimum = 0, maximum = 1_000_000)]
    #[serde(deserialize_with = "mp_common::serde_ext::integer")]
    pub quantity: i64,
    /// Apply only while the cart's reservation is the one of this generation (an undo
    /// of that change); otherwise 409 `reservation-superseded` and nothing changes.
    #[serde(default)]
    pub replaces: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReservationResponse {
    pub cart_id: Uuid,
    pub product_id: Uuid,
    pub quantity: i64,
    /// When the reservation lapses unless renewed; its stock then returns by itself.
    pub expires_at: DateTime<Utc>,
    /// Units of the product still free for other carts.
    pub available: i64,
    /// This change of the reservation; grows with every change of any reservation.
    /// The cart puts it in `cart.item.added` and `cart.item.removed`.
    pub generation: i64,
}

/// The services that may hold and release stock for carts.
const RESERVING: &[Service] = &[Service::Cart, Service::Order];

/// Set a cart's reservation of a product to `quantity` (service-to-service). Setting
/// it again changes only the difference; the same quantity twice just renews it.
#[utoipa::path(post, path = "/api/reservations", tag = "reservations", security(("bearer" = [])),
    request_body = ReservationRequest,
    responses(
        (status = 201, description = "Reserved until `expires_at`; `Location` is the reservation, which DELETE releases", body = ReservationResponse),
        (status = 401, description = "No service token", body = Problem),
        (status = 403, description = "A service other than cart or order", body = Problem),
        (status = 404, description = "No stock item for the product", body = Problem),
        (status = 409, description = "Not enough stock, the product is inactive, or a later change of this reservation was made at the same time; `available` is the most this cart could hold", body = Problem),
        (status = 422, description = "Invalid fields", body = Problem),
    ))]
pub async fn create_reservation(
    State(inv): State<Inventory>,
    caller: ServiceCaller,
    ApiJson(body): ApiJson<ReservationRequest>,
) -> ApiResult<(
    StatusCode,
    [(HeaderName, String); 1],
    Json<ReservationResponse>,
)> {
    caller.allow(RESERVING)?;
    let quantity = match (body.quantity, body.replaces) {
        (0, Some(_)) => 0,
        (q, _) => domain::check_quantity(q).map_err(|m| Problem::invalid_field("quantity", m))?,
    };
    let (cart_id, product_id) = (body.cart_id, body.product_id);
    let Reserved {
        expires_at,
        available,
        generation,
    } = inv
        .set_reservation(product_id, cart_id, quantity, body.replaces)
        .await
        .map_err(|e| reserve_problem(e, quantity))?;
    tracing::debug!(%cart_id, %product_id, quantity, generation, caller = %caller.service, "reserved");
    Ok((
        StatusCode::CREATED,
        [(
            header::LOCATION,
            format!("/api/reservations/{cart_id}/{product_id}"),
        )],
        Json(ReservationResponse {
            cart_id,
            product_id,
            quantity,
            expires_at,
            available,
            generation,
        }),
    ))
}

/// The problem for a reservation of `quantity` that was refused (or failed).
fn reserve_problem(e: ReserveError, quantity: i64) -> ApiError {
    match e {
        ReserveError::NotFound => Problem::not_found("Stock item").into(),
        ReserveError::Insufficient { available } => Problem::conflict(
            "insufficient-stock",
            format!("Only {available} available; {quantity} requested."),
        )
        .title("Insufficient stock")
        .with("available", available)
        .with("requested", quantity)
        .into(),
        ReserveError::Inactive => Problem::conflict(
            "product-inactive",
            "The product is not for sale at the moment.",
        )
        .title("Product inactive")
        .with("available", 0)
        .with("requested", quantity)
        .into(),
        ReserveError::Superseded { available } => Problem::conflict(
            "reservation-superseded",
            "A later change of this cart's reservation was made at the same time; it stands.",
        )
        .title("Reservation changed concurrently")
        .with("available", available)
        .with("requested", quantity)
        .into(),
        ReserveError::Copy(e) => write_failed(e),
        e @ ReserveError::CopyTask(_) => anyhow::anyhow!("{e}").into(),
        ReserveError::Backend(e) => e.into(),
    }
}

/// A durable copy that hit its statement timeout means PostgreSQL is too slow right
/// now: 503, like a pool timeout, not a 500.
fn write_failed(e: sqlx::Error) -> ApiError {
    match &e {
        sqlx::Error::Database(d) if d.code().as_deref() == Some("57014") => {
            ApiError::Unavailable(format!("PostgreSQL: {e}"))
        }
        _ => e.into(),
    }
}

/// Release a cart's reservation of a product (service-to-service). Idempotent.
#[utoipa::path(delete, path = "/api/reservations/{cart_id}/{product_id}", tag = "reservations", security(("bearer" = [])),
    params(("cart_id" = Uuid, Path, description = "Cart id"), ("product_id" = Uuid, Path, description = "Product id")),
    responses(
        (status = 204, description = "Released (or there was nothing to release)"),
        (status = 401, description = "No service token", body = Problem),
        (status = 403, description = "A service other than cart or order", body = Problem),
    ))]
pub async fn delete_reservation(
    State(inv): State<Inventory>,
    caller: ServiceCaller,
    ApiPath((cart_id, product_id)): ApiPath<(Uuid, Uuid)>,
) -> ApiResult<StatusCode> {
    caller.allow(RESERVING)?;
    inv.end_reservation(cart_id, product_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_may_be_written_with_a_zero_fraction() {
        let id = Uuid::nil();
        let parse = |q: &str| {
            let raw = format!(r#"{{"cart_id": "{id}", "product_id": "{id}", "quantity": {q}}}"#);
            serde_json::from_str::<ReservationRequest>(&raw).map(|b| b.quantity)
        };
        assert_eq!(parse("3").unwrap(), 3);
        assert_eq!(parse("3.0").unwrap(), 3);
        assert_eq!(parse("-4e2").unwrap(), -400);
        for bad in ["3.5", "\"3\"", "1e300", "18446744073709551615"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
