//! Helpers for `scripts/bench.sh`:
//! `mp-bench bare <addr>` serves a bare axum endpoint (the baseline the catalog read is
//! compared with, measured in the same run); `mp-bench service-token <service>` prints a
//! service token signed with that service's `SERVICE_KEY` from the environment.

use std::process::ExitCode;

use axum::Router;
use axum::routing::get;
use mp_common::{CommonConfig, TokenKeys};
use mp_events::Service;

const BODY: &str = r#"{"id":"00000000-0000-0000-0000-000000000000","name":"baseline","price":{"amount":100,"currency":"EUR"}}"#;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["bare", addr] => {
            let runtime = tokio::runtime::Runtime::new().expect("runtime");
            runtime.block_on(async {
                let app = Router::new().route(
                    "/",
                    get(|| async {
                        (
                            [(axum::http::header::CONTENT_TYPE, "application/json")],
                            BODY,
                        )
                    }),
                );
                let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
                axum::serve(listener, app).await.expect("serve");
            });
            ExitCode::SUCCESS
        }
        ["service-token", service] => {
            let Some(service) = Service::ALL.into_iter().find(|s| s.as_str() == *service) else {
                eprintln!("unknown service {service}");
                return ExitCode::FAILURE;
            };
            match TokenKeys::for_service(&CommonConfig::from_env(), Some(service)) {
                Ok(keys) => {
                    println!("{}", keys.service_token(service).0);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => {
            eprintln!("usage: mp-bench bare <addr> | mp-bench service-token <service>");
            ExitCode::FAILURE
        }
    }
}
