//! A request's fields on every line it logs, and the access-log line.
//!
//! Opening, entering and closing a tracing span per request costs more than the rest
//! of a catalog read's logging, so a request's fields are rendered once as JSON and kept
//! in a task-local; [`crate::format::JsonLine`] splices them in as the `span` of every
//! line logged outside a span of the request's own. The access log line is written
//! straight into the buffer, in the shape tracing would give the same event.

use std::fmt;
use std::io::Write as _;
use std::sync::OnceLock;

use tracing_subscriber::fmt::MakeWriter;

use crate::format::{json_str, write_timestamp};
use crate::writer::BatchWriter;

/// Where [`access_log`] writes its lines directly, when the log is JSON lines.
static ACCESS_LOG: OnceLock<BatchWriter> = OnceLock::new();

/// Makes [`access_log`] write its lines to `writer` (when the log is JSON lines).
pub(crate) fn write_access_lines_to(writer: BatchWriter) {
    let _ = ACCESS_LOG.set(writer);
}

tokio::task_local! {
    /// The fields of the HTTP request a task serves, rendered once as the inside of a
    /// JSON object.
    static REQUEST: Box<str>;
}

/// A request's `service`, `method`, `route`, `correlation_id` and `trace_id`, rendered
/// once as JSON for every line the request logs (see [`in_request`]).
pub struct RequestFields(Box<str>);

pub fn request_fields(
    service: &str,
    method: &str,
    route: &str,
    correlation_id: &str,
    trace_id: &str,
) -> RequestFields {
    let mut fields = String::with_capacity(
        80 + service.len() + method.len() + route.len() + correlation_id.len() + trace_id.len(),
    );
    for (key, value) in [
        ("\"service\":", service),
        (",\"method\":", method),
        (",\"route\":", route),
        (",\"correlation_id\":", correlation_id),
        (",\"trace_id\":", trace_id),
    ] {
        fields.push_str(key);
        // Writing into a String cannot fail.
        let _ = json_str(&mut fields, value);
    }
    RequestFields(fields.into_boxed_str())
}

/// Runs `fut` (a request's handling) with the request's fields on every line it logs, as
/// `span` with `name` `http`: the shape a tracing span gives, without the cost of
/// opening, entering and closing one per request. A span the request opens itself takes
/// precedence, as the current span does.
pub async fn in_request<F: Future>(fields: RequestFields, fut: F) -> F::Output {
    REQUEST.scope(fields.0, fut).await
}

/// Logs a finished request: the line `tracing::info!(message = "request", status,
/// latency_ms)` gives (`error!` and "request failed" for a 5xx), written straight into the
/// log buffer when the log is JSON lines. Going through tracing's field visitors and
/// formatter cost a tenth of a catalog read's instructions; this is one `String` filled
/// in place. Logged through tracing as usual otherwise (the human format, or outside
/// [`init`]), and never when `RUST_LOG` turns this module's INFO (or ERROR) lines off.
pub fn access_log(status: u16, latency_ms: f64) {
    let server_error = status >= 500;
    let enabled = if server_error {
        tracing::enabled!(target: "mp_common::http", tracing::Level::ERROR)
    } else {
        tracing::enabled!(target: "mp_common::http", tracing::Level::INFO)
    };
    if !enabled {
        return;
    }
    let Some(writer) = ACCESS_LOG.get() else {
        trace_access(status, latency_ms);
        return;
    };
    thread_local! {
        static LINE: std::cell::RefCell<String> = std::cell::RefCell::new(String::with_capacity(512));
    }
    LINE.with_borrow_mut(|line| {
        line.clear();
        access_line(line, status, latency_ms);
        // The buffer takes the whole line; it cannot fail.
        let _ = writer.make_writer().write_all(line.as_bytes());
    });
}

/// The access log event through tracing, whose JSON line [`access_line`] writes directly.
pub(crate) fn trace_access(status: u16, latency_ms: f64) {
    if status >= 500 {
        tracing::error!(target: "mp_common::http", message = "request failed", status, latency_ms);
    } else {
        tracing::info!(target: "mp_common::http", message = "request", status, latency_ms);
    }
}

/// The access log line, in the shape [`crate::format::JsonLine`] gives the same event.
pub(crate) fn access_line(line: &mut String, status: u16, latency_ms: f64) {
    line.push_str("{\"timestamp\":\"");
    // Writing into a String cannot fail.
    let _ = write_timestamp(line);
    line.push_str(if status >= 500 {
        "\",\"level\":\"ERROR\",\"message\":\"request failed\",\"status\":"
    } else {
        "\",\"level\":\"INFO\",\"message\":\"request\",\"status\":"
    });
    line.push_str(itoa::Buffer::new().format(status));
    line.push_str(",\"latency_ms\":");
    if latency_ms.is_finite() {
        line.push_str(ryu::Buffer::new().format_finite(latency_ms));
    } else {
        line.push_str("null");
    }
    line.push_str(",\"target\":\"mp_common::http\"");
    let _ = write_request_span(line);
    line.push_str("}\n");
}

/// `,"span":{...,"name":"http"}` with the fields of the request the task serves, if any.
pub(crate) fn write_request_span(w: &mut impl fmt::Write) -> fmt::Result {
    REQUEST
        .try_with(|fields| {
            w.write_str(",\"span\":{")?;
            w.write_str(fields)?;
            w.write_str(",\"name\":\"http\"}")
        })
        .unwrap_or(Ok(()))
}
