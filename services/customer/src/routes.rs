//! The customer API: registration, login, token refresh, logout, profiles. Handlers
//! parse and check what clients send, then call [`Accounts`], [`Sessions`] and the
//! [`LoginThrottle`].

use std::sync::Arc;

use axum::extract::{FromRef, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use mp_common::serde_ext::double_option;
use mp_common::{
    ApiError, ApiJson, ApiPath, ApiResult, AuthUser, Authenticator, Problem, TokenKeys, Validation,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};
use uuid::Uuid;

use crate::accounts::{Account, AccountError, Accounts, ProfileChange, Registration};
use crate::domain::{self, Email};
use crate::sessions::{Refresh, Sessions};
use crate::throttle::{LoginThrottle, Peer};

#[derive(Clone, FromRef)]
pub struct AppState {
    pub accounts: Accounts,
    pub auth: Authenticator,
    pub tokens: Arc<TokenKeys>,
    pub sessions: Sessions,
    pub throttle: LoginThrottle,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/customers", post(register_customer))
        .route("/api/customers/me", get(get_me).patch(update_me))
        .route("/api/customers/{id}", get(get_customer))
        .route("/api/auth/login", post(login))
        .route("/api/auth/refresh", post(refresh))
        .route("/api/auth/logout", post(logout))
        .route("/.well-known/jwks.json", get(jwks))
        .with_state(state)
}

/// The public keys that verify access tokens (JWKS, RFC 7517): the current signing key
/// first, then previous keys still trusted during a rotation. Verifiers cache it and
/// fetch it again when a token names a key they do not know.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth",
    responses((status = 200, description = "JSON Web Key Set", body = Object,
        example = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "user-1a2b3c4d5e6f", "use": "sig", "alg": "ES256", "x": "...", "y": "..."}]}))))]
async fn jwks(State(tokens): State<Arc<TokenKeys>>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(tokens.user_jwks()),
    )
}

#[derive(OpenApi)]
#[openapi(
    paths(register_customer, get_me, update_me, get_customer, login, refresh, logout, jwks),
    components(schemas(Problem, mp_common::FieldError)),
    tags((name = "customers", description = "Accounts and profiles"), (name = "auth", description = "Login sessions and tokens"))
)]
pub struct ApiDoc;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    #[schema(schema_with = mp_common::contact::email_schema)]
    pub email: String,
    /// Never in `Debug` output or a log line.
    #[schema(schema_with = schemas::password)]
    pub password: SecretString,
    #[schema(schema_with = schemas::name)]
    pub name: String,
    #[serde(default)]
    #[schema(schema_with = schemas::phone)]
    pub phone: Option<String>,
}

/// The fields to change; an absent field stays as it is.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProfile {
    #[schema(schema_with = schemas::optional_name)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = schemas::phone_change)]
    pub phone: Option<Option<String>>,
}

