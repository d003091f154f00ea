//! The public catalog (filters, keyset pages, bad parameters), a vendor's own product
//! list, and stock figures consumed from inventory events.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use mp_events::Envelope;
use mp_events::Service;
use mp_events::catalog::{InventoryCreated, InventoryUpdated, StockChange, StockLevel};
use mp_test_support::api::assert_problem;
use mp_test_support::eventually;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{Harness, User, product_body};

/// Follows `next_cursor` from `first` to the end; returns the ids in order.
async fn walk(fleet: &Harness, first: &str, token: Option<&str>) -> Vec<String> {
    let mut ids = Vec::new();
    let mut path = first.to_owned();
    let sep = if first.contains('?') { '&' } else { '?' };
    loop {
        let (status, page) = fleet.get(&path, token).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for item in page["items"].as_array().unwrap() {
            ids.push(item["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("{first}{sep}cursor={cursor}"),
            None => return ids,
        }
    }
}

async fn list(fleet: &Harness, user: &User, vendor_id: Uuid, sku: &str, name: &str) -> String {
    let mut body = product_body(sku);
    body["name"] = json!(name);
    let p = fleet.product(user, vendor_id, body).await;
    p.id.to_string()
}

#[tokio::test]
async fn the_catalog_pages_through_active_products_in_listing_order() {
    let fleet = Harness::start().await;
    let (owner, vendor_id) = fleet.vendor_owner("Ada").await;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(
            list(
                &fleet,
                &owner,
                vendor_id,
                &format!("SKU-{i}"),
                &format!("Item {i}"),
            )
            .await,
        );
    }
    let (status, _) = fleet
        .patch(
            &format!("/api/products/{}", ids[3]),
            &owner.token,
            json!({"active": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let active: Vec<String> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|(_, id)| id.clone())
        .collect();

    assert_eq!(walk(&fleet, "/api/products?limit=2", None).await, active);
    assert_eq!(walk(&fleet, "/api/products?limit=6", None).await, active);
    assert_eq!(walk(&fleet, "/api/products?limit=100", None).await, active);

    let (_, page) = fleet.get("/api/products", None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 6);
    assert_eq!(page["next_cursor"], Value::Null);
    assert_eq!(page["items"][0]["price"]["currency"], "EUR");

    // The vendor's own list has the inactive product too.
    let own = walk(
        &fleet,
        &format!("/api/vendors/{vendor_id}/products?limit=3"),
        Some(&owner.token),
    )
    .await;
    assert_eq!(own, ids);
    let stranger = fleet.customer("Stranger").await;
    let (status, body) = fleet
        .get(
            &format!("/api/vendors/{vendor_id}/products"),
            Some(&stranger.token),
        )
        .await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, None);
}

#[tokio::test]
async fn the_catalog_filters_by_vendor_and_by_text_in_any_letter_case() {
    let fleet = Harness::start().await;
    let (ada, ada_shop) = fleet.vendor_owner("Ada").await;
    let (bob, bob_shop) = fleet.vendor_owner("Bob").await;
    let ada_mug = list(&fleet, &ada, ada_shop, "MUG-1", "Blue Mug").await;
    let ada_pot = list(&fleet, &ada, ada_shop, "POT-1", "Teapot").await;
    let bob_mug = list(&fleet, &bob, bob_shop, "BOB-7", "Green mug").await;
    let mut described = product_body("COTTON_100");
    described["name"] = json!("Towel, 100% cotton");
    described["description"] = json!("Soft as a MUGWORT leaf");
    let towel = fleet.product(&bob, bob_shop, described).await;
    let towel = towel.id.to_string();

    let ids = |page: &Value| -> HashSet<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let set = |v: &[&String]| v.iter().map(|s| (*s).clone()).collect::<HashSet<_>>();

    let (_, page) = fleet
        .get(&format!("/api/products?vendor_id={ada_shop}"), None)
        .await;
    assert_eq!(ids(&page), set(&[&ada_mug, &ada_pot]));
    let (_, page) = fleet.get("/api/products?q=mUg", None).await;
    assert_eq!(ids(&page), set(&[&ada_mug, &bob_mug, &towel]));
    let (_, page) = fleet
        .get(&format!("/api/products?q=MUG&vendor_id={bob_shop}"), None)
        .await;
    assert_eq!(ids(&page), set(&[&bob_mug, &towel]));
    let (_, page) = fleet.get("/api/products?q=bob-7", None).await;
    assert_eq!(ids(&page), set(&[&bob_mug]));
    // Wildcards in the text are plain characters.
    for q in ["100%25", "%25", "_", "Mu_"] {
        let (_, page) = fleet.get(&format!("/api/products?q={q}"), None).await;
        let expected = if q == "Mu_" { set(&[]) } else { set(&[&towel]) };
        assert_eq!(ids(&page), expected, "q={q}");
    }
    let (_, page) = fleet
        .get(&format!("/api/products?vendor_id={}", Uuid::now_v7()), None)
        .await;
    assert!(ids(&page).is_empty());
}

#[tokio::test]
async fn bad_catalog_parameters_are_problems() {
    let fleet = Harness::start().await;
    for (query, status, field) in [
        ("limit=0", StatusCode::UNPROCESSABLE_ENTITY, Some("limit")),
        ("limit=101", StatusCode::UNPROCESSABLE_ENTITY, Some("limit")),
        ("limit=-1", StatusCode::BAD_REQUEST, None),
        ("limit=ten", StatusCode::BAD_REQUEST, None),
        (
            "cursor=garbage!",
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("cursor"),
        ),
        (
            "cursor=AAAA",
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("cursor"),
        ),
        ("vendor_id=shop", StatusCode::BAD_REQUEST, None),
    ] {
        let (got, body) = fleet.get(&format!("/api/products?{query}"), None).await;
        assert_problem(got, &body, status, field);
    }
    let long = "q".repeat(201);
    let (got, body) = fleet.get(&format!("/api/products?q={long}"), None).await;
    assert_problem(got, &body, StatusCode::UNPROCESSABLE_ENTITY, Some("q"));
}

fn level(
    product_id: &str,
    vendor_id: Uuid,
    on_hand: i64,
    reserved: i64,
    version: i64,
) -> StockLevel {
    StockLevel {
        product_id: product_id.parse().unwrap(),
        vendor_id,
        on_hand,
        reserved,
        available: on_hand - reserved,
        version,
    }
}

/// An adjustment report stamped `seconds_from_now` by its host's clock, which must not
/// matter: stock versions order reports.
fn adjusted(levels: Vec<StockLevel>, seconds_from_now: i64) -> Envelope<InventoryUpdated> {
    let mut e = Envelope::new(
        Service::Inventory,
        InventoryUpdated {
            change: StockChange::Adjustment,
            order_id: None,
            levels,
            shortages: vec![],
        },
    );
    e.occurred_at = Utc::now() + chrono::Duration::seconds(seconds_from_now);
    e
}

async fn on_hand(fleet: &Harness, path: &str) -> Option<i64> {
    let (_, read) = fleet.get(path, None).await;
    read["stock"]["on_hand"].as_i64()
}

#[tokio::test]
async fn stock_reported_by_inventory_shows_in_cached_reads_and_the_catalog() {
    let fleet = Harness::start().await;
    let (owner, vendor_id) = fleet.vendor_owner("Ada").await;
    let id = list(&fleet, &owner, vendor_id, "MUG-1", "Mug").await;
    let path = format!("/api/products/{id}");
    assert_eq!(on_hand(&fleet, &path).await, None);

    fleet
        .publish(&Envelope::new(
            Service::Inventory,
            InventoryCreated {
                level: level(&id, vendor_id, 25, 0, 1),
                low_stock_threshold: 5,
            },
        ))
        .await;
    eventually(
        "the created stock in product reads",
        Duration::from_secs(10),
        || async { (on_hand(&fleet, &path).await == Some(25)).then_some(()) },
    )
    .await;

    fleet
        .publish(&adjusted(vec![level(&id, vendor_id, 30, 4, 2)], 1))
        .await;
    eventually(
        "the adjusted stock in product reads",
        Duration::from_secs(10),
        || async { (on_hand(&fleet, &path).await == Some(30)).then_some(()) },
    )
    .await;
    let (_, read) = fleet.get(&path, None).await;
    assert_eq!(read["stock"]["reserved"], 4);
    assert_eq!(read["stock"]["available"], 26);
    assert_eq!(read["revision"], 1, "stock is not a product change");

    let (_, page) = fleet
        .get(&format!("/api/products?vendor_id={vendor_id}"), None)
        .await;
    assert_eq!(page["items"][0]["stock"]["available"], 26);
}

#[tokio::test]
async fn an_older_stock_report_never_overwrites_a_newer_one() {
    let fleet = Harness::start().await;
    let (owner, vendor_id) = fleet.vendor_owner("Ada").await;
    let id = list(&fleet, &owner, vendor_id, "MUG-1", "Mug").await;
    let path = format!("/api/products/{id}");
    let db = fleet.vendor_db().await;

    // The older report comes from a host whose clock runs ahead: its timestamp is later.
    let newer = adjusted(vec![level(&id, vendor_id, 7, 0, 10)], 10);
    let older = adjusted(vec![level(&id, vendor_id, 3, 0, 5)], 60);
    fleet.publish(&newer).await;
    eventually("the newer report", Duration::from_secs(10), || async {
        (on_hand(&fleet, &path).await == Some(7)).then_some(())
    })
    .await;

    fleet.publish(&older).await;
    eventually(
        "the older report to be handled",
        Duration::from_secs(10),
        || async {
            sqlx::query_scalar::<_, bool>("select exists (select 1 from inbox where event_id = $1)")
                .bind(older.id)
                .fetch_one(&db)
                .await
                .unwrap()
                .then_some(())
        },
    )
    .await;
    assert_eq!(on_hand(&fleet, &path).await, Some(7));
    let (_, page) = fleet.get("/api/products", None).await;
    assert_eq!(page["items"][0]["stock"]["on_hand"], 7);

    // Delivered again, the newer report changes nothing either (the inbox absorbs it).
    fleet.publish(&newer).await;
    fleet
        .publish(&adjusted(vec![level(&id, vendor_id, 9, 1, 20)], 20))
        .await;
    eventually("the newest report", Duration::from_secs(10), || async {
        (on_hand(&fleet, &path).await == Some(9)).then_some(())
    })
    .await;
}
