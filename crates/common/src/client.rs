//! Authenticated service-to-service HTTP calls.
//!
//! Every request to an internal endpoint carries a short-lived service token meant for
//! the called service alone (cached and renewed before it expires); every request
//! carries the correlation id and a child traceparent of the current operation. A
//! public endpoint is called without a token (`public_request`): a token sent where it
//! is not needed is a token someone else may log or replay.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mp_events::{EventContext, Service};
use reqwest::{Method, RequestBuilder};

use crate::auth::TokenKeys;

pub use crate::tls::http_client_builder;

#[derive(Clone)]
pub struct ServiceClient {
    http: reqwest::Client,
    base_url: String,
    caller: Service,
    /// The service called: the tokens name it as their audience.
    target: Service,
    keys: Arc<TokenKeys>,
    token: Arc<Mutex<Option<(String, i64)>>>,
}

impl ServiceClient {
    pub fn new(
        base_url: impl Into<String>,
        caller: Service,
        target: Service,
        keys: Arc<TokenKeys>,
        timeout: Duration,
    ) -> Self {
        let http = http_client_builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(2))
            .pool_max_idle_per_host(64)
            .build()
            .expect("an HTTP client builds");
        Self {
            http,
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            caller,
            target,
            keys,
            token: Arc::default(),
        }
    }

    fn token(&self) -> String {
        let now = chrono::Utc::now().timestamp();
        let mut cached = self.token.lock().unwrap_or_else(|e| e.into_inner());
        match cached.as_ref() {
            Some((token, exp)) if *exp - now > 60 => token.clone(),
            _ => {
                let (token, exp) = self.keys.service_token(self.caller, self.target);
                *cached = Some((token.clone(), exp));
                token
            }
        }
    }

    /// A request to an internal endpoint at `path` (starting with `/`), with the
    /// service token and the context.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.public_request(method, path).bearer_auth(self.token())
    }

    /// A request to a public endpoint: the context, no token.
    pub fn public_request(&self, method: Method, path: &str) -> RequestBuilder {
        let ctx = EventContext::current();
        self.http
            .request(method, format!("{}{}", self.base_url, path))
            .header("x-correlation-id", ctx.correlation_id.clone())
            .header("traceparent", ctx.child_traceparent())
    }
}
