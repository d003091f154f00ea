//! Interleavings of concurrent handlers, each reproduced deterministically: one
//! transaction is held open at the point that matters while the competing one runs
//! until PostgreSQL reports it blocked, then the first commits.

use mp_events::catalog::OrderStatus;
use mp_events::{Envelope, EventHandler, Service};
use mp_test_support::pg::{backend_pid, wait_until_blocked};
use uuid::Uuid;

use crate::harness::{Harness, line, order_created, order_updated};

/// T1 commits an order's stock and holds its transaction open; T2 handles the
/// order's cancellation meanwhile. Whichever order they end in, the stock the order
/// took comes back: on-hand ends where it started, with a sale and a release in the
/// ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_racing_an_uncommitted_stock_commit_gives_the_stock_back() {
    let h = Harness::start().await;
    let product = h.product(Uuid::now_v7(), 10, 0).await;
    let inventory = h.inventory().await;
    let order = order_created(Uuid::now_v7(), vec![line(product, 3)]);
    let created = Envelope::new(Service::Order, order.clone());
    let cancelled = Envelope::new(Service::Order, order_updated(&order, OrderStatus::Cancelled));

    // T1: the commit, done but not committed.
    let mut t1 = h.db.begin().await.unwrap();
    inventory::events::CommitOrder(inventory.clone())
        .handle(&mut *t1, &created)
        .await
        .expect("the commit");

    // T2: the cancellation, on its own connection, until it waits on T1.
    let mut t2 = h.db.begin().await.unwrap();
    let t2_pid = backend_pid(&mut t2).await;
    let restock = tokio::spawn({
        let inventory = inventory.clone();
        async move {
            inventory::events::RestockOrder(inventory)
                .handle(&mut *t2, &cancelled)
                .await
                .expect("the release");
            t2.commit().await.unwrap();
        }
    });
    wait_until_blocked(&h.db, t2_pid).await;
    t1.commit().await.unwrap();
    restock.await.unwrap();

    assert_eq!(
        h.on_hand(product).await,
        10,
        "the cancelled order's stock is back"
    );
    let ledger: Vec<(String, i64)> = sqlx::query_as(
        "select kind, delta from stock_movements where reference = $1 order by seq",
    )
    .bind(order.order_id.to_string())
    .fetch_all(&h.db)
    .await
    .unwrap();
    assert_eq!(
        ledger,
        vec![("order".to_owned(), -3), ("order_release".to_owned(), 3)]
    );
    h.assert_ledger_matches().await;
}

/// The other way round: the cancellation is handled first and held open; the commit
/// that arrives meanwhile waits for it and then takes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_racing_an_uncommitted_cancel_takes_no_stock() {
    let h = Harness::start().await;
    let product = h.product(Uuid::now_v7(), 10, 0).await;
    let inventory = h.inventory().await;
    let order = order_created(Uuid::now_v7(), vec![line(product, 3)]);
    let created = Envelope::new(Service::Order, order.clone());
    let cancelled = Envelope::new(Service::Order, order_updated(&order, OrderStatus::Cancelled));

    let mut t1 = h.db.begin().await.unwrap();
    inventory::events::RestockOrder(inventory.clone())
        .handle(&mut *t1, &cancelled)
        .await
        .expect("the release");

    let mut t2 = h.db.begin().await.unwrap();
    let t2_pid = backend_pid(&mut t2).await;
    let commit = tokio::spawn({
        let inventory = inventory.clone();
        async move {
            inventory::events::CommitOrder(inventory)
                .handle(&mut *t2, &created)
                .await
                .expect("the commit");
            t2.commit().await.unwrap();
        }
    });
    wait_until_blocked(&h.db, t2_pid).await;
    t1.commit().await.unwrap();
    commit.await.unwrap();

    assert_eq!(h.on_hand(product).await, 10, "nothing was sold");
    let moved: i64 = sqlx::query_scalar("select count(*) from stock_movements where reference = $1")
        .bind(order.order_id.to_string())
        .fetch_one(&h.db)
        .await
        .unwrap();
    assert_eq!(moved, 0);
}
