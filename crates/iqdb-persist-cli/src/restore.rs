//! `restore URL --to DIR`: rebuilds a database from its replica, to the
//! latest shipped point or `--at` a sequence number or time, verifying
//! every checksum; then loads it read-only (for registered index types) to
//! show that it opens.
//!
//! `--if-db-not-exists` and `--if-replica-exists` make it a no-op (exit 0)
//! when the database is already there or there is nothing to restore, as
//! container entrypoints need.
//!
//! Exit codes, one per outcome (also in `restore --help`):
//!
//! | code | outcome |
//! |---|---|
//! | 0 | restored the latest point (or the `--at` point); or nothing to do with the `--if-*` flags |
//! | 7 | restored an earlier point: the latest one is damaged (the report says what was damaged) |
//! | 8 | restored nothing: the replica is empty (no manifest, no generation) or no point matches `--at` |
//! | 1 | restored nothing: the requested point is damaged and no intact earlier point exists (or `--at` was given) |
//! | 2 | bad arguments |
//! | 3 | store, network or local I/O errors |
//! | 5 | other failures (a non-empty DIR, a restored database that does not load) |

use std::path::PathBuf;

use clap::Args;
use iqdb_persist::Options;
use iqdb_persist_replicate::{
    ReplicateError, RestoreOptions, RestoreTarget, format_time, parse_time,
};

use crate::replicate::{Bars, StoreArgs, open_replica, replicate_error};
use crate::{CliError, CliResult, Context, Status, exit_codes, output};

/// Arguments of `restore`.
#[derive(Debug, Args)]
#[command(after_help = concat!(
    "Examples:
  iqdb-persist restore s3://backups/vectors --to /srv/restored
  iqdb-persist restore s3://backups/vectors --to /srv/restored --at 120000
  iqdb-persist restore s3://backups/vectors --to /srv/restored --at 2026-11-26T08:00:00Z
  # A container entrypoint: restore on first start only, and only if there is a replica
  iqdb-persist restore s3://backups/vectors --to /data --if-db-not-exists --if-replica-exists

Outcomes of restore (one exit code each):
  0  restored the latest point (or the --at point); or nothing to do with --if-*
  7  restored an earlier point, because the latest one is damaged
  8  restored nothing: the replica is empty, or no point matches --at
  1  restored nothing: the point is damaged and no intact earlier one exists
  3  store, network or local I/O error

",
    exit_codes!()
))]
pub struct RestoreArgs {
    /// The replica: s3://BUCKET/PREFIX, file:///DIR or memory://NAME.
    pub url: String,
    /// The directory to restore into (absent or empty).
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// Stop after the operation with this sequence number (SEQ), or at the
    /// newest point committed at or before this time (RFC 3339, or
    /// @UNIX_SECONDS). Default: the latest point.
    #[arg(long, value_name = "SEQ|TIME")]
    pub at: Option<String>,
    /// The restored snapshot's file name (default: the replicated one's).
    #[arg(long)]
    pub name: Option<String>,
    /// Do nothing (exit 0) when DIR already holds the database (DIR/NAME).
    #[arg(long)]
    pub if_db_not_exists: bool,
    /// Do nothing (exit 0) when there is no replica at URL (no manifest, or
    /// no generation yet).
    #[arg(long)]
    pub if_replica_exists: bool,
    /// Store flags.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `--json` when the `--if-*` flags made it a no-op.
#[derive(serde::Serialize)]
struct SkipReport<'a> {
    url: &'a str,
    restored: bool,
    reason: &'a str,
    exit_code: u8,
}

/// `--json` after a restore (field names as in earlier versions).
#[derive(serde::Serialize)]
struct RestoreJson<'a> {
    url: &'a str,
    restored: bool,
    path: String,
    wal: String,
    generation: &'a str,
    base_seq: u64,
    end_seq: u64,
    /// The last restored operation's sequence number (`end_seq - 1`).
    last_seq: Option<u64>,
    segments: usize,
    frames: u64,
    bytes: u64,
    elapsed_secs: f64,
    /// Why the latest point was not restored (exit code 7).
    fell_back: Option<&'a str>,
    index_type: &'a str,
    loads: Option<bool>,
    vectors: Option<u64>,
    load_error: Option<String>,
    exit_code: u8,
}

/// A restore error, with "nothing to restore" (an empty replica, no point
/// matching `--at`) as its own status rather than an I/O error.
fn restore_error(error: &ReplicateError) -> CliError {
    let mut e = replicate_error("restore", error);
    if matches!(error, ReplicateError::NotFound { .. }) {
        e.status = Status::NothingToRestore;
        e.message = format!("nothing restored: {error}");
    }
    e
}

fn target(at: Option<&str>) -> Result<RestoreTarget, CliError> {
    let Some(at) = at else {
        return Ok(RestoreTarget::Latest);
    };
    if let Ok(seq) = at.parse::<u64>() {
        return Ok(RestoreTarget::Sequence(seq));
    }
    parse_time(at).map(RestoreTarget::Time).ok_or_else(|| {
        CliError::new(
            Status::Usage,
            format!("--at {at:?}: not a sequence number, an RFC 3339 time or @UNIX_SECONDS"),
        )
    })
}

