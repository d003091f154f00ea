//! Redis is soft state: when it loses its data (FLUSHALL, a restart without
//! persistence) or holds wrong values, reconciliation rebuilds it from PostgreSQL, and
//! PostgreSQL's guard keeps commits from overselling in the meantime.
//!
//! "FLUSHALL" here deletes every key of the test's environment (its own prefix), which
//! is what FLUSHALL does to this service, without touching tests running beside it.

use futures::future::join_all;
use mp_events::Service;
use mp_events::catalog::{InventoryUpdated, StockChange};
use mp_test_support::clients::Expect;
use mp_test_support::eventually;
use redis::AsyncCommands;
use reqwest::StatusCode;
use uuid::Uuid;

use crate::harness::{Harness, WAIT, line, order_created, settings};

fn reconciling_often() -> inventory::Settings {
    let mut s = settings();
    s.reconcile_interval_ms = 100;
    s
}

fn stock_key(h: &Harness, product_id: Uuid) -> String {
    format!("t_{}:inv:{{{product_id}}}:stock", h.env.id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_loses_its_data_reservations_come_back_and_commits_never_oversell() {
    let h = Harness::start_with(reconciling_often()).await;
    let p = h.product(Uuid::now_v7(), 10, 0).await;
    let carts: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    h.reserve(carts[0], p, 4).await.expect_ok();
    h.reserve(carts[1], p, 3).await.expect_ok();

    // Reconciliation alone puts the mirror and the reservations back.
    h.flush_redis().await;
    let mut redis = h.env.redis().await;
    eventually("reconciliation to rebuild the mirror", WAIT, || {
        let mut redis = redis.clone();
        let key = stock_key(&h, p);
        async move { redis.exists::<_, bool>(key).await.unwrap().then_some(()) }
    })
    .await;
    let on_hand: String = redis.hget(stock_key(&h, p), "on_hand").await.unwrap();
    assert_eq!(on_hand, "10");
    eventually("the drift counted", WAIT, || async {
        let missing = h
            .api()
            .metric(
                "inventory_reconcile_drift_total",
                &[("kind", "mirror_missing")],
            )
            .await;
        let restored = h
            .api()
            .metric(
                "inventory_reconcile_drift_total",
                &[("kind", "reservations_restored")],
            )
            .await;
        (missing >= 1.0 && restored >= 2.0).then_some(())
    })
    .await;
    let stock = h.stock(p).await;
    assert_eq!((stock.on_hand, stock.reserved, stock.available), (10, 7, 3));
    let problem = h
        .reserve(carts[2], p, 4)
        .await
        .expect_problem(StatusCode::CONFLICT, None);
    assert_eq!(problem["available"], 3, "{problem}");

    // A reservation right after the loss, before any reconciliation, still counts the
    // reservations kept in PostgreSQL.
    h.flush_redis().await;
    h.reserve(carts[2], p, 3).await.expect_ok();
    let problem = h
        .reserve(carts[3], p, 1)
        .await
        .expect_problem(StatusCode::CONFLICT, None);
    assert_eq!(problem["available"], 0, "{problem}");

    // With Redis empty again, the three carts holding all 10 units order what they hold
    // and a fourth cart, holding nothing, orders one: the holders commit, the fourth
    // finds nothing that nobody holds.
    h.flush_redis().await;
    let orders: Vec<_> = carts
        .iter()
        .zip([4, 3, 3, 1])
        .map(|(&cart, quantity)| order_created(cart, vec![line(p, quantity)]))
        .collect();
    join_all(orders.iter().map(|o| h.publish(Service::Order, o.clone()))).await;
    let events = h.wait_events::<InventoryUpdated>(4).await;
    let mut committed: Vec<Uuid> = events
        .iter()
        .filter(|e| e.change == StockChange::OrderCommitted)
        .filter_map(|e| e.order_id)
        .collect();
    let mut expected: Vec<Uuid> = orders[..3].iter().map(|o| o.order_id).collect();
    expected.sort();
    committed.sort();
    assert_eq!(
        committed, expected,
        "exactly the carts holding stock committed"
    );
    assert_eq!(h.on_hand(p).await, 0, "sold exactly the stock, not more");
    h.assert_ledger_matches().await;
    eventually("the mirror to follow", WAIT, || async {
        let stock = h.stock(p).await;
        (stock.on_hand == 0 && stock.available == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_that_disagrees_with_postgresql_is_repaired_and_counted() {
    let h = Harness::start_with(reconciling_often()).await;
    let p = h.product(Uuid::now_v7(), 3, 0).await;
    let key = stock_key(&h, p);
    let mut redis = h.env.redis().await;
    eventually("the mirror loaded", WAIT, || {
        let mut redis = redis.clone();
        let key = key.clone();
        async move { redis.exists::<_, bool>(key).await.unwrap().then_some(()) }
    })
    .await;

    let _: () = redis.hset(&key, "on_hand", 100).await.unwrap();
    let _: () = redis.hset(&key, "reserved", 42).await.unwrap();
    eventually("the repair counted", WAIT, || async {
        let mismatch = h
            .api()
            .metric(
                "inventory_reconcile_drift_total",
                &[("kind", "on_hand_mismatch")],
            )
            .await;
        let recounted = h
            .api()
            .metric(
                "inventory_reconcile_drift_total",
                &[("kind", "reserved_recounted")],
            )
            .await;
        (mismatch >= 1.0 && recounted >= 1.0).then_some(())
    })
    .await;
    let on_hand: String = redis.hget(&key, "on_hand").await.unwrap();
    assert_eq!(on_hand, "3");
    let problem = h
        .reserve(Uuid::now_v7(), p, 4)
        .await
        .expect_problem(StatusCode::CONFLICT, None);
    assert_eq!(problem["available"], 3, "{problem}");
    assert_eq!(h.stock(p).await.available, 3);
    assert!(
        h.api()
            .metric("inventory_reconcile_runs_total", &[("outcome", "ok")])
            .await
            >= 1.0
    );
}
