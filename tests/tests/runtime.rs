//! The runtime every service shares, under trouble: a broker that stops confirming
//! publishes, a background worker that keeps failing, a request that times out or
//! panics. Real PostgreSQL, RabbitMQ and Redis; each test has its own schema and prefix.

use std::time::Duration;

use axum::Router;
use mp_common::{Infra, Worker};
use mp_events::Service;
use mp_events::catalog::VendorCreated;
use mp_test_support::proxy::PausableProxy;
use mp_test_support::{TestEnv, eventually};
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

static NO_MIGRATIONS: Migrator = Migrator::DEFAULT;
const WAIT: Duration = Duration::from_secs(30);

async fn fetch(url: &str) -> (StatusCode, String) {
    let resp = reqwest::get(url).await.unwrap();
    (resp.status(), resp.text().await.unwrap())
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn memberships(db: &PgPool, owner: Uuid) -> i64 {
    sqlx::query_scalar("select count(*) from vendor_memberships where customer_id = $1")
        .bind(owner)
        .fetch_one(db)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_broker_that_stops_confirming_grows_the_lag_shows_in_readiness_and_loses_nothing() {
    let mut env = TestEnv::new();
    let broker_addr = {
        let url = env.config(Service::Customer).amqp_url;
        let host = url.rsplit('@').next().unwrap().split('/').next().unwrap();
        tokio::net::lookup_host(host).await.unwrap().next().unwrap()
    };
    let proxy = PausableProxy::start(broker_addr).await;
    env.configure(|c| {
        c.amqp_url = format!("amqp://guest:guest@{}/%2f", proxy.addr);
        c.publish_timeout_ms = 1000;
    });
    let svc = env
        .spawn(Service::Customer, |common, listener, shutdown| {
            customer::run(customer::Config::with_common(common), listener, shutdown)
        })
        .await;
    let db = env.db(Service::Customer).await;

    // The broker goes silent, as one under a memory alarm does to publishers.
    proxy.pause();
    let owner = Uuid::now_v7();
    let mut tx = db.begin().await.unwrap();
    for i in 0..20 {
        let event = VendorCreated {
            vendor_id: Uuid::now_v7(),
            owner_id: owner,
            name: format!("vendor {i}"),
            email: "v@example.org".into(),
            phone: None,
        };
        mp_events::enqueue(&mut tx, Service::Vendor, event)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();

    let why = eventually("readiness to say why", WAIT, || async {
        let (status, body) = fetch(&svc.url("/health/ready")).await;
        let body: Value = serde_json::from_str(&body).unwrap();
        let rabbit = body["checks"]["rabbitmq"].as_str().unwrap_or("").to_owned();
        (status == StatusCode::SERVICE_UNAVAILABLE && rabbit.contains("confirm")).then_some(rabbit)
    })
    .await;
    assert!(why.starts_with("down: relay"), "{why}");
    eventually("the lag to grow", WAIT, || async {
        let (_, text) = fetch(&svc.url("/metrics")).await;
        let pending = metric(&text, "outbox_pending")?;
        let oldest = metric(&text, "outbox_oldest_pending_seconds")?;
        (pending == 20.0 && oldest >= 2.0).then_some(())
    })
    .await;

    proxy.resume();
    eventually("every event applied", WAIT, || async {
        (memberships(&db, owner).await == 20).then_some(())
    })
    .await;
    eventually("ready again", WAIT, || async {
        (fetch(&svc.url("/health/ready")).await.0 == StatusCode::OK).then_some(())
    })
    .await;
    let handled: i64 = sqlx::query_scalar(
        "select count(*) from inbox where handler = 'customer.vendor_membership'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(handled, 20, "each event applied once");
    assert_eq!(memberships(&db, owner).await, 20);
}

/// Runs the shared runtime with a bare API and `workers`, as a service would.
/// Waits until it answers liveness only (readiness is what the tests look at).
async fn serve_bare(
    env: &TestEnv,
    api: Router,
    workers: Vec<Worker>,
) -> mp_test_support::TestService {
    let svc = env
        .start(
            Service::Order,
            move |config, listener, shutdown: CancellationToken| async move {
                let infra =
                    Infra::connect(Service::Order, &config, &NO_MIGRATIONS, &shutdown).await?;
                mp_common::serve(
                    infra,
                    api,
                    utoipa::openapi::OpenApi::default(),
                    None,
                    workers,
                    listener,
                    shutdown,
                )
                .await
            },
        )
        .await;
    eventually("the service to be live", WAIT, || async {
        let resp = reqwest::get(svc.url("/health/live")).await.ok()?;
        (resp.status() == StatusCode::OK).then_some(())
    })
    .await;
    svc
}

#[tokio::test]
async fn a_worker_that_keeps_failing_is_restarted_counted_and_reported_by_readiness() {
    let env = TestEnv::new();
    let doomed = Worker::new("doomed", |_token| async {
        anyhow::bail!("cannot reach the moon")
    });
    let svc = serve_bare(&env, Router::new(), vec![doomed]).await;
    let body = eventually("readiness to report the worker", WAIT, || async {
        let (status, body) = fetch(&svc.url("/health/ready")).await;
        (status == StatusCode::SERVICE_UNAVAILABLE && body.contains("cannot reach the moon"))
            .then_some(body)
    })
    .await;
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["checks"]["relay"], "ok");
    eventually("restarts counted", WAIT, || async {
        let (_, text) = fetch(&svc.url("/metrics")).await;
        (metric(&text, "worker_restarts_total{worker=\"doomed\"}")? >= 2.0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_request_that_times_out_or_panics_is_problem_json_counted_and_never_leaks_in_flight() {
    let mut env = TestEnv::new();
    env.configure(|c| c.request_timeout_secs = 1);
    let api = Router::new()
        .route(
            "/slow",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        )
        .route(
            "/boom",
            axum::routing::get(|| async {
                if true {
                    panic!("a bug");
                }
                "never"
            }),
        );
    let svc = serve_bare(&env, api, Vec::new()).await;
    let http = reqwest::Client::new();

    let resp = http
        .get(svc.url("/slow"))
        .header("x-correlation-id", "slow-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    assert_eq!(resp.headers()["x-correlation-id"], "slow-1");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["correlation_id"], "slow-1");
    assert!(body["detail"].as_str().unwrap().contains("too long"));

    let resp = http.get(svc.url("/boom")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let body: Value = resp.json().await.unwrap();
    assert!(body["error_id"].is_string(), "{body}");

    let (_, text) = fetch(&svc.url("/metrics")).await;
    // The scrape itself is the one request in flight.
    assert_eq!(
        metric(&text, "http_requests_in_flight"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "http_requests_total{method=\"GET\",route=\"/slow\",status=\"5xx\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "http_requests_total{method=\"GET\",route=\"/boom\",status=\"5xx\"}"
        ),
        Some(1.0)
    );
}

/// `dependency_up{dependency}` says which dependency is down, for the alert rules,
/// without anyone probing readiness: PostgreSQL cut away turns its series to 0 while
/// RabbitMQ and Redis stay 1, and it comes back to 1 when PostgreSQL answers again.
#[tokio::test]
async fn dependency_up_follows_a_postgres_outage_without_a_readiness_probe() {
    let mut env = TestEnv::new();
    let url = env.config(Service::Order).database_url;
    let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let target = tokio::net::lookup_host((options.get_host(), options.get_port()))
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = PausableProxy::start(target).await;
    let through_proxy = url.replace(
        &format!("@{}:{}/", options.get_host(), options.get_port()),
        &format!("@{}/", proxy.addr),
    );
    assert_ne!(through_proxy, url, "the URL names host and port");
    env.configure(|c| c.database_url = through_proxy);
    let svc = serve_bare(&env, Router::new(), vec![]).await;

    let gauge = |dependency: &'static str| {
        let url = svc.url("/metrics");
        async move {
            let (_, text) = fetch(&url).await;
            metric(
                &text,
                &format!("dependency_up{{dependency=\"{dependency}\"}}"),
            )
        }
    };
    eventually("every dependency up", WAIT, || async {
        let all = [
            gauge("postgres").await,
            gauge("rabbitmq").await,
            gauge("redis").await,
        ];
        (all == [Some(1.0); 3]).then_some(())
    })
    .await;

    proxy.cut();
    eventually("postgres down", WAIT, || async {
        (gauge("postgres").await == Some(0.0)).then_some(())
    })
    .await;
    assert_eq!(gauge("rabbitmq").await, Some(1.0));
    assert_eq!(gauge("redis").await, Some(1.0));

    proxy.resume();
    eventually("postgres up again", WAIT, || async {
        (gauge("postgres").await == Some(1.0)).then_some(())
    })
    .await;
}