/// Runs `restore`.
///
/// # Errors
///
/// Bad arguments, store errors, damage with no fallback, nothing to restore.
pub fn run(args: &RestoreArgs, ctx: &mut Context<'_>) -> CliResult {
    let target = target(args.at.as_deref())?;
    let replica = open_replica(&args.url, &args.store)?;
    if args.if_db_not_exists || args.if_replica_exists {
        let manifest = replica
            .manifest()
            .map_err(|e| replicate_error("reading the manifest", &e))?;
        let skip = if args.if_replica_exists
            && manifest.as_ref().is_none_or(|m| m.generations.is_empty())
        {
            Some(format!("no replica at {}", replica.url()))
        } else {
            let name = args
                .name
                .clone()
                .or_else(|| manifest.as_ref().map(|m| m.database.clone()));
            name.map(|n| args.to.join(n))
                .filter(|p| args.if_db_not_exists && p.exists())
                .map(|p| format!("{} already exists", p.display()))
        };
        if let Some(reason) = skip {
            if ctx.json {
                output::write_report(
                    ctx.out,
                    &SkipReport {
                        url: replica.url(),
                        restored: false,
                        reason: &reason,
                        exit_code: 0,
                    },
                )?;
            } else {
                writeln!(ctx.out, "Nothing restored: {reason}")?;
            }
            return Ok(Status::Healthy);
        }
    }
    let bars = Bars::new(ctx.progress);
    let options = RestoreOptions {
        target,
        name: args.name.clone(),
    };
    let report = replica
        .restore_with_progress(&args.to, &options, &bars)
        .map_err(|e| restore_error(&e))?;
    // Show that it opens: a read-only load for registered index types.
    let mut config = iqdb_persist::PersistConfig::new(&report.path);
    config.wal_enabled = true;
    let fs = Options::default().get_file_system().clone();
    let index_type = iqdb_persist::inspect::snapshot_info(fs.as_ref(), &report.path, false)
        .map(|i| i.header.index_type)
        .map_err(|e| CliError::persist("restored snapshot", &e))?;
    let loaded = ctx
        .registry
        .get(&index_type)
        .map(|load| load(&config, &Options::default()));
    let (loads, vectors, load_error) = match &loaded {
        Some(Ok(outcome)) => (Some(true), Some(outcome.summary.vectors), None),
        Some(Err(e)) => (Some(false), None, Some(e.to_string())),
        None => (None, None, None),
    };
    let mut status = if report.fell_back.is_some() {
        Status::RestoredEarlier
    } else {
        Status::Healthy
    };
    if let Some(Err(e)) = &loaded {
        status = status.worst(Status::of_error(e)).worst(Status::Failed);
    }
    if ctx.json {
        let doc = RestoreJson {
            url: replica.url(),
            restored: true,
            path: report.path.display().to_string(),
            wal: report.wal.display().to_string(),
            generation: &report.generation,
            base_seq: report.base_seq,
            end_seq: report.end_seq,
            last_seq: report.end_seq.checked_sub(1),
            segments: report.segments,
            frames: report.frames,
            bytes: report.bytes,
            elapsed_secs: report.elapsed.as_secs_f64(),
            fell_back: report.fell_back.as_deref(),
            index_type: &index_type,
            loads,
            vectors,
            load_error,
            exit_code: status.code(),
        };
        output::write_report(ctx.out, &doc)?;
        return Ok(status);
    }
    let out = &mut *ctx.out;
    writeln!(out, "Restored {} into {}", replica.url(), args.to.display())?;
    output::kv(out, "snapshot", report.path.display())?;
    output::kv(out, "log", report.wal.display())?;
    output::kv(out, "generation", &report.generation)?;
    output::kv(
        out,
        "operations",
        format!(
            "sequence {} to {} ({} frame(s) from {} segment(s))",
            report.base_seq,
            report.end_seq.saturating_sub(1),
            report.frames,
            report.segments
        ),
    )?;
    let secs = report.elapsed.as_secs_f64();
    output::kv(
        out,
        "downloaded",
        format!(
            "{} in {} ({:.1} MB/s)",
            output::bytes(report.bytes),
            output::duration(report.elapsed),
            if secs > 0.0 {
                report.bytes as f64 / 1e6 / secs
            } else {
                0.0
            }
        ),
    )?;
    match (&loaded, vectors) {
        (Some(Ok(_)), Some(n)) => {
            output::kv(out, "loads", format!("yes ({index_type}, {n} vectors)"))?
        }
        (Some(Err(e)), _) => output::kv(out, "loads", format!("NO: {e}"))?,
        _ => output::kv(
            out,
            "loads",
            format!("not checked (no loader is registered for {index_type:?})"),
        )?,
    }
    if let Some(why) = &report.fell_back {
        writeln!(
            out,
            "  WARNING  the latest point is damaged; restored the newest intact earlier point instead: {why}"
        )?;
    }
    if let RestoreTarget::Time(ms) = target {
        output::kv(out, "at or before", format_time(ms))?;
    }
    writeln!(
        out,
        "Status: {} (exit code {})",
        if status == Status::Healthy {
            "restored"
        } else {
            "restored an earlier point"
        },
        status.code()
    )?;
    Ok(status)
}
