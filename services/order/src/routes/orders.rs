//! The order resource over HTTP: parses what clients send, calls the [`Orders`]
//! service and maps its answers to responses and [`OrderError`]s to problem+json. Who
//! may see and do what is the service's (see [`crate::orders`]).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderName, StatusCode, header};
use chrono::{DateTime, Utc};
use mp_common::{
    ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, AuthUser, Page, PageQuery, PageRequest,
    Problem, Validation,
};
use mp_events::catalog::{OrderStatus, ShippingAddress};
use mp_events::{Currency, Money};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::db::ItemRow;
use crate::domain::{self, PaymentKind, PaymentStatus, Step};
use crate::orders::{
    OrderDetail, OrderError, Orders, ShipmentRequest, TransitionError, VisibleOrder,
};
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};

/// A carrier name or tracking number: 1 to 100 characters (code points), no control
/// characters, no whitespace at either end.
fn shipping_text_schema(example: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(SHIPPING_TEXT_MAX))
        .pattern(Some(mp_common::text::line_pattern()))
        .examples([example])
        .build()
}

pub fn carrier_schema() -> Object {
    shipping_text_schema("DHL")
}

pub fn tracking_number_schema() -> Object {
    shipping_text_schema("JJD000390007123456789")
}

/// Carrier names and tracking numbers are at most this many characters.
pub const SHIPPING_TEXT_MAX: usize = 100;

/// One line of an order.
#[derive(Debug, Serialize, ToSchema)]
pub struct ItemResponse {
    pub product_id: Uuid,
    pub vendor_id: Uuid,
    pub name: String,
    #[schema(minimum = 1)]
    pub quantity: i64,
    pub unit_price: Money,
    pub line_total: Money,
}

/// One status change.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryEntry {
    /// `null` for the creation.
    #[schema(required = true)]
    pub from: Option<OrderStatus>,
    pub to: OrderStatus,
    #[schema(required = true)]
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
    /// `system`, or `customer:<id>`, `vendor:<id>`, `admin:<id>`.
    #[schema(
        pattern = "^(system|(customer|vendor|admin):[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$",
        example = "system"
    )]
    pub by: String,
}

/// One vendor's shipment.
#[derive(Debug, Serialize, ToSchema)]
pub struct ShipmentResponse {
    pub id: Uuid,
    pub vendor_id: Uuid,
    #[schema(schema_with = carrier_schema)]
    pub carrier: String,
    #[schema(schema_with = tracking_number_schema)]
    pub tracking_number: String,
    pub shipped_at: DateTime<Utc>,
}

/// One payment attempt (not shown to vendor members).
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentResponse {
    pub kind: PaymentKind,
    pub status: PaymentStatus,
    pub amount: Money,
    /// Why it was declined or failed; `null` when it succeeded.
    #[schema(required = true)]
    pub error: Option<String>,
    pub at: DateTime<Utc>,
}

/// An order. A vendor member sees only its own lines; `subtotal` and `total` are then
/// the sum of those lines and `tax` is zero.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderResponse {
    pub id: Uuid,
    pub cart_id: Uuid,
    pub customer_id: Uuid,
    pub status: OrderStatus,
    /// The statuses the order may move to next (none once it is final).
    pub next_statuses: Vec<OrderStatus>,
    pub items: Vec<ItemResponse>,
    pub subtotal: Money,
    pub tax: Money,
    pub total: Money,
    pub shipping_address: ShippingAddress,
    /// Why the order failed, when it did; `null` otherwise.
    #[schema(required = true)]
    pub failure_reason: Option<String>,
    /// The saga step the order waits on; `null` when it waits on nothing.
    #[schema(required = true)]
    pub waiting_on: Option<Step>,
    pub stock_committed: bool,
    pub status_history: Vec<HistoryEntry>,
    /// One per vendor that has shipped (a vendor member sees only its own).
    pub shipments: Vec<ShipmentResponse>,
    /// Empty for vendor members.
    pub payments: Vec<PaymentResponse>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An order in a list (its history, shipments and payments are on the order itself).
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderSummary {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub status: OrderStatus,
    pub items: Vec<ItemResponse>,
    pub total: Money,
    /// The saga step the order waits on; `null` when it waits on nothing.
    #[schema(required = true)]
    pub waiting_on: Option<Step>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A page of orders, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderPage {
    pub items: Vec<OrderSummary>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    #[schema(
        required = true,
        min_length = 1,
        max_length = 512,
        pattern = "^[A-Za-z0-9_-]+$"
    )]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OrderFilter {
    /// Only orders in this status.
    #[param(value_type = Option<OrderStatus>)]
    pub status: Option<String>,
}

fn item_response(i: &ItemRow, currency: Currency) -> ItemResponse {
    let unit_price = Money::new(i.unit_price, currency);
    ItemResponse {
        product_id: i.product_id,
        vendor_id: i.vendor_id,
        name: i.name.clone(),
        quantity: i.quantity,
        unit_price,
        line_total: unit_price.times(i.quantity),
    }
}

