//! The notification service: the emails and SMS a reader may see.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::Page;
use crate::client::{Api, ApiResult};

/// One email or SMS and where its delivery stands.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Notification {
    pub id: Uuid,
    /// `email` or `sms`.
    pub channel: String,
    pub recipient: Option<String>,
    /// `customer` or `vendor`.
    pub audience: String,
    pub recipient_id: Uuid,
    pub template: String,
    pub subject: String,
    /// `pending`, `sent` or `failed`.
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub event_type: String,
    pub order_id: Option<Uuid>,
    pub product_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

/// The notification service's API.
#[derive(Debug, Clone)]
pub struct NotificationApi(pub Api);

impl NotificationApi {
    /// `GET /api/notifications{query}` (`""`, or `"?channel=sms&limit=1"`).
    pub async fn list(&self, token: &str, query: &str) -> ApiResult<Page<Notification>> {
        self.0
            .get(&format!("/api/notifications{query}"), Some(token))
            .await
    }
}
