//! The Stripe-shaped adapter against a local PaymentIntents API with state
//! ([`FakeStripe`]), and the saga's handling of what a real provider does: answers that
//! come too late, payments that stay `processing`, failures that capture nothing, and a
//! provider that takes its time. Each test is named for the interleaving it proves.

use mp_test_support::clients::Expect;
use std::time::Duration;

use mp_events::{Currency, Money};
use order::payments::{
    ChargeState, IntentRequest, PaymentError, PaymentGateway, RefundRequest, StripeGateway,
    confirm_key, intent_key, refund_key,
};
use order::{GatewayKind, Settings};
use secrecy::SecretString;
use uuid::Uuid;

use crate::harness::{Harness, WAIT, settings};
use crate::provider::{FakeStripe, KEY};

fn gateway(url: &str, key: &str) -> StripeGateway {
    StripeGateway::new(
        url,
        SecretString::from(key.to_owned()),
        Duration::from_millis(300),
    )
}

fn token(t: &str) -> SecretString {
    SecretString::from(t.to_owned())
}

async fn new_intent(gw: &StripeGateway) -> (Uuid, String) {
    let order_id = Uuid::now_v7();
    let intent = gw
        .create_intent(&IntentRequest {
            order_id,
            amount: Money::new(2399, Currency::EUR),
        })
        .await
        .unwrap();
    (order_id, intent)
}

/// The order service on the fake provider, its client giving up after `timeout_ms`.
async fn on_stripe(fake: &FakeStripe, timeout_ms: u64) -> Harness {
    let s = Settings {
        payment_gateway: GatewayKind::Stripe,
        stripe_api_url: fake.url.clone(),
        stripe_secret_key: Some(SecretString::from(KEY.to_owned())),
        payment_timeout_ms: timeout_ms,
        ..settings()
    };
    Harness::start_with(s, false).await
}

fn one_line() -> [(Uuid, Uuid, i64); 1] {
    [(Uuid::now_v7(), Uuid::now_v7(), 1)]
}

#[tokio::test]
async fn a_charge_creates_an_intent_once_then_confirms_it_with_auth_and_idempotency_keys() {
    let fake = FakeStripe::start().await;
    let gw = gateway(&fake.url, KEY);
    let (order_id, intent) = new_intent(&gw).await;
    let again = gw
        .create_intent(&IntentRequest {
            order_id,
            amount: Money::new(2399, Currency::EUR),
        })
        .await
        .unwrap();
    assert_eq!(again, intent, "the same key gives the same intent");
    let key = confirm_key(order_id, 1);
    assert_eq!(
        gw.confirm(&intent, &token("pm_card_visa"), &key).await,
        Ok(ChargeState::Succeeded)
    );
    assert_eq!(gw.retrieve(&intent).await, Ok(ChargeState::Succeeded));

    let seen = fake.seen();
    assert_eq!(seen[0].path, "/v1/payment_intents");
    assert_eq!(seen[0].authorization, format!("Bearer {KEY}"));
    assert_eq!(seen[0].idempotency_key, intent_key(order_id));
    assert_eq!(seen[0].form["amount"], "2399");
    assert_eq!(seen[0].form["currency"], "eur");
    assert_eq!(seen[0].form["metadata[order_id]"], order_id.to_string());
    assert!(
        !seen[0].form.contains_key("payment_method"),
        "no money moves at creation"
    );
    let confirm = &seen[2];
    assert_eq!(
        confirm.path,
        format!("/v1/payment_intents/{intent}/confirm")
    );
    assert_eq!(confirm.idempotency_key, key);
    assert_eq!(confirm.form["payment_method"], "pm_card_visa");
    assert_eq!(
        (seen[3].method.as_str(), seen[3].path.as_str()),
        ("GET", format!("/v1/payment_intents/{intent}").as_str())
    );

    let refund = RefundRequest {
        order_id,
        amount: Money::new(2399, Currency::EUR),
        intent_id: intent.clone(),
    };
    assert!(gw.refund(&refund).await.is_ok());
    let seen = fake.seen();
    let last = seen.last().unwrap();
    assert_eq!(last.path, "/v1/refunds");
    assert_eq!(last.form["payment_intent"], intent);
    assert_eq!(last.idempotency_key, refund_key(order_id));
    assert_eq!(fake.intent_of(order_id).unwrap().refunded, 1);
}

