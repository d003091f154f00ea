//! Order stock: commits (all lines or none), rejections, releases of failed orders,
//! each exactly once, and never more sold than there is.

use futures::future::join_all;
use mp_events::catalog::{InventoryUpdated, OrderCreated, OrderStatus, Shortage, StockChange};
use mp_events::{Envelope, Service};
use mp_test_support::clients::Expect;
use mp_test_support::eventually;
use uuid::Uuid;

use crate::harness::{Harness, WAIT, line, order_created, order_updated};

async fn order_events(h: &Harness, order: &OrderCreated) -> Vec<InventoryUpdated> {
    h.events::<InventoryUpdated>()
        .await
        .into_iter()
        .filter(|e| e.order_id == Some(order.order_id))
        .collect()
}

async fn wait_order_events(h: &Harness, order: &OrderCreated, n: usize) -> Vec<InventoryUpdated> {
    eventually("inventory.updated for the order", WAIT, || async {
        let events = order_events(h, order).await;
        (events.len() >= n).then_some(events)
    })
    .await
}

async fn order_movements(h: &Harness, order: &OrderCreated) -> Vec<(Uuid, String, i64)> {
    sqlx::query_as(
        "select product_id, kind, delta from stock_movements where reference = $1 order by seq",
    )
    .bind(order.order_id.to_string())
    .fetch_all(&h.db)
    .await
    .unwrap()
}

