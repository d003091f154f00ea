//! The inventory service: stock figures, adjustments, the ledger and reservations.

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Page;
use crate::client::{Api, ApiResult, Reply};

/// A product's stock figures.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Stock {
    pub product_id: Uuid,
    pub vendor_id: Uuid,
    pub sku: String,
    pub name: String,
    pub active: bool,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
    pub low_stock_threshold: i64,
    pub updated_at: DateTime<Utc>,
}

/// One entry of a product's ledger.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Movement {
    pub id: Uuid,
    pub product_id: Uuid,
    /// `initial_stock`, `adjustment`, `order` or `order_release`.
    pub kind: String,
    pub delta: i64,
    pub reason: String,
    pub reference: Option<String>,
    pub actor_id: Option<Uuid>,
    pub on_hand_after: i64,
    pub created_at: DateTime<Utc>,
}

/// `POST /api/inventory/{product_id}/adjustments`.
#[derive(Debug, Clone, Serialize)]
pub struct Adjustment {
    pub delta: i64,
    pub reason: String,
}

/// An adjustment's movement and the stock after it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Adjusted {
    pub movement: Movement,
    pub stock: Stock,
}

/// `POST /api/reservations`: a cart's hold on `quantity` units (its total, not a step).
#[derive(Debug, Clone, Serialize)]
pub struct Reserve {
    pub cart_id: Uuid,
    pub product_id: Uuid,
    pub quantity: i64,
    /// The generation this reservation replaces, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaces: Option<i64>,
}

impl Reserve {
    /// The cart's hold on `quantity` units, whatever it held before.
    pub fn new(cart_id: Uuid, product_id: Uuid, quantity: i64) -> Self {
        Self {
            cart_id,
            product_id,
            quantity,
            replaces: None,
        }
    }
}

/// A reservation as inventory holds it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Reservation {
    pub cart_id: Uuid,
    pub product_id: Uuid,
    pub quantity: i64,
    pub expires_at: DateTime<Utc>,
    /// What is left for others after this one.
    pub available: i64,
    pub generation: i64,
}

/// The inventory service's API.
#[derive(Debug, Clone)]
pub struct InventoryApi(pub Api);

impl InventoryApi {
    /// `GET /api/inventory/{product_id}`.
    pub async fn stock(&self, token: &str, product_id: Uuid) -> ApiResult<Stock> {
        self.0
            .get(&format!("/api/inventory/{product_id}"), Some(token))
            .await
    }

    /// `POST /api/inventory/{product_id}/adjustments` (201).
    pub async fn adjust(
        &self,
        token: &str,
        product_id: Uuid,
        adjustment: &Adjustment,
    ) -> ApiResult<Adjusted> {
        self.0
            .json(
                Method::POST,
                &format!("/api/inventory/{product_id}/adjustments"),
                Some(token),
                adjustment,
                StatusCode::CREATED,
            )
            .await
    }

    /// `GET /api/inventory/{product_id}/movements` with the query `query` (`""`, or
    /// `"?limit=2&cursor=..."`).
    pub async fn movements(
        &self,
        token: &str,
        product_id: Uuid,
        query: &str,
    ) -> ApiResult<Page<Movement>> {
        self.0
            .get(
                &format!("/api/inventory/{product_id}/movements{query}"),
                Some(token),
            )
            .await
    }

    /// `POST /api/reservations` (201, with `Location`).
    pub async fn reserve(&self, token: &str, reserve: &Reserve) -> ApiResult<Reply<Reservation>> {
        let api = &self.0;
        let req = api
            .request(Method::POST, "/api/reservations", Some(token))
            .json(reserve);
        api.send_reply(req, StatusCode::CREATED).await
    }

    /// `DELETE /api/reservations/{cart_id}/{product_id}` (204, also when nothing was held).
    pub async fn release(&self, token: &str, cart_id: Uuid, product_id: Uuid) -> ApiResult<()> {
        let api = &self.0;
        let path = format!("/api/reservations/{cart_id}/{product_id}");
        api.send(
            api.request(Method::DELETE, &path, Some(token)),
            StatusCode::NO_CONTENT,
        )
        .await
    }
}
