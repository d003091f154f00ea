//! The ledger: a product's stock movements, newest first, a page at a time.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use mp_common::{
    ApiPath, ApiQuery, ApiResult, AuthUser, Page, PageQuery, PageRequest, Problem, Validation,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{AppState, stock_problem};
use crate::db;
use crate::domain::MovementKind;
use crate::stock::Inventory;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/api/inventory/{product_id}/movements", get(list_movements))
}

/// One ledger movement.
#[derive(Debug, Serialize, ToSchema)]
pub struct MovementResponse {
    pub id: Uuid,
    pub product_id: Uuid,
    pub kind: MovementKind,
    pub delta: i64,
    pub reason: String,
    /// The order id for order movements.
    pub reference: Option<String>,
    /// Who made an adjustment.
    pub actor_id: Option<Uuid>,
    pub on_hand_after: i64,
    pub created_at: DateTime<Utc>,
}

impl From<db::Movement> for MovementResponse {
    fn from(m: db::Movement) -> Self {
        Self {
            id: m.id,
            product_id: m.product_id,
            kind: m.kind,
            delta: m.delta,
            reason: m.reason,
            reference: m.reference,
            actor_id: m.actor_id,
            on_hand_after: m.on_hand_after,
            created_at: m.created_at,
        }
    }
}

/// A page of the ledger, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct MovementPage {
    pub items: Vec<MovementResponse>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// The ledger's paging: the shared cursor, with a page of up to 200 movements.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MovementsQuery {
    /// How many movements, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page (opaque: only a value the API returned).
    #[param(min_length = 1, max_length = 512, pattern = "^[A-Za-z0-9_-]+$")]
    pub cursor: Option<String>,
}

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 200;

/// The product's stock ledger, newest first.
#[utoipa::path(get, path = "/api/inventory/{product_id}/movements", tag = "inventory", security(("bearer" = [])),
    params(("product_id" = Uuid, Path, description = "Product id"), MovementsQuery),
    responses(
        (status = 200, body = MovementPage),
        (status = 401, body = Problem),
        (status = 403, description = "Not a member of the product's vendor", body = Problem),
        (status = 404, body = Problem),
        (status = 422, description = "Invalid limit or cursor", body = Problem),
    ))]
pub async fn list_movements(
    State(inv): State<Inventory>,
    user: AuthUser,
    ApiPath(product_id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<MovementsQuery>,
) -> ApiResult<Json<MovementPage>> {
    let mut v = Validation::new();
    let page = PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    };
    // The cursor is the `seq` of the last movement of the previous page.
    let page = PageRequest::<i64>::parse_with(&page, DEFAULT_PAGE, MAX_PAGE, &mut v);
    v.finish()?;
    let rows = inv
        .movements(&user, product_id, page.after, page.fetch())
        .await
        .map_err(stock_problem)?;
    let page = Page::from_rows(rows, page.limit, |m| m.seq, MovementResponse::from);
    Ok(Json(MovementPage {
        items: page.items,
        next_cursor: page.next_cursor,
    }))
}
