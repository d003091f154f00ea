//! The customer API end to end, against real PostgreSQL, RabbitMQ and Redis.

use std::time::Duration;

use mp_common::TokenKeys;
use mp_common::auth::{Claims, ISSUER, USER_AUDIENCE};
use mp_events::Service;
use mp_events::catalog::VendorCreated;
use mp_test_support::{TestEnv, TestService, eventually};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

const ADMIN_EMAIL: &str = "root@marketplace.test";
const ADMIN_PASSWORD: &str = "admin password for tests";
const PASSWORD: &str = "correct horse battery";

async fn spawn(env: &TestEnv) -> TestService {
    env.spawn(Service::Customer, |common, listener, shutdown| {
        let mut config = customer::Config::with_common(common);
        config.settings.admin_email = Some(ADMIN_EMAIL.into());
        config.settings.admin_password = Some(ADMIN_PASSWORD.into());
        config.settings.login_max_failures = 3;
        customer::run(config, listener, shutdown)
    })
    .await
}

async fn register(svc: &TestService, email: &str) -> Value {
    let (status, body) = svc
        .call(Method::POST, "/api/customers", None, Some(json!({"email": email, "password": PASSWORD, "name": "Ada Lovelace", "phone": "+44 20 7946 0958"})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

async fn login(svc: &TestService, email: &str, password: &str) -> (StatusCode, Value) {
    svc.call(
        Method::POST,
        "/api/auth/login",
        None,
        Some(json!({"email": email, "password": password})),
    )
    .await
}

async fn tokens(svc: &TestService, email: &str, password: &str) -> (String, String) {
    let (status, body) = login(svc, email, password).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (
        body["access_token"].as_str().unwrap().to_owned(),
        body["refresh_token"].as_str().unwrap().to_owned(),
    )
}

fn assert_problem(status: StatusCode, body: &Value, expected: StatusCode) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["status"], expected.as_u16(), "problem body: {body}");
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "problem body: {body}"
    );
}

async fn customer_count(env: &TestEnv) -> i64 {
    sqlx::query_scalar("select count(*) from customers")
        .fetch_one(&env.db(Service::Customer).await)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_registered_customer_can_log_in_and_read_their_profile() {
    let env = TestEnv::new();
    let svc = spawn(&env).await;
    let created = register(&svc, "Ada@Example.org").await;
    assert_eq!(created["email"], "Ada@Example.org");
    assert_eq!(created["phone"], "+442079460958");
    assert_eq!(created["roles"], json!(["customer"]));
    assert!(created.get("password_hash").is_none() && created.get("password").is_none());

    let (access, _) = tokens(&svc, "  ada@EXAMPLE.org ", PASSWORD).await;
    let (status, me) = svc
        .call(Method::GET, "/api/customers/me", Some(&access), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["id"], created["id"]);

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
    assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY);
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
    assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["errors"][0]["field"], "password");

    let (status, body) = svc
        .call(Method::POST, "/api/customers", None, Some(json!({"email": "a@example.org", "password": PASSWORD, "name": "A", "role": "admin"})))
        .await;
    assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY);
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
    assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY);
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
        assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY);
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
    assert_problem(status, &body, StatusCode::CONFLICT);
    let count: i64 = sqlx::query_scalar(
        "select count(*) from customers where email_normalized = 'grace@example.org'",
    )
    .fetch_one(&env.db(Service::Customer).await)
    .await
    .unwrap();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_email_get_the_same_401() {
    let env = TestEnv::new();
    let svc = spawn(&env).await;
    register(&svc, "alan@example.org").await;
    let (s1, wrong_password) = login(&svc, "alan@example.org", "not the password").await;
    let (s2, unknown_email) = login(&svc, "nobody@example.org", PASSWORD).await;
    assert_problem(s1, &wrong_password, StatusCode::UNAUTHORIZED);
    assert_problem(s2, &unknown_email, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong_password, unknown_email);
}

