//! `convert PATH --to compat|latest`: rewrites a database in 1.0's formats
//! (snapshot v2, WAL v1: iqdb-persist 1.0 opens it) or in the latest ones
//! (snapshot v3, WAL v2).
//!
//! The conversion is a checkpoint, done by the library
//! ([`iqdb_persist::format_policy::convert`]): the database is loaded under
//! its writer lock (a database open elsewhere gives exit code 4), its log is
//! replayed, and a new snapshot and an empty log are installed in the chosen
//! formats with the checkpoint protocol, so a crash leaves either the old
//! files or the new ones (the next open finishes or abandons it) and every
//! acknowledged write is kept. For an index type the tool does not know
//! (such as `iqdb`'s), the snapshot's payload is copied, verified, into the
//! new format without decoding it
//! ([`iqdb_persist::format_policy::convert_files`]); that needs a log with no
//! operations in it (checkpoint first: `iqdb`'s `flush()` or `close()`),
//! since replaying a log needs the type's code. Registered types (the
//! reference type is; see [`Registry`](crate::Registry)) have their log
//! folded in. A database without a log is converted as a snapshot-only
//! database. `--dry-run` changes nothing and says what would change.
//!
//! Exit code: 0 converted (or, with `--dry-run`, convertible), 1 damaged
//! files, 3 I/O error, 4 locked, 5 an unknown index type with operations in
//! its log.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use iqdb_persist::format_policy::{ConvertReport, convert_files};
use iqdb_persist::inspect;
use iqdb_persist::{FormatPolicy, Options, PersistError};
use serde_json::json;

use crate::output;
use crate::{CliError, CliResult, Context, DbPaths, Status, exit_codes};

/// Arguments of `convert`.
#[derive(Debug, Args)]
#[command(after_help = concat!(
    "Examples:
  iqdb-persist convert data/vectors.iqdb --to compat --dry-run
  iqdb-persist convert data/vectors.iqdb --to compat   # iqdb-persist 1.0 can open it afterwards
  iqdb-persist convert data/vectors.iqdb --to latest --json

",
    exit_codes!()
))]
pub struct ConvertArgs {
    /// The database's snapshot file (its log is PATH.wal).
    pub path: PathBuf,
    /// The formats to write: `compat` (snapshot v2 and WAL v1, what
    /// iqdb-persist 1.0 reads) or `latest` (snapshot v3 and WAL v2).
    #[arg(long, value_enum)]
    pub to: Target,
    /// Show what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// The formats `convert` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// Snapshot v2 and WAL v1: what iqdb-persist 1.0 reads.
    Compat,
    /// Snapshot v3 and WAL v2.
    Latest,
}

impl From<Target> for FormatPolicy {
    fn from(target: Target) -> Self {
        match target {
            Target::Compat => FormatPolicy::Compat,
            Target::Latest => FormatPolicy::Latest,
        }
    }
}

/// Runs `convert`.
///
/// # Errors
///
/// Damaged or unreadable files, a lock held elsewhere, an index type with no
/// converter, and output errors.
pub fn run(args: &ConvertArgs, ctx: &mut Context<'_>) -> CliResult {
    let paths = DbPaths::resolve(&args.path);
    let config = paths.config();
    let options = Options::default();
    let fs = options.get_file_system().clone();
    let info = inspect::snapshot_info(fs.as_ref(), &paths.snapshot, false)
        .map_err(|e| CliError::persist("reading the snapshot header", &e))?;
    let index_type = info.header.index_type.clone();
    let to = FormatPolicy::from(args.to);
    let spin = output::spinner(
        ctx.progress && !args.dry_run,
        "converting: writing the new snapshot and log",
    );
    let result = match ctx.registry.converter(&index_type) {
        Some(converter) => converter(&config, to, &options, args.dry_run),
        None => convert_files(&config, to, options.clone(), args.dry_run),
    };
    spin.finish_and_clear();
    let report = result.map_err(|e| match e {
        PersistError::WouldOverwrite {
            path,
            pending_operations,
        } => CliError::new(
            Status::Failed,
            format!(
                "{}: the log holds {pending_operations} operation(s), and index type \
                 {index_type:?} is not registered, so they cannot be folded into the snapshot: \
                 checkpoint the database with the program that writes it (iqdb: flush() or \
                 close()) and convert again, or register the type (Registry, run_with)",
                path.display()
            ),
        ),
        e => CliError::persist("convert", &e),
    })?;
    write_report(ctx, args, &paths, &report)?;
    Ok(Status::Healthy)
}

fn version(v: Option<u32>) -> String {
    v.map_or_else(|| "none".to_string(), |v| format!("v{v}"))
}

fn write_report(
    ctx: &mut Context<'_>,
    args: &ConvertArgs,
    paths: &DbPaths,
    report: &ConvertReport,
) -> std::io::Result<()> {
    let target = match args.to {
        Target::Compat => "compat",
        Target::Latest => "latest",
    };
    if ctx.json {
        let doc = json!({
            "path": paths.snapshot.display().to_string(),
            "to": target,
            "dry_run": args.dry_run,
            "snapshot_version_before": report.snapshot_before,
            "snapshot_version_after": report.snapshot_after,
            "wal_version_before": report.wal_before,
            "wal_version_after": report.wal_after,
            "operations_folded": report.operations_folded,
            "vectors": report.vectors,
            "rewritten": report.rewritten,
            "readable_by_1_0": report.readable_by_1_0(),
            "status": "healthy",
            "exit_code": Status::Healthy.code(),
        });
        return output::write_json(ctx.out, &doc);
    }
    let out = &mut *ctx.out;
    let verb = if args.dry_run {
        "Would convert"
    } else {
        "Converted"
    };
    writeln!(out, "{verb} {} to {target}", paths.snapshot.display())?;
    output::kv(
        out,
        "snapshot",
        format!("v{} -> v{}", report.snapshot_before, report.snapshot_after),
    )?;
    output::kv(
        out,
        "log",
        format!(
            "{} -> {}",
            version(report.wal_before),
            version(report.wal_after)
        ),
    )?;
    if report.rewritten {
        output::kv(out, "operations folded", report.operations_folded)?;
        output::kv(out, "vectors", report.vectors)?;
    }
    let readable = if report.readable_by_1_0() {
        "yes"
    } else {
        "no (1.0 reads snapshot v1-v2 and WAL v1)"
    };
    let when = if args.dry_run {
        "1.0 could open it after"
    } else {
        "1.0 can open it"
    };
    output::kv(out, when, readable)?;
    let status = if args.dry_run {
        "nothing changed (dry run)"
    } else {
        "converted"
    };
    writeln!(out, "Status: {status} (exit code 0)")
}
