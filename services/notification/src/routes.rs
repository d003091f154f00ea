//! The notification API: `GET /api/notifications`.
//!
//! A customer sees the notifications sent to them, a vendor member those sent to its
//! vendors, an admin all of them (401 without a token). Filters `order_id` and
//! `channel` are checked field by field (422); the list is newest first with the shared
//! cursor paging.

use axum::extract::{FromRef, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use mp_common::{
    ApiQuery, ApiResult, AuthUser, Authenticator, Page, PageQuery, PageRequest, Problem, Validation,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

use crate::db::{self, Filter};
use crate::domain::{Channel, Status};
use crate::notify::Notifications;

#[derive(Clone, FromRef)]
pub struct AppState {
    pub notifications: Notifications,
    pub auth: Authenticator,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/notifications", get(list_notifications))
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(
    paths(list_notifications),
    components(schemas(Problem, mp_common::FieldError, NotificationResponse, NotificationPage)),
    tags((name = "notifications", description = "Emails and SMS sent to customers and vendors"))
)]
pub struct ApiDoc;

/// One email or SMS and where its delivery stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationResponse {
    pub id: Uuid,
    pub channel: Channel,
    /// Email address or phone number; `null` when no contact was known.
    pub recipient: Option<String>,
    /// `customer` or `vendor`: whom it is for.
    pub audience: String,
    /// The customer's or vendor's id.
    pub recipient_id: Uuid,
    /// `order_confirmed`, `order_payment_failed`, `order_rejected`, `order_cancelled`,
    /// `order_shipped` or `low_stock`.
    pub template: String,
    pub subject: String,
    pub status: Status,
    /// Delivery attempts so far.
    pub attempts: i32,
    /// Why the last attempt failed, or why the message could not be sent.
    pub last_error: Option<String>,
    /// The event that caused it.
    pub event_type: String,
    pub order_id: Option<Uuid>,
    pub product_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

impl From<db::Row> for NotificationResponse {
    fn from(r: db::Row) -> Self {
        Self {
            id: r.id,
            channel: r.channel,
            recipient: r.recipient,
            audience: r.audience,
            recipient_id: r.recipient_id,
            template: r.template,
            subject: r.subject,
            status: r.status,
            attempts: r.attempts,
            last_error: r.last_error,
            event_type: r.event_type,
            order_id: r.order_id,
            product_id: r.product_id,
            created_at: r.created_at,
            sent_at: r.sent_at,
        }
    }
}

/// A page of notifications, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationPage {
    pub items: Vec<NotificationResponse>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// The filters. Read as text and checked field by field, so a bad value is a 422
/// naming the field; documented as what they accept.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NotificationFilter {
    /// Only those about this order.
    #[param(value_type = Option<Uuid>, format = Uuid)]
    pub order_id: Option<String>,
    /// Only those sent by this channel.
    #[param(value_type = Option<Channel>, inline)]
    pub channel: Option<String>,
}

/// Notifications: a customer's own, a vendor member's vendors', or all for an admin.
#[utoipa::path(get, path = "/api/notifications", tag = "notifications", security(("bearer" = [])),
    params(NotificationFilter, PageQuery),
    responses(
        (status = 200, body = NotificationPage),
        (status = 400, description = "Malformed query", body = Problem),
        (status = 401, body = Problem),
        (status = 422, description = "Invalid filters or paging, listed one by one", body = Problem),
    ))]
async fn list_notifications(
    State(notifications): State<Notifications>,
    user: AuthUser,
    ApiQuery(filter): ApiQuery<NotificationFilter>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<NotificationResponse>>> {
    let mut v = Validation::new();
    let order_id = filter.order_id.as_deref().and_then(|raw| {
        v.field(
            "order_id",
            // The hyphenated form only, as `format: uuid` says (the parser alone would
            // also take the simple, braced and URN forms).
            Some(raw)
                .filter(|r| r.len() == 36)
                .and_then(|r| r.parse::<Uuid>().ok())
                .ok_or("must be a UUID"),
        )
    });
    let channel = filter
        .channel
        .as_deref()
        .and_then(|raw| v.field("channel", Channel::parse(raw)));
    let page = PageRequest::<Uuid>::parse(&page, &mut v);
    v.finish()?;

    let filter = Filter { order_id, channel };
    let rows = notifications
        .list(&user, &filter, page.after, page.fetch())
        .await?;
    Ok(Json(Page::from_rows(
        rows,
        page.limit,
        |r| r.id,
        NotificationResponse::from,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_lists_the_list() {
        let doc = ApiDoc::openapi();
        assert!(doc.paths.paths.contains_key("/api/notifications"));
    }
}
