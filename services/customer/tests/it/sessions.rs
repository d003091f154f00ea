//! Tokens and sessions: tampered, expired and malformed tokens, refresh rotation with
//! reuse detection, logout, and a flushed Redis.

use mp_common::TokenKeys;
use mp_common::auth::{Claims, ISSUER, USER_AUDIENCE};
use mp_events::Service;
use mp_test_support::TestEnv;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use mp_test_support::api::assert_problem;

use crate::harness::*;

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
        sub: created.id.to_string(),
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
        assert_problem(status, &body, StatusCode::UNAUTHORIZED, None);
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
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, None);
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
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, None);
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