impl From<OrderDetail> for OrderResponse {
    fn from(d: OrderDetail) -> Self {
        let VisibleOrder {
            order,
            lines,
            subtotal,
            tax,
            total,
            ..
        } = d.order;
        let c = order.currency;
        OrderResponse {
            id: order.id,
            cart_id: order.cart_id,
            customer_id: order.customer_id,
            next_statuses: domain::next_statuses(order.status).to_vec(),
            status: order.status,
            items: lines.iter().map(|i| item_response(i, c)).collect(),
            subtotal,
            tax,
            total,
            shipping_address: order.shipping_address.0.clone(),
            failure_reason: order.failure_reason.clone(),
            waiting_on: order.saga_step,
            stock_committed: order.stock_committed,
            status_history: d
                .history
                .into_iter()
                .map(|h| HistoryEntry {
                    from: h.from_status,
                    to: h.to_status,
                    reason: h.reason,
                    at: h.at,
                    by: h.by,
                })
                .collect(),
            shipments: d
                .shipments
                .into_iter()
                .map(|s| ShipmentResponse {
                    id: s.id,
                    vendor_id: s.vendor_id,
                    carrier: s.carrier,
                    tracking_number: s.tracking_number,
                    shipped_at: s.created_at,
                })
                .collect(),
            payments: d
                .payments
                .into_iter()
                .map(|p| PaymentResponse {
                    kind: p.kind,
                    status: p.status,
                    amount: Money::new(p.amount, p.currency),
                    error: p.error,
                    at: p.created_at,
                })
                .collect(),
            created_at: order.created_at,
            updated_at: order.updated_at,
        }
    }
}

fn summary(o: VisibleOrder) -> OrderSummary {
    let c = o.order.currency;
    OrderSummary {
        id: o.order.id,
        customer_id: o.order.customer_id,
        items: o.lines.iter().map(|i| item_response(i, c)).collect(),
        total: o.total,
        status: o.order.status,
        waiting_on: o.order.saga_step,
        created_at: o.order.created_at,
        updated_at: o.order.updated_at,
    }
}

/// The problem+json answer to a refused or failed operation.
fn problem(e: OrderError) -> ApiError {
    match e {
        OrderError::NotFound => Problem::not_found("Order").into(),
        OrderError::NoVendorLines => Problem::not_found("Lines of this vendor in the order").into(),
        OrderError::Forbidden(why) => Problem::forbidden(why).into(),
        OrderError::VendorNeeded => Problem::invalid_field(
            "vendor_id",
            "is needed: the caller may ship for several vendors of this order",
        )
        .into(),
        OrderError::PartShipped { status } => Problem::conflict(
            "illegal-status-change",
            "Part of the order has shipped; it can no longer be cancelled.",
        )
        .title("Illegal status change")
        .with("order_status", domain::status_name(status))
        .with("allowed", ["shipped"])
        .into(),
        OrderError::AlreadyShipped => Problem::conflict(
            "already-shipped",
            "This vendor has shipped its lines of the order already.",
        )
        .title("Already shipped")
        .into(),
        OrderError::Transition(TransitionError::Illegal(t)) => {
            Problem::conflict("illegal-status-change", t.to_string())
                .title("Illegal status change")
                .with("order_status", domain::status_name(t.current))
                .with(
                    "allowed",
                    t.allowed
                        .iter()
                        .map(|s| domain::status_name(*s))
                        .collect::<Vec<_>>(),
                )
                .into()
        }
        OrderError::Transition(TransitionError::Raced) => Problem::conflict(
            "concurrent-change",
            "The order changed at the same moment; read it again and retry.",
        )
        .into(),
        OrderError::Transition(TransitionError::Db(e)) | OrderError::Db(e) => e.into(),
    }
}

/// Orders newest first: a customer's own, those holding a vendor member's products
/// (with only its lines), all for an admin.
#[utoipa::path(get, path = "/api/orders", tag = "orders", security(("bearer" = [])),
    params(OrderFilter, PageQuery),
    responses(
        (status = 200, body = OrderPage),
        (status = 400, description = "Malformed query", body = Problem),
        (status = 401, body = Problem),
        (status = 422, description = "Invalid status, limit or cursor", body = Problem),
    ))]
pub async fn list_orders(
    State(orders): State<Orders>,
    user: AuthUser,
    ApiQuery(filter): ApiQuery<OrderFilter>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<OrderSummary>>> {
    let mut v = Validation::new();
    let status = filter.status.as_deref().and_then(|raw| {
        v.field(
            "status",
            domain::parse_status(raw).ok_or(
                "must be one of pending, paid, confirmed, shipped, delivered, cancelled, \
                 payment_failed, rejected",
            ),
        )
    });
    let page = PageRequest::<Uuid>::parse(&page, &mut v);
    v.finish()?;
    let rows = orders
        .list(&user, status, page.after, page.fetch())
        .await
        .map_err(problem)?;
    Ok(Json(Page::from_rows(
        rows,
        page.limit,
        |o| o.order.id,
        summary,
    )))
}

/// An order with its lines, status history, shipments and payments.
#[utoipa::path(get, path = "/api/orders/{id}", tag = "orders", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Order id")),
    responses(
        (status = 200, body = OrderResponse),
        (status = 400, description = "Malformed id", body = Problem),
        (status = 401, body = Problem),
        (status = 404, description = "No such order, or not the caller's", body = Problem),
    ))]