/// The exact request field schemas, built from the rules the handlers apply.
mod schemas {
    use utoipa::openapi::Object;
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};

    use crate::domain::{NAME_MAX, NAME_PATTERN, PASSWORD_MAX, PASSWORD_MIN};

    fn name_builder(kind: SchemaType) -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(kind)
            .min_length(Some(1))
            .max_length(Some(NAME_MAX))
            .pattern(Some(NAME_PATTERN))
            .examples(["Ada Lovelace"])
    }

    /// 1 to 100 characters, not only white space, no control characters; stored trimmed.
    pub fn name() -> Object {
        name_builder(SchemaType::Type(Type::String))
            .description(Some(
                "1 to 100 characters, not only white space, no control characters; stored trimmed.",
            ))
            .build()
    }

    /// [`name`], or `null` (no change).
    pub fn optional_name() -> Object {
        name_builder(SchemaType::from_iter([Type::String, Type::Null]))
            .description(Some("The new name: 1 to 100 characters, not only white space, no control characters; stored trimmed. `null` or absent: unchanged."))
            .build()
    }

    /// The length is in the schema; the rest of the policy cannot be (see the 422).
    pub fn password() -> Object {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(PASSWORD_MIN))
            .max_length(Some(PASSWORD_MAX))
            .description(Some("10 to 128 characters, of at least 4 different characters, not one of the most common passwords, and not containing the local part of the email address (when it has 4 characters or more). A password breaking these rules is refused with 422."))
            .examples(["correct horse battery"])
            .build()
    }

    /// A phone number, or `null` (none).
    pub fn phone() -> Object {
        let mut phone = mp_common::contact::optional_phone_schema();
        phone.description = Some(
            "International form, e.g. `+4930123456`; `null` or absent: no phone number.".into(),
        );
        phone
    }

    /// A new phone number, or `null` to remove it.
    pub fn phone_change() -> Object {
        let mut phone = mp_common::contact::optional_phone_schema();
        phone.description = Some(
            "International form, e.g. `+4930123456`; `null` removes the phone number; absent: unchanged.".into(),
        );
        phone
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    /// Never in `Debug` output or a log line.
    #[schema(value_type = String)]
    pub password: SecretString,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Single use: each refresh returns a new one.
    pub refresh_token: String,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerResponse {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub phone: Option<String>,
    pub roles: Vec<String>,
    /// Vendors this customer is a member of.
    pub vendor_ids: Vec<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn customer_response(a: Account) -> CustomerResponse {
    CustomerResponse {
        roles: a.roles(),
        id: a.row.id,
        email: a.row.email,
        name: a.row.name,
        phone: a.row.phone,
        vendor_ids: a.vendor_ids,
        created_at: a.row.created_at,
        updated_at: a.row.updated_at,
    }
}

/// The problem+json answer to a refused or failed account operation.
fn problem(e: AccountError) -> ApiError {
    match e {
        AccountError::EmailTaken => {
            Problem::conflict("email-taken", "An account with this email already exists.").into()
        }
        AccountError::NotFound => Problem::not_found("Customer").into(),
        AccountError::Busy => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The service is busy; try again in a moment.",
        )
        .header(header::RETRY_AFTER, "1")
        .into(),
        AccountError::Db(e) => e.into(),
        AccountError::Internal(e) => ApiError::Internal(e),
    }
}

/// Register a customer.
#[utoipa::path(post, path = "/api/customers", tag = "customers", request_body = RegisterRequest,
    responses(
        (status = 201, description = "Registered", body = CustomerResponse),
        (status = 409, description = "The email is taken (in any letter case)", body = Problem),
        (status = 422, description = "Invalid fields, listed one by one. Besides what the schema says, the password policy is checked here: at least 4 different characters, not one of the most common passwords, not containing the email's local part.", body = Problem,
            example = json!({"type": "/problems/validation", "title": "Invalid request", "status": 422,
                "detail": "password: must not contain your email address",
                "errors": [{"field": "password", "message": "must not contain your email address"}]})),
    ))]
async fn register_customer(
    State(accounts): State<Accounts>,
    ApiJson(body): ApiJson<RegisterRequest>,
) -> ApiResult<(
    StatusCode,
    [(header::HeaderName, String); 1],
    Json<CustomerResponse>,
)> {
    let mut v = Validation::new();
    let email = v.field("email", Email::parse(&body.email));
    if let Err(m) = domain::check_password(
        body.password.expose_secret(),
        email.as_ref().map(Email::as_str),
    ) {
        v.error("password", m);
    }
    let name = v.field("name", domain::parse_name(&body.name));
    let phone = body
        .phone
        .as_deref()
        .and_then(|p| v.field("phone", domain::parse_phone(p)));
    let (email, name) = v.finish_with((email, name))?;
    let registration = Registration {
        email,
        password: body.password,
        name,
        phone,
    };
    let account = accounts.register(registration).await.map_err(problem)?;
    let location = format!("/api/customers/{}", account.row.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(customer_response(account)),
    ))
}

/// The caller's profile.
#[utoipa::path(get, path = "/api/customers/me", tag = "customers", security(("bearer" = [])),
    responses((status = 200, body = CustomerResponse), (status = 401, body = Problem)))]
async fn get_me(
    State(accounts): State<Accounts>,
    user: AuthUser,
) -> ApiResult<Json<CustomerResponse>> {
    let account = accounts.account(user.id).await.map_err(problem)?;
    Ok(Json(customer_response(account)))
}

/// Change the caller's name or phone.
#[utoipa::path(patch, path = "/api/customers/me", tag = "customers", security(("bearer" = [])), request_body = UpdateProfile,
    responses((status = 200, body = CustomerResponse), (status = 401, body = Problem), (status = 422, body = Problem)))]
