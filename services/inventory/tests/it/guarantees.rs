//! Reservations as a guarantee: a commit honours what other carts hold, generations
//! order every copy of a reservation (no rebuild, undo or late event brings back an
//! older state), stock levels carry a growing version, and two processes sharing the
//! queue and Redis keep all of it through a Redis loss under load.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use futures::future::join_all;
use inventory::db::Reservation;
use inventory::store::{Attempt, Reserve, Rows, TOMBSTONE_MS};
use mp_events::Service;
use mp_events::catalog::{
    InventoryCreated, InventoryUpdated, OrderCreated, OrderStatus, Shortage, StockChange,
};
use mp_test_support::clients::Expect;
use mp_test_support::clients::inventory::InventoryApi;
use mp_test_support::eventually;
use reqwest::StatusCode;
use uuid::Uuid;

use crate::harness::{Harness, WAIT, line, order_created, order_updated, settings};

/// The `inventory.updated` event inventory published for `order`.
async fn outcome(h: &Harness, order: &OrderCreated) -> InventoryUpdated {
    eventually("inventory.updated for the order", WAIT, || async {
        h.events::<InventoryUpdated>()
            .await
            .into_iter()
            .find(|e| e.order_id == Some(order.order_id))
    })
    .await
}

async fn next_generation(h: &Harness) -> i64 {
    sqlx::query_scalar("select nextval('reservation_generation')")
        .fetch_one(&h.db)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_whose_reservation_lapsed_cannot_take_stock_another_cart_holds() {
    let h = Harness::start().await;
    // A second process whose reservations lapse after a second.
    let mut short = settings();
    short.reservation_ttl_secs = 1;
    let quick = h.spawn_another(short).await;
    let p = h.product(Uuid::now_v7(), 3, 0).await;
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());

    // Cart B held all 3 and let its reservation lapse; cart A then holds all 3.
    h.reserve_on(&quick, b, p, 3).await.expect_ok();
    eventually(
        "cart A to get the stock once B's reservation lapsed",
        WAIT,
        || async { h.reserve(a, p, 3).await.is_ok().then_some(()) },
    )
    .await;

    // B's order comes first: nothing is free of A's reservation, so B is rejected.
    let order_b = order_created(b, vec![line(p, 3)]);
    h.publish(Service::Order, order_b.clone()).await;
    let event = outcome(&h, &order_b).await;
    assert_eq!(event.change, StockChange::OrderRejected);
    assert_eq!(
        event.shortages,
        [Shortage {
            product_id: p,
            requested: 3,
            available: 0
        }]
    );
    assert_eq!(h.on_hand(p).await, 3);

    // A's order takes what A holds.
    let order_a = order_created(a, vec![line(p, 3)]);
    h.publish(Service::Order, order_a.clone()).await;
    let event = outcome(&h, &order_a).await;
    assert_eq!(event.change, StockChange::OrderCommitted);
    assert_eq!(h.on_hand(p).await, 0);
    h.assert_ledger_matches().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_that_read_postgresql_before_a_release_never_brings_the_reservation_back() {
    let h = Harness::start().await;
    let p = h.product(Uuid::now_v7(), 5, 0).await;
    let cart = Uuid::now_v7();
    h.reserve(cart, p, 3).await.expect_ok();

    // Redis loses its data, and a rebuild reads what PostgreSQL holds...
    h.flush_redis().await;
    let mut conn = h.db.acquire().await.unwrap();
    let rows = inventory::db::mirror_rows(&mut conn, &[p]).await.unwrap();
    let held = inventory::db::mirror_reservations(&mut conn, &[p], TOMBSTONE_MS)
        .await
        .unwrap();
    assert_eq!(held.len(), 1, "the rebuild read the cart's reservation");
    // ... the cart releases its reservation meanwhile ...
    h.release(cart, p).await.expect_ok();
    // ... and the rebuild writes what it read.
    let held: Vec<&Reservation> = held.iter().collect();
    h.store()
        .await
        .sync(&rows[0], Rows::Rebuild(&held), false)
        .await
        .unwrap();

    let stock = h.stock(p).await;
    assert_eq!(
        (stock.reserved, stock.available),
        (0, 5),
        "the released reservation stays released"
    );
    h.reserve(Uuid::now_v7(), p, 5).await.expect_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undoing_a_reservation_whose_copy_failed_never_overwrites_a_newer_one() {
    let h = Harness::start().await;
    let p = h.product(Uuid::now_v7(), 10, 0).await;
    let cart = Uuid::now_v7();
    let store = h.store().await;

    // A request took its generation and reserved 2 in Redis; its durable write fails.
    let failing = next_generation(&h).await;
    let attempt = eventually("the mirror loaded", WAIT, || async {
        match store.reserve(p, cart, 2, failing, None).await.unwrap() {
            Attempt::Done(outcome) => Some(outcome),
            _ => None,
        }
    })
    .await;
    assert!(matches!(attempt, Reserve::Reserved { previous: 0, .. }));
    // Meanwhile the cart's next change goes through: 5 units.
    let newer = h.reserve(cart, p, 5).await.expect_ok().body;
    assert!(newer.generation > failing);

    // The failed request now undoes its change: the newer reservation stays.
    assert!(!store.undo(p, cart, 0, 0, failing).await.unwrap());
    let stock = h.stock(p).await;
    assert_eq!((stock.reserved, stock.available), (5, 5));

    // An undo of the latest change does put back what the cart held before it.
    let latest = next_generation(&h).await;
    let attempt = store.reserve(p, cart, 8, latest, None).await.unwrap();
    let Attempt::Done(Reserve::Reserved {
        previous,
        previous_expires_ms,
        ..
    }) = attempt
    else {
        panic!("reserved 8: {attempt:?}");
    };
    assert_eq!(previous, 5);
    assert_eq!(h.stock(p).await.reserved, 8);
    assert!(
        store
            .undo(p, cart, previous, previous_expires_ms, latest)
            .await
            .unwrap()
    );
    assert_eq!(h.stock(p).await.reserved, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_published_stock_level_carries_a_higher_version_of_the_item() {
    let h = Harness::start().await;
    let vendor = Uuid::now_v7();
    let p = h.product(vendor, 10, 0).await;
    let member = h.tokens.member_of(vendor);
    h.adjust(&member, p, 5).await.expect_ok();
    h.adjust(&member, p, -2).await.expect_ok();
    let order = order_created(Uuid::now_v7(), vec![line(p, 3)]);
    h.publish(Service::Order, order.clone()).await;
    outcome(&h, &order).await;
    h.publish(
        Service::Order,
        order_updated(&order, OrderStatus::Cancelled),
    )
    .await;
    let updated = h.wait_events::<InventoryUpdated>(4).await;
    let created = h.wait_events::<InventoryCreated>(1).await;

    let mut versions = vec![created[0].level.version];
    versions.extend(updated.iter().map(|e| e.levels[0].version));
    let changes: Vec<StockChange> = updated.iter().map(|e| e.change).collect();
    assert_eq!(
        changes,
        [
            StockChange::Adjustment,
            StockChange::Adjustment,
            StockChange::OrderCommitted,
            StockChange::OrderReleased
        ]
    );
    assert!(
        versions[0] > 0,
        "the creation is a version too: {versions:?}"
    );
    assert!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "every published level is newer than the one before: {versions:?}"
    );
    let stored: i64 = sqlx::query_scalar("select version from stock_items where product_id = $1")
        .bind(p)
        .fetch_one(&h.db)
        .await
        .unwrap();
    assert_eq!(*versions.last().unwrap(), stored);

    // A product listed with no stock is a version too, and its first stock a later one.
    let empty = h.product(vendor, 0, 0).await;
    let created = h.wait_events::<InventoryCreated>(2).await;
    assert_eq!(created[1].level.product_id, empty);
    let first = created[1].level.version;
    assert!(first > 0, "created at version {first}");
    let adjusted = h.adjust(&member, empty, 4).await.expect_ok();
    let updated = h.wait_events::<InventoryUpdated>(5).await;
    assert_eq!(updated[4].levels[0].product_id, empty, "{adjusted:?}");
    assert!(updated[4].levels[0].version > first);
}

/// What one cart did in the concurrent test.
struct Cart {
    id: Uuid,
    product: Uuid,
    quantity: i64,
    reserved: bool,
    released: bool,
    order: Option<OrderCreated>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_fifty_carts_and_a_redis_flush_never_oversell_nor_lose_a_reservation() {
    const STOCK: i64 = 20;
    let mut s = settings();
    s.reconcile_interval_ms = 500;
    let h = Harness::start_with(s.clone()).await;
    let other = h.spawn_another(s).await;
    let vendor = Uuid::now_v7();
    let products = [
        h.product(vendor, STOCK, 0).await,
        h.product(vendor, STOCK, 0).await,
    ];
    let processes = [&h.svc, &other];
    let finished = AtomicUsize::new(0);
    let flushed = AtomicBool::new(false);

    // The first 25 carts start at once; Redis loses everything once 10 of them are
    // done, while the others are in flight; the last 25 start right after the loss.
    let carts = join_all((0..50usize).map(|i| {
        let (finished, flushed) = (&finished, &flushed);
        let h = &h;
        async move {
            if i >= 25 {
                eventually("the flush", WAIT, || async {
                    flushed.load(Ordering::SeqCst).then_some(())
                })
                .await;
            }
            let svc = processes[i % 2];
            let mut cart = Cart {
                id: Uuid::now_v7(),
                product: products[(i / 2) % 2],
                quantity: (i % 3) as i64 + 1,
                reserved: false,
                released: false,
                order: None,
            };
            let reserved = h
                .reserve_on(svc, cart.id, cart.product, cart.quantity)
                .await;
            if let Err(problem) = &reserved {
                problem.assert(StatusCode::CONFLICT, None);
            }
            cart.reserved = reserved.is_ok();
            if cart.reserved {
                if i % 7 == 3 && cart.quantity > 1 {
                    // Changes its mind, through the other process: lowering never fails.
                    h.reserve_on(processes[(i + 1) % 2], cart.id, cart.product, 1)
                        .await
                        .expect_ok();
                    cart.quantity = 1;
                }
                if i % 5 == 0 {
                    InventoryApi(svc.api())
                        .release(&h.cart_token(), cart.id, cart.product)
                        .await
                        .expect_ok();
                    cart.released = true;
                } else if i % 4 == 1 {
                    let order = order_created(cart.id, vec![line(cart.product, cart.quantity)]);
                    h.publish(Service::Order, order.clone()).await;
                    cart.order = Some(order);
                }
            }
            if finished.fetch_add(1, Ordering::SeqCst) + 1 == 10 {
                h.flush_redis().await;
                println!(
                    "Redis flushed with {} of the first 25 carts done",
                    finished.load(Ordering::SeqCst)
                );
                flushed.store(true, Ordering::SeqCst);
            }
            cart
        }
    }))
    .await;
    let reserved = carts.iter().filter(|c| c.reserved).count();
    println!("50 carts on 2 x {STOCK}: {reserved} reserved, the rest refused");

    // Every cart that ordered what it held got it, flush or not.
    for order in carts.iter().filter_map(|c| c.order.as_ref()) {
        let event = outcome(&h, order).await;
        assert_eq!(event.change, StockChange::OrderCommitted, "{event:?}");
    }

    // The reservations still held are all in the rebuilt mirror.
    let holding: Vec<&Cart> = carts
        .iter()
        .filter(|c| c.reserved && !c.released && c.order.is_none())
        .collect();
    for &p in &products {
        let held: i64 = holding
            .iter()
            .filter(|c| c.product == p)
            .map(|c| c.quantity)
            .sum();
        eventually("the held reservations in the mirror", WAIT, || async {
            (h.stock(p).await.reserved == held).then_some(())
        })
        .await;
    }

    // And every cart still holding stock can order it.
    let orders: Vec<OrderCreated> = holding
        .iter()
        .map(|c| order_created(c.id, vec![line(c.product, c.quantity)]))
        .collect();
    join_all(orders.iter().map(|o| h.publish(Service::Order, o.clone()))).await;
    for order in &orders {
        assert_eq!(
            outcome(&h, order).await.change,
            StockChange::OrderCommitted,
            "a cart that held stock commits"
        );
    }

    // Nothing oversold: each product sold exactly what was committed, never more
    // than it had.
    for &p in &products {
        let sold: i64 = carts
            .iter()
            .filter(|c| c.product == p && c.reserved && !c.released)
            .map(|c| c.quantity)
            .sum();
        assert!(sold <= STOCK, "{sold} sold of {STOCK}");
        assert_eq!(h.on_hand(p).await, STOCK - sold);
    }
    h.assert_ledger_matches().await;
}
