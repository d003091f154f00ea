//! From a delivery to its typed handlers: decoding the envelope, checking that it comes
//! from the service the catalog names as its publisher, running each handler that it
//! concerns (under the timeout, a panic caught) and settling the delivery by the outcome.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use async_trait::async_trait;
use chrono::Utc;
use futures::FutureExt;
use lapin::message::Delivery;
use sqlx::PgConnection;
use tracing::Instrument;

use super::headers::attempt_of;
use super::inbox::Outcome;
use super::requeue::Verdict;
use super::{Consumer, EventHandler, HandlerError, ack};
use crate::catalog::{Event, Service};
use crate::envelope::Envelope;

/// A handler with its event type erased: it decodes the raw envelope itself.
#[async_trait]
pub(super) trait ErasedHandler: Send + Sync {
    fn name(&self) -> &'static str;
    fn concerns_raw(&self, raw: &Envelope) -> bool;
    async fn handle_raw(&self, conn: &mut PgConnection, raw: &Envelope)
    -> Result<(), HandlerError>;
    async fn after_commit_raw(&self, raw: &Envelope);
}

pub(super) struct Typed<H>(pub(super) H);

#[async_trait]
impl<H: EventHandler> ErasedHandler for Typed<H> {
    fn name(&self) -> &'static str {
        H::NAME
    }
    fn concerns_raw(&self, raw: &Envelope) -> bool {
        // An undecodable payload concerns it: `handle_raw` dead-letters it with the reason.
        raw.decode::<H::Event>()
            .map_or(true, |event| self.0.concerns(&event))
    }
    async fn handle_raw(
        &self,
        conn: &mut PgConnection,
        raw: &Envelope,
    ) -> Result<(), HandlerError> {
        let event = raw.decode::<H::Event>().map_err(|e| {
            HandlerError::permanent(format!("invalid {} payload: {e}", H::Event::TYPE))
        })?;
        self.0.handle(conn, &event).await
    }
    async fn after_commit_raw(&self, raw: &Envelope) {
        if let Ok(event) = raw.decode::<H::Event>() {
            self.0.after_commit(&event).await;
        }
    }
}

