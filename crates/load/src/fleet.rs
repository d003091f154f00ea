//! The fleet as the generator sees it: each service's replicas (a request goes to the
//! next one, round robin), tokens signed with the user key as the customer service
//! would sign them, and the calls the mix makes, each timed into the [`Stats`].

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use mp_common::TokenKeys;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::stats::Stats;

/// The base URLs of one service's replicas.
pub struct Replicas {
    urls: Vec<String>,
    next: AtomicUsize,
}

impl Replicas {
    /// `<NAME>_URLS` (comma-separated) if set, else `replicas` ports from `port` in
    /// steps of 100 on 127.0.0.1, as `scripts/fleet.sh` runs them.
    pub fn from_env(name: &str, port: u16, replicas: u16) -> Self {
        let urls = match std::env::var(format!("{}_URLS", name.to_uppercase())) {
            Ok(list) => list.split(',').map(|u| u.trim().to_owned()).collect(),
            Err(_) => (0..replicas)
                .map(|i| format!("http://127.0.0.1:{}", port + 100 * i))
                .collect(),
        };
        Self {
            urls,
            next: AtomicUsize::new(0),
        }
    }

    pub fn pick(&self) -> &str {
        &self.urls[self.next.fetch_add(1, Ordering::Relaxed) % self.urls.len()]
    }

    pub fn all(&self) -> &[String] {
        &self.urls
    }
}

pub struct Fleet {
    pub http: reqwest::Client,
    pub keys: TokenKeys,
    pub customer: Replicas,
    pub order: Replicas,
    pub notification: Replicas,
    pub inventory: Replicas,
    pub vendor: Replicas,
    pub cart: Replicas,
    pub stats: Arc<Stats>,
    /// For the bad messages and reading the dead-letter queues.
    pub broker: mp_events::Broker,
    /// Starts the message id of every bad message this run sends.
    pub tag: String,
}

/// What a call answered: status and JSON body (`Null` when there was none).
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub retry_after: Option<Duration>,
}

impl Fleet {
    pub fn new(keys: TokenKeys, replicas: u16, stats: Arc<Stats>) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .pool_max_idle_per_host(256)
                .build()?,
            keys,
            customer: Replicas::from_env("customer", 5000, replicas),
            order: Replicas::from_env("order", 5001, replicas),
            notification: Replicas::from_env("notification", 5002, replicas),
            inventory: Replicas::from_env("inventory", 5003, replicas),
            vendor: Replicas::from_env("vendor", 5004, replicas),
            cart: Replicas::from_env("cart", 5005, replicas),
            stats,
            broker: crate::bad::broker(),
            tag: format!("mp-load-bad-{}-", Uuid::new_v4().simple()),
        })
    }

    pub fn every_service(&self) -> [(&'static str, &Replicas); 6] {
        [
            ("customer", &self.customer),
            ("order", &self.order),
            ("notification", &self.notification),
            ("inventory", &self.inventory),
            ("vendor", &self.vendor),
            ("cart", &self.cart),
        ]
    }

    /// A customer's token, as the customer service would sign it at login.
    pub fn customer_token(&self, customer_id: Uuid) -> String {
        self.keys
            .user_token(customer_id, Uuid::new_v4(), vec!["customer".into()], vec![])
            .0
    }

    pub fn member_token(&self, vendor_id: Uuid) -> String {
        self.keys
            .user_token(
                Uuid::now_v7(),
                Uuid::new_v4(),
                vec!["customer".into(), "vendor".into()],
                vec![vendor_id],
            )
            .0
    }

    pub fn admin_token(&self) -> String {
        self.keys
            .user_token(
                Uuid::now_v7(),
                Uuid::new_v4(),
                vec!["customer".into(), "admin".into()],
                vec![],
            )
            .0
    }

    /// One call; `op` names it in the figures (`None`: not measured, e.g. the checks).
    /// A transport error (refused, timed out) is an `Err` and counted as such.
    pub async fn call(
        &self,
        op: Option<&'static str>,
        method: Method,
        url: String,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, String)],
    ) -> anyhow::Result<Answer> {
        let mut req = self.http.request(method, &url);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        let started = Instant::now();
        let resp = match req.send().await {
            Ok(resp) => resp,
            Err(e) => {
                if let Some(op) = op {
                    self.stats.transport_error(op);
                }
                return Err(e).with_context(|| format!("calling {url}"));
            }
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<f64>().ok())
            .map(Duration::from_secs_f64);
        let bytes = resp.bytes().await.unwrap_or_default();
        if let Some(op) = op {
            self.stats.record(op, status.as_u16(), started.elapsed());
        }
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Answer {
            status,
            body,
            retry_after,
        })
    }

    /// Logs the fleet's admin in (ADMIN_EMAIL / ADMIN_PASSWORD, from the state dir).
    pub async fn admin_login(&self) -> anyhow::Result<String> {
        let body = json!({"email": std::env::var("ADMIN_EMAIL").context("ADMIN_EMAIL")?,
                          "password": std::env::var("ADMIN_PASSWORD").context("ADMIN_PASSWORD")?});
        let a = self
            .call(
                None,
                Method::POST,
                format!("{}/api/auth/login", self.customer.pick()),
                None,
                Some(&body),
                &[],
            )
            .await?;
        anyhow::ensure!(a.status == StatusCode::OK, "admin login: {}", a.body);
        Ok(a.body["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// Waits until `url` answers 2xx, up to `timeout`.
    pub async fn wait_ok(&self, url: &str, token: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(a) = self
                .call(None, Method::GET, url.to_owned(), Some(token), None, &[])
                .await
                && a.status.is_success()
            {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "{url} did not answer in time");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
