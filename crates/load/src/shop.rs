//! The mix: shoppers arrive at a fixed rate (open loop: a slow answer does not slow
//! the arrivals), each browses the catalog, views a product, opens a cart, adds and
//! sometimes removes items (one of them a scarce product many race for), checks out
//! with a good, a declined or a transiently failing card (a 503 `checkout-busy` is
//! retried after its Retry-After with the same Idempotency-Key, as a client should),
//! and follows the order; the vendor ships and delivers what is confirmed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use rand::Rng;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::fleet::Fleet;

/// The run's own vendor and products, made at the start.
pub struct Shop {
    pub vendor_id: Uuid,
    pub member_token: String,
    /// Ample stock: every shopper takes one.
    pub ample: Uuid,
    /// Added and removed again by some shoppers.
    pub extra: Uuid,
    /// Scarce: fewer units than shoppers who want one.
    pub scarce: Uuid,
    pub scarce_stock: i64,
    pub ample_stock: i64,
    /// Product ids of the catalog's first page, for browsing.
    pub catalog: Vec<String>,
}

/// Card tokens of the test gateway and their share of checkouts (percent).
pub const CARDS: [(&str, u32); 3] = [("tok_visa", 80), ("tok_declined", 10), ("tok_error", 10)];

/// A checkout the fleet accepted (202).
#[derive(Debug, Clone)]
pub struct Placed {
    pub order_id: Uuid,
    pub token: String,
    pub card: &'static str,
    pub scarce: bool,
    pub accepted_at: DateTime<Utc>,
}

const TERMINAL: [&str; 6] = [
    "confirmed",
    "shipped",
    "delivered",
    "payment_failed",
    "rejected",
    "cancelled",
];

pub fn is_terminal(status: &str) -> bool {
    TERMINAL.contains(&status)
}

