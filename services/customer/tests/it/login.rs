//! Logging in and the login throttle: one answer for a wrong password and an unknown
//! email, limits per address and per email that a forged X-Forwarded-For cannot escape,
//! credentials refused before hashing, no secret in Debug.

use mp_events::Service;
use mp_test_support::TestEnv;
use reqwest::StatusCode;
use serde_json::json;

use mp_test_support::clients::Expect;

use crate::harness::*;

#[tokio::test]
async fn a_wrong_password_and_an_unknown_email_get_the_same_401() {
    let env = TestEnv::new();
    let svc = spawn(&env).await;
    register(&svc, "alan@example.org").await;
    let wrong_password = login(&svc, "alan@example.org", "not the password")
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, None);
    let unknown_email = login(&svc, "nobody@example.org", PASSWORD)
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, None);
    assert_eq!(wrong_password.body, unknown_email.body);
}

#[tokio::test]
async fn repeated_failed_logins_are_throttled_even_with_the_right_password() {
    let env = TestEnv::new();
    let svc = spawn(&env).await;
    register(&svc, "eve@example.org").await;
    for _ in 0..3 {
        login(&svc, "eve@example.org", "guess guess guess")
            .await
            .expect_problem(StatusCode::UNAUTHORIZED, None);
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
    login(&svc, "bob@example.org", PASSWORD).await.expect_ok();
}

#[tokio::test]
async fn one_client_guessing_many_accounts_is_throttled_by_its_address() {
    let env = TestEnv::new();
    let svc = env
        .spawn(Service::Customer, |common, listener, shutdown| {
            let mut config = customer::Config::with_common(common);
            config.settings.login_max_failures_per_address = 4;
            // The test client plays Kong: its X-Forwarded-For is believed.
            config.settings.trusted_proxies = customer::domain::parse_proxies("127.0.0.1").unwrap();
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
            config.settings.trusted_proxies = customer::domain::parse_proxies("127.0.0.1").unwrap();
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
        .map(|r| r.err().map_or(StatusCode::OK, |p| p.status))
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
    let problem = login(&svc, "a@example.org", &"x".repeat(5000))
        .await
        .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, Some("password"));
    assert_eq!(problem.errors.len(), 1, "{problem}");
    let problem = login(&svc, &format!("{}@example.org", "a".repeat(300)), PASSWORD)
        .await
        .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, Some("email"));
    assert_eq!(problem.errors.len(), 1, "{problem}");

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
