//! Vendors and their members.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use chrono::{DateTime, Utc};
use mp_common::serde_ext::double_option;
use mp_common::{ApiJson, ApiPath, ApiQuery, ApiResult, AuthUser, Problem, Validation};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{problem, schemas};
use crate::catalog::{Catalog, NewVendor, PageParams, VendorPatch};
use crate::db::{MemberRow, VendorRow};
use crate::domain::{self, Role};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVendor {
    #[schema(schema_with = schemas::vendor_name)]
    pub name: String,
    #[schema(schema_with = schemas::vendor_email)]
    pub email: String,
    #[serde(default)]
    #[schema(schema_with = schemas::phone)]
    pub phone: Option<String>,
}

/// The fields to change; an absent field stays as it is.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateVendor {
    #[schema(schema_with = schemas::vendor_name_change)]
    pub name: Option<String>,
    #[schema(schema_with = schemas::vendor_email_change)]
    pub email: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = schemas::phone_change)]
    pub phone: Option<Option<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VendorResponse {
    pub id: Uuid,
    pub name: String,
    pub email: String,
    pub phone: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<VendorRow> for VendorResponse {
    fn from(r: VendorRow) -> Self {
        Self {
            id: r.id,
            name: r.name,
            email: r.email,
            phone: r.phone,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    /// The customer account that joins the vendor.
    pub customer_id: Uuid,
    /// `member` (the default) or `owner`.
    #[serde(default)]
    pub role: Option<Role>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MemberResponse {
    pub vendor_id: Uuid,
    pub customer_id: Uuid,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

impl From<MemberRow> for MemberResponse {
    fn from(r: MemberRow) -> Self {
        Self {
            vendor_id: r.vendor_id,
            customer_id: r.customer_id,
            role: r.role,
            created_at: r.created_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MemberPage {
    pub items: Vec<MemberResponse>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    #[param(schema_with = schemas::limit)]
    pub limit: Option<u32>,
    #[param(schema_with = schemas::cursor)]
    pub cursor: Option<String>,
}

/// Create a vendor; the caller becomes its owner. Access tokens issued once the customer
/// service has handled `vendor.created` carry the membership; this service honours it at
/// once.
#[utoipa::path(post, path = "/api/vendors", tag = "vendors", security(("bearer" = [])),
    request_body = CreateVendor,
    responses(
        (status = 201, description = "Created; the caller is its owner", body = VendorResponse),
        (status = 400, description = "Malformed JSON", body = Problem),
        (status = 401, body = Problem),
        (status = 422, description = "Invalid fields, listed one by one", body = Problem),
    ))]
pub async fn create_vendor(
    State(catalog): State<Catalog>,
    user: AuthUser,
    ApiJson(body): ApiJson<CreateVendor>,
) -> ApiResult<(
    StatusCode,
    [(header::HeaderName, String); 1],
    Json<VendorResponse>,
)> {
    let mut v = Validation::new();
    let name = v.field("name", domain::parse_vendor_name(&body.name));
    let email = v.field("email", domain::parse_email(&body.email));
    let phone = match body.phone.as_deref() {
        None => Some(None),
        Some(p) => v.field("phone", domain::parse_phone(p)).map(Some),
    };
    let (name, email, phone) = v.finish_with((name, email, phone))?;
    let vendor = NewVendor { name, email, phone };
    let row = catalog
        .create_vendor(&user, vendor)
        .await
        .map_err(problem)?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/vendors/{}", row.id))],
        Json(row.into()),
    ))
}

/// A vendor's public profile.
#[utoipa::path(get, path = "/api/vendors/{id}", tag = "vendors",
    params(("id" = Uuid, Path, description = "Vendor id")),
    responses((status = 200, body = VendorResponse), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub async fn get_vendor(
    State(catalog): State<Catalog>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<VendorResponse>> {
    Ok(Json(catalog.vendor(id).await.map_err(problem)?.into()))
}

/// Change a vendor's name, email or phone: its members or an admin.
#[utoipa::path(patch, path = "/api/vendors/{id}", tag = "vendors", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Vendor id")),
    request_body = UpdateVendor,
    responses(
        (status = 200, body = VendorResponse),
        (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem),
    ))]
pub async fn update_vendor(
    State(catalog): State<Catalog>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<UpdateVendor>,
) -> ApiResult<Json<VendorResponse>> {
    let patch = VendorPatch {
        name: body.name,
        email: body.email,
        phone: body.phone,
    };
    let row = catalog
        .update_vendor(&user, id, patch)
        .await
        .map_err(problem)?;
    Ok(Json(row.into()))
}

/// A vendor's members: its members or an admin.
#[utoipa::path(get, path = "/api/vendors/{id}/members", tag = "vendors", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Vendor id"), PageQuery),
    responses(
        (status = 200, body = MemberPage),
        (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 422, description = "Invalid limit or cursor", body = Problem),
    ))]
pub async fn list_members(
    State(catalog): State<Catalog>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<Json<MemberPage>> {
    let params = PageParams {
        q: None,
        limit: page.limit,
        cursor: page.cursor.as_deref(),
    };
    let members = catalog.members(&user, id, params).await.map_err(problem)?;
    Ok(Json(MemberPage {
        items: members
            .items
            .into_iter()
            .map(MemberResponse::from)
            .collect(),
        next_cursor: members.next_cursor,
    }))
}

/// Add a customer to a vendor: its owners or an admin. The new member may act for the
/// vendor here at once.
#[utoipa::path(post, path = "/api/vendors/{id}/members", tag = "vendors", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Vendor id")),
    request_body = AddMember,
    responses(
        (status = 201, body = MemberResponse),
        (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, description = "Already a member", body = Problem),
        (status = 422, body = Problem),
    ))]
pub async fn add_member(
    State(catalog): State<Catalog>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<AddMember>,
) -> ApiResult<(StatusCode, Json<MemberResponse>)> {
    let role = body.role.unwrap_or(Role::Member);
    let row = catalog
        .add_member(&user, id, body.customer_id, role)
        .await
        .map_err(problem)?;
    Ok((StatusCode::CREATED, Json(row.into())))
}
