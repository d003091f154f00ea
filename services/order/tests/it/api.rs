//! Reading, cancelling, shipping and delivering orders; who may do what; the payment
//! method hand-off; bad input everywhere.

use mp_events::Service;
use mp_events::catalog::{OrderShipped, OrderStatus, OrderUpdated};
use mp_test_support::clients::order::{Order, OrderSummary, Ship};
use mp_test_support::clients::{ApiResult, Expect, Page};
use mp_test_support::eventually;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{Checkout, Harness, WAIT};

async fn confirmed_order(h: &Harness, lines: &[(Uuid, Uuid, i64)]) -> Checkout {
    let c = h.checkout(lines, "tok_visa").await;
    h.wait_status(&c, "confirmed").await;
    c
}

async fn ship(h: &Harness, c: &Checkout, token: &str, ship: Ship) -> ApiResult<Order> {
    h.client().ship(token, c.order_id, &ship).await
}

#[tokio::test]
async fn cancelling_a_confirmed_order_refunds_it_and_returns_the_stock() {
    let h = Harness::start().await;
    let vendor = Uuid::now_v7();
    let product = h.product(vendor, 10).await;
    let c = confirmed_order(&h, &[(product, vendor, 4)]).await;
    assert_eq!(h.on_hand(product).await, 6);

    let body = h
        .client()
        .cancel(&h.tokens.customer(c.customer_id), c.order_id)
        .await
        .expect_ok();
    assert_eq!(body.status, "cancelled");
    let order = h.wait_settled(&c).await;
    assert_eq!(
        order.statuses(),
        ["pending", "paid", "confirmed", "cancelled"]
    );
    assert_eq!(
        order.status_history[3].by,
        format!("customer:{}", c.customer_id)
    );
    assert_eq!(h.successful(c.order_id, "refund").await, 1);
    eventually("the stock to come back", WAIT, || async {
        (h.on_hand(product).await == 10).then_some(())
    })
    .await;
    assert_eq!(
        h.movements(c.order_id).await,
        [("order".to_owned(), -4), ("order_release".to_owned(), 4)],
        "the ledger records the return"
    );

    // Cancelled is final.
    let body = h
        .client()
        .cancel(&h.tokens.customer(c.customer_id), c.order_id)
        .await
        .expect_problem(StatusCode::CONFLICT, None);
    assert_eq!(body["order_status"], "cancelled");
}

#[tokio::test]
async fn a_two_vendor_order_ships_per_vendor_and_only_then_can_be_delivered() {
    let h = Harness::start().await;
    let (v1, v2) = (Uuid::now_v7(), Uuid::now_v7());
    let (p1, p2) = (h.product(v1, 5).await, h.product(v2, 5).await);
    let c = confirmed_order(&h, &[(p1, v1, 1), (p2, v2, 2)]).await;
    let (m1, m2) = (h.tokens.member_of(v1), h.tokens.member_of(v2));

    // A vendor member sees only its own lines.
    let seen = h.client().get(&m1, c.order_id).await.expect_ok();
    assert_eq!(seen.items.len(), 1);
    assert_eq!(seen.items[0].vendor_id, v1);
    assert_eq!(seen.total.amount(), 1999);
    assert!(seen.payments.is_empty());

    let body = ship(&h, &c, &m1, Ship::new("DHL", "A1")).await.expect_ok();
    assert_eq!(body.status, "confirmed", "one vendor still has to ship");
    ship(&h, &c, &m1, Ship::new("DHL", "A2"))
        .await
        .expect_problem(StatusCode::CONFLICT, None); // a vendor ships once
    h.client()
        .deliver(&m1, c.order_id)
        .await
        .expect_problem(StatusCode::CONFLICT, None); // not shipped yet
    // Part of it has shipped.
    h.client()
        .cancel(&h.tokens.customer(c.customer_id), c.order_id)
        .await
        .expect_problem(StatusCode::CONFLICT, None);

    let body = ship(&h, &c, &m2, Ship::new("UPS", "B1")).await.expect_ok();
    assert_eq!(body.status, "shipped");
    let shipped = h.events::<OrderShipped>(c.order_id).await;
    assert_eq!(shipped.len(), 2);
    assert_eq!(shipped[0].vendor_id, v1);
    assert!(!shipped[0].order_shipped, "the first of two vendors ships");
    assert!(shipped[1].order_shipped, "the last one ships the order");
    assert_eq!(shipped[1].items.len(), 1);
    assert_eq!(shipped[1].tracking_number, "B1");

    let body = h
        .client()
        .cancel(&h.tokens.customer(c.customer_id), c.order_id)
        .await
        .expect_problem(StatusCode::CONFLICT, None);
    assert_eq!(body["order_status"], "shipped");
    assert_eq!(body["allowed"], json!(["delivered"]));

    let body = h.client().deliver(&m2, c.order_id).await.expect_ok();
    assert_eq!(body.status, "delivered");
    let order = h.read(&c).await;
    assert_eq!(
        order.statuses(),
        ["pending", "paid", "confirmed", "shipped", "delivered"]
    );
    assert_eq!(order.shipments.len(), 2);
}

