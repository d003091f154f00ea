//! Products through the API: create, read, update, authorization, bad input, events and
//! the freshness of the Redis cache.

use std::fmt::Debug;
use std::time::Duration;

use mp_common::redis::RedisKeys;
use mp_events::catalog::{VendorProductCreated, VendorProductUpdated};
use mp_events::{Currency, Event, Money, Service};
use mp_test_support::client::Problem;
use mp_test_support::clients::Expect;
use mp_test_support::clients::vendor::{CreateProduct, Product, UpdateProduct};
use mp_test_support::eventually;
use redis::AsyncCommands;
use reqwest::{Method, StatusCode};
use serde::Serialize;
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
    let client = fleet.client();
    let (owner, vendor_id) = fleet.vendor_owner("Ada").await;

    // The owner's token was issued before the vendor existed: the members table decides.
    let product = client
        .create_product(&owner.token, vendor_id, &product_body("MUG-1"))
        .await
        .expect_ok();
    assert_eq!(product.vendor_id, vendor_id);
    assert_eq!(product.sku, "MUG-1");
    assert_eq!(product.price, Money::new(1299, Currency::EUR));
    assert!(product.active);
    assert_eq!(product.initial_stock, 25);
    assert_eq!(product.low_stock_threshold, 5);
    assert_eq!(product.revision, 1);
    assert_eq!(product.stock, None);

    let read = client.product(product.id).await.expect_ok();
    assert_eq!(read, product);
}

