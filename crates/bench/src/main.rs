//! Helpers for `scripts/bench.sh`:
//! `mp-bench bare <addr>` serves a bare axum endpoint (the baseline the catalog read is
//! compared with, measured in the same run); `mp-bench layered <addr>` serves the same
//! endpoint behind the layers every service runs (context, metrics, access log to
//! stdout, time-out, panics, body limit), which shows what the layers cost.

use std::process::ExitCode;

use axum::Router;
use axum::routing::get;

const BODY: &str = r#"{"id":"00000000-0000-0000-0000-000000000000","name":"baseline","price":{"amount":100,"currency":"EUR"}}"#;

/// The same allocator as the services' binaries, so the bare endpoint it compares the
/// catalog with allocates alike.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [mode @ ("bare" | "layered"), addr] => {
            let _log_flush = (*mode == "layered").then(|| mp_common::telemetry::init("json"));
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
                if *mode == "layered" {
                    let metrics = mp_common::metrics::Metrics::new().expect("metrics");
                    app = mp_common::http::with_layers(
                        app,
                        "bench",
                        metrics,
                        std::time::Duration::from_secs(10),
                        1 << 20,
                    );
                }
                let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
                axum::serve(listener, app).await.expect("serve");
            });
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: mp-bench bare|layered <addr>");
            ExitCode::FAILURE
        }
    }
}
