//! Delivery guarantees: once per event, failures that block no one, outages that lose
//! nothing.

use mp_events::catalog::OrderStatus;
use mp_events::{Envelope, Service};
use mp_test_support::eventually;
use mp_test_support::smtp::SmtpSink;

use crate::harness::{Harness, WAIT, order_updated};

#[tokio::test]
async fn a_redelivered_event_sends_nothing_twice() {
    let h = Harness::start().await;
    let ada = h.customer("Ada", Some("+4930123456")).await;
    let event = Envelope::new(
        Service::Order,
        order_updated(ada.customer_id, OrderStatus::Cancelled),
    );
    h.publish_envelope(&event).await;
    h.settled(event.id, 2).await;
    h.publish_envelope(&event).await;
    h.publish_envelope(&event).await;

    // A later event of someone else: once it is out, the redeliveries were handled.
    let bob = h.customer("Bob", None).await;
    let marker = h
        .publish(
            Service::Order,
            order_updated(bob.customer_id, OrderStatus::Cancelled),
        )
        .await;
    h.settled(marker.id, 1).await;

    let to_ada: Vec<_> = h
        .emails()
        .into_iter()
        .filter(|m| m.rcpt_to == vec![ada.email.clone()])
        .collect();
    assert_eq!(to_ada.len(), 1, "one email to Ada");
    assert_eq!(h.sms.messages().len(), 1, "one SMS to Ada");
    let rows = h.rows().await;
    assert_eq!(rows.iter().filter(|r| r.event_id == event.id).count(), 2);
}

#[tokio::test]
async fn a_missing_contact_fails_with_a_reason_and_other_customers_still_get_theirs() {
    let h = Harness::start().await;
    let stranger = uuid::Uuid::now_v7();
    let lost = h
        .publish(
            Service::Order,
            order_updated(stranger, OrderStatus::Confirmed),
        )
        .await;
    let ada = h.customer("Ada", None).await;
    let fine = h
        .publish(
            Service::Order,
            order_updated(ada.customer_id, OrderStatus::Confirmed),
        )
        .await;

    let failed = h.settled(lost.id, 2).await;
    for row in &failed {
        assert_eq!(row.status, "failed", "{row:?}");
        assert_eq!(row.recipient, None);
        let reason = row.last_error.as_deref().unwrap_or_default();
        assert!(
            reason.contains("no contact details") && reason.contains(&stranger.to_string()),
            "{reason}"
        );
    }
    let sent = h.settled(fine.id, 1).await;
    assert_eq!(sent[0].status, "sent");
    assert_eq!(h.emails().len(), 1);
    assert_eq!(
        h.api()
            .metric(
                "notifications_failed_total",
                &[("channel", "email"), ("template", "order_confirmed")]
            )
            .await,
        1.0
    );
}

#[tokio::test]
async fn while_the_smtp_server_is_down_emails_wait_and_go_out_once_it_is_back() {
    let mut h = Harness::start().await;
    let ada = h.customer("Ada", Some("+4930123456")).await;
    let port = h.smtp_port;
    h.smtp.take().unwrap().stop().await;

    let event = h
        .publish(
            Service::Order,
            order_updated(ada.customer_id, OrderStatus::Confirmed),
        )
        .await;
    // More attempts than SEND_MAX_ATTEMPTS: an outage never fails a message.
    let waiting = eventually(
        "the email to be retried while SMTP is down",
        WAIT,
        || async {
            h.rows()
                .await
                .into_iter()
                .find(|r| r.event_id == event.id && r.channel == "email" && r.attempts >= 4)
        },
    )
    .await;
    assert_eq!(waiting.status, "pending");
    assert!(
        waiting
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("unavailable"),
        "{waiting:?}"
    );
    // The other channel does not wait for email.
    eventually("the SMS to go out meanwhile", WAIT, || async {
        (h.sms.messages().len() == 1).then_some(())
    })
    .await;
    assert!(
        h.api()
            .metric("notifications_retried_total", &[("channel", "email")])
            .await
            >= 3.0
    );

    h.smtp = Some(SmtpSink::start_on(port).await);
    let rows = h.settled(event.id, 2).await;
    assert!(rows.iter().all(|r| r.status == "sent"), "{rows:?}");
    assert_eq!(h.emails().len(), 1);
    assert_eq!(h.emails()[0].rcpt_to, vec![ada.email.clone()]);
}

