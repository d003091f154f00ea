//! Adjustments: a vendor's change of on-hand stock, with a reason, recorded in the
//! ledger.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use mp_common::{ApiJson, ApiPath, ApiResult, AuthUser, Problem, Validation};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
use utoipa::openapi::{KnownFormat, Object, Schema};
use uuid::Uuid;

use super::movements::MovementResponse;
use super::stock_items::{StockResponse, stock_response};
use super::{AppState, stock_problem};
use crate::domain;
use crate::stock::Inventory;

pub(super) fn router() -> Router<AppState> {
    Router::new().route(
        "/api/inventory/{product_id}/adjustments",
        post(adjust_stock),
    )
}

/// A change of on-hand stock.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustmentRequest {
    /// Units added (positive) or removed (negative): -1000000000 to 1000000000, not zero.
    #[schema(schema_with = delta_schema)]
    #[serde(deserialize_with = "mp_common::serde_ext::integer")]
    pub delta: i64,
    /// Why: 1 to 200 characters (Unicode scalar values), no control characters, no
    /// whitespace at either end.
    #[schema(schema_with = reason_schema)]
    pub reason: String,
}

/// An adjustment's `delta`: a non-zero integer of at most [`domain::MAX_DELTA`] either way.
fn delta_schema() -> Schema {
    let range = |min: i64, max: i64| {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(min))
            .maximum(Some(max))
            .build()
    };
    OneOfBuilder::new()
        .item(range(-domain::MAX_DELTA, -1))
        .item(range(1, domain::MAX_DELTA))
        .description(Some(
            "Units added (positive) or removed (negative): -1000000000 to 1000000000, not zero.",
        ))
        .examples([serde_json::json!(-2)])
        .build()
        .into()
}

/// An adjustment's `reason`, as [`domain::parse_reason`] accepts it.
fn reason_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(domain::MAX_REASON_CHARS))
        .pattern(Some(mp_common::text::line_pattern()))
        .description(Some(
            "Why: 1 to 200 characters, no control characters, no whitespace at either end.",
        ))
        .examples(["two units damaged in the warehouse"])
        .build()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AdjustmentResponse {
    pub movement: MovementResponse,
    pub stock: StockResponse,
}

/// Change on-hand stock, with a reason; recorded in the ledger.
#[utoipa::path(post, path = "/api/inventory/{product_id}/adjustments", tag = "inventory", security(("bearer" = [])),
    params(("product_id" = Uuid, Path, description = "Product id")),
    request_body = AdjustmentRequest,
    responses(
        (status = 201, description = "Adjusted. No `Location`: a movement has no address of its own; it is read in the ledger (`/movements`)", body = AdjustmentResponse),
        (status = 401, body = Problem),
        (status = 403, description = "Not a member of the product's vendor", body = Problem),
        (status = 404, body = Problem),
        (status = 409, description = "On hand would fall below zero; carries `on_hand` and `available`", body = Problem),
        (status = 422, description = "Invalid fields, listed one by one", body = Problem),
    ))]
pub async fn adjust_stock(
    State(inv): State<Inventory>,
    user: AuthUser,
    ApiPath(product_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<AdjustmentRequest>,
) -> ApiResult<(StatusCode, Json<AdjustmentResponse>)> {
    let mut v = Validation::new();
    let delta = v.field("delta", domain::check_delta(body.delta));
    let reason = v.field("reason", domain::parse_reason(&body.reason));
    let (delta, reason) = v.finish_with((delta, reason))?;

    let (item, movement, level) = inv
        .adjust(&user, product_id, delta, &reason)
        .await
        .map_err(stock_problem)?;
    Ok((
        StatusCode::CREATED,
        Json(AdjustmentResponse {
            movement: movement.into(),
            stock: stock_response(&item, &level),
        }),
    ))
}
