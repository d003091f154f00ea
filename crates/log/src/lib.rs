//! Logging: JSON lines (one object per event, with the fields of the current request or
//! event span: service, trace_id, correlation_id) ready for an ELK-style pipeline, or a
//! human format for local debugging. `RUST_LOG` filters as usual.
//!
//! * [`format`]: the JSON line, in the shape of `tracing-subscriber`'s JSON format with
//!   the event flattened and the current span (a test compares the two line by line),
//!   with a span's fields rendered once when it opens instead of for every event.
//! * [`request`]: a request's fields on every line it logs without opening a span, and
//!   the access-log line written straight into the buffer.
//! * [`writer`]: the lossless batching writer. Lines go to an in-memory buffer that a
//!   background thread writes out every few milliseconds, in one system call per batch:
//!   a request pays for formatting its line and a short lock, never for a write or for
//!   waking a thread. Nothing is dropped: when the buffer is full, the logging thread
//!   writes the batch itself. Nothing is written under the buffer's lock, so a stalled
//!   output stops only the writer (and a logger that found the buffer full), never the
//!   others. Keep the guard [`init`] returns alive until exit, so the last lines are
//!   written.
//!
//! Why by hand: `tracing-subscriber`'s JSON format through `tracing-appender`'s
//! non-blocking writer (lossless) costs twice the CPU per request and 40 % of the
//! throughput of the service layers (BENCHMARKS.md, "The log writer"; `make bench`
//! measures both).

pub mod format;
pub mod request;
pub mod writer;

#[cfg(test)]
mod tests;

use std::io;

use tracing_subscriber::EnvFilter;

pub use request::{RequestFields, access_log, in_request, request_fields};
pub use writer::{BatchWriter, LogFlush};

/// Installs the global subscriber: JSON lines on standard output, or the human format
/// when `format` is `pretty`. Keep the guard until exit.
pub fn init(format: &str) -> LogFlush {
    let (writer, guard) = BatchWriter::start(io::stdout());
    if format != "pretty" {
        request::write_access_lines_to(writer.clone());
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,sqlx=warn,lapin=warn,amq_protocol=warn,tower_http=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_writer(writer);
    let _ = if format == "pretty" {
        builder.try_init()
    } else {
        builder
            .fmt_fields(format::JsonFields)
            .event_format(format::JsonLine)
            .try_init()
    };
    guard
}
