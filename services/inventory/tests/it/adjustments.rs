//! Adjustments, the ledger, low-stock alerts and who may touch a vendor's stock.

use futures::future::join_all;
use mp_events::Service;
use mp_events::catalog::{InventoryLowStock, InventoryUpdated, OrderStatus};
use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

use crate::harness::{Harness, line, order_created, order_updated};
use mp_test_support::clients::Expect;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_stock_fires_once_per_crossing_and_restocking_rearms_it() {
    let h = Harness::start().await;
    let vendor = Uuid::now_v7();
    let p = h.product(vendor, 10, 3).await;
    let token = h.tokens.member_of(vendor);

    let mut alerts_after = Vec::new();
    for (delta, on_hand) in [
        (-6, 4),
        (-1, 3),
        (-1, 2),
        (-2, 0),
        (5, 5),
        (-2, 3),
        (1, 4),
        (-1, 3),
    ] {
        let body = h.adjust(&token, p, delta).await.expect_ok();
        assert_eq!(body.stock.on_hand, on_hand);
        assert_eq!(body.movement.delta, delta);
        assert_eq!(body.movement.on_hand_after, on_hand);
        alerts_after.push(h.events::<InventoryLowStock>().await.len());
    }
    // Crossings at 3 (down from 4), at 3 again after a restock to 5, and at 3 after 4.
    assert_eq!(alerts_after, vec![0, 1, 1, 1, 1, 2, 2, 3]);
    let alert = &h.events::<InventoryLowStock>().await[0];
    assert_eq!((alert.product_id, alert.vendor_id), (p, vendor));
    assert_eq!((alert.available, alert.low_stock_threshold), (3, 3));
    assert!(alert.sku.starts_with("SKU-"), "{alert:?}");

    // A commit crosses too.
    let q = h.product(vendor, 5, 2).await;
    let order = order_created(Uuid::now_v7(), vec![line(q, 3)]);
    h.publish(Service::Order, order.clone()).await;
    let alerts = h.wait_events::<InventoryLowStock>(4).await;
    assert_eq!((alerts[3].product_id, alerts[3].available), (q, 2));
    // Its release re-arms (5 > 2) without alerting.
    h.publish(
        Service::Order,
        order_updated(&order, OrderStatus::Cancelled),
    )
    .await;
    h.wait_events::<InventoryUpdated>(10).await;
    assert_eq!(h.on_hand(q).await, 5);
    let armed: bool =
        sqlx::query_scalar("select low_stock_armed from stock_items where product_id = $1")
            .bind(q)
            .fetch_one(&h.db)
            .await
            .unwrap();
    assert!(armed);
    assert_eq!(h.events::<InventoryLowStock>().await.len(), 4);
    h.assert_ledger_matches().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_vendors_members_and_admins_may_touch_its_stock() {
    let h = Harness::start().await;
    let vendor = Uuid::now_v7();
    let p = h.product(vendor, 10, 0).await;
    let outsider = h.tokens.member_of(Uuid::now_v7());
    let customer = h.tokens.customer(Uuid::now_v7());
    let reads = [
        format!("/api/inventory/{p}"),
        format!("/api/inventory/{p}/movements"),
    ];

    for token in [&outsider, &customer] {
        let problem = h
            .adjust(token, p, -1)
            .await
            .expect_problem(StatusCode::FORBIDDEN, None);
        assert_eq!(problem["type"], "/problems/forbidden");
        for path in &reads {
            let (status, _) = h.api().call(Method::GET, path, Some(token), None).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        }
    }
    h.adjust("", p, -1)
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, None);
    let (status, _) = h
        .api()
        .call(
            Method::POST,
            &format!("/api/inventory/{p}/adjustments"),
            None,
            Some(json!({"delta": 1, "reason": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A service token is not a user.
    h.adjust(&h.tokens.service(Service::Cart, Service::Inventory), p, -1)
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, None);
    assert_eq!(h.on_hand(p).await, 10);

    h.adjust(&h.tokens.member_of(vendor), p, -1)
        .await
        .expect_ok();
    h.adjust(&h.tokens.admin(), p, -1).await.expect_ok();
    for path in &reads {
        let (status, _) = h
            .api()
            .call(Method::GET, path, Some(&h.tokens.member_of(vendor)), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    assert_eq!(h.on_hand(p).await, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_adjustments_are_problems_and_change_nothing() {
    let h = Harness::start().await;
    let vendor = Uuid::now_v7();
    let p = h.product(vendor, 5, 0).await;
    let token = h.tokens.member_of(vendor);
    let path = format!("/api/inventory/{p}/adjustments");
    let long = "x".repeat(201);
    let cases = [
        (
            path.clone(),
            json!({"delta": 0, "reason": "count"}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/validation",
        ),
        (
            path.clone(),
            json!({"delta": -6, "reason": "count"}).to_string(),
            StatusCode::CONFLICT,
            "/problems/insufficient-stock",
        ),
        (
            path.clone(),
            json!({"delta": i64::MIN, "reason": "count"}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/validation",
        ),
        (
            path.clone(),
            json!({"delta": 1, "reason": "   "}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/validation",
        ),
        (
            path.clone(),
            json!({"delta": 1, "reason": long}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/validation",
        ),
        (
            path.clone(),
            json!({"delta": 1}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/validation",
        ),
        (
            path.clone(),
            json!({"delta": 1, "reason": "count", "actor": "me"}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/validation",
        ),
        (
            path.clone(),
            json!({"delta": "1", "reason": "count"}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/validation",
        ),
        (
            path.clone(),
            "{\"delta\": 1,".to_owned(),
            StatusCode::BAD_REQUEST,
            "/problems/malformed-json",
        ),
        (
            format!("/api/inventory/{}/adjustments", Uuid::now_v7()),
            json!({"delta": 1, "reason": "count"}).to_string(),
            StatusCode::NOT_FOUND,
            "/problems/not-found",
        ),
        (
            "/api/inventory/not-a-uuid/adjustments".to_owned(),
            json!({"delta": 1, "reason": "count"}).to_string(),
            StatusCode::BAD_REQUEST,
            "/problems/bad-path",
        ),
    ];
    for (path, body, status, kind) in cases {
        let (got, content_type, problem) = h
            .api()
            .call_text(Method::POST, &path, Some(&token), "application/json", &body)
            .await;
        assert_eq!(got, status, "{body}: {problem}");
        assert_eq!(content_type, "application/problem+json", "{body}");
        assert_eq!(problem["type"], kind, "{body}: {problem}");
        if got == StatusCode::UNPROCESSABLE_ENTITY {
            assert!(
                !problem["errors"].as_array().unwrap().is_empty(),
                "fields named: {problem}"
            );
        }
    }
    let problem = h
        .adjust(&token, p, -6)
        .await
        .expect_problem(StatusCode::CONFLICT, None);
    assert_eq!(
        (problem["available"].clone(), problem["on_hand"].clone()),
        (json!(5), json!(5))
    );
    let (_, _, problem) = h
        .api()
        .call_text(
            Method::POST,
            &path,
            Some(&token),
            "application/json",
            &json!({"delta": 0, "reason": ""}).to_string(),
        )
        .await;
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, vec!["delta", "reason"]);

    let (status, _) = h
        .api()
        .call(
            Method::GET,
            &format!("/api/inventory/{}", Uuid::now_v7()),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(h.on_hand(p).await, 5);
    let movements: i64 = sqlx::query_scalar("select count(*) from stock_movements")
        .fetch_one(&h.db)
        .await
        .unwrap();
    assert_eq!(movements, 1, "only the initial stock");
    assert!(h.events::<InventoryUpdated>().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_hand_always_equals_the_sum_of_the_ledger() {
    let h = Harness::start().await;
    let vendor = Uuid::now_v7();
    let p = h.product(vendor, 20, 5).await;
    let token = h.tokens.member_of(vendor);

    // Concurrent adjustments, some of which would go below zero, and orders.
    let deltas: Vec<i64> = (0..40).map(|i| if i % 3 == 0 { 4 } else { -3 }).collect();
    let orders: Vec<_> = (0..10)
        .map(|_| order_created(Uuid::now_v7(), vec![line(p, 2)]))
        .collect();
    let (adjusted, _) = tokio::join!(
        join_all(deltas.iter().map(|&d| h.adjust(&token, p, d))),
        join_all(orders.iter().map(|o| h.publish(Service::Order, o.clone()))),
    );
    for problem in adjusted.iter().filter_map(|r| r.as_ref().err()) {
        problem.assert(StatusCode::CONFLICT, None);
    }
    h.wait_events::<InventoryUpdated>(adjusted.iter().filter(|r| r.is_ok()).count() + 10)
        .await;

    h.assert_ledger_matches().await;
    let (on_hand, sum): (i64, i64) = sqlx::query_as(
        "select i.on_hand, (select sum(delta) from stock_movements m where m.product_id = i.product_id)::bigint
         from stock_items i where product_id = $1",
    )
    .bind(p)
    .fetch_one(&h.db)
    .await
    .unwrap();
    println!("after 40 adjustments and 10 orders: on_hand {on_hand}, ledger sum {sum}");
    assert_eq!(on_hand, sum);
    assert!(on_hand >= 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_reads_newest_first_a_page_at_a_time() {
    let h = Harness::start().await;
    let vendor = Uuid::now_v7();
    let p = h.product(vendor, 5, 0).await;
    let token = h.tokens.member_of(vendor);
    for delta in [1, 2, 3, 4] {
        h.adjust(&token, p, delta).await.expect_ok();
    }

    let mut deltas = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/inventory/{p}/movements?limit=2&cursor={c}"),
            None => format!("/api/inventory/{p}/movements?limit=2"),
        };
        let (status, page) = h.api().call(Method::GET, &path, Some(&token), None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        pages += 1;
        for m in page["items"].as_array().unwrap() {
            deltas.push(m["delta"].as_i64().unwrap());
            assert!(m["kind"] == "adjustment" || m["kind"] == "initial_stock");
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(deltas, vec![4, 3, 2, 1, 5]);
    assert_eq!(pages, 3);

    for query in ["limit=0", "limit=201", "cursor=abc", "limit=x"] {
        let (status, problem) = h
            .api()
            .call(
                Method::GET,
                &format!("/api/inventory/{p}/movements?{query}"),
                Some(&token),
                None,
            )
            .await;
        assert!(
            status == StatusCode::UNPROCESSABLE_ENTITY || status == StatusCode::BAD_REQUEST,
            "{query}: {problem}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_every_endpoint() {
    let h = Harness::start().await;
    let (status, doc) = h.api().call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let paths = doc["paths"].as_object().unwrap();
    let mut found: Vec<String> = paths
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| format!("{m} {path}"))
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        vec![
            "delete /api/reservations/{cart_id}/{product_id}",
            "get /api/inventory/{product_id}",
            "get /api/inventory/{product_id}/movements",
            "post /api/inventory/{product_id}/adjustments",
            "post /api/reservations",
        ]
    );
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "StockResponse",
        "AdjustmentRequest",
        "MovementPage",
        "ReservationRequest",
        "ReservationResponse",
        "Problem",
    ] {
        assert!(schemas.contains_key(name), "{name} missing");
    }
}
