//! Orders as their customer, the members of their vendors and admins see them.
//!
//! * A customer sees and cancels their own orders. A vendor member sees the orders
//!   holding its products, with only its own lines (and their totals), and ships those
//!   lines. An admin sees and does everything (shipping on behalf of a vendor names it
//!   with `vendor_id`). Anyone else gets 404.
//! * Cancelling refunds what was charged and publishes `order.updated(cancelled)`, so
//!   inventory returns the stock; once anything has shipped it is 409.
//! * Each vendor ships its own lines (`order.shipped` per shipment); the order becomes
//!   `shipped` with the last vendor's shipment, and then can be delivered.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderName, StatusCode, header};
use chrono::{DateTime, Utc};
use mp_common::{
    ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, AuthUser, Page, PageQuery, PageRequest,
    Problem, Validation,
};
use mp_events::Money;
use mp_events::Service;
use mp_events::catalog::{OrderShipped, OrderStatus, ShippingAddress};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::db::{self, Change, ItemRow, NewShipment, OrderRow, Scope};
use crate::domain::{self, Actor, Step};
use crate::orders::{Orders, TransitionError, line_items, status_of};
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};

/// A status as stored (the table's check constraint allows only these names).
pub fn stored_status(s: &str) -> OrderStatus {
    domain::parse_status(s).unwrap_or(OrderStatus::Pending)
}

/// What a payment attempt was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentKind {
    Charge,
    Refund,
}

/// How a payment attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Sent to the provider, its answer not recorded yet (in flight, or lost and being
    /// asked for).
    Requested,
    Succeeded,
    Declined,
    /// Did not go through and captured nothing (the provider says so); retried.
    Failed,
}

impl PaymentKind {
    /// As stored (the table's check constraint allows only `charge` and `refund`).
    fn stored(s: &str) -> Self {
        if s == "refund" {
            Self::Refund
        } else {
            Self::Charge
        }
    }
}

impl PaymentStatus {
    /// As stored (the table's check constraint allows only these four).
    fn stored(s: &str) -> Self {
        match s {
            "requested" => Self::Requested,
            "succeeded" => Self::Succeeded,
            "declined" => Self::Declined,
            _ => Self::Failed,
        }
    }
}

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

/// What the caller may see of an order.
#[derive(Debug, Clone, PartialEq)]
pub enum Sight {
    /// The customer or an admin: everything.
    Full,
    /// A vendor member: the lines of these vendors.
    Vendors(BTreeSet<Uuid>),
}

pub fn sight(user: &AuthUser, order: &OrderRow, items: &[ItemRow]) -> Option<Sight> {
    if user.is_admin() || order.customer_id == user.id {
        return Some(Sight::Full);
    }
    let vendors: BTreeSet<Uuid> = items
        .iter()
        .map(|i| i.vendor_id)
        .filter(|v| user.vendors.contains(v))
        .collect();
    (!vendors.is_empty()).then_some(Sight::Vendors(vendors))
}

fn visible<'a>(sight: &Sight, items: &'a [ItemRow]) -> Vec<&'a ItemRow> {
    items
        .iter()
        .filter(|i| match sight {
            Sight::Full => true,
            Sight::Vendors(v) => v.contains(&i.vendor_id),
        })
        .collect()
}

fn item_response(i: &ItemRow, currency: &str) -> ItemResponse {
    ItemResponse {
        product_id: i.product_id,
        vendor_id: i.vendor_id,
        name: i.name.clone(),
        quantity: i.quantity,
        unit_price: Money::new(i.unit_price, currency),
        line_total: Money::new(i.unit_price.saturating_mul(i.quantity), currency),
    }
}

/// `(subtotal, tax, total)` as the caller may see them.
fn amounts(order: &OrderRow, sight: &Sight, items: &[&ItemRow]) -> (i64, i64, i64) {
    match sight {
        Sight::Full => (order.subtotal, order.tax, order.total),
        Sight::Vendors(_) => {
            let sum = items
                .iter()
                .map(|i| i.unit_price.saturating_mul(i.quantity))
                .sum();
            (sum, 0, sum)
        }
    }
}

