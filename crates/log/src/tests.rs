//! The lines: their shape against `tracing-subscriber`'s JSON format, the request's
//! fields, the access line.

use tracing::Subscriber;

use crate::format::{JsonFields, JsonLine};
use crate::request::{access_line, trace_access};
use crate::writer::Captured;
use crate::{BatchWriter, LogFlush, RequestFields, in_request, request_fields};

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

/// Each line of `text` as a JSON object without its `timestamp`, and that timestamp,
/// which must be RFC 3339 in UTC.
fn lines(text: &str) -> Vec<(chrono::DateTime<chrono::FixedOffset>, serde_json::Value)> {
    text.lines()
        .map(|line| {
            let mut v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            let at = v
                .as_object_mut()
                .and_then(|o| o.remove("timestamp"))
                .unwrap_or_else(|| panic!("no timestamp: {line}"));
            let at = at.as_str().unwrap_or_default();
            assert!(at.ends_with('Z'), "{line}");
            let at =
                chrono::DateTime::parse_from_rfc3339(at).unwrap_or_else(|e| panic!("{e}: {line}"));
            (at, v)
        })
        .collect()
}

/// [`lines`] without the timestamps.
fn objects(text: &str) -> Vec<serde_json::Value> {
    lines(text).into_iter().map(|(_, v)| v).collect()
}

/// Runs `fut` to completion as the handling of a request with `fields`.
fn in_a_request(fields: RequestFields, fut: impl Future<Output = ()>) {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(in_request(fields, fut));
}

/// A request's fields are the `span` of the lines it logs outside a span of its own
/// (what a tracing span opened per request would give), and every line's timestamp is
/// now, in RFC 3339 UTC. The rest of a line's shape is tracing-subscriber's (the test
/// `lines_are_tracing_subscribers_json_lines`).
#[test]
fn a_requests_fields_are_the_span_of_its_lines() {
    let (sink, guard, subscriber) = json_lines();
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!("outside a request");
        in_a_request(
            request_fields("vendor", "GET", "/x/{id}", "c-1", "t\"1"),
            async {
                tracing::info!("in a request");
                tracing::info_span!("own", step = 2).in_scope(|| tracing::info!("in its span"));
            },
        );
    });
    drop(guard);
    let out = sink.text();
    let lines = lines(&out);
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].1.get("span").is_none(), "{out}");
    assert_eq!(lines[1].1["message"], "in a request");
    assert_eq!(
        lines[1].1["span"],
        serde_json::json!({"service": "vendor", "method": "GET", "route": "/x/{id}",
            "correlation_id": "c-1", "trace_id": "t\"1", "name": "http"})
    );
    assert_eq!(
        lines[2].1["span"],
        serde_json::json!({"step": 2, "name": "own"})
    );
    for (at, line) in &lines {
        let age = chrono::Utc::now().signed_duration_since(at);
        assert!(
            age >= chrono::TimeDelta::zero() && age < chrono::TimeDelta::minutes(10),
            "{line}"
        );
    }
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
    let traced = sink.text();
    let traced_lines = objects(&traced);
    assert_eq!(traced_lines.len(), 2, "{traced}");
    assert_eq!(objects(&direct), traced_lines, "{direct}\n{traced}");
    assert_eq!(traced_lines[1]["level"], "ERROR");
    assert_eq!(traced_lines[0]["span"]["correlation_id"], "c\"1");
}

/// Events of every kind of field, outside and inside spans (nested, with fields
/// recorded after the span opened, with none).
fn every_kind_of_line() {
    #[derive(Debug)]
    #[expect(dead_code, reason = "read only by Debug, which the line shows")]
    struct Order {
        id: u32,
        note: &'static str,
    }
    let failure = std::io::Error::other("disk \"full\"\n");
    tracing::info!("plain message");
    tracing::info!(
        n = -3_i64,
        big = u64::MAX,
        yes = true,
        "numbers {} and {}",
        1,
        2
    );
    tracing::warn!(
        ratio = 0.125_f64,
        whole = 2.0_f64,
        tiny = 1e-7_f64,
        huge = 1.5e300_f64,
        nan = f64::NAN,
        inf = f64::INFINITY,
        "floats"
    );
    tracing::error!(
        text = "quote \" backslash \\ newline \n tab \t nul \u{0} bell \u{7} del \u{7f} é ✓ 🦀",
        error = &failure as &(dyn std::error::Error + 'static),
        shown = %"display \"me\"",
        debugged = ?Order { id: 7, note: "a\"b" },
        r#type = "raw",
        "strings"
    );
    tracing::info!(message = "a message field", other = 1);
    tracing::info!(target: "custom::target", "another target");
    let outer = tracing::info_span!(
        "outer",
        route = "/x/{id}",
        count = 3_u64,
        late = tracing::field::Empty
    );
    outer.record("late", "set \"later\"");
    outer.in_scope(|| {
        tracing::info!(inside = "outer", "in the outer span");
        tracing::info_span!("inner", step = 2, ok = false).in_scope(|| {
            tracing::warn!("in the inner span only");
        });
        tracing::info_span!("empty").in_scope(|| tracing::info!("in a span without fields"));
    });
}

/// Our lines and `tracing-subscriber`'s own JSON format (the event flattened, the
/// current span, no span list) for the same events: the same JSON objects, timestamps
/// aside, which both write as RFC 3339 in UTC.
#[test]
fn lines_are_tracing_subscribers_json_lines() {
    let (ours, guard, subscriber) = json_lines();
    tracing::subscriber::with_default(subscriber, every_kind_of_line);
    drop(guard);

    let theirs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_writer({
            let theirs = theirs.clone();
            move || theirs.clone()
        })
        .finish();
    tracing::subscriber::with_default(subscriber, every_kind_of_line);

    let (ours, theirs) = (objects(&ours.text()), objects(&theirs.text()));
    assert_eq!(ours.len(), 9);
    assert_eq!(ours.len(), theirs.len());
    for (ours, theirs) in ours.iter().zip(&theirs) {
        assert_eq!(ours, theirs, "\nours:   {ours}\ntheirs: {theirs}");
    }
}
