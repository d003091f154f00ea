//! Reservations: atomic check-and-reserve under concurrency, quantity changes, expiry,
//! release, cart events, authentication and bad input.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::join_all;
use mp_events::Service;
use mp_events::catalog::{CartItemAdded, CartItemRemoved};
use mp_test_support::clients::inventory::{Reservation, Reserve};
use mp_test_support::clients::{ApiResult, Expect, Reply};
use mp_test_support::eventually;
use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

use crate::harness::{Harness, WAIT, settings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_reservations_of_one_unit_on_ten_in_stock_let_exactly_ten_through() {
    let h = Harness::start().await;
    let product_id = h.product(Uuid::now_v7(), 10, 0).await;

    let started = Instant::now();
    let results = join_all((0..50).map(|_| h.reserve(Uuid::now_v7(), product_id, 1))).await;
    let elapsed = started.elapsed();

    let reserved: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    let refused: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    println!(
        "50 concurrent reservations on stock 10: {} reserved, {} refused with 409, in {elapsed:?}",
        reserved.len(),
        refused.len()
    );
    assert_eq!(reserved.len(), 10);
    assert_eq!(refused.len(), 40);
    for problem in &refused {
        problem.assert(StatusCode::CONFLICT, None);
        assert_eq!(problem.kind_name(), "insufficient-stock", "{problem}");
        assert_eq!(problem["available"], 0, "{problem}");
    }
    for reply in &reserved {
        assert_eq!(reply.status, StatusCode::CREATED);
        assert_eq!(reply.body.quantity, 1);
        assert!(reply.body.expires_at > Utc::now());
    }

    let stock = h.stock(product_id).await;
    assert_eq!(stock.on_hand, 10);
    assert_eq!(stock.reserved, 10);
    assert_eq!(stock.available, 0);
    let sum = stock.reserved + stock.available;
    assert_eq!(sum, 10, "reserved and available add up to on hand");
    let durable: i64 =
        sqlx::query_scalar("select coalesce(sum(quantity), 0)::bigint from reservations")
            .fetch_one(&h.db)
            .await
            .unwrap();
    assert_eq!(durable, 10, "every reservation has its durable copy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_a_reservation_takes_only_the_difference_and_repeating_it_changes_nothing() {
    let h = Harness::start().await;
    let product_id = h.product(Uuid::now_v7(), 10, 0).await;
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());

    let held = h.reserve(a, product_id, 3).await.expect_ok();
    let location = held.headers["location"].to_str().unwrap();
    assert_eq!(location, format!("/api/reservations/{a}/{product_id}"));
    let held = held.body;
    assert_eq!(held.available, 7);
    assert_eq!(held.cart_id, a);
    assert_eq!(held.product_id, product_id);
    assert!(held.expires_at > Utc::now() + chrono::Duration::seconds(800));

    let available = |r: ApiResult<Reply<Reservation>>| r.expect_ok().body.available;
    assert_eq!(available(h.reserve(a, product_id, 3).await), 7);
    assert_eq!(available(h.reserve(a, product_id, 5).await), 5);
    assert_eq!(available(h.reserve(a, product_id, 2).await), 8);

    let problem = h
        .reserve(b, product_id, 9)
        .await
        .expect_problem(StatusCode::CONFLICT, None);
    assert_eq!(problem["available"], 8, "the most cart b could hold");
    h.reserve(b, product_id, 8).await.expect_ok();
    // Cart b may lower what it holds even with nothing left to take.
    assert_eq!(available(h.reserve(b, product_id, 4).await), 4);

    let stock = h.stock(product_id).await;
    assert_eq!((stock.reserved, stock.available), (6, 4));

    h.release(a, product_id).await.expect_ok();
    // Idempotent, and nothing held is nothing to release.
    h.release(a, product_id).await.expect_ok();
    h.release(Uuid::now_v7(), Uuid::now_v7()).await.expect_ok();
    let stock = h.stock(product_id).await;
    assert_eq!((stock.reserved, stock.available), (4, 6));
    let rows: Vec<(Uuid, i64)> =
        sqlx::query_as("select cart_id, quantity from reservations where quantity > 0")
            .fetch_all(&h.db)
            .await
            .unwrap();
    assert_eq!(rows, vec![(b, 4)], "cart a's reservation ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_reservations_return_their_stock_by_themselves() {
    let mut s = settings();
    s.reservation_ttl_secs = 1;
    let h = Harness::start_with(s).await;
    let product_id = h.product(Uuid::now_v7(), 5, 0).await;

    h.reserve(Uuid::now_v7(), product_id, 5).await.expect_ok();
    let problem = h
        .reserve(Uuid::now_v7(), product_id, 1)
        .await
        .expect_problem(StatusCode::CONFLICT, None);
    assert_eq!(problem["available"], 0);

    eventually(
        "the reservation to expire",
        Duration::from_secs(5),
        || async {
            let stock = h.stock(product_id).await;
            (stock.available == 5 && stock.reserved == 0).then_some(())
        },
    )
    .await;
    h.reserve(Uuid::now_v7(), product_id, 5).await.expect_ok();
}

fn generation(reply: &Reply<Reservation>) -> i64 {
    reply.body.generation
}

async fn handled(h: &Harness, n: i64) {
    eventually(&format!("{n} cart event(s) handled"), WAIT, || async {
        let count: i64 = sqlx::query_scalar(
            "select count(*) from inbox where handler in ('inventory.check', 'inventory.release')",
        )
        .fetch_one(&h.db)
        .await
        .unwrap();
        (count >= n).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cart_item_events_confirm_and_release_only_the_reservation_of_their_generation() {
    let h = Harness::start().await;
    let product_id = h.product(Uuid::now_v7(), 10, 0).await;
    let cart_id = Uuid::now_v7();
    let customer_id = Uuid::now_v7();
    let expiry = || async {
        sqlx::query_scalar::<_, DateTime<Utc>>(
            "select expires_at from reservations
             where cart_id = $1 and product_id = $2 and quantity > 0",
        )
        .bind(cart_id)
        .bind(product_id)
        .fetch_optional(&h.db)
        .await
        .unwrap()
    };
    let added = |quantity, generation| CartItemAdded {
        cart_id,
        customer_id,
        product_id,
        quantity,
        generation,
    };
    let removed = |generation| CartItemRemoved {
        cart_id,
        customer_id,
        product_id,
        generation,
    };

    let body = h.reserve(cart_id, product_id, 2).await.expect_ok();
    let first = generation(&body);
    let reserved_until = expiry().await.unwrap();

    // The cart's event for that call confirms it and extends it.
    h.publish(Service::Cart, added(2, first)).await;
    eventually("the reservation extended", WAIT, || async {
        expiry().await.filter(|e| *e > reserved_until)
    })
    .await;

    // The cart changes the line: a newer generation.
    let body = h.reserve(cart_id, product_id, 3).await.expect_ok();
    let second = generation(&body);
    assert!(second > first, "generations grow");
    // A removal of the earlier reservation arrives late: the newer one is kept. A
    // late confirmation of the earlier one and a removal without a generation change
    // nothing either.
    h.publish(Service::Cart, removed(first)).await;
    h.publish(Service::Cart, added(2, first)).await;
    h.publish(Service::Cart, removed(0)).await;
    handled(&h, 4).await;
    let stock = h.stock(product_id).await;
    assert_eq!((stock.reserved, stock.available), (3, 7));
    let held: (i64, i64) = sqlx::query_as(
        "select quantity, generation from reservations where cart_id = $1 and product_id = $2",
    )
    .bind(cart_id)
    .bind(product_id)
    .fetch_one(&h.db)
    .await
    .unwrap();
    assert_eq!(held, (3, second));

    // A confirmation without a generation confirms the reservation of its quantity.
    let before = expiry().await.unwrap();
    h.publish(Service::Cart, added(3, 0)).await;
    eventually("the reservation extended", WAIT, || async {
        expiry().await.filter(|e| *e > before)
    })
    .await;

    // The removal of the current reservation ends it, in PostgreSQL and in Redis.
    h.publish(Service::Cart, removed(second)).await;
    eventually("the reservation released", WAIT, || async {
        let stock = h.stock(product_id).await;
        let released = stock.reserved == 0 && stock.available == 10;
        (released && expiry().await.is_none()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmation_that_finds_no_stock_is_counted_and_not_retried_forever() {
    let mut s = settings();
    // Short enough to lapse quickly, long enough for the other cart's reservation to
    // outlive the checks below on a loaded machine.
    s.reservation_ttl_secs = 2;
    let h = Harness::start_with(s).await;
    let product_id = h.product(Uuid::now_v7(), 2, 0).await;
    let (slow, quick) = (Uuid::now_v7(), Uuid::now_v7());

    h.reserve(slow, product_id, 2).await.expect_ok();
    // Its reservation lapses and another cart takes the stock before its event arrives.
    eventually(
        "the slow cart's reservation to lapse",
        Duration::from_secs(5),
        || async { h.reserve(quick, product_id, 2).await.is_ok().then_some(()) },
    )
    .await;
    h.publish(
        Service::Cart,
        CartItemAdded {
            cart_id: slow,
            customer_id: Uuid::now_v7(),
            product_id,
            quantity: 2,
            generation: 0,
        },
    )
    .await;
    eventually("the shortfall counted, the event acked", WAIT, || async {
        let shortfalls = h
            .api()
            .metric("inventory_reservation_check_shortfalls_total", &[])
            .await;
        let acked = h
            .api()
            .metric(
                "events_consumed_total",
                &[
                    ("event_type", "cart.item.added"),
                    ("handler", "inventory.check"),
                    ("outcome", "ok"),
                ],
            )
            .await;
        (shortfalls == 1.0 && acked == 1.0).then_some(())
    })
    .await;
    assert_eq!(
        h.stock(product_id).await.reserved,
        2,
        "the other cart keeps its stock"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_are_for_services_only() {
    let h = Harness::start().await;
    let product_id = h.product(Uuid::now_v7(), 3, 0).await;
    let body = json!({"cart_id": Uuid::now_v7(), "product_id": product_id, "quantity": 1});
    for token in [None, Some(h.tokens.admin()), Some("not-a-token".to_owned())] {
        let (status, problem) = h
            .api()
            .call(
                Method::POST,
                "/api/reservations",
                token.as_deref(),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");
        let (status, _) = h
            .api()
            .call(
                Method::DELETE,
                &format!("/api/reservations/{}/{product_id}", Uuid::now_v7()),
                token.as_deref(),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(h.stock(product_id).await.reserved, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reservation_requests_are_problems_and_change_nothing() {
    let h = Harness::start().await;
    let product_id = h.product(Uuid::now_v7(), 3, 0).await;
    let inactive = crate::harness::product_created(Uuid::now_v7(), 3, 0);
    let inactive_id = inactive.product_id;
    h.publish(
        Service::Vendor,
        mp_events::catalog::VendorProductCreated {
            active: false,
            ..inactive
        },
    )
    .await;
    h.wait_for_item(inactive_id).await;
    let token = h.tokens.service(Service::Cart, Service::Inventory);
    let cart = Uuid::now_v7();
    let cases = [
        (
            json!({"cart_id": cart, "product_id": product_id, "quantity": 0}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/validation",
        ),
        (
            json!({"cart_id": cart, "product_id": product_id, "quantity": -2}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/validation",
        ),
        (
            json!({"cart_id": cart, "product_id": product_id, "quantity": 4}).to_string(),
            StatusCode::CONFLICT,
            "/problems/insufficient-stock",
        ),
        (
            json!({"cart_id": cart, "product_id": inactive_id, "quantity": 1}).to_string(),
            StatusCode::CONFLICT,
            "/problems/product-inactive",
        ),
        (
            json!({"cart_id": cart, "product_id": Uuid::now_v7(), "quantity": 1}).to_string(),
            StatusCode::NOT_FOUND,
            "/problems/not-found",
        ),
        (
            json!({"cart_id": cart, "product_id": product_id, "quantity": 1, "note": "x"})
                .to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/validation",
        ),
        (
            json!({"cart_id": "cart-1", "product_id": product_id, "quantity": 1}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/validation",
        ),
        (
            json!({"cart_id": cart, "product_id": product_id, "quantity": 1.5}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/validation",
        ),
        (
            json!({"cart_id": cart, "product_id": product_id}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/validation",
        ),
        (
            "{\"cart_id\": ".to_owned(),
            StatusCode::BAD_REQUEST,
            "/problems/malformed-json",
        ),
    ];
    for (body, status, kind) in cases {
        let (got, content_type, problem) = h
            .api()
            .call_text(
                Method::POST,
                "/api/reservations",
                Some(&token),
                "application/json",
                &body,
            )
            .await;
        assert_eq!(got, status, "{body}: {problem}");
        assert_eq!(content_type, "application/problem+json", "{body}");
        assert_eq!(problem["type"], kind, "{body}: {problem}");
    }
    let (status, content_type, _) = h
        .api()
        .call_text(
            Method::POST,
            "/api/reservations",
            Some(&token),
            "text/plain",
            "quantity=1",
        )
        .await;
    assert_eq!(
        (status, content_type.as_str()),
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "application/problem+json"
        )
    );
    let (status, problem) = h
        .api()
        .call(
            Method::DELETE,
            "/api/reservations/nope/also-nope",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");

    let stock = h.stock(product_id).await;
    assert_eq!((stock.reserved, stock.available), (0, 3));
    let rows: i64 = sqlx::query_scalar("select count(*) from reservations")
        .fetch_one(&h.db)
        .await
        .unwrap();
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn only_cart_and_order_may_hold_or_release_stock() {
    let h = Harness::start().await;
    let product_id = h.product(Uuid::now_v7(), 5, 1).await;
    let cart = Uuid::now_v7();
    let vendor = h.tokens.service(Service::Vendor, Service::Inventory);
    let (status, body) = h
        .api()
        .call(
            Method::POST,
            "/api/reservations",
            Some(&vendor),
            Some(json!({"cart_id": cart, "product_id": product_id, "quantity": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("vendor"),
        "{body}"
    );
    let (status, _) = h
        .api()
        .call(
            Method::DELETE,
            &format!("/api/reservations/{cart}/{product_id}"),
            Some(&vendor),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(h.stock(product_id).await.reserved, 0);
    let order = h.tokens.service(Service::Order, Service::Inventory);
    let (status, body) = h
        .api()
        .call(
            Method::POST,
            "/api/reservations",
            Some(&order),
            Some(json!({"cart_id": cart, "product_id": product_id, "quantity": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// A conditional change (`replaces`, the undo of a change that lost a race) applies
/// only over the reservation of that generation: over a later one it is refused and
/// changes nothing; quantity 0 ends it, and only with `replaces`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conditional_change_applies_only_over_the_generation_it_replaces() {
    let h = Harness::start().await;
    let p = h.product(Uuid::now_v7(), 10, 0).await;
    let cart = Uuid::now_v7();
    let first = h.reserve(cart, p, 2).await.expect_ok().body;
    let second = h.reserve(cart, p, 5).await.expect_ok().body;
    let conditional = |quantity: i64, replaces: i64| Reserve {
        cart_id: cart,
        product_id: p,
        quantity,
        replaces: Some(replaces),
    };
    let token = h.cart_token();
    let problem = h
        .client
        .reserve(&token, &conditional(2, first.generation))
        .await
        .expect_problem(StatusCode::CONFLICT, None);
    assert_eq!(problem.kind_name(), "reservation-superseded", "{problem}");
    assert_eq!(h.stock(p).await.reserved, 5, "the later change stands");

    let undone = h
        .client
        .reserve(&token, &conditional(2, second.generation))
        .await
        .expect_ok()
        .body;
    assert_eq!(h.stock(p).await.reserved, 2);

    // Quantity 0 ends a reservation only as an undo (with `replaces`).
    let unconditional_zero = Reserve {
        replaces: None,
        ..conditional(0, 0)
    };
    h.client
        .reserve(&token, &unconditional_zero)
        .await
        .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, Some("quantity"));
    h.client
        .reserve(&token, &conditional(0, undone.generation))
        .await
        .expect_ok();
    assert_eq!(h.stock(p).await.reserved, 0);
}
