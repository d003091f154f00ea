//! Products: listing by a vendor's members, single reads through the Redis cache, the
//! public catalog.
//!
//! Every change writes the product, its `vendor.product.*` event (whole new state and
//! revision) and a change notification in one transaction; after the commit the writer
//! stores the new read in the Redis cache (see [`crate::cache`]) and has every replica drop
//! its in-process copy (see [`crate::near`]) before it answers, so any read after the
//! answer, on any replica, shows the change.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use mp_common::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, AuthUser, Problem, Validation};
use mp_events::catalog::{VendorProductCreated, VendorProductUpdated};
use mp_events::{Money, Service};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{AppState, de, require_member, schemas};
use crate::cache::ProductCache;
use crate::db::{self, ProductFilter, ProductRow, ProductView};
use crate::domain::{self, Cursor};
use mp_common::problem::on_constraint;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProduct {
    #[schema(schema_with = schemas::sku)]
    pub sku: String,
    #[schema(schema_with = schemas::product_name)]
    pub name: String,
    #[serde(default)]
    #[schema(schema_with = schemas::product_description)]
    pub description: String,
    #[serde(deserialize_with = "de::price")]
    #[schema(schema_with = schemas::product_price)]
    pub price: Money,
    #[serde(deserialize_with = "mp_common::serde_ext::integer")]
    #[schema(schema_with = schemas::initial_stock)]
    pub initial_stock: i64,
    #[serde(deserialize_with = "mp_common::serde_ext::integer")]
    #[schema(schema_with = schemas::low_stock_threshold)]
    pub low_stock_threshold: i64,
}

/// The fields to change; absent (or `null`) fields stay as they are. The SKU cannot
/// change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProduct {
    #[schema(schema_with = schemas::product_name_change)]
    pub name: Option<String>,
    #[schema(schema_with = schemas::product_description_change)]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "de::optional_price")]
    #[schema(schema_with = schemas::product_price_change)]
    pub price: Option<Money>,
    #[schema(schema_with = schemas::active_change)]
    pub active: Option<bool>,
    #[serde(default, deserialize_with = "mp_common::serde_ext::optional_integer")]
    #[schema(schema_with = schemas::low_stock_threshold_change)]
    pub low_stock_threshold: Option<i64>,
}