/// Checks the envelope's source against the catalog's publisher of its type (`publishers`);
/// the error is the dead-letter reason. A type the catalog does not know passes: nothing
/// handles it.
fn authenticate(
    publishers: &HashMap<&'static str, Service>,
    envelope: &Envelope,
) -> Result<(), String> {
    match publishers.get(envelope.event_type.as_str()) {
        Some(&publisher) if publisher.as_str() != envelope.source => Err(format!(
            "not authentic: {} events are published by the {publisher} service, this one claims to come from {}",
            envelope.event_type, envelope.source
        )),
        _ => Ok(()),
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}

impl Consumer {
    /// Handles one delivery: its retries and dead letters leave on the publishing
    /// connection, its ack on the delivery's own channel.
    pub(super) async fn process(&self, delivery: Delivery) {
        let attempts = attempt_of(&delivery.properties);
        let envelope: Envelope = match serde_json::from_slice(&delivery.data) {
            Ok(e) => e,
            Err(e) => {
                let key = delivery.routing_key.to_string();
                self.metrics
                    .consumed
                    .with_label_values(&[&key, "", "dead_lettered"])
                    .inc();
                tracing::error!(error = %e, routing_key = %key, "malformed message; dead-lettering");
                self.dead_letter(
                    &delivery,
                    attempts,
                    None,
                    &format!("malformed envelope: {e}"),
                )
                .await;
                return;
            }
        };
        let ctx = envelope.context();
        let span = tracing::info_span!(
            "event",
            service = %self.service,
            event_type = %envelope.event_type,
            event_id = %envelope.id,
            correlation_id = %envelope.correlation_id,
            trace_id = %ctx.trace_id,
            attempt = attempts,
        );
        ctx.scope(
            self.dispatch(&delivery, &envelope, attempts)
                .instrument(span),
        )
        .await;
    }

    async fn dispatch(&self, delivery: &Delivery, envelope: &Envelope, attempts: u32) {
        if let Err(reason) = authenticate(&self.publishers, envelope) {
            self.metrics
                .consumed
                .with_label_values(&[&envelope.event_type, "", "dead_lettered"])
                .inc();
            tracing::error!(reason = %reason, "dead-lettering");
            self.dead_letter(delivery, attempts, None, &reason).await;
            return;
        }
        let Some(handlers) = self.handlers.get(envelope.event_type.as_str()) else {
            self.metrics
                .consumed
                .with_label_values(&[&envelope.event_type, "", "unhandled"])
                .inc();
            tracing::warn!("no handler for this event type; acking");
            ack(delivery).await;
            return;
        };
        for handler in handlers {
            if !handler.concerns_raw(envelope) {
                self.metrics
                    .consumed
                    .with_label_values(&[envelope.event_type.as_str(), handler.name(), "skipped"])
                    .inc();
                continue;
            }
            let started = Instant::now();
            let result = self.guarded(handler.as_ref(), envelope).await;
            self.metrics
                .handler_seconds
                .with_label_values(&[handler.name()])
                .observe(started.elapsed().as_secs_f64());
            let labels = |outcome| [envelope.event_type.as_str(), handler.name(), outcome];
            match result {
                Ok(Outcome::Done) => {
                    self.metrics.consumed.with_label_values(&labels("ok")).inc();
                    let hop = (Utc::now() - envelope.occurred_at)
                        .num_microseconds()
                        .unwrap_or(0) as f64
                        / 1e6;
                    self.metrics
                        .hop_seconds
                        .with_label_values(&[&envelope.event_type])
                        .observe(hop.max(0.0));
                }
                Ok(Outcome::Duplicate) => {
                    self.metrics
                        .consumed
                        .with_label_values(&labels("duplicate"))
                        .inc();
                    tracing::info!(handler = handler.name(), "already handled; skipping");
                }
                Err(e) => {
                    let verdict = Verdict::of(&e, attempts, self.broker.topology());
                    self.metrics
                        .consumed
                        .with_label_values(&labels(verdict.outcome()))
                        .inc();
                    // `e` displays as its cause with the whole chain (`{cause:#}`).
                    match verdict {
                        Verdict::PutBack { attempts } => {
                            if !self.dependency_down.swap(true, Relaxed) {
                                tracing::warn!(handler = handler.name(), error = %e, "a dependency is down; pausing the consumer until it answers");
                            }
                            // Back through the shortest delay, with the attempts it had:
                            // the outage costs it nothing, however long it lasts.
                            self.delay(delivery, 0, attempts).await;
                        }
                        Verdict::Retry { step, attempts } => {
                            tracing::warn!(handler = handler.name(), error = %e, "transient failure; retrying later");
                            self.delay(delivery, step, attempts).await;
                        }
                        Verdict::DeadLetter { reason } => {
                            tracing::error!(handler = handler.name(), reason = %reason, "dead-lettering");
                            self.dead_letter(delivery, attempts, Some(handler.name()), &reason)
                                .await;
                        }
                    }
                    return;
                }
            }
        }
        ack(delivery).await;
    }

    /// Runs a handler under the timeout, turning a panic into a transient failure, so a
    /// delivery always ends acked, retried or dead-lettered, never leaked.
    async fn guarded(
        &self,
        handler: &dyn ErasedHandler,
        envelope: &Envelope,
    ) -> Result<Outcome, HandlerError> {
        let run = AssertUnwindSafe(self.run_handler(handler, envelope)).catch_unwind();
        match tokio::time::timeout(self.handler_timeout, run).await {
            Ok(Ok(result)) => result,
            Ok(Err(panic)) => Err(HandlerError::transient(format!(
                "handler panicked: {}",
                panic_message(&panic)
            ))),
            Err(_) => {
                let why = format!("handler timed out after {:?}", self.handler_timeout);
                if self.database_answers().await {
                    Err(HandlerError::transient(why))
                } else {
                    Err(HandlerError::Unavailable(anyhow::anyhow!(
                        "{why}; PostgreSQL does not answer"
                    )))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::catalog::{VendorCreated, catalog};

    fn publishers() -> HashMap<&'static str, Service> {
        catalog()
            .iter()
            .map(|s| (s.event_type, s.publisher))
            .collect()
    }

    fn raw(source: Service, name: &str) -> Envelope {
        let typed = Envelope::new(
            source,
            VendorCreated {
                vendor_id: uuid::Uuid::now_v7(),
                owner_id: uuid::Uuid::now_v7(),
                name: name.into(),
                email: "v@example.org".into(),
                phone: None,
            },
        );
        serde_json::from_value(serde_json::to_value(typed).unwrap()).unwrap()
    }

    #[test]
    fn an_event_from_its_catalog_publisher_is_authentic() {
        assert_eq!(
            authenticate(&publishers(), &raw(Service::Vendor, "v")),
            Ok(())
        );
    }

    #[test]
    fn an_event_from_another_service_is_not_authentic_and_the_reason_names_both() {
        let reason = authenticate(&publishers(), &raw(Service::Cart, "v")).unwrap_err();
        assert_eq!(
            reason,
            "not authentic: vendor.created events are published by the vendor service, this one claims to come from cart"
        );
    }

    #[test]
    fn an_event_type_the_catalog_does_not_know_is_not_refused_here() {
        let mut unknown = raw(Service::Cart, "v");
        unknown.event_type = "nobody.publishes.this".into();
        assert_eq!(authenticate(&publishers(), &unknown), Ok(()));
    }

    #[test]
    fn a_panic_message_is_read_from_a_str_or_a_string_payload() {
        let of = |payload: Box<dyn std::any::Any + Send>| panic_message(&payload);
        assert_eq!(of(Box::new("static text")), "static text");
        assert_eq!(of(Box::new(String::from("formatted 7"))), "formatted 7");
        assert_eq!(of(Box::new(42_u8)), "(no message)");
        let caught = std::panic::catch_unwind(|| panic!("handler bug on {}", "x")).unwrap_err();
        assert_eq!(panic_message(&caught), "handler bug on x");
    }

    /// Concerned by every vendor but "elsewhere"; remembers its after-commit calls.
    #[derive(Default)]
    struct Picky(Mutex<Vec<String>>);

    #[async_trait]
    impl EventHandler for Picky {
        type Event = VendorCreated;
        const NAME: &'static str = "customer.vendor_membership";

        async fn handle(
            &self,
            _conn: &mut PgConnection,
            _event: &Envelope<VendorCreated>,
        ) -> Result<(), HandlerError> {
            Ok(())
        }
        fn concerns(&self, event: &Envelope<VendorCreated>) -> bool {
            event.payload.name != "elsewhere"
        }
        async fn after_commit(&self, event: &Envelope<VendorCreated>) {
            self.0.lock().unwrap().push(event.payload.name.clone());
        }
    }

    #[test]
    fn the_erased_handler_asks_the_typed_one_whether_an_event_concerns_it() {
        let handler = Typed(Picky::default());
        assert_eq!(handler.name(), "customer.vendor_membership");
        assert!(handler.concerns_raw(&raw(Service::Vendor, "here")));
        assert!(!handler.concerns_raw(&raw(Service::Vendor, "elsewhere")));
    }

    #[test]
    fn an_undecodable_payload_concerns_the_handler_so_that_it_is_dead_lettered() {
        let mut broken = raw(Service::Vendor, "elsewhere");
        broken.payload = serde_json::json!({ "name": 7 });
        assert!(Typed(Picky::default()).concerns_raw(&broken));
    }

    #[tokio::test]
    async fn after_commit_runs_on_a_decodable_payload_only() {
        let handler = Typed(Picky::default());
        handler
            .after_commit_raw(&raw(Service::Vendor, "done"))
            .await;
        let mut broken = raw(Service::Vendor, "broken");
        broken.payload = serde_json::json!({ "name": 7 });
        handler.after_commit_raw(&broken).await;
        assert_eq!(*handler.0.0.lock().unwrap(), vec!["done".to_owned()]);
    }
}
