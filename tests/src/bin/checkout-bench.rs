//! Checkout load for `scripts/bench-checkout.sh`, against the fleet `make up` runs.
//!
//! For each rate of `BENCH_RATES` (checkouts per second, default `50,100,150,300`) it
//! fills `rate * BENCH_SECONDS` carts first (one fresh customer each, with a token
//! signed with the user key `JWT_SIGNING_KEY`, one line of a bench product with ample stock), then checks
//! them out at that rate, open loop, and waits for every order to settle. It prints,
//! per rate: checkouts accepted, confirmed, completed per second (confirmations over
//! the time from the first 202 to the last confirmation) and p50/p99 from the 202 to
//! `confirmed` (the client's clock at the 202, the order service's at the confirmation:
//! the same host).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use mp_common::{CommonConfig, TokenKeys};
use serde_json::{Value, json};
use uuid::Uuid;

struct Bench {
    http: reqwest::Client,
    keys: TokenKeys,
    product_id: String,
    cart: String,
    order: String,
    notification: String,
}

fn url(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

impl Bench {
    fn customer_token(&self, id: Uuid) -> String {
        self.keys
            .user_token(id, Uuid::new_v4(), vec!["customer".into()], vec![])
            .0
    }

    /// A cart of a fresh customer holding one unit of the bench product.
    async fn fill_cart(&self) -> anyhow::Result<(String, String)> {
        let token = self.customer_token(Uuid::now_v7());
        let cart: Value = self
            .http
            .post(format!("{}/api/carts", self.cart))
            .bearer_auth(&token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let cart_id = cart["id"].as_str().unwrap_or_default().to_owned();
        self.http
            .post(format!("{}/api/carts/{cart_id}/items", self.cart))
            .bearer_auth(&token)
            .json(&json!({"product_id": self.product_id, "quantity": 1}))
            .send()
            .await?
            .error_for_status()?;
        Ok((token, cart_id))
    }

    /// Checks the cart out: the order id and when the 202 arrived, or `None` when the
    /// checkout was shed (503 `checkout-busy` with Retry-After).
    async fn checkout(
        &self,
        token: &str,
        cart_id: &str,
    ) -> anyhow::Result<Option<(String, DateTime<Utc>)>> {
        let resp = self
            .http
            .post(format!("{}/api/carts/{cart_id}/checkout", self.cart))
            .bearer_auth(token)
            .header("Idempotency-Key", Uuid::new_v4().to_string())
            .json(&json!({
                "payment_token": "tok_visa",
                "shipping_address": {"name": "Bench", "line1": "1 Load Street", "city": "Berlin",
                                     "postal_code": "10115", "country": "DE"}
            }))
            .send()
            .await?;
        if resp.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE
            && resp.headers().contains_key("retry-after")
        {
            return Ok(None);
        }
        let body: Value = resp.error_for_status()?.json().await?;
        Ok(Some((
            body["order_id"].as_str().unwrap_or_default().to_owned(),
            Utc::now(),
        )))
    }

    /// Whether the order's confirmation email and SMS are recorded.
    async fn notified(&self, token: &str, order_id: &str) -> bool {
        let list: Option<Value> = async {
            self.http
                .get(format!(
                    "{}/api/notifications?order_id={order_id}",
                    self.notification
                ))
                .bearer_auth(token)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()
        }
        .await;
        let Some(items) = list.as_ref().and_then(|l| l["items"].as_array()) else {
            return false;
        };
        ["email", "sms"].iter().all(|channel| {
            items
                .iter()
                .any(|n| n["channel"] == *channel && n["template"] == "order_confirmed")
        })
    }

    /// When the order was confirmed, waiting up to `deadline`; `None` if it ended
    /// otherwise or not in time.
    async fn confirmed_at(
        &self,
        token: &str,
        order_id: &str,
        deadline: Instant,
    ) -> Option<DateTime<Utc>> {
        loop {
            let order: Option<Value> = async {
                self.http
                    .get(format!("{}/api/orders/{order_id}", self.order))
                    .bearer_auth(token)
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()
            }
            .await;
            if let Some(order) = order {
                let status = order["status"].as_str().unwrap_or_default();
                if status == "confirmed" {
                    return order["status_history"]
                        .as_array()?
                        .iter()
                        .find(|h| h["to"] == "confirmed")?["at"]
                        .as_str()?
                        .parse()
                        .ok();
                }
                if matches!(status, "payment_failed" | "rejected" | "cancelled") {
                    return None;
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn setup(http: &reqwest::Client) -> anyhow::Result<String> {
    let (customer, vendor, inventory) = (
        url("CUSTOMER_URL", "http://127.0.0.1:5000"),
        url("VENDOR_URL", "http://127.0.0.1:5004"),
        url("INVENTORY_URL", "http://127.0.0.1:5003"),
    );
    let login: Value = http
        .post(format!("{customer}/api/auth/login"))
        .json(&json!({"email": std::env::var("ADMIN_EMAIL")?,
                      "password": std::env::var("ADMIN_PASSWORD")?}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let admin = login["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let catalog: Value = http
        .get(format!("{vendor}/api/products?limit=1"))
        .send()
        .await?
        .json()
        .await?;
    let vendor_id = catalog["items"][0]["vendor_id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("the catalog is empty: run make up (it seeds one)"))?
        .to_owned();
    let product: Value = http
        .post(format!("{vendor}/api/vendors/{vendor_id}/products"))
        .bearer_auth(&admin)
        .json(
            &json!({"sku": format!("CHECKOUT-BENCH-{}", Uuid::new_v4().simple()),
                      "name": "Checkout bench", "description": "for scripts/bench-checkout.sh",
                      "price": {"amount": 100, "currency": "EUR"},
                      "initial_stock": 100_000_000, "low_stock_threshold": 0}),
        )
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let product_id = product["id"].as_str().unwrap_or_default().to_owned();
    let started = Instant::now();
    while !http
        .get(format!("{inventory}/api/inventory/{product_id}"))
        .bearer_auth(&admin)
        .send()
        .await?
        .status()
        .is_success()
    {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "no stock item");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(product_id)
}

/// One rate's figures.
struct Figures {
    rate: u64,
    completed_per_sec: f64,
    p99_ms: f64,
}

async fn run_rate(bench: Arc<Bench>, rate: u64, seconds: u64) -> Figures {
    let n = (rate * seconds) as usize;
    // Carts first, 32 at a time: adding items is not what is measured.
    let mut carts = Vec::with_capacity(n);
    let mut pending = futures::stream::FuturesUnordered::new();
    use futures::StreamExt;
    for _ in 0..n {
        let b = bench.clone();
        pending.push(async move { b.fill_cart().await });
        if pending.len() >= 32
            && let Some(r) = pending.next().await
        {
            carts.extend(r.ok());
        }
    }
    while let Some(r) = pending.next().await {
        carts.extend(r.ok());
    }
    eprintln!(
        "checkout-bench: {} carts filled; checking out at {rate}/s from {}",
        carts.len(),
        Utc::now().format("%H:%M:%S%.3f")
    );
    // Checkouts at the rate, open loop; the orders are read afterwards (the latency
    // comes from the timestamps, so reading late changes nothing and loads nothing).
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    let first = Utc::now();
    for (token, cart_id) in carts {
        ticker.tick().await;
        let b = bench.clone();
        tasks.spawn(async move {
            match b.checkout(&token, &cart_id).await {
                Ok(Some((order_id, at))) => Ok(Some((token, order_id, at))),
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            }
        });
    }
    let (mut orders, mut shed, mut failed) = (Vec::with_capacity(n), 0, 0);
    while let Some(result) = tasks.join_next().await {
        match result {
            Ok(Ok(Some(order))) => orders.push(order),
            Ok(Ok(None)) => shed += 1,
            _ => failed += 1,
        }
    }
    let accepted = orders.len();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut reads = futures::stream::iter(orders.into_iter().map(|(token, order_id, at)| {
        let b = bench.clone();
        async move {
            let confirmed = b.confirmed_at(&token, &order_id, deadline).await;
            (token, order_id, at, confirmed)
        }
    }))
    .buffer_unordered(16);
    let (mut latencies, mut last, mut confirmed_orders) = (Vec::new(), first, Vec::new());
    while let Some((token, order_id, at, confirmed)) = reads.next().await {
        if let Some(c) = confirmed {
            latencies.push((c - at).num_microseconds().unwrap_or(0) as f64 / 1000.0);
            last = last.max(c);
            confirmed_orders.push((token, order_id));
        }
    }
    // The confirmation email and SMS of each confirmed order (read after the run: the
    // notification service records them within the same hops).
    let notified = futures::stream::iter(confirmed_orders.iter().map(|(token, order_id)| {
        let b = bench.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !b.notified(token, order_id).await {
                if Instant::now() > deadline {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            true
        }
    }))
    .buffer_unordered(16)
    .filter(|ok| std::future::ready(*ok))
    .count()
    .await;
    latencies.sort_by(f64::total_cmp);
    let span = (last - first).num_milliseconds().max(1) as f64 / 1000.0;
    let figures = Figures {
        rate,
        completed_per_sec: latencies.len() as f64 / span,
        p99_ms: percentile(&latencies, 0.99),
    };
    println!(
        "checkout-bench: {rate:>4}/s offered for {seconds}s: {accepted}/{n} accepted, {shed} shed \
         (503 checkout-busy), {failed} failed, {} confirmed, {notified} with email and SMS \
         recorded, {:.0} completed/s, 202->confirmed p50 {:.1} ms p99 {:.1} ms",
        latencies.len(),
        figures.completed_per_sec,
        percentile(&latencies, 0.50),
        figures.p99_ms,
    );
    figures
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(256)
        .build()?;
    let product_id = setup(&http).await?;
    let bench = Arc::new(Bench {
        http,
        keys: TokenKeys::from_config(&CommonConfig::from_env())?,
        product_id,
        cart: url("CART_URL", "http://127.0.0.1:5005"),
        order: url("ORDER_URL", "http://127.0.0.1:5001"),
        notification: url("NOTIFICATION_URL", "http://127.0.0.1:5002"),
    });
    let seconds: u64 = url("BENCH_SECONDS", "10").parse()?;
    let rates: Vec<u64> = url("BENCH_RATES", "50,100,150,300")
        .split(',')
        .map(|r| r.trim().parse())
        .collect::<Result<_, _>>()?;
    let mut figures = Vec::new();
    for rate in rates {
        figures.push(run_rate(bench.clone(), rate, seconds).await);
    }
    let best = figures
        .iter()
        .filter(|f| f.p99_ms < 250.0)
        .max_by_key(|f| f.rate);
    let peak = figures
        .iter()
        .map(|f| f.completed_per_sec)
        .fold(0.0, f64::max);
    println!(
        "checkout-bench: highest offered rate with p99 under 250 ms: {}; most completed/s: {peak:.0}",
        best.map_or("none".to_owned(), |f| format!("{}/s", f.rate))
    );
    Ok(())
}
