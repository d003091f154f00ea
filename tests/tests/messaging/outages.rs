//! Dependencies that go away: PostgreSQL out of reach, a broker that blocks publishers
//! or stops answering.

use std::time::Duration;

use mp_events::{Broker, Service};
use mp_test_support::eventually;

use crate::rig::{Rig, vendor_created};

/// PostgreSQL cannot be reached (every connection dropped, new ones refused) for much
/// longer than the retry ladder (50 + 100 + 200 ms here). That is not the messages'
/// fault: the consumer puts them back without spending their attempts and takes no more
/// until PostgreSQL answers; nothing is dead-lettered, and each is handled once when it
/// is back. (Counting the outage as failures used the ladder up in a third of a second
/// and dead-lettered them all.)
#[tokio::test]
async fn a_database_outage_longer_than_the_retry_ladder_dead_letters_nothing() {
    let rig = Rig::new().await;
    let options: sqlx::postgres::PgConnectOptions = mp_common::CommonConfig::from_env()
        .database_url
        .parse()
        .unwrap();
    let target: std::net::SocketAddr =
        tokio::net::lookup_host((options.get_host(), options.get_port()))
            .await
            .unwrap()
            .next()
            .unwrap();
    let proxy = mp_test_support::proxy::PausableProxy::start(target).await;
    let schema: String = sqlx::query_scalar("select current_schema()")
        .fetch_one(&rig.db)
        .await
        .unwrap();
    let through_proxy = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_millis(500))
        .connect_with(
            options
                .host("127.0.0.1")
                .port(proxy.addr.port())
                .options([("search_path", schema.as_str())]),
        )
        .await
        .unwrap();
    rig.start_consumer_on(through_proxy, |_| {});
    rig.start_relay();

    proxy.cut();
    let names: Vec<String> = (0..5).map(|i| format!("outage-{i}")).collect();
    for name in &names {
        rig.enqueue(name).await;
    }
    rig.wait_outbox_drained().await;
    // The outage itself (not a wait for something): ten times the whole ladder.
    tokio::time::sleep(Duration::from_millis(10 * (50 + 100 + 200))).await;
    assert!(
        rig.dead_letters().await.is_empty(),
        "nothing dead-lettered during the outage"
    );
    proxy.resume();

    for name in &names {
        rig.wait_for_effect(name).await;
    }
    assert!(rig.dead_letters().await.is_empty());
    for name in &names {
        assert_eq!(rig.effects(name).await, 1, "{name} handled once");
    }
    assert_eq!(rig.outcome("dead_lettered"), 0);
}

/// The broker's address, for a proxy in front of it.
async fn broker_addr() -> std::net::SocketAddr {
    let url = mp_common::CommonConfig::from_env().amqp_url;
    let host_port = url
        .split('@')
        .next_back()
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("127.0.0.1:5672")
        .to_owned();
    tokio::net::lookup_host(host_port)
        .await
        .unwrap()
        .next()
        .unwrap()
}

/// The broker stops answering the service's publishing connection (as RabbitMQ blocks
/// publishers during a memory or disk alarm). The consumer is on a connection of its
/// own: it keeps receiving, handling and acknowledging. (With one connection for both,
/// its deliveries and acks stalled behind the blocked publisher.)
#[tokio::test]
async fn a_consumer_keeps_receiving_and_acking_while_publishing_is_blocked() {
    let proxy = mp_test_support::proxy::PausableProxy::start(broker_addr().await).await;
    let through_proxy = format!("amqp://guest:guest@{}/%2f", proxy.addr);
    let rig = Rig::with_broker(|b| b.with_publish_url(through_proxy)).await;
    rig.start_consumer();
    eventually(
        "the consumer's connection",
        Duration::from_secs(20),
        || async { rig.broker.channel().await.ok() },
    )
    .await;
    proxy.pause();

    // Another publisher, on the broker directly: what other services would send.
    let others = Broker::new(
        mp_common::CommonConfig::from_env().amqp_url,
        rig.broker.topology().clone(),
        None,
    );
    let names: Vec<String> = (0..5).map(|i| format!("blocked-{i}")).collect();
    for name in &names {
        mp_test_support::publish(&others, Service::Vendor, vendor_created(name)).await;
    }
    for name in &names {
        rig.wait_for_effect(name).await;
    }
    let channel = rig.broker.channel().await.unwrap();
    eventually("every delivery acked", Duration::from_secs(20), || async {
        let queue = channel
            .queue_declare(
                &rig.broker.topology().queue(Service::Customer),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .ok()?;
        (queue.message_count() == 0).then_some(())
    })
    .await;
    proxy.resume();
}

/// The broker stops answering an open connection: opening a channel on it (what the
/// relay and the consumer do after an error) fails with a time-out instead of waiting
/// for ever, so their reconnect loops go on and readiness can say so.
#[tokio::test]
async fn a_broker_that_stops_answering_fails_a_channel_open_instead_of_hanging() {
    let proxy = mp_test_support::proxy::PausableProxy::start(broker_addr().await).await;
    let through_proxy = format!("amqp://guest:guest@{}/%2f", proxy.addr);
    let rig = Rig::with_broker(|b| b.with_publish_url(through_proxy)).await;
    proxy.pause();
    let attempt = tokio::time::timeout(Duration::from_secs(60), rig.broker.confirm_channel()).await;
    let outcome = attempt.expect("the channel open gives up by itself");
    assert!(
        outcome.is_err(),
        "no channel from a broker that does not answer"
    );
    proxy.resume();
}