async fn handled(h: &Harness, handler: &str, n: i64) {
    eventually(
        &format!("{n} event(s) handled by {handler}"),
        WAIT,
        || async {
            let count: i64 = sqlx::query_scalar("select count(*) from inbox where handler = $1")
                .bind(handler)
                .fetch_one(&h.db)
                .await
                .unwrap();
            (count >= n).then_some(())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_commits_its_stock_once_with_ledger_rows_and_clears_its_reservations() {
    let h = Harness::start().await;
    let vendor = Uuid::now_v7();
    let (p1, p2) = (
        h.product(vendor, 10, 0).await,
        h.product(vendor, 5, 0).await,
    );
    let cart = Uuid::now_v7();
    h.reserve(cart, p1, 3).await.expect_ok();
    h.reserve(cart, p2, 5).await.expect_ok();
    h.reserve(Uuid::now_v7(), p1, 2).await.expect_ok();

    let order = order_created(cart, vec![line(p1, 1), line(p2, 5), line(p1, 2)]);
    let envelope = Envelope::new(Service::Order, order.clone());
    h.publish_envelope(&envelope).await;
    let events = wait_order_events(&h, &order, 1).await;
    assert_eq!(events[0].change, StockChange::OrderCommitted);
    assert_eq!(events[0].shortages, []);
    let levels = &events[0].levels;
    assert_eq!(levels.len(), 2);
    let level = |p: Uuid| levels.iter().find(|l| l.product_id == p).unwrap();
    assert_eq!((level(p1).on_hand, level(p1).reserved), (7, 2));
    assert_eq!((level(p2).on_hand, level(p2).available), (0, 0));

    let mut movements = order_movements(&h, &order).await;
    movements.sort();
    let mut expected = vec![(p1, "order".to_owned(), -3), (p2, "order".to_owned(), -5)];
    expected.sort();
    assert_eq!(movements, expected);

    // The cart's reservations became the sale; the other cart keeps its own.
    eventually("the cart's reservations cleared", WAIT, || async {
        let s1 = h.stock(p1).await;
        (s1.on_hand == 7 && s1.reserved == 2 && s1.available == 5).then_some(())
    })
    .await;
    let s2 = h.stock(p2).await;
    assert_eq!((s2.on_hand, s2.reserved), (0, 0));

    // Redelivered, and published again with a new id: no second commit.
    h.publish_envelope(&envelope).await;
    h.publish(Service::Order, order.clone()).await;
    handled(&h, "inventory.commit", 2).await;
    eventually("the redelivery acked", WAIT, || async {
        (h.api()
            .metric("events_consumed_total", &[("event_type", "order.created")])
            .await
            >= 3.0)
            .then_some(())
    })
    .await;
    assert_eq!(order_events(&h, &order).await.len(), 1);
    assert_eq!(order_movements(&h, &order).await.len(), 2);
    assert_eq!(h.on_hand(p1).await, 7);
    h.assert_ledger_matches().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_with_a_short_line_is_rejected_and_changes_nothing() {
    let h = Harness::start().await;
    let vendor = Uuid::now_v7();
    let (p1, p2) = (
        h.product(vendor, 10, 0).await,
        h.product(vendor, 1, 0).await,
    );
    let unknown = Uuid::now_v7();

    let order = order_created(
        Uuid::now_v7(),
        vec![line(p1, 2), line(p2, 3), line(unknown, 1)],
    );
    h.publish(Service::Order, order.clone()).await;
    let events = wait_order_events(&h, &order, 1).await;
    assert_eq!(events[0].change, StockChange::OrderRejected);
    let mut shortages = events[0].shortages.clone();
    shortages.sort_by_key(|s| s.product_id);
    let mut expected = vec![
        Shortage {
            product_id: p2,
            requested: 3,
            available: 1,
        },
        Shortage {
            product_id: unknown,
            requested: 1,
            available: 0,
        },
    ];
    expected.sort_by_key(|s| s.product_id);
    assert_eq!(shortages, expected);

    assert_eq!((h.on_hand(p1).await, h.on_hand(p2).await), (10, 1));
    assert!(order_movements(&h, &order).await.is_empty());
    // A rejected order has nothing to give back when it fails.
    h.publish(Service::Order, order_updated(&order, OrderStatus::Rejected))
        .await;
    handled(&h, "inventory.restock", 1).await;
    assert_eq!((h.on_hand(p1).await, h.on_hand(p2).await), (10, 1));
    assert_eq!(order_events(&h, &order).await.len(), 1);
    h.assert_ledger_matches().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_order_gets_its_committed_stock_back_once() {
    let h = Harness::start().await;
    let p = h.product(Uuid::now_v7(), 10, 0).await;
    let order = order_created(Uuid::now_v7(), vec![line(p, 4)]);
    h.publish(Service::Order, order.clone()).await;
    wait_order_events(&h, &order, 1).await;
    assert_eq!(h.on_hand(p).await, 6);

    // A status that keeps the stock sold changes nothing.
    h.publish(
        Service::Order,
        order_updated(&order, OrderStatus::Confirmed),
    )
    .await;
    let cancelled = Envelope::new(
        Service::Order,
        order_updated(&order, OrderStatus::Cancelled),
    );
    h.publish_envelope(&cancelled).await;
    let events = wait_order_events(&h, &order, 2).await;
    assert_eq!(events[1].change, StockChange::OrderReleased);
    assert_eq!(events[1].levels[0].on_hand, 10);
    assert_eq!(h.on_hand(p).await, 10);

    // Again, and as another status: released once only.
    h.publish_envelope(&cancelled).await;
    h.publish(
        Service::Order,
        order_updated(&order, OrderStatus::PaymentFailed),
    )
    .await;
    // Handled: the cancellation and the failure (a second release of nothing); the
    // confirmation is passed over without an inbox row, since it releases nothing.
    handled(&h, "inventory.restock", 2).await;
    eventually("the redelivery acked", WAIT, || async {
        (h.api()
            .metric("events_consumed_total", &[("event_type", "order.updated")])
            .await
            >= 4.0)
            .then_some(())
    })
    .await;
    assert_eq!(h.on_hand(p).await, 10);
    assert_eq!(order_events(&h, &order).await.len(), 2);
    let movements = order_movements(&h, &order).await;
    assert_eq!(
        movements,
        vec![
            (p, "order".to_owned(), -4),
            (p, "order_release".to_owned(), 4)
        ]
    );
    let reason: String = sqlx::query_scalar(
        "select reason from stock_movements where kind = 'order_release' and product_id = $1",
    )
    .bind(p)
    .fetch_one(&h.db)
    .await
    .unwrap();
    assert_eq!(reason, "order cancelled");
    h.assert_ledger_matches().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_that_failed_before_its_commit_never_commits_later() {
    let h = Harness::start().await;
    let p = h.product(Uuid::now_v7(), 10, 0).await;
    let order = order_created(Uuid::now_v7(), vec![line(p, 4)]);

    h.publish(
        Service::Order,
        order_updated(&order, OrderStatus::PaymentFailed),
    )
    .await;
    handled(&h, "inventory.restock", 1).await;
    h.publish(Service::Order, order.clone()).await;
    handled(&h, "inventory.commit", 1).await;

    assert_eq!(h.on_hand(p).await, 10);
    assert!(order_events(&h, &order).await.is_empty());
    assert!(order_movements(&h, &order).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_orders_never_sell_more_than_is_on_hand() {
    let h = Harness::start().await;
    let vendor = Uuid::now_v7();
    let (p1, p2) = (h.product(vendor, 5, 0).await, h.product(vendor, 7, 0).await);
    // Lines in both product orders, so that lock ordering matters.
    let orders: Vec<OrderCreated> = (0..20)
        .map(|i| {
            let lines = if i % 2 == 0 {
                vec![line(p1, 1), line(p2, 1)]
            } else {
                vec![line(p2, 1), line(p1, 1)]
            };
            order_created(Uuid::now_v7(), lines)
        })
        .collect();
    join_all(orders.iter().map(|o| h.publish(Service::Order, o.clone()))).await;
    let events = h.wait_events::<InventoryUpdated>(20).await;
    let count = |change| events.iter().filter(|e| e.change == change).count();
    let (committed, rejected) = (
        count(StockChange::OrderCommitted),
        count(StockChange::OrderRejected),
    );
    println!("20 concurrent orders on stock 5: {committed} committed, {rejected} rejected");
    assert_eq!((committed, rejected), (5, 15));
    assert_eq!((h.on_hand(p1).await, h.on_hand(p2).await), (0, 2));
    h.assert_ledger_matches().await;
}
