//! Carts and their items: ownership, reservations at inventory, shortages, prices, bad
//! input and idle carts.

use cart::events::PriceRefresh;
use mp_events::catalog::{CartCreated, CartItemAdded, CartItemRemoved, VendorProductUpdated};
use mp_events::{Currency, Envelope, EventHandler, Money, Service};
use mp_test_support::api::assert_problem;
use mp_test_support::clients::Expect;
use mp_test_support::eventually;
use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

use crate::harness::{Harness, Options, WAIT};

#[tokio::test]
async fn a_customer_has_one_open_cart_that_only_they_and_admins_see() {
    let shop = Harness::start().await;
    let (customer_id, token) = shop.customer();
    let opened = shop.client.open(&token).await.expect_ok();
    assert_eq!(opened.status, StatusCode::CREATED);
    let cart = opened.body;
    assert_eq!(cart.status, "open");
    assert_eq!(cart.customer_id, customer_id);
    assert!(cart.items.is_empty());
    assert_eq!(cart.total, Money::new(0, Currency::EUR));
    let again = shop.client.open(&token).await.expect_ok();
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(
        again.body.id, cart.id,
        "the open cart is returned, not a second one"
    );
    let id = cart.id;

    let product = shop.product(1299, 10).await;
    let (_, stranger) = shop.customer();
    for (method, path, body) in [
        (Method::GET, format!("/api/carts/{id}"), None),
        (
            Method::POST,
            format!("/api/carts/{id}/items"),
            Some(json!({"product_id": product.id, "quantity": 1})),
        ),
        (
            Method::PATCH,
            format!("/api/carts/{id}/items/{}", product.id),
            Some(json!({"quantity": 1})),
        ),
        (
            Method::DELETE,
            format!("/api/carts/{id}/items/{}", product.id),
            None,
        ),
    ] {
        let (status, body) = shop
            .client
            .0
            .call(method.clone(), &path, Some(&stranger), body)
            .await;
        assert_problem(status, &body, StatusCode::NOT_FOUND, None);
    }
    assert_eq!(
        shop.reserved(product.id).await,
        0,
        "a stranger reserved nothing"
    );
    shop.checkout(
        &stranger,
        id,
        Some("k1"),
        &crate::harness::checkout_body("tok_visa"),
    )
    .await
    .expect_problem(StatusCode::NOT_FOUND, None);

    let admin = shop.tokens.admin();
    assert_eq!(shop.cart(&admin, id).await.id, cart.id);
    shop.client
        .get(None, id)
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, None);

    let created = shop.events::<CartCreated>().await;
    assert_eq!(created.len(), 1, "one cart, one cart.created");
    assert_eq!(created[0].cart_id, cart.id);
}

