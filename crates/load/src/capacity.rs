//! `mp-load --queue-probe N`: what one quorum queue carries on this broker, for
//! SCALING.md. N persistent messages of an event's size are published to a fresh
//! quorum queue with publisher confirms (256 in flight, as a relay batch) while one
//! consumer acknowledges them (prefetch 256); the figure is messages/s end to end and
//! RabbitMQ's CPU per message. A quorum queue is one Raft log with one leader process,
//! so its ceiling is about one core's worth of that cost, however many nodes the
//! cluster has.

use std::path::Path;
use std::time::Instant;

use futures::StreamExt;
use lapin::BasicProperties;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde::Serialize;

use crate::profile::cpu_seconds;

#[derive(Debug, Serialize)]
pub struct QueueFigures {
    pub messages: usize,
    pub bytes: usize,
    pub per_sec: f64,
    /// RabbitMQ's CPU per message (publish, replicate, deliver, ack), microseconds.
    pub broker_cpu_us: f64,
    /// One core's worth of that cost: the ceiling of one queue's leader.
    pub one_core_ceiling_per_sec: f64,
}

pub async fn quorum_queue(
    broker: &mp_events::Broker,
    messages: usize,
    run_dir: &Path,
) -> anyhow::Result<QueueFigures> {
    let name = format!("mp-load-probe-{}", uuid::Uuid::new_v4().simple());
    let publish = broker.confirm_channel().await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    publish
        .queue_declare(
            &name,
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await?;
    let consume = broker.channel().await?;
    consume.basic_qos(256, BasicQosOptions::default()).await?;
    let mut consumer = consume
        .basic_consume(
            &name,
            "mp-load-probe",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    // About an envelope's size (an order.created with two lines).
    let body = vec![b'x'; 900];
    let before = cpu_seconds(run_dir);
    let started = Instant::now();
    let received = tokio::spawn(async move {
        let mut n = 0;
        while n < messages {
            let Some(Ok(delivery)) = consumer.next().await else {
                break;
            };
            if delivery.ack(BasicAckOptions::default()).await.is_err() {
                break;
            }
            n += 1;
        }
        n
    });
    let mut sent = 0;
    while sent < messages {
        let batch = (messages - sent).min(256);
        let mut confirms = Vec::with_capacity(batch);
        for _ in 0..batch {
            confirms.push(
                publish
                    .basic_publish(
                        "",
                        &name,
                        BasicPublishOptions::default(),
                        &body,
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await?,
            );
        }
        for confirm in confirms {
            confirm.await?;
        }
        sent += batch;
    }
    let got = received.await?;
    let elapsed = started.elapsed().as_secs_f64();
    let after = cpu_seconds(run_dir);
    publish
        .queue_delete(&name, QueueDeleteOptions::default())
        .await?;
    anyhow::ensure!(got == messages, "received {got} of {messages}");
    let broker_secs = after.get("rabbitmq").copied().unwrap_or(0.0)
        - before.get("rabbitmq").copied().unwrap_or(0.0);
    let broker_cpu_us = (broker_secs * 1e6 / messages as f64).round();
    Ok(QueueFigures {
        messages,
        bytes: body.len(),
        per_sec: (messages as f64 / elapsed).round(),
        broker_cpu_us,
        one_core_ceiling_per_sec: if broker_cpu_us > 0.0 {
            (1e6 / broker_cpu_us).round()
        } else {
            f64::NAN
        },
    })
}
