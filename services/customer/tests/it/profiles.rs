//! Profiles and the admin: who may read whom, the admin ensured once, updates saved,
//! published and validated.

use mp_events::Service;
use mp_test_support::TestEnv;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use mp_test_support::api::assert_problem;

use mp_test_support::clients::Expect;

use crate::harness::*;

#[tokio::test]
async fn a_customer_cannot_read_another_customer_but_an_admin_can() {
    let env = TestEnv::new();
    let svc = spawn(&env).await;
    let erin = register(&svc, "erin@example.org").await;
    register(&svc, "frank@example.org").await;
    let (frank, _) = tokens(&svc, "frank@example.org", PASSWORD).await;
    let erin_path = format!("/api/customers/{}", erin.id);

    let (status, body) = svc.call(Method::GET, &erin_path, Some(&frank), None).await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, None);
    let (status, body) = svc
        .call(Method::GET, "/api/customers/not-a-uuid", Some(&frank), None)
        .await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST, None);

    let (admin, _) = tokens(&svc, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let (status, body) = svc.call(Method::GET, &erin_path, Some(&admin), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["email"], "erin@example.org");
    let (status, body) = svc
        .call(
            Method::GET,
            &format!("/api/customers/{}", Uuid::new_v4()),
            Some(&admin),
            None,
        )
        .await;
    assert_problem(status, &body, StatusCode::NOT_FOUND, None);
}

#[tokio::test]
async fn the_admin_is_ensured_once_at_start_up() {
    let env = TestEnv::new();
    let svc = spawn(&env).await;
    svc.stop().await.unwrap();
    let svc = spawn(&env).await;
    let (admin, _) = tokens(&svc, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let (_, me) = svc
        .call(Method::GET, "/api/customers/me", Some(&admin), None)
        .await;
    assert!(
        me["roles"].as_array().unwrap().contains(&json!("admin")),
        "{me}"
    );
    let admins: i64 = sqlx::query_scalar("select count(*) from customers where is_admin")
        .fetch_one(&env.db(Service::Customer).await)
        .await
        .unwrap();
    assert_eq!(admins, 1);
}

#[tokio::test]
async fn a_profile_update_is_saved_published_and_validated() {
    let env = TestEnv::new();
    let svc = spawn(&env).await;
    register(&svc, "heidi@example.org").await;
    let (access, _) = tokens(&svc, "heidi@example.org", PASSWORD).await;

    let (status, body) = svc
        .call(
            Method::PATCH,
            "/api/customers/me",
            Some(&access),
            Some(json!({"name": "Heidi K", "phone": null})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["name"], "Heidi K");
    assert_eq!(body["phone"], Value::Null);

    let (status, body) = svc
        .call(
            Method::PATCH,
            "/api/customers/me",
            Some(&access),
            Some(json!({"phone": "0800 123"})),
        )
        .await;
    assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY, None);
    let (status, body) = svc
        .call(
            Method::PATCH,
            "/api/customers/me",
            Some(&access),
            Some(json!({"email": "x@example.org"})),
        )
        .await;
    assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY, None);

    let (_, me) = svc
        .call(Method::GET, "/api/customers/me", Some(&access), None)
        .await;
    assert_eq!(
        (me["name"].as_str(), me["phone"].as_str()),
        (Some("Heidi K"), None)
    );
    let updates: i64 =
        sqlx::query_scalar("select count(*) from outbox where event_type = 'customer.updated'")
            .fetch_one(&env.db(Service::Customer).await)
            .await
            .unwrap();
    assert_eq!(updates, 1);
}

#[tokio::test]
async fn an_existing_customer_is_never_promoted_by_the_admin_setting() {
    let env = TestEnv::new();
    let plain = env
        .spawn(Service::Customer, |common, listener, shutdown| {
            customer::run(customer::Config::with_common(common), listener, shutdown)
        })
        .await;
    // Someone registered the address before the operator configured it as the admin's.
    register(&plain, ADMIN_EMAIL).await;
    let (early_session, _) = tokens(&plain, ADMIN_EMAIL, PASSWORD).await;
    plain.stop().await.unwrap();

    let svc = spawn(&env).await;
    let (_, me) = svc
        .call(Method::GET, "/api/customers/me", Some(&early_session), None)
        .await;
    assert_eq!(me["roles"], json!(["customer"]), "{me}");
    // The password was not replaced.
    login(&svc, ADMIN_EMAIL, ADMIN_PASSWORD)
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, None);
    let admins: i64 = sqlx::query_scalar("select count(*) from customers where is_admin")
        .fetch_one(&env.db(Service::Customer).await)
        .await
        .unwrap();
    assert_eq!(admins, 0);
}
