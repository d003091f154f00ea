//! Logging: JSON lines (one object per event, with the fields of the current request or
//! event span: service, trace_id, correlation_id) ready for an ELK-style pipeline, or a
//! human format for local debugging. `RUST_LOG` filters as usual.
//!
//! Lines are written by a background thread, so a slow disk or pipe never stalls a
//! request; keep the returned guard alive until exit so the last lines are flushed.

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

pub fn init(format: &str) -> WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        // Never drop a log line: under a burst, callers wait rather than lose it.
        .lossy(false)
        .finish(std::io::stdout());
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
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    };
    guard
}
