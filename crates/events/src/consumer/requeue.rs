//! What becomes of a delivery whose handler failed: back through the shortest delay (a
//! dependency is down), to the retry queue of the next backoff step, or to the
//! dead-letter queue with the reason in its headers; and moving it there, on the
//! publishing connection.

use std::time::Duration;

use chrono::{DateTime, Utc};
use lapin::message::Delivery;
use lapin::options::{BasicNackOptions, BasicPublishOptions};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel};

use super::headers::{
    ATTEMPTS_HEADER, DEAD_LETTERED_AT_HEADER, HANDLER_HEADER, REASON_HEADER, ROUTING_KEY_HEADER,
    headers_of,
};
use super::{Consumer, HandlerError, ack, timed};
use crate::backoff::{Retryable, policy};
use crate::broker::Broker;
use crate::topology::Topology;

const REPUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEUE_PAUSE: Duration = Duration::from_secs(2);
/// Longest dead-letter reason kept in the headers, in characters.
const REASON_LIMIT: usize = 2000;

/// Where a delivery goes after its handler failed with a [`HandlerError`].
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// A dependency is down: back through the shortest delay with the attempts it had,
    /// so the outage costs it nothing, however long it lasts.
    PutBack { attempts: u32 },
    /// Through the retry queue of `step`, with this attempt counted.
    Retry { step: usize, attempts: u32 },
    /// To the dead-letter queue.
    DeadLetter { reason: String },
}

impl Verdict {
    /// The verdict on a delivery on its `attempt`-th attempt (1-based) that failed with
    /// `error`.
    pub(super) fn of(error: &HandlerError, attempt: u32, topology: &Topology) -> Self {
        match error {
            HandlerError::Unavailable(_) => Self::PutBack {
                attempts: attempt - 1,
            },
            HandlerError::Transient(_) if attempt < topology.max_attempts() => Self::Retry {
                step: retry_step(topology, attempt),
                attempts: attempt,
            },
            HandlerError::Transient(err) => Self::DeadLetter {
                reason: format!("gave up after {attempt} attempts: {err:#}"),
            },
            HandlerError::Permanent(err) => Self::DeadLetter {
                reason: format!("{err:#}"),
            },
        }
    }

    /// The outcome it is counted as in the consumed metric.
    pub(super) fn outcome(&self) -> &'static str {
        match self {
            Self::PutBack { .. } => "unavailable",
            Self::Retry { .. } => "retried",
            Self::DeadLetter { .. } => "dead_lettered",
        }
    }
}

/// The retry queue for a message that failed `attempts` times: the next backoff step, or
/// the last one past the end of the ladder.
fn retry_step(topology: &Topology, attempts: u32) -> usize {
    topology
        .retry_step(attempts)
        .unwrap_or(topology.retry_delays.len().saturating_sub(1))
}

/// The delivery's headers with `attempts` recorded.
fn retry_headers(props: &BasicProperties, attempts: u32) -> FieldTable {
    let mut headers = headers_of(props);
    headers.insert(ATTEMPTS_HEADER.into(), AMQPValue::LongUInt(attempts));
    headers
}

/// The delivery's headers with why, by which handler, when and from which routing key it
/// was dead-lettered.
fn dead_letter_headers(
    props: &BasicProperties,
    routing_key: &str,
    attempts: u32,
    handler: Option<&str>,
    reason: &str,
    at: DateTime<Utc>,
) -> FieldTable {
    let mut headers = headers_of(props);
    let text = |s: &str| AMQPValue::LongString(LongString::from(s));
    headers.insert(ATTEMPTS_HEADER.into(), AMQPValue::LongUInt(attempts));
    headers.insert(
        REASON_HEADER.into(),
        text(&reason.chars().take(REASON_LIMIT).collect::<String>()),
    );
    headers.insert(HANDLER_HEADER.into(), text(handler.unwrap_or("")));
    headers.insert(DEAD_LETTERED_AT_HEADER.into(), text(&at.to_rfc3339()));
    headers.insert(ROUTING_KEY_HEADER.into(), text(routing_key));
    headers
}

impl Consumer {
    /// Republishes the delivery to the retry queue of `step`, recording `attempts`.
    pub(super) async fn delay(&self, delivery: &Delivery, step: usize, attempts: u32) {
        let topology = self.broker.topology();
        let headers = retry_headers(&delivery.properties, attempts);
        let props = delivery.properties.clone().with_headers(headers);
        republish(
            &self.publisher,
            delivery,
            &topology.service_exchange(self.service),
            &Topology::retry_key(step),
            props,
        )
        .await;
    }

