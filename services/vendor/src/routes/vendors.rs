//! Vendors and their members.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use chrono::{DateTime, Utc};
use mp_common::serde_ext::double_option;
use mp_common::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, AuthUser, Problem, Validation};
use mp_events::Service;
use mp_events::catalog::{VendorCreated, VendorMemberAdded, VendorUpdated};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{require_member, require_owner, schemas};
use crate::db::{self, MemberRow, VendorRow};
use crate::domain::{self, Cursor, Role};
use mp_common::problem::on_constraint;

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

impl TryFrom<MemberRow> for MemberResponse {
    type Error = ApiError;

    fn try_from(r: MemberRow) -> Result<Self, ApiError> {
        let role = Role::parse(&r.role)
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("unknown role {:?}", r.role)))?;
        Ok(Self {
            vendor_id: r.vendor_id,
            customer_id: r.customer_id,
            role,
            created_at: r.created_at,
        })
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
    State(db): State<PgPool>,
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
    v.finish()?;
    let (name, email, phone) = (
        name.expect("validated"),
        email.expect("validated"),
        phone.expect("validated"),
    );

    let mut tx = db.begin().await?;
    let row = db::insert_vendor(&mut tx, Uuid::now_v7(), &name, &email, phone.as_deref()).await?;
    db::add_member(&mut tx, row.id, user.id, Role::Owner.as_str()).await?;
    mp_events::enqueue(
        &mut tx,
        Service::Vendor,
        VendorCreated {
            vendor_id: row.id,
            owner_id: user.id,
            name: row.name.clone(),
            email: row.email.clone(),
            phone: row.phone.clone(),
        },
    )
    .await?;
    tx.commit().await?;
    tracing::info!(vendor_id = %row.id, owner_id = %user.id, "vendor created");
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
    State(db): State<PgPool>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<VendorResponse>> {
    let row = db::vendor(&mut *db.acquire().await?, id)
        .await?
        .ok_or_else(|| Problem::not_found("Vendor"))?;
    Ok(Json(row.into()))
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
    State(db): State<PgPool>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<UpdateVendor>,
) -> ApiResult<Json<VendorResponse>> {
    let mut tx = db.begin().await?;
    let current = db::vendor_for_update(&mut tx, id)
        .await?
        .ok_or_else(|| Problem::not_found("Vendor"))?;
    require_member(&mut tx, &user, id).await?;

    let mut v = Validation::new();
    let name = match body.name.as_deref() {
        None => Some(current.name.clone()),
        Some(n) => v.field("name", domain::parse_vendor_name(n)),
    };
    let email = match body.email.as_deref() {
        None => Some(current.email.clone()),
        Some(e) => v.field("email", domain::parse_email(e)),
    };
    let phone = match &body.phone {
        None => Some(current.phone.clone()),
        Some(None) => Some(None),
        Some(Some(p)) => v.field("phone", domain::parse_phone(p)).map(Some),
    };
    v.finish()?;
    let (name, email, phone) = (
        name.expect("validated"),
        email.expect("validated"),
        phone.expect("validated"),
    );
    if name == current.name && email == current.email && phone == current.phone {
        return Ok(Json(current.into()));
    }
    let row = db::update_vendor(&mut tx, id, &name, &email, phone.as_deref()).await?;
    mp_events::enqueue(
        &mut tx,
        Service::Vendor,
        VendorUpdated {
            vendor_id: row.id,
            name: row.name.clone(),
            email: row.email.clone(),
            phone: row.phone.clone(),
            revision: row.revision,
        },
    )
    .await?;
    tx.commit().await?;
    tracing::info!(vendor_id = %row.id, revision = row.revision, "vendor updated");
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
    State(db): State<PgPool>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<Json<MemberPage>> {
    let mut conn = db.acquire().await?;
    if !db::vendor_exists(&mut conn, id).await? {
        return Err(Problem::not_found("Vendor").into());
    }
    require_member(&mut conn, &user, id).await?;

    let mut v = Validation::new();
    let limit = v.field("limit", domain::page_limit(page.limit));
    let after = match page.cursor.as_deref() {
        None => Some(None),
        Some(c) => v.field("cursor", Cursor::decode(c)).map(|c| Some(c.0)),
    };
    v.finish()?;
    let (limit, after) = (limit.expect("validated"), after.expect("validated"));
    let mut rows = db::members(&mut conn, id, after, i64::from(limit) + 1).await?;
    let next_cursor = (rows.len() > limit as usize).then(|| {
        rows.truncate(limit as usize);
        Cursor(rows[rows.len() - 1].customer_id).encode()
    });
    Ok(Json(MemberPage {
        items: rows
            .into_iter()
            .map(MemberResponse::try_from)
            .collect::<Result<_, _>>()?,
        next_cursor,
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
    State(db): State<PgPool>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<AddMember>,
) -> ApiResult<(StatusCode, Json<MemberResponse>)> {
    let mut tx = db.begin().await?;
    if !db::vendor_exists(&mut tx, id).await? {
        return Err(Problem::not_found("Vendor").into());
    }
    require_owner(&mut tx, &user, id).await?;
    let role = body.role.unwrap_or(Role::Member);
    let row = db::add_member(&mut tx, id, body.customer_id, role.as_str())
        .await
        .map_err(|e| {
            on_constraint(e, db::MEMBER_UNIQUE, || {
                Problem::conflict(
                    "already-member",
                    "This customer is already a member of the vendor.",
                )
            })
        })?;
    let event = VendorMemberAdded {
        vendor_id: id,
        customer_id: body.customer_id,
        role: role.as_str().to_owned(),
    };
    mp_events::enqueue(&mut tx, Service::Vendor, event).await?;
    tx.commit().await?;
    tracing::info!(vendor_id = %id, customer_id = %body.customer_id, role = role.as_str(), "member added");
    Ok((StatusCode::CREATED, Json(row.try_into()?)))
}
