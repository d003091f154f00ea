//! Checkout: the Idempotency-Key rules, the payment token's hand-off, re-confirmed
//! reservations, and the order the real order service makes of it.

use std::collections::BTreeSet;

use mp_events::catalog::{CartCheckout, ShippingAddress};
use mp_events::{Currency, Money};
use mp_test_support::clients::Expect;
use mp_test_support::clients::cart::Checkout;
use mp_test_support::eventually;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{Harness, Options, WAIT, checkout_body};

#[tokio::test]
async fn checkout_is_accepted_once_and_the_same_key_replays_it() {
    let shop = Harness::with_order().await;
    let (customer_id, token, cart_id, mug) = shop.filled_cart().await;
    let body = checkout_body("tok_visa");

    shop.checkout(&token, cart_id, None, &body)
        .await
        .expect_problem(StatusCode::BAD_REQUEST, None);

    let accepted = shop
        .checkout(&token, cart_id, Some("key-1"), &body)
        .await
        .expect_ok();
    let order_id = accepted.body.order_id;
    assert_eq!(
        accepted.headers["location"],
        format!("/api/orders/{order_id}")
    );
    assert!(!accepted.headers.contains_key("idempotent-replayed"));

    let replay = shop
        .checkout(&token, cart_id, Some("key-1"), &body)
        .await
        .expect_ok();
    assert_eq!(
        replay.body.order_id, order_id,
        "the same key gives the same order"
    );
    assert_eq!(
        replay.headers["location"],
        format!("/api/orders/{order_id}")
    );
    assert_eq!(replay.headers["idempotent-replayed"], "true");

    shop.checkout(
        &token,
        cart_id,
        Some("key-1"),
        &checkout_body("tok_declined"),
    )
    .await
    .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, None);

    let problem = shop
        .checkout(&token, cart_id, Some("key-2"), &body)
        .await
        .expect_problem(StatusCode::CONFLICT, None);
    assert_eq!(problem["cart_status"], "checked_out", "{problem}");

    let cart = shop.cart(&token, cart_id).await;
    assert_eq!(cart.status, "checked_out");
    assert_eq!(cart.order_id, Some(order_id));
    shop.add(&token, cart_id, mug, 1)
        .await
        .expect_problem(StatusCode::CONFLICT, None);

    let api = shop.client.0.clone();
    for outcome in [
        "accepted",
        "replayed",
        "idempotency-key-reused",
        "cart-checked-out",
    ] {
        let counted = api
            .metric("cart_checkouts_total", &[("outcome", outcome)])
            .await;
        assert_eq!(counted, 1.0, "cart_checkouts_total{{outcome={outcome:?}}}");
    }

    let checkouts = shop.events::<CartCheckout>().await;
    assert_eq!(checkouts.len(), 1, "one checkout event for one order");
    let event = &checkouts[0];
    assert_eq!(event.order_id, order_id);
    assert_eq!(event.customer_id, customer_id);
    assert_eq!(event.items[0].quantity, 2);
    assert_eq!(event.subtotal, Money::new(2598, Currency::EUR));
    assert_eq!(event.tax, Money::new(520, Currency::EUR));
    assert_eq!(event.total, Money::new(3118, Currency::EUR));
    assert_eq!(event.shipping_address.country, "GB");

    // The token went to the order service only: no trace of it in any stored event.
    for (event_type, envelope) in shop.outbox().await {
        let text = envelope.to_string();
        assert!(
            !text.contains("tok_"),
            "{event_type} carries the token: {text}"
        );
        assert!(!text.contains("payment_token"), "{event_type}: {text}");
    }

    // The order service takes it from there: charged and confirmed.
    let order = shop.order.as_ref().unwrap();
    let status = eventually("the order to be confirmed", WAIT, || async {
        let (status, o) = order
            .call(
                Method::GET,
                &format!("/api/orders/{order_id}"),
                Some(&token),
                None,
            )
            .await;
        (status == StatusCode::OK && o["status"] == "confirmed").then_some(o)
    })
    .await;
    assert_eq!(status["total"]["amount"], 3118);
    eventually("the reservation committed into a sale", WAIT, || async {
        let stock = shop.stock(mug).await;
        (stock["on_hand"] == 8 && stock["reserved"] == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn concurrent_checkouts_with_one_key_make_one_order() {
    let shop = Harness::with_order().await;
    let (_, token, cart_id, _) = shop.filled_cart().await;
    let body = checkout_body("tok_visa");
    let attempts = (0..4).map(|_| shop.checkout(&token, cart_id, Some("same"), &body));
    let results = futures::future::join_all(attempts).await;
    let mut orders = BTreeSet::new();
    for result in &results {
        match result {
            Ok(accepted) => {
                orders.insert(accepted.body.order_id);
            }
            Err(problem) => {
                problem.assert(StatusCode::CONFLICT, None);
            }
        }
    }
    assert_eq!(
        orders.len(),
        1,
        "every accepted attempt names one order: {results:?}"
    );
    // Whatever raced, a retry now replays the one order.
    let replay = shop
        .checkout(&token, cart_id, Some("same"), &body)
        .await
        .expect_ok();
    assert!(orders.contains(&replay.body.order_id));
    assert_eq!(shop.events::<CartCheckout>().await.len(), 1);
}

#[tokio::test]
async fn a_retry_after_the_lease_of_a_dead_request_continues_with_its_order_id() {
    let shop = Harness::with_order().await;
    let (customer_id, token, cart_id, _) = shop.filled_cart().await;
    let body = checkout_body("tok_visa");
    let address: ShippingAddress =
        serde_json::from_value(serde_json::to_value(&body.shipping_address).unwrap()).unwrap();
    let fingerprint = cart::domain::fingerprint(cart_id, "tok_visa", &address);
    let order_id = Uuid::now_v7();
    // A request that claimed the key and died; its lease still runs.
    sqlx::query(
        "insert into checkout_requests
             (customer_id, idempotency_key, cart_id, fingerprint, order_id, status, locked_until)
         values ($1, 'dead', $2, $3, $4, 'in_flight', now() + interval '1 hour')",
    )
    .bind(customer_id)
    .bind(cart_id)
    .bind(&fingerprint)
    .bind(order_id)
    .execute(&shop.db)
    .await
    .unwrap();
    let problem = shop
        .checkout(&token, cart_id, Some("dead"), &body)
        .await
        .expect_problem(StatusCode::CONFLICT, None);
    assert!(problem.headers.contains_key("retry-after"), "{problem}");

    // Once its lease ended, the retry proceeds with the order id it had chosen.
    sqlx::query("update checkout_requests set locked_until = now() - interval '1 second'")
        .execute(&shop.db)
        .await
        .unwrap();
    let accepted = shop
        .checkout(&token, cart_id, Some("dead"), &body)
        .await
        .expect_ok();
    assert_eq!(accepted.body.order_id, order_id);
}

#[tokio::test]
async fn lines_that_cannot_be_held_any_more_are_named_and_the_cart_stays_open() {
    // Reservations lapse after a second unless renewed.
    let shop = Harness::start_with(Options {
        with_order: true,
        reservation_ttl_secs: 1,
        ..Options::default()
    })
    .await;
    let (_, token, cart_id, mug) = shop.filled_cart().await;
    let last = shop.product(700, 1).await;
    shop.add(&token, cart_id, last.id, 1).await.expect_ok();
    // The customer dawdles; the reservation lapses and another customer takes the last one.
    let (_, other) = shop.customer();
    let other_cart = shop.open_cart(&other).await;
    eventually("the other customer to get the last one", WAIT, || async {
        shop.add(&other, other_cart, last.id, 1)
            .await
            .ok()
            .map(drop)
    })
    .await;

    let body = checkout_body("tok_visa");
    let problem = shop
        .checkout(&token, cart_id, Some("k"), &body)
        .await
        .expect_problem(StatusCode::CONFLICT, None);
    let lines = problem["lines"].as_array().expect("lines named");
    assert_eq!(lines.len(), 1, "{problem}");
    assert_eq!(lines[0]["product_id"], last.id.to_string());
    assert_eq!(lines[0]["available"], 0);
    assert_eq!(shop.cart(&token, cart_id).await.status, "open");
    assert!(shop.events::<CartCheckout>().await.is_empty());

    // Without the line, the same key and body go through.
    shop.client
        .remove_item(&token, cart_id, last.id)
        .await
        .expect_ok();
    shop.checkout(&token, cart_id, Some("k"), &body)
        .await
        .expect_ok();
    let checkouts = shop.events::<CartCheckout>().await;
    assert_eq!(checkouts.len(), 1);
    assert_eq!(checkouts[0].items.len(), 1);
    assert_eq!(checkouts[0].items[0].product_id, mug);
}

#[tokio::test]
async fn bad_checkout_input_is_problem_json_and_changes_nothing() {
    let shop = Harness::start().await;
    let (_, token, cart_id, _) = shop.filled_cart().await;
    let good = serde_json::to_value(checkout_body("tok_visa")).unwrap();
    let mut no_city = good.clone();
    no_city["shipping_address"]
        .as_object_mut()
        .unwrap()
        .remove("city");
    let mut bad_country = good.clone();
    bad_country["shipping_address"]["country"] = json!("Germany");
    let mut blank_name = good.clone();
    blank_name["shipping_address"]["name"] = json!("  ");
    let mut extra = good.clone();
    extra["coupon"] = json!("FREE");
    let cases: [(Value, Option<&str>, StatusCode, Option<&str>); 7] = [
        (good.clone(), None, StatusCode::BAD_REQUEST, None),
        (good.clone(), Some(""), StatusCode::BAD_REQUEST, None),
        (
            serde_json::to_value(checkout_body("")).unwrap(),
            Some("a"),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("payment_token"),
        ),
        (
            no_city,
            Some("b"),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("shipping_address.city"),
        ),
        (
            bad_country,
            Some("c"),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("shipping_address.country"),
        ),
        (
            blank_name,
            Some("d"),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("shipping_address.name"),
        ),
        (extra, Some("e"), StatusCode::UNPROCESSABLE_ENTITY, None),
    ];
    for (body, key, expected, field) in cases {
        shop.checkout(&token, cart_id, key, &body)
            .await
            .expect_problem(expected, field);
    }
    // No order service is running: the hand-off fails, the key is given back.
    for _ in 0..2 {
        shop.checkout(&token, cart_id, Some("f"), &good)
            .await
            .expect_problem(StatusCode::SERVICE_UNAVAILABLE, None);
    }

    // An empty cart cannot be checked out.
    let (_, other) = shop.customer();
    let empty = shop.open_cart(&other).await;
    shop.checkout(&other, empty, Some("g"), &good)
        .await
        .expect_problem(StatusCode::CONFLICT, None);

    assert_eq!(shop.cart(&token, cart_id).await.status, "open");
    assert!(shop.events::<CartCheckout>().await.is_empty());
    let stored: i64 =
        sqlx::query_scalar("select count(*) from checkout_requests where status = 'done'")
            .fetch_one(&shop.db)
            .await
            .unwrap();
    assert_eq!(stored, 0);
}

/// An order service that sheds load answers the payment hand-off with 503
/// `checkout-busy`, as one at its saga limit does.
async fn busy_order_service() -> String {
    use axum::routing::put;
    let app = axum::Router::new().route(
        "/api/internal/orders/{id}/payment-method",
        put(|| async {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [
                    ("content-type", "application/problem+json"),
                    ("retry-after", "1"),
                ],
                r#"{"type":"/problems/checkout-busy","title":"Checkout busy","status":503}"#,
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// While the saga is at its limit the checkout is shed: 503 `checkout-busy` with
/// Retry-After, the cart stays open with its lines, no event is written, and the key is
/// free again, so the same request can simply be sent again later.
#[tokio::test]
async fn a_checkout_while_the_saga_is_busy_is_a_503_with_retry_after_and_changes_nothing() {
    let shop = Harness::start_with(Options {
        order_url: Some(busy_order_service().await),
        ..Options::default()
    })
    .await;
    let (_, token, cart_id, _) = shop.filled_cart().await;
    let body = checkout_body("tok_visa");
    for _ in 0..2 {
        let problem = shop
            .checkout(&token, cart_id, Some("busy-1"), &body)
            .await
            .expect_problem(StatusCode::SERVICE_UNAVAILABLE, None);
        assert_eq!(problem.kind_name(), "checkout-busy", "{problem}");
        assert_eq!(problem.headers["retry-after"], "1");
    }
    let cart = shop.cart(&token, cart_id).await;
    assert_eq!(cart.status, "open");
    assert_eq!(cart.items.len(), 1);
    assert!(shop.events::<CartCheckout>().await.is_empty());
}

/// The vendor changes a line's price after it was added: the checkout is refused once
/// with 409 `prices-changed`, naming the line with its old and new price, and the cart
/// now shows the new price; the same request sent again checks out at it. A product
/// taken off sale meanwhile refuses the checkout, naming it. (The checkout charged the
/// refreshed price without a word, and sold a deactivated product that was in a cart,
/// since renewing a reservation never asks whether the product is still for sale.)
#[tokio::test]
async fn a_changed_price_is_shown_before_it_is_charged_and_an_off_sale_product_is_refused() {
    let shop = Harness::with_order().await;
    let (_, token) = shop.customer();
    let cart_id = shop.open_cart(&token).await;
    let mug = shop.product(1299, 10).await;
    shop.add(&token, cart_id, mug.id, 2).await.expect_ok();
    shop.change_product(&mug, json!({"price": {"amount": 1499, "currency": "EUR"}}))
        .await;

    let body = checkout_body("tok_visa");
    let problem = shop
        .checkout(&token, cart_id, Some("reprice-1"), &body)
        .await
        .expect_problem(StatusCode::CONFLICT, None);
    assert_eq!(problem.kind_name(), "prices-changed", "{problem}");
    let line = &problem["lines"][0];
    assert_eq!(line["product_id"], mug.id.to_string());
    assert_eq!(
        line["old_price"],
        json!({"amount": 1299, "currency": "EUR"})
    );
    assert_eq!(
        line["new_price"],
        json!({"amount": 1499, "currency": "EUR"})
    );
    let cart = shop.cart(&token, cart_id).await;
    assert_eq!(
        cart.items[0].unit_price,
        Money::new(1499, Currency::EUR),
        "{cart:?}"
    );

    shop.checkout(&token, cart_id, Some("reprice-1"), &body)
        .await
        .expect_ok();
    let cart = shop.cart(&token, cart_id).await;
    assert_eq!(cart.subtotal.amount(), 2 * 1499, "{cart:?}");

    // Another customer's cart holds a mug that is then taken off sale.
    let (_, token) = shop.customer();
    let cart_id = shop.open_cart(&token).await;
    shop.add(&token, cart_id, mug.id, 1).await.expect_ok();
    shop.change_product(&mug, json!({"active": false})).await;
    let problem = shop
        .checkout(
            &token,
            cart_id,
            Some("off-sale-1"),
            &checkout_body("tok_visa"),
        )
        .await
        .expect_problem(StatusCode::CONFLICT, None);
    assert_eq!(problem.kind_name(), "lines-unavailable", "{problem}");
    assert_eq!(problem["lines"][0]["product_id"], mug.id.to_string());
    assert_eq!(shop.cart(&token, cart_id).await.status, "open");
}

/// Holds the cart's row locked in a transaction of the test's, so that a checkout
/// stops at its final step (which locks the cart) until the test lets it go.
async fn hold_cart(
    shop: &Harness,
    cart_id: Uuid,
) -> (sqlx::Transaction<'static, sqlx::Postgres>, String) {
    let mut tx = shop.db.begin().await.unwrap();
    sqlx::query("select id from carts where id = $1 for update")
        .bind(cart_id)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let schema: String = sqlx::query_scalar("select current_schema()")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    (tx, schema)
}

/// Request A takes longer than its key's lease (held at its last step); the client
/// retries with the same key and body, B takes the key over and goes on too. Whichever
/// finishes first checks the cart out; the other finds the cart checked out with the
/// key's own order and answers the same 202. (The loser answered 409 cart-checked-out.)
#[tokio::test]
async fn a_retry_that_takes_over_a_slow_request_after_its_lease_gets_the_same_202() {
    let shop = std::sync::Arc::new(Harness::with_order().await);
    let (_, token, cart_id, _) = shop.filled_cart().await;
    let body = checkout_body("tok_visa");
    let (held, schema) = hold_cart(&shop, cart_id).await;

    let send = |shop: std::sync::Arc<Harness>, token: String, body: Checkout| {
        tokio::spawn(async move { shop.checkout(&token, cart_id, Some("slow"), &body).await })
    };
    let first = send(shop.clone(), token.clone(), body.clone());
    mp_test_support::pg::wait_until_sessions_blocked(&shop.db, &schema, 1).await;
    // A's lease runs out while it is still going.
    sqlx::query("update checkout_requests set locked_until = now() - interval '1 second'")
        .execute(&shop.db)
        .await
        .unwrap();
    let second = send(shop.clone(), token.clone(), body.clone());
    mp_test_support::pg::wait_until_sessions_blocked(&shop.db, &schema, 2).await;
    held.rollback().await.unwrap();

    let (a, b) = (first.await.unwrap(), second.await.unwrap());
    let (a, b) = (a.expect_ok(), b.expect_ok());
    assert_eq!(a.body.order_id, b.body.order_id, "one order");
    assert_eq!(shop.events::<CartCheckout>().await.len(), 1);
}

/// The cart is abandoned (idle) while a checkout re-reserves its lines; the checkout
/// then finds it abandoned and gives back what it just reserved, instead of holding
/// the stock for the reservation's TTL.
#[tokio::test]
async fn a_checkout_that_loses_to_abandonment_gives_its_reservations_back() {
    let shop = std::sync::Arc::new(Harness::with_order().await);
    let (_, token, cart_id, mug) = shop.filled_cart().await;
    let (mut held, schema) = hold_cart(&shop, cart_id).await;
    let checkout = {
        let shop = shop.clone();
        tokio::spawn(async move {
            shop.checkout(&token, cart_id, Some("late"), &checkout_body("tok_visa"))
                .await
        })
    };
    mp_test_support::pg::wait_until_sessions_blocked(&shop.db, &schema, 1).await;
    // What the idle-cart worker does (its own releases came before the checkout's
    // re-reservation, so they no longer count).
    sqlx::query("update carts set status = 'abandoned', abandoned_at = now() where id = $1")
        .bind(cart_id)
        .execute(&mut *held)
        .await
        .unwrap();
    held.commit().await.unwrap();

    let problem = checkout
        .await
        .unwrap()
        .expect_problem(StatusCode::CONFLICT, None);
    assert_eq!(problem.kind_name(), "cart-abandoned", "{problem}");
    eventually("the re-reserved stock given back", WAIT, || async {
        (shop.stock(mug).await["reserved"] == 0).then_some(())
    })
    .await;
}

/// An add raises the line's reservation at inventory (2 to 5), then finds the cart
/// checked out at its last step: it puts the reservation back to the 2 the order took
/// (only if no later change stands). (It kept holding 5 until the order's commit or
/// the TTL.)
#[tokio::test]
async fn an_add_that_loses_the_race_with_checkout_undoes_its_reservation() {
    let shop = std::sync::Arc::new(Harness::start().await);
    let (_, token, cart_id, mug) = shop.filled_cart().await;
    let (mut held, schema) = hold_cart(&shop, cart_id).await;
    let add = {
        let shop = shop.clone();
        tokio::spawn(async move { shop.add(&token, cart_id, mug, 3).await })
    };
    mp_test_support::pg::wait_until_sessions_blocked(&shop.db, &schema, 1).await;
    assert_eq!(
        shop.stock(mug).await["reserved"],
        5,
        "the add reserved its total"
    );
    // The checkout's last step, as it commits.
    sqlx::query(
        "update carts set status = 'checked_out', order_id = $2, checked_out_at = now()
         where id = $1",
    )
    .bind(cart_id)
    .bind(Uuid::now_v7())
    .execute(&mut *held)
    .await
    .unwrap();
    held.commit().await.unwrap();

    let problem = add
        .await
        .unwrap()
        .expect_problem(StatusCode::CONFLICT, None);
    assert_eq!(problem.kind_name(), "cart-checked-out", "{problem}");
    eventually("the reservation back to the line's 2", WAIT, || async {
        (shop.stock(mug).await["reserved"] == 2).then_some(())
    })
    .await;
}
