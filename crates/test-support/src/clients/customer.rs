//! The customer service: registration, profiles and sessions.

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::client::{Api, ApiResult};

/// `POST /api/customers`.
#[derive(Debug, Clone, Serialize)]
pub struct Register {
    pub email: String,
    pub password: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

/// `PATCH /api/customers/me`: the fields to change; an absent field stays as it is.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UpdateProfile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `Some(None)` sends `null`, which removes the phone number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<Option<String>>,
}

/// A customer's profile.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Customer {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub phone: Option<String>,
    pub roles: Vec<String>,
    pub vendor_ids: Vec<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The tokens of a session.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
    /// `Bearer`.
    pub token_type: String,
    /// Seconds the access token lives.
    pub expires_in: u64,
}

/// The customer service's API.
#[derive(Debug, Clone)]
pub struct CustomerApi(pub Api);

impl CustomerApi {
    /// `POST /api/customers` (201). `register` is a [`Register`], or any JSON for the
    /// cases a typed body cannot write.
    pub async fn register(&self, register: &(impl Serialize + ?Sized)) -> ApiResult<Customer> {
        self.0
            .json(
                Method::POST,
                "/api/customers",
                None,
                register,
                StatusCode::CREATED,
            )
            .await
    }

    /// `POST /api/auth/login`.
    pub async fn login(&self, email: &str, password: &str) -> ApiResult<Tokens> {
        let body = serde_json::json!({ "email": email, "password": password });
        self.0
            .json(Method::POST, "/api/auth/login", None, &body, StatusCode::OK)
            .await
    }

    /// `POST /api/auth/refresh`: the next tokens of the session.
    pub async fn refresh(&self, refresh_token: &str) -> ApiResult<Tokens> {
        let body = serde_json::json!({ "refresh_token": refresh_token });
        self.0
            .json(
                Method::POST,
                "/api/auth/refresh",
                None,
                &body,
                StatusCode::OK,
            )
            .await
    }

    /// `POST /api/auth/logout` (204).
    pub async fn logout(&self, token: &str) -> ApiResult<()> {
        let api = &self.0;
        api.send(
            api.request(Method::POST, "/api/auth/logout", Some(token)),
            StatusCode::NO_CONTENT,
        )
        .await
    }

    /// `GET /api/customers/me`.
    pub async fn me(&self, token: &str) -> ApiResult<Customer> {
        self.0.get("/api/customers/me", Some(token)).await
    }

    /// `GET /api/customers/{id}`.
    pub async fn customer(&self, token: &str, customer_id: Uuid) -> ApiResult<Customer> {
        self.0
            .get(&format!("/api/customers/{customer_id}"), Some(token))
            .await
    }

    /// `PATCH /api/customers/me` with the fields to change: an [`UpdateProfile`], or
    /// any JSON for the cases a typed body cannot write.
    pub async fn update_me(
        &self,
        token: &str,
        change: &(impl Serialize + ?Sized),
    ) -> ApiResult<Customer> {
        self.0
            .json(
                Method::PATCH,
                "/api/customers/me",
                Some(token),
                change,
                StatusCode::OK,
            )
            .await
    }
}
