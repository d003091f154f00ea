//! Products over HTTP: listing by a vendor's members, single reads through the caches,
//! the public catalog. The handlers parse and call the [`Catalog`] service, which holds
//! the rules and the transactions (see [`crate::catalog`]).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use mp_common::{ApiJson, ApiPath, ApiQuery, ApiResult, AuthUser, Problem};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{de, problem, schemas};
use crate::catalog::{Catalog, NewProduct, PageParams, ProductPatch};
use crate::domain::PriceInput;
pub use crate::responses::{ProductResponse, StockFigures};

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
    pub price: PriceInput,
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
    pub price: Option<PriceInput>,
    #[schema(schema_with = schemas::active_change)]
    pub active: Option<bool>,
    #[serde(default, deserialize_with = "mp_common::serde_ext::optional_integer")]
    #[schema(schema_with = schemas::low_stock_threshold_change)]
    pub low_stock_threshold: Option<i64>,
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

fn page(p: mp_common::Page<ProductResponse>) -> ProductPage {
    ProductPage {
        items: p.items,
        next_cursor: p.next_cursor,
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
    State(catalog): State<Catalog>,
    user: AuthUser,
    ApiPath(vendor_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<CreateProduct>,
) -> ApiResult<(
    StatusCode,
    [(header::HeaderName, String); 1],
    Json<ProductResponse>,
)> {
    let product = NewProduct {
        sku: body.sku,
        name: body.name,
        description: body.description,
        price: body.price,
        initial_stock: body.initial_stock,
        low_stock_threshold: body.low_stock_threshold,
    };
    let response = catalog
        .create_product(&user, vendor_id, product)
        .await
        .map_err(problem)?;
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
    State(catalog): State<Catalog>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Response> {
    Ok(json_body(catalog.product_json(id).await.map_err(problem)?))
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
    State(catalog): State<Catalog>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<UpdateProduct>,
) -> ApiResult<Json<ProductResponse>> {
    let patch = ProductPatch {
        name: body.name,
        description: body.description,
        price: body.price,
        active: body.active,
        low_stock_threshold: body.low_stock_threshold,
    };
    let response = catalog
        .update_product(&user, id, patch)
        .await
        .map_err(problem)?;
    Ok(Json(response))
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
    State(catalog): State<Catalog>,
    ApiQuery(query): ApiQuery<CatalogQuery>,
) -> ApiResult<Json<ProductPage>> {
    let params = PageParams {
        q: query.q.as_deref(),
        limit: query.limit,
        cursor: query.cursor.as_deref(),
    };
    let products = catalog
        .catalog(query.vendor_id, params)
        .await
        .map_err(problem)?;
    Ok(Json(page(products)))
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
    State(catalog): State<Catalog>,
    user: AuthUser,
    ApiPath(vendor_id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<VendorProductsQuery>,
) -> ApiResult<Json<ProductPage>> {
    let params = PageParams {
        q: query.q.as_deref(),
        limit: query.limit,
        cursor: query.cursor.as_deref(),
    };
    let products = catalog
        .vendor_products(&user, vendor_id, params)
        .await
        .map_err(problem)?;
    Ok(Json(page(products)))
}