async fn update_me(
    State(accounts): State<Accounts>,
    user: AuthUser,
    ApiJson(body): ApiJson<UpdateProfile>,
) -> ApiResult<Json<CustomerResponse>> {
    let mut v = Validation::new();
    let name = body
        .name
        .as_deref()
        .and_then(|n| v.field("name", domain::parse_name(n)));
    let phone = match &body.phone {
        Some(Some(p)) => v.field("phone", domain::parse_phone(p)).map(Some),
        Some(None) => Some(None),
        None => None,
    };
    v.finish()?;

    let account = accounts
        .update_profile(user.id, ProfileChange { name, phone })
        .await
        .map_err(problem)?;
    Ok(Json(customer_response(account)))
}

/// A customer's profile: the customer themself or an admin.
#[utoipa::path(get, path = "/api/customers/{id}", tag = "customers", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Customer id")),
    responses((status = 200, body = CustomerResponse), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn get_customer(
    State(accounts): State<Accounts>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<CustomerResponse>> {
    if id != user.id && !user.is_admin() {
        return Err(Problem::forbidden("You may only read your own profile.").into());
    }
    let account = accounts.account(id).await.map_err(problem)?;
    Ok(Json(customer_response(account)))
}

async fn tokens_for(
    state: &AppState,
    customer_id: Uuid,
    sid: Uuid,
    refresh_token: String,
) -> ApiResult<TokenResponse> {
    let account = state
        .accounts
        .account(customer_id)
        .await
        .map_err(|e| match e {
            AccountError::NotFound => Problem::unauthorized("The account no longer exists.").into(),
            e => problem(e),
        })?;
    let roles = account.roles();
    let (access_token, expires_in) =
        state
            .tokens
            .user_token(customer_id, sid, roles, account.vendor_ids);
    Ok(TokenResponse {
        access_token,
        refresh_token,
        token_type: "Bearer",
        expires_in,
    })
}

/// Log in with email and password.
#[utoipa::path(post, path = "/api/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, body = TokenResponse),
        (status = 401, description = "Wrong email or password (the same answer for both)", body = Problem),
        (status = 429, description = "Too many failed attempts for this email", body = Problem),
    ))]
async fn login(
    State(state): State<AppState>,
    Peer(peer): Peer,
    headers: axum::http::HeaderMap,
    ApiJson(body): ApiJson<LoginRequest>,
) -> ApiResult<Json<TokenResponse>> {
    // Bounded before anything costs: no multi-megabyte password reaches argon2.
    let mut v = Validation::new();
    v.field(
        "email",
        (body.email.chars().count() <= domain::MAX_EMAIL_CHARS)
            .then_some(())
            .ok_or(format!(
                "must be at most {} characters",
                domain::MAX_EMAIL_CHARS
            )),
    );
    v.field(
        "password",
        (body.password.expose_secret().len() <= domain::MAX_PASSWORD_BYTES)
            .then_some(())
            .ok_or(format!(
                "must be at most {} bytes",
                domain::MAX_PASSWORD_BYTES
            )),
    );
    v.finish()?;
    let address = state.throttle.client_address(peer, &headers);
    let email = domain::normalize_email(&body.email);
    state.throttle.attempt(&email, &address).await?;
    let row = state
        .accounts
        .authenticate(&email, body.password)
        .await
        .map_err(problem)?;
    let Some(row) = row else {
        return Err(Problem::unauthorized("Invalid email or password.").into());
    };
    state.throttle.succeeded(&email, &address).await?;
    let (sid, refresh_token) = state.sessions.open(row.id).await?;
    Ok(Json(tokens_for(&state, row.id, sid, refresh_token).await?))
}

/// Exchange a refresh token for new tokens. Each refresh token works once; presenting
/// one that was already used ends the whole session.
#[utoipa::path(post, path = "/api/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = Problem)))]
async fn refresh(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> ApiResult<Json<TokenResponse>> {
    match state.sessions.refresh(&body.refresh_token).await? {
        Refresh::Rotated {
            customer_id,
            session_id,
            refresh_token,
        } => Ok(Json(
            tokens_for(&state, customer_id, session_id, refresh_token).await?,
        )),
        Refresh::Invalid => {
            Err(Problem::unauthorized("The refresh token is invalid or expired.").into())
        }
        Refresh::Reused => {
            tracing::warn!("refresh token reused; session revoked");
            Err(Problem::unauthorized(
                "This refresh token was already used; the session has been ended.",
            )
            .into())
        }
    }
}

/// End the caller's session: its access and refresh tokens stop working at once.
#[utoipa::path(post, path = "/api/auth/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 204, description = "Logged out"), (status = 401, body = Problem)))]
async fn logout(State(sessions): State<Sessions>, user: AuthUser) -> ApiResult<StatusCode> {
    sessions.close(user.session_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
