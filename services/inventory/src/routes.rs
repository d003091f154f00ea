//! The inventory API.
//!
//! * Stock reads, adjustments and the ledger are for the product's vendor members and
//!   admins (401 without a token, 403 for anyone else, 404 for an unknown product).
//!   Stock is not public: the public sees it through the vendor's catalog, which
//!   `inventory.created` / `inventory.updated` keep informed.
//! * Reservations are service-to-service only (a service token; user tokens get 401).
//!
//! Every failure is problem+json; insufficient stock is a 409 carrying `available`.

use axum::extract::{FromRef, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use mp_common::{
    ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, AuthUser, Authenticator, Page, PageQuery,
    PageRequest, Problem, ServiceCaller, Validation,
};
use mp_events::Service;
use mp_events::catalog::StockLevel;
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
use utoipa::openapi::{KnownFormat, Object, Schema};
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

use crate::db::{self, StockItem};
use crate::domain::{self, MovementKind};
use crate::stock::{AdjustError, Inventory};
use crate::store::Reserve;

#[derive(Clone, FromRef)]
pub struct AppState {
    pub inventory: Inventory,
    pub auth: Authenticator,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/inventory/{product_id}", get(get_stock))
        .route(
            "/api/inventory/{product_id}/adjustments",
            post(adjust_stock),
        )
        .route("/api/inventory/{product_id}/movements", get(list_movements))
        .route("/api/reservations", post(create_reservation))
        .route(
            "/api/reservations/{cart_id}/{product_id}",
            delete(delete_reservation),
        )
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(
    paths(get_stock, adjust_stock, list_movements, create_reservation, delete_reservation),
    components(schemas(Problem, mp_common::FieldError)),
    tags(
        (name = "inventory", description = "Stock levels, adjustments and the movement ledger"),
        (name = "reservations", description = "Stock held for carts (service-to-service)"),
    )
)]
pub struct ApiDoc;

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

fn stock_response(item: &StockItem, level: &StockLevel) -> StockResponse {
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

#[derive(Debug, Serialize, ToSchema)]
pub struct AdjustmentResponse {
    pub movement: MovementResponse,
    pub stock: StockResponse,
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

/// Loads the item and checks that `user` may manage its stock.
async fn managed_item(inv: &Inventory, user: &AuthUser, product_id: Uuid) -> ApiResult<StockItem> {
    let item = db::item(&mut *inv.db.acquire().await?, product_id)
        .await?
        .ok_or_else(|| Problem::not_found("Stock item"))?;
    if !user.can_manage_vendor(item.vendor_id) {
        return Err(
            Problem::forbidden("Only the vendor's members and admins manage this stock.").into(),
        );
    }
    Ok(item)
}

fn adjust_problem(e: AdjustError) -> ApiError {
    match e {
        AdjustError::NotFound => Problem::not_found("Stock item").into(),
        AdjustError::Forbidden => {
            Problem::forbidden("Only the vendor's members and admins manage this stock.").into()
        }
        AdjustError::Insufficient {
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
        AdjustError::Db(e) => e.into(),
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
async fn get_stock(
    State(inv): State<Inventory>,
    user: AuthUser,
    ApiPath(product_id): ApiPath<Uuid>,
) -> ApiResult<Json<StockResponse>> {
    let item = managed_item(&inv, &user, product_id).await?;
    let level = inv.current_level(&item).await?;
    Ok(Json(stock_response(&item, &level)))
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
async fn adjust_stock(
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
        .map_err(adjust_problem)?;
    Ok((
        StatusCode::CREATED,
        Json(AdjustmentResponse {
            movement: movement.into(),
            stock: stock_response(&item, &level),
        }),
    ))
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
async fn list_movements(
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
    managed_item(&inv, &user, product_id).await?;
    let rows = db::movements(
        &mut *inv.db.acquire().await?,
        product_id,
        page.after,
        page.fetch(),
    )
    .await?;
    let page = Page::from_rows(rows, page.limit, |m| m.seq, MovementResponse::from);
    Ok(Json(MovementPage {
        items: page.items,
        next_cursor: page.next_cursor,
    }))
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
async fn create_reservation(
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
    // Round trips: the generation, the Redis script, the durable copy (one statement).
    let generation = db::next_generation(&inv.reservations_db).await?;
    let outcome = inv
        .reserve(product_id, cart_id, quantity, generation, body.replaces)
        .await?
        .ok_or_else(|| Problem::not_found("Stock item"))?;
    let (previous, previous_expires_ms, available, expires_at) = match outcome {
        Reserve::Reserved {
            previous,
            previous_expires_ms,
            available,
            expires_at,
        } => (previous, previous_expires_ms, available, expires_at),
        Reserve::Insufficient { available } => {
            inv.metrics
                .reservations
                .with_label_values(&["insufficient"])
                .inc();
            return Err(Problem::conflict(
                "insufficient-stock",
                format!("Only {available} available; {quantity} requested."),
            )
            .title("Insufficient stock")
            .with("available", available)
            .with("requested", quantity)
            .into());
        }
        Reserve::Inactive => {
            inv.metrics
                .reservations
                .with_label_values(&["inactive"])
                .inc();
            return Err(Problem::conflict(
                "product-inactive",
                "The product is not for sale at the moment.",
            )
            .title("Product inactive")
            .with("available", 0)
            .with("requested", quantity)
            .into());
        }
        Reserve::Superseded { available } => {
            inv.metrics
                .reservations
                .with_label_values(&["superseded"])
                .inc();
            return Err(Problem::conflict(
                "reservation-superseded",
                "A later change of this cart's reservation was made at the same time; it stands.",
            )
            .title("Reservation changed concurrently")
            .with("available", available)
            .with("requested", quantity)
            .into());
        }
    };
    // The durable copy, from which reservations come back if Redis loses them: one
    // statement on a pool whose sessions use synchronous_commit=off, so no explicit
    // transaction and no wait for the WAL flush. A crash of PostgreSQL loses at most
    // the last moment of copies (those reservations are then not restored after a
    // Redis loss), never stock, which the guarded commit protects; waiting put every
    // checkpoint's disk stall into add-to-cart latency. An older generation never
    // overwrites a newer one. If it cannot be written, undo the change in Redis (only
    // while the entry still has our generation) so that both agree, and say so.
    //
    // It runs as its own task: if the caller goes away (its timeout, a dropped
    // connection) this handler is dropped, but the copy (or the undo) still happens,
    // so Redis never keeps a reservation PostgreSQL does not know.
    let written = tokio::spawn({
        let inv = inv.clone();
        async move {
            let written = db::upsert_reservation(
                &inv.reservations_db,
                product_id,
                cart_id,
                quantity,
                expires_at,
                generation,
            )
            .await;
            if written.is_err() {
                let undo = inv
                    .store
                    .undo(product_id, cart_id, previous, previous_expires_ms, generation)
                    .await;
                if let Err(undo) = undo {
                    tracing::warn!(error = %undo, %cart_id, %product_id, "could not undo a reservation; it will expire");
                }
            }
            written
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("the reservation's durable copy failed: {e}"))?;
    written.map_err(write_failed)?;
    inv.metrics
        .reservations
        .with_label_values(&["reserved"])
        .inc();
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
async fn delete_reservation(
    State(inv): State<Inventory>,
    caller: ServiceCaller,
    ApiPath((cart_id, product_id)): ApiPath<(Uuid, Uuid)>,
) -> ApiResult<StatusCode> {
    caller.allow(RESERVING)?;
    // PostgreSQL first, with a new generation: a rebuild that reads it afterwards sees
    // the tombstone, and one that read before sends an older generation, which Redis
    // refuses once the release below is applied.
    let ended = db::end_reservation(&mut *inv.db.acquire().await?, cart_id, product_id).await?;
    if let Some(generation) = ended {
        inv.store.release(product_id, cart_id, generation).await?;
    }
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
