//! Bad messages at scale: raw malformed bodies and unauthentic envelopes (an event
//! type claimed by a service that does not publish it) published straight to the
//! exchange, as a broken or hostile client with write access would; and the
//! dead-letter queues read back (without taking anything out of them).

use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use mp_events::{Broker, Service, Topology, dlq};

use crate::fleet::Fleet;

/// The broker as the fleet's operator reaches it (AMQP_URL, AMQP_PREFIX as the services).
pub fn broker() -> Broker {
    let config = mp_common::CommonConfig::from_env();
    Broker::new(
        config.amqp_url.clone(),
        Topology::new(config.amqp_prefix.clone()),
        None,
    )
    .with_tls_ca(config.tls_ca_file.as_ref().map(|p| p.display().to_string()))
}

/// Publishes `count` bad messages, half malformed and half unauthentic, all under the
/// routing key of `order.created` (which inventory and notification consume), their
/// message ids starting with `tag`; how many the broker confirmed (a message refused
/// or unanswered while the broker is away is not expected in a dead-letter queue).
pub async fn publish(
    broker: &Broker,
    tag: &str,
    offset: usize,
    count: usize,
) -> anyhow::Result<usize> {
    let channel = broker.confirm_channel().await?;
    let exchange = broker.topology().exchange();
    let mut confirmed = 0;
    for i in 0..count {
        let i = i + offset;
        let body = if i.is_multiple_of(2) {
            format!("{{\"not\": \"an envelope\", \"n\": {i}").into_bytes()
        } else {
            serde_json::to_vec(&serde_json::json!({
                "id": uuid::Uuid::now_v7(),
                "type": "order.created",
                "version": 1,
                "occurred_at": chrono::Utc::now(),
                "source": "customer",
                "correlation_id": format!("{tag}{i}"),
                "causation_id": null,
                "traceparent": null,
                "payload": {}
            }))?
        };
        channel
            .basic_publish(
                &exchange,
                "order.created",
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default()
                    .with_message_id(format!("{tag}{i}").into())
                    .with_delivery_mode(2),
            )
            .await?
            .await?;
        confirmed += 1;
    }
    channel.close(200, "published").await?;
    Ok(confirmed)
}

pub struct DeadLetters {
    pub total: usize,
    /// Those whose message id starts with the run's tag.
    pub own: usize,
    pub own_with_reason: usize,
}

/// Counts the dead letters of every service (up to 10,000 each).
pub async fn count(broker: &Broker, tag: &str) -> anyhow::Result<DeadLetters> {
    let mut letters = DeadLetters {
        total: 0,
        own: 0,
        own_with_reason: 0,
    };
    for service in Service::ALL {
        for letter in dlq::list(broker, service, 10_000).await? {
            letters.total += 1;
            if letter
                .message_id
                .as_deref()
                .is_some_and(|id| id.starts_with(tag))
            {
                letters.own += 1;
                letters.own_with_reason += usize::from(letter.reason.is_some());
            }
        }
    }
    Ok(letters)
}

/// The dead letters as the checks read them.
pub async fn dead_letters(fleet: &Fleet) -> anyhow::Result<DeadLetters> {
    count(&fleet.broker, &fleet.tag).await
}
