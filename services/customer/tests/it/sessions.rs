//! Tokens and sessions: tampered, expired and malformed tokens, refresh rotation with
//! reuse detection, logout, and a flushed Redis.

use mp_common::TokenKeys;
use mp_common::auth::{Claims, ISSUER, USER_AUDIENCE};
use mp_events::Service;
use mp_test_support::TestEnv;
use mp_test_support::clients::customer::Customer;
use mp_test_support::clients::{ApiResult, Expect};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::*;

/// Asserts a 401 answer; `what` names the refused request.
#[track_caller]
fn assert_401<T: std::fmt::Debug>(result: ApiResult<T>, what: &str) {
    assert!(
        matches!(&result, Err(p) if p.status == StatusCode::UNAUTHORIZED),
        "{what}: {result:?}"
    );
}

#[tokio::test]
async fn tampered_expired_and_malformed_tokens_are_401() {
    let env = TestEnv::new();
    let svc = spawn(&env).await;
    let api = client(&svc);
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
        api.me(token)
            .await
            .expect_problem(StatusCode::UNAUTHORIZED, None);
    }
    // No token at all (a request the typed call, which always sends one, cannot make).
    let problem = api
        .0
        .get::<Customer>("/api/customers/me", None)
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, None);
    assert_eq!(problem.headers["www-authenticate"], "Bearer");
}

#[tokio::test]
async fn refresh_rotates_tokens_and_reusing_an_old_one_ends_the_session() {
    let env = TestEnv::new();
    let svc = spawn(&env).await;
    let api = client(&svc);
    register(&svc, "carol@example.org").await;
    let (access1, refresh1) = tokens(&svc, "carol@example.org", PASSWORD).await;

    let rotated = api.refresh(&refresh1).await.expect_ok();
    let (access2, refresh2) = (rotated.access_token, rotated.refresh_token);
    assert_ne!(refresh1, refresh2);
    api.me(&access2).await.expect_ok();

    // The old refresh token comes back: treat as stolen, end the session.
    api.refresh(&refresh1)
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, None);
    assert_401(
        api.refresh(&refresh2).await,
        "the rotated token died with the session",
    );
    for access in [&access1, &access2] {
        assert_401(api.me(access).await, "an access token of the ended session");
    }
    // A fresh login still works.
    tokens(&svc, "carol@example.org", PASSWORD).await;

    api.refresh("not-a-token")
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, None);
}

#[tokio::test]
async fn logout_kills_the_access_token_at_once_and_only_that_session() {
    let env = TestEnv::new();
    let svc = spawn(&env).await;
    let api = client(&svc);
    register(&svc, "dave@example.org").await;
    let (laptop, laptop_refresh) = tokens(&svc, "dave@example.org", PASSWORD).await;
    let (phone, _) = tokens(&svc, "dave@example.org", PASSWORD).await;

    api.logout(&laptop).await.expect_ok();
    assert_401(api.me(&laptop).await, "the logged-out access token");
    assert_401(
        api.refresh(&laptop_refresh).await,
        "the logged-out refresh token",
    );
    api.me(&phone).await.expect_ok();
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
    let api = client(&svc);
    register(&svc, "erin@example.org").await;
    let (logged_out, _) = tokens(&svc, "erin@example.org", PASSWORD).await;
    let (other, _) = tokens(&svc, "erin@example.org", PASSWORD).await;
    api.logout(&logged_out).await.expect_ok();
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
        assert_401(api.me(token).await, name);
    }
    let (fresh, _) = tokens(&svc, "erin@example.org", PASSWORD).await;
    api.me(&fresh).await.expect_ok();
}
