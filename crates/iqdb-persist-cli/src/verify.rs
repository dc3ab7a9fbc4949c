//! `verify PATH`: a full integrity check.
//!
//! Without knowing the index type: every snapshot checksum is verified and
//! the whole (possibly compressed) payload decoded
//! ([`iqdb_persist::inspect::snapshot_info`] with `verify`), and every log
//! frame is read and checked ([`iqdb_persist::inspect::scan_log`]). For
//! index types in the [`Registry`](crate::Registry) (the reference
//! `VectorStore` by default) the payload is also decoded by the index and the
//! log replayed onto it in memory
//! ([`iqdb_persist::inspect::load_read_only`]), reporting the counts.
//! Nothing is written, and the writer lock is not taken.
//!
//! Every problem is reported with its file and byte offset. A torn log tail
//! is a warning, not corruption: it is what a crash leaves, and the next
//! open truncates it (`--strict` counts it as corruption).
//!
//! Exit code: 0 healthy (possibly with warnings), 1 corruption, 3 I/O error.

use std::path::PathBuf;

use clap::Args;
use iqdb_persist::{Options, RecoveryMode, RecoveryReport};
use serde_json::json;

use crate::examine::{self, write_log_text, write_problems_text, write_snapshot_text};
use crate::output::{self, Problem, Severity};
use crate::registry::IndexSummary;
use crate::{CliResult, Context, DbPaths, Status, exit_codes};

/// Arguments of `verify`.
#[derive(Debug, Args)]
#[command(after_help = concat!(
    "Examples:
  iqdb-persist verify data/vectors.iqdb
  iqdb-persist verify data/vectors.iqdb --strict --quiet && echo ok
  iqdb-persist verify data/vectors.iqdb --json | jq .problems

",
    exit_codes!()
))]
pub struct VerifyArgs {
    /// The database's snapshot file (its log is PATH.wal); a path ending in
    /// `.wal` names the log.
    pub path: PathBuf,
    /// Check only the log (for example when the snapshot is missing);
    /// PATH may then name any log file, such as a `.salvaged-…` backup.
    #[arg(long)]
    pub wal_only: bool,
    /// Count a torn log tail as corruption (exit code 1).
    #[arg(long)]
    pub strict: bool,
}

/// What decoding with a registered loader found.
#[derive(Debug)]
struct Decoded {
    summary: IndexSummary,
    report: RecoveryReport,
    replayed_log: bool,
}

