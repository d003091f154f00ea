//! Email over a real SMTP server: recipient, subject, HTML and text, Message-ID.

use mp_events::Service;
use mp_events::catalog::{CustomerUpdated, OrderShipped, OrderStatus};
use mp_test_support::eventually;

use crate::harness::{Harness, WAIT, order_updated};

#[tokio::test]
async fn a_confirmed_order_reaches_the_customer_by_email_with_its_summary_and_by_sms() {
    let h = Harness::start().await;
    let ada = h.customer("Ada", Some("+4930123456")).await;
    let order = order_updated(ada.customer_id, OrderStatus::Confirmed);
    let event = h.publish(Service::Order, order.clone()).await;

    let rows = h.settled(event.id, 2).await;
    assert!(
        rows.iter().all(|r| r.status == "sent" && r.attempts == 1),
        "{rows:?}"
    );
    let email_row = rows.iter().find(|r| r.channel == "email").unwrap();
    assert_eq!(email_row.recipient.as_deref(), Some(ada.email.as_str()));
    assert_eq!(email_row.template, "order_confirmed");
    assert_eq!(email_row.order_id, Some(order.order_id));

    let emails = h.emails();
    assert_eq!(emails.len(), 1);
    let mail = &emails[0];
    assert_eq!(mail.rcpt_to, vec![ada.email.clone()]);
    assert_eq!(mail.to(), vec![ada.email.clone()]);
    assert_eq!(mail.mail_from, "no-reply@marketplace.test");
    assert_eq!(
        mail.subject().as_deref(),
        Some(format!("Your order {} is confirmed", order.order_id).as_str())
    );
    assert_eq!(
        mail.message_id(),
        Some(format!("<{}@marketplace.test>", email_row.id)),
        "the Message-ID is derived from the notification id"
    );
    let text = mail.text().expect("a plain-text part");
    assert!(text.contains("Hello Ada"), "{text}");
    assert!(
        text.contains("2 x Earl Grey tea @ 12.50 USD = 25.00 USD"),
        "{text}"
    );
    assert!(
        text.contains("1 x Blue mug @ 8.99 USD = 8.99 USD"),
        "{text}"
    );
    assert!(text.contains("Total: 33.99 USD"), "{text}");
    let html = mail.html().expect("an HTML part");
    assert!(html.contains("<table"), "{html}");
    assert!(
        html.contains("Earl Grey tea") && html.contains("33.99 USD"),
        "{html}"
    );

    let sms = h.sms.messages();
    assert_eq!(sms.len(), 1);
    assert_eq!(sms[0].to, "+4930123456");
    assert!(
        sms[0].body.contains("confirmed") && sms[0].body.contains("33.99 USD"),
        "{}",
        sms[0].body
    );

    assert_eq!(
        h.api()
            .metric(
                "notifications_sent_total",
                &[("channel", "email"), ("template", "order_confirmed")]
            )
            .await,
        1.0
    );
    assert_eq!(
        h.api()
            .metric(
                "notifications_sent_total",
                &[("channel", "sms"), ("template", "order_confirmed")]
            )
            .await,
        1.0
    );
}

#[tokio::test]
async fn each_shipment_tells_carrier_and_tracking_number_and_paid_orders_are_not_told() {
    let h = Harness::start().await;
    let ada = h.customer("Ada", None).await;
    let order = order_updated(ada.customer_id, OrderStatus::Paid);
    let paid = h.publish(Service::Order, order.clone()).await;

    let mut events = Vec::new();
    for (n, (carrier, tracking)) in [("DHL", "JD014600003SE"), ("UPS", "1Z999AA10123456784")]
        .into_iter()
        .enumerate()
    {
        let shipped = OrderShipped {
            order_id: order.order_id,
            customer_id: ada.customer_id,
            shipment_id: uuid::Uuid::now_v7(),
            vendor_id: order.items[n].vendor_id,
            carrier: carrier.into(),
            tracking_number: tracking.into(),
            items: vec![order.items[n].clone()],
            order_shipped: n == 1,
        };
        events.push(h.publish(Service::Order, shipped).await);
    }
    for event in &events {
        // A customer without a phone number gets the email only.
        let rows = h.settled(event.id, 1).await;
        assert_eq!(rows[0].channel, "email");
        assert_eq!(rows[0].status, "sent");
    }
    let emails = h.emails();
    assert_eq!(emails.len(), 2, "one email per shipment");
    // The two shipments are sent concurrently: match each by its tracking number.
    for (carrier, tracking, item, other) in [
        ("DHL", "JD014600003SE", "Earl Grey tea", "Blue mug"),
        ("UPS", "1Z999AA10123456784", "Blue mug", "Earl Grey tea"),
    ] {
        let text = emails
            .iter()
            .filter_map(|m| m.text())
            .find(|t| t.contains(tracking))
            .unwrap_or_else(|| panic!("no email with tracking number {tracking}"));
        assert!(text.contains(carrier) && text.contains(item), "{text}");
        assert!(!text.contains(other), "only the shipment's items: {text}");
    }
    assert!(
        h.rows().await.iter().all(|r| r.event_id != paid.id),
        "a paid order is not told (confirmed follows)"
    );
    assert!(h.sms.messages().is_empty());
}

#[tokio::test]
async fn order_emails_go_to_the_newest_customer_profile_whatever_order_its_updates_arrive_in() {
    let h = Harness::start().await;
    let ada = h.customer("Ada", None).await;
    let update = |email: &str, revision| CustomerUpdated {
        customer_id: ada.customer_id,
        email: email.into(),
        name: "Ada".into(),
        phone: None,
        revision,
    };
    h.publish(Service::Customer, update("newest@ada.test", 3))
        .await;
    eventually("revision 3 applied", WAIT, || async {
        (h.contact_email("customer", ada.customer_id)
            .await
            .as_deref()
            == Some("newest@ada.test"))
        .then_some(())
    })
    .await;
    // Revision 2 arrives late, then a redelivered customer.created: neither wins.
    h.publish(Service::Customer, update("stale@ada.test", 2))
        .await;
    h.publish(Service::Customer, ada.clone()).await;

    let event = h
        .publish(
            Service::Order,
            order_updated(ada.customer_id, OrderStatus::Confirmed),
        )
        .await;
    h.settled(event.id, 1).await;
    let emails = h.emails();
    assert_eq!(emails.len(), 1);
    assert_eq!(emails[0].rcpt_to, vec!["newest@ada.test".to_owned()]);
}
