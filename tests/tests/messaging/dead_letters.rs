//! Dead letters: poison messages, the broker's delivery limit, redrive and its
//! inbox-retention rule, and inspecting without losing them.

use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use mp_events::dlq::{self, Selection};
use mp_events::{EventHandler, Service};
use mp_test_support::eventually;

use crate::rig::{Recorder, Rig};

#[tokio::test]
async fn poison_messages_are_dead_lettered_with_their_reason_without_blocking_the_queue_and_can_be_redriven()
 {
    let rig = Rig::new().await;
    rig.script.lock().unwrap().permanent.push("poison".into());
    rig.script
        .lock()
        .unwrap()
        .transient_failures
        .insert("hopeless".into(), 100);
    rig.start_relay();
    rig.start_consumer();

    // Garbage straight onto the exchange, then a failing event, then good ones.
    let channel = rig.broker.confirm_channel().await.unwrap();
    let topology = rig.broker.topology();
    channel
        .basic_publish(
            &topology.exchange(),
            "vendor.created",
            BasicPublishOptions::default(),
            b"this is not json",
            BasicProperties::default().with_message_id("garbage-1".into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let poison = rig.enqueue("poison").await;
    rig.enqueue("hopeless").await;
    rig.enqueue("healthy").await;

    rig.wait_for_effect("healthy").await;
    let letters = eventually("three dead letters", Duration::from_secs(10), || async {
        let letters = dlq::list(&rig.broker, Service::Customer, 10).await.unwrap();
        (letters.len() == 3).then_some(letters)
    })
    .await;
    let by_id = |id: &str| {
        letters
            .iter()
            .find(|l| l.message_id.as_deref() == Some(id))
            .expect(id)
    };
    assert!(
        by_id("garbage-1")
            .reason
            .as_deref()
            .unwrap()
            .starts_with("malformed envelope")
    );
    let p = by_id(&poison.to_string());
    assert_eq!(p.reason.as_deref(), Some("poison is poison"));
    assert_eq!(p.handler.as_deref(), Some(Recorder::NAME));
    assert_eq!(p.event_type.as_deref(), Some("vendor.created"));
    let hopeless = letters
        .iter()
        .find(|l| l.body["payload"]["name"] == "hopeless")
        .unwrap();
    assert_eq!(hopeless.attempts, topology.max_attempts());
    assert!(
        hopeless
            .reason
            .as_deref()
            .unwrap()
            .contains("gave up after 4 attempts"),
        "{:?}",
        hopeless.reason
    );
    // Listing left them in place.
    assert_eq!(
        dlq::list(&rig.broker, Service::Customer, 10)
            .await
            .unwrap()
            .len(),
        3
    );

    // The cause is fixed; the operator redrives the poison event only.
    rig.script.lock().unwrap().permanent.clear();
    let report = dlq::redrive(
        &rig.broker,
        Service::Customer,
        &Selection::MessageId(poison.to_string()),
        Duration::from_secs(3600),
        false,
    )
    .await
    .unwrap();
    assert_eq!(report.redriven, 1);
    rig.wait_for_effect("poison").await;
    assert_eq!(
        dlq::list(&rig.broker, Service::Customer, 10)
            .await
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn a_message_that_keeps_coming_back_unacked_reaches_the_dead_letter_queue_by_the_delivery_limit()
 {
    let rig = Rig::new().await;
    let id = rig.enqueue("crasher").await;
    rig.start_relay();
    // A consumer that crashes on the message: it never acks, the broker requeues it.
    let queue = rig.broker.topology().queue(Service::Customer);
    let limit = rig.broker.topology().delivery_limit;
    let channel = rig.broker.channel().await.unwrap();
    let returned = std::sync::atomic::AtomicU32::new(0);
    let (channel, queue, counter, rig_ref) = (&channel, &queue, &returned, &rig);
    eventually(
        "the message to be dead-lettered",
        Duration::from_secs(30),
        || async move {
            if let Some(msg) = channel
                .basic_get(queue, lapin::options::BasicGetOptions { no_ack: false })
                .await
                .unwrap()
            {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                msg.delivery
                    .nack(lapin::options::BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
            let letters = rig_ref.dead_letters().await;
            letters
                .into_iter()
                .find(|l| l.message_id.as_deref() == Some(id.to_string().as_str()))
        },
    )
    .await;
    let returned = returned.load(std::sync::atomic::Ordering::SeqCst);
    assert!(returned >= limit, "{returned} deliveries, limit {limit}");
    let letter = rig
        .dead_letters()
        .await
        .into_iter()
        .find(|l| l.message_id.as_deref() == Some(id.to_string().as_str()))
        .unwrap();
    let reason = letter.reason.unwrap();
    assert!(reason.contains("RabbitMQ"), "{reason}");
}

#[tokio::test]
async fn redrive_all_moves_only_what_was_there_and_refuses_events_older_than_the_inbox_remembers() {
    let rig = Rig::new().await;
    rig.script
        .lock()
        .unwrap()
        .permanent
        .push("always-bad".into());
    rig.start_relay();
    rig.start_consumer();
    rig.enqueue("always-bad").await;
    eventually(
        "the poison dead-lettered",
        Duration::from_secs(10),
        || async { (rig.dead_letters().await.len() == 1).then_some(()) },
    )
    .await;

    // It fails again at once and comes back; a redrive must not chase it in a loop.
    let report = dlq::redrive(
        &rig.broker,
        Service::Customer,
        &Selection::All,
        Duration::from_secs(3600),
        false,
    )
    .await
    .unwrap();
    assert_eq!(report.redriven, 1);
    eventually(
        "the poison back in the DLQ",
        Duration::from_secs(10),
        || async {
            (rig.dead_letters().await.len() == 1 && rig.deliveries("always-bad").len() == 2)
                .then_some(())
        },
    )
    .await;

    // An event older than the inbox retention is refused unless forced.
    rig.script.lock().unwrap().permanent.clear();
    let report = dlq::redrive(
        &rig.broker,
        Service::Customer,
        &Selection::All,
        Duration::from_millis(1),
        false,
    )
    .await
    .unwrap();
    assert_eq!(report.redriven, 0);
    assert!(
        report.refused[0].1.contains("inbox retention"),
        "{:?}",
        report.refused
    );
    assert_eq!(rig.dead_letters().await.len(), 1, "a refused letter stays");
    let report = dlq::redrive(
        &rig.broker,
        Service::Customer,
        &Selection::All,
        Duration::from_millis(1),
        true,
    )
    .await
    .unwrap();
    assert_eq!(report.redriven, 1);
    rig.wait_for_effect("always-bad").await;
}

/// One dead letter, inspected 25 times (`dlq list` takes it and puts it back each time):
/// it is still there, and the dead-letter queue is a classic queue, which counts no
/// deliveries. (A quorum DLQ counts each return, and RabbitMQ 4 drops a message after
/// its default limit of 20, without a word.)
#[tokio::test]
async fn a_dead_letter_inspected_25_times_is_still_there() {
    let rig = Rig::new().await;
    rig.script.lock().unwrap().permanent.push("poison".into());
    rig.start_relay();
    rig.start_consumer();
    rig.enqueue("poison").await;
    eventually("the dead letter", Duration::from_secs(20), || async {
        (rig.dead_letters().await.len() == 1).then_some(())
    })
    .await;
    for inspection in 1..=25 {
        let letters = rig.dead_letters().await;
        assert_eq!(letters.len(), 1, "inspection {inspection}");
        assert!(
            letters[0]
                .reason
                .as_deref()
                .unwrap_or_default()
                .contains("poison")
        );
    }
    let queue = rig.broker.topology().dead_letter_queue(Service::Customer);
    let listing = tokio::task::spawn_blocking(|| {
        std::process::Command::new("rabbitmqctl")
            .args(["list_queues", "name", "type", "-q", "--no-table-headers"])
            .output()
            .expect("rabbitmqctl runs")
    })
    .await
    .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    let kind = listing
        .lines()
        .find_map(|l| {
            let mut fields = l.split_whitespace();
            (fields.next() == Some(queue.as_str())).then(|| fields.next().map(str::to_owned))
        })
        .flatten();
    assert_eq!(kind.as_deref(), Some("classic"), "{listing}");
}
