//! `mp-load --checkout-rates 50,100,150,300`: the checkout saga alone, at rising rates,
//! for DESIGN's target (300 completed checkouts/s; p99 under 250 ms at 150/s).
//!
//! Registered customers (one per checkout of the largest rate, reused at every rate;
//! their tokens minted for their ids, so no login is measured) each fill a cart with
//! one unit of the run's ample product first; then the carts are checked out at the
//! rate, open loop, with a good card. A 503 `checkout-busy` is counted as shed, not
//! retried. Per rate: accepted, shed, confirmed, the confirmations whose email and SMS
//! were sent, completed checkouts/s (confirmations over the time from the first 202 to
//! the last confirmation), p50/p99 from the 202 to `confirmed` (the client's clock at
//! the 202, the order service's at the confirmation: the same host), and the
//! [`profile`](crate::profile) of one completed checkout: CPU by process, commits,
//! events published and deliveries handled.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::fleet::Fleet;
use crate::profile::{PerUnit, Snapshot};
use crate::shop::{self, Shop, is_terminal};
use crate::stats::percentile;

/// One rate's figures.
#[derive(Debug, Serialize)]
pub struct RateFigures {
    pub offered_per_sec: f64,
    pub seconds: f64,
    pub carts: usize,
    pub accepted: usize,
    pub shed: usize,
    pub failed: usize,
    pub confirmed: usize,
    pub notified: usize,
    pub completed_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub per_checkout: PerUnit,
}

/// Customers for up to `n` checkouts at a time: their minted tokens.
pub async fn customers(fleet: &Fleet, n: usize) -> Vec<String> {
    futures::stream::iter(0..n)
        .map(|i| async move { shop::new_customer(fleet, i).await })
        .buffer_unordered(8)
        .filter_map(|c| async move { c.map(|(id, _, _)| fleet.customer_token(id)) })
        .collect()
        .await
}

/// When the order was confirmed, waiting up to `deadline`; `None` if it ended
/// otherwise or not in time.
async fn confirmed_at(
    fleet: &Fleet,
    token: &str,
    order_id: &str,
    deadline: Instant,
) -> Option<DateTime<Utc>> {
    loop {
        if let Ok(a) = fleet
            .call(
                None,
                Method::GET,
                format!("{}/api/orders/{order_id}", fleet.order.pick()),
                Some(token),
                None,
                &[],
            )
            .await
        {
            let status = a.body["status"].as_str().unwrap_or_default();
            if status == "confirmed" {
                return shop::confirmed_at(&a.body);
            }
            if is_terminal(status) {
                return None;
            }
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the order's confirmation email and SMS were both sent, waiting up to 30 s.
async fn notified(fleet: &Fleet, token: &str, order_id: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let sent = fleet
            .call(
                None,
                Method::GET,
                format!(
                    "{}/api/notifications?order_id={order_id}",
                    fleet.notification.pick()
                ),
                Some(token),
                None,
                &[],
            )
            .await
            .ok()
            .and_then(|a| a.body["items"].as_array().cloned())
            .is_some_and(|items: Vec<Value>| {
                ["email", "sms"].iter().all(|channel| {
                    items.iter().any(|n| {
                        n["channel"] == *channel
                            && n["template"] == "order_confirmed"
                            && n["status"] == "sent"
                    })
                })
            });
        if sent || Instant::now() > deadline {
            return sent;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One rate: fill the carts, check them out at `rate`, follow every order to its end.
pub async fn run_rate(
    fleet: &Arc<Fleet>,
    shop: &Shop,
    tokens: &[String],
    rate: f64,
    seconds: f64,
    run_dir: &Path,
    database_url: Option<&str>,
) -> RateFigures {
    let n = ((rate * seconds).round() as usize).min(tokens.len());
    // Carts first, 32 at a time: filling them is not what is measured.
    let carts: Vec<(String, String)> = futures::stream::iter(tokens[..n].iter().cloned())
        .map(|token| {
            let fleet = fleet.clone();
            let product = shop.ample;
            async move {
                let cart_id =
                    shop::filled_cart(&fleet, fleet.cart.pick(), &token, product, 1).await?;
                Some((token, cart_id))
            }
        })
        .buffer_unordered(32)
        .filter_map(|c| async move { c })
        .collect()
        .await;
    crate::profile::quiesce(fleet, Duration::from_secs(120)).await;
    let before = Snapshot::take(fleet, run_dir, database_url).await;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    let first = Utc::now();
    for (token, cart_id) in carts.iter().cloned() {
        ticker.tick().await;
        let fleet = fleet.clone();
        tasks.spawn(async move {
            let key = Uuid::new_v4().to_string();
            let a = shop::checkout(
                &fleet,
                fleet.cart.pick(),
                &cart_id,
                &token,
                "tok_visa",
                &key,
            )
            .await
            .ok()?;
            Some((a.status, a.body, token, Utc::now()))
        });
    }
    let (mut orders, mut shed, mut failed) = (Vec::new(), 0, 0);
    while let Some(result) = tasks.join_next().await {
        match result.ok().flatten() {
            Some((StatusCode::ACCEPTED, body, token, at)) => orders.push((
                token,
                body["order_id"].as_str().unwrap_or_default().to_owned(),
                at,
            )),
            Some((StatusCode::SERVICE_UNAVAILABLE, ..)) => shed += 1,
            _ => failed += 1,
        }
    }
    let accepted = orders.len();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut latencies = Vec::new();
    let mut last = first;
    let mut confirmed = Vec::new();
    let mut reads = futures::stream::iter(orders.into_iter().map(|(token, order_id, at)| {
        let fleet = fleet.clone();
        async move {
            let c = confirmed_at(&fleet, &token, &order_id, deadline).await;
            (token, order_id, at, c)
        }
    }))
    .buffer_unordered(16);
    while let Some((token, order_id, at, c)) = reads.next().await {
        if let Some(c) = c {
            latencies.push(((c - at).num_microseconds().unwrap_or(0) as f64 / 1000.0).max(0.0));
            last = last.max(c);
            confirmed.push((token, order_id));
        }
    }
    // PostgreSQL counts a backend's commits when it next reports (at most once a
    // second), and the last notifications may still be on their way.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = Snapshot::take(fleet, run_dir, database_url).await;
    let notified = futures::stream::iter(confirmed.iter().map(|(token, order_id)| {
        let fleet = fleet.clone();
        async move { notified(&fleet, token, order_id).await }
    }))
    .buffer_unordered(16)
    .filter(|ok| std::future::ready(*ok))
    .count()
    .await;
    latencies.sort_by(f64::total_cmp);
    let span = (last - first).num_milliseconds().max(1) as f64 / 1000.0;
    RateFigures {
        offered_per_sec: rate,
        seconds,
        carts: carts.len(),
        accepted,
        shed,
        failed,
        confirmed: confirmed.len(),
        notified,
        completed_per_sec: (latencies.len() as f64 / span * 10.0).round() / 10.0,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        per_checkout: before.per_unit(&after, confirmed.len()),
    }
}