#[tokio::test]
async fn only_the_customer_their_vendors_and_admins_read_cancel_and_ship() {
    let h = Harness::start().await;
    let vendor = Uuid::now_v7();
    let product = h.product(vendor, 5).await;
    let c = confirmed_order(&h, &[(product, vendor, 1)]).await;
    let path = format!("/api/orders/{}", c.order_id);
    let stranger = h.tokens.customer(Uuid::now_v7());
    let other_vendor = h.tokens.member_of(Uuid::now_v7());
    let member = h.tokens.member_of(vendor);
    let customer = h.tokens.customer(c.customer_id);

    let (status, _) = h.api().call(Method::GET, &path, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    for token in [&stranger, &other_vendor] {
        h.client()
            .get(token, c.order_id)
            .await
            .expect_problem(StatusCode::NOT_FOUND, None);
        h.client()
            .cancel(token, c.order_id)
            .await
            .expect_problem(StatusCode::NOT_FOUND, None);
        ship(&h, &c, token, Ship::new("DHL", "X"))
            .await
            .expect_problem(StatusCode::NOT_FOUND, None);
    }
    h.client()
        .get(&h.tokens.admin(), c.order_id)
        .await
        .expect_ok();
    // The vendor does not cancel; the customer does not ship or deliver.
    h.client()
        .cancel(&member, c.order_id)
        .await
        .expect_problem(StatusCode::FORBIDDEN, None);
    ship(&h, &c, &customer, Ship::new("DHL", "X"))
        .await
        .expect_problem(StatusCode::FORBIDDEN, None);
    h.client()
        .deliver(&customer, c.order_id)
        .await
        .expect_problem(StatusCode::FORBIDDEN, None);
    // A member naming a vendor it does not belong to; an admin naming one with no lines.
    ship(
        &h,
        &c,
        &member,
        Ship::new("DHL", "X").for_vendor(Uuid::now_v7()),
    )
    .await
    .expect_problem(StatusCode::FORBIDDEN, None);
    ship(
        &h,
        &c,
        &h.tokens.admin(),
        Ship::new("DHL", "X").for_vendor(Uuid::now_v7()),
    )
    .await
    .expect_problem(StatusCode::NOT_FOUND, None); // a vendor with no lines in the order
    // An admin ships on the vendor's behalf; the 201 names the order.
    let resp = h
        .http
        .post(h.url(&format!("/api/orders/{}/ship", c.order_id)))
        .bearer_auth(h.tokens.admin())
        .json(&Ship::new("DHL", "X").for_vendor(vendor))
        .send()
        .await
        .expect("request sent");
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(
        resp.headers()["location"],
        format!("/api/orders/{}", c.order_id).as_str()
    );
    let body: Order = resp.json().await.expect("an order");
    assert_eq!(body.status, "shipped");
    assert_eq!(body.shipments[0].carrier, "DHL");
    assert_eq!(h.read(&c).await.status, "shipped");
}

#[tokio::test]
async fn lists_show_own_orders_vendor_orders_and_all_to_admins_page_by_page() {
    let h = Harness::start().await;
    let (v1, v2) = (Uuid::now_v7(), Uuid::now_v7());
    let (p1, p2) = (h.product(v1, 50).await, h.product(v2, 50).await);
    let a = confirmed_order(&h, &[(p1, v1, 1), (p2, v2, 1)]).await;
    let b = confirmed_order(&h, &[(p2, v2, 1)]).await;
    let declined = h.checkout(&[(p1, v1, 1)], "tok_declined").await;
    h.wait_status(&declined, "payment_failed").await;

    let ids =
        |page: &Page<OrderSummary>| -> Vec<Uuid> { page.items.iter().map(|o| o.id).collect() };
    let list = |token: String, query: String| {
        let h = &h;
        async move { h.client().list(&token, &query).await.expect_ok() }
    };
    let own = list(h.tokens.customer(a.customer_id), String::new()).await;
    assert_eq!(ids(&own), [a.order_id]);
    assert_eq!(own.items[0].items.len(), 2);

    let vendor1 = list(h.tokens.member_of(v1), String::new()).await;
    assert_eq!(ids(&vendor1), [declined.order_id, a.order_id]);
    assert_eq!(vendor1.items[1].items.len(), 1, "only its lines");
    assert_eq!(vendor1.items[1].total.amount(), 1999);
    let vendor2 = list(h.tokens.member_of(v2), "?status=confirmed".into()).await;
    assert_eq!(ids(&vendor2), [b.order_id, a.order_id]);

    let admin = h.tokens.admin();
    let first = list(admin.clone(), "?limit=2".into()).await;
    assert_eq!(ids(&first), [declined.order_id, b.order_id]);
    let cursor = first.next_cursor.expect("a next page");
    let rest = list(admin.clone(), format!("?limit=2&cursor={cursor}")).await;
    assert_eq!(ids(&rest), [a.order_id]);
    assert!(rest.next_cursor.is_none());
    let failed = list(admin, "?status=payment_failed".into()).await;
    assert_eq!(ids(&failed), [declined.order_id]);
}

#[tokio::test]
async fn the_payment_method_hand_off_is_for_the_cart_only_and_keeps_the_first_token() {
    let h = Harness::start_with(crate::harness::settings(), false).await;
    let c = h.checkout_event(&[(Uuid::now_v7(), Uuid::now_v7(), 1)]);
    h.put_payment_method(&c, "tok_visa").await.expect_ok();
    // The same token again is stored already; another one is refused.
    h.put_payment_method(&c, "tok_visa").await.expect_ok();
    h.put_payment_method(&c, "tok_declined")
        .await
        .expect_problem(StatusCode::CONFLICT, None);

    let path = format!("/api/internal/orders/{}/payment-method", c.order_id);
    let body =
        json!({"customer_id": c.customer_id, "cart_id": c.cart_id, "payment_token": "tok_visa"});
    let (status, _) = h
        .api()
        .call(
            Method::PUT,
            &path,
            Some(&h.tokens.service(Service::Inventory, Service::Order)),
            Some(body.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The cart's own token, but minted for inventory: the order service refuses it
    // (a service that received it cannot replay it elsewhere).
    let for_inventory = h.tokens.service(Service::Cart, Service::Inventory);
    let (status, _) = h
        .api()
        .call(Method::PUT, &path, Some(&for_inventory), Some(body.clone()))
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a token for another service"
    );
    let (status, _) = h
        .api()
        .call(
            Method::PUT,
            &path,
            Some(&h.tokens.customer(c.customer_id)),
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let stored: Vec<String> = sqlx::query_scalar("select payment_token from payment_methods")
        .fetch_all(&h.db)
        .await
        .unwrap();
    assert_eq!(stored, ["tok_visa"]);
}

#[tokio::test]
async fn bad_input_on_every_endpoint_is_a_problem_and_changes_nothing() {
    let h = Harness::start().await;
    let vendor = Uuid::now_v7();
    let product = h.product(vendor, 5).await;
    let c = confirmed_order(&h, &[(product, vendor, 1)]).await;
    let member = h.tokens.member_of(vendor);
    let admin = h.tokens.admin();
    let cart = h.tokens.service(Service::Cart, Service::Order);
    let order = format!("/api/orders/{}", c.order_id);
    let pm = format!("/api/internal/orders/{}/payment-method", Uuid::now_v7());

    // (method, path, token, body, expected status, a field the problem names)
    type Case<'a> = (Method, String, &'a str, Option<Value>, StatusCode, &'a str);
    let cases: Vec<Case> = vec![
        (
            Method::GET,
            "/api/orders?limit=0".into(),
            &admin,
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "limit",
        ),
        (
            Method::GET,
            "/api/orders?limit=1000".into(),
            &admin,
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "limit",
        ),
        (
            Method::GET,
            "/api/orders?cursor=nope".into(),
            &admin,
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "cursor",
        ),
        (
            Method::GET,
            "/api/orders?status=lost".into(),
            &admin,
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "status",
        ),
        (
            Method::GET,
            "/api/orders?limit=x".into(),
            &admin,
            None,
            StatusCode::BAD_REQUEST,
            "",
        ),
        (
            Method::GET,
            "/api/orders/not-a-uuid".into(),
            &admin,
            None,
            StatusCode::BAD_REQUEST,
            "",
        ),
        (
            Method::GET,
            format!("/api/orders/{}", Uuid::now_v7()),
            &admin,
            None,
            StatusCode::NOT_FOUND,
            "",
        ),
        (
            Method::POST,
            "/api/orders/not-a-uuid/cancel".into(),
            &admin,
            None,
            StatusCode::BAD_REQUEST,
            "",
        ),
        (
            Method::POST,
            format!("/api/orders/{}/cancel", Uuid::now_v7()),
            &admin,
            None,
            StatusCode::NOT_FOUND,
            "",
        ),
        (
            Method::POST,
            format!("{order}/ship"),
            &member,
            Some(json!({"carrier": "", "tracking_number": "  "})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "tracking_number",
        ),
        (
            Method::POST,
            format!("{order}/ship"),
            &member,
            Some(json!({"carrier": "x".repeat(101), "tracking_number": "T"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "carrier",
        ),
        (
            Method::POST,
            format!("{order}/ship"),
            &member,
            Some(json!({"carrier": " DHL", "tracking_number": "T"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "carrier",
        ),
        (
            Method::POST,
            format!("{order}/ship"),
            &member,
            Some(json!({"carrier": "DHL", "tracking_number": "T1\u{3000}"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "tracking_number",
        ),
        (
            Method::POST,
            format!("{order}/ship"),
            &member,
            Some(json!({"carrier": "DHL"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "",
        ),
        (
            Method::POST,
            format!("{order}/ship"),
            &member,
            Some(json!({"carrier": "DHL", "tracking_number": "T", "extra": 1})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "",
        ),
        (
            Method::POST,
            format!("{order}/ship"),
            &member,
            Some(json!([1, 2])),
            StatusCode::UNPROCESSABLE_ENTITY,
            "",
        ),
        (
            Method::POST,
            format!("{order}/deliver"),
            &admin,
            None,
            StatusCode::CONFLICT,
            "",
        ),
        (
            Method::GET,
            "/api/admin/orders/stuck?limit=0".into(),
            &admin,
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "limit",
        ),
        (
            Method::PUT,
            pm.clone(),
            &cart,
            Some(
                json!({"customer_id": Uuid::now_v7(), "cart_id": Uuid::now_v7(), "payment_token": ""}),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "payment_token",
        ),
        (
            Method::PUT,
            pm.clone(),
            &cart,
            Some(
                json!({"customer_id": "x", "cart_id": Uuid::now_v7(), "payment_token": "tok_visa"}),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "",
        ),
        (
            Method::PUT,
            pm,
            &cart,
            Some(json!({"payment_token": "tok_visa"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "",
        ),
    ];
    for (method, path, token, body, expected, field) in cases {
        let resp = h
            .http
            .request(method.clone(), h.url(&path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let text = resp.text().await.unwrap();
        assert_eq!(status, expected, "{method} {path}: {text}");
        assert!(
            ct.starts_with("application/problem+json"),
            "{method} {path}: {ct}"
        );
        assert!(text.contains(field), "{method} {path}: {text}");
    }
    // A malformed body is 400 too.
    let resp = h
        .http
        .post(h.url(&format!("{order}/ship")))
        .bearer_auth(&member)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    let after = h.read(&c).await;
    assert_eq!(after.status, "confirmed");
    assert_eq!(after.statuses(), ["pending", "paid", "confirmed"]);
    assert!(after.shipments.is_empty());
    let methods: i64 = sqlx::query_scalar("select count(*) from payment_methods")
        .fetch_one(&h.db)
        .await
        .unwrap();
    assert_eq!(methods, 0);
}

#[tokio::test]
async fn concurrent_cancels_of_one_order_let_exactly_one_win() {
    let h = Harness::start().await;
    let vendor = Uuid::now_v7();
    let product = h.product(vendor, 5).await;
    let c = confirmed_order(&h, &[(product, vendor, 1)]).await;
    let customer = h.tokens.customer(c.customer_id);
    let admin = h.tokens.admin();

    let orders = h.client();
    let attempts = (0..6).map(|i| {
        let token = if i % 2 == 0 { &customer } else { &admin };
        orders.cancel(token, c.order_id)
    });
    let results = futures::future::join_all(attempts).await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    let lost = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .filter(|p| p.status == StatusCode::CONFLICT && p["order_status"] == "cancelled")
        .count();
    assert_eq!((won, lost), (1, 5), "{results:?}");

    let order = h.wait_settled(&c).await;
    assert_eq!(
        order
            .statuses()
            .iter()
            .filter(|s| **s == "cancelled")
            .count(),
        1
    );
    assert_eq!(h.successful(c.order_id, "refund").await, 1);
    assert_eq!(
        h.events::<OrderUpdated>(c.order_id)
            .await
            .iter()
            .filter(|e| e.status == OrderStatus::Cancelled)
            .count(),
        1
    );
}
