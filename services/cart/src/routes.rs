//! The cart API.
//!
//! Error policy: every failure is problem+json. Checks run in this order: the body's
//! shape (400 malformed, 415 not JSON, 422 field by field), authentication (401), the
//! cart exists and belongs to the caller or the caller is an admin (404 otherwise, the
//! same as for a cart that does not exist), the values (422), then the cart's state and
//! stock (409: not open, insufficient stock with `available`, lines unavailable at
//! checkout). A dependency that cannot be reached gives 503; nothing is changed by a
//! request that fails.

use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{patch, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use mp_common::{
    ApiError, ApiJson, ApiPath, ApiResult, AuthUser, Authenticator, Problem, Validation,
};
use mp_events::catalog::ShippingAddress;
use mp_events::{Currency, Money};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::openapi::Object;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::{OpenApi, ToSchema};
use uuid::Uuid;

use crate::carts::{CartError, Carts};
use crate::checkout::CheckoutInput;
use crate::db::{Cart, Item};
use crate::domain::{self, CartStatus};

#[derive(Clone, FromRef)]
pub struct AppState {
    pub carts: Carts,
    pub auth: Authenticator,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/carts", post(open_cart))
        .route("/api/carts/{id}", axum::routing::get(get_cart))
        .route("/api/carts/{id}/items", post(add_item))
        .route(
            "/api/carts/{id}/items/{product_id}",
            patch(update_item).delete(remove_item),
        )
        .route("/api/carts/{id}/checkout", post(checkout))
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(
    paths(open_cart, get_cart, add_item, update_item, remove_item, checkout),
    components(schemas(Problem, mp_common::FieldError, Money, CheckoutAddress)),
    tags((name = "carts", description = "Carts, their items, prices and checkout"))
)]
pub struct ApiDoc;

/// A line of a cart.
#[derive(Debug, Serialize, ToSchema)]
pub struct ItemResponse {
    pub product_id: Uuid,
    pub vendor_id: Uuid,
    pub name: String,
    /// 1 to 999; all of it is reserved at inventory.
    pub quantity: i64,
    /// The current catalog price (refreshed when the vendor changes it).
    pub unit_price: Money,
    /// `quantity * unit_price`.
    pub line_total: Money,
    /// The unit price when the line was added.
    pub added_price: Money,
    /// Whether `unit_price` differs from `added_price`.
    pub price_changed: bool,
    pub added_at: DateTime<Utc>,
}

/// A cart with its lines and totals. Tax is `tax_rate_bps` basis points of the
/// subtotal, rounded half up to the cent; `total = subtotal + tax`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CartResponse {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub status: CartStatus,
    /// Every price of the cart is in this currency.
    #[schema(value_type = String)]
    pub currency: Currency,
    pub items: Vec<ItemResponse>,
    pub subtotal: Money,
    pub tax_rate_bps: u32,
    pub tax: Money,
    pub total: Money,
    /// Set once checked out.
    pub order_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The idle clock starts here: every change of the cart moves it.
    pub last_activity_at: DateTime<Utc>,
}

fn cart_response(carts: &Carts, cart: Cart, items: Vec<Item>) -> CartResponse {
    let currency = cart.currency;
    let totals = domain::totals(
        items.iter().map(|i| (i.quantity, i.unit_price)),
        carts.tax_rate_bps,
    );
    let (subtotal, tax, total) = totals.money(currency);
    CartResponse {
        id: cart.id,
        customer_id: cart.customer_id,
        status: cart.status,
        currency: cart.currency,
        items: items
            .into_iter()
            .map(|i| ItemResponse {
                product_id: i.product_id,
                vendor_id: i.vendor_id,
                name: i.name,
                quantity: i.quantity,
                unit_price: Money::new(i.unit_price, currency),
                line_total: Money::new(i.unit_price, currency).times(i.quantity),
                added_price: Money::new(i.added_price, currency),
                price_changed: i.unit_price != i.added_price,
                added_at: i.added_at,
            })
            .collect(),
        subtotal,
        tax_rate_bps: carts.tax_rate_bps,
        tax,
        total,
        order_id: cart.order_id,
        created_at: cart.created_at,
        updated_at: cart.updated_at,
        last_activity_at: cart.last_activity_at,
    }
}

