//! DESIGN flow 1 across three services and RabbitMQ: a vendor member lists a product, the
//! stock item appears in inventory, changes propagate, stock figures come back to the
//! catalog, and the owner's refreshed token manages the stock.
//!
//! Outcomes only, each awaited with a generous deadline: how fast an event travels is a
//! figure of `make bench` (the event hop), not a test, which a loaded machine would fail.

use std::time::Duration;

use mp_events::Service;
use mp_test_support::{TestEnv, TestService, eventually};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const ADMIN_EMAIL: &str = "root@marketplace.test";
const ADMIN_PASSWORD: &str = "admin password for tests";
const PASSWORD: &str = "correct horse battery";
/// Longest wait for an event's effect in another service.
const DEADLINE: Duration = Duration::from_secs(30);

struct Fleet {
    customer: TestService,
    vendor: TestService,
    inventory: TestService,
    _env: TestEnv,
}

async fn fleet() -> Fleet {
    let env = TestEnv::new();
    let customer = env
        .spawn(Service::Customer, |common, listener, shutdown| {
            let mut config = customer::Config::with_common(common);
            config.settings.admin_email = Some(ADMIN_EMAIL.into());
            config.settings.admin_password = Some(ADMIN_PASSWORD.into());
            customer::run(config, listener, shutdown)
        })
        .await;
    let vendor = env
        .spawn(Service::Vendor, |common, listener, shutdown| {
            vendor::run(vendor::Config::with_common(common), listener, shutdown)
        })
        .await;
    let inventory = env
        .spawn(Service::Inventory, |common, listener, shutdown| {
            inventory::run(inventory::Config::with_common(common), listener, shutdown)
        })
        .await;
    Fleet {
        customer,
        vendor,
        inventory,
        _env: env,
    }
}

async fn login(svc: &TestService, email: &str, password: &str) -> Value {
    let (status, body) = svc
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"email": email, "password": password})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn token(body: &Value) -> &str {
    body["access_token"].as_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_product_becomes_stock_and_changes_flow_between_vendor_and_inventory() {
    let f = fleet().await;
    let (status, _) = f
        .customer
        .call(
            Method::POST,
            "/api/customers",
            None,
            Some(json!({"email": "owner@shop.test", "password": PASSWORD, "name": "Owner"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let owner = login(&f.customer, "owner@shop.test", PASSWORD).await;
    let admin = login(&f.customer, ADMIN_EMAIL, ADMIN_PASSWORD).await;

    let (status, vendor) = f
        .vendor
        .call(
            Method::POST,
            "/api/vendors",
            Some(token(&owner)),
            Some(json!({"name": "Tea House", "email": "tea@shop.test", "phone": "+4930123456"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{vendor}");
    let vendor_id = vendor["id"].as_str().unwrap().to_owned();

    let product_body = json!({
        "sku": "TEA-1", "name": "Sencha", "description": "Green tea, 100 g",
        "price": {"amount": 850, "currency": "EUR"}, "initial_stock": 25, "low_stock_threshold": 5
    });
    let (status, product) = f
        .vendor
        .call(
            Method::POST,
            &format!("/api/vendors/{vendor_id}/products"),
            Some(token(&owner)),
            Some(product_body),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{product}");
    let product_id = product["id"].as_str().unwrap().to_owned();
    let stock_path = format!("/api/inventory/{product_id}");

    // Flow 1: the stock item appears, through RabbitMQ.
    let stock = eventually("the stock item", DEADLINE, || async {
        let (status, body) = f
            .inventory
            .call(Method::GET, &stock_path, Some(token(&admin)), None)
            .await;
        (status == StatusCode::OK).then_some(body)
    })
    .await;
    assert_eq!(
        (stock["on_hand"].as_i64(), stock["available"].as_i64()),
        (Some(25), Some(25))
    );
    assert_eq!(stock["vendor_id"], json!(vendor_id));
    assert_eq!(stock["low_stock_threshold"], 5);

    // A change reaches the catalog read at once and the stock item eventually.
    let product_path = format!("/api/products/{product_id}");
    let (status, _) = f
        .vendor
        .call(Method::PATCH, &product_path, Some(token(&owner)), Some(json!({"price": {"amount": 990, "currency": "EUR"}, "name": "Sencha Superior", "low_stock_threshold": 8})))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, read) = f.vendor.call(Method::GET, &product_path, None, None).await;
    assert_eq!(read["price"], json!({"amount": 990, "currency": "EUR"}));
    eventually("the stock item's new metadata", DEADLINE, || async {
        let (_, body) = f
            .inventory
            .call(Method::GET, &stock_path, Some(token(&admin)), None)
            .await;
        (body["low_stock_threshold"] == 8 && body["name"] == "Sencha Superior").then_some(())
    })
    .await;

    // Stock figures come back to the catalog.
    eventually("stock in the catalog", DEADLINE, || async {
        let (_, read) = f.vendor.call(Method::GET, &product_path, None, None).await;
        (read["stock"]["on_hand"] == 25).then_some(())
    })
    .await;

    // The owner's refreshed token carries the vendor and manages its stock.
    let (status, refreshed) = f
        .customer
        .call(
            Method::POST,
            "/api/auth/refresh",
            None,
            Some(json!({"refresh_token": owner["refresh_token"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = f
        .inventory
        .call(
            Method::POST,
            &format!("{stock_path}/adjustments"),
            Some(token(&refreshed)),
            Some(json!({"delta": -18, "reason": "damaged in storage"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    eventually("the adjusted stock in the catalog", DEADLINE, || async {
        let (_, read) = f.vendor.call(Method::GET, &product_path, None, None).await;
        (read["stock"]["on_hand"] == 7).then_some(())
    })
    .await;
    let (_, movements) = f
        .inventory
        .call(
            Method::GET,
            &format!("{stock_path}/movements"),
            Some(token(&refreshed)),
            None,
        )
        .await;
    let deltas: Vec<i64> = movements["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["delta"].as_i64().unwrap())
        .collect();
    assert_eq!(deltas.iter().sum::<i64>(), 7, "{movements}");
}
