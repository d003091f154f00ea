//! Liveness and readiness. Ready means PostgreSQL, RabbitMQ and Redis all answer; a
//! service whose dependency is down reports not ready and recovers by itself.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use mp_events::Broker;
use redis::aio::ConnectionManager;
use serde_json::json;
use sqlx::PgPool;

use crate::supervisor::WorkerStatus;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct Health {
    pub db: PgPool,
    pub broker: Broker,
    pub redis: ConnectionManager,
    pub service: &'static str,
    pub workers: WorkerStatus,
}

pub async fn live(State(h): State<Health>) -> impl IntoResponse {
    Json(json!({"status": "ok", "service": h.service}))
}

fn verdict<E: std::fmt::Display>(
    r: Result<Result<(), E>, tokio::time::error::Elapsed>,
) -> Result<(), String> {
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

pub async fn ready(State(h): State<Health>) -> impl IntoResponse {
    let mut redis = h.redis.clone();
    let (pg, amqp, rd) = tokio::join!(
        tokio::time::timeout(CHECK_TIMEOUT, async {
            sqlx::query("select 1").execute(&h.db).await.map(drop)
        }),
        tokio::time::timeout(CHECK_TIMEOUT, async {
            h.broker.connection().await.map_err(|e| e.to_string())?;
            match h.broker.publish_problem() {
                Some(problem) => Err(problem),
                None => Ok(()),
            }
        }),
        tokio::time::timeout(CHECK_TIMEOUT, async {
            redis::cmd("PING").query_async::<()>(&mut redis).await
        }),
    );
    let checks = [
        ("postgres", verdict(pg)),
        ("rabbitmq", verdict(amqp)),
        ("redis", verdict(rd)),
    ];
    let workers = h.workers.snapshot();
    let ok = checks.iter().all(|(_, r)| r.is_ok()) && workers.iter().all(|(_, r)| r.is_ok());
    let body: serde_json::Map<String, serde_json::Value> = checks
        .into_iter()
        .chain(workers)
        .map(|(name, r)| {
            (
                name.to_owned(),
                json!(r.map_or_else(|e| format!("down: {e}"), |_| "ok".to_owned())),
            )
        })
        .collect();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(
            json!({"status": if ok { "ready" } else { "not ready" }, "service": h.service, "checks": body}),
        ),
    )
}