#[tokio::test]
async fn replicas_share_the_work_and_send_each_message_once() {
    let h = Harness::start().await;
    let _replica = h.spawn_replica().await;
    let mut customers = Vec::new();
    for n in 0..6 {
        customers.push(h.customer(&format!("C{n}"), Some("+4930123456")).await);
    }
    let mut events = Vec::new();
    for c in &customers {
        for status in [OrderStatus::Confirmed, OrderStatus::Cancelled] {
            events.push(
                h.publish(Service::Order, order_updated(c.customer_id, status))
                    .await,
            );
        }
    }
    for event in &events {
        let rows = h.settled(event.id, 2).await;
        assert!(
            rows.iter().all(|r| r.status == "sent" && r.attempts == 1),
            "{rows:?}"
        );
    }
    let mut ids: Vec<_> = h.emails().iter().filter_map(|m| m.message_id()).collect();
    assert_eq!(ids.len(), 12, "one email per order change");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 12, "no message twice");
    assert_eq!(h.sms.messages().len(), 12);
}

#[tokio::test]
async fn a_message_whose_sender_died_is_sent_once_its_lease_runs_out() {
    let h = Harness::start().await;
    let id = uuid::Uuid::now_v7();
    // Claimed by a sender that stopped before recording anything; its lease is over.
    sqlx::query(
        "insert into notifications (id, event_id, event_type, channel, audience, recipient_id,
             recipient, template, subject, body_text, attempts, claimed_until)
         values ($1, $2, 'order.updated', 'email', 'customer', $3, 'ada@example.test',
                 'order_confirmed', 'Your order is confirmed', 'Thank you!', 1,
                 now() - interval '1 second')",
    )
    .bind(id)
    .bind(uuid::Uuid::now_v7())
    .bind(uuid::Uuid::now_v7())
    .execute(&h.db)
    .await
    .unwrap();
    let status = eventually("the orphaned message to be sent", WAIT, || async {
        let (status, attempts): (String, i32) =
            sqlx::query_as("select status, attempts from notifications where id = $1")
                .bind(id)
                .fetch_one(&h.db)
                .await
                .unwrap();
        (status != "pending").then_some((status, attempts))
    })
    .await;
    assert_eq!(status, ("sent".to_owned(), 2));
    let emails = h.emails();
    assert_eq!(emails.len(), 1);
    assert_eq!(
        emails[0].message_id(),
        Some(format!("<{id}@marketplace.test>"))
    );
}

#[tokio::test]
async fn a_refused_mailbox_is_retried_then_failed_with_the_reason_while_others_are_sent() {
    let h = Harness::start().await;
    let busy = h.customer("Busy", None).await;
    let gone = h.customer("Gone", None).await;
    let ada = h.customer("Ada", None).await;
    let smtp = h.smtp.as_ref().unwrap();
    smtp.refuse(&busy.email, "450 4.2.1 mailbox busy");
    smtp.refuse(&gone.email, "550 5.1.1 no such user");

    let busy_event = h
        .publish(
            Service::Order,
            order_updated(busy.customer_id, OrderStatus::Confirmed),
        )
        .await;
    let gone_event = h
        .publish(
            Service::Order,
            order_updated(gone.customer_id, OrderStatus::Confirmed),
        )
        .await;
    let ada_event = h
        .publish(
            Service::Order,
            order_updated(ada.customer_id, OrderStatus::Confirmed),
        )
        .await;

    // Refused for now: tried SEND_MAX_ATTEMPTS (3) times, then failed with the reply.
    let busy_row = &h.settled(busy_event.id, 1).await[0];
    assert_eq!(busy_row.status, "failed");
    assert_eq!(busy_row.attempts, 3);
    assert!(
        busy_row
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("mailbox busy"),
        "{busy_row:?}"
    );
    // Refused for good: failed at the first answer.
    let gone_row = &h.settled(gone_event.id, 1).await[0];
    assert_eq!(gone_row.status, "failed");
    assert_eq!(gone_row.attempts, 1);
    assert!(
        gone_row
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("no such user"),
        "{gone_row:?}"
    );
    let ada_row = &h.settled(ada_event.id, 1).await[0];
    assert_eq!(ada_row.status, "sent");
    let emails = h.emails();
    assert_eq!(emails.len(), 1);
    assert_eq!(emails[0].rcpt_to, vec![ada.email.clone()]);
    assert_eq!(
        h.api()
            .metric(
                "notifications_failed_total",
                &[("channel", "email"), ("template", "order_confirmed")]
            )
            .await,
        2.0
    );
    assert_eq!(
        h.api()
            .metric(
                "notifications_retried_total",
                &[("channel", "email"), ("template", "order_confirmed")]
            )
            .await,
        2.0
    );
}
