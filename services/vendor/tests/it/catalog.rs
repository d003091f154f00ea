//! The public catalog (filters, keyset pages, bad parameters), a vendor's own product
//! list, and stock figures consumed from inventory events.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use mp_events::catalog::{InventoryCreated, InventoryUpdated, StockChange, StockLevel};
use mp_events::{Currency, Envelope, Service};
use mp_test_support::clients::vendor::{CreateProduct, Product, UpdateProduct};
use mp_test_support::clients::{ApiResult, Expect, Page};
use mp_test_support::eventually;
use reqwest::StatusCode;
use uuid::Uuid;

use crate::harness::{Harness, User, product_body};

/// Follows `next_cursor` from the page `first` asks for (`"?limit=2"`) to the end,
/// reading each page with `page`; returns the ids in order.
async fn walk(first: &str, page: impl AsyncFn(String) -> ApiResult<Page<Product>>) -> Vec<Uuid> {
    let mut ids = Vec::new();
    let mut query = first.to_owned();
    let sep = if first.contains('?') { '&' } else { '?' };
    loop {
        let got = page(query).await.expect_ok();
        ids.extend(got.items.iter().map(|p| p.id));
        match got.next_cursor {
            Some(cursor) => query = format!("{first}{sep}cursor={cursor}"),
            None => return ids,
        }
    }
}

async fn list(fleet: &Harness, user: &User, vendor_id: Uuid, sku: &str, name: &str) -> Uuid {
    let product = CreateProduct {
        name: name.into(),
        ..product_body(sku)
    };
    fleet.product(user, vendor_id, &product).await.id
}

/// The ids of a page's products.
fn ids(page: &Page<Product>) -> HashSet<Uuid> {
    page.items.iter().map(|p| p.id).collect()
}

