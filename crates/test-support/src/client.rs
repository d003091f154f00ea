//! The HTTP side of API tests, written once: [`Api`] sends a request to one service and
//! reads its answer as a typed body or a [`Problem`]; [`Problem::assert`] is the one
//! check of a problem+json answer; [`Api::metric`] reads the service's Prometheus text.
//!
//! The typed clients of the services ([`crate::clients`]) are built on [`Api`]. A typed
//! call names the success status the API documents for it (`201` for a creation, say):
//! another success status fails the test, so a test that calls `create_vendor` still
//! checks the `201` it used to compare by hand. [`Api::call`] stays for the tests that
//! send what no typed call would (malformed bodies, wrong content types) or look at the
//! raw JSON on purpose.

use std::fmt;

use reqwest::header::{self, HeaderMap};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One invalid field of a problem.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// An error answer (any status other than 2xx), read as problem+json. The members are
/// optional so that an answer that is not a well-formed problem still arrives here, and
/// [`Problem::assert`] says what it lacks; [`Problem::body`] keeps the whole JSON for
/// the extensions (`available`, `lines`, ...), which `problem["available"]` reads.
#[derive(Debug, Clone)]
pub struct Problem {
    /// The HTTP status of the answer.
    pub status: StatusCode,
    pub content_type: String,
    /// `type`.
    pub kind: Option<String>,
    pub title: Option<String>,
    pub detail: Option<String>,
    pub errors: Vec<FieldError>,
    /// The body as JSON (`Null` when it was empty or not JSON).
    pub body: Value,
    /// The answer's headers (`Retry-After`, say); empty where only a body was given.
    pub headers: HeaderMap,
}

#[derive(Deserialize)]
struct Members {
    #[serde(rename = "type")]
    kind: Option<String>,
    title: Option<String>,
    detail: Option<String>,
    #[serde(default)]
    errors: Vec<FieldError>,
}

impl Problem {
    /// Reads an answer's status and JSON body as a problem.
    pub fn from_parts(status: StatusCode, content_type: &str, body: Value) -> Self {
        let members = Members::deserialize(&body).unwrap_or(Members {
            kind: None,
            title: None,
            detail: None,
            errors: Vec::new(),
        });
        Self {
            status,
            content_type: content_type.to_owned(),
            kind: members.kind,
            title: members.title,
            detail: members.detail,
            errors: members.errors,
            body,
            headers: HeaderMap::new(),
        }
    }

    /// Asserts a problem+json answer with `expected` status (in the answer and in its
    /// body), a title and a detail, naming `field` among its errors when given.
    #[track_caller]
    pub fn assert(&self, expected: StatusCode, field: Option<&str>) -> &Self {
        assert_eq!(self.status, expected, "{self}");
        assert_eq!(self.body["status"], expected.as_u16(), "{self}");
        assert!(
            self.title.is_some() && self.detail.is_some(),
            "a problem has a title and a detail: {self}"
        );
        if let Some(field) = field {
            assert!(self.names(field), "expected an error on {field}: {self}");
        }
        self
    }

    /// Whether one of the problem's errors is on `field`.
    pub fn names(&self, field: &str) -> bool {
        self.errors.iter().any(|e| e.field == field)
    }

    /// The problem's type without the `/problems/` prefix.
    pub fn kind_name(&self) -> &str {
        let kind = self.kind.as_deref().unwrap_or_default();
        kind.rsplit('/').next().unwrap_or(kind)
    }
}

impl std::ops::Index<&str> for Problem {
    type Output = Value;

    fn index(&self, key: &str) -> &Value {
        &self.body[key]
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.body)
    }
}

/// A success answer with its status and headers, for the calls whose success status
/// means something (200 for an existing cart, 201 for a new one) or whose headers a
/// test reads.
#[derive(Debug, Clone)]
pub struct Reply<T> {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: T,
}

/// The result of a typed call.
pub type ApiResult<T> = Result<T, Problem>;

/// Unwraps a typed result, failing the test with the problem (or the success).
pub trait Expect<T> {
    #[track_caller]
    fn expect_ok(self) -> T;

    /// The problem, asserted with [`Problem::assert`]; a success fails the test.
    #[track_caller]
    fn expect_problem(self, expected: StatusCode, field: Option<&str>) -> Problem;
}

impl<T: fmt::Debug> Expect<T> for ApiResult<T> {
    #[track_caller]
    fn expect_ok(self) -> T {
        match self {
            Ok(v) => v,
            Err(problem) => panic!("expected success, got {problem}"),
        }
    }

    #[track_caller]
    fn expect_problem(self, expected: StatusCode, field: Option<&str>) -> Problem {
        match self {
            Ok(v) => panic!("expected a {expected} problem, got success: {v:?}"),
            Err(problem) => {
                problem.assert(expected, field);
                problem
            }
        }
    }
}