/// Stock figures as the inventory service last reported them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct StockFigures {
    pub on_hand: i64,
    pub reserved: i64,
    /// On hand minus reserved: what customers can still buy.
    pub available: i64,
    /// When inventory reported these figures.
    pub as_of: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProductResponse {
    pub id: Uuid,
    pub vendor_id: Uuid,
    pub sku: String,
    pub name: String,
    pub description: String,
    pub price: Money,
    pub active: bool,
    pub initial_stock: i64,
    pub low_stock_threshold: i64,
    /// 1 at creation, +1 with every change.
    pub revision: i64,
    /// `null` until inventory has reported the product's stock.
    pub stock: Option<StockFigures>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<ProductView> for ProductResponse {
    fn from(v: ProductView) -> Self {
        let stock = match (v.on_hand, v.reserved, v.available, v.stock_as_of) {
            (Some(on_hand), Some(reserved), Some(available), Some(as_of)) => Some(StockFigures {
                on_hand,
                reserved,
                available,
                as_of,
            }),
            _ => None,
        };
        let p = v.product;
        Self {
            id: p.id,
            vendor_id: p.vendor_id,
            sku: p.sku,
            name: p.name,
            description: p.description,
            price: Money {
                amount: p.price_amount,
                currency: p.price_currency,
            },
            active: p.active,
            initial_stock: p.initial_stock,
            low_stock_threshold: p.low_stock_threshold,
            revision: p.revision,
            stock,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProductPage {
    pub items: Vec<ProductResponse>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CatalogQuery {
    /// Only this vendor's products.
    pub vendor_id: Option<Uuid>,
    #[param(schema_with = schemas::search_text)]
    pub q: Option<String>,
    #[param(schema_with = schemas::limit)]
    pub limit: Option<u32>,
    #[param(schema_with = schemas::cursor)]
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VendorProductsQuery {
    #[param(schema_with = schemas::search_text)]
    pub q: Option<String>,
    #[param(schema_with = schemas::limit)]
    pub limit: Option<u32>,
    #[param(schema_with = schemas::cursor)]
    pub cursor: Option<String>,
}

fn json_body(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn serialize(response: &ProductResponse) -> ApiResult<Vec<u8>> {
    serde_json::to_vec(response).map_err(|e| ApiError::Internal(e.into()))
}

/// Stores a committed product read in the cache. A failure is logged, not returned: the
/// change is committed, and the change notification retries the store.
async fn store(cache: &ProductCache, version: i64, response: &ProductResponse, json: &[u8]) {
    if let Err(e) = cache.put(response.id, version, json).await {
        tracing::warn!(product_id = %response.id, error = %e, "could not store the product in the cache");
    }
}

fn money(row: &ProductRow) -> Money {
    Money {
        amount: row.price_amount,
        currency: row.price_currency.clone(),
    }
}

fn check_price(v: &mut Validation, field: &str, price: &Money) {
    for (sub, message) in domain::price_errors(price) {
        v.error(&format!("{field}.{sub}"), message);
    }
}

/// List a product for a vendor: its members or an admin. Inventory creates the stock
/// item from the `vendor.product.created` event.
#[utoipa::path(post, path = "/api/vendors/{id}/products", tag = "products", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Vendor id")),
    request_body = CreateProduct,
    responses(
        (status = 201, description = "Listed", body = ProductResponse),
        (status = 400, description = "Malformed JSON", body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, description = "The vendor already has a product with this SKU", body = Problem),
        (status = 422, description = "Invalid fields, listed one by one", body = Problem),
    ))]
pub async fn create_product(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(vendor_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<CreateProduct>,
) -> ApiResult<(
    StatusCode,
    [(header::HeaderName, String); 1],
    Json<ProductResponse>,
)> {
    let mut tx = state.db.begin().await?;
    if !db::vendor_exists(&mut tx, vendor_id).await? {
        return Err(Problem::not_found("Vendor").into());
    }
    require_member(&mut tx, &user, vendor_id).await?;

    let mut v = Validation::new();
    let sku = v.field("sku", domain::parse_sku(&body.sku));
    let name = v.field("name", domain::parse_product_name(&body.name));
    let description = v.field("description", domain::parse_description(&body.description));
    check_price(&mut v, "price", &body.price);
    v.field("initial_stock", domain::check_quantity(body.initial_stock));
    v.field(
        "low_stock_threshold",
        domain::check_quantity(body.low_stock_threshold),
    );
    v.finish()?;
    let (sku, name, description) = (
        sku.expect("validated"),
        name.expect("validated"),
        description.expect("validated"),
    );

    let row = db::insert_product(
        &mut tx,
        &db::NewProduct {
            id: Uuid::now_v7(),
            vendor_id,
            sku: &sku,
            name: &name,
            description: &description,
            price_amount: body.price.amount,
            price_currency: &body.price.currency,
            initial_stock: body.initial_stock,
            low_stock_threshold: body.low_stock_threshold,
        },
    )
    .await
    .map_err(|e| {
        on_constraint(e, db::SKU_UNIQUE, || {
            Problem::conflict(
                "sku-taken",
                format!("The vendor already has a product with SKU {sku}."),
            )
        })
    })?;
    mp_events::enqueue(
        &mut tx,
        Service::Vendor,
        VendorProductCreated {
            product_id: row.id,
            vendor_id: row.vendor_id,
            sku: row.sku.clone(),
            name: row.name.clone(),
            price: money(&row),
            active: row.active,
            initial_stock: row.initial_stock,
            low_stock_threshold: row.low_stock_threshold,
            revision: row.revision,
        },
    )
    .await?;
    db::notify_product_changed(&mut tx, row.id).await?;
    // Stock figures cannot exist yet: inventory learns of the product from this event.
    let view = db::product_view(&mut tx, row.id)
        .await?
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("inserted product vanished")))?;
    tx.commit().await?;

    let version = view.product.cache_version;
    let response = ProductResponse::from(view);
    let json = serialize(&response)?;
    store(&state.cache, version, &response, &json).await;
    tracing::info!(product_id = %response.id, %vendor_id, sku = %response.sku, "product created");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/products/{}", response.id))],
        Json(response),
    ))
}

/// A product by id, active or not, with its stock when inventory has reported it.
/// Served from this replica's memory when it holds the product, else from the Redis cache,
/// else from PostgreSQL; every change reaches all of them before it is acknowledged.
#[utoipa::path(get, path = "/api/products/{id}", tag = "products",
    params(("id" = Uuid, Path, description = "Product id")),
    responses((status = 200, body = ProductResponse), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub async fn get_product(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Response> {
    if let Some(body) = state.cache.local(id) {
        return Ok(json_body(body));
    }
    let ticket = state.cache.ticket();
    match state.cache.get(id).await {
        Ok(Some(body)) => {
            state.cache.keep(ticket, id, &body);
            return Ok(json_body(body));
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "product cache unavailable; reading PostgreSQL"),
    }
    let view = db::product_view(&mut *state.db.acquire().await?, id)
        .await?
        .ok_or_else(|| Problem::not_found("Product"))?;
    let version = view.product.cache_version;
    let json = serialize(&ProductResponse::from(view))?;
    if let Err(e) = state.cache.fill(id, version, &json).await {
        tracing::warn!(product_id = %id, error = %e, "could not fill the product cache");
    }
    let body = Bytes::from(json);
    state.cache.keep(ticket, id, &body);
    Ok(json_body(body))
}

/// Change a product's price, name, description, active flag or low-stock threshold: the
/// vendor's members or an admin. Emits `vendor.product.updated` with the new revision.
#[utoipa::path(patch, path = "/api/products/{id}", tag = "products", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Product id")),
    request_body = UpdateProduct,
    responses(
        (status = 200, description = "The product after the change", body = ProductResponse),
        (status = 400, description = "Malformed JSON", body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 422, description = "Invalid fields, listed one by one", body = Problem),
    ))]
pub async fn update_product(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<UpdateProduct>,
) -> ApiResult<Json<ProductResponse>> {
    let mut tx = state.db.begin().await?;
    let current = db::product_for_update(&mut tx, id)
        .await?
        .ok_or_else(|| Problem::not_found("Product"))?;
    require_member(&mut tx, &user, current.vendor_id).await?;

    let mut v = Validation::new();
    let name = match body.name.as_deref() {
        None => Some(current.name.clone()),
        Some(n) => v.field("name", domain::parse_product_name(n)),
    };
    let description = match body.description.as_deref() {
        None => Some(current.description.clone()),
        Some(d) => v.field("description", domain::parse_description(d)),
    };
    let price = body.price.unwrap_or_else(|| money(&current));
    check_price(&mut v, "price", &price);
    let threshold = body
        .low_stock_threshold
        .unwrap_or(current.low_stock_threshold);
    v.field("low_stock_threshold", domain::check_quantity(threshold));
    v.finish()?;
    let (name, description) = (name.expect("validated"), description.expect("validated"));
    let active = body.active.unwrap_or(current.active);

    let unchanged = name == current.name
        && description == current.description
        && price == money(&current)
        && active == current.active
        && threshold == current.low_stock_threshold;
    if !unchanged {
        let row = db::update_product(
            &mut tx,
            id,
            &db::ProductChange {
                name: &name,
                description: &description,
                price_amount: price.amount,
                price_currency: &price.currency,
                active,
                low_stock_threshold: threshold,
            },
        )
        .await?;
        mp_events::enqueue(
            &mut tx,
            Service::Vendor,
            VendorProductUpdated {
                product_id: row.id,
                vendor_id: row.vendor_id,
                sku: row.sku.clone(),
                name: row.name.clone(),
                price: money(&row),
                active: row.active,
                low_stock_threshold: row.low_stock_threshold,
                revision: row.revision,
            },
        )
        .await?;
        db::notify_product_changed(&mut tx, id).await?;
    }
    let view = db::product_view(&mut tx, id)
        .await?
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("locked product vanished")))?;
    tx.commit().await?;

    let version = view.product.cache_version;
    let response = ProductResponse::from(view);
    if !unchanged {
        let json = serialize(&response)?;
        store(&state.cache, version, &response, &json).await;
        // Last: once every replica dropped its in-process copy, any read sees the change.
        state.cache.invalidate(id).await;
        tracing::info!(product_id = %id, revision = response.revision, "product updated");
    }
    Ok(Json(response))
}

