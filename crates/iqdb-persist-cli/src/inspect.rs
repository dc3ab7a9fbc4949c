//! `inspect PATH`: what a database's files say, without verifying payloads.
//!
//! Shows the snapshot header (format, index type, dimension, metric, vector
//! count, compression and ratio, file size, v3 chunks and last sequence
//! number, fingerprint), the log beside it (format, base sequence, frames,
//! operations, valid length, a torn tail or corruption with offset and
//! reason, whether it belongs to the snapshot), a pending checkpoint intent,
//! and leftover temporary files. The log is scanned frame by frame (every
//! frame checksum is checked); the snapshot payload is not read: use
//! `verify` for that.
//!
//! Exit code: 0 unless the header or log is damaged (1) or unreadable (3).

use std::path::PathBuf;

use clap::Args;

use crate::examine::{self, write_log_text, write_problems_text, write_snapshot_text};
use crate::{CliResult, Context, DbPaths, exit_codes, output};

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
    let exam = examine::examine(&paths, false, args.wal_only, ctx.progress)?;
    let status = exam.status();
    if ctx.json {
        let mut map = examine::examination_json(&exam);
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
    write_problems_text(out, &exam.problems, status)?;
    Ok(status)
}
