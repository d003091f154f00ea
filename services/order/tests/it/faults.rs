//! A killed order service resumes its sagas where they stopped.

use mp_events::Service;
use mp_test_support::{eventually, wait_ready};
use uuid::Uuid;

use crate::harness::{Harness, WAIT, start_inventory, statuses};

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

    assert_eq!(statuses(&order), ["pending", "paid", "confirmed"]);
    assert_eq!(h.successful(c.order_id, "charge").await, 1);
    assert_eq!(
        h.payments(c.order_id).await.len(),
        1,
        "one charge attempt, no second call"
    );
    assert_eq!(h.movements(c.order_id).await, [("order".to_owned(), -2)]);
}
