//! DESIGN flow 1 across three services and RabbitMQ: a vendor member lists a product, the
//! stock item appears in inventory, changes propagate, stock figures come back to the
//! catalog, and the owner's refreshed token manages the stock.
//!
//! Outcomes only, each awaited with a generous deadline: how fast an event travels is a
//! figure of `make bench` (the event hop), not a test, which a loaded machine would fail.

use std::time::Duration;

use mp_events::{Currency, Money, Service};
use mp_test_support::clients::Expect;
use mp_test_support::clients::customer::{CustomerApi, Register};
use mp_test_support::clients::inventory::{Adjustment, InventoryApi};
use mp_test_support::clients::vendor::{CreateProduct, CreateVendor, VendorApi};
use mp_test_support::{TestEnv, TestService, eventually};
use serde_json::json;

const ADMIN_EMAIL: &str = "root@marketplace.test";
const ADMIN_PASSWORD: &str = "admin password for tests";
const PASSWORD: &str = "correct horse battery";
/// Longest wait for an event's effect in another service.
const DEADLINE: Duration = Duration::from_secs(30);

struct Fleet {
    customer: CustomerApi,
    vendor: VendorApi,
    inventory: InventoryApi,
    // The services stop before the environment drops its schemas.
    _services: [TestService; 3],
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
        customer: CustomerApi(customer.api()),
        vendor: VendorApi(vendor.api()),
        inventory: InventoryApi(inventory.api()),
        _services: [customer, vendor, inventory],
        _env: env,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_product_becomes_stock_and_changes_flow_between_vendor_and_inventory() {
    let f = fleet().await;
    f.customer
        .register(&Register {
            email: "owner@shop.test".into(),
            password: PASSWORD.into(),
            name: "Owner".into(),
            phone: None,
        })
        .await
        .expect_ok();
    let owner = f
        .customer
        .login("owner@shop.test", PASSWORD)
        .await
        .expect_ok();
    let admin = f
        .customer
        .login(ADMIN_EMAIL, ADMIN_PASSWORD)
        .await
        .expect_ok()
        .access_token;

    let vendor = f
        .vendor
        .create_vendor(
            Some(&owner.access_token),
            &CreateVendor {
                name: "Tea House".into(),
                email: "tea@shop.test".into(),
                phone: Some("+4930123456".into()),
            },
        )
        .await
        .expect_ok();
    let product = f
        .vendor
        .create_product(
            &owner.access_token,
            vendor.id,
            &CreateProduct {
                sku: "TEA-1".into(),
                name: "Sencha".into(),
                description: "Green tea, 100 g".into(),
                price: Money::new(850, Currency::EUR),
                initial_stock: 25,
                low_stock_threshold: 5,
            },
        )
        .await
        .expect_ok();

    // Flow 1: the stock item appears, through RabbitMQ.
    let stock = eventually("the stock item", DEADLINE, || async {
        f.inventory.stock(&admin, product.id).await.ok()
    })
    .await;
    assert_eq!((stock.on_hand, stock.available), (25, 25));
    assert_eq!(stock.vendor_id, vendor.id);
    assert_eq!(stock.low_stock_threshold, 5);

    // A change reaches the catalog read at once and the stock item eventually.
    f.vendor
        .update_product(
            Some(&owner.access_token),
            product.id,
            &json!({"price": {"amount": 990, "currency": "EUR"}, "name": "Sencha Superior",
                    "low_stock_threshold": 8}),
        )
        .await
        .expect_ok();
    let read = f.vendor.product(product.id).await.expect_ok();
    assert_eq!(read.price, Money::new(990, Currency::EUR));
    eventually("the stock item's new metadata", DEADLINE, || async {
        let stock = f.inventory.stock(&admin, product.id).await.ok()?;
        (stock.low_stock_threshold == 8 && stock.name == "Sencha Superior").then_some(())
    })
    .await;

    // Stock figures come back to the catalog.
    let on_hand = |expected: i64| {
        let f = &f;
        async move {
            let read = f.vendor.product(product.id).await.ok()?;
            (read.stock?.on_hand == expected).then_some(())
        }
    };
    eventually("stock in the catalog", DEADLINE, || on_hand(25)).await;

    // The owner's refreshed token carries the vendor and manages its stock.
    let refreshed = f
        .customer
        .refresh(&owner.refresh_token)
        .await
        .expect_ok()
        .access_token;
    f.inventory
        .adjust(
            &refreshed,
            product.id,
            &Adjustment {
                delta: -18,
                reason: "damaged in storage".into(),
            },
        )
        .await
        .expect_ok();
    eventually("the adjusted stock in the catalog", DEADLINE, || on_hand(7)).await;
    let movements = f
        .inventory
        .movements(&refreshed, product.id, "")
        .await
        .expect_ok();
    let deltas: i64 = movements.items.iter().map(|m| m.delta).sum();
    assert_eq!(deltas, 7, "{movements:?}");
}
