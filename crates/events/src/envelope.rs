//! The envelope every message travels in, and the context that links events together.

use chrono::{DateTime, Utc};
use rand::RngCore;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::catalog::{Event, Service};

/// What travels on the wire: metadata plus the typed payload.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Envelope<P = serde_json::Value> {
    /// Unique event id (UUID v7: time-ordered).
    pub id: Uuid,
    /// The event type, also the routing key, e.g. `vendor.product.created`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Version of the payload schema.
    pub version: u32,
    pub occurred_at: DateTime<Utc>,
    /// The service that published the event.
    pub source: String,
    /// Shared by every request and event of one user action.
    pub correlation_id: String,
    /// The id of the event that caused this one, if an event did.
    pub causation_id: Option<Uuid>,
    /// W3C trace context of the operation that produced the event.
    pub traceparent: Option<String>,
    pub payload: P,
}

impl<E: Event> Envelope<E> {
    /// Wraps a payload in a new envelope, taking correlation from the ambient context.
    pub fn new(source: Service, payload: E) -> Self {
        let ctx = EventContext::current();
        let traceparent = Some(ctx.child_traceparent());
        Self {
            id: Uuid::now_v7(),
            event_type: E::TYPE.to_owned(),
            version: E::VERSION,
            occurred_at: Utc::now(),
            source: source.as_str().to_owned(),
            correlation_id: ctx.correlation_id,
            causation_id: ctx.causation_id,
            traceparent,
            payload,
        }
    }
}

impl Envelope<serde_json::Value> {
    /// Reads the typed payload out of a raw envelope.
    pub fn decode<E: Event>(&self) -> Result<Envelope<E>, serde_json::Error> {
        Ok(Envelope {
            id: self.id,
            event_type: self.event_type.clone(),
            version: self.version,
            occurred_at: self.occurred_at,
            source: self.source.clone(),
            correlation_id: self.correlation_id.clone(),
            causation_id: self.causation_id,
            traceparent: self.traceparent.clone(),
            payload: E::deserialize(&self.payload)?,
        })
    }

    /// The context for work done because of this event: same correlation and trace,
    /// caused by this event.
    pub fn context(&self) -> EventContext {
        EventContext {
            correlation_id: self.correlation_id.clone(),
            causation_id: Some(self.id),
            trace_id: self
                .traceparent
                .as_deref()
                .and_then(parse_trace_id)
                .unwrap_or_else(new_trace_id),
        }
    }
}

/// Ambient metadata of the current operation (an HTTP request or a consumed event).
#[derive(Debug, Clone)]
pub struct EventContext {
    pub correlation_id: String,
    pub causation_id: Option<Uuid>,
    /// 32 lowercase hex digits, as in W3C trace context.
    pub trace_id: String,
}

tokio::task_local! {
    static CONTEXT: EventContext;
}

impl EventContext {
    /// A context for a new operation: fresh correlation and trace ids.
    pub fn fresh() -> Self {
        Self {
            correlation_id: Uuid::new_v4().to_string(),
            causation_id: None,
            trace_id: new_trace_id(),
        }
    }

    /// The ambient context, or a fresh one outside any request or event.
    pub fn current() -> Self {
        CONTEXT
            .try_with(Clone::clone)
            .unwrap_or_else(|_| Self::fresh())
    }

    /// Runs `fut` with this context as the ambient one.
    pub async fn scope<F: Future>(self, fut: F) -> F::Output {
        CONTEXT.scope(self, fut).await
    }

    /// A traceparent for a child operation of this context (new span id).
    pub fn child_traceparent(&self) -> String {
        let mut span = [0u8; 8];
        rand::thread_rng().fill_bytes(&mut span);
        format!("00-{}-{}-01", self.trace_id, hex(&span))
    }
}

/// Extracts the trace id from a W3C `traceparent` header value.
pub fn parse_trace_id(traceparent: &str) -> Option<String> {
    let mut parts = traceparent.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let is_hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (is_hex(version, 2)
        && is_hex(trace, 32)
        && is_hex(span, 16)
        && is_hex(flags, 2)
        && trace != "0".repeat(32))
    .then(|| trace.to_ascii_lowercase())
}

/// A new random 128-bit trace id.
pub fn new_trace_id() -> String {
    let mut id = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut id);
    hex(&id)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_the_trace_id() {
        let ctx = EventContext::fresh();
        let tp = ctx.child_traceparent();
        assert_eq!(parse_trace_id(&tp).as_deref(), Some(ctx.trace_id.as_str()));
    }

    #[test]
    fn malformed_traceparents_are_rejected() {
        for bad in [
            "",
            "00-abc-def-01",
            "00-00000000000000000000000000000000-0000000000000001-01",
            "zz",
        ] {
            assert_eq!(parse_trace_id(bad), None, "{bad}");
        }
    }
}
