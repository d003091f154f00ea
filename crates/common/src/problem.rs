//! problem+json errors (RFC 9457), the JSON/path/query extractors that produce them,
//! and field-by-field validation.

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use utoipa::ToSchema;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// One invalid field.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct FieldError {
    /// Path of the field in the request, e.g. `price.currency`.
    pub field: String,
    pub message: String,
}

/// An error response: `{type, title, status, detail, errors?, ...extensions}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI reference naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Extra members, such as `available` for insufficient stock.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub extensions: Map<String, Value>,
    #[serde(skip)]
    #[schema(ignore)]
    pub headers: HeaderMap,
}

/// The members of a problem that are not extensions.
const RESERVED_MEMBERS: [&str; 6] = ["type", "title", "status", "detail", "instance", "errors"];

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            extensions: Map::new(),
            headers: HeaderMap::new(),
        }
    }

    /// Names the kind of problem: `/problems/<slug>`.
    pub fn kind(mut self, slug: &str) -> Self {
        self.kind = format!("/problems/{slug}");
        self
    }

    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = title.into();
        self
    }

    /// Adds an extension member. The members RFC 9457 defines (and `errors`) are not
    /// extensions: a key that names one would write it twice, and clients read the
    /// last, so it is refused (a panic in tests, left out otherwise).
    pub fn with(mut self, key: &str, value: impl Serialize) -> Self {
        let reserved = RESERVED_MEMBERS.contains(&key);
        debug_assert!(!reserved, "`{key}` is a problem member, not an extension");
        if !reserved {
            self.extensions.insert(
                key.into(),
                serde_json::to_value(value).unwrap_or(Value::Null),
            );
        }
        self
    }

    pub fn header(mut self, name: header::HeaderName, value: impl AsRef<str>) -> Self {
        if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
            self.headers.insert(name, v);
        }
        self
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail).kind("bad-request")
    }

    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        let mut p = Self::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
            .kind("validation")
            .title("Invalid request");
        p.errors = errors;
        p
    }

    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Self::validation(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("{what} not found")).kind("not-found")
    }

    pub fn conflict(slug: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, detail).kind(slug)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, detail)
            .kind("unauthorized")
            .header(header::WWW_AUTHENTICATE, "Bearer")
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, detail).kind("forbidden")
    }

    /// A 500 that shows the client only an id to quote; the cause goes to the log.
    pub fn internal(error_id: uuid::Uuid) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "An internal error occurred; quote error_id when reporting it.",
        )
        .kind("internal")
        .with("error_id", error_id)
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, detail)
            .kind("unavailable")
            .header(header::RETRY_AFTER, "1")
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, [(header::CONTENT_TYPE, PROBLEM_JSON)], body).into_response();
        response.headers_mut().extend(self.headers);
        response
    }
}

/// What a handler returns when it fails.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The client's mistake or a domain rule: shown as it is.
    #[error("{} {}", .0.status, .0.detail)]
    Problem(Problem),
    /// A dependency is down: 503, retry later.
    #[error("dependency unavailable: {0}")]
    Unavailable(String),
    /// A bug or an unexpected failure: logged with its cause, shown as an opaque id.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl From<Problem> for ApiError {
    fn from(p: Problem) -> Self {
        Self::Problem(p)
    }
}

/// Whether a PostgreSQL error means the database cannot be reached now (a 503 the
/// client may retry), not that the request or the code is wrong.
pub fn db_unavailable(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::WorkerCrashed
    )
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if db_unavailable(&e) {
            Self::Unavailable(format!("PostgreSQL: {e}"))
        } else {
            Self::Internal(e.into())
        }
    }
}

impl From<redis::RedisError> for ApiError {
    fn from(e: redis::RedisError) -> Self {
        if e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
        {
            Self::Unavailable(format!("Redis: {e}"))
        } else {
            Self::Internal(e.into())
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Problem(p) => p.into_response(),
            ApiError::Unavailable(cause) => {
                tracing::warn!(cause = %cause, "dependency unavailable");
                Problem::unavailable("A dependency is unavailable; try again shortly.")
                    .into_response()
            }
            ApiError::Internal(e) => {
                let error_id = uuid::Uuid::new_v4();
                tracing::error!(%error_id, error = ?e, "internal error");
                Problem::internal(error_id).into_response()
            }
        }
    }
}

/// Whether `e` is a violation of the named constraint (a unique email, a duplicate SKU):
/// a service layer turns it into its own conflict, anything else stays a database error.
pub fn violates(e: &sqlx::Error, constraint: &str) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.constraint() == Some(constraint))
}

/// Collects field errors, then fails with one 422 listing them all.
#[derive(Debug, Default)]
pub struct Validation(Vec<FieldError>);

impl Validation {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn check(&mut self, ok: bool, field: &str, message: &str) -> &mut Self {
        if !ok {
            self.error(field, message);
        }
        self
    }

