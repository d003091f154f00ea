//! The cart service: carts, their items and checkout.

use chrono::{DateTime, Utc};
use mp_events::Money;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Address;
use crate::client::{Api, ApiResult, Reply};

/// A line of a cart.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CartItem {
    pub product_id: Uuid,
    pub vendor_id: Uuid,
    pub name: String,
    pub quantity: i64,
    /// The current catalog price.
    pub unit_price: Money,
    pub line_total: Money,
    /// The unit price when the line was added.
    pub added_price: Money,
    pub price_changed: bool,
    pub added_at: DateTime<Utc>,
}

/// A cart with its lines and totals.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Cart {
    pub id: Uuid,
    pub customer_id: Uuid,
    /// `open`, `checked_out` or `abandoned`.
    pub status: String,
    pub currency: String,
    pub items: Vec<CartItem>,
    pub subtotal: Money,
    pub tax_rate_bps: u32,
    pub tax: Money,
    pub total: Money,
    pub order_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_activity_at: DateTime<Utc>,
}

impl Cart {
    /// The line of `product_id`, if the cart has one.
    pub fn line(&self, product_id: Uuid) -> Option<&CartItem> {
        self.items.iter().find(|i| i.product_id == product_id)
    }
}

/// `POST /api/carts/{id}/items`.
#[derive(Debug, Clone, Serialize)]
pub struct AddItem {
    pub product_id: Uuid,
    pub quantity: i64,
}

/// `POST /api/carts/{id}/checkout`.
#[derive(Debug, Clone, Serialize)]
pub struct Checkout {
    pub payment_token: String,
    pub shipping_address: Address,
}

impl Checkout {
    /// A checkout paying with `payment_token`, shipped to [`Address::default`].
    pub fn paying_with(payment_token: &str) -> Self {
        Self {
            payment_token: payment_token.to_owned(),
            shipping_address: Address::default(),
        }
    }
}

/// The answer to an accepted checkout (its `Location` names the order).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CheckoutAccepted {
    pub order_id: Uuid,
}

/// The cart service's API.
#[derive(Debug, Clone)]
pub struct CartApi(pub Api);

impl CartApi {
    /// `POST /api/carts`: the caller's open cart, 200 when it existed, 201 when new.
    pub async fn open(&self, token: &str) -> ApiResult<Reply<Cart>> {
        let api = &self.0;
        api.reply(api.request(Method::POST, "/api/carts", Some(token)))
            .await
    }

    /// `GET /api/carts/{id}`.
    pub async fn get(&self, token: Option<&str>, cart_id: Uuid) -> ApiResult<Cart> {
        self.0.get(&format!("/api/carts/{cart_id}"), token).await
    }

    /// `POST /api/carts/{id}/items`: adds to the product's line or makes one.
    pub async fn add_item(&self, token: &str, cart_id: Uuid, item: &AddItem) -> ApiResult<Cart> {
        self.0
            .json(
                Method::POST,
                &format!("/api/carts/{cart_id}/items"),
                Some(token),
                item,
                StatusCode::OK,
            )
            .await
    }

    /// `PATCH /api/carts/{id}/items/{product_id}`: the line's new quantity.
    pub async fn set_quantity(
        &self,
        token: &str,
        cart_id: Uuid,
        product_id: Uuid,
        quantity: i64,
    ) -> ApiResult<Cart> {
        self.0
            .json(
                Method::PATCH,
                &format!("/api/carts/{cart_id}/items/{product_id}"),
                Some(token),
                &serde_json::json!({ "quantity": quantity }),
                StatusCode::OK,
            )
            .await
    }

    /// `DELETE /api/carts/{id}/items/{product_id}`.
    pub async fn remove_item(
        &self,
        token: &str,
        cart_id: Uuid,
        product_id: Uuid,
    ) -> ApiResult<Cart> {
        let api = &self.0;
        let path = format!("/api/carts/{cart_id}/items/{product_id}");
        api.send(
            api.request(Method::DELETE, &path, Some(token)),
            StatusCode::OK,
        )
        .await
    }

    /// `POST /api/carts/{id}/checkout` under `key` (none sends no Idempotency-Key):
    /// 202 with the order, its `Location` and, for a replay, `Idempotent-Replayed`.
    /// `body` is a [`Checkout`], or any JSON for the cases a typed body cannot write.
    pub async fn checkout(
        &self,
        token: &str,
        cart_id: Uuid,
        key: Option<&str>,
        body: &(impl Serialize + ?Sized),
    ) -> ApiResult<Reply<CheckoutAccepted>> {
        let api = &self.0;
        let mut req = api
            .request(
                Method::POST,
                &format!("/api/carts/{cart_id}/checkout"),
                Some(token),
            )
            .json(body);
        if let Some(key) = key {
            req = req.header("Idempotency-Key", key);
        }
        api.send_reply(req, StatusCode::ACCEPTED).await
    }
}