    pub(super) async fn dead_letter(
        &self,
        delivery: &Delivery,
        attempts: u32,
        handler: Option<&str>,
        reason: &str,
    ) {
        let headers = dead_letter_headers(
            &delivery.properties,
            delivery.routing_key.as_str(),
            attempts,
            handler,
            reason,
            Utc::now(),
        );
        let props = delivery.properties.clone().with_headers(headers);
        republish(
            &self.publisher,
            delivery,
            &self.broker.topology().service_exchange(self.service),
            Topology::DEAD_LETTER_KEY,
            props,
        )
        .await;
    }
}

/// Publishes a copy of the delivery to `queue` and acks the original once the broker
/// confirmed the copy. A failing publish is retried with backoff; if it still fails, the
/// original is requeued after a pause (never at once, which would loop hot), so nothing
/// is lost.
async fn republish(
    publisher: &Publisher,
    delivery: &Delivery,
    exchange: &str,
    routing_key: &str,
    props: BasicProperties,
) {
    let publish = || async {
        let channel = publisher.channel().await?;
        let confirm = timed(channel.basic_publish(
            exchange,
            routing_key,
            // Unroutable (a missing binding) comes back instead of vanishing.
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            &delivery.data,
            props.clone(),
        ))
        .await?;
        match tokio::time::timeout(REPUBLISH_TIMEOUT, confirm).await {
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(_)))) => Err(anyhow::anyhow!(
                "no queue is bound to {exchange} {routing_key}"
            )),
            Ok(Ok(_)) => Err(anyhow::anyhow!("the broker refused the message")),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => {
                // A channel that does not confirm may sit behind a blocked connection.
                publisher.discard().await;
                Err(anyhow::anyhow!("no confirm within {REPUBLISH_TIMEOUT:?}"))
            }
        }
    };
    let confirmed = publish
        .retry(policy(Duration::from_millis(100), Duration::from_secs(2)).with_max_times(3))
        .await;
    match confirmed {
        Ok(()) => ack(delivery).await,
        Err(e) => {
            tracing::warn!(exchange, routing_key, error = %format!("{e:#}"), "could not move the message; requeueing it after a pause");
            tokio::time::sleep(REQUEUE_PAUSE).await;
            let _ = delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await;
        }
    }
}

/// The consumer's channel for retries and dead letters, on the publishing connection:
/// opened when first needed, and again after it broke or stopped confirming.
pub(super) struct Publisher {
    broker: Broker,
    channel: tokio::sync::Mutex<Option<Channel>>,
}

impl Publisher {
    pub(super) fn new(broker: Broker) -> Self {
        Self {
            broker,
            channel: tokio::sync::Mutex::new(None),
        }
    }

    async fn channel(&self) -> anyhow::Result<Channel> {
        let mut current = self.channel.lock().await;
        if let Some(ch) = current.as_ref().filter(|ch| ch.status().connected()) {
            return Ok(ch.clone());
        }
        let fresh = self.broker.confirm_channel().await?;
        *current = Some(fresh.clone());
        Ok(fresh)
    }

    async fn discard(&self) {
        if let Some(ch) = self.channel.lock().await.take() {
            tokio::spawn(async move {
                let _ = timed(ch.close(200, "stopped confirming")).await;
            });
        }
    }