pub async fn get_order(
    State(orders): State<Orders>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<OrderResponse>> {
    let detail = orders.detail(&user, id).await.map_err(problem)?;
    Ok(Json(detail.into()))
}

/// Cancel an order before it ships: what was charged is refunded and the stock comes
/// back (`order.updated` with `cancelled`).
#[utoipa::path(post, path = "/api/orders/{id}/cancel", tag = "orders", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Order id")),
    responses(
        (status = 200, description = "Cancelled; a refund follows if it was charged", body = OrderResponse),
        (status = 400, description = "Malformed id", body = Problem),
        (status = 401, body = Problem),
        (status = 403, description = "A vendor member may not cancel", body = Problem),
        (status = 404, body = Problem),
        (status = 409, description = "Shipped or final already; names the status and the allowed next ones", body = Problem),
    ))]
pub async fn cancel_order(
    State(orders): State<Orders>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<OrderResponse>> {
    let detail = orders.cancel(&user, id).await.map_err(problem)?;
    Ok(Json(detail.into()))
}

/// A vendor's shipment of its lines.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShipRequest {
    /// 1 to 100 characters, no control characters, no whitespace at either end.
    #[schema(schema_with = carrier_schema)]
    pub carrier: String,
    /// 1 to 100 characters, no control characters, no whitespace at either end.
    #[schema(schema_with = tracking_number_schema)]
    pub tracking_number: String,
    /// The vendor shipping; needed for admins and members of several of the order's
    /// vendors.
    pub vendor_id: Option<Uuid>,
}

/// Ship a vendor's lines of a confirmed order; the order is `shipped` once every
/// vendor has shipped.
#[utoipa::path(post, path = "/api/orders/{id}/ship", tag = "orders", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Order id")),
    request_body = ShipRequest,
    responses(
        (status = 201, description = "Shipped; the order as the caller sees it, with the new shipment in \
            `shipments`. `Location` names the order (a shipment has no address of its own).",
            body = OrderResponse),
        (status = 400, description = "Malformed id or JSON", body = Problem),
        (status = 401, body = Problem),
        (status = 403, description = "Not a member of the vendor, or the customer", body = Problem),
        (status = 404, description = "No such order, or the vendor has no lines in it", body = Problem),
        (status = 409, description = "Not confirmed, or the vendor shipped already", body = Problem),
        (status = 422, description = "Invalid fields; also `vendor_id` missing when the caller may \
            ship for several of the order's vendors", body = Problem,
            example = json!({"type": "/problems/validation", "title": "Invalid request", "status": 422,
                "detail": "vendor_id: is needed: the caller may ship for several vendors of this order",
                "errors": [{"field": "vendor_id",
                    "message": "is needed: the caller may ship for several vendors of this order"}]})),
    ))]
pub async fn ship_order(
    State(orders): State<Orders>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<ShipRequest>,
) -> ApiResult<(StatusCode, [(HeaderName, String); 1], Json<OrderResponse>)> {
    let mut v = Validation::new();
    let carrier = v.field(
        "carrier",
        mp_common::text::parse_line(&body.carrier, SHIPPING_TEXT_MAX),
    );
    let tracking = v.field(
        "tracking_number",
        mp_common::text::parse_line(&body.tracking_number, SHIPPING_TEXT_MAX),
    );
    let (carrier, tracking_number) = v.finish_with((carrier, tracking))?;
    let request = ShipmentRequest {
        carrier,
        tracking_number,
        vendor_id: body.vendor_id,
    };
    let detail = orders.ship(&user, id, request).await.map_err(problem)?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/orders/{id}"))],
        Json(detail.into()),
    ))
}

/// Mark a shipped order delivered (an admin, or a member of one of its vendors).
#[utoipa::path(post, path = "/api/orders/{id}/deliver", tag = "orders", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Order id")),
    responses(
        (status = 200, body = OrderResponse),
        (status = 400, description = "Malformed id", body = Problem),
        (status = 401, body = Problem),
        (status = 403, description = "The customer may not mark delivery", body = Problem),
        (status = 404, body = Problem),
        (status = 409, description = "Not shipped; names the status and the allowed next ones", body = Problem),
    ))]
pub async fn deliver_order(
    State(orders): State<Orders>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<OrderResponse>> {
    let detail = orders.deliver(&user, id).await.map_err(problem)?;
    Ok(Json(detail.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_enums_serialize_as_the_domain_and_the_tables_name_them() {
        for s in domain::ALL {
            let name = domain::status_name(s);
            assert_eq!(serde_json::to_value(s).unwrap(), name);
        }
        for s in Step::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for kind in ["charge", "refund"] {
            assert_eq!(
                serde_json::to_value(PaymentKind::parse(kind).unwrap()).unwrap(),
                kind
            );
        }
        for status in ["requested", "succeeded", "declined", "failed"] {
            assert_eq!(
                serde_json::to_value(PaymentStatus::parse(status).unwrap()).unwrap(),
                status
            );
        }
    }
}
