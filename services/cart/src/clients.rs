//! The synchronous calls the cart makes: the vendor's catalog (product name, price,
//! vendor), inventory's reservations, and the order service's payment-method hand-off.
//!
//! Every call has the client's timeout. A dependency that cannot be reached or answers
//! 5xx is [`Unreachable`] (503 to the client, who may retry).

use std::sync::Arc;
use std::time::Duration;

use mp_common::TokenKeys;
use mp_common::client::ServiceClient;
use mp_events::{Money, Service};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

#[derive(Clone)]
pub struct Clients {
    pub inventory: ServiceClient,
    pub vendor: ServiceClient,
    pub order: ServiceClient,
}

impl Clients {
    pub fn new(
        keys: Arc<TokenKeys>,
        inventory_url: &str,
        vendor_url: &str,
        order_url: &str,
        timeout: Duration,
    ) -> Self {
        let client = |url: &str, target| {
            ServiceClient::new(url, Service::Cart, target, keys.clone(), timeout)
        };
        Self {
            inventory: client(inventory_url, Service::Inventory),
            vendor: client(vendor_url, Service::Vendor),
            order: client(order_url, Service::Order),
        }
    }
}

/// What the cart needs of a catalog product.
#[derive(Debug, Clone, Deserialize)]
pub struct CatalogProduct {
    pub id: Uuid,
    pub vendor_id: Uuid,
    pub name: String,
    pub price: Money,
    pub active: bool,
    pub revision: i64,
}

/// Inventory's answer to a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// Held; `generation` orders it among the reservation changes (0 when inventory does
    /// not say).
    Reserved { generation: i64 },
    /// Not enough stock: at most `available` could be held for this cart.
    Insufficient { available: i64 },
    /// The product is not for sale.
    Inactive,
    /// A later change of this cart's reservation of the product was made at the same
    /// time; that one stands.
    Superseded,
    /// Inventory has no stock item for the product (yet).
    Unknown,
}

/// A dependency could not be reached, or failed (it names which and how).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unreachable(pub String);

fn unavailable(what: &str, e: impl std::fmt::Display) -> Unreachable {
    Unreachable(format!("{what}: {e}"))
}

async fn body(resp: reqwest::Response) -> Value {
    resp.json().await.unwrap_or(Value::Null)
}

impl Clients {
    /// A product of the public catalog; `None` when there is no such product.
    pub async fn product(&self, product_id: Uuid) -> Result<Option<CatalogProduct>, Unreachable> {
        let resp = self
            .vendor
            // The public catalog: no service token.
            .public_request(Method::GET, &format!("/api/products/{product_id}"))
            .send()
            .await
            .map_err(|e| unavailable("vendor", e))?;
        match resp.status() {
            StatusCode::OK => resp
                .json()
                .await
                .map(Some)
                .map_err(|e| unavailable("vendor", e)),
            StatusCode::NOT_FOUND => Ok(None),
            other => Err(unavailable("vendor", format!("answered {other}"))),
        }
    }

    /// Sets the cart's reservation of the product to `quantity` (renews it when equal).
    pub async fn reserve(
        &self,
        cart_id: Uuid,
        product_id: Uuid,
        quantity: i64,
    ) -> Result<Reservation, Unreachable> {
        let resp = self
            .inventory
            .request(Method::POST, "/api/reservations")
            .json(&json!({"cart_id": cart_id, "product_id": product_id, "quantity": quantity}))
            .send()
            .await
            .map_err(|e| unavailable("inventory", e))?;
        let status = resp.status();
        let body = body(resp).await;
        match status {
            StatusCode::CREATED | StatusCode::OK => Ok(Reservation::Reserved {
                generation: body["generation"].as_i64().unwrap_or(0),
            }),
            StatusCode::CONFLICT if body["type"] == "/problems/product-inactive" => {
                Ok(Reservation::Inactive)
            }
            StatusCode::CONFLICT if body["type"] == "/problems/reservation-superseded" => {
                Ok(Reservation::Superseded)
            }
            StatusCode::CONFLICT => Ok(Reservation::Insufficient {
                available: body["available"].as_i64().unwrap_or(0),
            }),
            StatusCode::NOT_FOUND => Ok(Reservation::Unknown),
            other => Err(unavailable(
                "inventory",
                format!("answered {other}: {body}"),
            )),
        }
    }

    /// Puts the cart's reservation of the product back to `quantity` (0 ends it), but
    /// only while it is still the one of generation `replaces`: the undo of a change
    /// that lost a race. `false` when a later change stands (nothing was done).
    pub async fn restore(
        &self,
        cart_id: Uuid,
        product_id: Uuid,
        quantity: i64,
        replaces: i64,
    ) -> Result<bool, Unreachable> {
        let resp = self
            .inventory
            .request(Method::POST, "/api/reservations")
            .json(
                &json!({"cart_id": cart_id, "product_id": product_id, "quantity": quantity,
                          "replaces": replaces}),
            )
            .send()
            .await
            .map_err(|e| unavailable("inventory", e))?;
        match resp.status() {
            StatusCode::CREATED | StatusCode::OK => Ok(true),
            StatusCode::CONFLICT | StatusCode::NOT_FOUND => Ok(false),
            other => Err(unavailable("inventory", format!("undo answered {other}"))),
        }
    }

    /// Releases the cart's reservation of the product. Idempotent.
    pub async fn release(&self, cart_id: Uuid, product_id: Uuid) -> Result<(), Unreachable> {
        let resp = self
            .inventory
            .request(
                Method::DELETE,
                &format!("/api/reservations/{cart_id}/{product_id}"),
            )
            .send()
            .await
            .map_err(|e| unavailable("inventory", e))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(unavailable(
                "inventory",
                format!("release answered {}", resp.status()),
            ))
        }
    }

    /// Hands the payment token to the order service for `order_id`. Returns the status
    /// the order service answered (204 when it holds the token).
    pub async fn put_payment_method(
        &self,
        order_id: Uuid,
        customer_id: Uuid,
        cart_id: Uuid,
        payment_token: &SecretString,
    ) -> Result<StatusCode, Unreachable> {
        let resp = self
            .order
            .request(
                Method::PUT,
                &format!("/api/internal/orders/{order_id}/payment-method"),
            )
            .json(&json!({
                "customer_id": customer_id,
                "cart_id": cart_id,
                "payment_token": payment_token.expose_secret(),
            }))
            .send()
            .await
            // reqwest's error names the URL, never the body: the token stays out.
            .map_err(|e| unavailable("order", e))?;
        let status = resp.status();
        // 503 is the order service shedding load (`checkout-busy`): the caller says so.
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            return Err(unavailable(
                "order",
                format!("payment hand-off answered {status}"),
            ));
        }
        Ok(status)
    }
}