struct Listing {
    vendor_id: Option<Uuid>,
    q: Option<String>,
    limit: u32,
    after: Option<Uuid>,
}

fn parse_listing(
    vendor_id: Option<Uuid>,
    q: Option<&str>,
    limit: Option<u32>,
    cursor: Option<&str>,
) -> Result<Listing, Problem> {
    let mut v = Validation::new();
    let q = v.field("q", domain::parse_query(q));
    let limit = v.field("limit", domain::page_limit(limit));
    let after = match cursor {
        None => Some(None),
        Some(c) => v.field("cursor", Cursor::decode(c)).map(|c| Some(c.0)),
    };
    v.finish()?;
    Ok(Listing {
        vendor_id,
        q: q.expect("validated"),
        limit: limit.expect("validated"),
        after: after.expect("validated"),
    })
}

async fn page(db: &PgPool, listing: Listing, active_only: bool) -> ApiResult<ProductPage> {
    let pattern = listing.q.as_deref().map(domain::contains_pattern);
    let limit = listing.limit as usize;
    let mut rows = db::products(
        &mut *db.acquire().await?,
        &ProductFilter {
            vendor_id: listing.vendor_id,
            pattern: pattern.as_deref(),
            active_only,
            after: listing.after,
            limit: limit as i64 + 1,
        },
    )
    .await?;
    let next_cursor = (rows.len() > limit).then(|| {
        rows.truncate(limit);
        Cursor(rows[limit - 1].product.id).encode()
    });
    Ok(ProductPage {
        items: rows.into_iter().map(ProductResponse::from).collect(),
        next_cursor,
    })
}

