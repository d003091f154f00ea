//! `mp-load --add-to-cart-seconds N`: DESIGN's "add to cart, reservation included"
//! (2,000/s or more; p99 under 20 ms), closed loop. Each of `workers` customers (tokens
//! minted for fresh ids) opens a cart, then adds one more unit of the run's ample
//! product as fast as the answers come: every request is a cart write and a larger
//! reservation in Redis, through the cart service and the inventory service, as a
//! shopper's add is. Runs on the same cores as the fleet, so
//! the figure is what is left after the generator's own share.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use crate::fleet::Fleet;
use crate::shop::{self, Shop};
use crate::stats::percentile;

/// The most a cart line holds.
const MAX_QUANTITY: i64 = 999;

#[derive(Debug, Serialize)]
pub struct AddFigures {
    pub workers: usize,
    pub seconds: f64,
    pub ok: usize,
    pub refused: usize,
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

pub async fn run(fleet: &Arc<Fleet>, shop: &Shop, workers: usize, seconds: f64) -> AddFigures {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let results = futures::future::join_all((0..workers).map(|_| {
        let fleet = fleet.clone();
        let product = shop.ample;
        async move {
            let token = fleet.customer_token(Uuid::now_v7());
            let cart = fleet.cart.pick().to_owned();
            let (mut millis, mut refused) = (Vec::new(), 0);
            let Some(cart_id) = shop::filled_cart(&fleet, &cart, &token, product, 1).await else {
                return (millis, 1);
            };
            let mut quantity = 1;
            while Instant::now() < deadline {
                if quantity == MAX_QUANTITY {
                    // Back to one (not measured): a line holds at most 999.
                    let _ = fleet
                        .call(
                            None,
                            Method::PATCH,
                            format!("{cart}/api/carts/{cart_id}/items/{product}"),
                            Some(&token),
                            Some(&json!({"quantity": 1})),
                            &[],
                        )
                        .await;
                    quantity = 1;
                }
                let at = Instant::now();
                match shop::add_item(&fleet, &cart, &cart_id, &token, product, 1).await {
                    Ok(a) if a.status.is_success() => {
                        millis.push(at.elapsed().as_secs_f64() * 1000.0);
                        quantity += 1;
                    }
                    _ => refused += 1,
                }
            }
            (millis, refused)
        }
    }))
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let refused = results.iter().map(|(_, r)| r).sum();
    let mut all: Vec<f64> = results.into_iter().flat_map(|(m, _)| m).collect();
    all.sort_by(f64::total_cmp);
    AddFigures {
        workers,
        seconds,
        ok: all.len(),
        refused,
        per_sec: (all.len() as f64 / elapsed).round(),
        p50_ms: percentile(&all, 0.50),
        p99_ms: percentile(&all, 0.99),
    }
}
