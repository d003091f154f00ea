//! Helpers for `scripts/bench.sh`:
//! `mp-bench bare <addr>` serves a bare axum endpoint (the baseline the catalog read is
//! compared with, measured in the same run); `mp-bench layered <addr>` serves the same
//! endpoint behind the layers every service runs (context, metrics, access log to
//! stdout, time-out, panics, body limit), which shows what the layers cost;
//! `mp-bench layered-subscriber <addr>` the same layers logging through the well-kept
//! crates instead of `mp_log`'s writer: `tracing-subscriber`'s JSON format
//! (with the request's fields as a span opened per request) written by
//! `tracing-appender`'s non-blocking writer, lossless. The two lines carry the same
//! fields.

use std::process::ExitCode;

use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use tracing::Instrument;

const BODY: &str = r#"{"id":"00000000-0000-0000-0000-000000000000","name":"baseline","price":{"amount":100,"currency":"EUR"}}"#;

/// The same allocator as the services' binaries, so the bare endpoint it compares the
/// catalog with allocates alike.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Logging through `tracing-subscriber`'s JSON lines and `tracing-appender`, lossless
/// (a full queue blocks the logging thread, as ours does): the guard flushes at exit.
fn subscriber_json() -> tracing_appender::non_blocking::WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stdout());
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_target(true)
        .with_current_span(true)
        .with_span_list(false)
        .flatten_event(true)
        .with_writer(writer)
        .init();
    guard
}

/// The request's fields as a tracing span, the way `tracing-subscriber` carries them
/// into every line the request logs (ours renders them once into a task-local).
async fn request_span(req: Request, next: Next) -> Response {
    let span = tracing::info_span!(
        "http",
        service = "bench",
        method = %req.method(),
        route = req.uri().path(),
        correlation_id = %uuid_like(),
        trace_id = %uuid_like(),
    );
    next.run(req).instrument(span).await
}

/// A value as long as the ids a request carries.
fn uuid_like() -> &'static str {
    "0f8fad5b-d9cb-469f-a165-70867728950e"
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [mode @ ("bare" | "layered" | "layered-subscriber"), addr] => {
            let _log_flush = (*mode == "layered").then(|| mp_log::init("json"));
            let _log_guard = (*mode == "layered-subscriber").then(subscriber_json);
            let runtime = tokio::runtime::Runtime::new().expect("runtime");
            runtime.block_on(async {
                let mut app = Router::new().route(
                    "/",
                    get(|| async {
                        (
                            [(axum::http::header::CONTENT_TYPE, "application/json")],
                            BODY,
                        )
                    }),
                );
                if *mode != "bare" {
                    let metrics = mp_common::metrics::Metrics::new().expect("metrics");
                    app = mp_common::http::with_layers(
                        app,
                        "bench",
                        metrics,
                        std::time::Duration::from_secs(10),
                        1 << 20,
                    );
                }
                if *mode == "layered-subscriber" {
                    app = app.layer(middleware::from_fn(request_span));
                }
                let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
                axum::serve(listener, app).await.expect("serve");
            });
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: mp-bench bare|layered|layered-subscriber <addr>");
            ExitCode::FAILURE
        }
    }
}
