//! Vendor memberships from vendor.created events, and the correlation id carried into
//! the events a request causes.

use std::time::Duration;

use mp_common::TokenKeys;
use mp_common::auth::USER_AUDIENCE;
use mp_events::catalog::{CustomerCreated, VendorCreated};
use mp_events::{Envelope, Service};
use mp_test_support::clients::Expect;
use mp_test_support::clients::customer::{Customer, Register};
use mp_test_support::{TestEnv, eventually};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use uuid::Uuid;

use crate::harness::*;

#[tokio::test]
async fn vendor_created_grants_membership_that_new_tokens_carry() {
    let env = TestEnv::new();
    let svc = spawn(&env).await;
    let api = client(&svc);
    let ivan = register(&svc, "ivan@example.org").await;
    let ivan_id = ivan.id;
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
        || async {
            let me = api.me(&access).await.expect_ok();
            (me.vendor_ids == [vendor_id]).then_some(me)
        },
    )
    .await;
    assert!(me.roles.iter().any(|r| r == "vendor"), "{me:?}");

    // Tokens issued from now on carry the membership.
    let refreshed = api.refresh(&refresh).await.expect_ok();
    let keys = TokenKeys::from_config(&env.config(Service::Customer)).unwrap();
    let claims = keys.verify(&refreshed.access_token, USER_AUDIENCE).unwrap();
    assert_eq!(claims.vendors, vec![vendor_id]);
    assert!(claims.roles.contains(&"vendor".to_owned()));
}

#[tokio::test]
async fn the_correlation_id_is_echoed_and_carried_into_the_events_a_request_causes() {
    let env = TestEnv::new();
    let svc = spawn(&env).await;
    // The registration with tracing headers, which the typed call does not send.
    let api = client(&svc).0;
    let judy = Register {
        email: "judy@example.org".into(),
        password: PASSWORD.into(),
        name: "Judy".into(),
        phone: None,
    };
    let request = api
        .request(Method::POST, "/api/customers", None)
        .header("x-correlation-id", "checkout-7f3a")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .json(&judy);
    let created = api
        .send_reply::<Customer>(request, StatusCode::CREATED)
        .await
        .expect_ok();
    assert_eq!(created.headers["x-correlation-id"], "checkout-7f3a");
    assert_eq!(
        created.headers["x-trace-id"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );

    let envelope: Value = sqlx::query_scalar("select envelope from outbox where event_type = 'customer.created' and envelope->'payload'->>'email' = 'judy@example.org'")
        .fetch_one(&env.db(Service::Customer).await)
        .await
        .unwrap();
    let envelope: Envelope<CustomerCreated> = serde_json::from_value(envelope).unwrap();
    assert_eq!(envelope.correlation_id, "checkout-7f3a");
    assert!(
        envelope
            .traceparent
            .as_deref()
            .unwrap()
            .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    );
    assert_eq!(envelope.source, "customer");

    // Without a header, one is generated and still echoed.
    let resp = svc
        .http()
        .get(svc.url("/health/live"))
        .send()
        .await
        .unwrap();
    assert!(!resp.headers()["x-correlation-id"].is_empty());
}
