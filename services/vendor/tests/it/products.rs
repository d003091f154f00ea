//! Products through the API: create, read, update, authorization, bad input, events and
//! the freshness of the Redis cache.

use std::time::Duration;

use mp_common::redis::RedisKeys;
use mp_events::Service;
use mp_test_support::api::assert_problem;
use mp_test_support::clients::Expect;
use mp_test_support::eventually;
use redis::AsyncCommands;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;
use vendor::cache::ProductCache;

use crate::harness::{Harness, product_body};

/// The vendor service's product cache, as this test environment configures it.
async fn test_cache(fleet: &Harness) -> ProductCache {
    ProductCache::new(
        fleet.env.redis().await,
        RedisKeys::new(&format!("t_{}", fleet.env.id)),
        Duration::from_secs(60),
        &prometheus::Registry::new(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_new_owner_lists_a_product_that_anyone_can_read() {
    let fleet = Harness::start().await;
    let (owner, vendor_id) = fleet.vendor_owner("Ada").await;

    // The owner's token was issued before the vendor existed: the members table decides.
    let (status, product) = fleet
        .vendor
        .call(
            Method::POST,
            &format!("/api/vendors/{vendor_id}/products"),
            Some(&owner.token),
            Some(product_body("MUG-1")),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{product}");
    assert_eq!(product["vendor_id"], vendor_id.to_string());
    assert_eq!(product["sku"], "MUG-1");
    assert_eq!(product["price"], json!({"amount": 1299, "currency": "EUR"}));
    assert_eq!(product["active"], true);
    assert_eq!(product["initial_stock"], 25);
    assert_eq!(product["low_stock_threshold"], 5);
    assert_eq!(product["revision"], 1);
    assert_eq!(product["stock"], Value::Null);

    let id = product["id"].as_str().unwrap();
    let (status, read) = fleet.get(&format!("/api/products/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read, product);
}

#[tokio::test]
async fn the_created_event_commits_with_the_product_and_reaches_rabbitmq() {
    let fleet = Harness::start().await;
    let (owner, vendor_id) = fleet.vendor_owner("Ada").await;
    let product = fleet
        .product(&owner, vendor_id, product_body("MUG-1"))
        .await;
    let id = product.id;

    let db = fleet.vendor_db().await;
    let (event_id, payload): (Uuid, Value) = sqlx::query_as(
        "select id, envelope -> 'payload' from outbox where event_type = 'vendor.product.created'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(payload["product_id"], id.to_string());
    assert_eq!(payload["revision"], 1);
    assert_eq!(payload["initial_stock"], 25);

    let envelope = fleet
        .next_message(Service::Inventory, "vendor.product.created")
        .await;
    assert_eq!(envelope["id"], event_id.to_string());
    assert_eq!(envelope["source"], "vendor");
    assert_eq!(envelope["payload"], payload);
    eventually(
        "the relay to mark the row sent",
        Duration::from_secs(5),
        || async {
            sqlx::query_scalar::<_, bool>(
                "select published_at is not null from outbox where id = $1",
            )
            .bind(event_id)
            .fetch_one(&db)
            .await
            .unwrap()
            .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn an_update_bumps_the_revision_and_publishes_the_whole_new_state() {
    let fleet = Harness::start().await;
    let (owner, vendor_id) = fleet.vendor_owner("Ada").await;
    let product = fleet
        .product(&owner, vendor_id, product_body("MUG-1"))
        .await;
    let path = format!("/api/products/{}", product.id);

    let (status, updated) = fleet
        .patch(
            &path,
            &owner.token,
            json!({"price": {"amount": 1499, "currency": "EUR"}, "name": "Big mug", "low_stock_threshold": 2}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["revision"], 2);
    assert_eq!(updated["price"]["amount"], 1499);
    assert_eq!(updated["name"], "Big mug");
    assert_eq!(updated["sku"], "MUG-1");
    assert_eq!(updated["description"], product.description);

    let (status, same) = fleet
        .patch(&path, &owner.token, json!({"name": "Big mug"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        same["revision"], 2,
        "a change to the same value is no change"
    );

    let (_, hidden) = fleet
        .patch(&path, &owner.token, json!({"active": false}))
        .await;
    assert_eq!(hidden["revision"], 3);
    assert_eq!(hidden["active"], false);

    let updates: Vec<Value> = fleet
        .outbox()
        .await
        .into_iter()
        .filter(|(t, _)| t == "vendor.product.updated")
        .map(|(_, e)| e["payload"].clone())
        .collect();
    assert_eq!(updates.len(), 2);
    assert_eq!(
        updates[0],
        json!({
            "product_id": product.id, "vendor_id": vendor_id, "sku": "MUG-1",
            "name": "Big mug", "price": {"amount": 1499, "currency": "EUR"},
            "active": true, "low_stock_threshold": 2, "revision": 2,
        })
    );
    assert_eq!(updates[1]["revision"], 3);
    assert_eq!(updates[1]["active"], false);
}

#[tokio::test]
async fn a_read_right_after_a_price_change_shows_the_new_price() {
    let fleet = Harness::start().await;
    let (owner, vendor_id) = fleet.vendor_owner("Ada").await;
    let product = fleet
        .product(&owner, vendor_id, product_body("MUG-1"))
        .await;
    let id: Uuid = product.id;
    let path = format!("/api/products/{id}");
    let key = test_cache(&fleet).await.key(id);
    let mut redis = fleet.env.redis().await;

    for amount in 1300..1320 {
        let (status, _) = fleet.get(&path, None).await;
        assert_eq!(status, StatusCode::OK);
        let cached: Option<String> = redis.get(&key).await.unwrap();
        assert!(cached.is_some(), "reads are served from the cache");

        let (status, body) = fleet
            .patch(
                &path,
                &owner.token,
                json!({"price": {"amount": amount, "currency": "EUR"}}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (_, read) = fleet.get(&path, None).await;
        assert_eq!(read["price"]["amount"], amount, "read after write");
    }
}

#[tokio::test]
async fn a_slow_reader_cannot_put_an_old_price_back_into_the_cache() {
    let fleet = Harness::start().await;
    let (owner, vendor_id) = fleet.vendor_owner("Ada").await;
    let product = fleet
        .product(&owner, vendor_id, product_body("MUG-1"))
        .await;
    let id: Uuid = product.id;
    let path = format!("/api/products/{id}");
    let cache = test_cache(&fleet).await;

    // A reader loads version 1 from PostgreSQL, then stalls; meanwhile the price changes.
    let (_, version_1) = fleet.get(&path, None).await;
    let stale = serde_json::to_vec(&version_1).unwrap();
    let (status, _) = fleet
        .patch(
            &path,
            &owner.token,
            json!({"price": {"amount": 999, "currency": "EUR"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // The stalled reader's fill and even a late writer's store of version 1 are refused.
    assert!(!cache.fill(id, 1, &stale).await.unwrap());
    assert!(!cache.put(id, 1, &stale).await.unwrap());
    let (_, read) = fleet.get(&path, None).await;
    assert_eq!(read["price"]["amount"], 999);

    // With the entry gone, a reader's fill is what the next read serves.
    cache.remove(id).await.unwrap();
    let (_, read) = fleet.get(&path, None).await;
    assert_eq!(read["price"]["amount"], 999);
    assert_eq!(read["revision"], 2);
}

#[tokio::test]
async fn another_vendors_member_may_not_change_a_product_but_an_admin_may() {
    let fleet = Harness::start().await;
    let (owner, vendor_id) = fleet.vendor_owner("Ada").await;
    let (rival, _) = fleet.vendor_owner("Rival").await;
    let product = fleet
        .product(&owner, vendor_id, product_body("MUG-1"))
        .await;
    let path = format!("/api/products/{}", product.id);

    let (status, body) = fleet
        .patch(
            &path,
            &rival.token,
            json!({"price": {"amount": 1, "currency": "EUR"}}),
        )
        .await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, None);
    let (status, body) = fleet
        .vendor
        .call(
            Method::POST,
            &format!("/api/vendors/{vendor_id}/products"),
            Some(&rival.token),
            Some(product_body("RIVAL-1")),
        )
        .await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, None);
    let (status, body) = fleet
        .vendor
        .call(Method::PATCH, &path, None, Some(json!({"active": false})))
        .await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, None);

    let read = fleet.client().product(product.id).await.expect_ok();
    assert_eq!(read, product, "nothing changed");

    let admin = fleet.admin().await;
    let (status, body) = fleet
        .patch(&path, &admin.token, json!({"description": "Curated."}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["revision"], 2);
}

async fn product_count(fleet: &Harness) -> i64 {
    sqlx::query_scalar("select count(*) from products")
        .fetch_one(&fleet.vendor_db().await)
        .await
        .unwrap()
}

#[tokio::test]
async fn invalid_products_are_refused_field_by_field_and_nothing_is_stored() {
    let fleet = Harness::start().await;
    let (owner, vendor_id) = fleet.vendor_owner("Ada").await;
    let path = format!("/api/vendors/{vendor_id}/products");
    let with = |patch: Value| {
        let mut body = product_body("MUG-1");
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };

    let cases = [
        (
            with(json!({"price": {"amount": 0, "currency": "EUR"}})),
            "price.amount",
        ),
        (
            with(json!({"price": {"amount": -100, "currency": "EUR"}})),
            "price.amount",
        ),
        (
            with(json!({"price": {"amount": 100, "currency": "eur"}})),
            "price.currency",
        ),
        (
            with(json!({"price": {"amount": 100, "currency": "XYZ"}})),
            "price.currency",
        ),
        (
            with(json!({"price": {"amount": 1.5, "currency": "EUR"}})),
            "price.amount",
        ),
        (
            with(json!({"price": {"amount": 100, "currency": "EUR", "tax": 1}})),
            "price.tax",
        ),
        (with(json!({"initial_stock": -1})), "initial_stock"),
        (
            with(json!({"low_stock_threshold": -1})),
            "low_stock_threshold",
        ),
        (with(json!({"sku": "has space"})), "sku"),
        (with(json!({"name": ""})), "name"),
        (with(json!({"revision": 7})), "revision"),
        (json!({"sku": "MUG-1", "name": "Mug"}), "price"),
    ];
    for (body, field) in cases {
        let (status, problem) = fleet
            .vendor
            .call(Method::POST, &path, Some(&owner.token), Some(body.clone()))
            .await;
        assert_problem(
            status,
            &problem,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(field),
        );
        assert!(
            !problem.to_string().contains("internal"),
            "{body} -> {problem}"
        );
    }

    let (status, content_type, problem) = fleet
        .vendor
        .api()
        .call_text(
            Method::POST,
            &path,
            Some(&owner.token),
            "application/json",
            "{\"sku\": \"MUG-1\",",
        )
        .await;
    assert_problem(status, &problem, StatusCode::BAD_REQUEST, None);
    assert_eq!(content_type, "application/problem+json");

    assert_eq!(product_count(&fleet).await, 0);
    assert!(
        fleet
            .outbox()
            .await
            .iter()
            .all(|(t, _)| t != "vendor.product.created")
    );

    let (status, problem) = fleet
        .vendor
        .call(
            Method::POST,
            &format!("/api/vendors/{}/products", Uuid::now_v7()),
            Some(&owner.token),
            Some(product_body("MUG-1")),
        )
        .await;
    assert_problem(status, &problem, StatusCode::NOT_FOUND, None);
}

#[tokio::test]
async fn a_duplicate_sku_is_a_conflict_in_any_letter_case_and_publishes_nothing() {
    let fleet = Harness::start().await;
    let (owner, vendor_id) = fleet.vendor_owner("Ada").await;
    fleet
        .product(&owner, vendor_id, product_body("MUG-1"))
        .await;

    for sku in ["MUG-1", "mug-1", " Mug-1 "] {
        let (status, problem) = fleet
            .vendor
            .call(
                Method::POST,
                &format!("/api/vendors/{vendor_id}/products"),
                Some(&owner.token),
                Some(product_body(sku)),
            )
            .await;
        assert_problem(status, &problem, StatusCode::CONFLICT, None);
    }
    assert_eq!(product_count(&fleet).await, 1);
    let created = fleet
        .outbox()
        .await
        .iter()
        .filter(|(t, _)| t == "vendor.product.created")
        .count();
    assert_eq!(created, 1);

    // The same SKU at another vendor is another article.
    let (rival, rival_vendor) = fleet.vendor_owner("Rival").await;
    fleet
        .product(&rival, rival_vendor, product_body("MUG-1"))
        .await;
}

#[tokio::test]
async fn invalid_updates_change_nothing() {
    let fleet = Harness::start().await;
    let (owner, vendor_id) = fleet.vendor_owner("Ada").await;
    let product = fleet
        .product(&owner, vendor_id, product_body("MUG-1"))
        .await;
    let path = format!("/api/products/{}", product.id);

    let cases = [
        (
            json!({"price": {"amount": 0, "currency": "EUR"}}),
            "price.amount",
        ),
        (
            json!({"price": {"amount": -1, "currency": "EUR"}}),
            "price.amount",
        ),
        (
            json!({"price": {"amount": 10, "currency": "Euro"}}),
            "price.currency",
        ),
        (json!({"low_stock_threshold": -3}), "low_stock_threshold"),
        (json!({"sku": "NEW-SKU"}), "sku"),
        (json!({"active": "yes"}), "active"),
        (json!({"name": "  "}), "name"),
        (
            json!({"name": "Fine", "price": {"amount": 0, "currency": "EUR"}}),
            "price.amount",
        ),
    ];
    for (body, field) in cases {
        let (status, problem) = fleet.patch(&path, &owner.token, body).await;
        assert_problem(
            status,
            &problem,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(field),
        );
    }
    let (status, content_type, problem) = fleet
        .vendor
        .api()
        .call_text(
            Method::PATCH,
            &path,
            Some(&owner.token),
            "application/json",
            "{\"price\": {",
        )
        .await;
    assert_problem(status, &problem, StatusCode::BAD_REQUEST, None);
    assert_eq!(content_type, "application/problem+json");

    let read = fleet.client().product(product.id).await.expect_ok();
    assert_eq!(read, product);
    assert!(
        fleet
            .outbox()
            .await
            .iter()
            .all(|(t, _)| t != "vendor.product.updated")
    );

    let unknown = format!("/api/products/{}", Uuid::now_v7());
    let (status, problem) = fleet.get(&unknown, None).await;
    assert_problem(status, &problem, StatusCode::NOT_FOUND, None);
    let (status, problem) = fleet
        .patch(&unknown, &owner.token, json!({"active": false}))
        .await;
    assert_problem(status, &problem, StatusCode::NOT_FOUND, None);
    let (status, problem) = fleet.get("/api/products/42", None).await;
    assert_problem(status, &problem, StatusCode::BAD_REQUEST, None);
}

#[tokio::test]
async fn concurrent_price_changes_leave_the_last_committed_price_in_the_cache() {
    let fleet = Harness::start().await;
    let (owner, vendor_id) = fleet.vendor_owner("Ada").await;
    let product = fleet
        .product(&owner, vendor_id, product_body("MUG-1"))
        .await;
    let id: Uuid = product.id;
    let url = fleet.vendor.url(&format!("/api/products/{id}"));

    let mut writers = tokio::task::JoinSet::new();
    for amount in 2001..=2010 {
        let (http, url, token) = (
            fleet.vendor.http().clone(),
            url.clone(),
            owner.token.clone(),
        );
        writers.spawn(async move {
            http.patch(url)
                .bearer_auth(token)
                .json(&json!({"price": {"amount": amount, "currency": "EUR"}}))
                .send()
                .await
                .unwrap()
                .status()
        });
    }
    while let Some(status) = writers.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::OK);
    }

    let (amount, revision): (i64, i64) =
        sqlx::query_as("select price_amount, revision from products where id = $1")
            .bind(id)
            .fetch_one(&fleet.vendor_db().await)
            .await
            .unwrap();
    assert_eq!(revision, 11);
    let (_, read) = fleet.get(&format!("/api/products/{id}"), None).await;
    assert_eq!(read["price"]["amount"], amount);
    assert_eq!(read["revision"], 11);
}
