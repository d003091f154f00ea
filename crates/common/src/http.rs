//! The HTTP layers every service runs: request context (correlation id, trace),
//! metrics, access log, timeouts, body limit, panics and bare error statuses turned
//! into problem+json, plus the health, metrics and API-doc routes.

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::FutureExt;
use futures::future::BoxFuture;
use mp_events::EventContext;
use mp_events::envelope::{new_trace_id, parse_trace_id};
use tower::{Layer, Service, ServiceBuilder};
use tower_http::timeout::TimeoutLayer;
use utoipa::openapi::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::health::{self, Health};
use crate::metrics::Metrics;
use crate::openapi::finish_openapi;
use crate::problem::Problem;

pub const CORRELATION_HEADER: &str = "x-correlation-id";

/// What the observer needs, shared by every clone of it.
struct Observed {
    service: &'static str,
    metrics: Metrics,
}

/// The outermost layer: request context (correlation id, trace id), metrics, access log,
/// problem+json for bare error statuses. A hand-written service rather than
/// `middleware::from_fn`, which boxes the inner service again for every request.
#[derive(Clone)]
struct ObserveLayer(Arc<Observed>);

impl<S> Layer<S> for ObserveLayer {
    type Service = ObserveService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ObserveService {
            inner,
            observed: self.0.clone(),
        }
    }
}

#[derive(Clone)]
struct ObserveService<S> {
    inner: S,
    observed: Arc<Observed>,
}

impl<S> Service<Request> for ObserveService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // The clone that was polled ready serves this request (tower's rule).
        let ready = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, ready);
        let observed = self.observed.clone();
        Box::pin(async move { Ok(observe(&observed, req, inner).await) })
    }
}

/// Accepts a sane client correlation id, or makes one.
fn correlation_id(req: &Request) -> String {
    req.headers()
        .get(CORRELATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(new_correlation_id, str::to_owned)
}

/// A random (version 4) UUID from the thread's generator: no system call per request.
fn new_correlation_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    let mut buf = uuid::Uuid::encode_buffer();
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .encode_lower(&mut buf)
        .to_owned()
}

async fn observe<S>(o: &Observed, req: Request, mut inner: S) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    let started = Instant::now();
    // `MatchedPath` is a shared string: cloning it allocates nothing.
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let method = req.method().clone();
    let correlation_id = correlation_id(&req);
    let trace_id = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_trace_id)
        .unwrap_or_else(new_trace_id);
    // Both ids are visible ASCII (checked or made so): valid header values.
    let correlation_header = HeaderValue::from_str(&correlation_id).ok();
    let trace_header = HeaderValue::from_str(&trace_id).ok();
    // Every line the request logs carries these fields (see mp_log::in_request).
    let fields = mp_log::request_fields(
        o.service,
        method.as_str(),
        route,
        &correlation_id,
        &trace_id,
    );
    let ctx = EventContext {
        correlation_id,
        causation_id: None,
        trace_id,
    };
    let handle = async {
        let in_flight = InFlight::enter(&o.metrics.http_in_flight);
        // A panicking handler is answered like any other failure, counted and logged.
        // A request that wrote events has committed them by the time it answers: the
        // relay is woken then (`tracking`).
        let handled = match std::panic::catch_unwind(AssertUnwindSafe(|| inner.call(req))) {
            Ok(future) => {
                mp_events::outbox::tracking(AssertUnwindSafe(ctx.scope(future)).catch_unwind())
                    .await
            }
            Err(panic) => Err(panic),
        };
        let mut response = match handled {
            Ok(Ok(response)) => response,
            Ok(Err(never)) => match never {},
            Err(panic) => panic_response(panic),
        };
        drop(in_flight);

        let status = response.status();
        if status.as_u16() >= 400 && !response.headers().contains_key(header::CONTENT_TYPE) {
            let correlation_id = correlation_header.as_ref().and_then(|v| v.to_str().ok());
            response = problem_for_bare_status(response, correlation_id.unwrap_or_default());
        }
        if let Some(v) = correlation_header {
            response.headers_mut().insert(CORRELATION_HEADER, v);
        }
        if let Some(v) = trace_header {
            response.headers_mut().insert("x-trace-id", v);
        }

        let elapsed = started.elapsed();
        let class = match status.as_u16() / 100 {
            1 => "1xx",
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            _ => "5xx",
        };
        o.metrics
            .http_requests
            .with_label_values(&[method.as_str(), route, class])
            .inc();
        o.metrics
            .http_duration
            .with_label_values(&[method.as_str(), route])
            .observe(elapsed.as_secs_f64());
        if !route.starts_with("/health") && route != "/metrics" {
            mp_log::access_log(status.as_u16(), elapsed.as_secs_f64() * 1000.0);
        }
        response
    };
    mp_log::in_request(fields, handle).await
}

