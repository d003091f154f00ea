//! The inventory API, one module per resource: a product's stock (`stock_items`), its
//! adjustments and its ledger (`movements`), and carts' reservations.
//!
//! * Stock reads, adjustments and the ledger are for the product's vendor members and
//!   admins (401 without a token, 403 for anyone else, 404 for an unknown product).
//!   Stock is not public: the public sees it through the vendor's catalog, which
//!   `inventory.created` / `inventory.updated` keep informed.
//! * Reservations are service-to-service only (a service token; user tokens get 401).
//!
//! Handlers parse the request, call the service layer ([`Inventory`]) and map its
//! typed errors. Every failure is problem+json; insufficient stock is a 409 carrying
//! `available`.

use axum::Router;
use axum::extract::FromRef;
use mp_common::{ApiError, Authenticator, Problem};
use utoipa::OpenApi;

use crate::stock::{Inventory, StockError};

pub mod adjustments;
pub mod movements;
pub mod reservations;
pub mod stock_items;

#[derive(Clone, FromRef)]
pub struct AppState {
    pub inventory: Inventory,
    pub auth: Authenticator,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(stock_items::router())
        .merge(adjustments::router())
        .merge(movements::router())
        .merge(reservations::router())
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(
    paths(
        stock_items::get_stock,
        adjustments::adjust_stock,
        movements::list_movements,
        reservations::create_reservation,
        reservations::delete_reservation,
    ),
    components(schemas(Problem, mp_common::FieldError)),
    tags(
        (name = "inventory", description = "Stock levels, adjustments and the movement ledger"),
        (name = "reservations", description = "Stock held for carts (service-to-service)"),
    )
)]
pub struct ApiDoc;

/// The problem for a refused (or failed) read or adjustment of a vendor's stock.
fn stock_problem(e: StockError) -> ApiError {
    match e {
        StockError::NotFound => Problem::not_found("Stock item").into(),
        StockError::Forbidden => {
            Problem::forbidden("Only the vendor's members and admins manage this stock.").into()
        }
        StockError::Insufficient {
            on_hand,
            available,
            removing,
        } => Problem::conflict(
            "insufficient-stock",
            format!("On hand is {on_hand}; removing {removing} would take it below zero."),
        )
        .title("Insufficient stock")
        .with("on_hand", on_hand)
        .with("available", available)
        .into(),
        StockError::Db(e) => e.into(),
        StockError::Redis(e) => e.into(),
    }
}
