//! `--log-format json`: one JSON object per event, written straight into the
//! line.
//!
//! Why not tracing-subscriber's own JSON format: it stores a span's fields as
//! a JSON text and, for every event inside the span, parses that text back
//! into a tree to serialize it again. Every review's `reviewed` line is inside
//! the review's span (uid, kind, namespace, object, operation), so that was a
//! parse, a tree and a serialization per review at the default level. Here a
//! span's fields are written once, as the members of a JSON object, when the
//! span is created, and copied into each of its events' lines.
//!
//! The shape is the one tracing-subscriber writes with `flatten_event` and the
//! current span:
//! `{"timestamp":"…Z","level":"INFO","message":"…",<fields>,"target":"…","span":{<fields>,"name":"…"}}`.

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats events (see the module docs).
pub struct JsonLines;

/// Formats fields as the members of a JSON object, without its braces.
pub struct JsonFields;

// Only with `JsonFields`: a span's fields formatted any other way would not be JSON.
impl<S> FormatEvent<S, JsonFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        context: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // A record of the `log` crate (rustls, wasmtime, ...) arrives through
        // tracing-log's callsite, whose target is `log`: its own is in here.
        let normalized = event.normalized_metadata();
        let metadata = normalized.as_ref().unwrap_or_else(|| event.metadata());
        writer.write_str("{\"timestamp\":\"")?;
        SystemTime.format_time(&mut writer)?;
        write!(writer, "\",\"level\":\"{}\"", metadata.level())?;
        let mut members = Members::after_others(&mut writer);
        members.skip_log_fields = normalized.is_some();
        event.record(&mut members);
        // A field's Debug that failed left the line unfinished: fmt writes its
        // own error line instead.
        members.result?;
        writer.write_str(",\"target\":")?;
        string(&mut writer, metadata.target())?;
        // The explicit parent if the event names one, else the current span.
        if let Some(span) = context.parent_span() {
            writer.write_str(",\"span\":{")?;
            if let Some(fields) = span.extensions().get::<FormattedFields<JsonFields>>()
                && !fields.is_empty()
            {
                write!(writer, "{},", fields.fields)?;
            }
            writer.write_str("\"name\":")?;
            string(&mut writer, span.name())?;
            writer.write_char('}')?;
        }
        writer.write_str("}\n")
    }
}

impl<'writer> FormatFields<'writer> for JsonFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut members = Members::first(&mut writer);
        fields.record(&mut members);
        members.result
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let before = current.fields.len();
        let mut writer = current.as_writer();
        let mut members = if before == 0 {
            Members::first(&mut writer)
        } else {
            Members::after_others(&mut writer)
        };
        fields.record(&mut members);
        let result = members.result;
        // A failed field must not leave the span's stored JSON broken for good.
        if result.is_err() {
            current.fields.truncate(before);
        }
        result
    }
}

/// Writes each field it visits as a `"name":value` member.
struct Members<'a, 'w> {
    writer: &'a mut Writer<'w>,
    /// No member written yet, and none before: the next needs no comma.
    first: bool,
    /// The event came from the `log` crate: its `log.*` fields (target, module,
    /// file, line) are already in the line's metadata.
    skip_log_fields: bool,
    result: fmt::Result,
}

impl<'a, 'w> Members<'a, 'w> {
    fn first(writer: &'a mut Writer<'w>) -> Self {
        Self {
            writer,
            first: true,
            skip_log_fields: false,
            result: Ok(()),
        }
    }

    fn after_others(writer: &'a mut Writer<'w>) -> Self {
        Self {
            first: false,
            ..Self::first(writer)
        }
    }

    /// The member's name and colon, then `value` writes the value.
    fn member(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'w>) -> fmt::Result) {
        if self.result.is_err() || (self.skip_log_fields && field.name().starts_with("log.")) {
            return;
        }
        let separator = if std::mem::take(&mut self.first) {
            ""
        } else {
            ","
        };
        self.result = self
            .writer
            .write_str(separator)
            .and_then(|()| string(self.writer, field.name()))
            .and_then(|()| self.writer.write_char(':'))
            .and_then(|()| value(self.writer));
    }
}

