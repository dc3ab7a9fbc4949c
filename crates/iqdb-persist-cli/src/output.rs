//! Shared output helpers: sizes, ids, metadata, problems, progress bars.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use bytesize::ByteSize;
use indicatif::{ProgressBar, ProgressStyle};
use iqdb_types::{Metadata, Value, VectorId};
use serde_json::json;

use crate::Status;

/// `1.2 MiB`.
pub(crate) fn bytes(n: u64) -> String {
    ByteSize(n).display().iec().to_string()
}

/// `1.2 MiB (1234567 bytes)`.
pub(crate) fn bytes_exact(n: u64) -> String {
    if n < 1024 {
        format!("{n} bytes")
    } else {
        format!("{} ({n} bytes)", bytes(n))
    }
}

/// Seconds with a sensible unit.
pub(crate) fn duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{:.0} µs", s * 1e6)
    }
}

/// Writes `key` padded to a column, then `value`.
pub(crate) fn kv(
    out: &mut dyn Write,
    key: &str,
    value: impl std::fmt::Display,
) -> std::io::Result<()> {
    writeln!(out, "  {key:<20} {value}")
}

/// Like [`kv`] with a wider key column.
pub(crate) fn kv_wide(
    out: &mut dyn Write,
    key: &str,
    value: impl std::fmt::Display,
) -> std::io::Result<()> {
    writeln!(out, "  {key:<28} {value}")
}

/// The version of the `--json` documents' schema (docs/CLI.md), in every
/// document as `"schema_version"`. A field removed or changed in meaning
/// raises it; a field added does not.
pub(crate) const SCHEMA_VERSION: u32 = 1;

/// `value` with `"schema_version"` added (a non-object is wrapped as
/// `{"schema_version": 1, "value": ...}`).
pub(crate) fn versioned(value: &serde_json::Value) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    map.insert("schema_version".to_string(), json!(SCHEMA_VERSION));
    match value {
        serde_json::Value::Object(fields) => {
            for (k, v) in fields {
                if k != "schema_version" {
                    map.insert(k.clone(), v.clone());
                }
            }
        }
        other => {
            map.insert("value".to_string(), other.clone());
        }
    }
    serde_json::Value::Object(map)
}

/// Writes one pretty-printed JSON document (with its schema version).
pub(crate) fn write_json(out: &mut dyn Write, value: &serde_json::Value) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, &versioned(value)).map_err(std::io::Error::other)?;
    writeln!(out)
}

/// Writes a report struct (`#[derive(Serialize)]`) as one pretty-printed
/// JSON document, with its schema version.
#[cfg(feature = "replication")]
pub(crate) fn write_report<T: serde::Serialize>(
    out: &mut dyn Write,
    report: &T,
) -> std::io::Result<()> {
    let value = serde_json::to_value(report).map_err(std::io::Error::other)?;
    write_json(out, &value)
}

/// Writes one JSON document as one line (JSON lines; with its schema
/// version).
pub(crate) fn write_json_line(
    out: &mut dyn Write,
    value: &serde_json::Value,
) -> std::io::Result<()> {
    writeln!(out, "{}", versioned(value))
}

/// An id as JSON: a `U64` as a number, `Bytes` as a hex string.
pub(crate) fn id_json(id: &VectorId) -> serde_json::Value {
    match id {
        VectorId::U64(n) => json!(n),
        VectorId::Bytes(_) => json!(id.to_string()),
    }
}

/// An id as text: a `U64` as a decimal number, `Bytes` as `hex:...`, with
/// the text in quotes when it is printable ASCII.
pub(crate) fn id_text(id: &VectorId) -> String {
    match id {
        VectorId::U64(n) => n.to_string(),
        VectorId::Bytes(b) => {
            if b.iter().all(|c| c.is_ascii_graphic() || *c == b' ') {
                format!("hex:{id} ({:?})", String::from_utf8_lossy(b))
            } else {
                format!("hex:{id}")
            }
        }
    }
}

/// A metadata value as JSON (a non-finite float as its name, a string).
pub(crate) fn value_json(value: &Value) -> serde_json::Value {
    match value {
        Value::String(s) => json!(s),
        Value::Int(i) => json!(i),
        Value::Float(f) if f.is_finite() => json!(f),
        Value::Float(f) => json!(f.to_string()),
        Value::Bool(b) => json!(b),
        _ => serde_json::Value::Null,
    }
}

/// Metadata as a JSON object.
pub(crate) fn metadata_json(metadata: &Metadata) -> serde_json::Value {
    serde_json::Value::Object(
        metadata
            .iter()
            .map(|(k, v)| (k.clone(), value_json(v)))
            .collect(),
    )
}

