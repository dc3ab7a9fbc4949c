//! `wal dump PATH`: every logged operation, in the spirit of `pg_waldump`.
//!
//! PATH is the snapshot (the log is PATH.wal) or the `.wal` file itself.
//! Each operation is printed with its frame's offset, its sequence number,
//! the operation, the id (a `U64` as a number, `Bytes` as hex), the vector's
//! dimension (`--vectors` prints the components), its metadata, and, for an
//! operation in an atomic batch frame, the batch's first sequence number,
//! size and the operation's position in it. `--json` prints one JSON object
//! per line (`"record": "op"`) and a closing `"record": "end"` line.
//! Damage after the intact prefix is printed at the end.
//!
//! Exit code: 0 for an intact log or one with a torn tail, 1 for
//! corruption, 3 when the log cannot be read.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use iqdb_persist::inspect::{self, LogEntry, LogInfo};
use iqdb_persist::{Operation, Options, PersistError};
use serde_json::json;

use crate::examine::{self, damage_kind};
use crate::output::{self, Severity};
use crate::{CliError, CliResult, Context, DbPaths, Status, exit_codes};

/// `wal` subcommands.
#[derive(Debug, Subcommand)]
#[command(after_help = concat!(
    "Examples:
  iqdb-persist wal dump data/vectors.iqdb
  iqdb-persist wal dump data/vectors.iqdb.wal --from 1000 --limit 10 --json

",
    exit_codes!()
))]
pub enum WalCommand {
    /// Print every logged operation (text, or JSON lines with --json).
    Dump(DumpArgs),
}

/// Arguments of `wal dump`.
#[derive(Debug, Args)]
#[command(after_help = concat!(
    "Examples:
  iqdb-persist wal dump data/vectors.iqdb
  iqdb-persist wal dump data/vectors.iqdb.wal --limit 20
  iqdb-persist wal dump data/vectors.iqdb.wal.salvaged-1767225600-0
  iqdb-persist wal dump data/vectors.iqdb --from 5000 --json | jq -c 'select(.op == \"delete\")'

",
    exit_codes!()
))]
pub struct DumpArgs {
    /// The database's snapshot file, or its `.wal` log (any other file that
    /// is not a snapshot, such as a `.salvaged-…` backup, is read as a log).
    pub path: PathBuf,
    /// Print at most N operations (the rest of the log is not scanned).
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Start at the operation with this sequence number.
    #[arg(long, value_name = "SEQ")]
    pub from: Option<u64>,
    /// Also print every vector's components.
    #[arg(long)]
    pub vectors: bool,
}

/// Runs `wal dump`.
///
/// # Errors
///
/// A log that cannot be read (missing, permissions, a damaged header is
/// reported and exits 1) and output errors.
pub fn run_dump(args: &DumpArgs, ctx: &mut Context<'_>) -> CliResult {
    let paths = DbPaths::resolve_log(&args.path);
    let options = Options::default();
    let fs = options.get_file_system().clone();
    let from = args.from.unwrap_or(0);
    let mut printed = 0u64;
    let mut write_error: Option<std::io::Error> = None;
    let json = ctx.json;
    let vectors = args.vectors;
    let limit = args.limit;
    if limit == Some(0) {
        return Err(CliError::new(Status::Usage, "--limit must be at least 1"));
    }
    let out = &mut *ctx.out;
    let result = inspect::scan_log(fs.as_ref(), &paths.wal, |entry| {
        match write_entry(out, &entry, from, limit, &mut printed, json, vectors) {
            Ok(flow) => flow,
            Err(e) => {
                write_error = Some(e);
                ControlFlow::Break(())
            }
        }
    });
    if let Some(e) = write_error {
        return Err(e.into());
    }
    let info = match result {
        Ok(Some(info)) => info,
        Ok(None) => {
            return Err(CliError::new(
                Status::Io,
                format!("{}: no write-ahead log there", paths.wal.display()),
            ));
        }
        Err(e) if matches!(e.root_cause(), PersistError::Io { .. }) => {
            return Err(CliError::persist("", &e));
        }
        Err(e) => {
            // A damaged header: nothing can be dumped.
            let problem = output::Problem::from_error("log-header", &paths.wal, &e);
            if json {
                let line = json!({"record": "end", "error": problem, "exit_code": 1});
                output::write_json_line(out, &line)?;
            } else {
                writeln!(out, "The log cannot be read:")?;
                problem.write_text(out)?;
            }
            return Ok(Status::Corrupt);
        }
    };
    let problem = examine::damage_problem(&info);
    let status = problem.as_ref().map_or(Status::Healthy, |p| p.status);
    if json {
        let line = json!({
            "record": "end",
            "path": info.path.display().to_string(),
            "format_version": info.version,
            "base_seq": info.base_seq,
            "next_seq": info.next_seq,
            "frames": info.frames,
            "operations_printed": printed,
            "stopped_early": info.stopped_early,
            "valid_bytes": info.valid_len,
            "file_bytes": info.file_len,
            "damage": info.damage.as_ref().map(|d| json!({
                "offset": d.offset,
                "kind": damage_kind(d.kind),
                "reason": d.reason,
                "valid_frames_after": d.valid_frames_after,
                "bytes": info.file_len.saturating_sub(d.offset),
            })),
            "exit_code": status.code(),
        });
        output::write_json_line(out, &line)?;
    } else {
        write_end_text(out, &info, printed, problem.as_ref())?;
    }
    Ok(status)
}

