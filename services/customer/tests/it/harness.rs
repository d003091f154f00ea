//! The customer service of one isolated environment, and the calls most tests make:
//! register, log in, count the customers.

use mp_events::Service;
use mp_test_support::{TestEnv, TestService};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

pub const ADMIN_EMAIL: &str = "root@marketplace.test";
pub const ADMIN_PASSWORD: &str = "admin password for tests";
pub const PASSWORD: &str = "correct horse battery";

pub async fn spawn(env: &TestEnv) -> TestService {
    env.spawn(Service::Customer, |common, listener, shutdown| {
        let mut config = customer::Config::with_common(common);
        config.settings.admin_email = Some(ADMIN_EMAIL.into());
        config.settings.admin_password = Some(ADMIN_PASSWORD.into());
        config.settings.login_max_failures = 3;
        customer::run(config, listener, shutdown)
    })
    .await
}

pub async fn register(svc: &TestService, email: &str) -> Value {
    let (status, body) = svc
        .call(Method::POST, "/api/customers", None, Some(json!({"email": email, "password": PASSWORD, "name": "Ada Lovelace", "phone": "+44 20 7946 0958"})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

pub async fn login(svc: &TestService, email: &str, password: &str) -> (StatusCode, Value) {
    svc.call(
        Method::POST,
        "/api/auth/login",
        None,
        Some(json!({"email": email, "password": password})),
    )
    .await
}

pub async fn tokens(svc: &TestService, email: &str, password: &str) -> (String, String) {
    let (status, body) = login(svc, email, password).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (
        body["access_token"].as_str().unwrap().to_owned(),
        body["refresh_token"].as_str().unwrap().to_owned(),
    )
}

pub async fn customer_count(env: &TestEnv) -> i64 {
    sqlx::query_scalar("select count(*) from customers")
        .fetch_one(&env.db(Service::Customer).await)
        .await
        .unwrap()
}