/// The cart as it is now.
async fn current(carts: &Carts, cart_id: Uuid) -> ApiResult<Json<CartResponse>> {
    let (cart, items) = carts.current(cart_id).await?;
    Ok(Json(cart_response(carts, cart, items)))
}

/// Each refusal as its problem+json (the type is [`CartError::kind`]).
impl From<CartError> for ApiError {
    fn from(e: CartError) -> Self {
        let kind = e.kind();
        let names = |names: Vec<&str>| names.join(", ");
        let problem = match e {
            CartError::CartNotFound => Problem::not_found("Cart"),
            CartError::ProductNotFound(id) => {
                Problem::not_found("Product").with("product_id", id)
            }
            CartError::ItemNotFound => Problem::not_found("Cart item"),
            CartError::CheckedOut { order_id, status } => Problem::conflict(
                kind,
                "The cart is already checked out; it takes no more changes.",
            )
            .title("Cart checked out")
            .with("order_id", order_id)
            .with("cart_status", status),
            CartError::Abandoned { status } => Problem::conflict(
                kind,
                "The cart was abandoned after being idle; open a new cart.",
            )
            .title("Cart abandoned")
            .with("cart_status", status),
            CartError::Insufficient {
                product_id,
                requested,
                available,
            } => Problem::conflict(
                kind,
                format!("Only {available} available; {requested} requested."),
            )
            .title("Insufficient stock")
            .with("product_id", product_id)
            .with("requested", requested)
            .with("available", available),
            CartError::Inactive(product_id) => {
                Problem::conflict(kind, "The product is not for sale at the moment.")
                    .title("Product inactive")
                    .with("product_id", product_id)
                    .with("available", 0)
            }
            CartError::NotStocked(product_id) => {
                Problem::conflict(kind, "Inventory holds no stock of the product yet.")
                    .title("Not stocked")
                    .with("product_id", product_id)
                    .with("available", 0)
            }
            CartError::CurrencyMismatch {
                product_id,
                product_currency,
                cart_currency,
            } => Problem::conflict(
                kind,
                format!("The product is priced in {product_currency}; this cart takes {cart_currency}."),
            )
            .title("Currency mismatch")
            .with("product_id", product_id)
            .with("currency", cart_currency),
            CartError::LineTooLarge {
                product_id,
                quantity,
                adding,
            } => Problem::conflict(
                kind,
                format!(
                    "The line holds {quantity}; adding {adding} would make {}, and a line holds at most {}.",
                    quantity + adding,
                    domain::MAX_QUANTITY
                ),
            )
            .title("Line too large")
            .with("product_id", product_id)
            .with("quantity", quantity)
            .with("max_quantity", domain::MAX_QUANTITY),
            CartError::ConcurrentChange => Problem::conflict(
                kind,
                "The line kept changing under concurrent requests; retry.",
            )
            .title("Concurrent change"),
            CartError::KeyReused => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "This Idempotency-Key was used with another request; use a new key.",
            )
            .kind(kind)
            .title("Idempotency-Key reused"),
            CartError::InProgress => Problem::conflict(
                kind,
                "A request with this Idempotency-Key is still in progress; retry shortly.",
            )
            .title("Request in progress")
            .header(header::RETRY_AFTER, "1"),
            CartError::Empty => {
                Problem::conflict(kind, "The cart is empty; add items before checking out.")
                    .title("Cart empty")
            }
            CartError::CartChanged => {
                Problem::conflict(kind, "The cart changed during checkout; check it and retry.")
                    .title("Cart changed")
            }
            CartError::LinesUnheld(lines) => Problem::conflict(
                kind,
                format!(
                    "These lines cannot be held any more: {}. Change or remove them and retry.",
                    names(lines.iter().map(|l| l.name.as_str()).collect())
                ),
            )
            .title("Lines unavailable")
            .with("lines", lines),
            CartError::OffSale(lines) => Problem::conflict(
                kind,
                format!(
                    "These products are no longer for sale: {}. Remove them and retry.",
                    names(lines.iter().map(|l| l.name.as_str()).collect())
                ),
            )
            .title("Lines unavailable")
            .with("lines", lines),
            CartError::PricesChanged(lines) => Problem::conflict(
                kind,
                format!(
                    "The prices of these lines changed since they were added: {}. The cart now \
                     shows the new prices; send the checkout again to accept them.",
                    names(lines.iter().map(|l| l.name.as_str()).collect())
                ),
            )
            .title("Prices changed")
            .with("lines", lines),
            CartError::PaymentMethodConflict => Problem::conflict(
                kind,
                "The order already holds another payment method.",
            ),
            CartError::Busy => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Checkout is busy right now; nothing was changed. Retry with the same Idempotency-Key in a moment.",
            )
            .kind(kind)
            .title("Checkout busy")
            .header(header::RETRY_AFTER, "1"),
            CartError::Unavailable(u) => return ApiError::Unavailable(u.0),
            CartError::Db(e) => return e.into(),
            CartError::Internal(e) => return ApiError::Internal(e),
        };
        problem.into()
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddItem {
    pub product_id: Uuid,
    /// Added to the line's quantity, 1 to 999; the line then holds at most 999 (409
    /// `line-too-large` otherwise).
    #[schema(example = 2, minimum = 1, maximum = 999)]
    #[serde(deserialize_with = "mp_common::serde_ext::integer")]
    pub quantity: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateItem {
    /// The line's new quantity, 1 to 999.
    #[schema(example = 3, minimum = 1, maximum = 999)]
    #[serde(deserialize_with = "mp_common::serde_ext::integer")]
    pub quantity: i64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    /// The payment provider's token, 1 to 200 visible ASCII characters; handed to the
    /// order service only, never in an event.
    #[schema(value_type = String, example = "tok_visa", min_length = 1, max_length = 200, pattern = "^[!-~]+$")]
    pub payment_token: SecretString,
    #[serde(deserialize_with = "mp_common::serde_ext::object")]
    pub shipping_address: CheckoutAddress,
}

/// Where the order is shipped. Required lines have no whitespace at either end (it is
/// refused, not trimmed); lengths count characters.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutAddress {
    /// 1 to 200 characters.
    #[schema(schema_with = text_200)]
    pub name: String,
    /// 1 to 200 characters.
    #[schema(schema_with = text_200)]
    pub line1: String,
    /// Up to 200 characters; absent or `null` for none.
    #[serde(default)]
    #[schema(max_length = 200)]
    pub line2: Option<String>,
    /// 1 to 100 characters.
    #[schema(schema_with = text_100)]
    pub city: String,
    /// 1 to 20 characters.
    #[schema(schema_with = text_20)]
    pub postal_code: String,
    /// ISO 3166-1 alpha-2 country code, upper case.
    #[schema(pattern = "^[A-Z]{2}$", example = "DE")]
    pub country: String,
}

