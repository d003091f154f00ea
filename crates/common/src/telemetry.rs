//! Logging: JSON lines (one object per event, with the fields of the current request or
//! event span: service, trace_id, correlation_id) ready for an ELK-style pipeline, or a
//! human format for local debugging. `RUST_LOG` filters as usual.
//!
//! Lines are appended to an in-memory buffer that a background thread writes out every
//! few milliseconds, in one system call per batch: a request pays for formatting its line
//! and a short lock, never for a write or for waking a thread. Nothing is dropped: when
//! the buffer is full, the logging thread writes the batch itself. Nothing is written
//! under the buffer's lock, so a stalled output stops only the writer (and a logger that
//! found the buffer full), never the others. Keep the returned guard alive until exit,
//! so the last lines are written.
//!
//! Why by hand: `tracing-subscriber`'s JSON format through `tracing-appender` costs
//! twice the CPU per request and 40 % of the throughput of the layers (BENCHMARKS.md,
//! "The log writer"; `make bench` measures both).

use std::cell::Cell;
use std::fmt::{self, Write as _};
use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::span::Record;
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// How long a line may wait in the buffer.
const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// Past this size the writer thread is woken at once.
const WAKE_AT: usize = 256 * 1024;
/// Past this size the logging thread writes the batch itself (back-pressure, no loss).
const WRITE_INLINE_AT: usize = 4 * 1024 * 1024;

/// Where [`access_log`] writes its lines directly, when the log is JSON lines.
static ACCESS_LOG: OnceLock<BatchWriter> = OnceLock::new();

