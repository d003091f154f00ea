//! Supervised background workers.
//!
//! Every long-running task of a service (the outbox relay, the consumer, a cache
//! refresher, a reconciler, a sender, the saga driver) is a [`Worker`]: a name and a
//! function that runs it until its shutdown token fires. The [`Supervisor`] runs each in
//! a task of its own; when one returns early, fails or panics, it is counted
//! (`worker_restarts_total`), shown as down (`worker_up` 0, and in `/health/ready` with
//! the reason), and started again after an exponential backoff with jitter. A worker that
//! ran for a while before failing starts again from the shortest delay.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mp_events::backoff::BackoffBuilder;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

type RunFn = dyn Fn(CancellationToken) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>
    + Send
    + Sync;

/// A named background task, started again whenever it stops before shutdown.
#[derive(Clone)]
pub struct Worker {
    name: &'static str,
    run: Arc<RunFn>,
}

impl Worker {
    /// `run` is called for every (re)start with the shutdown token; it should return only
    /// when the token is cancelled. Returning earlier, with or without an error, or
    /// panicking, counts as a failure.
    pub fn new<F, Fut>(name: &'static str, run: F) -> Self
    where
        F: Fn(CancellationToken) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        Self {
            name,
            run: Arc::new(move |token| Box::pin(run(token))),
        }
    }

    /// A worker whose function never fails by itself (it returns at shutdown).
    pub fn infallible<F, Fut>(name: &'static str, run: F) -> Self
    where
        F: Fn(CancellationToken) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let run = Arc::new(run);
        Self::new(name, move |token| {
            let fut = run(token);
            async move {
                fut.await;
                Ok(())
            }
        })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// What readiness shows of the workers: each one's state, `Ok` while it runs.
#[derive(Clone, Default)]
pub struct WorkerStatus(Arc<Mutex<BTreeMap<&'static str, Result<(), String>>>>);

impl WorkerStatus {
    fn set(&self, name: &'static str, state: Result<(), String>) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, state);
    }

    /// Every worker and its state.
    pub fn snapshot(&self) -> Vec<(&'static str, Result<(), String>)> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect()
    }
}

/// Starts workers and keeps them running.
pub struct Supervisor {
    status: WorkerStatus,
    up: IntGaugeVec,
    restarts: IntCounterVec,
    tasks: JoinSet<()>,
    /// Backoff bounds between restarts.
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl Supervisor {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let up = IntGaugeVec::new(
            Opts::new(
                "worker_up",
                "1 while a background worker runs, 0 while it is down.",
            ),
            &["worker"],
        )?;
        let restarts = IntCounterVec::new(
            Opts::new(
                "worker_restarts_total",
                "Background workers that stopped, failed or panicked and were started again.",
            ),
            &["worker"],
        )?;
        registry.register(Box::new(up.clone()))?;
        registry.register(Box::new(restarts.clone()))?;
        Ok(Self {
            status: WorkerStatus::default(),
            up,
            restarts,
            tasks: JoinSet::new(),
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(30),
        })
    }

    pub fn status(&self) -> WorkerStatus {
        self.status.clone()
    }

    /// Starts `worker` under supervision until `shutdown`.
    pub fn spawn(&mut self, worker: Worker, shutdown: CancellationToken) {
        let status = self.status.clone();
        let up = self.up.with_label_values(&[worker.name]);
        let restarts = self.restarts.with_label_values(&[worker.name]);
        let max_delay = self.max_delay;
        let backoff = mp_events::backoff::policy(self.min_delay, self.max_delay);
        status.set(worker.name, Ok(()));
        self.tasks.spawn(async move {
            let mut delays = backoff.build();
            while !shutdown.is_cancelled() {
                status.set(worker.name, Ok(()));
                up.set(1);
                let started = Instant::now();
                // A task of its own, so a panic is a JoinError here, not the end of us.
                let outcome = tokio::spawn((worker.run)(shutdown.clone())).await;
                if shutdown.is_cancelled() {
                    break;
                }
                let reason = match outcome {
                    Ok(Ok(())) => "stopped by itself".to_owned(),
                    Ok(Err(e)) => format!("failed: {e:#}"),
                    Err(e) if e.is_panic() => format!("panicked: {}", panic_message(e)),
                    Err(e) => format!("aborted: {e}"),
                };
                up.set(0);
                restarts.inc();
                status.set(worker.name, Err(reason.clone()));
                if started.elapsed() > Duration::from_secs(60) {
                    delays = backoff.build();
                }
                let delay = delays.next().unwrap_or(max_delay);
                tracing::error!(worker = worker.name, reason = %reason, retry_in_ms = delay.as_millis() as u64, "worker down; restarting");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            up.set(0);
        });
    }

    /// Waits until every worker has stopped (after shutdown), at most `grace`.
    pub async fn join(mut self, grace: Duration) -> bool {
        tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await
        .is_ok()
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    let payload = e.into_panic();
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use prometheus::Encoder;

    use super::*;

    /// On a paused clock (time jumps ahead whenever every task waits), so the real
    /// restart delays are used and the test neither sleeps nor depends on timing.
    #[tokio::test(start_paused = true)]
    async fn a_panicking_worker_is_restarted_counted_and_reported() {
        let registry = Registry::new();
        let mut sup = Supervisor::new(&registry).unwrap();
        let starts = Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorded = starts.clone();
        let shutdown = CancellationToken::new();
        sup.spawn(
            Worker::new("flaky", move |token| {
                let n = {
                    let mut starts = recorded.lock().unwrap();
                    starts.push(tokio::time::Instant::now());
                    starts.len()
                };
                async move {
                    if n <= 2 {
                        panic!("boom {n}");
                    }
                    token.cancelled().await;
                    Ok(())
                }
            }),
            shutdown.clone(),
        );
        let status = sup.status();
        let third_run = async {
            while starts.lock().unwrap().len() < 3 {
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), third_run)
            .await
            .expect("the worker was restarted twice");
        let starts = starts.lock().unwrap().clone();
        for pair in starts.windows(2) {
            assert!(
                pair[1] - pair[0] >= sup.min_delay / 2,
                "a restart waited its back-off delay: {:?}",
                pair[1] - pair[0]
            );
        }
        let text = {
            let mut buf = Vec::new();
            prometheus::TextEncoder::new()
                .encode(&registry.gather(), &mut buf)
                .unwrap();
            String::from_utf8(buf).unwrap()
        };
        assert!(
            text.contains("worker_restarts_total{worker=\"flaky\"} 2"),
            "{text}"
        );
        assert_eq!(status.snapshot(), vec![("flaky", Ok(()))]);
        shutdown.cancel();
        assert!(sup.join(Duration::from_secs(5)).await);
    }
}
