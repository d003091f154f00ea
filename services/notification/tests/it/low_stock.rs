//! Low-stock alerts to the vendor's current contact, one per crossing.

use chrono::Utc;
use mp_events::catalog::{InventoryLowStock, VendorUpdated};
use mp_events::{Envelope, Service};
use mp_test_support::eventually;
use uuid::Uuid;

use crate::harness::{Harness, WAIT};

fn low_stock(vendor_id: Uuid, available: i64) -> InventoryLowStock {
    InventoryLowStock {
        product_id: Uuid::now_v7(),
        vendor_id,
        sku: "TEA-1".into(),
        name: "Earl Grey".into(),
        available,
        low_stock_threshold: 5,
        at: Utc::now(),
    }
}

#[tokio::test]
async fn each_low_stock_crossing_sends_the_vendor_exactly_one_email() {
    let h = Harness::start().await;
    let vendor = h.vendor("Tea Shop", "orders@tea.test").await;

    let first = Envelope::new(Service::Inventory, low_stock(vendor.vendor_id, 3));
    h.publish_envelope(&first).await;
    h.publish_envelope(&first).await;
    let second = h
        .publish(Service::Inventory, low_stock(vendor.vendor_id, 0))
        .await;
    h.settled(first.id, 1).await;
    h.settled(second.id, 1).await;

    let emails = h.emails();
    assert_eq!(emails.len(), 2, "one email per crossing event");
    let texts: Vec<String> = emails.iter().map(|m| m.text().unwrap()).collect();
    for (mail, text) in emails.iter().zip(&texts) {
        assert_eq!(mail.rcpt_to, vec!["orders@tea.test".to_owned()]);
        assert!(
            text.contains("Earl Grey") && text.contains("TEA-1"),
            "{text}"
        );
    }
    // The two events are handled concurrently, so their emails may arrive in either order.
    for available in [3, 0] {
        let line = format!("fell to {available}, at or below your threshold of 5");
        assert_eq!(
            texts.iter().filter(|t| t.contains(&line)).count(),
            1,
            "{texts:?}"
        );
    }
    assert!(h.sms.messages().is_empty(), "vendors get email only");
}

#[tokio::test]
async fn alerts_follow_the_newest_vendor_revision_whatever_order_the_updates_arrive_in() {
    let h = Harness::start().await;
    let vendor = h.vendor("Tea Shop", "old@tea.test").await;
    let update = |email: &str, revision| VendorUpdated {
        vendor_id: vendor.vendor_id,
        name: "Tea Shop".into(),
        email: email.into(),
        phone: None,
        revision,
    };
    h.publish(Service::Vendor, update("newest@tea.test", 3))
        .await;
    eventually("revision 3 applied", WAIT, || async {
        (h.contact_email("vendor", vendor.vendor_id).await.as_deref() == Some("newest@tea.test"))
            .then_some(())
    })
    .await;
    // Revision 2 arrives late, then a redelivered vendor.created: neither wins.
    let late = h
        .publish(Service::Vendor, update("stale@tea.test", 2))
        .await;
    h.publish(Service::Vendor, vendor.clone()).await;

    let alert = h
        .publish(Service::Inventory, low_stock(vendor.vendor_id, 1))
        .await;
    h.settled(alert.id, 1).await;
    assert_eq!(
        h.contact_email("vendor", vendor.vendor_id).await.as_deref(),
        Some("newest@tea.test"),
        "revision {} ignored",
        late.payload.revision
    );
    let emails = h.emails();
    assert_eq!(emails.len(), 1);
    assert_eq!(emails[0].rcpt_to, vec!["newest@tea.test".to_owned()]);
}