fn write_end_text(
    out: &mut dyn Write,
    info: &LogInfo,
    printed: u64,
    problem: Option<&output::Problem>,
) -> std::io::Result<()> {
    let version = info
        .version
        .map_or_else(|| "?".to_string(), |v| v.to_string());
    if info.stopped_early {
        writeln!(
            out,
            "-- stopped after {printed} operation(s) (--limit); the rest of the log was not scanned"
        )?;
        return Ok(());
    }
    writeln!(
        out,
        "-- end of log v{version}: {} frame(s), {printed} operation(s) printed, {} of {} byte(s) intact",
        info.frames, info.valid_len, info.file_len
    )?;
    if let Some(p) = problem {
        let label = if p.severity == Severity::Error {
            "DAMAGE"
        } else {
            "torn tail"
        };
        writeln!(out, "-- {label}:")?;
        p.write_text(out)?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn write_entry(
    out: &mut dyn Write,
    entry: &LogEntry,
    from: u64,
    limit: Option<u64>,
    printed: &mut u64,
    json: bool,
    vectors: bool,
) -> std::io::Result<ControlFlow<()>> {
    let count = entry.operations.len() as u64;
    for (i, op) in entry.operations.iter().enumerate() {
        let seq = entry.first_seq + i as u64;
        if seq < from {
            continue;
        }
        if limit.is_some_and(|l| *printed >= l) {
            return Ok(ControlFlow::Break(()));
        }
        *printed += 1;
        if json {
            let mut obj = json!({
                "record": "op",
                "offset": entry.offset,
                "frame_len": entry.len,
                "seq": seq,
                "op": op_name(op),
                "id": output::id_json(op.id()),
                "id_kind": match op.id() {
                    iqdb_types::VectorId::U64(_) => "u64",
                    iqdb_types::VectorId::Bytes(_) => "bytes",
                },
                "batch": entry.batch.then(|| json!({
                    "first_seq": entry.first_seq,
                    "count": count,
                    "index": i,
                })),
            });
            if let Operation::Insert {
                vector, metadata, ..
            } = op
            {
                obj["dim"] = json!(vector.len());
                obj["metadata"] = metadata
                    .as_ref()
                    .map_or(serde_json::Value::Null, output::metadata_json);
                if vectors {
                    obj["vector"] = json!(vector.iter().map(|&x| f64::from(x)).collect::<Vec<_>>());
                }
            }
            output::write_json_line(out, &obj)?;
        } else {
            let mut line = format!(
                "@{:<10} seq {:<8} {:<6} id={}",
                entry.offset,
                seq,
                op_name(op),
                output::id_text(op.id())
            );
            if let Operation::Insert {
                vector, metadata, ..
            } = op
            {
                line.push_str(&format!(" dim={}", vector.len()));
                match metadata {
                    Some(m) => line.push_str(&format!(" meta={}", output::metadata_text(m))),
                    None => line.push_str(" meta=none"),
                }
                if vectors {
                    line.push_str(&format!(" vector={:?}", &vector[..]));
                }
            }
            if entry.batch {
                line.push_str(&format!(
                    " [batch seq {}..{}, op {}/{count}]",
                    entry.first_seq,
                    entry.first_seq + count - 1,
                    i + 1
                ));
            }
            writeln!(out, "{line}")?;
        }
    }
    Ok(ControlFlow::Continue(()))
}

fn op_name(op: &Operation) -> &'static str {
    match op {
        Operation::Insert { .. } => "insert",
        Operation::Delete { .. } => "delete",
    }
}