    pub(super) async fn close(&self) {
        if let Some(ch) = self.channel.lock().await.take() {
            let _ = timed(ch.close(200, "consumer stopped")).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::headers::{header_str, header_u32};
    use super::*;

    /// Delays of 50, 100 and 200 ms: four attempts in all.
    fn topology() -> Topology {
        let mut topology = Topology::new("t");
        topology.retry_delays = [50, 100, 200].map(Duration::from_millis).to_vec();
        topology
    }

    #[test]
    fn a_transient_failure_goes_to_the_retry_step_of_its_attempt() {
        let t = topology();
        let failure = HandlerError::transient("deadlock");
        assert_eq!(
            Verdict::of(&failure, 1, &t),
            Verdict::Retry {
                step: 0,
                attempts: 1
            }
        );
        assert_eq!(
            Verdict::of(&failure, 2, &t),
            Verdict::Retry {
                step: 1,
                attempts: 2
            }
        );
        assert_eq!(
            Verdict::of(&failure, 3, &t),
            Verdict::Retry {
                step: 2,
                attempts: 3
            }
        );
        assert_eq!(Verdict::of(&failure, 3, &t).outcome(), "retried");
    }

    #[test]
    fn a_transient_failure_on_the_last_attempt_is_dead_lettered_with_the_count() {
        let t = topology();
        assert_eq!(t.max_attempts(), 4);
        let verdict = Verdict::of(&HandlerError::transient("deadlock"), 4, &t);
        assert_eq!(
            verdict,
            Verdict::DeadLetter {
                reason: "gave up after 4 attempts: deadlock".into()
            }
        );
        assert_eq!(verdict.outcome(), "dead_lettered");
        // Past the ladder (a count raised by hand) too.
        assert!(matches!(
            Verdict::of(&HandlerError::transient("deadlock"), 9, &t),
            Verdict::DeadLetter { .. }
        ));
    }

    #[test]
    fn a_permanent_failure_is_dead_lettered_at_once_with_its_own_reason() {
        let verdict = Verdict::of(&HandlerError::permanent("x is poison"), 1, &topology());
        assert_eq!(
            verdict,
            Verdict::DeadLetter {
                reason: "x is poison".into()
            }
        );
    }

    #[test]
    fn an_unavailable_dependency_costs_no_attempt_whatever_the_count() {
        let t = topology();
        let down = HandlerError::Unavailable(anyhow::anyhow!("connection refused"));
        assert_eq!(Verdict::of(&down, 1, &t), Verdict::PutBack { attempts: 0 });
        // Even past the ladder: an outage never dead-letters.
        assert_eq!(Verdict::of(&down, 7, &t), Verdict::PutBack { attempts: 6 });
        assert_eq!(Verdict::of(&down, 1, &t).outcome(), "unavailable");
    }

    #[test]
    fn the_reason_keeps_the_whole_error_chain() {
        let err = anyhow::anyhow!("serialization failure").context("reserving stock");
        let verdict = Verdict::of(&HandlerError::Transient(err), 4, &topology());
        assert_eq!(
            verdict,
            Verdict::DeadLetter {
                reason: "gave up after 4 attempts: reserving stock: serialization failure".into()
            }
        );
    }

    #[test]
    fn past_the_ladder_the_retry_step_is_the_last_one() {
        let t = topology();
        assert_eq!(retry_step(&t, 1), 0);
        assert_eq!(retry_step(&t, 3), 2);
        assert_eq!(retry_step(&t, 4), 2);
        assert_eq!(retry_step(&t, 0), 2);
        let mut none = t.clone();
        none.retry_delays.clear();
        assert_eq!(retry_step(&none, 1), 0);
    }

    #[test]
    fn a_retry_records_its_attempts_and_keeps_the_other_headers() {
        let mut existing = FieldTable::default();
        existing.insert(
            "traceparent".into(),
            AMQPValue::LongString("00-a-b-01".into()),
        );
        existing.insert(ATTEMPTS_HEADER.into(), AMQPValue::LongUInt(1));
        let props = BasicProperties::default().with_headers(existing);
        let props = props.clone().with_headers(retry_headers(&props, 2));
        assert_eq!(header_u32(&props, ATTEMPTS_HEADER), Some(2));
        assert_eq!(
            header_str(&props, "traceparent").as_deref(),
            Some("00-a-b-01")
        );
    }

    #[test]
    fn a_dead_letter_records_why_by_whom_when_and_from_where() {
        let at = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc);
        let headers = dead_letter_headers(
            &BasicProperties::default(),
            "vendor.created",
            4,
            Some("customer.vendor_membership"),
            "gave up",
            at,
        );
        let props = BasicProperties::default().with_headers(headers);
        assert_eq!(header_u32(&props, ATTEMPTS_HEADER), Some(4));
        assert_eq!(
            header_str(&props, REASON_HEADER).as_deref(),
            Some("gave up")
        );
        assert_eq!(
            header_str(&props, HANDLER_HEADER).as_deref(),
            Some("customer.vendor_membership")
        );
        assert_eq!(
            header_str(&props, DEAD_LETTERED_AT_HEADER).as_deref(),
            Some("2026-01-02T03:04:05+00:00")
        );
        assert_eq!(
            header_str(&props, ROUTING_KEY_HEADER).as_deref(),
            Some("vendor.created")
        );
    }

    #[test]
    fn a_dead_letter_without_a_handler_has_an_empty_one_and_a_long_reason_is_cut() {
        let reason = "é".repeat(REASON_LIMIT + 10);
        let headers = dead_letter_headers(
            &BasicProperties::default(),
            "vendor.created",
            1,
            None,
            &reason,
            Utc::now(),
        );
        let props = BasicProperties::default().with_headers(headers);
        assert_eq!(header_str(&props, HANDLER_HEADER).as_deref(), Some(""));
        let kept = header_str(&props, REASON_HEADER).unwrap();
        assert_eq!(kept.chars().count(), REASON_LIMIT);
        assert!(reason.starts_with(&kept));
    }
}
