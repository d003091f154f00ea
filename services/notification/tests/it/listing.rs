//! GET /api/notifications: who sees what, filters and paging.

use mp_events::Service;
use mp_events::catalog::OrderStatus;
use mp_test_support::clients::Expect;
use mp_test_support::clients::Page;
use mp_test_support::clients::notification::Notification;
use reqwest::StatusCode;
use uuid::Uuid;

use crate::harness::{Harness, order_updated};

fn ids(page: &Page<Notification>) -> Vec<Uuid> {
    page.items.iter().map(|i| i.id).collect()
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
    let list = |token: String, query: String| {
        let client = h.client();
        async move { client.list(&token, &query).await.expect_ok() }
    };
    let items = list(ada_token, String::new()).await.items;
    assert_eq!(items.len(), 2);
    for item in &items {
        assert_eq!(item.order_id, Some(ada_order.order_id));
        assert_eq!(item.status, "sent");
        assert_eq!(item.attempts, 1);
        assert_eq!(item.template, "order_confirmed");
        assert!(item.sent_at.is_some_and(|at| at >= item.created_at));
    }
    let channels: Vec<_> = items.iter().map(|i| i.channel.as_str()).collect();
    assert!(channels.contains(&"email") && channels.contains(&"sms"));

    let bob_token = h.tokens.user(bob.customer_id, &["customer"], vec![]);
    let items = list(bob_token, String::new()).await.items;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].template, "order_rejected");
    assert_eq!(items[0].recipient.as_deref(), Some(bob.email.as_str()));

    let member = h.tokens.user(
        Uuid::now_v7(),
        &["customer", "vendor"],
        vec![vendor.vendor_id],
    );
    let items = list(member, String::new()).await.items;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].template, "low_stock");
    assert_eq!(items[0].recipient.as_deref(), Some("orders@tea.test"));

    let outsider = h.tokens.user(
        Uuid::now_v7(),
        &["customer", "vendor"],
        vec![Uuid::now_v7()],
    );
    assert!(list(outsider, String::new()).await.items.is_empty());

    let admin = h
        .tokens
        .user(Uuid::now_v7(), &["customer", "admin"], vec![]);
    let all = list(admin.clone(), String::new()).await;
    assert_eq!(all.items.len(), 4);
    assert!(all.next_cursor.is_none());

    let sms = list(
        admin.clone(),
        format!("?channel=sms&order_id={}", ada_order.order_id),
    )
    .await;
    assert_eq!(sms.items.len(), 1);
    assert_eq!(sms.items[0].recipient.as_deref(), Some("+4930123456"));

    // Paging: one at a time, newest first, through all four.
    let mut seen = Vec::new();
    let mut query = "?limit=1".to_owned();
    loop {
        let page = list(admin.clone(), query).await;
        seen.extend(ids(&page));
        match page.next_cursor {
            Some(cursor) => query = format!("?limit=1&cursor={cursor}"),
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
    let problem = h
        .client()
        .list(&token, "?channel=fax&order_id=nope&limit=0&cursor=zzz")
        .await
        .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, None);
    for field in ["channel", "order_id", "limit", "cursor"] {
        assert!(problem.names(field), "{field} in {problem}");
    }
}