#[tokio::test]
async fn adding_changing_and_removing_items_reserve_and_release_at_inventory() {
    let shop = Harness::start().await;
    let (_, token) = shop.customer();
    let cart_id = shop.open_cart(&token).await;
    let mug = shop.product(1299, 10).await;
    let plate = shop.product(500, 10).await;

    let cart = shop.add(&token, cart_id, mug.id, 2).await.expect_ok();
    let line = &cart.items[0];
    assert_eq!(line.product_id, mug.id);
    assert_eq!(line.vendor_id, mug.vendor_id);
    assert!(line.name.starts_with("Mug "), "{line:?}");
    assert_eq!(line.quantity, 2);
    assert_eq!(line.unit_price, Money::new(1299, Currency::EUR));
    assert_eq!(line.line_total, Money::new(2598, Currency::EUR));
    assert!(!line.price_changed);
    assert_eq!(shop.reserved(mug.id).await, 2);

    // Adding the same product adds to its line.
    let cart = shop.add(&token, cart_id, mug.id, 1).await.expect_ok();
    assert_eq!(cart.items.len(), 1);
    assert_eq!(cart.items[0].quantity, 3);
    assert_eq!(shop.reserved(mug.id).await, 3);

    let cart = shop.add(&token, cart_id, plate.id, 1).await.expect_ok();
    // 3 x 12.99 + 5.00 = 43.97; tax 20 % = 8.794, half up 8.79; total 52.76.
    assert_eq!(cart.subtotal, Money::new(4397, Currency::EUR));
    assert_eq!(cart.tax, Money::new(879, Currency::EUR));
    assert_eq!(cart.total, Money::new(5276, Currency::EUR));
    // Activity extends the other lines' reservations: adding the plate renewed the mug's.
    let renewed: i64 = sqlx::query_scalar(
        "select generation from cart_items where cart_id = $1 and product_id = $2",
    )
    .bind(cart_id)
    .bind(mug.id)
    .fetch_one(&shop.db)
    .await
    .unwrap();
    let plate_added = shop.events::<CartItemAdded>().await[2].generation;
    assert!(
        renewed > plate_added,
        "renewed at {renewed}, plate at {plate_added}"
    );

    let cart = shop
        .client
        .set_quantity(&token, cart_id, mug.id, 1)
        .await
        .expect_ok();
    assert_eq!(cart.line(mug.id).unwrap().quantity, 1);
    assert_eq!(
        shop.reserved(mug.id).await,
        1,
        "the difference was released"
    );

    let cart = shop
        .client
        .remove_item(&token, cart_id, mug.id)
        .await
        .expect_ok();
    assert_eq!(cart.items.len(), 1);
    assert_eq!(cart.items[0].product_id, plate.id);
    assert_eq!(
        shop.reserved(mug.id).await,
        0,
        "the removed line was released"
    );
    assert_eq!(shop.reserved(plate.id).await, 1);

    let added = shop.events::<CartItemAdded>().await;
    let quantities: Vec<_> = added.iter().map(|e| (e.product_id, e.quantity)).collect();
    assert_eq!(
        quantities,
        [(mug.id, 2), (mug.id, 3), (plate.id, 1), (mug.id, 1)]
    );
    let removed = shop.events::<CartItemRemoved>().await;
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].product_id, mug.id);
    assert_eq!(removed[0].cart_id, cart_id);
    // Each change carries the generation of the reservation it made, growing; the
    // removal names the last one the line held (the PATCH's).
    let generations: Vec<i64> = added.iter().map(|e| e.generation).collect();
    assert!(generations[0] > 0, "{generations:?}");
    assert!(
        generations.windows(2).all(|w| w[0] < w[1]),
        "{generations:?}"
    );
    assert_eq!(removed[0].generation, generations[3]);
}

#[tokio::test]
async fn a_shortage_is_a_409_with_the_available_quantity_and_changes_nothing() {
    let shop = Harness::start().await;
    let (_, token) = shop.customer();
    let cart_id = shop.open_cart(&token).await;
    let mug = shop.product(1299, 5).await;

    let problem = shop
        .add(&token, cart_id, mug.id, 6)
        .await
        .expect_problem(StatusCode::CONFLICT, None);
    assert_eq!(problem["available"], 5, "{problem}");
    assert!(shop.cart(&token, cart_id).await.items.is_empty());
    assert_eq!(shop.reserved(mug.id).await, 0);

    // Another customer holds 4: only 1 is left for this cart.
    let (_, other) = shop.customer();
    let other_cart = shop.open_cart(&other).await;
    shop.add(&other, other_cart, mug.id, 4).await.expect_ok();
    let problem = shop
        .add(&token, cart_id, mug.id, 2)
        .await
        .expect_problem(StatusCode::CONFLICT, None);
    assert_eq!(problem["available"], 1, "{problem}");

    // A PATCH beyond the stock keeps the line as it was.
    shop.add(&token, cart_id, mug.id, 1).await.expect_ok();
    let problem = shop
        .client
        .set_quantity(&token, cart_id, mug.id, 3)
        .await
        .expect_problem(StatusCode::CONFLICT, None);
    assert_eq!(problem["available"], 1, "{problem}");
    assert_eq!(shop.cart(&token, cart_id).await.items[0].quantity, 1);
    assert_eq!(shop.reserved(mug.id).await, 5);
}

