//! The vendor API: vendors and their members ([`vendors`]), products and the public
//! catalog ([`products`]).
//!
//! Error policy: every failure is problem+json (through [`mp_common::ApiError`]). Checks
//! run in this order: authentication (401), the resource exists (404), the caller may act
//! on it (403), then the body field by field (422, all fields at once). Conflicts with
//! stored data (a duplicate SKU or member) are 409, recognised by constraint name.
//!
//! Who may act for a vendor: an admin, or a member. Membership lives in this service's
//! `vendor_members` table, which is the authority; the `vendors` claim of an access token
//! only saves the lookup, so a new owner can list products before their token carries
//! the vendor.

mod de;
pub mod products;
mod schemas;
pub mod vendors;

use axum::Router;
use axum::extract::FromRef;
use axum::routing::get;
use mp_common::{ApiResult, AuthUser, Authenticator, Problem};
use sqlx::{PgConnection, PgPool};
use utoipa::OpenApi;
use uuid::Uuid;

use crate::cache::ProductCache;
use crate::db;
use crate::domain::Role;

/// What the handlers share. axum clones it for every request, so the cache (many
/// handles) sits behind one reference count.
#[derive(Clone, FromRef)]
pub struct AppState {
    pub db: PgPool,
    pub auth: Authenticator,
    pub cache: std::sync::Arc<ProductCache>,
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

/// An admin, or a member of the vendor (by token claim or, authoritatively, by table).
pub(crate) async fn require_member(
    conn: &mut PgConnection,
    user: &AuthUser,
    vendor_id: Uuid,
) -> ApiResult<()> {
    if user.can_manage_vendor(vendor_id)
        || db::member_role(conn, vendor_id, user.id).await?.is_some()
    {
        return Ok(());
    }
    Err(Problem::forbidden("Only the vendor's members or an administrator may do this.").into())
}

/// An admin, or an owner of the vendor.
pub(crate) async fn require_owner(
    conn: &mut PgConnection,
    user: &AuthUser,
    vendor_id: Uuid,
) -> ApiResult<()> {
    if user.is_admin()
        || db::member_role(conn, vendor_id, user.id)
            .await?
            .as_deref()
            .and_then(Role::parse)
            == Some(Role::Owner)
    {
        return Ok(());
    }
    Err(Problem::forbidden("Only the vendor's owners or an administrator may do this.").into())
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