#[tokio::test]
async fn the_catalog_pages_through_active_products_in_listing_order() {
    let fleet = Harness::start().await;
    let client = fleet.client();
    let (owner, vendor_id) = fleet.vendor_owner("Ada").await;
    let mut listed = Vec::new();
    for i in 0..7 {
        listed.push(
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
    let hide = UpdateProduct {
        active: Some(false),
        ..UpdateProduct::default()
    };
    client
        .update_product(Some(&owner.token), listed[3], &hide)
        .await
        .expect_ok();
    let active: Vec<Uuid> = listed
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|(_, id)| *id)
        .collect();

    let catalog = async |query: String| client.catalog(&query).await;
    assert_eq!(walk("?limit=2", catalog).await, active);
    assert_eq!(walk("?limit=6", catalog).await, active);
    assert_eq!(walk("?limit=100", catalog).await, active);

    let page = client.catalog("").await.expect_ok();
    assert_eq!(page.items.len(), 6);
    assert_eq!(page.next_cursor, None);
    assert_eq!(page.items[0].price.currency(), Currency::EUR);

    // The vendor's own list has the inactive product too.
    let own = walk("?limit=3", async |query: String| {
        client
            .vendor_products(&owner.token, vendor_id, &query)
            .await
    })
    .await;
    assert_eq!(own, listed);
    let stranger = fleet.customer("Stranger").await;
    client
        .vendor_products(&stranger.token, vendor_id, "")
        .await
        .expect_problem(StatusCode::FORBIDDEN, None);
}

#[tokio::test]
async fn the_catalog_filters_by_vendor_and_by_text_in_any_letter_case() {
    let fleet = Harness::start().await;
    let client = fleet.client();
    let (ada, ada_shop) = fleet.vendor_owner("Ada").await;
    let (bob, bob_shop) = fleet.vendor_owner("Bob").await;
    let ada_mug = list(&fleet, &ada, ada_shop, "MUG-1", "Blue Mug").await;
    let ada_pot = list(&fleet, &ada, ada_shop, "POT-1", "Teapot").await;
    let bob_mug = list(&fleet, &bob, bob_shop, "BOB-7", "Green mug").await;
    let described = CreateProduct {
        name: "Towel, 100% cotton".into(),
        description: "Soft as a MUGWORT leaf".into(),
        ..product_body("COTTON_100")
    };
    let towel = fleet.product(&bob, bob_shop, &described).await.id;

    let found = async |query: &str| ids(&client.catalog(query).await.expect_ok());

    assert_eq!(
        found(&format!("?vendor_id={ada_shop}")).await,
        HashSet::from([ada_mug, ada_pot])
    );
    assert_eq!(
        found("?q=mUg").await,
        HashSet::from([ada_mug, bob_mug, towel])
    );
    assert_eq!(
        found(&format!("?q=MUG&vendor_id={bob_shop}")).await,
        HashSet::from([bob_mug, towel])
    );
    assert_eq!(found("?q=bob-7").await, HashSet::from([bob_mug]));
    // Wildcards in the text are plain characters.
    for q in ["100%25", "%25", "_", "Mu_"] {
        let expected = if q == "Mu_" {
            HashSet::new()
        } else {
            HashSet::from([towel])
        };
        assert_eq!(found(&format!("?q={q}")).await, expected, "q={q}");
    }
    assert!(
        found(&format!("?vendor_id={}", Uuid::now_v7()))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn bad_catalog_parameters_are_problems() {
    let fleet = Harness::start().await;
    let client = fleet.client();
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
        client
            .catalog(&format!("?{query}"))
            .await
            .expect_problem(status, field);
    }
    let long = "q".repeat(201);
    client
        .catalog(&format!("?q={long}"))
        .await
        .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, Some("q"));
}

fn level(
    product_id: Uuid,
    vendor_id: Uuid,
    on_hand: i64,
    reserved: i64,
    version: i64,
) -> StockLevel {
    StockLevel {
        product_id,
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

/// The stock on hand a read of the product shows.
async fn on_hand(fleet: &Harness, product_id: Uuid) -> Option<i64> {
    let product = fleet.client().product(product_id).await.expect_ok();
    product.stock.map(|s| s.on_hand)
}

#[tokio::test]
async fn stock_reported_by_inventory_shows_in_cached_reads_and_the_catalog() {
    let fleet = Harness::start().await;
    let (owner, vendor_id) = fleet.vendor_owner("Ada").await;
    let id = list(&fleet, &owner, vendor_id, "MUG-1", "Mug").await;
    assert_eq!(on_hand(&fleet, id).await, None);

    fleet
        .publish(&Envelope::new(
            Service::Inventory,
            InventoryCreated {
                level: level(id, vendor_id, 25, 0, 1),
                low_stock_threshold: 5,
            },
        ))
        .await;
    eventually(
        "the created stock in product reads",
        Duration::from_secs(10),
        || async { (on_hand(&fleet, id).await == Some(25)).then_some(()) },
    )
    .await;

    fleet
        .publish(&adjusted(vec![level(id, vendor_id, 30, 4, 2)], 1))
        .await;
    eventually(
        "the adjusted stock in product reads",
        Duration::from_secs(10),
        || async { (on_hand(&fleet, id).await == Some(30)).then_some(()) },
    )
    .await;
    let client = fleet.client();
    let read = client.product(id).await.expect_ok();
    let figures = read.stock.expect("stock figures");
    assert_eq!(figures.reserved, 4);
    assert_eq!(figures.available, 26);
    assert_eq!(read.revision, 1, "stock is not a product change");

    let page = client
        .catalog(&format!("?vendor_id={vendor_id}"))
        .await
        .expect_ok();
    let listed = page.items[0].stock.as_ref().expect("stock figures");
    assert_eq!(listed.available, 26);
}

#[tokio::test]
async fn an_older_stock_report_never_overwrites_a_newer_one() {
    let fleet = Harness::start().await;
    let (owner, vendor_id) = fleet.vendor_owner("Ada").await;
    let id = list(&fleet, &owner, vendor_id, "MUG-1", "Mug").await;
    let db = fleet.vendor_db().await;

    // The older report comes from a host whose clock runs ahead: its timestamp is later.
    let newer = adjusted(vec![level(id, vendor_id, 7, 0, 10)], 10);
    let older = adjusted(vec![level(id, vendor_id, 3, 0, 5)], 60);
    fleet.publish(&newer).await;
    eventually("the newer report", Duration::from_secs(10), || async {
        (on_hand(&fleet, id).await == Some(7)).then_some(())
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
    assert_eq!(on_hand(&fleet, id).await, Some(7));
    let page = fleet.client().catalog("").await.expect_ok();
    let listed = page.items[0].stock.as_ref().expect("stock figures");
    assert_eq!(listed.on_hand, 7);

    // Delivered again, the newer report changes nothing either (the inbox absorbs it).
    fleet.publish(&newer).await;
    fleet
        .publish(&adjusted(vec![level(id, vendor_id, 9, 1, 20)], 20))
        .await;
    eventually("the newest report", Duration::from_secs(10), || async {
        (on_hand(&fleet, id).await == Some(9)).then_some(())
    })
    .await;
}