impl From<CheckoutAddress> for ShippingAddress {
    fn from(a: CheckoutAddress) -> Self {
        ShippingAddress {
            name: a.name,
            line1: a.line1,
            line2: a.line2,
            city: a.city,
            postal_code: a.postal_code,
            country: a.country,
        }
    }
}

/// A required line of text of 1 to `max` characters, as `domain::address_errors`
/// checks it.
fn text_schema(max: usize) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(max))
        .pattern(Some(mp_common::text::line_pattern()))
        .build()
}

fn text_200() -> Object {
    text_schema(200)
}

fn text_100() -> Object {
    text_schema(100)
}

fn text_20() -> Object {
    text_schema(20)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CheckoutAccepted {
    pub order_id: Uuid,
}

/// The caller's open cart: the existing one (200) or a new one (201).
#[utoipa::path(post, path = "/api/carts", tag = "carts", security(("bearer" = [])),
    responses(
        (status = 200, description = "The open cart the customer already had", body = CartResponse),
        (status = 201, description = "A new cart (no `Location`: `id` names it)", body = CartResponse),
        (status = 401, body = Problem),
    ))]
async fn open_cart(
    State(carts): State<Carts>,
    user: AuthUser,
) -> ApiResult<(StatusCode, Json<CartResponse>)> {
    let (created, cart) = carts.open(user.id).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    // No `Location` on the 201 (the finishing pass documents it, not required): with it,
    // Schemathesis 4.32.5 infers links whose stateful run dead-ends after a 200 here
    // ("No progress can be made from state"). The body's `id` names the cart.
    Ok((status, current(&carts, cart.id).await?))
}