impl Shop {
    pub async fn open(fleet: &Fleet, scarce_stock: i64) -> anyhow::Result<Self> {
        let admin = fleet.admin_login().await?;
        let run = Uuid::new_v4().simple().to_string();
        let vendor = fleet
            .call(
                None,
                Method::POST,
                format!("{}/api/vendors", fleet.vendor.pick()),
                Some(&admin),
                Some(&json!({"name": format!("Load {}", &run[..8]),
                             "email": format!("load-{}@load.marketplace.local", &run[..8])})),
                &[],
            )
            .await?;
        anyhow::ensure!(
            vendor.status == StatusCode::CREATED,
            "vendor: {}",
            vendor.body
        );
        let vendor_id: Uuid = vendor.body["id"].as_str().unwrap_or_default().parse()?;
        let ample_stock = 100_000_000;
        let mut products = Vec::new();
        for (name, stock) in [
            ("ample", ample_stock),
            ("extra", ample_stock),
            ("scarce", scarce_stock),
        ] {
            let p = fleet
                .call(
                    None,
                    Method::POST,
                    format!("{}/api/vendors/{vendor_id}/products", fleet.vendor.pick()),
                    Some(&admin),
                    Some(
                        &json!({"sku": format!("LOAD-{}-{}", &run[..8], name.to_uppercase()),
                                 "name": format!("Load {name}"), "description": "made by mp-load",
                                 "price": {"amount": 250, "currency": "EUR"},
                                 "initial_stock": stock, "low_stock_threshold": 0}),
                    ),
                    &[],
                )
                .await?;
            anyhow::ensure!(p.status == StatusCode::CREATED, "product: {}", p.body);
            let id: Uuid = p.body["id"].as_str().unwrap_or_default().parse()?;
            for inventory in fleet.inventory.all() {
                fleet
                    .wait_ok(
                        &format!("{inventory}/api/inventory/{id}"),
                        &admin,
                        Duration::from_secs(30),
                    )
                    .await
                    .context("the stock item of a new product")?;
            }
            products.push(id);
        }
        let page = fleet
            .call(
                None,
                Method::GET,
                format!("{}/api/products?limit=20", fleet.vendor.pick()),
                None,
                None,
                &[],
            )
            .await?;
        let catalog = page.body["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|p| p["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            vendor_id,
            member_token: fleet.member_token(vendor_id),
            ample: products[0],
            extra: products[1],
            scarce: products[2],
            scarce_stock,
            ample_stock,
            catalog,
        })
    }

    /// One shopper; the order when the checkout was accepted.
    pub async fn shopper(&self, fleet: &Fleet, token: String, scarce_share: f64) -> Option<Placed> {
        let (view, remove, scarce, card) = {
            let mut rng = rand::thread_rng();
            let view = (!self.catalog.is_empty())
                .then(|| self.catalog[rng.gen_range(0..self.catalog.len())].clone());
            let mut pick = rng.gen_range(0..100);
            let card = CARDS
                .iter()
                .find(|(_, share)| {
                    let hit = pick < *share;
                    pick = pick.saturating_sub(*share);
                    hit
                })
                .map_or("tok_visa", |(card, _)| card);
            (view, rng.gen_bool(0.3), rng.gen_bool(scarce_share), card)
        };
        let vendor = fleet.vendor.pick();
        fleet
            .call(
                Some("browse"),
                Method::GET,
                format!("{vendor}/api/products?limit=20"),
                None,
                None,
                &[],
            )
            .await
            .ok()?;
        if let Some(id) = view {
            fleet
                .call(
                    Some("view_product"),
                    Method::GET,
                    format!("{vendor}/api/products/{id}"),
                    None,
                    None,
                    &[],
                )
                .await
                .ok()?;
        }
        let cart = fleet.cart.pick();
        let cart_id = filled_cart(fleet, cart, &token, self.ample, 1).await?;
        if remove {
            let _ = add_item(fleet, cart, &cart_id, &token, self.extra, 2).await;
            let _ = fleet
                .call(
                    Some("remove_item"),
                    Method::DELETE,
                    format!("{cart}/api/carts/{cart_id}/items/{}", self.extra),
                    Some(&token),
                    None,
                    &[],
                )
                .await;
        }
        let got_scarce = if scarce {
            // 409 with the available quantity: sold out, the shopper goes on without it.
            add_item(fleet, cart, &cart_id, &token, self.scarce, 1)
                .await
                .is_ok_and(|a| a.status.is_success())
        } else {
            false
        };
        let key = Uuid::new_v4().to_string();
        for _ in 0..8 {
            let a = checkout(fleet, cart, &cart_id, &token, card, &key)
                .await
                .ok()?;
            match a.status {
                StatusCode::ACCEPTED => {
                    return Some(Placed {
                        order_id: a.body["order_id"].as_str()?.parse().ok()?,
                        token,
                        card,
                        scarce: got_scarce,
                        accepted_at: Utc::now(),
                    });
                }
                StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::CONFLICT
                | StatusCode::TOO_MANY_REQUESTS => {
                    let wait = a.retry_after.unwrap_or(Duration::from_millis(500));
                    tokio::time::sleep(wait.min(Duration::from_secs(5))).await;
                }
                _ => return None,
            }
        }
        None
    }

    /// Follows an order to its end (up to `timeout`), then as the vendor ships it, and
    /// delivers half of the shipped ones. The 202 to confirmed goes into the figures.
    pub async fn follow(&self, fleet: &Fleet, placed: &Placed, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let order = loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if let Ok(a) = fleet
                .call(
                    None,
                    Method::GET,
                    format!("{}/api/orders/{}", fleet.order.pick(), placed.order_id),
                    Some(&placed.token),
                    None,
                    &[],
                )
                .await
                && a.body["status"].as_str().is_some_and(is_terminal)
            {
                break a.body;
            }
            if Instant::now() > deadline {
                return;
            }
        };
        if order["status"] != "confirmed" {
            return;
        }
        if let Some(at) = confirmed_at(&order) {
            let ms = (at - placed.accepted_at).num_microseconds().unwrap_or(0) as f64 / 1000.0;
            fleet.stats.sample("checkout_to_confirmed", ms.max(0.0));
        }
        let ship = rand::thread_rng().gen_bool(0.5);
        if !ship {
            return;
        }
        let order_url = fleet.order.pick().to_owned();
        let shipped = fleet
            .call(
                Some("ship"),
                Method::POST,
                format!("{order_url}/api/orders/{}/ship", placed.order_id),
                Some(&self.member_token),
                Some(&json!({"carrier": "DHL", "tracking_number": format!("LOAD{}", placed.order_id.simple())})),
                &[],
            )
            .await;
        if shipped.is_ok_and(|a| a.status.is_success()) && rand::thread_rng().gen_bool(0.5) {
            let _ = fleet
                .call(
                    Some("deliver"),
                    Method::POST,
                    format!("{order_url}/api/orders/{}/deliver", placed.order_id),
                    Some(&self.member_token),
                    None,
                    &[],
                )
                .await;
        }
    }
}

