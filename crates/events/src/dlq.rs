//! Operator tooling for dead letters: list, inspect, redrive.
//!
//! Messages are read with `basic.get` without acking; the ones not redriven return to the
//! queue when the channel closes, so looking never loses anything.

use lapin::options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable};
use serde::Serialize;

use crate::broker::Broker;
use crate::catalog::Service;
use crate::consumer::{
    ATTEMPTS_HEADER, DEAD_LETTERED_AT_HEADER, HANDLER_HEADER, REASON_HEADER, ROUTING_KEY_HEADER,
    header_str, header_u32, headers_of,
};

/// A dead-lettered message as an operator sees it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub message_id: Option<String>,
    pub event_type: Option<String>,
    pub reason: Option<String>,
    pub handler: Option<String>,
    pub attempts: u32,
    pub dead_lettered_at: Option<String>,
    /// The message body: JSON where it parses, else the text.
    pub body: serde_json::Value,
}

/// Which dead letters to redrive.
#[derive(Debug, Clone)]
pub enum Selection {
    All,
    MessageId(String),
}

const MAX_SCAN: usize = 10_000;

/// Lists up to `limit` dead letters of `service`, leaving them in the queue.
pub async fn list(
    broker: &Broker,
    service: Service,
    limit: usize,
) -> Result<Vec<DeadLetter>, lapin::Error> {
    let channel = broker.channel().await?;
    let queue = broker.topology().dead_letter_queue(service);
    let mut out = Vec::new();
    while out.len() < limit.min(MAX_SCAN) {
        let Some(msg) = channel
            .basic_get(&queue, BasicGetOptions { no_ack: false })
            .await?
        else {
            break;
        };
        out.push(describe(&msg.delivery));
    }
    channel.close(200, "listed").await?;
    Ok(out)
}

/// Moves the selected dead letters back into the service's queue with a fresh attempt
/// count; returns how many were redriven.
pub async fn redrive(
    broker: &Broker,
    service: Service,
    selection: &Selection,
) -> Result<usize, lapin::Error> {
    let channel = broker.confirm_channel().await?;
    let topology = broker.topology();
    let queue = topology.dead_letter_queue(service);
    let mut redriven = 0;
    for _ in 0..MAX_SCAN {
        let Some(msg) = channel
            .basic_get(&queue, BasicGetOptions { no_ack: false })
            .await?
        else {
            break;
        };
        let delivery = msg.delivery;
        let selected = match selection {
            Selection::All => true,
            Selection::MessageId(id) => delivery
                .properties
                .message_id()
                .as_ref()
                .is_some_and(|m| m.as_str() == id),
        };
        if !selected {
            continue;
        }
        let dead_letter_headers = [
            REASON_HEADER,
            HANDLER_HEADER,
            DEAD_LETTERED_AT_HEADER,
            ROUTING_KEY_HEADER,
        ];
        let mut headers = FieldTable::default();
        for (k, v) in headers_of(&delivery.properties).inner() {
            if !dead_letter_headers.contains(&k.as_str()) {
                headers.insert(k.clone(), v.clone());
            }
        }
        headers.insert(ATTEMPTS_HEADER.into(), AMQPValue::LongUInt(0));
        let props = delivery.properties.clone().with_headers(headers);
        let confirm = channel
            .basic_publish(
                "",
                &topology.queue(service),
                BasicPublishOptions::default(),
                &delivery.data,
                props,
            )
            .await?
            .await?;
        if matches!(confirm, Confirmation::Ack(_)) {
            delivery.ack(BasicAckOptions::default()).await?;
            redriven += 1;
        }
        if matches!(selection, Selection::MessageId(_)) {
            break;
        }
    }
    channel.close(200, "redriven").await?;
    Ok(redriven)
}

fn describe(delivery: &lapin::message::Delivery) -> DeadLetter {
    let props = &delivery.properties;
    DeadLetter {
        message_id: props.message_id().as_ref().map(|s| s.to_string()),
        event_type: props
            .kind()
            .as_ref()
            .map(|s| s.to_string())
            .or_else(|| header_str(props, ROUTING_KEY_HEADER)),
        reason: header_str(props, REASON_HEADER),
        handler: header_str(props, HANDLER_HEADER).filter(|h| !h.is_empty()),
        attempts: header_u32(props, ATTEMPTS_HEADER).unwrap_or(0),
        dead_lettered_at: header_str(props, DEAD_LETTERED_AT_HEADER),
        body: serde_json::from_slice(&delivery.data).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&delivery.data).into_owned())
        }),
    }
}