impl Visit for Members<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, |writer| string(writer, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |writer| write!(writer, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |writer| write!(writer, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |writer| write!(writer, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity: those are written as strings.
        if value.is_finite() {
            self.member(field, |writer| write!(writer, "{value}"));
        } else {
            self.member(field, |writer| write!(writer, "\"{value}\""));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.member(field, |writer| {
            writer.write_char('"')?;
            write!(Escaped(writer), "{value}")?;
            writer.write_char('"')
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.member(field, |writer| {
            writer.write_char('"')?;
            write!(Escaped(writer), "{value:?}")?;
            writer.write_char('"')
        });
    }
}

/// `text` as a JSON string.
fn string(writer: &mut impl Write, text: &str) -> fmt::Result {
    writer.write_char('"')?;
    Escaped(writer).write_str(text)?;
    writer.write_char('"')
}

/// Writes what it is given escaped for the inside of a JSON string.
struct Escaped<'a, W: Write>(&'a mut W);

impl<W: Write> Write for Escaped<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut plain = 0;
        for (at, byte) in text.bytes().enumerate() {
            let escape = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..0x20 | 0x7f => "",
                _ => continue,
            };
            self.0.write_str(&text[plain..at])?;
            if escape.is_empty() {
                write!(self.0, "\\u{byte:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            plain = at + 1;
        }
        self.0.write_str(&text[plain..])
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::{Value, json};
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// Lines written by the subscriber under test.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().write(bytes)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;
        fn make_writer(&'a self) -> Lines {
            self.clone()
        }
    }

    /// What `log` logs, each line parsed as JSON.
    fn logged(log: impl FnOnce()) -> Vec<Value> {
        let lines = Lines::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(lines.clone())
            .fmt_fields(JsonFields)
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect()
    }

    #[test]
    fn an_event_in_a_span_is_one_object_with_the_span_nested() {
        #[derive(Debug)]
        struct Kind;
        let lines = logged(|| {
            let span = tracing::info_span!("review", uid = "u-1", kind = ?Kind, object = %"web");
            let _entered = span.enter();
            tracing::info!(
                outcome = "patched",
                warnings = 2u64,
                delta = -3i64,
                dry_run = false,
                ratio = 0.5,
                missing = f64::NAN,
                "reviewed"
            );
        });
        let line = &lines[0];
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'), "{line}");
        let mut line = line.clone();
        line.as_object_mut().unwrap().remove("timestamp");
        assert_eq!(
            line,
            json!({
                "level": "INFO",
                "message": "reviewed",
                "outcome": "patched",
                "warnings": 2,
                "delta": -3,
                "dry_run": false,
                "ratio": 0.5,
                "missing": "NaN",
                "target": module_path!(),
                "span": {"uid": "u-1", "kind": "Kind", "object": "web", "name": "review"},
            })
        );
    }

    #[test]
    fn the_innermost_span_is_the_one_written() {
        let lines = logged(|| {
            let outer = tracing::info_span!("reload", generation = 3u64);
            let _outer = outer.enter();
            let span = tracing::info_span!("review", uid = "u-1");
            let _entered = span.enter();
            tracing::warn!("inside");
        });
        assert_eq!(lines[0]["span"], json!({"uid": "u-1", "name": "review"}));
        assert_eq!(lines[0]["level"], "WARN");
    }

    #[test]
    fn text_that_needs_escaping_stays_valid_json() {
        let nasty = "quote \" backslash \\ newline \n tab \t bell \u{7} del \u{7f} é ✓";
        let error = std::io::Error::other("an \"error\"\non two lines");
        let lines = logged(|| {
            let span = tracing::info_span!("review", uid = nasty);
            let _entered = span.enter();
            tracing::error!(text = nasty, debug = ?nasty, error = &error as &dyn std::error::Error, "{nasty}");
        });
        let line = &lines[0];
        assert_eq!(line["message"], nasty);
        assert_eq!(line["text"], nasty);
        assert_eq!(line["debug"], format!("{nasty:?}"));
        assert_eq!(line["error"], "an \"error\"\non two lines");
        assert_eq!(line["span"]["uid"], nasty);
    }

    #[test]
    fn an_event_with_an_explicit_parent_names_that_span() {
        let lines = logged(|| {
            let parent = tracing::info_span!("reload", generation = 3u64);
            let current = tracing::info_span!("review", uid = "u-1");
            let _entered = current.enter();
            tracing::info!(parent: &parent, "loaded");
            tracing::info!(parent: None, "alone");
        });
        assert_eq!(lines[0]["span"], json!({"generation": 3, "name": "reload"}));
        assert_eq!(lines[1].get("span"), None);
    }

    #[test]
    fn a_record_of_the_log_crate_keeps_its_own_target() {
        let lines = logged(|| {
            let record = log::Record::builder()
                .args(format_args!("handshake failed"))
                .level(log::Level::Warn)
                .target("rustls::server")
                .module_path(Some("rustls::server"))
                .file(Some("server.rs"))
                .line(Some(7))
                .build();
            tracing_log::format_trace(&record).unwrap();
        });
        let mut line = lines[0].clone();
        line.as_object_mut().unwrap().remove("timestamp");
        assert_eq!(
            line,
            json!({"level": "WARN", "message": "handshake failed", "target": "rustls::server"})
        );
    }

    #[test]
    fn fields_recorded_on_a_span_later_are_added_to_it() {
        let lines = logged(|| {
            let span = tracing::info_span!("review", uid = "u-1", outcome = tracing::field::Empty);
            span.record("outcome", "denied");
            let _entered = span.enter();
            tracing::info!("reviewed");
        });
        assert_eq!(
            lines[0]["span"],
            json!({"uid": "u-1", "outcome": "denied", "name": "review"})
        );
        // An event outside any span has no `span` member.
        let lines = logged(|| tracing::info!(n = 1u64, "alone"));
        assert_eq!(lines[0].get("span"), None);
        assert_eq!(lines[0]["n"], 1);
    }
}