pub fn init(format: &str) -> LogFlush {
    let (writer, guard) = BatchWriter::start(io::stdout());
    if format != "pretty" {
        let _ = ACCESS_LOG.set(writer.clone());
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
            .fmt_fields(JsonFields)
            .event_format(JsonLine)
            .try_init()
    };
    guard
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
fn trace_access(status: u16, latency_ms: f64) {
    if status >= 500 {
        tracing::error!(target: "mp_common::http", message = "request failed", status, latency_ms);
    } else {
        tracing::info!(target: "mp_common::http", message = "request", status, latency_ms);
    }
}

/// The access log line, in the shape [`JsonLine`] gives the same event.
fn access_line(line: &mut String, status: u16, latency_ms: f64) {
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
fn write_request_span(w: &mut impl fmt::Write) -> fmt::Result {
    REQUEST
        .try_with(|fields| {
            w.write_str(",\"span\":{")?;
            w.write_str(fields)?;
            w.write_str(",\"name\":\"http\"}")
        })
        .unwrap_or(Ok(()))
}

/// One JSON object a line: `timestamp`, `level`, the event's fields (`message` first),
/// `target`, and `span` with the fields and `name` of the current span. The shape of
/// tracing-subscriber's JSON format (flattened event, current span), written directly:
/// a span's fields are rendered once, as JSON, when it opens, and spliced into each line
/// instead of being parsed and serialized again for every event.
struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        w.write_str("{\"timestamp\":\"")?;
        write_timestamp(&mut w)?;
        w.write_str("\",\"level\":\"")?;
        w.write_str(meta.level().as_str())?;
        w.write_char('"')?;
        let mut fields = JsonVisitor {
            w: &mut w,
            first: false,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        w.write_str(",\"target\":")?;
        json_str(&mut w, meta.target())?;
        let current = ctx.lookup_current();
        if current.is_none() {
            // In a request and no span of its own: the request's fields.
            write_request_span(&mut w)?;
        }
        if let Some(span) = current {
            w.write_str(",\"span\":{")?;
            let extensions = span.extensions();
            if let Some(fields) = extensions.get::<FormattedFields<N>>()
                && !fields.fields.is_empty()
            {
                w.write_str(&fields.fields)?;
                w.write_char(',')?;
            }
            w.write_str("\"name\":")?;
            json_str(&mut w, span.name())?;
            w.write_char('}')?;
        }
        w.write_str("}\n")
    }
}

/// Renders a span's fields as the inside of a JSON object: `"key":value,...`.
struct JsonFields;

impl<'writer> FormatFields<'writer> for JsonFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut visitor = JsonVisitor {
            w: &mut writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &Record<'_>,
    ) -> fmt::Result {
        let mut visitor = JsonVisitor {
            first: current.fields.is_empty(),
            w: &mut current.as_writer(),
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

/// Writes each field as `,"name":value` (no comma before the first when `first`).
struct JsonVisitor<'a, 'w> {
    w: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl JsonVisitor<'_, '_> {
    fn field(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        self.result = (|| {
            if !std::mem::take(&mut self.first) {
                self.w.write_char(',')?;
            }
            json_str(self.w, field.name())?;
            self.w.write_char(':')?;
            value(self.w)
        })();
    }
}

impl Visit for JsonVisitor<'_, '_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, |w| {
            w.write_char('"')?;
            write!(Escaped(w), "{value:?}")?;
            w.write_char('"')
        });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, |w| json_str(w, value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |w| write!(w, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.field(field, |w| {
            if value.is_finite() {
                w.write_str(ryu::Buffer::new().format_finite(value))
            } else {
                w.write_str("null")
            }
        });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.field(field, |w| {
            w.write_char('"')?;
            write!(Escaped(w), "{value}")?;
            w.write_char('"')
        });
    }
}

fn json_str(w: &mut impl fmt::Write, s: &str) -> fmt::Result {
    w.write_char('"')?;
    Escaped(w).write_str(s)?;
    w.write_char('"')
}

/// For each byte, 0 when it stands as it is inside a JSON string, else the letter of its
/// escape (`u` for `\u00XX`).
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[b'\n' as usize] = b'n';
    table[b'\r' as usize] = b'r';
    table[b'\t' as usize] = b't';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// Escapes what it is given for the inside of a JSON string.
struct Escaped<'a, W: fmt::Write + ?Sized>(&'a mut W);

impl<W: fmt::Write + ?Sized> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Most strings need no escape: one pass the compiler vectorizes tells.
        let needs_escape = s.bytes().fold(false, |any, b| {
            any | (b < 0x20) | (b == b'"') | (b == b'\\')
        });
        if !needs_escape {
            return self.0.write_str(s);
        }
        // Everything that needs escaping is ASCII, so scanning bytes is safe: a run of
        // plain bytes between two escapes is whole UTF-8.
        let mut plain = 0;
        for (i, &b) in s.as_bytes().iter().enumerate() {
            let escape = ESCAPE[usize::from(b)];
            if escape == 0 {
                continue;
            }
            if plain < i {
                self.0.write_str(&s[plain..i])?;
            }
            self.0.write_char('\\')?;
            if escape == b'u' {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                self.0.write_str("u00")?;
                self.0.write_char(char::from(HEX[usize::from(b >> 4)]))?;
                self.0.write_char(char::from(HEX[usize::from(b & 0xf)]))?;
            } else {
                self.0.write_char(char::from(escape))?;
            }
            plain = i + 1;
        }
        if plain < s.len() {
            self.0.write_str(&s[plain..])?;
        }
        Ok(())
    }
}