#[tokio::test]
async fn repeated_failed_logins_are_throttled_even_with_the_right_password() {
    let env = TestEnv::new();
    let svc = spawn(&env).await;
    register(&svc, "eve@example.org").await;
    for _ in 0..3 {
        assert_eq!(
            login(&svc, "eve@example.org", "guess guess guess").await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let resp = svc
        .http()
        .post(svc.url("/api/auth/login"))
        .json(&json!({"email": "EVE@example.org", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // Short: anyone can fail logins for a victim's email, so the block must not last.
    assert!(retry_after > 0 && retry_after <= 60, "{retry_after}");
    // Another account is not affected.
    register(&svc, "bob@example.org").await;
    assert_eq!(
        login(&svc, "bob@example.org", PASSWORD).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn tampered_expired_and_malformed_tokens_are_401() {
    let env = TestEnv::new();
    let svc = spawn(&env).await;
    let created = register(&svc, "mallory@example.org").await;
    let (access, _) = tokens(&svc, "mallory@example.org", PASSWORD).await;

    // Flip the payload to claim admin with the original signature.
    let parts: Vec<&str> = access.split('.').collect();
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: Value = serde_json::from_slice(&engine.decode(parts[1]).unwrap()).unwrap();
    claims["roles"] = json!(["customer", "admin"]);
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        engine.encode(claims.to_string()),
        parts[2]
    );

    let keys = TokenKeys::from_config(&env.config(Service::Customer)).unwrap();
    let now = chrono::Utc::now().timestamp();
    let expired = keys.sign(&Claims {
        iss: ISSUER.into(),
        aud: USER_AUDIENCE.into(),
        sub: created["id"].as_str().unwrap().into(),
        sid: Some(Uuid::new_v4()),
        roles: vec!["customer".into()],
        vendors: vec![],
        iat: now - 3600,
        exp: now - 60,
        jti: Uuid::new_v4(),
    });
    let other_key = TokenKeys::stranger();
    let (wrong_key, _) =
        other_key.user_token(Uuid::new_v4(), Uuid::new_v4(), vec!["admin".into()], vec![]);
    let (service_token, _) = keys.service_token(Service::Cart, Service::Customer);

    for token in [
        forged.as_str(),
        expired.as_str(),
        wrong_key.as_str(),
        service_token.as_str(),
        "garbage",
    ] {
        let (status, body) = svc
            .call(Method::GET, "/api/customers/me", Some(token), None)
            .await;
        assert_problem(status, &body, StatusCode::UNAUTHORIZED);
    }
    let resp = svc
        .http()
        .get(svc.url("/api/customers/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
}

#[tokio::test]
async fn refresh_rotates_tokens_and_reusing_an_old_one_ends_the_session() {
    let env = TestEnv::new();
    let svc = spawn(&env).await;
    register(&svc, "carol@example.org").await;
    let (access1, refresh1) = tokens(&svc, "carol@example.org", PASSWORD).await;

    let (status, rotated) = svc
        .call(
            Method::POST,
            "/api/auth/refresh",
            None,
            Some(json!({"refresh_token": refresh1})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let refresh2 = rotated["refresh_token"].as_str().unwrap().to_owned();
    let access2 = rotated["access_token"].as_str().unwrap().to_owned();
    assert_ne!(refresh1, refresh2);
    assert_eq!(
        svc.call(Method::GET, "/api/customers/me", Some(&access2), None)
            .await
            .0,
        StatusCode::OK
    );

    // The old refresh token comes back: treat as stolen, end the session.
    let (status, body) = svc
        .call(
            Method::POST,
            "/api/auth/refresh",
            None,
            Some(json!({"refresh_token": refresh1})),
        )
        .await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED);
    let (status, _) = svc
        .call(
            Method::POST,
            "/api/auth/refresh",
            None,
            Some(json!({"refresh_token": refresh2})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the rotated token died with the session"
    );
    for access in [&access1, &access2] {
        assert_eq!(
            svc.call(Method::GET, "/api/customers/me", Some(access), None)
                .await
                .0,
            StatusCode::UNAUTHORIZED
        );
    }
    // A fresh login still works.
    tokens(&svc, "carol@example.org", PASSWORD).await;

    let (status, body) = svc
        .call(
            Method::POST,
            "/api/auth/refresh",
            None,
            Some(json!({"refresh_token": "not-a-token"})),
        )
        .await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn logout_kills_the_access_token_at_once_and_only_that_session() {
    let env = TestEnv::new();
    let svc = spawn(&env).await;
    register(&svc, "dave@example.org").await;
    let (laptop, laptop_refresh) = tokens(&svc, "dave@example.org", PASSWORD).await;
    let (phone, _) = tokens(&svc, "dave@example.org", PASSWORD).await;

    let (status, _) = svc
        .call(Method::POST, "/api/auth/logout", Some(&laptop), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        svc.call(Method::GET, "/api/customers/me", Some(&laptop), None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    let (status, _) = svc
        .call(
            Method::POST,
            "/api/auth/refresh",
            None,
            Some(json!({"refresh_token": laptop_refresh})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        svc.call(Method::GET, "/api/customers/me", Some(&phone), None)
            .await
            .0,
        StatusCode::OK
    );
}

/// Redis loses its data (flushed, restarted without persistence) after a logout: the
/// revocation marker is gone, yet the logged-out token does not come back. Every token
/// issued before the loss is refused (the first verifier to notice records a new
/// beginning); logging in again works. (The logged-out token was valid again until it
/// expired.)
#[tokio::test]
async fn a_flushed_redis_does_not_bring_a_logged_out_token_back() {
    let env = TestEnv::new();
    let svc = spawn(&env).await;
    register(&svc, "erin@example.org").await;
    let (logged_out, _) = tokens(&svc, "erin@example.org", PASSWORD).await;
    let (other, _) = tokens(&svc, "erin@example.org", PASSWORD).await;
    let (status, _) = svc
        .call(Method::POST, "/api/auth/logout", Some(&logged_out), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // The same sessions' tokens as issued a minute ago (the loss comes later in their
    // lives than the clock leeway).
    let keys = TokenKeys::from_config(&env.config(Service::Customer)).unwrap();
    let older = |token: &str| {
        let mut claims = keys.verify(token, USER_AUDIENCE).unwrap();
        claims.iat -= 60;
        keys.sign(&claims)
    };
    let (logged_out, other) = (older(&logged_out), older(&other));

    let mut redis = env.redis().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("t_{}:*", env.id))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    let _: () = redis::cmd("DEL")
        .arg(keys)
        .query_async(&mut redis)
        .await
        .unwrap();

    for (name, token) in [
        ("the logged-out token", &logged_out),
        ("an older token", &other),
    ] {
        let (status, body) = svc
            .call(Method::GET, "/api/customers/me", Some(token), None)
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name}: {body}");
    }
    let (fresh, _) = tokens(&svc, "erin@example.org", PASSWORD).await;
    let (status, body) = svc
        .call(Method::GET, "/api/customers/me", Some(&fresh), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_customer_cannot_read_another_customer_but_an_admin_can() {
    let env = TestEnv::new();
    let svc = spawn(&env).await;
    let erin = register(&svc, "erin@example.org").await;
    register(&svc, "frank@example.org").await;
    let (frank, _) = tokens(&svc, "frank@example.org", PASSWORD).await;
    let erin_path = format!("/api/customers/{}", erin["id"].as_str().unwrap());

    let (status, body) = svc.call(Method::GET, &erin_path, Some(&frank), None).await;
    assert_problem(status, &body, StatusCode::FORBIDDEN);
    let (status, body) = svc
        .call(Method::GET, "/api/customers/not-a-uuid", Some(&frank), None)
        .await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST);

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
    assert_problem(status, &body, StatusCode::NOT_FOUND);
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
    assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, body) = svc
        .call(
            Method::PATCH,
            "/api/customers/me",
            Some(&access),
            Some(json!({"email": "x@example.org"})),
        )
        .await;
    assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY);

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
async fn vendor_created_grants_membership_that_new_tokens_carry() {
    let env = TestEnv::new();
    let svc = spawn(&env).await;
    let ivan = register(&svc, "ivan@example.org").await;
    let ivan_id: Uuid = ivan["id"].as_str().unwrap().parse().unwrap();
    let (_, refresh) = tokens(&svc, "ivan@example.org", PASSWORD).await;

    // Publish vendor.created through a real outbox and RabbitMQ, as the vendor service would.
    let vendor_id = Uuid::now_v7();
    let db = env.db(Service::Customer).await;
    let mut tx = db.begin().await.unwrap();
    let event = VendorCreated {
        vendor_id,
        owner_id: ivan_id,
        name: "Ivan's".into(),
        email: "shop@example.org".into(),
        phone: None,
    };
    mp_events::enqueue(&mut tx, Service::Vendor, event)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let (access, _) = tokens(&svc, "ivan@example.org", PASSWORD).await;
    let me = eventually(
        "the membership to be granted",
        Duration::from_secs(10),
        || {
            let (svc, access) = (&svc, &access);
            async move {
                let (_, me) = svc
                    .call(Method::GET, "/api/customers/me", Some(access), None)
                    .await;
                (me["vendor_ids"] == json!([vendor_id])).then_some(me)
            }
        },
    )
    .await;
    assert!(
        me["roles"].as_array().unwrap().contains(&json!("vendor")),
        "{me}"
    );

    // Tokens issued from now on carry the membership.
    let (status, body) = svc
        .call(
            Method::POST,
            "/api/auth/refresh",
            None,
            Some(json!({"refresh_token": refresh})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let keys = TokenKeys::from_config(&env.config(Service::Customer)).unwrap();
    let claims = keys
        .verify(body["access_token"].as_str().unwrap(), USER_AUDIENCE)
        .unwrap();
    assert_eq!(claims.vendors, vec![vendor_id]);
    assert!(claims.roles.contains(&"vendor".to_owned()));
}

#[tokio::test]
async fn the_correlation_id_is_echoed_and_carried_into_the_events_a_request_causes() {
    let env = TestEnv::new();
    let svc = spawn(&env).await;
    let resp = svc
        .http()
        .post(svc.url("/api/customers"))
        .header("x-correlation-id", "checkout-7f3a")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .json(&json!({"email": "judy@example.org", "password": PASSWORD, "name": "Judy"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()["x-correlation-id"], "checkout-7f3a");
    assert_eq!(
        resp.headers()["x-trace-id"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );

    let envelope: Value = sqlx::query_scalar("select envelope from outbox where event_type = 'customer.created' and envelope->'payload'->>'email' = 'judy@example.org'")
        .fetch_one(&env.db(Service::Customer).await)
        .await
        .unwrap();
    assert_eq!(envelope["correlation_id"], "checkout-7f3a");
    assert!(
        envelope["traceparent"]
            .as_str()
            .unwrap()
            .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    );
    assert_eq!(envelope["source"], "customer");

    // Without a header, one is generated and still echoed.
    let resp = svc
        .http()
        .get(svc.url("/health/live"))
        .send()
        .await
        .unwrap();
    assert!(!resp.headers()["x-correlation-id"].is_empty());
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
    let (status, _) = login(&svc, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the password was not replaced"
    );
    let admins: i64 = sqlx::query_scalar("select count(*) from customers where is_admin")
        .fetch_one(&env.db(Service::Customer).await)
        .await
        .unwrap();
    assert_eq!(admins, 0);
}

#[tokio::test]
async fn one_client_guessing_many_accounts_is_throttled_by_its_address() {
    let env = TestEnv::new();
    let svc = env
        .spawn(Service::Customer, |common, listener, shutdown| {
            let mut config = customer::Config::with_common(common);
            config.settings.login_max_failures_per_address = 4;
            // The test client plays Kong: its X-Forwarded-For is believed.
            config.settings.trusted_proxies =
                customer::throttle::parse_proxies("127.0.0.1").unwrap();
            customer::run(config, listener, shutdown)
        })
        .await;
    register(&svc, "zoe@example.org").await;
    let from = |addr: &'static str, email: String, password: &'static str| {
        svc.http()
            .post(svc.url("/api/auth/login"))
            .header("x-forwarded-for", addr)
            .json(&json!({"email": email, "password": password}))
            .send()
    };
    // Four different accounts, one wrong guess each: no email reaches its own limit.
    for i in 0..4 {
        let resp = from(
            "203.0.113.7",
            format!("victim{i}@example.org"),
            "guess guess guess",
        )
        .await
        .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    let resp = from("203.0.113.7", "zoe@example.org".into(), PASSWORD)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key("retry-after"));
    // The account owner, from elsewhere, is not locked out.
    let resp = from("198.51.100.2", "zoe@example.org".into(), PASSWORD)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

/// The client writes `X-Forwarded-For` itself, trying to pass as someone else: the
/// address counted is the hop the trusted proxy (the test client playing Kong, which
/// appends the real address) added, so the spoofed part neither escapes the limit nor
/// locks out the address it names; and with no trusted proxy the header is ignored.
#[tokio::test]
async fn a_spoofed_forwarded_for_neither_escapes_the_limit_nor_locks_out_another_address() {
    let env = TestEnv::new();
    let svc = env
        .spawn(Service::Customer, |common, listener, shutdown| {
            let mut config = customer::Config::with_common(common);
            config.settings.login_max_failures_per_address = 3;
            config.settings.trusted_proxies =
                customer::throttle::parse_proxies("127.0.0.1").unwrap();
            customer::run(config, listener, shutdown)
        })
        .await;
    register(&svc, "yan@example.org").await;
    let attacker = "198.51.100.66";
    let victim = "203.0.113.9";
    let send = |forwarded: String, email: String, password: &'static str| {
        svc.http()
            .post(svc.url("/api/auth/login"))
            .header("x-forwarded-for", forwarded)
            .json(&json!({"email": email, "password": password}))
            .send()
    };
    // The attacker spoofs a new address each time; Kong appends the real one.
    let mut statuses = Vec::new();
    for i in 0..6 {
        let resp = send(
            format!("192.0.2.{i}, {victim}, {attacker}"),
            format!("someone{i}@example.org"),
            "guess guess guess",
        )
        .await
        .unwrap();
        statuses.push(resp.status());
    }
    assert_eq!(
        statuses,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS,
        ],
        "the attacker's real address is what counts"
    );
    // The address the attacker named is not locked out.
    let resp = send(victim.into(), "yan@example.org".into(), PASSWORD)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // A service with no trusted proxy ignores the header: the peer counts.
    let env = TestEnv::new();
    let svc = env
        .spawn(Service::Customer, |common, listener, shutdown| {
            let mut config = customer::Config::with_common(common);
            config.settings.login_max_failures_per_address = 2;
            customer::run(config, listener, shutdown)
        })
        .await;
    let mut last = StatusCode::OK;
    for i in 0..3 {
        last = svc
            .http()
            .post(svc.url("/api/auth/login"))
            .header("x-forwarded-for", format!("192.0.2.{i}"))
            .json(&json!({"email": format!("x{i}@example.org"), "password": "guess guess guess"}))
            .send()
            .await
            .unwrap()
            .status();
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
}

/// Fifty wrong guesses for one account sent at once: each attempt is counted before
/// its password is hashed, so at most the allowed three are even checked; the rest are
/// 429. (Checked first and counted after the hash, they all passed the check.)
#[tokio::test]
async fn fifty_parallel_wrong_guesses_get_at_most_the_allowed_number_through() {
    let env = TestEnv::new();
    let svc = spawn(&env).await;
    register(&svc, "par@example.org").await;
    let guesses = (0..50).map(|_| login(&svc, "par@example.org", "guess guess guess"));
    let statuses: Vec<StatusCode> = futures::future::join_all(guesses)
        .await
        .into_iter()
        .map(|(status, _)| status)
        .collect();
    let checked = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(checked <= 3, "{checked} guesses were checked: {statuses:?}");
    assert_eq!(checked + refused, 50, "{statuses:?}");
}

/// An oversized email or password is refused before anything is hashed, field by
/// field; and no password (the admin's from the settings, a login's or a
/// registration's) shows in `Debug` output.
#[tokio::test]
async fn oversized_credentials_are_refused_before_hashing_and_secrets_never_show_in_debug() {
    let env = TestEnv::new();
    let svc = spawn(&env).await;
    let (status, body) = login(&svc, "a@example.org", &"x".repeat(5000)).await;
    assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["errors"][0]["field"], "password", "{body}");
    let (status, body) = login(&svc, &format!("{}@example.org", "a".repeat(300)), PASSWORD).await;
    assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["errors"][0]["field"], "email", "{body}");

    let secret = "a very secret password 42";
    let login: customer::routes::LoginRequest =
        serde_json::from_value(json!({"email": "a@example.org", "password": secret})).unwrap();
    let register: customer::routes::RegisterRequest = serde_json::from_value(
        json!({"email": "a@example.org", "password": secret, "name": "Ada", "phone": null}),
    )
    .unwrap();
    let mut config = customer::Config::with_common(env.config(Service::Customer));
    config.settings.admin_password = Some(secret.into());
    for shown in [
        format!("{login:?}"),
        format!("{register:?}"),
        format!("{config:?}"),
    ] {
        assert!(!shown.contains(secret), "{shown}");
    }
}
