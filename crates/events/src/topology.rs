//! Exchange and queue names, and their declaration.
//!
//! One durable topic exchange carries every event, routing key = event type. Each service
//! has one main queue bound to the events it consumes, one delayed-retry queue per backoff
//! step (messages wait there for the step's TTL, then dead-letter back into the main
//! queue), and a dead-letter queue for messages that cannot be handled.
//!
//! Every service declares the main queues of *all* services when it connects, so an event
//! published before its consumer ever started still waits in that consumer's queue.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Connection, ExchangeKind};

use crate::catalog::{Service, subscriptions};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueType {
    /// Replicated, durable: what production runs.
    Quorum,
    /// Single-node, cheaper to declare.
    Classic,
}

impl QueueType {
    /// The name `AMQP_QUEUE_TYPE` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Quorum => "quorum",
            QueueType::Classic => "classic",
        }
    }
}

impl std::str::FromStr for QueueType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [QueueType::Quorum, QueueType::Classic]
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown queue type {s:?} (quorum or classic)"))
    }
}

#[derive(Debug, Clone)]
pub struct Topology {
    /// Prefix of every exchange and queue name; tests use their own.
    pub prefix: String,
    pub queue_type: QueueType,
    /// Backoff before each retry; a message that failed `retry_delays.len() + 1` times
    /// goes to the dead-letter queue.
    pub retry_delays: Vec<Duration>,
    /// Delete queues left unused this long (for test prefixes; `None` in production).
    pub queue_expires: Option<Duration>,
    /// Deliveries of one message from a main quorum queue before RabbitMQ dead-letters
    /// it by itself (a message that crashes its consumer is never acked or rejected).
    pub delivery_limit: u32,
}