/// Writes the time now as RFC 3339 in UTC with microseconds, like
/// `2026-11-26T05:04:12.123456Z`. The part up to the second is formatted once a second
/// per thread; the rest is a few digits.
fn write_timestamp(w: &mut impl fmt::Write) -> fmt::Result {
    thread_local! {
        static SECOND: Cell<(u64, [u8; 20])> = const { Cell::new((u64::MAX, [0; 20])) };
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let cached = SECOND.with(|cached| {
        let (at, prefix) = cached.get();
        if at == secs {
            return Some(prefix);
        }
        let time = chrono::DateTime::from_timestamp(i64::try_from(secs).ok()?, 0)?;
        // Four-digit years only (the others have a longer prefix, and are not cached).
        let prefix: [u8; 20] = time
            .format("%Y-%m-%dT%H:%M:%S.")
            .to_string()
            .into_bytes()
            .try_into()
            .ok()?;
        cached.set((secs, prefix));
        Some(prefix)
    });
    let Some(prefix) = cached else {
        let time = chrono::DateTime::from_timestamp(i64::try_from(secs).unwrap_or(i64::MAX), 0)
            .unwrap_or_default();
        return write!(
            w,
            "{}.{:06}Z",
            time.format("%Y-%m-%dT%H:%M:%S"),
            now.subsec_micros()
        );
    };
    let mut line = [0u8; 27];
    line[..20].copy_from_slice(&prefix);
    let mut micros = now.subsec_micros();
    for digit in line[20..26].iter_mut().rev() {
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    line[26] = b'Z';
    w.write_str(std::str::from_utf8(&line).map_err(|_| fmt::Error)?)
}

type Sink = Box<dyn Write + Send>;

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// Whoever writes locks this first and only then takes the buffer's lines (for as
    /// long as it takes to move them out), so batches go out in order and no write, and
    /// no wait for one, ever happens under the buffer's lock.
    sink: Mutex<Sink>,
}

struct State {
    buffer: Vec<u8>,
    closed: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A [`MakeWriter`] whose lines go to a buffer written out in batches by a thread.
#[derive(Clone)]
pub struct BatchWriter {
    shared: Arc<Shared>,
}

impl BatchWriter {
    /// Starts the writing thread. Dropping the guard writes what is left and stops it.
    pub fn start(sink: impl Write + Send + 'static) -> (Self, LogFlush) {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                buffer: Vec::with_capacity(64 * 1024),
                closed: false,
            }),
            wake: Condvar::new(),
            sink: Mutex::new(Box::new(sink)),
        });
        let worker = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("log-writer".into())
                .spawn(move || write_batches(&shared))
                .expect("the log writer thread starts")
        };
        (
            Self {
                shared: shared.clone(),
            },
            LogFlush {
                shared,
                worker: Some(worker),
            },
        )
    }
}

fn write_batches(shared: &Shared) {
    let mut batch = Vec::with_capacity(64 * 1024);
    loop {
        {
            let state = lock(&shared.state);
            if !state.closed && state.buffer.len() < WAKE_AT {
                // Gather lines for a moment rather than waking on each one.
                drop(
                    shared
                        .wake
                        .wait_timeout(state, FLUSH_EVERY)
                        .unwrap_or_else(|e| e.into_inner()),
                );
            }
        }
        let mut sink = lock(&shared.sink);
        let closed = {
            let mut state = lock(&shared.state);
            std::mem::swap(&mut state.buffer, &mut batch);
            state.closed
        };
        // A log line that cannot be written has nowhere else to go.
        if !batch.is_empty() {
            let _ = sink.write_all(&batch);
            batch.clear();
        }
        if closed {
            let _ = sink.flush();
            return;
        }
        let _ = sink.flush();
    }
}

/// One event's line on its way into the buffer.
pub struct Line<'a> {
    shared: &'a Shared,
}

impl Write for Line<'_> {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let mut state = lock(&self.shared.state);
        if state.closed {
            // Past shutdown: straight through.
            drop(state);
            return lock(&self.shared.sink).write(line);
        }
        state.buffer.extend_from_slice(line);
        let len = state.buffer.len();
        drop(state);
        if len >= WRITE_INLINE_AT {
            // The writer thread is behind: this logger writes what is buffered itself,
            // and so waits instead of growing the buffer without bound (each logger adds
            // at most a line past the limit before it waits here). The others go on
            // logging into the buffer meanwhile.
            let mut sink = lock(&self.shared.sink);
            let batch = std::mem::take(&mut lock(&self.shared.state).buffer);
            sink.write_all(&batch)?;
        } else if len >= WAKE_AT {
            self.shared.wake.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Line {
            shared: &self.shared,
        }
    }
}

