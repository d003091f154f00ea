//! Platform behaviour every service shares: service-to-service authentication, and
//! what a service does while a dependency is down.

use std::time::Duration;

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::get;
use mp_common::client::ServiceClient;
use mp_common::{Authenticator, ServiceCaller, TokenKeys};
use mp_events::{EventContext, Service};
use mp_test_support::{TestEnv, eventually};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

async fn whoami(caller: ServiceCaller, headers: HeaderMap) -> String {
    let correlation = headers
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    format!("{} {}", caller.service, correlation)
}

#[tokio::test]
async fn internal_endpoints_accept_service_tokens_and_refuse_users_and_strangers() {
    let env = TestEnv::new();
    let config = env.config(Service::Inventory);
    let keys = std::sync::Arc::new(TokenKeys::from_config(&config).unwrap());
    let auth = Authenticator::new(
        keys.clone(),
        env.redis().await,
        mp_common::redis::RedisKeys::new(&config.redis_prefix),
        Service::Cart,
    );
    let app: Router = Router::new()
        .route("/internal", get(whoami))
        .with_state(auth);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let client = ServiceClient::new(
        &base,
        Service::Cart,
        Service::Cart,
        keys.clone(),
        Duration::from_secs(2),
    );
    let ctx = EventContext {
        correlation_id: "corr-42".into(),
        causation_id: None,
        trace_id: "0".repeat(31) + "1",
    };
    let resp = ctx
        .scope(async {
            client
                .request(Method::GET, "/internal")
                .send()
                .await
                .unwrap()
        })
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), "cart corr-42");

    let http = reqwest::Client::new();
    let (user_token, _) =
        keys.user_token(Uuid::new_v4(), Uuid::new_v4(), vec!["admin".into()], vec![]);
    let resp = http
        .get(format!("{base}/internal"))
        .bearer_auth(user_token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "a user token is no service token, even an admin's"
    );
    let resp = http.get(format!("{base}/internal")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let stranger = TokenKeys::stranger();
    let resp = http
        .get(format!("{base}/internal"))
        .bearer_auth(stranger.service_token(Service::Cart, Service::Cart).0)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_service_whose_broker_is_down_is_not_ready_but_serves_and_keeps_its_events() {
    let mut env = TestEnv::new();
    env.configure(|c| c.amqp_url = "amqp://guest:guest@127.0.0.1:1/%2f".into());
    let svc = env
        .start(Service::Customer, |common, listener, shutdown| {
            customer::run(customer::Config::with_common(common), listener, shutdown)
        })
        .await;
    let ready: Value = eventually("the service to answer", Duration::from_secs(20), || async {
        let resp = svc.http().get(svc.url("/health/ready")).send().await.ok()?;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        resp.json().await.ok()
    })
    .await;
    assert_eq!(ready["checks"]["postgres"], "ok");
    assert_eq!(ready["checks"]["redis"], "ok");
    assert!(
        ready["checks"]["rabbitmq"]
            .as_str()
            .unwrap()
            .starts_with("down"),
        "{ready}"
    );

    let (status, body) = svc
        .call(
            Method::POST,
            "/api/customers",
            None,
            Some(json!({"email": "offline@example.org", "password": "correct horse battery", "name": "Off Line"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let unsent: i64 = sqlx::query_scalar("select count(*) from outbox where published_at is null")
        .fetch_one(&env.db(Service::Customer).await)
        .await
        .unwrap();
    assert_eq!(unsent, 1, "the event waits in the outbox for the broker");
}
