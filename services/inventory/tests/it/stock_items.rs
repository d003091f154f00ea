//! Stock items from vendor events: creation with the initial stock, revisions, and
//! events that arrive out of order or twice.

use mp_events::catalog::{InventoryCreated, VendorProductUpdated};
use mp_events::{Envelope, Service};
use mp_test_support::eventually;
use uuid::Uuid;

use crate::harness::{Harness, WAIT, product_created};

fn update_of(
    created: &mp_events::catalog::VendorProductCreated,
    revision: i64,
) -> VendorProductUpdated {
    VendorProductUpdated {
        product_id: created.product_id,
        vendor_id: created.vendor_id,
        sku: created.sku.clone(),
        name: format!("Teapot, revision {revision}"),
        price: created.price,
        active: true,
        low_stock_threshold: revision * 2,
        revision,
    }
}

async fn handled(h: &Harness, handler: &str, n: i64) {
    eventually(
        &format!("{n} event(s) handled by {handler}"),
        WAIT,
        || async {
            let count: i64 = sqlx::query_scalar("select count(*) from inbox where handler = $1")
                .bind(handler)
                .fetch_one(&h.db)
                .await
                .unwrap();
            (count >= n).then_some(())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_created_event_makes_a_stock_item_with_its_initial_stock() {
    let h = Harness::start().await;
    let vendor_id = Uuid::now_v7();

    // Each event published becomes a committed stock item.
    let mut product_id = Uuid::nil();
    for _ in 0..10 {
        let created = product_created(vendor_id, 12, 3);
        product_id = created.product_id;
        h.publish(Service::Vendor, created).await;
        eventually(&format!("a stock item for {product_id}"), WAIT, || async {
            let exists: bool = sqlx::query_scalar(
                "select exists (select 1 from stock_items where product_id = $1)",
            )
            .bind(product_id)
            .fetch_one(&h.db)
            .await
            .unwrap();
            exists.then_some(())
        })
        .await;
    }

    let stock = h.stock(product_id).await;
    assert_eq!(stock.product_id, product_id);
    assert_eq!(stock.vendor_id, vendor_id);
    assert_eq!(stock.on_hand, 12);
    assert_eq!(stock.reserved, 0);
    assert_eq!(stock.available, 12);
    assert_eq!(stock.low_stock_threshold, 3);

    let movements: Vec<(String, i64, i64)> = sqlx::query_as(
        "select kind, delta, on_hand_after from stock_movements where product_id = $1",
    )
    .bind(product_id)
    .fetch_all(&h.db)
    .await
    .unwrap();
    assert_eq!(movements, vec![("initial_stock".to_owned(), 12, 12)]);

    let created = h.wait_events::<InventoryCreated>(10).await;
    let last = created
        .iter()
        .find(|e| e.level.product_id == product_id)
        .expect("inventory.created for the product");
    assert_eq!((last.level.on_hand, last.level.available), (12, 12));
    assert_eq!(last.low_stock_threshold, 3);
    h.assert_ledger_matches().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_update_applies_only_a_newer_revision() {
    let h = Harness::start().await;
    let created = product_created(Uuid::now_v7(), 5, 1);
    h.publish(Service::Vendor, created.clone()).await;
    h.wait_for_item(created.product_id).await;

    let mut newer = update_of(&created, 3);
    newer.active = false;
    h.publish(Service::Vendor, newer).await;
    handled(&h, "inventory.update", 1).await;
    h.publish(Service::Vendor, update_of(&created, 2)).await;
    handled(&h, "inventory.update", 2).await;

    let stock = h.stock(created.product_id).await;
    assert_eq!(stock.low_stock_threshold, 6);
    assert_eq!(stock.name, "Teapot, revision 3");
    assert!(!stock.active);
    assert_eq!(stock.on_hand, 5, "metadata changes leave stock alone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_that_overtakes_its_create_does_no_harm() {
    let h = Harness::start().await;
    let created = product_created(Uuid::now_v7(), 12, 2);
    let product_id = created.product_id;

    h.publish(Service::Vendor, update_of(&created, 2)).await;
    handled(&h, "inventory.update", 1).await;
    assert_eq!(h.on_hand(product_id).await, 0, "no stock before the create");

    let create = Envelope::new(Service::Vendor, created.clone());
    h.publish_envelope(&create).await;
    h.wait_for_item(product_id).await;
    // The same create again (redelivered), and published a second time (new id).
    h.publish_envelope(&create).await;
    h.publish(Service::Vendor, created).await;
    handled(&h, "inventory.create", 2).await;
    eventually("the redelivery acked", WAIT, || async {
        (h.api().metric("events_consumed_total", &[]).await >= 4.0).then_some(())
    })
    .await;

    let stock = h.stock(product_id).await;
    assert_eq!(stock.on_hand, 12, "initial stock recorded once");
    assert_eq!(stock.low_stock_threshold, 4, "revision 2 beats revision 1");
    assert_eq!(stock.name, "Teapot, revision 2");
    let initial: i64 = sqlx::query_scalar(
        "select count(*) from stock_movements where product_id = $1 and kind = 'initial_stock'",
    )
    .bind(product_id)
    .fetch_one(&h.db)
    .await
    .unwrap();
    assert_eq!(initial, 1);
    assert_eq!(h.events::<InventoryCreated>().await.len(), 1);
    h.assert_ledger_matches().await;
}
