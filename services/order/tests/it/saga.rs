//! The checkout saga through RabbitMQ: charge, stock commit, confirmation, and every
//! way it can fail.

use std::time::Duration;

use mp_events::catalog::{OrderCreated, OrderStatus, OrderUpdated};
use mp_events::{Envelope, Service};
use mp_test_support::clients::Expect;
use mp_test_support::eventually;
use reqwest::StatusCode;
use uuid::Uuid;

use crate::harness::{Harness, WAIT, settings};

#[tokio::test]
async fn a_paid_order_is_confirmed_once_inventory_commits_its_stock() {
    let h = Harness::start().await;
    let vendor = Uuid::now_v7();
    let product = h.product(vendor, 10).await;
    let c = h.checkout(&[(product, vendor, 3)], "tok_visa").await;

    let order = h.wait_status(&c, "confirmed").await;
    assert_eq!(
        order.statuses(),
        ["pending", "paid", "confirmed"],
        "{order:?}"
    );
    assert_eq!(order.total.amount(), 3 * 1999 + 3 * 1999 / 5);
    assert_eq!(order.items[0].vendor_id, vendor);
    assert!(order.stock_committed);
    assert_eq!(h.successful(c.order_id, "charge").await, 1);
    assert_eq!(h.movements(c.order_id).await, [("order".to_owned(), -3)]);
    assert_eq!(h.on_hand(product).await, 7);
    assert_eq!(
        h.reservations(c.cart_id).await,
        0,
        "the reservation became a sale"
    );
    assert_eq!(h.events::<OrderCreated>(c.order_id).await.len(), 1);
    let updates: Vec<OrderStatus> = h
        .events::<OrderUpdated>(c.order_id)
        .await
        .iter()
        .map(|e| e.status)
        .collect();
    assert_eq!(updates, [OrderStatus::Paid, OrderStatus::Confirmed]);
    // The token is gone once the charge ended.
    let tokens: i64 = sqlx::query_scalar("select count(*) from payment_methods")
        .fetch_one(&h.db)
        .await
        .unwrap();
    assert_eq!(tokens, 0);
    assert!(
        h.api()
            .metric("order_checkout_outcomes_total", &[("status", "confirmed")])
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn a_declined_card_fails_the_order_releases_the_stock_and_charges_nothing() {
    let h = Harness::start().await;
    let vendor = Uuid::now_v7();
    let product = h.product(vendor, 5).await;
    let c = h.checkout(&[(product, vendor, 2)], "tok_declined").await;

    let order = h.wait_status(&c, "payment_failed").await;
    assert!(
        order
            .failure_reason
            .as_deref()
            .unwrap()
            .contains("card_declined"),
        "{order:?}"
    );
    assert_eq!(h.successful(c.order_id, "charge").await, 0);
    assert!(h.events::<OrderCreated>(c.order_id).await.is_empty());
    eventually("the reservation to be released", WAIT, || async {
        (h.reservations(c.cart_id).await == 0).then_some(())
    })
    .await;
    assert_eq!(h.on_hand(product).await, 5);
    assert!(h.movements(c.order_id).await.is_empty());
}

#[tokio::test]
async fn a_transient_gateway_error_is_retried_and_then_declined() {
    let h = Harness::start().await;
    let vendor = Uuid::now_v7();
    let product = h.product(vendor, 5).await;
    let c = h.checkout(&[(product, vendor, 1)], "tok_error").await;

    let order = h.wait_status(&c, "payment_failed").await;
    assert!(
        order
            .failure_reason
            .as_deref()
            .unwrap()
            .contains("after retries"),
        "{order:?}"
    );
    // The first try and both retries (settings: 2), each recorded as an attempt.
    let attempts = h.payments(c.order_id).await;
    assert_eq!(
        attempts,
        vec![("charge".to_owned(), "failed".to_owned()); 3]
    );
    assert_eq!(order.payments.len(), 3);
    assert!(order.payments[2].error.as_deref().is_some());
    assert_eq!(h.successful(c.order_id, "charge").await, 0);
}

#[tokio::test]
async fn a_checkout_without_a_payment_method_fails_the_order() {
    let h = Harness::start().await;
    let vendor = Uuid::now_v7();
    let product = h.product(vendor, 5).await;
    let c = h.checkout_event(&[(product, vendor, 1)]);
    h.publish(Service::Cart, c.event.clone()).await;

    let order = h.wait_status(&c, "payment_failed").await;
    assert_eq!(
        order.failure_reason.as_deref(),
        Some("payment declined: no payment method")
    );
}

#[tokio::test]
async fn redelivered_checkouts_and_order_created_events_change_nothing() {
    let h = Harness::start().await;
    let vendor = Uuid::now_v7();
    let product = h.product(vendor, 10).await;
    let c = h.checkout_event(&[(product, vendor, 2)]);
    h.reserve(c.cart_id, product, 2).await.expect_ok();
    h.put_payment_method(&c, "tok_visa").await.expect_ok();
    let envelope = Envelope::new(Service::Cart, c.event.clone());
    h.publish_envelope(&envelope).await;
    h.publish_envelope(&envelope).await;
    // The same cart checked out again under another event (and even another order id).
    let mut again = c.event.clone();
    h.publish(Service::Cart, again.clone()).await;
    again.order_id = Uuid::now_v7();
    h.publish(Service::Cart, again.clone()).await;

    h.wait_status(&c, "confirmed").await;
    // Everything published so far has been consumed once the checkouts are in the inbox.
    eventually("the checkouts to be consumed", WAIT, || async {
        let n: i64 =
            sqlx::query_scalar("select count(*) from inbox where handler = 'order.create'")
                .fetch_one(&h.db)
                .await
                .unwrap();
        (n == 3).then_some(())
    })
    .await;
    let orders: i64 = sqlx::query_scalar("select count(*) from orders")
        .fetch_one(&h.db)
        .await
        .unwrap();
    assert_eq!(orders, 1);

    // order.created delivered to inventory again, as a redelivery would.
    let created: Envelope<OrderCreated> = sqlx::query_scalar::<_, sqlx::types::Json<_>>(
        "select envelope from outbox where event_type = 'order.created'",
    )
    .fetch_one(&h.db)
    .await
    .unwrap()
    .0;
    h.publish_envelope(&created).await;
    let mut fresh = created.clone();
    fresh.id = Uuid::now_v7();
    h.publish_envelope(&fresh).await;
    eventually("inventory to see the repeats", WAIT, || async {
        let n: i64 =
            sqlx::query_scalar("select count(*) from inbox where handler = 'inventory.commit'")
                .fetch_one(&h.inventory_db)
                .await
                .unwrap();
        (n == 2).then_some(())
    })
    .await;
    assert_eq!(h.movements(c.order_id).await, [("order".to_owned(), -2)]);
    assert_eq!(h.on_hand(product).await, 8);
    assert_eq!(h.successful(c.order_id, "charge").await, 1);
    let order = h.read(&c).await;
    assert_eq!(order.statuses(), ["pending", "paid", "confirmed"]);
}

#[tokio::test]
async fn two_orders_racing_for_the_last_units_never_oversell_and_the_loser_is_refunded() {
    let h = Harness::start().await;
    let vendor = Uuid::now_v7();
    let product = h.product(vendor, 3).await;
    // Neither order holds a reservation: only the stock commit decides.
    let a = h.checkout_event(&[(product, vendor, 2)]);
    let b = h.checkout_event(&[(product, vendor, 2)]);
    for c in [&a, &b] {
        h.put_payment_method(c, "tok_visa").await.expect_ok();
    }
    tokio::join!(
        h.publish(Service::Cart, a.event.clone()),
        h.publish(Service::Cart, b.event.clone())
    );

    let mut outcomes = Vec::new();
    for c in [&a, &b] {
        let order = eventually("a final status", WAIT, || async {
            let token = h.tokens.customer(c.customer_id);
            // 404 until the order exists.
            let order = h.client().get(&token, c.order_id).await.ok()?;
            let done = matches!(order.status.as_str(), "confirmed" | "rejected")
                && order.waiting_on.is_none();
            done.then_some(order)
        })
        .await;
        outcomes.push(order);
    }
    let confirmed: Vec<_> = outcomes
        .iter()
        .filter(|o| o.status == "confirmed")
        .collect();
    let rejected: Vec<_> = outcomes.iter().filter(|o| o.status == "rejected").collect();
    assert_eq!((confirmed.len(), rejected.len()), (1, 1), "{outcomes:?}");
    assert_eq!(h.on_hand(product).await, 1, "sold 2 of 3, never 4");
    let loser = rejected[0].id;
    assert!(
        rejected[0]
            .failure_reason
            .as_deref()
            .unwrap()
            .contains("out of stock"),
        "{:?}",
        rejected[0]
    );
    assert_eq!(h.successful(loser, "charge").await, 1);
    assert_eq!(h.successful(loser, "refund").await, 1);
    assert!(h.movements(loser).await.is_empty());
}

#[tokio::test]
async fn an_order_whose_stock_never_comes_is_listed_as_stuck_then_compensated() {
    let mut s = settings();
    s.saga_soft_timeout_secs = 1;
    s.saga_hard_timeout_secs = 6;
    let h = Harness::start_with(s, false).await;
    let c = h
        .checkout(&[(Uuid::now_v7(), Uuid::now_v7(), 1)], "tok_visa")
        .await;
    h.wait_status(&c, "paid").await;

    let admin = h.tokens.admin();
    eventually("the order to be listed as stuck", WAIT, || async {
        let page = h.client().stuck(&admin, "").await.expect_ok();
        let listed = page
            .items
            .iter()
            .any(|o| o.id == c.order_id && o.waiting_on == "stock");
        listed.then_some(())
    })
    .await;
    eventually("the stuck gauge to count it", WAIT, || async {
        (h.api()
            .metric("order_saga_stuck", &[("step", "stock")])
            .await
            >= 1.0)
            .then_some(())
    })
    .await;
    h.client()
        .stuck(&h.tokens.customer(c.customer_id), "")
        .await
        .expect_problem(StatusCode::FORBIDDEN, None);

    let order = h.wait_status(&c, "rejected").await;
    assert!(
        order
            .failure_reason
            .as_deref()
            .unwrap()
            .contains("timed out"),
        "{order:?}"
    );
    let order = h.wait_settled(&c).await;
    assert_eq!(order.status, "rejected");
    assert_eq!(h.successful(c.order_id, "refund").await, 1);
    let last = h.events::<OrderUpdated>(c.order_id).await;
    assert_eq!(last.last().unwrap().status, OrderStatus::Rejected);
    eventually(
        "the stuck gauge to fall",
        Duration::from_secs(10),
        || async {
            (h.api()
                .metric("order_saga_stuck", &[("step", "stock")])
                .await
                == 0.0)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn an_order_cancelled_while_it_waits_for_its_stock_is_refunded_and_stays_cancelled() {
    let h = Harness::start_with(settings(), false).await;
    let c = h
        .checkout(&[(Uuid::now_v7(), Uuid::now_v7(), 1)], "tok_visa")
        .await;
    h.wait_status(&c, "paid").await;
    h.cancel(&c).await.expect_ok();
    let order = h.wait_settled(&c).await;
    assert_eq!(order.statuses(), ["pending", "paid", "cancelled"]);
    assert_eq!(h.successful(c.order_id, "charge").await, 1);
    assert_eq!(h.successful(c.order_id, "refund").await, 1);

    // Inventory's late answer finds the order cancelled and changes nothing.
    h.publish(
        Service::Inventory,
        mp_events::catalog::InventoryUpdated {
            change: mp_events::catalog::StockChange::OrderCommitted,
            order_id: Some(c.order_id),
            levels: vec![],
            shortages: vec![],
        },
    )
    .await;
    eventually("the late answer to be consumed", WAIT, || async {
        let n: i64 = sqlx::query_scalar("select count(*) from inbox where handler = 'order.stock'")
            .fetch_one(&h.db)
            .await
            .unwrap();
        (n == 1).then_some(())
    })
    .await;
    assert_eq!(h.read(&c).await.status, "cancelled");
}

/// With no inventory answering, orders wait on their stock and fill the saga. At the
/// limit (2 in flight here) a new checkout's payment hand-off is refused with 503,
/// `checkout-busy` and Retry-After, and nothing is stored; a hand-off for an order
/// already admitted is still taken. Once the queue drains, new checkouts are admitted
/// again.
#[tokio::test]
async fn new_checkouts_are_shed_with_retry_after_while_the_saga_is_at_its_limit() {
    let h = Harness::start_with(
        order::Settings {
            saga_max_in_flight: 2,
            saga_hard_timeout_secs: 4,
            ..settings()
        },
        false,
    )
    .await;
    let line = [(Uuid::now_v7(), Uuid::now_v7(), 1)];
    let first = h.checkout(&line, "tok_visa").await;
    let second = h.checkout(&line, "tok_visa").await;
    h.wait_status(&first, "paid").await;
    h.wait_status(&second, "paid").await;
    let third = h.checkout_event(&line);
    let refused = h
        .put_payment_method(&third, "tok_visa")
        .await
        .expect_problem(StatusCode::SERVICE_UNAVAILABLE, None);
    assert_eq!(refused.headers["retry-after"], "1");
    assert_eq!(refused.kind_name(), "checkout-busy", "{refused}");
    let stored: i64 =
        sqlx::query_scalar("select count(*) from payment_methods where order_id = $1")
            .bind(third.order_id)
            .fetch_one(&h.db)
            .await
            .unwrap();
    assert_eq!(stored, 0, "a refused hand-off stores nothing");
    // An admitted order's hand-off is still taken.
    h.put_payment_method(&first, "tok_visa").await.expect_ok();
    assert!(h.api().metric("order_checkouts_shed_total", &[]).await >= 1.0);

    // The two time out (hard timeout 4 s): the queue drains and checkouts come in again.
    h.wait_status(&first, "rejected").await;
    h.wait_status(&second, "rejected").await;
    eventually("a new checkout admitted", WAIT, || async {
        h.put_payment_method(&third, "tok_visa").await.ok()
    })
    .await;
}