/// A cart with its lines and totals (its customer or an admin).
#[utoipa::path(get, path = "/api/carts/{id}", tag = "carts", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Cart id")),
    responses(
        (status = 200, body = CartResponse),
        (status = 401, body = Problem),
        (status = 404, description = "No such cart, or not the caller's", body = Problem),
    ))]
async fn get_cart(
    State(carts): State<Carts>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<CartResponse>> {
    let cart = carts.owned(&user, id).await?;
    let items = carts.items(id).await?;
    Ok(Json(cart_response(&carts, cart, items)))
}

/// Add a product: reserves the line's new quantity at inventory, then stores the line
/// with the catalog's name, price and vendor. Adding a product the cart holds adds to
/// its quantity.
#[utoipa::path(post, path = "/api/carts/{id}/items", tag = "carts", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Cart id")),
    request_body = AddItem,
    responses(
        (status = 200, description = "The cart with the line", body = CartResponse),
        (status = 401, body = Problem),
        (status = 404, description = "No such cart (or not the caller's), or no such product in the catalog", body = Problem),
        (status = 409, description = "Insufficient stock (with `available`), product inactive or not stocked, priced in another currency than the cart's, the line would hold more than 999, or the cart is not open", body = Problem),
        (status = 503, description = "Inventory or the catalog cannot be reached", body = Problem),
    ))]
async fn add_item(
    State(carts): State<Carts>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<AddItem>,
) -> ApiResult<Json<CartResponse>> {
    let cart = carts.owned(&user, id).await?;
    let mut v = Validation::new();
    let quantity = v.field("quantity", domain::check_quantity(body.quantity));
    let quantity = v.finish_with(quantity)?;
    carts.add_item(&cart, body.product_id, quantity).await?;
    current(&carts, id).await
}

/// Set a line's quantity: reserves the new total at inventory (releasing what is no
/// longer needed).
#[utoipa::path(patch, path = "/api/carts/{id}/items/{product_id}", tag = "carts", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Cart id"), ("product_id" = Uuid, Path, description = "Product id")),
    request_body = UpdateItem,
    responses(
        (status = 200, body = CartResponse),
        (status = 401, body = Problem),
        (status = 404, description = "No such cart or line", body = Problem),
        (status = 409, description = "Insufficient stock (with `available`), or the cart is not open", body = Problem),
        (status = 422, body = Problem),
        (status = 503, body = Problem),
    ))]
async fn update_item(
    State(carts): State<Carts>,
    user: AuthUser,
    ApiPath((id, product_id)): ApiPath<(Uuid, Uuid)>,
    ApiJson(body): ApiJson<UpdateItem>,
) -> ApiResult<Json<CartResponse>> {
    let cart = carts.owned(&user, id).await?;
    let mut v = Validation::new();
    let quantity = v.field("quantity", domain::check_quantity(body.quantity));
    let quantity = v.finish_with(quantity)?;
    carts.set_quantity(&cart, product_id, quantity).await?;
    current(&carts, id).await
}

/// Remove a line and release its reservation.
#[utoipa::path(delete, path = "/api/carts/{id}/items/{product_id}", tag = "carts", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Cart id"), ("product_id" = Uuid, Path, description = "Product id")),
    responses(
        (status = 200, description = "The cart without the line", body = CartResponse),
        (status = 401, body = Problem),
        (status = 404, description = "No such cart or line", body = Problem),
        (status = 409, description = "The cart is not open", body = Problem),
    ))]
