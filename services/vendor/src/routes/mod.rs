//! The vendor API: vendors and their members ([`vendors`]), products and the public
//! catalog ([`products`]).
//!
//! Error policy: every failure is problem+json (through [`mp_common::ApiError`]). Checks
//! run in this order: authentication (401), malformed JSON (400), the resource exists
//! (404), the caller may act on it (403), then the body field by field (422, all fields
//! at once); the last three are the [`Catalog`] service's. Conflicts with stored data (a
//! duplicate SKU or member) are 409, recognised by constraint name.

mod de;
pub mod products;
mod schemas;
pub mod vendors;

use axum::Router;
use axum::extract::FromRef;
use axum::routing::get;
use mp_common::{ApiError, Authenticator, Problem};
use utoipa::OpenApi;

use crate::catalog::{Catalog, CatalogError};

/// What the handlers share. axum clones it for every request, so the cache (many
/// handles) sits behind one reference count.
#[derive(Clone, FromRef)]
pub struct AppState {
    pub catalog: Catalog,
    pub auth: Authenticator,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/vendors", axum::routing::post(vendors::create_vendor))
        .route(
            "/api/vendors/{id}",
            get(vendors::get_vendor).patch(vendors::update_vendor),
        )
        .route(
            "/api/vendors/{id}/members",
            get(vendors::list_members).post(vendors::add_member),
        )
        .route(
            "/api/vendors/{id}/products",
            get(products::list_vendor_products).post(products::create_product),
        )
        .route("/api/products", get(products::list_products))
        .route(
            "/api/products/{id}",
            get(products::get_product).patch(products::update_product),
        )
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(
    paths(
        vendors::create_vendor,
        vendors::get_vendor,
        vendors::update_vendor,
        vendors::list_members,
        vendors::add_member,
        products::create_product,
        products::list_vendor_products,
        products::list_products,
        products::get_product,
        products::update_product,
    ),
    components(schemas(Problem, mp_common::FieldError, mp_events::Money)),
    tags(
        (name = "vendors", description = "Vendors and their members"),
        (name = "products", description = "Products and the public catalog"),
    )
)]
pub struct ApiDoc;

/// The problem+json answer to a refused or failed catalog operation.
fn problem(e: CatalogError) -> ApiError {
    match e {
        CatalogError::NotFound(what) => Problem::not_found(what).into(),
        CatalogError::Forbidden(why) => Problem::forbidden(why).into(),
        CatalogError::Invalid(p) => p.into(),
        CatalogError::SkuTaken(sku) => Problem::conflict(
            "sku-taken",
            format!("The vendor already has a product with SKU {sku}."),
        )
        .into(),
        CatalogError::AlreadyMember => Problem::conflict(
            "already-member",
            "This customer is already a member of the vendor.",
        )
        .into(),
        CatalogError::Db(e) => e.into(),
        CatalogError::Internal(e) => ApiError::Internal(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_lists_every_route() {
        let doc = ApiDoc::openapi();
        let mut paths: Vec<&str> = doc.paths.paths.keys().map(String::as_str).collect();
        paths.sort_unstable();
        assert_eq!(
            paths,
            [
                "/api/products",
                "/api/products/{id}",
                "/api/vendors",
                "/api/vendors/{id}",
                "/api/vendors/{id}/members",
                "/api/vendors/{id}/products",
            ]
        );
        let json = serde_json::to_value(&doc).unwrap();
        for schema in ["ProductResponse", "ProductPage", "CreateProduct", "Problem"] {
            assert!(
                json["components"]["schemas"][schema].is_object(),
                "{schema} is documented"
            );
        }
    }
}