fn not_found() -> ApiError {
    Problem::not_found("Order").into()
}

/// Loads the order, its lines and what the caller may see of it; 404 if nothing.
async fn load(
    conn: &mut sqlx::PgConnection,
    user: &AuthUser,
    id: Uuid,
    lock: bool,
) -> ApiResult<(OrderRow, Vec<ItemRow>, Sight)> {
    let order = if lock {
        db::order_for_update(conn, id).await?
    } else {
        db::order(conn, id).await?
    }
    .ok_or_else(not_found)?;
    let items = db::items(conn, &[id]).await?;
    let sight = sight(user, &order, &items).ok_or_else(not_found)?;
    Ok((order, items, sight))
}

async fn order_response(
    conn: &mut sqlx::PgConnection,
    order: OrderRow,
    items: &[ItemRow],
    sight: &Sight,
) -> ApiResult<OrderResponse> {
    let lines = visible(sight, items);
    let (subtotal, tax, total) = amounts(&order, sight, &lines);
    let history = db::history(conn, order.id).await?;
    let shipments = db::shipments(conn, order.id)
        .await?
        .into_iter()
        .filter(|s| match sight {
            Sight::Full => true,
            Sight::Vendors(v) => v.contains(&s.vendor_id),
        })
        .map(|s| ShipmentResponse {
            id: s.id,
            vendor_id: s.vendor_id,
            carrier: s.carrier,
            tracking_number: s.tracking_number,
            shipped_at: s.created_at,
        })
        .collect();
    let payments = if *sight == Sight::Full {
        db::payments(conn, order.id)
            .await?
            .into_iter()
            .map(|p| PaymentResponse {
                kind: PaymentKind::stored(&p.kind),
                status: PaymentStatus::stored(&p.status),
                amount: Money::new(p.amount, &p.currency),
                error: p.error,
                at: p.created_at,
            })
            .collect()
    } else {
        vec![]
    };
    let c = &order.currency;
    Ok(OrderResponse {
        id: order.id,
        cart_id: order.cart_id,
        customer_id: order.customer_id,
        next_statuses: domain::next_statuses(status_of(&order)).to_vec(),
        status: status_of(&order),
        items: lines.iter().map(|i| item_response(i, c)).collect(),
        subtotal: Money::new(subtotal, c),
        tax: Money::new(tax, c),
        total: Money::new(total, c),
        shipping_address: order.shipping_address.0.clone(),
        failure_reason: order.failure_reason.clone(),
        waiting_on: order.saga_step.as_deref().and_then(Step::parse),
        stock_committed: order.stock_committed,
        status_history: history
            .into_iter()
            .map(|h| HistoryEntry {
                from: h.from_status.as_deref().map(stored_status),
                to: stored_status(&h.to_status),
                reason: h.reason,
                at: h.at,
                by: h.by,
            })
            .collect(),
        shipments,
        payments,
        created_at: order.created_at,
        updated_at: order.updated_at,
    })
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
    let mut conn = orders.db.acquire().await?;
    let scope = Scope {
        admin: user.is_admin(),
        customer_id: user.id,
        vendors: &user.vendors,
    };
    let rows = db::list(
        &mut conn,
        &scope,
        status.map(domain::status_name),
        page.after,
        page.fetch(),
    )
    .await?;
    let ids: Vec<Uuid> = rows.iter().map(|o| o.id).collect();
    let items = db::items(&mut conn, &ids).await?;
    Ok(Json(Page::from_rows(
        rows,
        page.limit,
        |o| o.id,
        |o| {
            let own: Vec<ItemRow> = items
                .iter()
                .filter(|i| i.order_id == o.id)
                .cloned()
                .collect();
            let sight = sight(&user, &o, &own).unwrap_or(Sight::Vendors(BTreeSet::new()));
            let lines = visible(&sight, &own);
            let (_, _, total) = amounts(&o, &sight, &lines);
            OrderSummary {
                id: o.id,
                customer_id: o.customer_id,
                items: lines
                    .iter()
                    .map(|i| item_response(i, &o.currency))
                    .collect(),
                total: Money::new(total, &o.currency),
                status: status_of(&o),
                waiting_on: o.saga_step.as_deref().and_then(Step::parse),
                created_at: o.created_at,
                updated_at: o.updated_at,
            }
        },
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
    let mut conn = orders.db.acquire().await?;
    let (order, items, sight) = load(&mut conn, &user, id, false).await?;
    Ok(Json(
        order_response(&mut conn, order, &items, &sight).await?,
    ))
}

fn transition_problem(e: TransitionError) -> ApiError {
    match e {
        TransitionError::Illegal(t) => Problem::conflict("illegal-status-change", t.to_string())
            .title("Illegal status change")
            .with("status", domain::status_name(t.current))
            .with(
                "allowed",
                t.allowed
                    .iter()
                    .map(|s| domain::status_name(*s))
                    .collect::<Vec<_>>(),
            )
            .into(),
        TransitionError::Raced => Problem::conflict(
            "concurrent-change",
            "The order changed at the same moment; read it again and retry.",
        )
        .into(),
        TransitionError::Db(e) => e.into(),
    }
}

fn actor(user: &AuthUser, order: &OrderRow) -> Actor {
    if order.customer_id == user.id {
        Actor::Customer(user.id)
    } else if user.is_admin() {
        Actor::Admin(user.id)
    } else {
        Actor::Vendor(user.id)
    }
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
    let mut tx = orders.db.begin().await?;
    let (order, items, sight) = load(&mut tx, &user, id, true).await?;
    if sight != Sight::Full {
        return Err(
            Problem::forbidden("Only the customer or an admin may cancel an order.").into(),
        );
    }
    if status_of(&order) == OrderStatus::Confirmed && !db::shipments(&mut tx, id).await?.is_empty()
    {
        return Err(Problem::conflict(
            "illegal-status-change",
            "Part of the order has shipped; it can no longer be cancelled.",
        )
        .title("Illegal status change")
        .with("status", &order.status)
        .with("allowed", ["shipped"])
        .into());
    }
    // Whatever the provider holds for it (captured, in flight, or an answer lost) is
    // settled by the driver: refunded or cancelled.
    let started = order.charge_started || order.payment_intent.is_some();
    let change = Change {
        reason: Some(if user.id == order.customer_id {
            "cancelled by the customer"
        } else {
            "cancelled by an administrator"
        }),
        stock_committed: false,
        step: Some(started.then_some(Step::Refund)),
    };
    orders
        .transition(
            &mut tx,
            &order,
            OrderStatus::Cancelled,
            actor(&user, &order),
            change,
        )
        .await
        .map_err(transition_problem)?;
    db::delete_payment_method(&mut tx, id).await?;
    tx.commit().await?;
    if started {
        orders.wake.notify_one();
    }
    let mut conn = orders.db.acquire().await?;
    let order = db::order(&mut conn, id).await?.ok_or_else(not_found)?;
    Ok(Json(
        order_response(&mut conn, order, &items, &sight).await?,
    ))
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
    v.finish()?;
    let (carrier, tracking) = (carrier.expect("validated"), tracking.expect("validated"));

    let mut tx = orders.db.begin().await?;
    let (order, items, sight) = load(&mut tx, &user, id, true).await?;
    let order_vendors: BTreeSet<Uuid> = items.iter().map(|i| i.vendor_id).collect();
    let vendor_id = match body.vendor_id {
        Some(vendor_id) => {
            if !user.can_manage_vendor(vendor_id) {
                return Err(Problem::forbidden("Only the vendor's members ship its lines.").into());
            }
            if !order_vendors.contains(&vendor_id) {
                return Err(Problem::not_found("Lines of this vendor in the order").into());
            }
            vendor_id
        }
        None => {
            let mine: Vec<Uuid> = order_vendors
                .iter()
                .copied()
                .filter(|v| user.can_manage_vendor(*v))
                .collect();
            match mine.as_slice() {
                [one] => *one,
                [] if sight == Sight::Full => {
                    return Err(
                        Problem::forbidden("Only the vendor's members ship its lines.").into(),
                    );
                }
                [] => return Err(not_found()),
                _ => {
                    return Err(Problem::invalid_field(
                        "vendor_id",
                        "is needed: the caller may ship for several vendors of this order",
                    )
                    .into());
                }
            }
        }
    };
    // Lines ship from a confirmed order; the order itself stays confirmed until the
    // last vendor has shipped.
    domain::check_transition(status_of(&order), OrderStatus::Shipped)
        .map_err(|e| transition_problem(TransitionError::Illegal(e)))?;
    let shipment = db::insert_shipment(
        &mut tx,
        &NewShipment {
            order_id: id,
            vendor_id,
            carrier: &carrier,
            tracking_number: &tracking,
            shipped_by: user.id,
        },
    )
    .await?
    .ok_or_else(|| {
        Problem::conflict(
            "already-shipped",
            "This vendor has shipped its lines of the order already.",
        )
        .title("Already shipped")
    })?;
    let shipped_vendors: BTreeSet<Uuid> = db::shipments(&mut tx, id)
        .await?
        .into_iter()
        .map(|s| s.vendor_id)
        .collect();
    let order_shipped = shipped_vendors == order_vendors;
    let vendor_lines: Vec<ItemRow> = items
        .iter()
        .filter(|i| i.vendor_id == vendor_id)
        .cloned()
        .collect();
    mp_events::enqueue(
        &mut tx,
        Service::Order,
        OrderShipped {
            order_id: id,
            customer_id: order.customer_id,
            shipment_id: shipment.id,
            vendor_id,
            carrier: carrier.clone(),
            tracking_number: tracking.clone(),
            items: line_items(&vendor_lines, &order.currency),
            order_shipped,
        },
    )
    .await?;
    if order_shipped {
        orders
            .transition(
                &mut tx,
                &order,
                OrderStatus::Shipped,
                actor(&user, &order),
                Change {
                    reason: Some("every vendor has shipped"),
                    ..Change::default()
                },
            )
            .await
            .map_err(transition_problem)?;
    }
    tx.commit().await?;
    tracing::info!(order_id = %id, %vendor_id, order_shipped, "vendor shipped its lines");
    let mut conn = orders.db.acquire().await?;
    let order = db::order(&mut conn, id).await?.ok_or_else(not_found)?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/orders/{id}"))],
        Json(order_response(&mut conn, order, &items, &sight).await?),
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
    let mut tx = orders.db.begin().await?;
    let (order, items, sight) = load(&mut tx, &user, id, true).await?;
    let vendor = items.iter().any(|i| user.vendors.contains(&i.vendor_id));
    if !user.is_admin() && !vendor {
        return Err(
            Problem::forbidden("Only the order's vendors or an admin mark delivery.").into(),
        );
    }
    orders
        .transition(
            &mut tx,
            &order,
            OrderStatus::Delivered,
            if user.is_admin() {
                Actor::Admin(user.id)
            } else {
                Actor::Vendor(user.id)
            },
            Change::default(),
        )
        .await
        .map_err(transition_problem)?;
    tx.commit().await?;
    let mut conn = orders.db.acquire().await?;
    let order = db::order(&mut conn, id).await?.ok_or_else(not_found)?;
    Ok(Json(
        order_response(&mut conn, order, &items, &sight).await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_enums_serialize_as_the_domain_and_the_tables_name_them() {
        for s in domain::ALL {
            let name = domain::status_name(s);
            assert_eq!(serde_json::to_value(s).unwrap(), name);
            assert_eq!(stored_status(name), s);
        }
        for s in Step::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for kind in ["charge", "refund"] {
            assert_eq!(
                serde_json::to_value(PaymentKind::stored(kind)).unwrap(),
                kind
            );
        }
        for status in ["requested", "succeeded", "declined", "failed"] {
            assert_eq!(
                serde_json::to_value(PaymentStatus::stored(status)).unwrap(),
                status
            );
        }
    }
}
