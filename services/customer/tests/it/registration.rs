//! Registration: a new customer, malformed and invalid bodies, weak passwords, one
//! account per email whatever its case.

use mp_events::Service;
use mp_test_support::TestEnv;
use reqwest::{Method, StatusCode};
use serde_json::json;

use mp_test_support::api::assert_problem;

use mp_test_support::clients::Expect;
use mp_test_support::clients::customer::Customer;

use crate::harness::*;

#[tokio::test]
async fn a_registered_customer_can_log_in_and_read_their_profile() {
    let env = TestEnv::new();
    let svc = spawn(&env).await;
    // Raw, to see that no password (or hash of one) is in the answer.
    let (status, raw) = svc
        .api()
        .call(
            Method::POST,
            "/api/customers",
            None,
            Some(json!({"email": "Ada@Example.org", "password": PASSWORD, "name": "Ada", "phone": "+44 20 7946 0958"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{raw}");
    assert!(raw.get("password_hash").is_none() && raw.get("password").is_none());
    let created: Customer = serde_json::from_value(raw).unwrap();
    assert_eq!(created.email, "Ada@Example.org");
    assert_eq!(created.phone.as_deref(), Some("+442079460958"));
    assert_eq!(created.roles, ["customer"]);

    let (access, _) = tokens(&svc, "  ada@EXAMPLE.org ", PASSWORD).await;
    let me = client(&svc).me(&access).await.expect_ok();
    assert_eq!(me.id, created.id);

    let events: Vec<String> = sqlx::query_scalar("select event_type from outbox")
        .fetch_all(&env.db(Service::Customer).await)
        .await
        .unwrap();
    assert!(
        events.contains(&"customer.created".to_owned()),
        "{events:?}"
    );
}

#[tokio::test]
async fn registration_rejects_malformed_json_with_400_and_wrong_content_type_with_415() {
    let env = TestEnv::new();
    let svc = spawn(&env).await;
    let before = customer_count(&env).await;
    let resp = svc
        .http()
        .post(svc.url("/api/customers"))
        .header("content-type", "application/json")
        .body("{\"email\": \"a@b.org\",")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let resp = svc
        .http()
        .post(svc.url("/api/customers"))
        .body("email=a@b.org")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(customer_count(&env).await, before);
}

#[tokio::test]
async fn registration_names_every_invalid_field_and_creates_nothing() {
    let env = TestEnv::new();
    let svc = spawn(&env).await;
    let before = customer_count(&env).await;
    let (status, body) = svc
        .call(
            Method::POST,
            "/api/customers",
            None,
            Some(
                json!({"email": "not-an-email", "password": "short", "name": "  ", "phone": "12"}),
            ),
        )
        .await;
    assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY, None);
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["email", "password", "name", "phone"]);

    let (status, body) = svc
        .call(
            Method::POST,
            "/api/customers",
            None,
            Some(json!({"email": "a@example.org", "name": "A"})),
        )
        .await;
    assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY, None);
    assert_eq!(body["errors"][0]["field"], "password");

    let (status, body) = svc
        .call(Method::POST, "/api/customers", None, Some(json!({"email": "a@example.org", "password": PASSWORD, "name": "A", "role": "admin"})))
        .await;
    assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY, None);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("unknown field `role`"),
        "{body}"
    );

    let (status, body) = svc
        .call(
            Method::POST,
            "/api/customers",
            None,
            Some(json!({"email": 42, "password": PASSWORD, "name": "A"})),
        )
        .await;
    assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY, None);
    assert_eq!(body["errors"][0]["field"], "email");
    assert_eq!(customer_count(&env).await, before);
}

#[tokio::test]
async fn a_weak_password_is_refused_with_the_reason() {
    let env = TestEnv::new();
    let svc = spawn(&env).await;
    for weak in ["password123", "aaaaaaaaaaaaaa", "grace.hopper.rules"] {
        let (status, body) = svc
            .call(
                Method::POST,
                "/api/customers",
                None,
                Some(
                    json!({"email": "grace.hopper@example.org", "password": weak, "name": "Grace"}),
                ),
            )
            .await;
        assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY, None);
        assert_eq!(body["errors"][0]["field"], "password", "{weak}: {body}");
    }
}

#[tokio::test]
async fn the_same_email_in_another_case_is_a_409() {
    let env = TestEnv::new();
    let svc = spawn(&env).await;
    register(&svc, "grace@example.org").await;
    let (status, body) = svc
        .call(
            Method::POST,
            "/api/customers",
            None,
            Some(json!({"email": " GRACE@Example.ORG", "password": PASSWORD, "name": "Impostor"})),
        )
        .await;
    assert_problem(status, &body, StatusCode::CONFLICT, None);
    let count: i64 = sqlx::query_scalar(
        "select count(*) from customers where email_normalized = 'grace@example.org'",
    )
    .fetch_one(&env.db(Service::Customer).await)
    .await
    .unwrap();
    assert_eq!(count, 1);
}