/// One service's HTTP API: its base URL and a client.
#[derive(Debug, Clone)]
pub struct Api {
    base_url: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base_url: impl Into<String>) -> Self {
        Self::with_client(base_url, reqwest::Client::new())
    }

    pub fn with_client(base_url: impl Into<String>, http: reqwest::Client) -> Self {
        Self {
            base_url: base_url.into(),
            http,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A request to `path`, with a bearer token when given.
    pub fn request(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let req = self.http.request(method, self.url(path));
        match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Sends a request; returns the status and the JSON body (`Null` when empty or not
    /// JSON). For what a typed call would not send, or raw JSON a test looks at.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.request(method, path, token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let (status, _, body) = self.raw(req).await;
        (status, body)
    }

    /// Sends `body` as it is, with `content_type` (malformed JSON, a wrong type):
    /// returns the status, the answer's content type and its JSON body (`Null` when
    /// empty or not JSON).
    pub async fn call_text(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: &str,
    ) -> (StatusCode, String, Value) {
        let req = self
            .request(method, path, token)
            .header(header::CONTENT_TYPE, content_type)
            .body(body.to_owned());
        let (status, headers, body) = self.raw(req).await;
        (status, content_type_of(&headers).to_owned(), body)
    }

    /// Sends a request; returns status, headers and the JSON body (`Null` when empty
    /// or not JSON).
    pub async fn raw(&self, req: RequestBuilder) -> (StatusCode, HeaderMap, Value) {
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body read");
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }

    /// Sends a request: a 2xx answer as a [`Reply`] with the body read as `T` (an empty
    /// body reads as `null`, which `()` accepts), any other as a [`Problem`].
    pub async fn reply<T: DeserializeOwned>(&self, req: RequestBuilder) -> ApiResult<Reply<T>> {
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body read");
        if !status.is_success() {
            let body = serde_json::from_str(&text).unwrap_or(Value::Null);
            let mut problem = Problem::from_parts(status, content_type_of(&headers), body);
            problem.headers = headers;
            return Err(problem);
        }
        let json = if text.is_empty() { "null" } else { &text };
        let body = serde_json::from_str(json).unwrap_or_else(|e| {
            panic!(
                "{status} answer is not a {}: {e}: {text}",
                std::any::type_name::<T>()
            )
        });
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// Sends a request expecting `expected` on success: the body as `T`, or the
    /// [`Problem`]. Another success status fails the test.
    pub async fn send<T: DeserializeOwned>(
        &self,
        req: RequestBuilder,
        expected: StatusCode,
    ) -> ApiResult<T> {
        Ok(self.send_reply(req, expected).await?.body)
    }

    /// [`Api::send`], keeping the answer's status and headers (`Location`, say).
    pub async fn send_reply<T: DeserializeOwned>(
        &self,
        req: RequestBuilder,
        expected: StatusCode,
    ) -> ApiResult<Reply<T>> {
        let what = req
            .try_clone()
            .and_then(|r| r.build().ok())
            .map(|r| format!("{} {}", r.method(), r.url().path()))
            .unwrap_or_default();
        let reply = self.reply::<T>(req).await?;
        assert_eq!(reply.status, expected, "the success status of {what}");
        Ok(reply)
    }

    /// `GET path` expecting 200.
    pub async fn get<T: DeserializeOwned>(&self, path: &str, token: Option<&str>) -> ApiResult<T> {
        self.send(self.request(Method::GET, path, token), StatusCode::OK)
            .await
    }

    /// A request with a JSON body expecting `expected` on success.
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: &(impl Serialize + ?Sized),
        expected: StatusCode,
    ) -> ApiResult<T> {
        self.send(self.request(method, path, token).json(body), expected)
            .await
    }

    /// The service's `/metrics` as Prometheus text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics request sent")
            .text()
            .await
            .expect("metrics read")
    }

    /// The sum of the samples of metric `name` whose labels include all of `labels`
    /// (0 when there is none).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric(&self.metrics().await, name, labels)
    }
}

/// An answer's `Content-Type` (empty when it has none).
fn content_type_of(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// In Prometheus text: the sum of the samples of `name` whose labels include all of
/// `labels` (0 when there is none).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let has = |(k, v): &(&str, &str)| {
                label_text
                    .split(',')
                    .any(|pair| pair == format!("{k}=\"{v}\""))
            };
            labels.iter().all(has).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP events_consumed_total Events.\n\
        # TYPE events_consumed_total counter\n\
        events_consumed_total{event_type=\"order.created\",handler=\"inventory.commit\",outcome=\"ok\"} 2\n\
        events_consumed_total{event_type=\"order.updated\",handler=\"inventory.commit\",outcome=\"ok\"} 3\n\
        events_consumed_total_other 7\n\
        order_checkouts_shed_total 1\n";

    #[test]
    fn metric_sums_the_samples_with_the_labels_asked_for() {
        assert_eq!(metric(TEXT, "events_consumed_total", &[]), 5.0);
        assert_eq!(
            metric(
                TEXT,
                "events_consumed_total",
                &[("event_type", "order.updated")]
            ),
            3.0
        );
        assert_eq!(metric(TEXT, "order_checkouts_shed_total", &[]), 1.0);
        assert_eq!(metric(TEXT, "absent", &[]), 0.0);
        assert_eq!(
            metric(TEXT, "events_consumed_total", &[("outcome", "error")]),
            0.0
        );
    }
}