    pub fn error(&mut self, field: &str, message: impl Into<String>) -> &mut Self {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
        self
    }

    /// The value of a parse, or `None` after recording its error against `field`.
    pub fn field<T, M: Into<String>>(&mut self, field: &str, parsed: Result<T, M>) -> Option<T> {
        parsed.map_err(|m| self.error(field, m)).ok()
    }

    pub fn finish(self) -> Result<(), Problem> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Problem::validation(self.0))
        }
    }

    /// Fails with the 422 listing every error, or gives the parsed values: `fields` is
    /// one `Option` or a tuple of them, as [`Validation::field`] returned them.
    ///
    /// A `None` without an error recorded is a bug of the caller, answered 500 and
    /// logged, never a panic.
    pub fn finish_with<F: Parsed>(self, fields: F) -> Result<F::Values, Problem> {
        self.finish()?;
        fields.values().ok_or_else(|| {
            tracing::error!("a field parsed to nothing without an error");
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The request could not be read.",
            )
        })
    }
}

/// Values from [`Validation::field`] (an `Option`, or a tuple of them), all present
/// once no error was recorded.
pub trait Parsed {
    type Values;
    fn values(self) -> Option<Self::Values>;
}

impl<A> Parsed for Option<A> {
    type Values = A;
    fn values(self) -> Option<A> {
        self
    }
}

macro_rules! parsed_tuple {
    ($($t:ident $v:ident),+) => {
        impl<$($t),+> Parsed for ($(Option<$t>,)+) {
            type Values = ($($t,)+);
            fn values(self) -> Option<Self::Values> {
                let ($($v,)+) = self;
                Some(($($v?,)+))
            }
        }
    };
}

parsed_tuple!(A a, B b);
parsed_tuple!(A a, B b, C c);
parsed_tuple!(A a, B b, C c, D d);

/// A JSON body whose failures are problem+json: 415 without a JSON content type, 400
/// for malformed JSON, 413 when too large, 422 naming the field for missing, unknown
/// or mistyped fields.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| m.trim().to_ascii_lowercase())
            .is_some_and(|m| {
                m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
            });
        if !is_json {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Expected a body with Content-Type: application/json.",
            )
            .kind("unsupported-media-type"));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "The request body is too large.",
                )
                .kind("too-large")
            } else {
                Problem::bad_request(format!("Could not read the request body: {e}"))
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses a JSON document into `T` with problem+json failures. A request body is a JSON
/// object (serde would also fill a struct from an array), and its text holds no NUL
/// character (PostgreSQL cannot store one).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{') {
        return Err(Problem::invalid_field("body", "must be a JSON object"));
    }
    if has_nul_escape(bytes) {
        let field = serde_json::from_slice::<Value>(bytes)
            .ok()
            .and_then(|v| nul_path(&v, String::new()))
            .unwrap_or_else(|| "body".into());
        return Err(Problem::invalid_field(
            &field,
            "must not contain the NUL character (\\u0000)",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de);
    if value.is_ok() {
        de.end().map_err(|e| {
            Problem::bad_request(format!("The body is not valid JSON: {e}")).kind("malformed-json")
        })?;
    }
    value.map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return Problem::bad_request(format!("The body is not valid JSON: {inner}"))
                .kind("malformed-json");
        }
        let message = strip_position(&inner.to_string());
        let field = match message
            .strip_prefix("missing field `")
            .and_then(|m| m.split('`').next())
        {
            Some(missing) if path == "." => missing.to_owned(),
            Some(missing) => format!("{path}.{missing}"),
            None if path == "." => "body".to_owned(),
            None => path,
        };
        Problem::validation(vec![FieldError { field, message }])
    })
}

/// Whether the JSON text has a `\\u0000` escape (not an escaped backslash before `u0000`):
/// the only way a JSON document can carry a NUL character.
fn has_nul_escape(bytes: &[u8]) -> bool {
    const ESCAPE: &[u8] = b"\\u0000";
    let mut from = 0;
    while let Some(at) = bytes[from..]
        .windows(ESCAPE.len())
        .position(|w| w == ESCAPE)
        .map(|i| from + i)
    {
        let backslashes = bytes[..at]
            .iter()
            .rev()
            .take_while(|b| **b == b'\\')
            .count();
        if backslashes % 2 == 0 {
            return true;
        }
        from = at + 1;
    }
    false
}

/// The path of the first string (value or key) holding a NUL character.
fn nul_path(value: &Value, path: String) -> Option<String> {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        Value::String(s) if s.contains('\0') => {
            Some(if path.is_empty() { "body".into() } else { path })
        }
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            if k.contains('\0') {
                // Named with the NUL escaped: a problem holds no NUL either.
                Some(join(&k.replace('\0', "\\u0000")))
            } else {
                nul_path(v, join(k))
            }
        }),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| nul_path(v, join(&i.to_string()))),
        _ => None,
    }
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Path parameters whose failures (an id that is not a UUID) are problem+json.
#[derive(Debug, Clone, Copy, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(Problem))]
pub struct ApiPath<T>(pub T);

