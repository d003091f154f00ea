//! The transactional outbox and its relay: atomicity with the transaction, a relay
//! that dies mid-batch, competing relays, pruning, and an event whose queue is missing.

use std::time::Duration;

use mp_events::{Relay, Service};
use mp_test_support::eventually;

use crate::rig::{Rig, vendor_created};

#[tokio::test]
async fn an_event_is_published_when_its_transaction_commits_and_never_when_it_rolls_back() {
    let rig = Rig::new().await;
    rig.start_relay();
    rig.start_consumer();

    let mut tx = rig.db.begin().await.unwrap();
    mp_events::enqueue(&mut tx, Service::Vendor, vendor_created("rolled-back"))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    rig.enqueue("committed").await;

    rig.wait_for_effect("committed").await;
    // A later event as a positive marker: the relay publishes in outbox order, so once
    // the marker is handled, anything written before it would have been too.
    rig.enqueue("marker").await;
    rig.wait_for_effect("marker").await;
    assert_eq!(rig.effects("rolled-back").await, 0);
    assert!(rig.deliveries("rolled-back").is_empty());
    rig.wait_outbox_drained().await;
}

#[tokio::test]
async fn a_relay_that_dies_after_publishing_causes_a_duplicate_that_the_inbox_absorbs() {
    let rig = Rig::new().await;
    rig.start_consumer();
    let id = rig.enqueue("crash").await;

    // A relay claims and publishes, then dies before marking the row sent. (The lease is
    // long enough that it still runs after the publish on a loaded machine.)
    let relay = rig.relay();
    let channel = rig.broker.confirm_channel().await.unwrap();
    let rows = Relay::claim(&rig.db, 10, Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    relay.publish(&channel, &rows).await.unwrap();
    // While its claim lasts, no other relay takes the row.
    assert!(
        Relay::claim(&rig.db, 10, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );

    // Once the lease is over, the next relay publishes the row again.
    rig.start_relay();
    eventually("the second delivery", Duration::from_secs(30), || async {
        (rig.outcome("duplicate") == 1).then_some(())
    })
    .await;
    assert_eq!(rig.deliveries("crash").len(), 1, "the handler ran once");
    assert_eq!(rig.effects("crash").await, 1);
    let inbox: i64 = sqlx::query_scalar("select count(*) from inbox where event_id = $1")
        .bind(id)
        .fetch_one(&rig.db)
        .await
        .unwrap();
    assert_eq!(inbox, 1);
}

#[tokio::test]
async fn two_relays_never_publish_the_same_row() {
    let rig = Rig::new().await;
    rig.start_consumer();
    let mut tx = rig.db.begin().await.unwrap();
    for i in 0..300 {
        mp_events::enqueue(
            &mut tx,
            Service::Vendor,
            vendor_created(&format!("bulk-{i}")),
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();

    let (mut a, mut b) = (rig.relay(), rig.relay());
    a.settings.batch_size = 7;
    b.settings.batch_size = 7;
    tokio::spawn(a.run(rig.shutdown.clone()));
    tokio::spawn(b.run(rig.shutdown.clone()));

    eventually(
        "all 300 events handled",
        Duration::from_secs(20),
        || async {
            let n: i64 = sqlx::query_scalar("select count(*) from effects")
                .fetch_one(&rig.db)
                .await
                .unwrap();
            (n == 300).then_some(())
        },
    )
    .await;
    // A later event as a positive marker instead of a pause: once it is handled and
    // nothing is left unsent, both relays have gone past every bulk row.
    rig.enqueue("marker").await;
    rig.wait_for_effect("marker").await;
    rig.wait_outbox_drained().await;
    // The consumer counts an event after its transaction commits, so the marker's
    // effect can be visible a moment before its count: wait for the count.
    eventually(
        "the bulk and the marker counted",
        Duration::from_secs(20),
        || async { (rig.outcome("ok") > 300).then_some(()) },
    )
    .await;
    assert_eq!(rig.outcome("duplicate"), 0, "no row was published twice");
    assert_eq!(
        rig.outcome("ok"),
        300 + 1,
        "the bulk and the marker, once each"
    );
    // A relay counts a batch right after marking it sent: wait for the count too.
    eventually(
        "the published rows counted",
        Duration::from_secs(20),
        || async { (rig.metrics.outbox_published.get() > 300).then_some(()) },
    )
    .await;
    assert_eq!(rig.metrics.outbox_published.get(), 300 + 1);
}

#[tokio::test]
async fn published_outbox_rows_are_pruned_after_the_retention_and_unsent_ones_are_kept() {
    let rig = Rig::new().await;
    rig.start_consumer();
    rig.enqueue("sent").await;
    rig.start_relay();
    rig.wait_for_effect("sent").await;
    // Not yet published: nobody relays it (the relay is stopped first).
    rig.shutdown.cancel();
    let mut tx = rig.db.begin().await.unwrap();
    mp_events::enqueue(&mut tx, Service::Vendor, vendor_created("unsent"))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let housekeeping = mp_events::outbox::Housekeeping {
        pool: rig.db.clone(),
        metrics: rig.metrics.clone(),
        settings: mp_events::outbox::RelaySettings {
            outbox_retention: Duration::ZERO,
            ..Default::default()
        },
    };
    housekeeping.once().await.unwrap();
    let left: Vec<String> = sqlx::query_scalar("select envelope->'payload'->>'name' from outbox")
        .fetch_all(&rig.db)
        .await
        .unwrap();
    assert_eq!(left, vec!["unsent".to_owned()]);
    assert_eq!(rig.metrics.outbox_pending.get(), 1);
}

/// The consuming queue is gone (deleted by hand); an event bound for it is returned by
/// RabbitMQ, not confirmed and dropped: it stays in the outbox, counted, and goes out
/// once the queue is declared again. (Published without `mandatory`, it was confirmed
/// and lost.)
#[tokio::test]
async fn an_event_whose_queue_is_missing_stays_unsent_until_the_queue_is_back() {
    let rig = Rig::new().await;
    // Every queue bound to vendor.created: the customer's and the notification service's.
    let channel = rig.broker.channel().await.unwrap();
    for service in [Service::Customer, Service::Notification] {
        channel
            .queue_delete(
                &rig.broker.topology().queue(service),
                lapin::options::QueueDeleteOptions::default(),
            )
            .await
            .unwrap();
    }
    rig.start_relay();
    let id = rig.enqueue("homeless").await;
    eventually("the event returned", Duration::from_secs(20), || async {
        (rig.metrics.outbox_unroutable.get() >= 1).then_some(())
    })
    .await;
    let unsent: bool = sqlx::query_scalar("select published_at is null from outbox where id = $1")
        .bind(id)
        .fetch_one(&rig.db)
        .await
        .unwrap();
    assert!(unsent, "a returned event stays in the outbox");

    let conn = rig.broker.connection().await.unwrap();
    rig.broker
        .topology()
        .declare(&conn, Some(Service::Customer))
        .await
        .unwrap();
    rig.start_consumer();
    rig.wait_for_effect("homeless").await;
    assert_eq!(rig.effects("homeless").await, 1);
}
