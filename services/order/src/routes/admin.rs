//! Operators' view of sagas waiting on a step longer than its soft timeout.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use mp_common::{ApiQuery, ApiResult, AuthUser, Page, PageQuery, PageRequest, Problem, Validation};
use mp_events::Money;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::Step;
use crate::orders::Orders;

/// An order waiting on a saga step past its soft timeout.
#[derive(Debug, Serialize, ToSchema)]
pub struct StuckOrder {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub status: mp_events::catalog::OrderStatus,
    pub waiting_on: Step,
    pub waiting_since: DateTime<Utc>,
    pub total: Money,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StuckOrderPage {
    pub items: Vec<StuckOrder>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    #[schema(
        required = true,
        min_length = 1,
        max_length = 512,
        pattern = "^[A-Za-z0-9_-]+$"
    )]
    pub next_cursor: Option<String>,
}

/// Orders waiting on a saga step longer than its soft timeout, newest first (admins).
#[utoipa::path(get, path = "/api/admin/orders/stuck", tag = "admin", security(("bearer" = [])),
    params(PageQuery),
    responses(
        (status = 200, body = StuckOrderPage),
        (status = 400, description = "Malformed query", body = Problem),
        (status = 401, body = Problem),
        (status = 403, description = "Not an admin", body = Problem),
        (status = 422, description = "Invalid limit or cursor", body = Problem),
    ))]
pub async fn list_stuck_orders(
    State(orders): State<Orders>,
    user: AuthUser,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<StuckOrder>>> {
    user.require_admin()?;
    let mut v = Validation::new();
    let page = PageRequest::<Uuid>::parse(&page, &mut v);
    v.finish()?;
    let rows = orders.stuck(page.after, page.fetch()).await?;
    Ok(Json(Page::from_rows(
        rows,
        page.limit,
        |o| o.id,
        |o| StuckOrder {
            id: o.id,
            customer_id: o.customer_id,
            total: o.total(),
            status: o.status,
            // The query keeps only orders with a step and its start.
            waiting_on: o.saga_step.unwrap_or(Step::Charge),
            waiting_since: o.step_since.unwrap_or(o.updated_at),
        },
    )))
}
