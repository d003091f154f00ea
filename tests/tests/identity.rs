//! Identity as a deployment runs it (not development mode): the customer service alone
//! signs user tokens (ES256) and publishes the public keys; other services verify with
//! public keys only, learn new ones from the JWKS, and trust each service's own key for
//! the tokens it presents.

use mp_common::TokenKeys;
use mp_common::keys::KeySet;
use mp_events::Service;
use mp_integration_tests::{PASSWORD, login};
use mp_test_support::clients::Expect;
use mp_test_support::clients::customer::{CustomerApi, Register};
use mp_test_support::clients::inventory::InventoryApi;
use mp_test_support::{TestEnv, TestService};
use reqwest::{Method, StatusCode};
use secrecy::SecretString;
use serde_json::{Value, json};
use uuid::Uuid;

fn key_of(set: &KeySet, service: Service) -> SecretString {
    set.services
        .iter()
        .find(|(s, _)| *s == service)
        .map(|(_, k)| k.clone())
        .unwrap()
}

/// The JWKS of the services' public keys only (user keys come from the customer service).
fn service_keys(set: &KeySet) -> String {
    let keys: Vec<&Value> = set.trusted["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["kid"].as_str().unwrap().starts_with("svc-"))
        .collect();
    json!({ "keys": keys }).to_string()
}

async fn customer(env: &TestEnv) -> TestService {
    env.spawn(Service::Customer, |common, listener, shutdown| {
        customer::run(customer::Config::with_common(common), listener, shutdown)
    })
    .await
}

fn kid(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

#[tokio::test]
async fn a_rotated_user_key_keeps_old_tokens_valid_while_verifiers_learn_the_new_one_from_the_jwks()
{
    let old = KeySet::generate().unwrap();
    let new_user_key = KeySet::generate().unwrap().user;
    let mut env = TestEnv::new();
    env.configure(|c| {
        c.dev_mode = false;
        c.trusted_keys = Some(service_keys(&old));
        c.service_key = Some(key_of(&old, Service::Customer));
        c.jwt_signing_key = Some(old.user.clone());
    });
    let before = customer(&env).await;
    // The rolled-out replica signs with the new key and still publishes the old one.
    let mut previous = vec![old.trusted["keys"][0].clone()];
    previous.extend(old.trusted["keys"].as_array().unwrap()[1..].iter().cloned());
    let with_previous = json!({ "keys": previous }).to_string();
    env.configure(|c| {
        c.jwt_signing_key = Some(new_user_key.clone());
        c.trusted_keys = Some(with_previous);
    });
    let after = customer(&env).await;
    // A verifier that knows no user key at all: it learns them from the JWKS.
    let jwks_url = after.url("/.well-known/jwks.json");
    env.configure(|c| {
        c.jwt_signing_key = None;
        c.trusted_keys = Some(service_keys(&old));
        c.service_key = Some(key_of(&old, Service::Inventory));
        c.jwks_url = jwks_url.clone();
    });
    let inventory = env
        .spawn(Service::Inventory, |common, listener, shutdown| {
            inventory::run(inventory::Config::with_common(common), listener, shutdown)
        })
        .await;

    let email = format!("rot-{}@example.org", Uuid::new_v4().simple());
    CustomerApi(before.api())
        .register(&Register {
            email: email.clone(),
            password: PASSWORD.into(),
            name: "Rot".into(),
            phone: None,
        })
        .await
        .expect_ok();
    let old_token = login(&before, &email).await.access_token;
    let new_token = login(&after, &email).await.access_token;
    assert_ne!(kid(&old_token), kid(&new_token));

    let (_, jwks) = after
        .call(Method::GET, "/.well-known/jwks.json", None, None)
        .await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, vec![kid(&new_token), kid(&old_token)], "{jwks}");
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["d"].is_null()),
        "no private part is published"
    );

    // Both tokens open the verifier's API (the stock item is unknown: 404, not 401).
    let inventory = InventoryApi(inventory.api());
    let unknown = Uuid::new_v4();
    for token in [&new_token, &old_token] {
        inventory
            .stock(token, unknown)
            .await
            .expect_problem(StatusCode::NOT_FOUND, None);
    }
    // A token signed with a key nobody published is refused.
    let (forged, _) = TokenKeys::stranger().user_token(
        Uuid::new_v4(),
        Uuid::new_v4(),
        vec!["admin".into()],
        vec![],
    );
    inventory
        .stock(&forged, unknown)
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, None);
}

#[tokio::test]
async fn outside_development_mode_a_service_without_its_key_refuses_to_start() {
    let mut env = TestEnv::new();
    env.configure(|c| {
        c.dev_mode = false;
        c.service_key = None;
        c.jwt_signing_key = None;
    });
    let svc = env
        .start(Service::Inventory, |common, listener, shutdown| {
            inventory::run(inventory::Config::with_common(common), listener, shutdown)
        })
        .await;
    let err = svc.stop().await.unwrap_err();
    assert!(err.to_string().contains("SERVICE_KEY"), "{err:#}");
}

/// A verifier trusts user keys while the JWKS lists them: the customer service stops
/// publishing key B (retired after a rotation, or revoked after a leak), and within the
/// refresh interval (one second here) tokens signed with B are refused while tokens of
/// key A still pass. (Keys learnt from the JWKS were trusted for ever.)
#[tokio::test]
async fn a_key_that_left_the_jwks_is_no_longer_trusted_after_the_refresh_interval() {
    use mp_common::keys::{KeyUse, generate_pem, public_jwk};
    let (a, b) = (generate_pem(), generate_pem());
    let jwks = std::sync::Arc::new(std::sync::Mutex::new(json!({"keys": [
        public_jwk(&a, KeyUse::User).unwrap(),
        public_jwk(&b, KeyUse::User).unwrap(),
    ]})));
    let served = jwks.clone();
    let app = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            let served = served.clone();
            async move { axum::Json(served.lock().unwrap().clone()) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await });

    let issuer = |pem: &SecretString| {
        TokenKeys::new(
            Some(mp_common::keys::signer_from_pem(pem, KeyUse::User).unwrap()),
            vec![],
            vec![],
            None,
            std::time::Duration::from_secs(900),
        )
    };
    let token = |keys: &TokenKeys| {
        keys.user_token(
            Uuid::now_v7(),
            Uuid::new_v4(),
            vec!["customer".into()],
            vec![],
        )
        .0
    };
    let (with_a, with_b) = (token(&issuer(&a)), token(&issuer(&b)));
    let verifier = TokenKeys::new(
        None,
        vec![],
        vec![],
        Some(url),
        std::time::Duration::from_secs(900),
    )
    .with_jwks_refresh(std::time::Duration::from_secs(1));
    let audience = mp_common::auth::USER_AUDIENCE;
    assert!(verifier.verify_fetching(&with_a, audience).await.is_ok());
    assert!(verifier.verify_fetching(&with_b, audience).await.is_ok());

    *jwks.lock().unwrap() = json!({"keys": [public_jwk(&a, KeyUse::User).unwrap()]});
    mp_test_support::eventually(
        "key B no longer trusted",
        std::time::Duration::from_secs(30),
        || async {
            verifier
                .verify_fetching(&with_b, audience)
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    assert!(
        verifier.verify_fetching(&with_a, audience).await.is_ok(),
        "key A still is"
    );
}
