//! `inspect PATH`: what a database's files say, without verifying payloads.
//!
//! Shows the snapshot header (format, index type, dimension, metric, vector
//! count, compression and ratio, file size, v3 chunks and last sequence
//! number, fingerprint), the log beside it (format, base sequence, frames,
//! operations, valid length, a torn tail or corruption with offset and
//! reason, whether it belongs to the snapshot), a pending checkpoint intent,
//! leftover temporary files, and the formats: whether iqdb-persist 1.0 can
//! open the database as it is, the `IQDB_PERSIST_FORMAT` setting and what
//! the next checkpoint writes. The log is scanned frame by frame (every
//! frame checksum is checked); the snapshot payload is not read: use
//! `verify` for that.
//!
//! Exit code: 0 unless the header or log is damaged (1) or unreadable (3).

use std::path::PathBuf;

use clap::Args;
use iqdb_persist::format_policy::{self, FormatStatus};
use iqdb_persist::{FORMAT_ENV, Options};
use serde_json::json;

use crate::examine::{self, write_log_text, write_problems_text, write_snapshot_text};
use crate::output::{Problem, Severity};
use crate::{CliResult, Context, DbPaths, Status, exit_codes, output};

/// Arguments of `inspect`.
#[derive(Debug, Args)]
#[command(after_help = concat!(
    "Examples:
  iqdb-persist inspect data/vectors.iqdb
  iqdb-persist inspect data/vectors.iqdb.wal --wal-only
  iqdb-persist inspect data/vectors.iqdb --json | jq .log.frames

",
    exit_codes!()
))]
pub struct InspectArgs {
    /// The database's snapshot file (its log is PATH.wal); a path ending in
    /// `.wal` names the log.
    pub path: PathBuf,
    /// Look only at the log (for example when the snapshot is missing);
    /// PATH may then name any log file, such as a `.salvaged-…` backup.
    #[arg(long)]
    pub wal_only: bool,
}

/// Runs `inspect`.
///
/// # Errors
///
/// Unreadable files (I/O errors other than a missing snapshot beside an
/// existing log) and output errors.
pub fn run(args: &InspectArgs, ctx: &mut Context<'_>) -> CliResult {
    let paths = if args.wal_only {
        DbPaths::resolve_log(&args.path)
    } else {
        DbPaths::resolve(&args.path)
    };
    let mut exam = examine::examine(&paths, false, args.wal_only, ctx.progress)?;
    let options = Options::default();
    let formats = format_policy::status(
        options.get_file_system().as_ref(),
        &paths.config(),
        &options,
    );
    if let Err(e) = &formats.policy {
        exam.problems.push(Problem::new(
            Severity::Error,
            Status::Failed,
            "format-setting",
            None,
            None,
            format!("{e}: every open and load of a database fails until it is fixed or unset"),
        ));
    }
    let status = exam.status();
    if ctx.json {
        let mut map = examine::examination_json(&exam);
        if !args.wal_only {
            map.insert("formats".into(), formats_json(&formats));
        }
        map.insert("problems".into(), serde_json::json!(exam.problems));
        map.insert(
            "status".into(),
            serde_json::json!(output::status_word(status, &exam.problems)),
        );
        map.insert("exit_code".into(), serde_json::json!(status.code()));
        output::write_json(ctx.out, &serde_json::Value::Object(map))?;
        return Ok(status);
    }
    let out = &mut *ctx.out;
    if let Some(s) = &exam.snapshot {
        write_snapshot_text(out, s)?;
    } else if !args.wal_only {
        writeln!(
            out,
            "Snapshot {}: unreadable (see findings)",
            paths.snapshot.display()
        )?;
    }
    match &exam.log {
        Some(l) => write_log_text(out, l, exam.log_follows_snapshot)?,
        None => writeln!(out, "Log {}: none", paths.wal.display())?,
    }
    let intent = match exam.checkpoint_pending {
        Some(true) => "pending (an interrupted checkpoint; the next open resolves it)",
        Some(false) => "none",
        None => "unreadable (see findings)",
    };
    writeln!(out, "Checkpoint intent: {intent}")?;
    if exam.temp_files.is_empty() {
        writeln!(out, "Temporary files: none")?;
    } else {
        writeln!(out, "Temporary files:")?;
        for f in &exam.temp_files {
            writeln!(out, "  {}", f.display())?;
        }
    }
    if !args.wal_only {
        write_formats_text(out, &formats, &paths)?;
    }
    write_problems_text(out, &exam.problems, status)?;
    Ok(status)
}

fn policy_text(formats: &FormatStatus) -> String {
    match (&formats.policy, &formats.environment) {
        (Err(e), _) => format!("INVALID: {e}"),
        (Ok(policy), Some(value)) => format!("{value:?} (policy {})", policy.name()),
        (Ok(policy), None) => format!("unset (policy {}, the default)", policy.name()),
    }
}

fn readable_text(formats: &FormatStatus, paths: &DbPaths) -> String {
    let files = format!(
        "snapshot {}, log {}",
        formats
            .snapshot_version
            .map_or_else(|| "unreadable".to_string(), |v| format!("v{v}")),
        formats
            .wal_version
            .map_or_else(|| "none".to_string(), |v| format!("v{v}"))
    );
    match formats.readable_by_1_0 {
        Some(true) => format!("yes ({files})"),
        Some(false) => format!(
            "no ({files}; 1.0 reads snapshot v1-v2 and WAL v1): `iqdb-persist convert {} --to compat` makes it so",
            paths.snapshot.display()
        ),
        None => format!("unknown ({files})"),
    }
}

fn write_formats_text(
    out: &mut dyn std::io::Write,
    formats: &FormatStatus,
    paths: &DbPaths,
) -> std::io::Result<()> {
    writeln!(out, "Formats")?;
    output::kv(out, "1.0 can open it", readable_text(formats, paths))?;
    output::kv(out, FORMAT_ENV, policy_text(formats))?;
    let next = formats.next.map_or_else(
        || "unknown (the setting is invalid)".to_string(),
        |(snapshot, wal)| format!("snapshot v{}, log v{}", snapshot.version(), wal.version()),
    );
    output::kv(out, "next checkpoint", next)
}

fn formats_json(formats: &FormatStatus) -> serde_json::Value {
    json!({
        "snapshot_version": formats.snapshot_version,
        "wal_version": formats.wal_version,
        "readable_by_1_0": formats.readable_by_1_0,
        "environment": formats.environment,
        "policy": formats.policy.as_ref().ok().map(|p| p.name()),
        "policy_error": formats.policy.as_ref().err(),
        "policy_source": formats.policy_source,
        "next_snapshot_version": formats.next.map(|(s, _)| s.version()),
        "next_wal_version": formats.next.map(|(_, w)| w.version()),
    })
}
