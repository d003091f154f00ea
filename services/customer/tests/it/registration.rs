//! Registration: a new customer, malformed and invalid bodies, weak passwords, one
//! account per email whatever its case.

use mp_events::Service;
use mp_test_support::TestEnv;
use mp_test_support::client::Problem;
use mp_test_support::clients::Expect;
use mp_test_support::clients::customer::{Customer, Register};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::*;

/// A registration without a phone number.
fn registration(email: &str, password: &str, name: &str) -> Register {
    Register {
        email: email.into(),
        password: password.into(),
        name: name.into(),
        phone: None,
    }
}

#[tokio::test]
async fn a_registered_customer_can_log_in_and_read_their_profile() {
    let env = TestEnv::new();
    let svc = spawn(&env).await;
    let ada = Register {
        phone: Some("+44 20 7946 0958".into()),
        ..registration("Ada@Example.org", PASSWORD, "Ada")
    };
    // The answer as JSON, to see that no password (or hash of one) is in it.
    let raw: Value = client(&svc)
        .0
        .json(
            Method::POST,
            "/api/customers",
            None,
            &ada,
            StatusCode::CREATED,
        )
        .await
        .expect_ok();
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
    let api = client(&svc).0;
    let before = customer_count(&env).await;
    let (status, content_type, body) = api
        .call_text(
            Method::POST,
            "/api/customers",
            None,
            "application/json",
            "{\"email\": \"a@b.org\",",
        )
        .await;
    let problem = Problem::from_parts(status, &content_type, body);
    assert_eq!(problem.status, StatusCode::BAD_REQUEST, "{problem}");
    assert_eq!(problem.content_type, "application/problem+json");
    // No Content-Type at all.
    let request = api
        .request(Method::POST, "/api/customers", None)
        .body("email=a@b.org");
    let refused = api.reply::<Customer>(request).await;
    assert!(
        matches!(&refused, Err(p) if p.status == StatusCode::UNSUPPORTED_MEDIA_TYPE),
        "{refused:?}"
    );
    assert_eq!(customer_count(&env).await, before);
}

#[tokio::test]
async fn registration_names_every_invalid_field_and_creates_nothing() {
    let env = TestEnv::new();
    let svc = spawn(&env).await;
    let api = client(&svc);
    let before = customer_count(&env).await;
    let invalid = Register {
        phone: Some("12".into()),
        ..registration("not-an-email", "short", "  ")
    };
    let problem = api
        .register(&invalid)
        .await
        .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, None);
    let fields: Vec<&str> = problem.errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["email", "password", "name", "phone"]);

    // What a typed body cannot write: a missing field, an unknown one, a wrong type.
    let problem = api
        .register(&json!({"email": "a@example.org", "name": "A"}))
        .await
        .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, None);
    assert_eq!(problem.errors[0].field, "password");

    let problem = api
        .register(
            &json!({"email": "a@example.org", "password": PASSWORD, "name": "A", "role": "admin"}),
        )
        .await
        .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, None);
    assert!(
        problem
            .detail
            .as_deref()
            .unwrap()
            .contains("unknown field `role`"),
        "{problem}"
    );

    let problem = api
        .register(&json!({"email": 42, "password": PASSWORD, "name": "A"}))
        .await
        .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, None);
    assert_eq!(problem.errors[0].field, "email");
    assert_eq!(customer_count(&env).await, before);
}

#[tokio::test]
async fn a_weak_password_is_refused_with_the_reason() {
    let env = TestEnv::new();
    let svc = spawn(&env).await;
    for weak in ["password123", "aaaaaaaaaaaaaa", "grace.hopper.rules"] {
        let problem = client(&svc)
            .register(&registration("grace.hopper@example.org", weak, "Grace"))
            .await
            .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, None);
        assert_eq!(problem.errors[0].field, "password", "{weak}: {problem}");
    }
}

#[tokio::test]
async fn the_same_email_in_another_case_is_a_409() {
    let env = TestEnv::new();
    let svc = spawn(&env).await;
    register(&svc, "grace@example.org").await;
    client(&svc)
        .register(&registration(" GRACE@Example.ORG", PASSWORD, "Impostor"))
        .await
        .expect_problem(StatusCode::CONFLICT, None);
    let count: i64 = sqlx::query_scalar(
        "select count(*) from customers where email_normalized = 'grace@example.org'",
    )
    .fetch_one(&env.db(Service::Customer).await)
    .await
    .unwrap();
    assert_eq!(count, 1);
}
