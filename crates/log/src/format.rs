//! The JSON line: `timestamp`, `level`, the event's fields (`message` first), `target`,
//! and `span` with the fields and `name` of the current span: the shape of
//! `tracing-subscriber`'s JSON format with `flatten_event(true)` and the current span
//! only (the test `lines_are_tracing_subscribers_json_lines` compares them), written
//! directly, with an escape table and a timestamp formatted once a second.

use std::cell::Cell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::span::Record;
use tracing::{Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use crate::request::write_request_span;

/// The event format: a span's fields are rendered once, as JSON, when it opens (by
/// [`JsonFields`]), and spliced into each line instead of being parsed and serialized
/// again for every event.
pub struct JsonLine;

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
pub struct JsonFields;

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

pub(crate) fn json_str(w: &mut impl fmt::Write, s: &str) -> fmt::Result {
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
pub(crate) fn write_timestamp(w: &mut impl fmt::Write) -> fmt::Result {
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