/// A bare error status from a layer or the router (405, 408, 413, 503 on a time-out) as
/// problem+json, keeping the headers it had.
fn problem_for_bare_status(mut response: Response, correlation_id: &str) -> Response {
    let status = response.status();
    let detail = match status {
        StatusCode::METHOD_NOT_ALLOWED => "This method is not allowed on this resource.",
        StatusCode::REQUEST_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE => {
            "The request took too long and was stopped; it may or may not have taken effect. Quote the correlation id when asking about it."
        }
        StatusCode::PAYLOAD_TOO_LARGE => "The request body is too large.",
        _ => status.canonical_reason().unwrap_or("Error"),
    };
    let headers = std::mem::take(response.headers_mut());
    let mut problem = Problem::new(status, detail).with("correlation_id", correlation_id);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        problem = problem.header(header::RETRY_AFTER, "1");
    }
    let mut response = problem.into_response();
    for (k, v) in headers.iter() {
        response.headers_mut().entry(k).or_insert_with(|| v.clone());
    }
    response
}

/// Counts a request in flight for as long as it lives, however it ends (a response, a
/// time-out or a panic unwinding through the layers).
struct InFlight<'a>(&'a prometheus::IntGauge);

impl<'a> InFlight<'a> {
    fn enter(gauge: &'a prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn not_found() -> Problem {
    Problem::not_found("Resource")
}

fn panic_response(_: Box<dyn std::any::Any + Send>) -> Response {
    let error_id = uuid::Uuid::new_v4();
    tracing::error!(%error_id, "handler panicked");
    Problem::internal(error_id).into_response()
}

/// The whole application: the service's API plus the common routes and layers.
pub fn app(
    service: &'static str,
    api: Router,
    openapi: OpenApi,
    health: Health,
    metrics: Metrics,
    request_timeout: Duration,
    body_limit: usize,
) -> Router {
    let openapi = finish_openapi(openapi, service);
    let scrape = metrics.clone();
    let common = Router::new()
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .with_state(health)
        .route(
            "/metrics",
            get(move || {
                let body = scrape.render();
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body) }
            }),
        );
    let router = Router::new()
        .merge(api)
        .merge(common)
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi));
    with_layers(router, service, metrics, request_timeout, body_limit)
}

/// The layers every request passes: the observer (context, metrics, access log, panics
/// caught, problem+json for bare statuses), the time-out and the body limit.
pub fn with_layers(
    router: Router,
    service: &'static str,
    metrics: Metrics,
    request_timeout: Duration,
    body_limit: usize,
) -> Router {
    // One stack, outermost first, added in one call: each `Router::layer` call boxes
    // every route again, and each box costs an allocation and a clone per request.
    router.fallback(not_found).layer(
        ServiceBuilder::new()
            // Outside the rest: it catches panics, and a time-out or a panic is a
            // response it counts and logs like any other; the in-flight gauge never leaks.
            .layer(ObserveLayer(Arc::new(Observed { service, metrics })))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::SERVICE_UNAVAILABLE,
                request_timeout,
            ))
            .layer(DefaultBodyLimit::max(body_limit)),
    )
}