/// Writes the buffered lines and stops the writer thread when dropped.
pub struct LogFlush {
    shared: Arc<Shared>,
    worker: Option<JoinHandle<()>>,
}

impl Drop for LogFlush {
    fn drop(&mut self) {
        lock(&self.shared.state).closed = true;
        self.shared.wake.notify_one();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink the test can read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A subscriber writing JSON lines to a sink the test reads back once the guard drops.
    fn json_lines() -> (Captured, LogFlush, impl Subscriber + Send + Sync) {
        let sink = Captured::default();
        let (writer, guard) = BatchWriter::start(sink.clone());
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(JsonFields)
            .event_format(JsonLine)
            .with_writer(writer)
            .finish();
        (sink, guard, subscriber)
    }

    /// Runs `fut` to completion as the handling of a request with `fields`.
    fn in_a_request(fields: RequestFields, fut: impl Future<Output = ()>) {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(in_request(fields, fut));
    }

    #[test]
    fn a_line_is_json_with_the_event_fields_and_the_current_span() {
        let (sink, guard, subscriber) = json_lines();
        let dispatch = tracing::Dispatch::new(subscriber);
        let _default = tracing::dispatcher::set_default(&dispatch);
        {
            tracing::info!(plain = true, "outside {}", "any span");
            let span = tracing::info_span!(
                "http",
                route = "/x/{id}",
                n = 3_u64,
                late = tracing::field::Empty
            );
            span.record("late", "set \"later\"");
            let _in = span.enter();
            tracing::warn!(status = 200, latency_ms = 0.5, ratio = f64::NAN, text = "a\"b\n\u{1}c", error = %"x\\y", "request");
        }
        in_a_request(
            request_fields("vendor", "GET", "/x/{id}", "c-1", "t\"1"),
            async {
                tracing::info!("in a request");
                tracing::info_span!("own", step = 2).in_scope(|| tracing::info!("in its span"));
            },
        );
        drop(_default);
        drop(guard);
        let out = String::from_utf8(lock(&sink.0).clone()).unwrap();
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert_eq!(
            lines[2]["span"],
            serde_json::json!({"service": "vendor", "method": "GET", "route": "/x/{id}",
                "correlation_id": "c-1", "trace_id": "t\"1", "name": "http"})
        );
        assert_eq!(lines[2]["message"], "in a request");
        assert_eq!(
            lines[3]["span"],
            serde_json::json!({"step": 2, "name": "own"})
        );
        assert_eq!(lines[0]["message"], "outside any span");
        assert_eq!(lines[0]["plain"], true);
        assert!(lines[0].get("span").is_none());
        let line = &lines[1];
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["message"], "request");
        assert_eq!(line["status"], 200);
        assert_eq!(line["latency_ms"], 0.5);
        assert_eq!(line["ratio"], serde_json::Value::Null);
        assert_eq!(line["text"], "a\"b\n\u{1}c");
        assert_eq!(line["error"], "x\\y");
        assert_eq!(line["target"], module_path!());
        assert_eq!(
            line["span"],
            serde_json::json!({"route": "/x/{id}", "n": 3, "late": "set \"later\"", "name": "http"})
        );
        for line in &lines {
            let at =
                chrono::DateTime::parse_from_rfc3339(line["timestamp"].as_str().unwrap()).unwrap();
            let age = chrono::Utc::now().signed_duration_since(at);
            assert!(
                age >= chrono::TimeDelta::zero() && age < chrono::TimeDelta::minutes(10),
                "{line}"
            );
        }
        assert!(lines[0]["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn the_access_line_is_the_line_tracing_gives_for_the_same_event() {
        let (sink, guard, subscriber) = json_lines();
        let mut direct = String::new();
        tracing::subscriber::with_default(subscriber, || {
            in_a_request(
                request_fields("vendor", "GET", "/api/products/{id}", "c\"1", "t1"),
                async {
                    for (status, latency_ms) in [(200, 0.25), (503, 1500.0)] {
                        trace_access(status, latency_ms);
                        access_line(&mut direct, status, latency_ms);
                    }
                },
            );
        });
        drop(guard);
        let traced = String::from_utf8(lock(&sink.0).clone()).unwrap();
        let without_time = |text: &str| -> Vec<serde_json::Value> {
            text.lines()
                .map(|l| {
                    let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                    assert!(v["timestamp"].as_str().unwrap().ends_with('Z'), "{l}");
                    v.as_object_mut().unwrap().remove("timestamp");
                    v
                })
                .collect()
        };
        let traced_lines = without_time(&traced);
        assert_eq!(traced_lines.len(), 2, "{traced}");
        assert_eq!(without_time(&direct), traced_lines, "{direct}\n{traced}");
        assert_eq!(traced_lines[1]["level"], "ERROR");
        assert_eq!(traced_lines[0]["span"]["correlation_id"], "c\"1");
    }

    /// A sink whose writes wait at a gate the test opens, telling it when one waits.
    struct Gated {
        out: Captured,
        open: Arc<(Mutex<bool>, Condvar)>,
        entered: std::sync::mpsc::Sender<()>,
    }

    impl Write for Gated {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _ = self.entered.send(());
            let (open, changed) = &*self.open;
            let mut is_open = lock(open);
            while !*is_open {
                is_open = changed.wait(is_open).unwrap_or_else(|e| e.into_inner());
            }
            self.out.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// The output stalls while a batch is written (a full pipe, a slow disk): other
    /// threads still log into the buffer instead of queueing behind the write. (The
    /// batch was written, and waited for, under the buffer's lock, so every logging
    /// thread of the service stopped with it.)
    #[test]
    fn a_stalled_write_holds_no_logger_back() {
        let out = Captured::default();
        let open = Arc::new((Mutex::new(false), Condvar::new()));
        let (entered, writing) = std::sync::mpsc::channel();
        let gated = Gated {
            out: out.clone(),
            open: open.clone(),
            entered,
        };
        let (writer, guard) = BatchWriter::start(gated);
        // A line big enough to be written by the thread that logs it.
        let big = {
            let writer = writer.clone();
            std::thread::spawn(move || {
                let mut line = vec![b'x'; WRITE_INLINE_AT];
                line.push(b'\n');
                writer.make_writer().write_all(&line).unwrap();
            })
        };
        writing
            .recv_timeout(Duration::from_secs(30))
            .expect("a write reached the sink");
        let (done, logged) = std::sync::mpsc::channel();
        let small = {
            let writer = writer.clone();
            std::thread::spawn(move || {
                writer.make_writer().write_all(b"small\n").unwrap();
                let _ = done.send(());
            })
        };
        let result = logged.recv_timeout(Duration::from_secs(30));
        *lock(&open.0) = true;
        open.1.notify_all();
        big.join().unwrap();
        small.join().unwrap();
        drop(guard);
        assert!(
            result.is_ok(),
            "a small line waited for the stalled write of another"
        );
        let text = lock(&out.0);
        assert_eq!(text.len(), WRITE_INLINE_AT + 1 + "small\n".len());
        assert!(text.ends_with(b"small\n"), "the lines kept their order");
    }

    #[test]
    fn every_line_arrives_once_in_order_when_the_guard_drops() {
        let sink = Captured::default();
        let (writer, guard) = BatchWriter::start(sink.clone());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        // Big enough that some batches are written inline.
                        let line = format!("{t} {i} {}\n", "x".repeat(200));
                        writer.make_writer().write_all(line.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let out = String::from_utf8(lock(&sink.0).clone()).unwrap();
        let mut next = [0usize; 4];
        for line in out.lines() {
            let mut parts = line.split(' ');
            let t: usize = parts.next().unwrap().parse().unwrap();
            let i: usize = parts.next().unwrap().parse().unwrap();
            assert_eq!(i, next[t], "thread {t}'s lines out of order or lost");
            next[t] += 1;
        }
        assert_eq!(next, [20_000; 4]);
    }
}
