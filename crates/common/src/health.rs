//! Liveness and readiness. Ready means PostgreSQL, RabbitMQ and Redis all answer; a
//! service whose dependency is down reports not ready and recovers by itself.
//!
//! The same checks feed `dependency_up{dependency="postgres|rabbitmq|redis"}`: set by
//! every readiness probe and by a supervised worker every [`PROBE_EVERY`], so the
//! gauge is fresh even where nothing probes readiness (the alert rules use it).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use mp_events::Broker;
use prometheus::{IntGaugeVec, Opts, Registry};
use redis::aio::ConnectionManager;
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::supervisor::{Worker, WorkerStatus};

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the dependency gauge is refreshed without a readiness probe.
pub const PROBE_EVERY: Duration = Duration::from_secs(10);
/// The dependencies every service checks, as named in readiness and the gauge.
pub const DEPENDENCIES: [&str; 3] = ["postgres", "rabbitmq", "redis"];

#[derive(Clone)]
pub struct Health {
    pub db: PgPool,
    pub broker: Broker,
    pub redis: ConnectionManager,
    pub service: &'static str,
    pub workers: WorkerStatus,
    /// `dependency_up`, one series per [`DEPENDENCIES`] from the start.
    pub up: IntGaugeVec,
}

/// `dependency_up{dependency}` in `registry`, every dependency present (0 until the
/// first check says otherwise).
pub fn dependency_gauge(registry: &Registry) -> prometheus::Result<IntGaugeVec> {
    let up = IntGaugeVec::new(
        Opts::new(
            "dependency_up",
            "1 while the dependency answered the last check (as in /health/ready), 0 otherwise.",
        ),
        &["dependency"],
    )?;
    registry.register(Box::new(up.clone()))?;
    for name in DEPENDENCIES {
        up.with_label_values(&[name]).set(0);
    }
    Ok(up)
}

impl Health {
    /// Checks each dependency (bounded by `CHECK_TIMEOUT`) and records the results
    /// in the gauge.
    pub async fn check_dependencies(&self) -> [(&'static str, Result<(), String>); 3] {
        let mut redis = self.redis.clone();
        let (pg, amqp, rd) = tokio::join!(
            tokio::time::timeout(CHECK_TIMEOUT, async {
                sqlx::query("select 1").execute(&self.db).await.map(drop)
            }),
            tokio::time::timeout(CHECK_TIMEOUT, async {
                self.broker.connection().await.map_err(|e| e.to_string())?;
                match self.broker.publish_problem() {
                    Some(problem) => Err(problem),
                    None => Ok(()),
                }
            }),
            tokio::time::timeout(CHECK_TIMEOUT, async {
                redis::cmd("PING").query_async::<()>(&mut redis).await
            }),
        );
        let checks = [
            (DEPENDENCIES[0], verdict(pg)),
            (DEPENDENCIES[1], verdict(amqp)),
            (DEPENDENCIES[2], verdict(rd)),
        ];
        for (name, result) in &checks {
            self.up
                .with_label_values(&[name])
                .set(i64::from(result.is_ok()));
        }
        checks
    }

    /// The worker that keeps `dependency_up` fresh between readiness probes.
    pub fn probe_worker(&self) -> Worker {
        let health = self.clone();
        Worker::infallible("dependency_probe", move |token: CancellationToken| {
            let health = health.clone();
            async move {
                let mut tick = tokio::time::interval(PROBE_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut was_up = [true; 3];
                loop {
                    tokio::select! {
                        _ = token.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    let checks = health.check_dependencies().await;
                    // One line per change, not one per probe.
                    for ((name, result), was) in checks.iter().zip(&mut was_up) {
                        match (result, *was) {
                            (Err(e), true) => {
                                tracing::warn!(dependency = name, error = %e, "dependency down")
                            }
                            (Ok(()), false) => {
                                tracing::info!(dependency = name, "dependency up again")
                            }
                            _ => {}
                        }
                        *was = result.is_ok();
                    }
                }
            }
        })
    }
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
    let checks = h.check_dependencies().await;
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
