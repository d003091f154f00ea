//! Interleavings of concurrent handlers, each reproduced deterministically: one
//! transaction is held open at the point that matters while the competing one runs
//! until PostgreSQL reports it blocked, then the first commits.

use mp_events::catalog::{InventoryUpdated, OrderCreated, OrderStatus, StockChange};
use mp_events::{Envelope, EventHandler, Service};
use mp_test_support::clients::Expect;
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
    let cancelled = Envelope::new(
        Service::Order,
        order_updated(&order, OrderStatus::Cancelled),
    );

    // T1: the commit, done but not committed.
    let mut t1 = h.db.begin().await.unwrap();
    inventory::events::CommitOrder(inventory.clone())
        .handle(&mut t1, &created)
        .await
        .expect("the commit");

    // T2: the cancellation, on its own connection, until it waits on T1.
    let mut t2 = h.db.begin().await.unwrap();
    let t2_pid = backend_pid(&mut t2).await;
    let restock = tokio::spawn({
        let inventory = inventory.clone();
        async move {
            inventory::events::RestockOrder(inventory)
                .handle(&mut t2, &cancelled)
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
    let ledger: Vec<(String, i64)> =
        sqlx::query_as("select kind, delta from stock_movements where reference = $1 order by seq")
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
    let cancelled = Envelope::new(
        Service::Order,
        order_updated(&order, OrderStatus::Cancelled),
    );

    let mut t1 = h.db.begin().await.unwrap();
    inventory::events::RestockOrder(inventory.clone())
        .handle(&mut t1, &cancelled)
        .await
        .expect("the release");

    let mut t2 = h.db.begin().await.unwrap();
    let t2_pid = backend_pid(&mut t2).await;
    let commit = tokio::spawn({
        let inventory = inventory.clone();
        async move {
            inventory::events::CommitOrder(inventory)
                .handle(&mut t2, &created)
                .await
                .expect("the commit");
            t2.commit().await.unwrap();
        }
    });
    wait_until_blocked(&h.db, t2_pid).await;
    t1.commit().await.unwrap();
    commit.await.unwrap();

    assert_eq!(h.on_hand(product).await, 10, "nothing was sold");
    let moved: i64 =
        sqlx::query_scalar("select count(*) from stock_movements where reference = $1")
            .bind(order.order_id.to_string())
            .fetch_one(&h.db)
            .await
            .unwrap();
    assert_eq!(moved, 0);
}

/// Commits `order` through the handler in a transaction of its own; the change it
/// published (`order_committed` or `order_rejected`).
async fn commit(
    h: &Harness,
    inventory: &inventory::Inventory,
    order: &OrderCreated,
) -> StockChange {
    let mut tx = h.db.begin().await.unwrap();
    inventory::events::CommitOrder(inventory.clone())
        .handle(&mut tx, &Envelope::new(Service::Order, order.clone()))
        .await
        .expect("the commit");
    tx.commit().await.unwrap();
    h.events::<InventoryUpdated>()
        .await
        .into_iter()
        .rev()
        .find(|e| e.order_id == Some(order.order_id))
        .map(|e| e.change)
        .expect("an inventory.updated for the order")
}

/// 5 on hand; cart A reserves 3, then cart B 2; an adjustment takes 3 away (damaged
/// goods), so the reservations hold more than is on hand. A no longer fits, B does:
/// B's order commits, A's is rejected. (Counting every reservation rejected both, and
/// every cart after them until the reservations expired.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_above_the_stock_after_an_adjustment_still_let_the_first_that_fits_commit() {
    let h = Harness::start().await;
    let vendor = Uuid::now_v7();
    let product = h.product(vendor, 5, 0).await;
    let inventory = h.inventory().await;
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    h.reserve(a, product, 3).await.expect_ok();
    h.reserve(b, product, 2).await.expect_ok();
    h.adjust(&h.tokens.member_of(vendor), product, -3)
        .await
        .expect_ok();

    let order_a = order_created(a, vec![line(product, 3)]);
    let order_b = order_created(b, vec![line(product, 2)]);
    assert_eq!(
        commit(&h, &inventory, &order_a).await,
        StockChange::OrderRejected
    );
    assert_eq!(
        commit(&h, &inventory, &order_b).await,
        StockChange::OrderCommitted
    );
    assert_eq!(h.on_hand(product).await, 0);
    h.assert_ledger_matches().await;
}

/// The Redis mirror shows more than PostgreSQL has (a mirror write that failed, or a
/// partial loss of Redis rebuilt from what was left), so Redis grants reservations
/// beyond the stock: 2 on hand, the mirror says 6; C reserves 4, D 2. C cannot be
/// honoured, D can: D's order commits, C's does not, and nothing is oversold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_granted_by_a_stale_mirror_still_let_the_first_that_fits_commit() {
    let h = Harness::start().await;
    let product = h.product(Uuid::now_v7(), 2, 0).await;
    let inventory = h.inventory().await;
    // Make sure the mirror exists, then make it lie.
    h.reserve(Uuid::now_v7(), product, 1).await.expect_ok();
    let mut redis = h.env.redis().await;
    let _: () = redis::cmd("HSET")
        .arg(format!("t_{}:inv:{{{product}}}:stock", h.env.id))
        .arg("on_hand")
        .arg(7)
        .query_async(&mut redis)
        .await
        .unwrap();
    let (c, d) = (Uuid::now_v7(), Uuid::now_v7());
    h.reserve(c, product, 4).await.expect_ok();
    h.reserve(d, product, 1).await.expect_ok();

    let order_c = order_created(c, vec![line(product, 4)]);
    let order_d = order_created(d, vec![line(product, 1)]);
    assert_eq!(
        commit(&h, &inventory, &order_c).await,
        StockChange::OrderRejected
    );
    assert_eq!(
        commit(&h, &inventory, &order_d).await,
        StockChange::OrderCommitted
    );
    assert_eq!(
        h.on_hand(product).await,
        1,
        "the first cart's unit is still held"
    );
    h.assert_ledger_matches().await;
}
