//! A killed order service resumes its sagas where they stopped.

use mp_events::Service;
use mp_test_support::clients::Expect;
use mp_test_support::{eventually, wait_ready};
use uuid::Uuid;

use crate::harness::{Checkout, Harness, WAIT, start_inventory};
use crate::provider::{self, FakeStripe};

fn spawn_order(h: &Harness) -> (std::process::Child, String) {
    let (mut cmd, url) = h.env.command(Service::Order, env!("CARGO_BIN_EXE_order"));
    cmd.env("SAGA_POLL_MS", "100")
        .env("PAYMENT_RETRY_MIN_MS", "10");
    (cmd.spawn().expect("the order binary starts"), url)
}

#[tokio::test]
async fn an_order_service_killed_between_charge_and_confirmation_completes_with_one_charge() {
    let mut h = Harness::bare(true).await;
    let vendor = Uuid::now_v7();
    let product = h.product(vendor, 5).await;
    // Inventory stops after declaring its queue, so order.created waits there and the
    // order stays paid, unconfirmed, until the kill.
    h.inventory.take().unwrap().stop().await.unwrap();

    let (mut first, url) = spawn_order(&h);
    wait_ready(&url, WAIT).await;
    h.order_url = url;
    let c = h.checkout(&[(product, vendor, 2)], "tok_visa").await;
    h.wait_status(&c, "paid").await;
    eventually("order.created to be published", WAIT, || async {
        let unsent: i64 =
            sqlx::query_scalar("select count(*) from outbox where published_at is null")
                .fetch_one(&h.db)
                .await
                .unwrap();
        (unsent == 0).then_some(())
    })
    .await;
    first.kill().unwrap();
    first.wait().unwrap();

    // Inventory commits while the order service is down; its answer waits in the queue.
    h.inventory = Some(start_inventory(&h.env).await);
    eventually("the stock to be committed", WAIT, || async {
        (h.on_hand(product).await == 3).then_some(())
    })
    .await;

    let (mut second, url) = spawn_order(&h);
    wait_ready(&url, WAIT).await;
    h.order_url = url;
    let order = h.wait_status(&c, "confirmed").await;
    second.kill().unwrap();
    second.wait().unwrap();

    assert_eq!(order.statuses(), ["pending", "paid", "confirmed"]);
    assert_eq!(h.successful(c.order_id, "charge").await, 1);
    assert_eq!(
        h.payments(c.order_id).await.len(),
        1,
        "one charge attempt, no second call"
    );
    assert_eq!(h.movements(c.order_id).await, [("order".to_owned(), -2)]);
}

/// An order service on the fake provider, as a process of its own, with a short lease.
fn spawn_on_stripe(h: &Harness, fake: &FakeStripe) -> (std::process::Child, String) {
    let (mut cmd, url) = h.env.command(Service::Order, env!("CARGO_BIN_EXE_order"));
    cmd.env("SAGA_POLL_MS", "100")
        .env("PAYMENT_RETRY_MIN_MS", "10")
        .env("SAGA_LEASE_SECS", "2")
        .env("PAYMENT_GATEWAY", "stripe")
        .env("STRIPE_API_URL", &fake.url)
        .env("STRIPE_SECRET_KEY", provider::KEY)
        .env("PAYMENT_TIMEOUT_MS", "60000");
    (cmd.spawn().expect("the order binary starts"), url)
}

/// Starts a process whose charge the provider captures and never answers, and kills
/// it then: killed between the approval and its record.
async fn killed_after_approval(h: &mut Harness, fake: &FakeStripe) -> Checkout {
    let (mut first, url) = spawn_on_stripe(h, fake);
    wait_ready(&url, WAIT).await;
    h.order_url = url;
    let c = h
        .checkout(&[(Uuid::now_v7(), Uuid::now_v7(), 1)], "pm_hang")
        .await;
    eventually("the capture at the provider", WAIT, || async {
        (fake.intent_of(c.order_id).is_some_and(|i| i.captured == 1)).then_some(())
    })
    .await;
    first.kill().unwrap();
    first.wait().unwrap();
    c
}

/// The driver is killed after the provider captured the charge, before it recorded
/// it; the customer cancels before anyone resumes the charge. The money comes back:
/// the cancellation settles with the provider, which says the intent was captured.
/// (Cancelling refunded only charges recorded as successful, so this one was kept.)
#[tokio::test]
async fn a_driver_killed_between_approval_and_record_then_a_cancel_refunds_the_capture() {
    let mut h = Harness::bare(false).await;
    let fake = FakeStripe::start().await;
    let c = killed_after_approval(&mut h, &fake).await;

    let (mut second, url) = spawn_on_stripe(&h, &fake);
    wait_ready(&url, WAIT).await;
    h.order_url = url;
    h.cancel(&c).await.expect_ok();
    let order = h.wait_settled(&c).await;
    second.kill().unwrap();
    second.wait().unwrap();

    assert_eq!(order.status, "cancelled");
    let intent = fake.intent_of(c.order_id).unwrap();
    assert_eq!((intent.captured, intent.refunded), (1, 1));
    assert_eq!(h.successful(c.order_id, "charge").await, 1);
    assert_eq!(h.successful(c.order_id, "refund").await, 1);
}

/// The same kill with nobody cancelling: the next driver takes the order up when the
/// lease ends, asks the provider instead of confirming again, and the order is paid
/// with the one capture.
#[tokio::test]
async fn a_driver_killed_between_approval_and_record_resumes_with_the_capture_it_made() {
    let mut h = Harness::bare(false).await;
    let fake = FakeStripe::start().await;
    let c = killed_after_approval(&mut h, &fake).await;

    let (mut second, url) = spawn_on_stripe(&h, &fake);
    wait_ready(&url, WAIT).await;
    h.order_url = url;
    let order = h.wait_status(&c, "paid").await;
    second.kill().unwrap();
    second.wait().unwrap();

    assert_eq!(order.statuses(), ["pending", "paid"]);
    assert_eq!(fake.intent_of(c.order_id).unwrap().captured, 1);
    assert_eq!(
        fake.confirmations(c.order_id),
        1,
        "asked, not confirmed again"
    );
    assert_eq!(
        h.payments(c.order_id).await,
        [("charge".to_owned(), "succeeded".to_owned())]
    );
}
