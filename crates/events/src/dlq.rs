//! Operator tooling for dead letters: list, inspect, redrive.
//!
//! Messages are read with `basic.get` without acking; the ones not redriven are given
//! back (`basic.nack` with requeue) before the channel closes, so looking never loses
//! anything, and a `list` followed at once by a `redrive` finds them there (a requeue
//! left to the channel's close may land after the next command has looked).
//!
//! The redrive rule and the inbox retention go together: consumers are idempotent
//! because the inbox remembers each (event, handler) for `INBOX_RETENTION_HOURS` (7 days
//! by default). A dead letter older than that may have been handled after all (by a
//! redelivered copy) and forgotten, so [`redrive`] refuses it unless forced.

use std::time::Duration;

use chrono::Utc;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable};
use serde::Serialize;

use crate::broker::Broker;
use crate::catalog::Service;
use crate::consumer::{
    ATTEMPTS_HEADER, DEAD_LETTERED_AT_HEADER, HANDLER_HEADER, REASON_HEADER, ROUTING_KEY_HEADER,
    header_str, header_u32, headers_of,
};
use crate::envelope::Envelope;
use crate::topology::Topology;

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
    let mut last_tag = None;
    while out.len() < limit.min(MAX_SCAN) {
        let Some(msg) = channel
            .basic_get(&queue, BasicGetOptions { no_ack: false })
            .await?
        else {
            break;
        };
        last_tag = Some(msg.delivery.delivery_tag);
        out.push(describe(&msg.delivery));
    }
    give_back(&channel, last_tag).await?;
    channel.close(200, "listed").await?;
    Ok(out)
}

/// Requeues every message this channel still holds, up to `last_tag`, in their order.
async fn give_back(channel: &lapin::Channel, last_tag: Option<u64>) -> Result<(), lapin::Error> {
    match last_tag {
        Some(tag) => {
            let options = BasicNackOptions {
                multiple: true,
                requeue: true,
            };
            channel.basic_nack(tag, options).await
        }
        None => Ok(()),
    }
}

/// What a redrive did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RedriveReport {
    /// Messages moved back into the service's queue.
    pub redriven: usize,
    /// Messages left in the dead-letter queue, with why.
    pub refused: Vec<(Option<String>, String)>,
}

/// Moves the selected dead letters back into the service's queue with a fresh attempt
/// count.
///
/// Only the messages that were in the queue when the redrive started are looked at, so a
/// message that fails again and comes back is not picked up in a loop. A message whose
/// event is older than `inbox_retention` is refused unless `force`: the inbox may have
/// forgotten that it was handled, and redriving it could apply it twice.
pub async fn redrive(
    broker: &Broker,
    service: Service,
    selection: &Selection,
    inbox_retention: Duration,
    force: bool,
) -> Result<RedriveReport, lapin::Error> {
    let channel = broker.confirm_channel().await?;
    let topology = broker.topology();
    let queue = topology.dead_letter_queue(service);
    // First take every message present now (unacked, so none comes back to us while we
    // hold it), then redrive: one that fails again and returns is not seen by this run.
    let mut held = Vec::new();
    while held.len() < MAX_SCAN {
        match channel
            .basic_get(&queue, BasicGetOptions { no_ack: false })
            .await?
        {
            Some(msg) => held.push(msg),
            None => break,
        }
    }
    // The messages not acked below, given back at the end (a nack may name only a tag
    // still held).
    let mut kept = None;
    let mut found = false;
    let mut report = RedriveReport::default();
    let oldest_allowed =
        Utc::now() - chrono::Duration::from_std(inbox_retention).unwrap_or(chrono::Duration::MAX);
    for msg in held {
        let delivery = msg.delivery;
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.to_string());
        let selected = match selection {
            Selection::All => true,
            // The first message with the id only.
            Selection::MessageId(id) => !found && message_id.as_deref() == Some(id.as_str()),
        };
        if !selected {
            kept = Some(delivery.delivery_tag);
            continue;
        }
        found = true;
        let occurred_at = serde_json::from_slice::<Envelope>(&delivery.data)
            .ok()
            .map(|e| e.occurred_at);
        if !force && occurred_at.is_some_and(|at| at < oldest_allowed) {
            report.refused.push((
                message_id,
                format!(
                    "the event is older than the inbox retention ({} h): the inbox may have forgotten it was handled, so redriving could apply it twice; check its effect and use --force to redrive it anyway",
                    inbox_retention.as_secs() / 3600
                ),
            ));
            kept = Some(delivery.delivery_tag);
            continue;
        }
        let dead_letter_headers = [
            REASON_HEADER,
            HANDLER_HEADER,
            DEAD_LETTERED_AT_HEADER,
            ROUTING_KEY_HEADER,
            "x-death",
            "x-first-death-exchange",
            "x-first-death-queue",
            "x-first-death-reason",
            "x-delivery-count",
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
                &topology.service_exchange(service),
                Topology::MAIN_KEY,
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &delivery.data,
                props,
            )
            .await?
            .await?;
        if matches!(confirm, Confirmation::Ack(None)) {
            delivery.ack(BasicAckOptions::default()).await?;
            report.redriven += 1;
        } else {
            kept = Some(delivery.delivery_tag);
        }
    }
    // What was refused, not selected or not confirmed goes back.
    give_back(&channel, kept).await?;
    channel.close(200, "redriven").await?;
    Ok(report)
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
        reason: header_str(props, REASON_HEADER).or_else(|| {
            header_str(props, "x-first-death-reason").map(|r| match r.as_str() {
                "delivery_limit" => "dead-lettered by RabbitMQ: delivered too many times without an ack (a consumer kept crashing on it)".to_owned(),
                other => format!("dead-lettered by RabbitMQ: {other}"),
            })
        }),
        handler: header_str(props, HANDLER_HEADER).filter(|h| !h.is_empty()),
        attempts: header_u32(props, ATTEMPTS_HEADER).unwrap_or(0),
        dead_lettered_at: header_str(props, DEAD_LETTERED_AT_HEADER),
        body: serde_json::from_slice(&delivery.data).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&delivery.data).into_owned())
        }),
    }
}