#[tokio::test]
async fn the_created_event_commits_with_the_product_and_reaches_rabbitmq() {
    let fleet = Harness::start().await;
    let (owner, vendor_id) = fleet.vendor_owner("Ada").await;
    let product = fleet
        .product(&owner, vendor_id, &product_body("MUG-1"))
        .await;
    let id = product.id;

    let db = fleet.vendor_db().await;
    let (event_id, payload): (Uuid, Value) = sqlx::query_as(
        "select id, envelope -> 'payload' from outbox where event_type = 'vendor.product.created'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    let created: VendorProductCreated = serde_json::from_value(payload.clone()).unwrap();
    assert_eq!(created.product_id, id);
    assert_eq!(created.revision, 1);
    assert_eq!(created.initial_stock, 25);

    let envelope = fleet
        .next_message(Service::Inventory, "vendor.product.created")
        .await;
    assert_eq!(envelope.id, event_id);
    assert_eq!(envelope.source, "vendor");
    assert_eq!(envelope.payload, payload);
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
    let client = fleet.client();
    let (owner, vendor_id) = fleet.vendor_owner("Ada").await;
    let product = fleet
        .product(&owner, vendor_id, &product_body("MUG-1"))
        .await;
    let token = Some(owner.token.as_str());

    let change = UpdateProduct {
        name: Some("Big mug".into()),
        low_stock_threshold: Some(2),
        ..UpdateProduct::price(1499)
    };
    let updated = client
        .update_product(token, product.id, &change)
        .await
        .expect_ok();
    assert_eq!(updated.revision, 2);
    assert_eq!(updated.price.amount(), 1499);
    assert_eq!(updated.name, "Big mug");
    assert_eq!(updated.sku, "MUG-1");
    assert_eq!(updated.description, product.description);

    let same = UpdateProduct {
        name: Some("Big mug".into()),
        ..UpdateProduct::default()
    };
    let same = client
        .update_product(token, product.id, &same)
        .await
        .expect_ok();
    assert_eq!(same.revision, 2, "a change to the same value is no change");

    let hide = UpdateProduct {
        active: Some(false),
        ..UpdateProduct::default()
    };
    let hidden = client
        .update_product(token, product.id, &hide)
        .await
        .expect_ok();
    assert_eq!(hidden.revision, 3);
    assert!(!hidden.active);

    let payloads: Vec<Value> = fleet
        .outbox()
        .await
        .into_iter()
        .filter(|(t, _)| t == VendorProductUpdated::TYPE)
        .map(|(_, envelope)| envelope["payload"].clone())
        .collect();
    let updates = fleet.events::<VendorProductUpdated>().await;
    assert_eq!(updates.len(), 2);
    let whole = VendorProductUpdated {
        product_id: product.id,
        vendor_id,
        sku: "MUG-1".into(),
        name: "Big mug".into(),
        price: Money::new(1499, Currency::EUR),
        active: true,
        low_stock_threshold: 2,
        revision: 2,
    };
    assert_eq!(updates[0], whole);
    assert_eq!(
        payloads[0],
        serde_json::to_value(&whole).unwrap(),
        "the whole new state and nothing else"
    );
    assert_eq!(updates[1].revision, 3);
    assert!(!updates[1].active);
}

#[tokio::test]
async fn a_read_right_after_a_price_change_shows_the_new_price() {
    let fleet = Harness::start().await;
    let client = fleet.client();
    let (owner, vendor_id) = fleet.vendor_owner("Ada").await;
    let product = fleet
        .product(&owner, vendor_id, &product_body("MUG-1"))
        .await;
    let id: Uuid = product.id;
    let key = test_cache(&fleet).await.key(id);
    let mut redis = fleet.env.redis().await;

    for amount in 1300..1320 {
        client.product(id).await.expect_ok();
        let cached: Option<String> = redis.get(&key).await.unwrap();
        assert!(cached.is_some(), "reads are served from the cache");

        client
            .update_product(Some(&owner.token), id, &UpdateProduct::price(amount))
            .await
            .expect_ok();
        let read = client.product(id).await.expect_ok();
        assert_eq!(read.price.amount(), amount, "read after write");
    }
}

#[tokio::test]
async fn a_slow_reader_cannot_put_an_old_price_back_into_the_cache() {
    let fleet = Harness::start().await;
    let client = fleet.client();
    let (owner, vendor_id) = fleet.vendor_owner("Ada").await;
    let product = fleet
        .product(&owner, vendor_id, &product_body("MUG-1"))
        .await;
    let id: Uuid = product.id;
    let cache = test_cache(&fleet).await;

    // A reader loads version 1 from PostgreSQL, then stalls; meanwhile the price changes.
    // (Read as JSON: these are the bytes the stalled reader would cache.)
    let version_1: Value = client
        .0
        .get(&format!("/api/products/{id}"), None)
        .await
        .expect_ok();
    let stale = serde_json::to_vec(&version_1).unwrap();
    client
        .update_product(Some(&owner.token), id, &UpdateProduct::price(999))
        .await
        .expect_ok();

    // The stalled reader's fill and even a late writer's store of version 1 are refused.
    assert!(!cache.fill(id, 1, &stale).await.unwrap());
    assert!(!cache.put(id, 1, &stale).await.unwrap());
    let read = client.product(id).await.expect_ok();
    assert_eq!(read.price.amount(), 999);

    // With the entry gone, a reader's fill is what the next read serves.
    cache.remove(id).await.unwrap();
    let read = client.product(id).await.expect_ok();
    assert_eq!(read.price.amount(), 999);
    assert_eq!(read.revision, 2);
}

#[tokio::test]
async fn another_vendors_member_may_not_change_a_product_but_an_admin_may() {
    let fleet = Harness::start().await;
    let client = fleet.client();
    let (owner, vendor_id) = fleet.vendor_owner("Ada").await;
    let (rival, _) = fleet.vendor_owner("Rival").await;
    let product = fleet
        .product(&owner, vendor_id, &product_body("MUG-1"))
        .await;

    client
        .update_product(Some(&rival.token), product.id, &UpdateProduct::price(1))
        .await
        .expect_problem(StatusCode::FORBIDDEN, None);
    client
        .create_product(&rival.token, vendor_id, &product_body("RIVAL-1"))
        .await
        .expect_problem(StatusCode::FORBIDDEN, None);
    let hide = UpdateProduct {
        active: Some(false),
        ..UpdateProduct::default()
    };
    client
        .update_product(None, product.id, &hide)
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, None);

    let read = client.product(product.id).await.expect_ok();
    assert_eq!(read, product, "nothing changed");

    let admin = fleet.admin().await;
    let curate = UpdateProduct {
        description: Some("Curated.".into()),
        ..UpdateProduct::default()
    };
    let curated = client
        .update_product(Some(&admin.token), product.id, &curate)
        .await
        .expect_ok();
    assert_eq!(curated.revision, 2);
}

