//! A product's stock: on hand, reserved, available, for its vendor's members.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use mp_common::{ApiPath, ApiResult, AuthUser, Problem};
use mp_events::catalog::StockLevel;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{AppState, stock_problem};
use crate::db::StockItem;
use crate::stock::Inventory;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/api/inventory/{product_id}", get(get_stock))
}

/// A product's stock.
#[derive(Debug, Serialize, ToSchema)]
pub struct StockResponse {
    pub product_id: Uuid,
    pub vendor_id: Uuid,
    pub sku: String,
    pub name: String,
    pub active: bool,
    /// Units in stock: the sum of the ledger.
    pub on_hand: i64,
    /// Units held by unexpired cart reservations.
    pub reserved: i64,
    /// Units free to reserve: `on_hand - reserved`, never below 0.
    pub available: i64,
    pub low_stock_threshold: i64,
    pub updated_at: DateTime<Utc>,
}

pub(super) fn stock_response(item: &StockItem, level: &StockLevel) -> StockResponse {
    StockResponse {
        product_id: item.product_id,
        vendor_id: item.vendor_id,
        sku: item.sku.clone(),
        name: item.name.clone(),
        active: item.active,
        on_hand: level.on_hand,
        reserved: level.reserved,
        available: level.available,
        low_stock_threshold: item.low_stock_threshold,
        updated_at: item.updated_at,
    }
}

/// A product's stock: on hand, reserved, available and the low-stock threshold.
#[utoipa::path(get, path = "/api/inventory/{product_id}", tag = "inventory", security(("bearer" = [])),
    params(("product_id" = Uuid, Path, description = "Product id")),
    responses(
        (status = 200, body = StockResponse),
        (status = 401, body = Problem),
        (status = 403, description = "Not a member of the product's vendor", body = Problem),
        (status = 404, body = Problem),
    ))]
pub async fn get_stock(
    State(inv): State<Inventory>,
    user: AuthUser,
    ApiPath(product_id): ApiPath<Uuid>,
) -> ApiResult<Json<StockResponse>> {
    let (item, level) = inv.stock(&user, product_id).await.map_err(stock_problem)?;
    Ok(Json(stock_response(&item, &level)))
}
