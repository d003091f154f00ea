//! DESIGN flows 2, 3 and 5 across the six services: a cart checked out is charged once,
//! its reservation becomes a sale in inventory's ledger, the order is confirmed and the
//! customer is emailed and texted once; the vendor ships it and the customer hears
//! about that too. Retried and concurrent checkouts make one order and one charge;
//! scarce stock is never oversold.

use mp_events::Service;
use mp_integration_tests::{Fleet, WAIT};
use mp_test_support::eventually;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

/// Notifications for the order: `(template, channel)`, sorted.
async fn notifications(db: &PgPool, order_id: Uuid) -> Vec<(String, String)> {
    sqlx::query_as(
        "select template, channel from notifications where order_id = $1
         order by template, channel",
    )
    .bind(order_id)
    .fetch_all(db)
    .await
    .unwrap()
}

async fn charges(db: &PgPool, order_id: Uuid) -> i64 {
    sqlx::query_scalar(
        "select count(*) from payments where order_id = $1 and kind = 'charge'
         and status = 'succeeded'",
    )
    .bind(order_id)
    .fetch_one(db)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_is_charged_once_commits_its_stock_and_tells_the_customer_once() {
    let f = Fleet::start().await;
    let owner = f.register("Tea Owner").await;
    let (vendor_id, owner) = f.open_vendor(&owner, "Tea House").await;
    let product = f.product(&owner, vendor_id, 10, 850).await;
    let customer = f.register("Ada Lovelace").await;

    let order_id = f.shop(&customer, &[(product, 3)], "tok_visa").await;
    let order = f.wait_order(&customer, order_id, "confirmed").await;
    assert_eq!(order["total"], json!({"amount": 3060, "currency": "EUR"}));
    let history: Vec<&str> = order["status_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["to"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["pending", "paid", "confirmed"]);

    let order_db = f.db(Service::Order).await;
    assert_eq!(charges(&order_db, order_id).await, 1);
    let (status, stock) = f
        .inventory
        .call(
            Method::GET,
            &format!("/api/inventory/{product}"),
            Some(&owner.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{stock}");
    assert_eq!(
        (stock["on_hand"].as_i64(), stock["reserved"].as_i64()),
        (Some(7), Some(0))
    );
    let (_, movements) = f
        .inventory
        .call(
            Method::GET,
            &format!("/api/inventory/{product}/movements"),
            Some(&owner.token),
            None,
        )
        .await;
    let sale: Vec<&Value> = movements["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["reference"] == order_id.to_string())
        .collect();
    assert_eq!(sale.len(), 1, "{movements}");
    assert_eq!(sale[0]["delta"], -3);

    let notification_db = f.db(Service::Notification).await;
    let sent = eventually("the confirmation email and SMS", WAIT, || async {
        let n = notifications(&notification_db, order_id).await;
        (n.len() >= 2).then_some(n)
    })
    .await;
    assert_eq!(
        sent,
        [
            ("order_confirmed".to_owned(), "email".to_owned()),
            ("order_confirmed".to_owned(), "sms".to_owned())
        ]
    );

    // The vendor ships; the customer is told once more, and the order is delivered.
    let (status, body) = f
        .order
        .call(
            Method::POST,
            &format!("/api/orders/{order_id}/ship"),
            Some(&owner.token),
            Some(json!({"carrier": "DHL", "tracking_number": "JJD0001"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"], "shipped");
    eventually("the shipment email and SMS", WAIT, || async {
        let n = notifications(&notification_db, order_id).await;
        (n.iter().filter(|(t, _)| t == "order_shipped").count() == 2).then_some(())
    })
    .await;
    let (status, body) = f
        .order
        .call(
            Method::POST,
            &format!("/api/orders/{order_id}/deliver"),
            Some(&owner.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_card_releases_the_reservation_and_tells_the_customer() {
    let f = Fleet::start().await;
    let owner = f.register("Tea Owner").await;
    let (vendor_id, owner) = f.open_vendor(&owner, "Tea House").await;
    let product = f.product(&owner, vendor_id, 4, 500).await;
    let customer = f.register("Grace Hopper").await;

    let order_id = f.shop(&customer, &[(product, 4)], "tok_declined").await;
    f.wait_order(&customer, order_id, "payment_failed").await;
    eventually("the stock to be free again", WAIT, || async {
        let (_, stock) = f
            .inventory
            .call(
                Method::GET,
                &format!("/api/inventory/{product}"),
                Some(&owner.token),
                None,
            )
            .await;
        (stock["available"] == 4 && stock["on_hand"] == 4).then_some(())
    })
    .await;
    let notification_db = f.db(Service::Notification).await;
    let sent = eventually("the failure email and SMS", WAIT, || async {
        let n = notifications(&notification_db, order_id).await;
        (n.len() >= 2).then_some(n)
    })
    .await;
    assert!(
        sent.iter().all(|(t, _)| t == "order_payment_failed"),
        "{sent:?}"
    );
    assert_eq!(charges(&f.db(Service::Order).await, order_id).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_and_concurrent_checkouts_of_one_cart_make_one_order_and_one_charge() {
    let f = Fleet::start().await;
    let owner = f.register("Tea Owner").await;
    let (vendor_id, owner) = f.open_vendor(&owner, "Tea House").await;
    let product = f.product(&owner, vendor_id, 10, 850).await;
    let customer = f.register("Ada Lovelace").await;
    let (_, cart) = f
        .cart
        .call(Method::POST, "/api/carts", Some(&customer.token), None)
        .await;
    let cart_id = cart["id"].as_str().unwrap().to_owned();
    let (status, body) = f
        .cart
        .call(
            Method::POST,
            &format!("/api/carts/{cart_id}/items"),
            Some(&customer.token),
            Some(json!({"product_id": product, "quantity": 2})),
        )
        .await;
    assert!(status.is_success(), "{body}");

    // Two checkouts at once under different keys, then the first key again.
    let (a, b) = tokio::join!(
        f.checkout(&customer, &cart_id, "key-a", "tok_visa"),
        f.checkout(&customer, &cart_id, "key-b", "tok_visa")
    );
    let accepted: Vec<&Value> = [&a, &b]
        .into_iter()
        .filter(|(s, _)| *s == StatusCode::ACCEPTED)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(accepted.len(), 1, "{a:?} {b:?}");
    let order_id: Uuid = accepted[0]["order_id"].as_str().unwrap().parse().unwrap();
    let winner = if a.0 == StatusCode::ACCEPTED {
        "key-a"
    } else {
        "key-b"
    };
    let (status, again) = f.checkout(&customer, &cart_id, winner, "tok_visa").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(again["order_id"], order_id.to_string());

    f.wait_order(&customer, order_id, "confirmed").await;
    let order_db = f.db(Service::Order).await;
    assert_eq!(charges(&order_db, order_id).await, 1);
    let orders: i64 = sqlx::query_scalar("select count(*) from orders")
        .fetch_one(&order_db)
        .await
        .unwrap();
    assert_eq!(orders, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_customers_racing_for_the_last_units_never_oversell() {
    let f = Fleet::start().await;
    let owner = f.register("Tea Owner").await;
    let (vendor_id, owner) = f.open_vendor(&owner, "Tea House").await;
    let product = f.product(&owner, vendor_id, 3, 850).await;
    let (ada, grace) = (f.register("Ada").await, f.register("Grace").await);

    let add = |customer: &mp_integration_tests::User| {
        let token = customer.token.clone();
        let f = &f;
        async move {
            let (_, cart) = f
                .cart
                .call(Method::POST, "/api/carts", Some(&token), None)
                .await;
            let cart_id = cart["id"].as_str().unwrap().to_owned();
            let (status, body) = f
                .cart
                .call(
                    Method::POST,
                    &format!("/api/carts/{cart_id}/items"),
                    Some(&token),
                    Some(json!({"product_id": product, "quantity": 2})),
                )
                .await;
            (cart_id, status, body)
        }
    };
    let (first, second) = tokio::join!(add(&ada), add(&grace));
    let held: Vec<_> = [(&ada, &first), (&grace, &second)]
        .into_iter()
        .filter(|(_, r)| r.1.is_success())
        .collect();
    assert_eq!(held.len(), 1, "{first:?} {second:?}");
    let stopped = if first.1.is_success() {
        &second
    } else {
        &first
    };
    assert_eq!(stopped.1, StatusCode::CONFLICT, "{stopped:?}");
    assert_eq!(stopped.2["available"], 1);

    let (customer, (cart_id, _, _)) = held[0];
    let key = Uuid::new_v4().to_string();
    let (status, body) = f.checkout(customer, cart_id, &key, "tok_visa").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let order_id: Uuid = body["order_id"].as_str().unwrap().parse().unwrap();
    f.wait_order(customer, order_id, "confirmed").await;
    let (_, stock) = f
        .inventory
        .call(
            Method::GET,
            &format!("/api/inventory/{product}"),
            Some(&owner.token),
            None,
        )
        .await;
    assert_eq!(
        (stock["on_hand"].as_i64(), stock["available"].as_i64()),
        (Some(1), Some(1))
    );
}