async fn product_count(fleet: &Harness) -> i64 {
    sqlx::query_scalar("select count(*) from products")
        .fetch_one(&fleet.vendor_db().await)
        .await
        .unwrap()
}

/// Lists `body` and expects it refused with a 422 naming `field`, and no internal error
/// in the problem.
async fn refused(
    fleet: &Harness,
    token: &str,
    vendor_id: Uuid,
    body: &(impl Serialize + Debug),
    field: &str,
) {
    let problem = fleet
        .client()
        .create_product(token, vendor_id, body)
        .await
        .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, Some(field));
    assert!(
        !problem.body.to_string().contains("internal"),
        "{body:?} -> {problem}"
    );
}

/// Reads a refused request's answer, sent as it is (`body`, malformed JSON), as a
/// problem.
async fn malformed(
    fleet: &Harness,
    method: Method,
    path: &str,
    token: &str,
    body: &str,
) -> Problem {
    let (status, content_type, body) = fleet
        .client()
        .0
        .call_text(method, path, Some(token), "application/json", body)
        .await;
    Problem::from_parts(status, &content_type, body)
}

#[tokio::test]
async fn invalid_products_are_refused_field_by_field_and_nothing_is_stored() {
    let fleet = Harness::start().await;
    let client = fleet.client();
    let (owner, vendor_id) = fleet.vendor_owner("Ada").await;

    let mug = || product_body("MUG-1");
    let eur = |amount| Money::new(amount, Currency::EUR);
    for (body, field) in [
        (
            CreateProduct {
                price: eur(0),
                ..mug()
            },
            "price.amount",
        ),
        (
            CreateProduct {
                price: eur(-100),
                ..mug()
            },
            "price.amount",
        ),
        (
            CreateProduct {
                initial_stock: -1,
                ..mug()
            },
            "initial_stock",
        ),
        (
            CreateProduct {
                low_stock_threshold: -1,
                ..mug()
            },
            "low_stock_threshold",
        ),
        (
            CreateProduct {
                sku: "has space".into(),
                ..mug()
            },
            "sku",
        ),
        (
            CreateProduct {
                name: String::new(),
                ..mug()
            },
            "name",
        ),
    ] {
        refused(&fleet, &owner.token, vendor_id, &body, field).await;
    }

    // What a typed body cannot write: a bad currency or a fractional amount, unknown
    // fields, a missing price.
    let with = |patch: Value| {
        let mut body = serde_json::to_value(mug()).unwrap();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    for (body, field) in [
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
        (with(json!({"revision": 7})), "revision"),
        (json!({"sku": "MUG-1", "name": "Mug"}), "price"),
    ] {
        refused(&fleet, &owner.token, vendor_id, &body, field).await;
    }

    let problem = malformed(
        &fleet,
        Method::POST,
        &format!("/api/vendors/{vendor_id}/products"),
        &owner.token,
        "{\"sku\": \"MUG-1\",",
    )
    .await;
    problem.assert(StatusCode::BAD_REQUEST, None);
    assert_eq!(problem.content_type, "application/problem+json");

    assert_eq!(product_count(&fleet).await, 0);
    assert!(
        fleet
            .outbox()
            .await
            .iter()
            .all(|(t, _)| t != "vendor.product.created")
    );

    client
        .create_product(&owner.token, Uuid::now_v7(), &product_body("MUG-1"))
        .await
        .expect_problem(StatusCode::NOT_FOUND, None);
}

#[tokio::test]
async fn a_duplicate_sku_is_a_conflict_in_any_letter_case_and_publishes_nothing() {
    let fleet = Harness::start().await;
    let (owner, vendor_id) = fleet.vendor_owner("Ada").await;
    fleet
        .product(&owner, vendor_id, &product_body("MUG-1"))
        .await;

    for sku in ["MUG-1", "mug-1", " Mug-1 "] {
        fleet
            .client()
            .create_product(&owner.token, vendor_id, &product_body(sku))
            .await
            .expect_problem(StatusCode::CONFLICT, None);
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
        .product(&rival, rival_vendor, &product_body("MUG-1"))
        .await;
}

#[tokio::test]
async fn invalid_updates_change_nothing() {
    let fleet = Harness::start().await;
    let client = fleet.client();
    let (owner, vendor_id) = fleet.vendor_owner("Ada").await;
    let product = fleet
        .product(&owner, vendor_id, &product_body("MUG-1"))
        .await;
    let token = Some(owner.token.as_str());

    for (change, field) in [
        (UpdateProduct::price(0), "price.amount"),
        (UpdateProduct::price(-1), "price.amount"),
        (
            UpdateProduct {
                low_stock_threshold: Some(-3),
                ..UpdateProduct::default()
            },
            "low_stock_threshold",
        ),
        (
            UpdateProduct {
                name: Some("  ".into()),
                ..UpdateProduct::default()
            },
            "name",
        ),
        (
            UpdateProduct {
                name: Some("Fine".into()),
                ..UpdateProduct::price(0)
            },
            "price.amount",
        ),
    ] {
        client
            .update_product(token, product.id, &change)
            .await
            .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, Some(field));
    }
    // What a typed body cannot write: a bad currency, the SKU, a wrong type.
    for (change, field) in [
        (
            json!({"price": {"amount": 10, "currency": "Euro"}}),
            "price.currency",
        ),
        (json!({"sku": "NEW-SKU"}), "sku"),
        (json!({"active": "yes"}), "active"),
    ] {
        client
            .update_product(token, product.id, &change)
            .await
            .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, Some(field));
    }
    let problem = malformed(
        &fleet,
        Method::PATCH,
        &format!("/api/products/{}", product.id),
        &owner.token,
        "{\"price\": {",
    )
    .await;
    problem.assert(StatusCode::BAD_REQUEST, None);
    assert_eq!(problem.content_type, "application/problem+json");

    let read = client.product(product.id).await.expect_ok();
    assert_eq!(read, product);
    assert!(
        fleet
            .outbox()
            .await
            .iter()
            .all(|(t, _)| t != "vendor.product.updated")
    );

    let unknown = Uuid::now_v7();
    client
        .product(unknown)
        .await
        .expect_problem(StatusCode::NOT_FOUND, None);
    let hide = UpdateProduct {
        active: Some(false),
        ..UpdateProduct::default()
    };
    client
        .update_product(token, unknown, &hide)
        .await
        .expect_problem(StatusCode::NOT_FOUND, None);
    // A path the typed call cannot write: an id that is not a UUID.
    client
        .0
        .get::<Product>("/api/products/42", None)
        .await
        .expect_problem(StatusCode::BAD_REQUEST, None);
}

#[tokio::test]
async fn concurrent_price_changes_leave_the_last_committed_price_in_the_cache() {
    let fleet = Harness::start().await;
    let (owner, vendor_id) = fleet.vendor_owner("Ada").await;
    let product = fleet
        .product(&owner, vendor_id, &product_body("MUG-1"))
        .await;
    let id: Uuid = product.id;

    let mut writers = tokio::task::JoinSet::new();
    for amount in 2001..=2010 {
        let (client, token) = (fleet.client(), owner.token.clone());
        writers.spawn(async move {
            client
                .update_product(Some(&token), id, &UpdateProduct::price(amount))
                .await
        });
    }
    while let Some(written) = writers.join_next().await {
        written.unwrap().expect_ok();
    }

    let (amount, revision): (i64, i64) =
        sqlx::query_as("select price_amount, revision from products where id = $1")
            .bind(id)
            .fetch_one(&fleet.vendor_db().await)
            .await
            .unwrap();
    assert_eq!(revision, 11);
    let read = fleet.client().product(id).await.expect_ok();
    assert_eq!(read.price.amount(), amount);
    assert_eq!(read.revision, 11);
}
