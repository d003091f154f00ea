//! GET /api/notifications: who sees what, filters and paging.

use mp_events::Service;
use mp_events::catalog::OrderStatus;
use serde_json::Value;
use uuid::Uuid;

use crate::harness::{Harness, order_updated};

fn ids(body: &Value) -> Vec<String> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn customers_see_their_own_vendor_members_their_vendors_and_admins_all() {
    let h = Harness::start().await;
    let ada = h.customer("Ada", Some("+4930123456")).await;
    let bob = h.customer("Bob", None).await;
    let vendor = h.vendor("Tea Shop", "orders@tea.test").await;
    let ada_order = order_updated(ada.customer_id, OrderStatus::Confirmed);
    let e1 = h.publish(Service::Order, ada_order.clone()).await;
    let e2 = h
        .publish(
            Service::Order,
            order_updated(bob.customer_id, OrderStatus::Rejected),
        )
        .await;
    let e3 = h
        .publish(
            Service::Inventory,
            mp_events::catalog::InventoryLowStock {
                product_id: Uuid::now_v7(),
                vendor_id: vendor.vendor_id,
                sku: "TEA-1".into(),
                name: "Earl Grey".into(),
                available: 2,
                low_stock_threshold: 5,
                at: chrono::Utc::now(),
            },
        )
        .await;
    h.settled(e1.id, 2).await;
    h.settled(e2.id, 1).await;
    h.settled(e3.id, 1).await;

    let ada_token = h.tokens.user(ada.customer_id, &["customer"], vec![]);
    let (status, body) = h.get("/api/notifications", Some(&ada_token)).await;
    assert_eq!(status, 200, "{body}");
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    for item in items {
        assert_eq!(item["order_id"], ada_order.order_id.to_string());
        assert_eq!(item["status"], "sent");
        assert_eq!(item["attempts"], 1);
        assert_eq!(item["template"], "order_confirmed");
        assert!(item["sent_at"].is_string() && item["created_at"].is_string());
    }
    let channels: Vec<_> = items
        .iter()
        .map(|i| i["channel"].as_str().unwrap())
        .collect();
    assert!(channels.contains(&"email") && channels.contains(&"sms"));

    let bob_token = h.tokens.user(bob.customer_id, &["customer"], vec![]);
    let (_, body) = h.get("/api/notifications", Some(&bob_token)).await;
    assert_eq!(body["items"].as_array().unwrap().len(), 1);
    assert_eq!(body["items"][0]["template"], "order_rejected");
    assert_eq!(body["items"][0]["recipient"], bob.email.as_str());

    let member = h.tokens.user(
        Uuid::now_v7(),
        &["customer", "vendor"],
        vec![vendor.vendor_id],
    );
    let (_, body) = h.get("/api/notifications", Some(&member)).await;
    assert_eq!(body["items"].as_array().unwrap().len(), 1);
    assert_eq!(body["items"][0]["template"], "low_stock");
    assert_eq!(body["items"][0]["recipient"], "orders@tea.test");

    let outsider = h.tokens.user(
        Uuid::now_v7(),
        &["customer", "vendor"],
        vec![Uuid::now_v7()],
    );
    let (_, body) = h.get("/api/notifications", Some(&outsider)).await;
    assert_eq!(body["items"], Value::Array(vec![]));

    let admin = h
        .tokens
        .user(Uuid::now_v7(), &["customer", "admin"], vec![]);
    let (_, all) = h.get("/api/notifications", Some(&admin)).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 4);
    assert_eq!(all["next_cursor"], Value::Null);

    let (_, sms) = h
        .get(
            &format!(
                "/api/notifications?channel=sms&order_id={}",
                ada_order.order_id
            ),
            Some(&admin),
        )
        .await;
    assert_eq!(sms["items"].as_array().unwrap().len(), 1);
    assert_eq!(sms["items"][0]["recipient"], "+4930123456");

    // Paging: one at a time, newest first, through all four.
    let mut seen = Vec::new();
    let mut path = "/api/notifications?limit=1".to_owned();
    loop {
        let (status, page) = h.get(&path, Some(&admin)).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/notifications?limit=1&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ids(&all));
}

#[tokio::test]
async fn listing_needs_a_token_and_valid_filters() {
    let h = Harness::start().await;
    let (status, body) = h.get("/api/notifications", None).await;
    assert_eq!(status, 401, "{body}");

    let token = h.tokens.user(Uuid::now_v7(), &["customer"], vec![]);
    let (status, body) = h
        .get(
            "/api/notifications?channel=fax&order_id=nope&limit=0&cursor=zzz",
            Some(&token),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let text = body.to_string();
    for field in ["channel", "order_id", "limit", "cursor"] {
        assert!(text.contains(&format!("\"{field}\"")), "{field} in {text}");
    }
}
