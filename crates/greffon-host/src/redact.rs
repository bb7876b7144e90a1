//! Redaction of secret values: every value the host has handed to a
//! worker is replaced by `[secret NAME]` in crash dumps, log and audit
//! records, and the error messages the host produces.
//!
//! The set is process-wide, not per worker: a log line or a dump does not
//! always say which worker it came from (a worker's raw output, a record
//! written after the worker is gone), and hiding a value in more places
//! than needed costs nothing.

use std::borrow::Cow;
use std::io::{self, Write};
use std::sync::RwLock;
use tracing_subscriber::fmt::MakeWriter;

/// One way a value may appear in text, and what replaces it.
#[derive(Debug)]
struct Form {
    text: String,
    label: String,
}

/// Forms of every value handed out so far, longest first so that a value
/// containing another is replaced whole.
static HANDED: RwLock<Vec<Form>> = RwLock::new(Vec::new());

/// Remembers that `value` (the secret `name`) was handed to a worker, or
/// is a credential of the process's own (a database password): from now
/// on it is redacted. Besides the value as it is, its JSON-escaped
/// form is hidden too (log files are JSON lines, dumps hold JSON
/// arguments).
pub fn remember(name: &str, value: &str) {
    if value.is_empty() {
        return;
    }
    let label = format!("[secret {name}]");
    let escaped = serde_json::to_string(value).unwrap_or_default();
    let escaped = escaped
        .strip_prefix('"')
        .and_then(|e| e.strip_suffix('"'))
        .unwrap_or(value)
        .to_string();
    let mut handed = HANDED.write().unwrap_or_else(|p| p.into_inner());
    for text in [value.to_string(), escaped] {
        if !handed.iter().any(|f| f.text == text) {
            handed.push(Form {
                text,
                label: label.clone(),
            });
        }
    }
    handed.sort_by_key(|f| std::cmp::Reverse(f.text.len()));
}

/// `text` with every handed-out value replaced by its label.
pub fn redact(text: &str) -> Cow<'_, str> {
    let handed = HANDED.read().unwrap_or_else(|p| p.into_inner());
    let mut out = Cow::Borrowed(text);
    for form in handed.iter() {
        if out.contains(&form.text) {
            out = Cow::Owned(out.replace(&form.text, &form.label));
        }
    }
    out
}

/// A [`MakeWriter`] whose writers redact each record before writing it:
/// the log layers format one whole record per write, so a value cannot be
/// split across two writes.
#[derive(Debug)]
pub(crate) struct Redacting<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacting<M> {
    type Writer = RedactingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter(self.0.make_writer())
    }
}

#[derive(Debug)]
pub(crate) struct RedactingWriter<W>(W);

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Ok(text) = std::str::from_utf8(buf) else {
            return self.0.write(buf);
        };
        match redact(text) {
            Cow::Borrowed(_) => self.0.write(buf),
            Cow::Owned(clean) => {
                self.0.write_all(clean.as_bytes())?;
                Ok(buf.len())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handed_values_and_their_json_form_are_replaced() {
        remember("REDACT_TEST_A", "s3cr\"et-value-a");
        remember("REDACT_TEST_B", "s3cr\"et-value-a-longer");
        let text = "x s3cr\"et-value-a y {\"v\":\"s3cr\\\"et-value-a\"} z s3cr\"et-value-a-longer";
        assert_eq!(
            redact(text),
            "x [secret REDACT_TEST_A] y {\"v\":\"[secret REDACT_TEST_A]\"} z [secret REDACT_TEST_B]"
        );
        assert!(matches!(redact("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn the_log_writer_redacts_each_record() {
        remember("REDACT_TEST_C", "hunter2-writer");
        let mut out = Vec::new();
        let mut w = RedactingWriter(&mut out);
        w.write_all(b"{\"message\":\"token hunter2-writer\"}\n")
            .expect("write");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "{\"message\":\"token [secret REDACT_TEST_C]\"}\n"
        );
    }
}