/// Runs `verify`.
///
/// # Errors
///
/// Unreadable files and output errors.
pub fn run(args: &VerifyArgs, ctx: &mut Context<'_>) -> CliResult {
    let paths = if args.wal_only {
        DbPaths::resolve_log(&args.path)
    } else {
        DbPaths::resolve(&args.path)
    };
    let mut exam = examine::examine(&paths, true, args.wal_only, ctx.progress)?;
    if args.strict {
        for p in &mut exam.problems {
            if p.code == "torn-tail" {
                p.severity = Severity::Error;
                p.status = Status::Corrupt;
                p.message.push_str(" [an error under --strict]");
            }
        }
    }

    let mut decoded = None;
    if let Some(snapshot) = &exam.snapshot {
        let index_type = snapshot.header.index_type.clone();
        match ctx.registry.get(&index_type) {
            None => exam.problems.push(Problem::new(
                Severity::Warning,
                Status::Healthy,
                "no-loader",
                Some(&paths.snapshot),
                None,
                format!(
                    "no loader is registered for index type {index_type:?}: checksums and \
                     log frames were verified, but the payload was not decoded nor the log \
                     replayed (registered: {})",
                    ctx.registry.index_types().collect::<Vec<_>>().join(", ")
                ),
            )),
            Some(loader) => {
                let mut config = paths.config();
                // A log that does not belong is already reported; decode the
                // snapshot alone then.
                let replay = exam.log_follows_snapshot != Some(false)
                    || exam.checkpoint_pending == Some(true);
                config.wal_enabled = replay && exam.log.is_some();
                // Salvage: replay up to any damage (already reported) so the
                // counts cover the intact prefix. Read-only: nothing is cut.
                let options = Options::default().recovery_mode(RecoveryMode::Salvage);
                let spin = output::spinner(ctx.progress, "decoding and replaying");
                let result = loader(&config, &options);
                spin.finish_and_clear();
                match result {
                    Ok(outcome) => {
                        decoded = Some(Decoded {
                            summary: outcome.summary,
                            report: outcome.report,
                            replayed_log: config.wal_enabled,
                        });
                    }
                    Err(e) => {
                        exam.problems
                            .push(Problem::from_error("decode", &paths.snapshot, &e))
                    }
                }
            }
        }
    }
    if let Some(d) = &decoded
        && d.report.operations_rejected > 0
    {
        exam.problems.push(Problem::new(
            Severity::Info,
            Status::Healthy,
            "rejected-operations",
            Some(&paths.wal),
            None,
            format!(
                "{} logged operation(s) are rejected on replay (a duplicate id, a delete \
                 of an absent id, ...); they were rejected when logged too, so this is \
                 expected",
                d.report.operations_rejected
            ),
        ));
    }

    let status = exam.status();
    if ctx.json {
        let mut map = examine::examination_json(&exam);
        map.insert("snapshot_verified".into(), json!(exam.snapshot.is_some()));
        map.insert(
            "index".into(),
            decoded
                .as_ref()
                .map_or(serde_json::Value::Null, decoded_json),
        );
        map.insert("problems".into(), json!(exam.problems));
        map.insert(
            "status".into(),
            json!(output::status_word(status, &exam.problems)),
        );
        map.insert("healthy".into(), json!(status == Status::Healthy));
        map.insert("exit_code".into(), json!(status.code()));
        output::write_json(ctx.out, &serde_json::Value::Object(map))?;
        return Ok(status);
    }

    let out = &mut *ctx.out;
    if let Some(s) = &exam.snapshot {
        write_snapshot_text(out, s)?;
        output::kv(
            out,
            "checksums",
            "all verified; payload decompressed and complete",
        )?;
    } else if !args.wal_only {
        writeln!(
            out,
            "Snapshot {}: FAILED verification (see findings)",
            paths.snapshot.display()
        )?;
    }
    match &exam.log {
        Some(l) => write_log_text(out, l, exam.log_follows_snapshot)?,
        None => writeln!(out, "Log {}: none", paths.wal.display())?,
    }
    if let Some(d) = &decoded {
        writeln!(out, "Index (decoded by its registered loader)")?;
        output::kv(out, "type", &d.summary.index_type)?;
        output::kv(out, "vectors", d.summary.vectors)?;
        output::kv(out, "dimension", d.summary.dim)?;
        output::kv(out, "metric", &d.summary.metric)?;
        for (k, v) in &d.summary.details {
            output::kv(out, k, v)?;
        }
        if d.report.checkpoint_completed {
            output::kv(
                out,
                "log replay",
                "skipped: an interrupted checkpoint already folded the log into the snapshot",
            )?;
        } else if d.replayed_log {
            output::kv(
                out,
                "log replay",
                format!(
                    "{} frame(s): {} operation(s) applied, {} rejected",
                    d.report.frames_replayed,
                    d.report.operations_applied,
                    d.report.operations_rejected
                ),
            )?;
            if let Some(t) = &d.report.truncated {
                output::kv(
                    out,
                    "replay stopped",
                    format!("at byte {} ({})", t.offset, t.reason),
                )?;
            }
        } else {
            output::kv(
                out,
                "log replay",
                "not replayed (no log, or it does not belong)",
            )?;
        }
    }
    write_problems_text(out, &exam.problems, status)?;
    Ok(status)
}

fn decoded_json(d: &Decoded) -> serde_json::Value {
    let details: serde_json::Map<String, serde_json::Value> = d
        .summary
        .details
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    json!({
        "index_type": d.summary.index_type,
        "vectors": d.summary.vectors,
        "dim": d.summary.dim,
        "metric": d.summary.metric,
        "details": details,
        "replay": {
            "log_replayed": d.replayed_log,
            "checkpoint_completed": d.report.checkpoint_completed,
            "frames_replayed": d.report.frames_replayed,
            "operations_applied": d.report.operations_applied,
            "operations_rejected": d.report.operations_rejected,
            "stopped_at": d.report.truncated.as_ref().map(|t| json!({
                "offset": t.offset,
                "bytes": t.bytes,
                "kind": examine::damage_kind(t.kind),
                "reason": t.reason,
            })),
        },
    })
}