#[tokio::test]
async fn card_errors_are_declines_and_server_errors_and_timeouts_are_unknown() {
    let fake = FakeStripe::start().await;
    let gw = gateway(&fake.url, KEY);
    let (order_id, intent) = new_intent(&gw).await;
    assert_eq!(
        gw.confirm(
            &intent,
            &token("pm_card_declined"),
            &confirm_key(order_id, 1)
        )
        .await,
        Ok(ChargeState::Declined("insufficient_funds".into()))
    );
    assert_eq!(
        gw.retrieve(&intent).await,
        Ok(ChargeState::Declined("insufficient_funds".into())),
        "the intent remembers why"
    );
    let server = gw
        .confirm(
            &intent,
            &token("pm_server_error"),
            &confirm_key(order_id, 2),
        )
        .await
        .unwrap_err();
    assert!(server.is_transient(), "{server:?}");
    let (late_order, late_intent) = new_intent(&gw).await;
    assert_eq!(
        gw.confirm(&late_intent, &token("pm_late"), &confirm_key(late_order, 1))
            .await,
        Err(PaymentError::Transient("payment provider timed out".into()))
    );
    assert_eq!(
        gw.retrieve(&late_intent).await,
        Ok(ChargeState::Succeeded),
        "it went through all the same"
    );
    let wrong_key = gateway(&fake.url, "sk_test_wrong")
        .retrieve(&intent)
        .await
        .unwrap_err();
    assert!(wrong_key.is_transient(), "{wrong_key:?}");
    // Cancelling what was captured answers that it was.
    assert_eq!(gw.cancel(&late_intent).await, Ok(ChargeState::Succeeded));
    assert_eq!(gw.cancel(&intent).await, Ok(ChargeState::Canceled));
}

#[tokio::test]
async fn the_secret_key_and_the_token_never_show_in_debug_output() {
    let gw = gateway("http://127.0.0.1:9", KEY);
    let request = IntentRequest {
        order_id: Uuid::now_v7(),
        amount: Money::new(1, Currency::EUR),
    };
    let text = format!("{gw:?} {request:?} {:?}", token("pm_card_visa"));
    assert!(
        !text.contains(KEY) && !text.contains("pm_card_visa"),
        "{text}"
    );
}

#[tokio::test]
async fn configured_for_stripe_the_service_charges_through_the_provider() {
    let fake = FakeStripe::start().await;
    let h = on_stripe(&fake, 5_000).await;
    let paid = h.checkout(&one_line(), "pm_card_visa").await;
    let declined = h.checkout(&one_line(), "pm_card_declined").await;
    h.wait_status(&paid, "paid").await;
    let order = h.wait_status(&declined, "payment_failed").await;
    assert!(
        order
            .failure_reason
            .as_deref()
            .unwrap()
            .contains("insufficient_funds"),
        "{order:?}"
    );
    let intent = fake.intent_of(paid.order_id).unwrap();
    assert_eq!((intent.status.as_str(), intent.captured), ("succeeded", 1));
    let provider_id: String = sqlx::query_scalar(
        "select provider_id from payments where order_id = $1 and status = 'succeeded'",
    )
    .bind(paid.order_id)
    .fetch_one(&h.db)
    .await
    .unwrap();
    assert!(provider_id.starts_with("pi_"), "{provider_id}");
    assert_eq!(
        fake.confirmations(declined.order_id),
        1,
        "a decline is final"
    );
}

/// The provider captures the payment, but its answer comes after the client gave up.
/// The saga does not take the time-out for a "no": it asks the provider, finds the
/// charge captured and moves the order on, with one charge. (Taking it for a failure
/// retried, gave up, and failed the order with the money kept.)
#[tokio::test]
async fn a_charge_approved_whose_answer_times_out_is_found_captured_and_the_order_paid() {
    let fake = FakeStripe::start().await;
    let h = on_stripe(&fake, 300).await;
    let c = h.checkout(&one_line(), "pm_late").await;
    let order = h.wait_status(&c, "paid").await;
    assert_eq!(order.statuses(), ["pending", "paid"]);
    assert_eq!(fake.intent_of(c.order_id).unwrap().captured, 1);
    assert_eq!(
        fake.confirmations(c.order_id),
        1,
        "asked, never confirmed twice"
    );
    assert_eq!(
        h.payments(c.order_id).await,
        [("charge".to_owned(), "succeeded".to_owned())]
    );
}

/// A payment that stays `processing` for a while (a bank debit) is waited for, asked
/// about again, and the order is paid once it succeeds. (Taken for a transient failure,
/// it was retried and then declined, while the provider went on to capture it.)
#[tokio::test]
async fn a_processing_payment_that_succeeds_later_pays_the_order() {
    let fake = FakeStripe::start().await;
    let h = on_stripe(&fake, 5_000).await;
    let c = h.checkout(&one_line(), "pm_processing").await;
    let order = h.wait_status(&c, "paid").await;
    assert_eq!(order.statuses(), ["pending", "paid"]);
    let intent = fake.intent_of(c.order_id).unwrap();
    assert_eq!((intent.status.as_str(), intent.captured), ("succeeded", 1));
    assert_eq!(fake.confirmations(c.order_id), 1);
}