/// Checks the cart out with the card `card` under the Idempotency-Key `key`.
pub async fn checkout(
    fleet: &Fleet,
    cart: &str,
    cart_id: &str,
    token: &str,
    card: &str,
    key: &str,
) -> anyhow::Result<crate::fleet::Answer> {
    let body = json!({
        "payment_token": card,
        "shipping_address": {"name": "Load Shopper", "line1": "1 Load Street", "city": "Berlin",
                             "postal_code": "10115", "country": "DE"}
    });
    fleet
        .call(
            Some("checkout"),
            Method::POST,
            format!("{cart}/api/carts/{cart_id}/checkout"),
            Some(token),
            Some(&body),
            &[("Idempotency-Key", key.to_owned())],
        )
        .await
}

/// A cart of the customer `token` names holding `quantity` of `product`: its id.
pub async fn filled_cart(
    fleet: &Fleet,
    cart: &str,
    token: &str,
    product: Uuid,
    quantity: i64,
) -> Option<String> {
    let opened = fleet
        .call(
            Some("open_cart"),
            Method::POST,
            format!("{cart}/api/carts"),
            Some(token),
            None,
            &[],
        )
        .await
        .ok()?;
    let cart_id = opened.body["id"].as_str()?.to_owned();
    let added = add_item(fleet, cart, &cart_id, token, product, quantity)
        .await
        .ok()?;
    added.status.is_success().then_some(cart_id)
}

pub async fn add_item(
    fleet: &Fleet,
    cart: &str,
    cart_id: &str,
    token: &str,
    product: Uuid,
    quantity: i64,
) -> anyhow::Result<crate::fleet::Answer> {
    fleet
        .call(
            Some("add_item"),
            Method::POST,
            format!("{cart}/api/carts/{cart_id}/items"),
            Some(token),
            Some(&json!({"product_id": product, "quantity": quantity})),
            &[],
        )
        .await
}

/// Registers a customer with the email and phone its notifications go to: its id,
/// email and password, or `None` when the registration failed.
pub async fn new_customer(fleet: &Fleet, i: usize) -> Option<(Uuid, String, &'static str)> {
    let email = format!("shopper-{}@load.marketplace.local", Uuid::new_v4().simple());
    let password = "load shopper password";
    let made = fleet
        .call(
            None,
            Method::POST,
            format!("{}/api/customers", fleet.customer.pick()),
            None,
            Some(&json!({"email": email, "password": password,
                         "name": format!("Shopper {i}"), "phone": "+4915112345678"})),
            &[],
        )
        .await
        .ok()?;
    if made.status != StatusCode::CREATED {
        return None;
    }
    let id = made.body["id"].as_str()?.parse().ok()?;
    Some((id, email, password))
}

/// Registers `n` customers ([`new_customer`]) and logs each in, 8 at a time: one per
/// shopper, so that no two share a cart. Their access tokens; a registration or login
/// that fails is left out.
pub async fn register(fleet: &Fleet, n: usize) -> Vec<String> {
    use futures::StreamExt;
    futures::stream::iter(0..n)
        .map(|i| async move {
            let (_, email, password) = new_customer(fleet, i).await?;
            let login = fleet
                .call(
                    None,
                    Method::POST,
                    format!("{}/api/auth/login", fleet.customer.pick()),
                    None,
                    Some(&json!({"email": email, "password": password})),
                    &[],
                )
                .await
                .ok()?;
            login.body["access_token"].as_str().map(str::to_owned)
        })
        .buffer_unordered(8)
        .filter_map(|t| async move { t })
        .collect()
        .await
}

/// When the order's history says it was confirmed.
pub fn confirmed_at(order: &Value) -> Option<DateTime<Utc>> {
    order["status_history"]
        .as_array()?
        .iter()
        .find(|h| h["to"] == "confirmed")?["at"]
        .as_str()?
        .parse()
        .ok()
}

/// The `shoppers` (their tokens) arriving at `rate` per second, each order followed to its end; the
/// accepted orders.
pub async fn run(
    fleet: Arc<Fleet>,
    shop: Arc<Shop>,
    rate: f64,
    shoppers: Vec<String>,
    scarce_share: f64,
) -> Vec<Placed> {
    let total = shoppers.len();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    for token in shoppers {
        ticker.tick().await;
        let (fleet, shop) = (fleet.clone(), shop.clone());
        tasks.spawn(async move {
            let placed = shop.shopper(&fleet, token, scarce_share).await?;
            shop.follow(&fleet, &placed, Duration::from_secs(60)).await;
            Some(placed)
        });
    }
    let mut placed = Vec::with_capacity(total);
    while let Some(result) = tasks.join_next().await {
        if let Ok(Some(p)) = result {
            placed.push(p);
        }
    }
    placed
}