impl Topology {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            queue_type: QueueType::Quorum,
            retry_delays: [1, 5, 30, 120].map(Duration::from_secs).to_vec(),
            queue_expires: None,
            delivery_limit: 10,
        }
    }

    pub fn exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }

    pub fn queue(&self, service: Service) -> String {
        format!("{}.{}", self.prefix, service)
    }

    pub fn retry_queue(&self, service: Service, step: usize) -> String {
        format!("{}.{}.retry.{}", self.prefix, service, step)
    }

    pub fn dead_letter_queue(&self, service: Service) -> String {
        format!("{}.{}.dlq", self.prefix, service)
    }

    /// The service's own direct exchange, through which its consumer moves messages to
    /// its retry queues (routing key `retry.<step>`) and its DLQ (`dlq`). Not the default
    /// exchange: write access to that would let a service put messages in any queue.
    pub fn service_exchange(&self, service: Service) -> String {
        format!("{}.{}.direct", self.prefix, service)
    }

    pub fn retry_key(step: usize) -> String {
        format!("retry.{step}")
    }

    pub const DEAD_LETTER_KEY: &'static str = "dlq";
    /// Routes a retried message from a retry queue back to the main queue.
    pub const MAIN_KEY: &'static str = "main";

    /// What a per-service RabbitMQ user of `service` may do, as the regular expressions
    /// `rabbitmqctl set_permissions` and `set_topic_permissions` take. With these, the
    /// service publishes only its own event types, moves messages only into its own
    /// retry and dead-letter queues, consumes only its own queues, and cannot declare,
    /// delete or write to another service's queues.
    pub fn permissions(&self, service: Service) -> Permissions {
        let p = regex_escape(&self.prefix);
        let s = service.as_str();
        let own = format!(r"{p}\.{s}(\.(retry\.[0-9]+|dlq|direct))?");
        let own_types: Vec<String> = crate::catalog::catalog()
            .iter()
            .filter(|e| e.publisher == service)
            .map(|e| regex_escape(e.event_type))
            .collect();
        Permissions {
            configure: format!("^({p}\\.events|{own})$"),
            write: format!("^({p}\\.events|{own})$"),
            read: format!("^({p}\\.events|{own})$"),
            topic_write: format!("^({})$", own_types.join("|")),
            topic_read: ".*".into(),
        }
    }

    /// Deliveries a message gets before it is dead-lettered.
    pub fn max_attempts(&self) -> u32 {
        self.retry_delays.len() as u32 + 1
    }

    /// The retry queue for a message that has failed `attempts` times (1-based).
    pub fn retry_step(&self, attempts: u32) -> Option<usize> {
        let step = attempts.checked_sub(1)? as usize;
        (step < self.retry_delays.len()).then_some(step)
    }

    fn queue_args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        if self.queue_type == QueueType::Quorum {
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString(LongString::from("quorum")),
            );
        }
        if let Some(expires) = self.queue_expires {
            args.insert(
                "x-expires".into(),
                AMQPValue::LongLongInt(expires.as_millis() as i64),
            );
        }
        args
    }

    /// The dead-letter queue: a classic queue, whatever the other queues are. Inspecting
    /// dead letters (`dlq list`, a redrive that leaves some) takes them and puts them back;
    /// a quorum queue counts each such return as a delivery and RabbitMQ 4 drops a message
    /// after 20 (its default delivery limit), silently. A classic queue counts nothing.
    fn dead_letter_queue_args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(LongString::from("classic")),
        );
        if let Some(expires) = self.queue_expires {
            args.insert(
                "x-expires".into(),
                AMQPValue::LongLongInt(expires.as_millis() as i64),
            );
        }
        args
    }

    /// A main queue: dead-letters into the service's DLQ, and (quorum) after
    /// `delivery_limit` deliveries, so nothing that keeps failing is dropped or loops.
    fn main_queue_args(&self, service: Service) -> FieldTable {
        let mut args = self.queue_args();
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(LongString::from(self.service_exchange(service))),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(LongString::from(Self::DEAD_LETTER_KEY)),
        );
        if self.queue_type == QueueType::Quorum {
            args.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongLongInt(i64::from(self.delivery_limit)),
            );
            args.insert(
                "x-dead-letter-strategy".into(),
                AMQPValue::LongString(LongString::from("at-least-once")),
            );
            args.insert(
                "x-overflow".into(),
                AMQPValue::LongString(LongString::from("reject-publish")),
            );
        }
        args
    }

    /// Declares the exchange, every service's main queue and bindings, and `own`'s direct
    /// exchange with its retry and dead-letter queues. Idempotent.
    ///
    /// A main queue that already exists with other arguments (declared by an older
    /// version) is kept as it is, with a warning: its settings can be changed with a
    /// RabbitMQ policy, and refusing to start would help no one. Another service's main
    /// queue that a per-service user may not declare (see [`Topology::permissions`]) is
    /// left to that service, or to the migration run with an administrator's account.
    pub async fn declare(
        &self,
        connection: &Connection,
        own: Option<Service>,
    ) -> Result<(), lapin::Error> {
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        // Throw-away test prefixes: exchanges go with the last queue bound to them.
        let exchange_options = ExchangeDeclareOptions {
            durable: true,
            auto_delete: self.queue_expires.is_some(),
            ..Default::default()
        };
        let mut channel = connection.create_channel().await?;
        channel
            .exchange_declare(
                &self.exchange(),
                ExchangeKind::Topic,
                exchange_options,
                FieldTable::default(),
            )
            .await?;
        for service in Service::ALL {
            let keys = subscriptions(service);
            if keys.is_empty() {
                continue;
            }
            let mine = Some(service) == own;
            let direct = self.service_exchange(service);
            let queue = self.queue(service);
            let declared = async {
                channel
                    .exchange_declare(
                        &direct,
                        ExchangeKind::Direct,
                        exchange_options,
                        FieldTable::default(),
                    )
                    .await?;
                channel
                    .queue_declare(&queue, durable, self.main_queue_args(service))
                    .await
            };
            match declared.await {
                Ok(_) => {}
                Err(e) if is_precondition_failed(&e) => {
                    tracing::warn!(queue = %queue, error = %e, "queue exists with other arguments; keeping it (set dead-lettering and the delivery limit with a policy)");
                    // The failed declare closed the channel.
                    channel = connection.create_channel().await?;
                }
                Err(e) if is_access_refused(&e) && !mine => {
                    tracing::info!(queue = %queue, "not allowed to declare another service's queue; leaving it to that service");
                    channel = connection.create_channel().await?;
                    continue;
                }
                Err(e) => return Err(e),
            }
            for key in keys {
                channel
                    .queue_bind(
                        &queue,
                        &self.exchange(),
                        key,
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
            }
            channel
                .queue_bind(
                    &queue,
                    &direct,
                    Self::MAIN_KEY,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        if let Some(service) = own {
            let direct = self.service_exchange(service);
            channel
                .exchange_declare(
                    &direct,
                    ExchangeKind::Direct,
                    exchange_options,
                    FieldTable::default(),
                )
                .await?;
            for (step, delay) in self.retry_delays.iter().enumerate() {
                let mut args = self.queue_args();
                args.insert(
                    "x-message-ttl".into(),
                    AMQPValue::LongLongInt(delay.as_millis() as i64),
                );
                args.insert(
                    "x-dead-letter-exchange".into(),
                    AMQPValue::LongString(LongString::from(direct.as_str())),
                );
                args.insert(
                    "x-dead-letter-routing-key".into(),
                    AMQPValue::LongString(LongString::from(Self::MAIN_KEY)),
                );
                if self.queue_type == QueueType::Quorum {
                    // At-least-once dead-lettering: a message leaves the retry queue only
                    // once the main queue has confirmed it.
                    args.insert(
                        "x-dead-letter-strategy".into(),
                        AMQPValue::LongString(LongString::from("at-least-once")),
                    );
                    args.insert(
                        "x-overflow".into(),
                        AMQPValue::LongString(LongString::from("reject-publish")),
                    );
                }
                let queue = self.retry_queue(service, step);
                channel.queue_declare(&queue, durable, args).await?;
                channel
                    .queue_bind(
                        &queue,
                        &direct,
                        &Self::retry_key(step),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
            }
            let dlq = self.dead_letter_queue(service);
            match channel
                .queue_declare(&dlq, durable, self.dead_letter_queue_args())
                .await
            {
                Ok(_) => {}
                Err(e) if is_precondition_failed(&e) => {
                    tracing::warn!(queue = %dlq, error = %e, "the dead-letter queue exists as a quorum queue (an older version); RabbitMQ 4 drops its messages after 20 inspections: move them out and delete it, and it is declared again as a classic queue");
                    channel = connection.create_channel().await?;
                }
                Err(e) => return Err(e),
            }
            channel
                .queue_bind(
                    &dlq,
                    &direct,
                    Self::DEAD_LETTER_KEY,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        let _ = channel.close(200, "topology declared").await;
        Ok(())
    }
}

/// The permissions of one service's RabbitMQ user (see [`Topology::permissions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub configure: String,
    pub write: String,
    pub read: String,
    /// Routing keys it may publish to the topic exchange: its own event types.
    pub topic_write: String,
    pub topic_read: String,
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Whether RabbitMQ refused an operation for lack of permission.
pub fn is_access_refused(e: &lapin::Error) -> bool {
    matches!(e, lapin::Error::ProtocolError(p)
        if matches!(p.kind(), AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)))
}

/// Whether RabbitMQ refused a declaration because the thing exists with other settings.
pub fn is_precondition_failed(e: &lapin::Error) -> bool {
    matches!(e, lapin::Error::ProtocolError(p)
        if matches!(p.kind(), AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_user_may_publish_only_its_own_event_types_and_touch_only_its_own_queues() {
        let p = Topology::new("mp").permissions(Service::Cart);
        assert_eq!(
            p.topic_write,
            r"^(cart\.created|cart\.item\.added|cart\.item\.removed|cart\.checkout)$"
        );
        assert_eq!(
            p.write,
            r"^(mp\.events|mp\.cart(\.(retry\.[0-9]+|dlq|direct))?)$"
        );
        assert_eq!(p.configure, p.write);
    }

    #[test]
    fn retry_steps_follow_the_delays_then_stop() {
        let t = Topology::new("x");
        assert_eq!(t.max_attempts(), 5);
        assert_eq!(t.retry_step(1), Some(0));
        assert_eq!(t.retry_step(4), Some(3));
        assert_eq!(t.retry_step(5), None);
    }
}
