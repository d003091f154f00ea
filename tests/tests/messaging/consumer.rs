//! The consumer: retries with backoff, a handler that panics or hangs, its share of
//! the pool, and events that are not authentic.

use std::time::Duration;

use mp_events::{Envelope, Service};
use mp_test_support::eventually;
use uuid::Uuid;

use crate::rig::{Rig, vendor_created};

#[tokio::test]
async fn a_transient_failure_is_retried_with_growing_backoff_and_then_succeeds() {
    let rig = Rig::new().await;
    rig.script
        .lock()
        .unwrap()
        .transient_failures
        .insert("flaky".into(), 2);
    rig.start_relay();
    rig.start_consumer();
    rig.enqueue("flaky").await;

    rig.wait_for_effect("flaky").await;
    let seen = rig.deliveries("flaky");
    assert_eq!(seen.len(), 3);
    // Retry delays in tests are 50 ms, then 100 ms.
    assert!(
        seen[1] - seen[0] >= Duration::from_millis(50),
        "{:?}",
        seen[1] - seen[0]
    );
    assert!(
        seen[2] - seen[1] >= Duration::from_millis(100),
        "{:?}",
        seen[2] - seen[1]
    );
    assert_eq!(rig.outcome("retried"), 2);
    assert_eq!(rig.effects("flaky").await, 1);
}

#[tokio::test]
async fn a_handler_that_panics_or_hangs_is_retried_and_its_delivery_never_leaks() {
    let rig = Rig::new().await;
    {
        let mut script = rig.script.lock().unwrap();
        script.panics.insert("panicky".into(), 1);
        script.hangs.insert("stuck".into(), 1);
    }
    rig.start_relay();
    // Long enough that no handler but the hanging one meets it on a loaded machine.
    rig.start_consumer_with(|c| c.handler_timeout = Duration::from_secs(3));
    rig.enqueue("panicky").await;
    rig.enqueue("stuck").await;

    rig.wait_for_effect("panicky").await;
    rig.wait_for_effect("stuck").await;
    assert_eq!(
        rig.deliveries("panicky").len(),
        2,
        "a panic is retried once"
    );
    assert_eq!(
        rig.deliveries("stuck").len(),
        2,
        "a hang is cut off and retried"
    );
    // Retried, or (when PostgreSQL is too slow to answer the probe after a hang, as on a
    // loaded machine) put back as a dependency that is down: either way tried again.
    // A retry whose commit landed just as its time ran out counts once more, and its
    // redelivery finds the event handled (the deliveries above stay 2).
    assert!(rig.outcome("retried") + rig.outcome("unavailable") >= 2);
    assert!(rig.dead_letters().await.is_empty());
}

#[tokio::test]
async fn handlers_never_take_more_connections_than_half_the_pool() {
    let rig = Rig::new().await;
    rig.script.lock().unwrap().hold = Some(Duration::from_millis(50));
    let mut tx = rig.db.begin().await.unwrap();
    for i in 0..40 {
        mp_events::enqueue(&mut tx, Service::Vendor, vendor_created(&format!("c-{i}")))
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    rig.start_relay();
    rig.start_consumer();
    eventually("all 40 handled", Duration::from_secs(30), || async {
        let n: i64 = sqlx::query_scalar("select count(*) from effects")
            .fetch_one(&rig.db)
            .await
            .unwrap();
        (n == 40).then_some(())
    })
    .await;
    // The test pool has 5 connections: two handlers at most, the rest stays for HTTP.
    let max = rig.script.lock().unwrap().max_running;
    assert!((1..=2).contains(&max), "{max} handlers ran at once");
}

#[tokio::test]
async fn an_event_from_a_service_that_does_not_publish_its_type_is_dead_lettered_as_not_authentic()
{
    let rig = Rig::new().await;
    rig.start_consumer();
    let mut forged = Envelope::new(Service::Cart, vendor_created("forged"));
    forged.id = Uuid::now_v7();
    rig.publish_raw(
        "vendor.created",
        &serde_json::to_vec(&forged).unwrap(),
        &forged.id.to_string(),
    )
    .await;
    let letters = eventually(
        "the forged event dead-lettered",
        Duration::from_secs(10),
        || async {
            let letters = rig.dead_letters().await;
            (!letters.is_empty()).then_some(letters)
        },
    )
    .await;
    let reason = letters[0].reason.clone().unwrap();
    assert!(reason.contains("not authentic"), "{reason}");
    assert!(reason.contains("vendor service"), "{reason}");
    assert_eq!(rig.effects("forged").await, 0);
}
