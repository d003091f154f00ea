//! What every service shares apart from events and logging (`mp_log`): configuration, metrics,
//! problem+json errors, token verification, service-to-service calls, the connection
//! pools, and the start-up and shutdown sequence ([`runtime`]).
//!
//! Error policy: handlers return [`ApiError`]. Client mistakes are [`Problem`]s with a
//! status and a clear message; a dependency that is down is a 503; anything else is an
//! internal error that is logged with its cause chain and shown to the client only as an
//! opaque `error_id`.

pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod contact;
pub mod health;
pub mod http;
pub mod keys;
pub mod metrics;
pub mod openapi;
pub mod page;
pub mod problem;
pub mod redis;
pub mod runtime;
pub mod serde_ext;
pub mod sql_enum;
pub mod supervisor;
pub mod text;
pub mod tls;

pub use auth::{AuthUser, Authenticator, ServiceCaller, TokenKeys};
pub use config::CommonConfig;
pub use page::{Page, PageQuery, PageRequest};
pub use problem::{
    ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, FieldError, Problem, Validation,
};
pub use runtime::{Infra, serve};
pub use supervisor::Worker;
