//! Messaging backbone shared by every service.
//!
//! * [`envelope`]: the envelope every message travels in, and the ambient [`EventContext`]
//!   (correlation id, causation id, traceparent) that flows from a request or a consumed
//!   event into the events it causes.
//! * [`catalog`]: the Rust types of every event in the catalog, which service publishes
//!   each and which handlers consume it. Topology and the AsyncAPI document derive from it.
//! * [`topology`]: names and declaration of exchanges and queues (main, delayed retry, DLQ).
//! * [`broker`]: a self-healing RabbitMQ connection.
//! * [`outbox`]: writing events in the caller's transaction, and the relay that publishes
//!   them with publisher confirms.
//! * [`consumer`]: the runner that dispatches deliveries to idempotent handlers (inbox),
//!   retries transient failures with backoff and dead-letters poison messages.
//! * [`dlq`]: operator tooling to list, inspect and redrive dead letters.
//! * [`asyncapi`]: the AsyncAPI document generated from the catalog.

pub mod asyncapi;
pub mod backoff;
pub mod broker;
pub mod catalog;
pub mod consumer;
pub mod dlq;
pub mod envelope;
pub mod metrics;
pub mod money;
pub mod outbox;
pub mod topology;

pub use broker::Broker;
pub use catalog::{Event, Service};
pub use consumer::{Consumer, EventHandler, HandlerError};
pub use envelope::{Envelope, EventContext};
pub use metrics::EventMetrics;
pub use money::{Currency, InvalidCurrency, Money};
pub use outbox::{Relay, enqueue};
pub use topology::Topology;

/// Migrations every service applies to its own schema: the outbox and the inbox.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/common");