/// Confirmations that keep failing with server errors capture nothing (the provider
/// says so when asked); after the retries the order fails and its intent is cancelled,
/// so that no confirmation still on its way can capture it later.
#[tokio::test]
async fn a_charge_that_keeps_failing_is_declined_and_its_intent_cancelled() {
    let fake = FakeStripe::start().await;
    let h = on_stripe(&fake, 5_000).await;
    let c = h.checkout(&one_line(), "pm_server_error").await;
    let order = h.wait_status(&c, "payment_failed").await;
    assert!(
        order
            .failure_reason
            .as_deref()
            .unwrap()
            .contains("after retries"),
        "{order:?}"
    );
    // The first try and both retries (settings: 2).
    assert_eq!(fake.confirmations(c.order_id), 3);
    mp_test_support::eventually("the intent cancelled", WAIT, || async {
        (fake.intent_of(c.order_id).unwrap().status == "canceled").then_some(())
    })
    .await;
    assert_eq!(fake.intent_of(c.order_id).unwrap().captured, 0);
    assert_eq!(
        h.payments(c.order_id).await,
        vec![("charge".to_owned(), "failed".to_owned()); 3]
    );
}

/// The customer cancels while the charge is at the provider, which captures it and
/// answers late. The cancelled order gets its money back: the settling step asks the
/// provider and refunds. (Cancelling refunded only charges already recorded as
/// successful, so this one was kept.)
#[tokio::test]
async fn an_order_cancelled_while_its_charge_is_in_flight_is_refunded() {
    let fake = FakeStripe::start().await;
    let h = on_stripe(&fake, 5_000).await;
    let c = h.checkout(&one_line(), "pm_late").await;
    mp_test_support::eventually("the confirmation at the provider", WAIT, || async {
        (fake.confirmations(c.order_id) == 1).then_some(())
    })
    .await;
    h.cancel(&c).await.expect_ok();
    mp_test_support::eventually("the refund", WAIT, || async {
        (fake.intent_of(c.order_id).unwrap().refunded == 1).then_some(())
    })
    .await;
    let order = h.wait_settled(&c).await;
    assert_eq!(order.status, "cancelled");
    assert_eq!(h.successful(c.order_id, "charge").await, 1);
    assert_eq!(h.successful(c.order_id, "refund").await, 1);
    assert_eq!(fake.intent_of(c.order_id).unwrap().captured, 1);
}

/// One order's charge is held at the provider; orders checked out after it are
/// charged meanwhile. (The driver charged a claimed batch together and waited for all
/// of it, so one slow provider call held every order behind it.)
#[tokio::test]
async fn a_slow_provider_call_holds_up_no_other_order() {
    let fake = FakeStripe::start().await;
    let h = on_stripe(&fake, 30_000).await;
    let slow = h.checkout(&one_line(), "pm_held").await;
    mp_test_support::eventually("the held confirmation at the provider", WAIT, || async {
        (fake.confirmations(slow.order_id) == 1).then_some(())
    })
    .await;
    let mut others = Vec::new();
    for _ in 0..4 {
        others.push(h.checkout(&one_line(), "pm_card_visa").await);
    }
    for c in &others {
        h.wait_status(c, "paid").await;
    }
    assert_eq!(
        h.read(&slow).await.status,
        "pending",
        "still at the provider"
    );
    fake.release();
    h.wait_status(&slow, "paid").await;
}

/// The adapter speaks HTTPS to the provider, verifying its certificate: against a
/// server with a certificate for "localhost" from a CA the service trusts
/// (`TLS_CA_FILE`) it charges; a certificate for another host is refused, which is
/// an unknown outcome (nothing was sent that could charge).
#[tokio::test]
async fn the_stripe_adapter_speaks_verified_https_and_refuses_another_hosts_certificate() {
    let ca = mp_test_support::tls::TestCa::new();
    let mut config = mp_common::CommonConfig::from_env();
    config.tls_ca_file = Some(ca.ca_file());
    mp_common::tls::init(&config).unwrap();

    let fake = FakeStripe::start_https(&ca.leaf(&["localhost"])).await;
    let gw = gateway(&fake.url, KEY);
    let (order_id, intent) = new_intent(&gw).await;
    assert_eq!(
        gw.confirm(&intent, &token("pm_card_visa"), &confirm_key(order_id, 1))
            .await,
        Ok(ChargeState::Succeeded)
    );

    let impostor = FakeStripe::start_https(&ca.leaf(&["api.stripe.example"])).await;
    let err = gateway(&impostor.url, KEY)
        .create_intent(&IntentRequest {
            order_id: Uuid::now_v7(),
            amount: Money::new(100, Currency::EUR),
        })
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(impostor.seen().is_empty(), "nothing reached the impostor");
}