async fn remove_item(
    State(carts): State<Carts>,
    user: AuthUser,
    ApiPath((id, product_id)): ApiPath<(Uuid, Uuid)>,
) -> ApiResult<Json<CartResponse>> {
    let cart = carts.owned(&user, id).await?;
    carts.remove_item(&cart, product_id).await?;
    current(&carts, id).await
}

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Check out: re-confirms every reservation, hands the payment token to the order
/// service, and marks the cart checked out with its `cart.checkout` event. Follows the
/// IETF Idempotency-Key draft: the same key and body replay the first response; the
/// same key with another body is 422; while the first is in progress, 409. A request
/// that died holds its key for at most the lease (30 s by default); a retry after that
/// continues with the same order id.
#[utoipa::path(post, path = "/api/carts/{id}/checkout", tag = "carts", security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "Cart id"),
        ("Idempotency-Key" = String, Header, description = "A unique key per checkout attempt, 1 to 255 visible ASCII characters",
         min_length = 1, max_length = 255, pattern = "^[!-~]+$"),
    ),
    request_body = CheckoutRequest,
    responses(
        (status = 202, description = "Accepted; the order follows. `Location` names it.", body = CheckoutAccepted,
         headers(("Location" = String, description = "/api/orders/{order_id}"),
                 ("Idempotent-Replayed" = String, description = "`true` when this is the replay of an earlier request with the same key and body"))),
        (status = 400, description = "No Idempotency-Key, or one that is not 1 to 255 visible ASCII characters", body = Problem),
        (status = 401, body = Problem),
        (status = 404, body = Problem),
        (status = 409, description = "In progress under this key, the cart is not open or empty, lines cannot be held or are off sale (`lines-unavailable`, with `lines`), or prices changed since they were added (`prices-changed`, `lines` with `old_price` and `new_price`: the cart takes the new prices, and the same request again accepts them)", body = Problem),
        (status = 422, description = "Invalid fields, or the key was used with another body", body = Problem),
        (status = 503, description = "A dependency is down, or checkout is busy (`checkout-busy`: the saga is at its limit); nothing changed, retry with the same key after Retry-After", body = Problem),
    ))]
async fn checkout(
    State(carts): State<Carts>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CheckoutRequest>,
) -> ApiResult<Response> {
    let key = match headers.get(&IDEMPOTENCY_KEY) {
        None => {
            return Err(Problem::bad_request(
                "The Idempotency-Key header is required: send a unique key per checkout.",
            )
            .kind("idempotency-key-missing")
            .into());
        }
        Some(raw) => raw
            .to_str()
            .map_err(|_| "The Idempotency-Key header must be visible ASCII characters.".into())
            .and_then(|k| domain::check_idempotency_key(k).map(str::to_owned))
            .map_err(|m| Problem::bad_request(m).kind("idempotency-key-invalid"))?,
    };
    let cart = carts.owned(&user, id).await?;
    let mut v = Validation::new();
    v.field(
        "payment_token",
        domain::check_payment_token(body.payment_token.expose_secret()),
    );
    let shipping_address = ShippingAddress::from(body.shipping_address);
    for (field, message) in domain::address_errors(&shipping_address) {
        v.error(field, message);
    }
    v.finish()?;
    let accepted = carts
        .checkout(
            &cart,
            CheckoutInput {
                idempotency_key: key,
                payment_token: body.payment_token,
                shipping_address,
            },
        )
        .await?;
    let order_id = accepted.order_id;
    let mut response = (
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/api/orders/{order_id}"))],
        Json(CheckoutAccepted { order_id }),
    )
        .into_response();
    if accepted.replayed {
        response.headers_mut().insert(
            HeaderName::from_static("idempotent-replayed"),
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_may_be_written_with_a_zero_fraction() {
        let parse = |raw: &str| serde_json::from_str::<UpdateItem>(raw).map(|b| b.quantity);
        assert_eq!(parse(r#"{"quantity": 3}"#).unwrap(), 3);
        assert_eq!(parse(r#"{"quantity": 3.0}"#).unwrap(), 3);
        assert_eq!(parse(r#"{"quantity": -4e2}"#).unwrap(), -400);
        for bad in [
            r#"{"quantity": 3.5}"#,
            r#"{"quantity": "3"}"#,
            r#"{"quantity": 1e300}"#,
            r#"{"quantity": 18446744073709551615}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_openapi_document_lists_every_route() {
        let doc = ApiDoc::openapi();
        let mut paths: Vec<&str> = doc.paths.paths.keys().map(String::as_str).collect();
        paths.sort_unstable();
        assert_eq!(
            paths,
            [
                "/api/carts",
                "/api/carts/{id}",
                "/api/carts/{id}/checkout",
                "/api/carts/{id}/items",
                "/api/carts/{id}/items/{product_id}",
            ]
        );
        let json = serde_json::to_value(&doc).unwrap();
        for schema in ["CartResponse", "ItemResponse", "CheckoutRequest", "Problem"] {
            assert!(
                json["components"]["schemas"][schema].is_object(),
                "{schema} is documented"
            );
        }
    }
}