/// The public catalog: active products in the order they were listed, optionally of one
/// vendor and matching a search text.
#[utoipa::path(get, path = "/api/products", tag = "products",
    params(CatalogQuery),
    responses(
        (status = 200, body = ProductPage),
        (status = 400, description = "A parameter of the wrong type", body = Problem),
        (status = 422, description = "Invalid limit, cursor or search text", body = Problem),
    ))]
pub async fn list_products(
    State(db): State<PgPool>,
    ApiQuery(query): ApiQuery<CatalogQuery>,
) -> ApiResult<Json<ProductPage>> {
    let listing = parse_listing(
        query.vendor_id,
        query.q.as_deref(),
        query.limit,
        query.cursor.as_deref(),
    )?;
    Ok(Json(page(&db, listing, true).await?))
}

/// All of a vendor's products, inactive ones included: its members or an admin.
#[utoipa::path(get, path = "/api/vendors/{id}/products", tag = "products", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Vendor id"), VendorProductsQuery),
    responses(
        (status = 200, body = ProductPage),
        (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 422, description = "Invalid limit, cursor or search text", body = Problem),
    ))]
pub async fn list_vendor_products(
    State(db): State<PgPool>,
    user: AuthUser,
    ApiPath(vendor_id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<VendorProductsQuery>,
) -> ApiResult<Json<ProductPage>> {
    {
        let mut conn = db.acquire().await?;
        if !db::vendor_exists(&mut conn, vendor_id).await? {
            return Err(Problem::not_found("Vendor").into());
        }
        require_member(&mut conn, &user, vendor_id).await?;
    }
    let listing = parse_listing(
        Some(vendor_id),
        query.q.as_deref(),
        query.limit,
        query.cursor.as_deref(),
    )?;
    Ok(Json(page(&db, listing, false).await?))
}