#[tokio::test]
async fn bad_input_on_every_endpoint_is_problem_json_and_changes_nothing() {
    let shop = Harness::start().await;
    let (_, token) = shop.customer();
    let cart_id = shop.open_cart(&token).await;
    let mug = shop.product(1299, 10).await;
    shop.add(&token, cart_id, mug.id, 2).await.expect_ok();
    let before = shop.cart(&token, cart_id).await;
    let outbox_before = shop.outbox().await.len();

    let items = format!("/api/carts/{cart_id}/items");
    let line = format!("/api/carts/{cart_id}/items/{}", mug.id);
    let cases = [
        (
            Method::POST,
            items.clone(),
            json!({"product_id": mug.id, "quantity": 0}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("quantity"),
        ),
        (
            Method::POST,
            items.clone(),
            json!({"product_id": mug.id, "quantity": 1000}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("quantity"),
        ),
        // The line holds 2: 998 more is a valid quantity the line cannot take.
        (
            Method::POST,
            items.clone(),
            json!({"product_id": mug.id, "quantity": 998}),
            StatusCode::CONFLICT,
            None,
        ),
        (
            Method::POST,
            items.clone(),
            json!({"product_id": "mug", "quantity": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("product_id"),
        ),
        (
            Method::POST,
            items.clone(),
            json!({"quantity": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("product_id"),
        ),
        (
            Method::POST,
            items.clone(),
            json!({"product_id": Uuid::now_v7(), "quantity": 1}),
            StatusCode::NOT_FOUND,
            None,
        ),
        (
            Method::POST,
            items.clone(),
            json!({"product_id": mug.id, "quantity": 1, "price": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("price"),
        ),
        (
            Method::PATCH,
            line.clone(),
            json!({"quantity": -1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("quantity"),
        ),
        (
            Method::PATCH,
            line.clone(),
            json!({"quantity": "two"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("quantity"),
        ),
        (
            Method::PATCH,
            format!("/api/carts/{cart_id}/items/{}", Uuid::now_v7()),
            json!({"quantity": 1}),
            StatusCode::NOT_FOUND,
            None,
        ),
        (
            Method::DELETE,
            format!("/api/carts/{cart_id}/items/{}", Uuid::now_v7()),
            json!(null),
            StatusCode::NOT_FOUND,
            None,
        ),
        (
            Method::GET,
            "/api/carts/not-a-uuid".to_owned(),
            json!(null),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            Method::GET,
            format!("/api/carts/{}", Uuid::now_v7()),
            json!(null),
            StatusCode::NOT_FOUND,
            None,
        ),
    ];
    for (method, path, body, expected, field) in cases {
        let body = (!body.is_null()).then_some(body);
        let (status, problem) = shop
            .client
            .0
            .call(method.clone(), &path, Some(&token), body)
            .await;
        assert_problem(status, &problem, expected, field);
    }
    // Malformed JSON and a body that is not JSON.
    for (content_type, raw, expected) in [
        (
            "application/json",
            "{\"quantity\": ",
            StatusCode::BAD_REQUEST,
        ),
        (
            "text/plain",
            "quantity=1",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
    ] {
        let (status, answered, _) = shop
            .client
            .0
            .call_text(Method::PATCH, &line, Some(&token), content_type, raw)
            .await;
        assert_eq!(status, expected);
        assert_eq!(answered, "application/problem+json");
    }
    assert_eq!(shop.cart(&token, cart_id).await.items, before.items);
    assert_eq!(shop.reserved(mug.id).await, 2);
    assert_eq!(
        shop.outbox().await.len(),
        outbox_before,
        "no event for a refused request"
    );
}

#[tokio::test]
async fn a_price_change_reaches_open_carts_and_the_line_says_so() {
    let shop = Harness::start().await;
    let (_, token) = shop.customer();
    let cart_id = shop.open_cart(&token).await;
    let mug = shop.product(1299, 10).await;
    shop.add(&token, cart_id, mug.id, 2).await.expect_ok();

    shop.change_product(&mug, json!({"price": {"amount": 999, "currency": "EUR"}}))
        .await;

    let cart = eventually("the new price in the cart", WAIT, || async {
        let cart = shop.cart(&token, cart_id).await;
        (cart.items[0].unit_price.amount() == 999).then_some(cart)
    })
    .await;
    let item = &cart.items[0];
    assert!(item.price_changed);
    assert_eq!(item.added_price, Money::new(1299, Currency::EUR));
    assert_eq!(item.line_total, Money::new(1998, Currency::EUR));
    assert_eq!(cart.subtotal.amount(), 1998);
    assert_eq!(cart.tax.amount(), 400, "19.98 * 20 % = 3.996, half up");

    // Adding more keeps the price it has now and the price it was added at.
    let cart = shop.add(&token, cart_id, mug.id, 1).await.expect_ok();
    assert_eq!(cart.items[0].unit_price.amount(), 999);
    assert_eq!(cart.items[0].added_price.amount(), 1299);

    // A product taken off sale cannot be added.
    shop.change_product(&mug, json!({"active": false})).await;
    let refused = eventually("the catalog to show it inactive", WAIT, || async {
        shop.add(&token, cart_id, mug.id, 1)
            .await
            .err()
            .filter(|p| p.status == StatusCode::CONFLICT)
    })
    .await;
    assert_eq!(refused.kind_name(), "product-inactive", "{refused}");
    assert_eq!(shop.cart(&token, cart_id).await.items[0].quantity, 3);
}

#[tokio::test]
async fn an_idle_cart_is_abandoned_and_its_reservations_released() {
    let shop = Harness::start_with(Options {
        idle_secs: 60,
        ..Options::default()
    })
    .await;
    let mug = shop.product(1299, 10).await;
    let (_, token) = shop.customer();
    let cart_id = shop.open_cart(&token).await;
    shop.add(&token, cart_id, mug.id, 3).await.expect_ok();
    let (_, other) = shop.customer();
    let busy_cart = shop.open_cart(&other).await;
    shop.add(&other, busy_cart, mug.id, 1).await.expect_ok();
    assert_eq!(shop.reserved(mug.id).await, 4);

    // The first customer's last change was two minutes ago.
    sqlx::query("update carts set last_activity_at = now() - interval '2 minutes' where id = $1")
        .bind(cart_id)
        .execute(&shop.db)
        .await
        .unwrap();
    eventually("the cart to be abandoned", WAIT, || async {
        (shop.cart(&token, cart_id).await.status == "abandoned").then_some(())
    })
    .await;
    eventually("its reservation released", WAIT, || async {
        (shop.reserved(mug.id).await == 1).then_some(())
    })
    .await;
    let busy = shop.cart(&other, busy_cart).await;
    assert_eq!(busy.status, "open", "a cart in use stays open");
    let removed = shop.events::<CartItemRemoved>().await;
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].product_id, mug.id);

    let problem = shop
        .add(&token, cart_id, mug.id, 1)
        .await
        .expect_problem(StatusCode::CONFLICT, None);
    assert_eq!(problem["cart_status"], "abandoned");
    assert_eq!(
        shop.reserved(mug.id).await,
        1,
        "an abandoned cart takes no items"
    );
    // The customer starts over with a new cart.
    let fresh = shop.client.open(&token).await.expect_ok();
    assert_eq!(fresh.status, StatusCode::CREATED);
    assert_ne!(fresh.body.id, cart_id);
}

#[tokio::test]
async fn price_updates_apply_by_product_revision_never_by_arrival() {
    let shop = Harness::start().await;
    let mug = shop.product(1299, 10).await;
    let (_, token) = shop.customer();
    let cart_id = shop.open_cart(&token).await;
    shop.add(&token, cart_id, mug.id, 1).await.expect_ok();
    let update = |revision: i64, price: Money| {
        Envelope::new(
            Service::Vendor,
            VendorProductUpdated {
                product_id: mug.id,
                vendor_id: mug.vendor_id,
                sku: "MUG".into(),
                name: format!("Mug, revision {revision}"),
                price,
                active: true,
                low_stock_threshold: 0,
                revision,
            },
        )
    };
    let mut conn = shop.db.acquire().await.unwrap();
    // Revision 3 arrives before revision 2.
    for envelope in [
        update(3, Money::new(800, Currency::EUR)),
        update(2, Money::new(900, Currency::EUR)),
    ] {
        PriceRefresh.handle(&mut conn, &envelope).await.unwrap();
    }
    let cart = shop.cart(&token, cart_id).await;
    let line = &cart.items[0];
    assert_eq!(line.unit_price.amount(), 800, "{line:?}");
    assert_eq!(line.name, "Mug, revision 3");
    assert!(line.price_changed);
    assert_eq!(line.added_price.amount(), 1299);

    // A price in another currency cannot apply to a EUR cart; the name still does.
    PriceRefresh
        .handle(&mut conn, &update(4, Money::new(700, Currency::USD)))
        .await
        .unwrap();
    let cart = shop.cart(&token, cart_id).await;
    assert_eq!(cart.items[0].unit_price, Money::new(800, Currency::EUR));
    assert_eq!(cart.items[0].name, "Mug, revision 4");
}

#[tokio::test]
async fn concurrent_opens_give_one_cart() {
    let shop = Harness::start().await;
    let (_, token) = shop.customer();
    let opens = (0..4).map(|_| shop.client.open(&token));
    let results: Vec<_> = futures::future::join_all(opens)
        .await
        .into_iter()
        .map(Expect::expect_ok)
        .collect();
    let created = results
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .count();
    assert_eq!(created, 1, "{results:?}");
    assert!(results.iter().all(|r| r.body.id == results[0].body.id));
    assert_eq!(shop.events::<CartCreated>().await.len(), 1);
}

#[tokio::test]
async fn concurrent_changes_of_one_line_leave_cart_and_inventory_agreeing() {
    let shop = Harness::start().await;
    let mug = shop.product(1299, 100).await;
    let (_, token) = shop.customer();
    let cart_id = shop.open_cart(&token).await;

    let adds = (0..4).map(|_| shop.add(&token, cart_id, mug.id, 1));
    let results = futures::future::join_all(adds).await;
    let added = results.iter().filter(|r| r.is_ok()).count() as i64;
    for problem in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(problem.status, StatusCode::CONFLICT, "{problem}");
    }
    assert!(added >= 1);
    assert_eq!(
        shop.cart(&token, cart_id).await.items[0].quantity,
        added,
        "every accepted add counted once"
    );
    assert_eq!(shop.reserved(mug.id).await, added);

    let patches =
        [3, 7, 5, 9].map(|quantity| shop.client.set_quantity(&token, cart_id, mug.id, quantity));
    let mut accepted = Vec::new();
    for result in futures::future::join_all(patches).await {
        match result {
            Ok(cart) => accepted.push(cart),
            // Changes that kept meeting newer ones give up and say so.
            Err(problem) => {
                problem.assert(StatusCode::CONFLICT, None);
                assert_eq!(problem.kind_name(), "concurrent-change", "{problem}");
            }
        }
    }
    assert!(!accepted.is_empty());
    let cart = shop.cart(&token, cart_id).await;
    let quantity = cart.items[0].quantity;
    assert!([3, 7, 5, 9].contains(&quantity), "{cart:?}");
    assert_eq!(
        shop.reserved(mug.id).await,
        quantity,
        "inventory holds what the cart shows"
    );
}

#[tokio::test]
async fn an_unreachable_inventory_is_a_503_and_changes_nothing() {
    let shop = Harness::start_with(Options {
        inventory_unreachable: true,
        ..Options::default()
    })
    .await;
    let mug = shop.product(1299, 10).await;
    let (_, token) = shop.customer();
    let cart_id = shop.open_cart(&token).await;
    shop.add(&token, cart_id, mug.id, 1)
        .await
        .expect_problem(StatusCode::SERVICE_UNAVAILABLE, None);
    assert!(shop.cart(&token, cart_id).await.items.is_empty());
    assert!(shop.events::<CartItemAdded>().await.is_empty());
    assert_eq!(shop.reserved(mug.id).await, 0);
}
