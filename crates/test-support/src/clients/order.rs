//! The order service: orders as customers, vendor members and admins see them; cancel,
//! ship and deliver; the cart's payment hand-off; the admin's stuck orders.

use chrono::{DateTime, Utc};
use mp_events::Money;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Address, Page};
use crate::client::{Api, ApiResult};

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OrderItem {
    pub product_id: Uuid,
    pub vendor_id: Uuid,
    pub name: String,
    pub quantity: i64,
    pub unit_price: Money,
    pub line_total: Money,
}

/// One status change.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HistoryEntry {
    pub from: Option<String>,
    pub to: String,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
    /// `system`, or `customer:<id>`, `vendor:<id>`, `admin:<id>`.
    pub by: String,
}

/// One vendor's shipment.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Shipment {
    pub id: Uuid,
    pub vendor_id: Uuid,
    pub carrier: String,
    pub tracking_number: String,
    pub shipped_at: DateTime<Utc>,
}

/// One payment attempt.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Payment {
    /// `charge` or `refund`.
    pub kind: String,
    /// `succeeded`, `declined`, `failed` or `unknown`.
    pub status: String,
    pub amount: Money,
    pub error: Option<String>,
    pub at: DateTime<Utc>,
}

/// An order as the caller may see it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Order {
    pub id: Uuid,
    pub cart_id: Uuid,
    pub customer_id: Uuid,
    pub status: String,
    pub next_statuses: Vec<String>,
    pub items: Vec<OrderItem>,
    pub subtotal: Money,
    pub tax: Money,
    pub total: Money,
    pub shipping_address: Address,
    pub failure_reason: Option<String>,
    /// The saga step the order waits on.
    pub waiting_on: Option<String>,
    pub stock_committed: bool,
    pub status_history: Vec<HistoryEntry>,
    pub shipments: Vec<Shipment>,
    pub payments: Vec<Payment>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Order {
    /// The statuses the order went through, oldest first.
    pub fn statuses(&self) -> Vec<&str> {
        self.status_history.iter().map(|h| h.to.as_str()).collect()
    }
}

/// An order in a list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OrderSummary {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub status: String,
    pub items: Vec<OrderItem>,
    pub total: Money,
    pub waiting_on: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An order the saga has waited on for too long.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StuckOrder {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub status: String,
    pub waiting_on: String,
    pub waiting_since: DateTime<Utc>,
    pub total: Money,
}

/// `POST /api/orders/{id}/ship`.
#[derive(Debug, Clone, Serialize)]
pub struct Ship {
    pub carrier: String,
    pub tracking_number: String,
    /// Needed when the caller may ship for several of the order's vendors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor_id: Option<Uuid>,
}

impl Ship {
    pub fn new(carrier: &str, tracking_number: &str) -> Self {
        Self {
            carrier: carrier.into(),
            tracking_number: tracking_number.into(),
            vendor_id: None,
        }
    }

    /// The same shipment, for `vendor_id`'s lines.
    pub fn for_vendor(self, vendor_id: Uuid) -> Self {
        Self {
            vendor_id: Some(vendor_id),
            ..self
        }
    }
}

/// `PUT /api/internal/orders/{id}/payment-method` (the cart's hand-off).
#[derive(Debug, Clone, Serialize)]
pub struct PaymentMethod {
    pub customer_id: Uuid,
    pub cart_id: Uuid,
    pub payment_token: String,
}

/// The order service's API.
#[derive(Debug, Clone)]
pub struct OrderApi(pub Api);

impl OrderApi {
    /// `GET /api/orders{query}` (`""`, or `"?status=confirmed&limit=2"`).
    pub async fn list(&self, token: &str, query: &str) -> ApiResult<Page<OrderSummary>> {
        self.0
            .get(&format!("/api/orders{query}"), Some(token))
            .await
    }

    /// `GET /api/orders/{id}`.
    pub async fn get(&self, token: &str, order_id: Uuid) -> ApiResult<Order> {
        self.0
            .get(&format!("/api/orders/{order_id}"), Some(token))
            .await
    }

    /// `POST /api/orders/{id}/cancel`.
    pub async fn cancel(&self, token: &str, order_id: Uuid) -> ApiResult<Order> {
        self.post(token, &format!("/api/orders/{order_id}/cancel"))
            .await
    }

    /// `POST /api/orders/{id}/ship` (201).
    pub async fn ship(&self, token: &str, order_id: Uuid, ship: &Ship) -> ApiResult<Order> {
        self.0
            .json(
                Method::POST,
                &format!("/api/orders/{order_id}/ship"),
                Some(token),
                ship,
                StatusCode::CREATED,
            )
            .await
    }

    /// `POST /api/orders/{id}/deliver`.
    pub async fn deliver(&self, token: &str, order_id: Uuid) -> ApiResult<Order> {
        self.post(token, &format!("/api/orders/{order_id}/deliver"))
            .await
    }

    /// `PUT /api/internal/orders/{id}/payment-method` with a cart service token (204).
    pub async fn put_payment_method(
        &self,
        token: &str,
        order_id: Uuid,
        method: &PaymentMethod,
    ) -> ApiResult<()> {
        self.0
            .json(
                Method::PUT,
                &format!("/api/internal/orders/{order_id}/payment-method"),
                Some(token),
                method,
                StatusCode::NO_CONTENT,
            )
            .await
    }

    /// `GET /api/admin/orders/stuck{query}`.
    pub async fn stuck(&self, token: &str, query: &str) -> ApiResult<Page<StuckOrder>> {
        self.0
            .get(&format!("/api/admin/orders/stuck{query}"), Some(token))
            .await
    }

    async fn post(&self, token: &str, path: &str) -> ApiResult<Order> {
        let api = &self.0;
        api.send(api.request(Method::POST, path, Some(token)), StatusCode::OK)
            .await
    }
}