impl From<PathRejection> for Problem {
    fn from(e: PathRejection) -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            format!("Invalid path: {}", e.body_text()),
        )
        .kind("bad-path")
    }
}

/// Query parameters whose failures are problem+json.
#[derive(Debug, Clone, Copy, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(Problem))]
pub struct ApiQuery<T>(pub T);

impl From<QueryRejection> for Problem {
    fn from(e: QueryRejection) -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            format!("Invalid query: {}", e.body_text()),
        )
        .kind("bad-query")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_extension_is_written_once_beside_the_standard_members() {
        let problem =
            Problem::conflict("illegal-status-change", "No.").with("order_status", "shipped");
        let body = serde_json::to_string(&problem).unwrap();
        assert_eq!(body.matches("\"status\"").count(), 1, "{body}");
        let json: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["status"], 409);
        assert_eq!(json["order_status"], "shipped");
    }

    #[test]
    #[should_panic(expected = "`status` is a problem member")]
    fn an_extension_named_like_a_standard_member_is_refused() {
        let _ = Problem::conflict("illegal-status-change", "No.").with("status", "shipped");
    }

    #[test]
    fn finish_with_gives_the_values_or_every_error_and_never_panics() {
        let mut v = Validation::new();
        let a = v.field("a", Ok::<_, &str>(1));
        let b = v.field("b", Ok::<_, &str>("two"));
        assert_eq!(v.finish_with((a, b)).unwrap(), (1, "two"));

        let mut v = Validation::new();
        let a = v.field("a", Err::<i32, _>("must be positive"));
        let b = v.field("b", Err::<i32, _>("is missing"));
        let problem = v.finish_with((a, b)).unwrap_err();
        assert_eq!(problem.status, 422);
        let fields: Vec<_> = problem.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["a", "b"]);

        let none: Option<i32> = None;
        let problem = Validation::new().finish_with(none).unwrap_err();
        assert_eq!(problem.status, 500);
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only parsed")]
    struct Body {
        email: String,
        price: Price,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only parsed")]
    struct Price {
        amount: i64,
    }

    #[test]
    fn a_body_must_be_an_object() {
        for body in [
            &b"[\"a\", {\"amount\": 1}]"[..],
            b" 12",
            b"\"text\"",
            b"null",
        ] {
            let p = parse_json::<Body>(body).unwrap_err();
            assert_eq!((p.status, p.errors[0].field.as_str()), (422, "body"));
        }
    }

    #[test]
    fn nul_characters_are_refused_by_field_but_an_escaped_backslash_is_text() {
        let p =
            parse_json::<Body>(br#"{"email": "a\u0000b", "price": {"amount": 1}}"#).unwrap_err();
        assert_eq!((p.status, p.errors[0].field.as_str()), (422, "email"));
        let p = parse_json::<Vec<Body>>(br#"{"x": [{"email": "\u0000"}]}"#).unwrap_err();
        assert_eq!(p.errors[0].field, "x.0.email");
        let p = parse_json::<Body>(br#"{"price": [{"a\u0000b": 1}]}"#).unwrap_err();
        assert_eq!(p.errors[0].field, "price.0.a\\u0000b");
        assert!(!p.detail.contains('\0'), "{}", p.detail);
        let body: Body = parse_json(br#"{"email": "a\\u0000b", "price": {"amount": 1}}"#).unwrap();
        assert_eq!(body.email, "a\\u0000b");
    }

    #[test]
    fn malformed_json_is_a_400() {
        let p = parse_json::<Body>(b"{\"email\": ").unwrap_err();
        assert_eq!(p.status, 400);
    }

    #[test]
    fn missing_fields_are_named() {
        let p = parse_json::<Body>(br#"{"price": {"amount": 1}}"#).unwrap_err();
        assert_eq!(p.status, 422);
        assert_eq!(p.errors[0].field, "email");
        let p = parse_json::<Body>(br#"{"email": "a", "price": {}}"#).unwrap_err();
        assert_eq!(p.errors[0].field, "price.amount");
    }

    #[test]
    fn mistyped_and_unknown_fields_are_named() {
        let p = parse_json::<Body>(br#"{"email": "a", "price": {"amount": "x"}}"#).unwrap_err();
        assert_eq!(p.errors[0].field, "price.amount");
        let p = parse_json::<Body>(br#"{"email": "a", "price": {"amount": 1}, "admin": true}"#)
            .unwrap_err();
        assert_eq!(p.status, 422);
        assert!(
            p.errors[0].message.contains("unknown field `admin`"),
            "{:?}",
            p.errors
        );
    }
}