/// Metadata as `{key=value, ...}`.
pub(crate) fn metadata_text(metadata: &Metadata) -> String {
    let fields: Vec<String> = metadata
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => format!("{s:?}"),
                Value::Int(i) => i.to_string(),
                Value::Float(f) => f.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => "null".to_string(),
            };
            format!("{k}={v}")
        })
        .collect();
    format!("{{{}}}", fields.join(", "))
}

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Severity {
    /// Worth knowing; nothing is wrong.
    Info,
    /// Not damage (for example a torn tail a crash leaves, which the next
    /// open truncates), but worth acting on.
    Warning,
    /// Damage or a failure.
    Error,
}

/// One finding, with where it is.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Problem {
    pub severity: Severity,
    /// The exit status this problem implies (healthy for infos and
    /// warnings).
    #[serde(skip)]
    pub status: Status,
    /// Short machine-readable tag (`torn-tail`, `corrupt-frame`, ...).
    pub code: &'static str,
    pub file: Option<String>,
    pub offset: Option<u64>,
    pub message: String,
}

impl Problem {
    pub(crate) fn new(
        severity: Severity,
        status: Status,
        code: &'static str,
        file: Option<&Path>,
        offset: Option<u64>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            severity,
            status,
            code,
            file: file.map(|p| p.display().to_string()),
            offset,
            message: message.into(),
        }
    }

    /// A problem from a library error, with its file and offset.
    pub(crate) fn from_error(
        code: &'static str,
        fallback_file: &Path,
        error: &iqdb_persist::PersistError,
    ) -> Self {
        let status = Status::of_error(error);
        let file = error.path().unwrap_or(fallback_file);
        Self::new(
            Severity::Error,
            status,
            code,
            Some(file),
            error.offset(),
            error.root_cause().to_string(),
        )
    }

    pub(crate) fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let label = match self.severity {
            Severity::Info => "note",
            Severity::Warning => "WARNING",
            Severity::Error => "ERROR",
        };
        let place = match (&self.file, self.offset) {
            (Some(f), Some(o)) => format!("{f} at byte {o}: "),
            (Some(f), None) => format!("{f}: "),
            _ => String::new(),
        };
        writeln!(out, "  {label:<8} {place}{}", self.message)
    }
}

/// The combined status of a list of problems.
pub(crate) fn status_of(problems: &[Problem]) -> Status {
    problems
        .iter()
        .fold(Status::Healthy, |acc, p| acc.worst(p.status))
}

/// The word for a status in reports.
pub(crate) fn status_word(status: Status, problems: &[Problem]) -> &'static str {
    match status {
        Status::Healthy if problems.iter().any(|p| p.severity == Severity::Warning) => {
            "healthy, with warnings"
        }
        Status::Healthy => "healthy",
        Status::Corrupt => "CORRUPT",
        Status::Io => "I/O ERROR",
        Status::Locked => "LOCKED",
        Status::Fenced => "FENCED",
        Status::RestoredEarlier => "restored an earlier point",
        Status::NothingToRestore => "NOTHING RESTORED",
        Status::Usage | Status::Failed => "FAILED",
    }
}

/// A progress bar with a known length (hidden unless `enabled`).
pub(crate) fn bar(enabled: bool, len: u64, message: &str) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{msg:<28} [{bar:30}] {pos}/{len} ({per_sec}, {eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message.to_string());
    bar
}

/// A spinner for a step without a known length (hidden unless `enabled`).
pub(crate) fn spinner(enabled: bool, message: &str) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        bar.set_style(style);
    }
    bar.set_message(message.to_string());
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_render_distinctly() {
        assert_eq!(id_json(&VectorId::U64(7)), json!(7));
        let bytes = VectorId::Bytes(b"id-5".to_vec().into());
        assert_eq!(id_json(&bytes), json!("69642d35"));
        assert_eq!(id_text(&bytes), "hex:69642d35 (\"id-5\")");
        let raw = VectorId::Bytes(vec![0xff, 0].into());
        assert_eq!(id_text(&raw), "hex:ff00");
    }

    #[test]
    fn metadata_renders_every_kind() {
        let m: Metadata = [
            ("a".to_string(), Value::Int(-3)),
            ("b".to_string(), Value::Float(f64::NAN)),
            ("c".to_string(), Value::String("x".into())),
            ("d".to_string(), Value::Null),
            ("e".to_string(), Value::Bool(true)),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            metadata_json(&m),
            json!({"a": -3, "b": "NaN", "c": "x", "d": null, "e": true})
        );
        assert_eq!(metadata_text(&m), "{a=-3, b=NaN, c=\"x\", d=null, e=true}");
    }

    #[test]
    fn every_document_carries_the_schema_version() {
        let v = versioned(&json!({"b": 1, "a": 2, "schema_version": 9}));
        assert_eq!(v, json!({"schema_version": 1, "b": 1, "a": 2}));
        assert_eq!(
            versioned(&json!([1])),
            json!({"schema_version": 1, "value": [1]})
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(bytes_exact(12), "12 bytes");
        assert!(bytes_exact(2048).contains("2048 bytes"));
    }
}
