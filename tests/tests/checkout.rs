//! DESIGN flows 2, 3 and 5 across the six services: a cart checked out is charged once,
//! its reservation becomes a sale in inventory's ledger, the order is confirmed and the
//! customer is emailed and texted once; the vendor ships it and the customer hears
//! about that too. Retried and concurrent checkouts make one order and one charge;
//! scarce stock is never oversold.

use mp_events::{Currency, Money, Service};
use mp_integration_tests::{Fleet, User, WAIT};
use mp_test_support::clients::Expect;
use mp_test_support::clients::cart::AddItem;
use mp_test_support::clients::order::Ship;
use mp_test_support::eventually;
use reqwest::StatusCode;
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
    assert_eq!(order.total, Money::new(3060, Currency::EUR));
    assert_eq!(order.statuses(), ["pending", "paid", "confirmed"]);

    let order_db = f.db(Service::Order).await;
    assert_eq!(charges(&order_db, order_id).await, 1);
    let stock = f
        .api
        .inventory
        .stock(&owner.token, product)
        .await
        .expect_ok();
    assert_eq!((stock.on_hand, stock.reserved), (7, 0));
    let movements = f
        .api
        .inventory
        .movements(&owner.token, product, "")
        .await
        .expect_ok();
    let sale: Vec<_> = movements
        .items
        .iter()
        .filter(|m| m.reference.as_deref() == Some(&order_id.to_string()))
        .collect();
    assert_eq!(sale.len(), 1, "{movements:?}");
    assert_eq!(sale[0].delta, -3);

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
    let shipped = f
        .api
        .order
        .ship(&owner.token, order_id, &Ship::new("DHL", "JJD0001"))
        .await
        .expect_ok();
    assert_eq!(shipped.status, "shipped");
    eventually("the shipment email and SMS", WAIT, || async {
        let n = notifications(&notification_db, order_id).await;
        (n.iter().filter(|(t, _)| t == "order_shipped").count() == 2).then_some(())
    })
    .await;
    let delivered = f
        .api
        .order
        .deliver(&owner.token, order_id)
        .await
        .expect_ok();
    assert_eq!(delivered.status, "delivered");
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
        let stock = f.api.inventory.stock(&owner.token, product).await.ok()?;
        (stock.available == 4 && stock.on_hand == 4).then_some(())
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
    let cart_id = f.fill_cart(&customer.token, &[(product, 2)]).await;

    // Two checkouts at once under different keys, then the first key again.
    let (a, b) = tokio::join!(
        f.checkout(&customer, cart_id, "key-a", "tok_visa"),
        f.checkout(&customer, cart_id, "key-b", "tok_visa")
    );
    let accepted: Vec<Uuid> = [&a, &b]
        .into_iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|r| r.body.order_id)
        .collect();
    assert_eq!(accepted.len(), 1, "{a:?} {b:?}");
    let order_id = accepted[0];
    let winner = if a.is_ok() { "key-a" } else { "key-b" };
    let again = f
        .checkout(&customer, cart_id, winner, "tok_visa")
        .await
        .expect_ok();
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.body.order_id, order_id);

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

    let add = |customer: &User| {
        let token = customer.token.clone();
        let f = &f;
        async move {
            let cart = f.api.cart.open(&token).await.expect_ok().body;
            let added = f
                .api
                .cart
                .add_item(
                    &token,
                    cart.id,
                    &AddItem {
                        product_id: product,
                        quantity: 2,
                    },
                )
                .await;
            (cart.id, added)
        }
    };
    let (first, second) = tokio::join!(add(&ada), add(&grace));
    let held: Vec<_> = [(&ada, &first), (&grace, &second)]
        .into_iter()
        .filter(|(_, (_, added))| added.is_ok())
        .collect();
    assert_eq!(held.len(), 1, "{first:?} {second:?}");
    let stopped = if first.1.is_ok() { &second } else { &first };
    let problem = stopped.1.as_ref().expect_err("the second hold is refused");
    assert_eq!(problem.status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(problem["available"], 1);

    let (customer, (cart_id, _)) = held[0];
    let key = Uuid::new_v4().to_string();
    let order_id = f
        .checkout(customer, *cart_id, &key, "tok_visa")
        .await
        .expect_ok()
        .body
        .order_id;
    f.wait_order(customer, order_id, "confirmed").await;
    let stock = f
        .api
        .inventory
        .stock(&owner.token, product)
        .await
        .expect_ok();
    assert_eq!((stock.on_hand, stock.available), (1, 1));
}
