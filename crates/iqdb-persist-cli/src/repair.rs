//! `repair PATH`: the explicit salvage path for a damaged log.
//!
//! * A torn tail (what a crash leaves) is cut off; the next open would do
//!   the same, `repair` does it now.
//! * Corruption (damage a crash cannot explain) is cut off only with
//!   `--salvage`: the log is kept up to the first bad frame and every intact
//!   frame after it is lost. Without the flag, `repair` refuses with exit
//!   code 1 and says what the flag would drop.
//! * A log whose header is damaged, or that belongs to a different snapshot
//!   and holds operations, cannot be cut; with `--salvage` it is copied to a
//!   backup and replaced by a fresh log from the snapshot, as
//!   `RecoveryMode::Salvage` would. A log whose header a crash cut short is
//!   replaced the same way without the flag.
//!
//! The decisions are the library's (`inspect::plan_repair`,
//! `inspect::repair_log`); this module only reports them.
//!
//! Before any change the log is copied to `PATH.wal.salvaged-SECS-N`, and
//! the writer lock is held (a database open elsewhere gives exit code 4).
//! The report says exactly what was dropped: offset, bytes, frames, backup.
//! `--dry-run` shows what would be done and changes nothing. Afterwards the
//! log is scanned again and, for registered index types, the database is
//! loaded read-only to show it loads.
//!
//! Exit code: 0 repaired or nothing to repair, 1 refused (corruption without
//! `--salvage`) or still damaged, 3 I/O error, 4 locked.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use clap::Args;
use iqdb_persist::inspect::{self, RepairPlan};
use iqdb_persist::storage::FileSystem;
use iqdb_persist::{DamageKind, Options};
use serde_json::json;

use crate::examine::damage_kind;
use crate::output;
use crate::{CliError, CliResult, Context, DbPaths, Status, exit_codes};

/// Arguments of `repair`.
#[derive(Debug, Args)]
#[command(after_help = concat!(
    "Examples:
  iqdb-persist repair data/vectors.iqdb --dry-run
  iqdb-persist repair data/vectors.iqdb
  iqdb-persist repair data/vectors.iqdb --salvage   # also cut at corruption, losing what follows

",
    exit_codes!()
))]
pub struct RepairArgs {
    /// The database's snapshot file (its log is PATH.wal); a path ending in
    /// `.wal` names the log.
    pub path: PathBuf,
    /// Also cut the log at the first corrupt frame (dropping every frame
    /// after it), or set aside a log that cannot be cut. A backup is kept.
    #[arg(long)]
    pub salvage: bool,
    /// Show what would be done; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// What the log needs: the library's plan, with the frames it keeps.
#[derive(Debug)]
struct Plan {
    plan: RepairPlan,
    frames_kept: u64,
    log_exists: bool,
}

impl Plan {
    fn needs_salvage(&self) -> bool {
        match &self.plan {
            RepairPlan::Cut(damage) => damage.kind == DamageKind::Corrupt,
            RepairPlan::Replace { kind, .. } => *kind == DamageKind::Corrupt,
            _ => false,
        }
    }

    fn is_nothing(&self) -> bool {
        matches!(self.plan, RepairPlan::Nothing)
    }

    fn describe(&self, wal: &Path) -> String {
        match &self.plan {
            RepairPlan::Cut(damage) => format!(
                "copy {wal} to a backup, then cut it at byte {offset}: drop the rest \
                 ({} damage: {reason}, {verdict}; {frames_after} intact frame(s) after it), \
                 keep {frames_kept} frame(s)",
                damage_kind(damage.kind),
                wal = wal.display(),
                offset = damage.offset,
                reason = damage.reason,
                verdict = damage.verdict,
                frames_after = damage.valid_frames_after,
                frames_kept = self.frames_kept,
            ),
            RepairPlan::Replace {
                reason,
                bytes,
                operations,
                ..
            } => format!(
                "copy {wal} ({bytes} byte(s), {operations} logged operation(s)) to a backup \
                 and start a fresh log from the snapshot: {reason}",
                wal = wal.display()
            ),
            _ if !self.log_exists => {
                format!("there is no write-ahead log beside {}", wal.display())
            }
            _ => format!("the log is intact ({} frame(s))", self.frames_kept),
        }
    }
}

/// Runs `repair`.
///
/// # Errors
///
/// I/O errors, a held writer lock, output errors.
pub fn run(args: &RepairArgs, ctx: &mut Context<'_>) -> CliResult {
    let paths = DbPaths::resolve(&args.path);
    let config = paths.config();
    let options = Options::default();
    let fs = options.get_file_system().clone();
    let plan = plan(&paths, &config, &options)?;
    let wal = paths.wal.display().to_string();

    let refused = plan.needs_salvage() && !args.salvage;
    if refused || args.dry_run || plan.is_nothing() {
        let status = if refused {
            Status::Corrupt
        } else {
            Status::Healthy
        };
        let action = match (plan.is_nothing(), refused) {
            (true, _) => "none",
            (_, true) => "refused",
            (_, false) => "dry-run",
        };
        if ctx.json {
            let doc = json!({
                "path": paths.snapshot.display().to_string(),
                "log": wal,
                "action": action,
                "dry_run": args.dry_run,
                "salvage": args.salvage,
                "plan": plan.describe(&paths.wal),
                "needs_salvage": plan.needs_salvage(),
                "exit_code": status.code(),
            });
            output::write_json(ctx.out, &doc)?;
        } else if refused {
            writeln!(
                ctx.out,
                "Refusing to repair {wal}: the log is corrupt (not a torn tail a crash leaves)."
            )?;
            writeln!(
                ctx.out,
                "With --salvage, repair would {}.",
                plan.describe(&paths.wal)
            )?;
            writeln!(
                ctx.out,
                "That loses the data after the damage; pass --salvage only if you accept it \
                 (a backup of the whole log is kept). --dry-run shows this without changing anything."
            )?;
        } else if plan.is_nothing() {
            writeln!(ctx.out, "Nothing to repair: {}", plan.describe(&paths.wal))?;
        } else {
            writeln!(
                ctx.out,
                "Dry run: repair would {}.",
                plan.describe(&paths.wal)
            )?;
            writeln!(ctx.out, "Nothing was changed.")?;
        }
        return Ok(status);
    }

    let mut doc = json!({
        "path": paths.snapshot.display().to_string(),
        "log": wal,
        "dry_run": false,
        "salvage": args.salvage,
    });
    let spin = output::spinner(ctx.progress, "backing up and repairing the log");
    let result = inspect::repair_log(&config, &options, args.salvage);
    spin.finish_and_clear();
    let report = result.map_err(|e| CliError::persist("repair", &e))?;
    match &report.truncated {
        None => {
            doc["action"] = json!("none");
            if !ctx.json {
                writeln!(ctx.out, "Nothing to repair: the log is intact now.")?;
            }
        }
        Some(t) => {
            let backup = t.backup.as_ref().map(|b| b.display().to_string());
            let action = if report.log_replaced {
                "replaced"
            } else {
                "cut"
            };
            doc["action"] = json!(action);
            doc["truncated"] = json!({
                "offset": t.offset,
                "bytes": t.bytes,
                "kind": damage_kind(t.kind),
                "reason": t.reason,
                "frames_dropped": t.frames_dropped,
                "backup": backup,
            });
            doc["frames_kept"] = json!(report.frames_kept);
            if !ctx.json {
                if report.log_replaced {
                    writeln!(ctx.out, "Replaced {wal} with a fresh log: {}", t.reason)?;
                    output::kv(
                        ctx.out,
                        "dropped",
                        format!(
                            "the whole log, {} byte(s), {} logged operation(s)",
                            t.bytes, t.frames_dropped
                        ),
                    )?;
                } else {
                    writeln!(ctx.out, "Repaired {wal}:")?;
                    output::kv(
                        ctx.out,
                        "cut at",
                        format!(
                            "byte {} ({} damage: {})",
                            t.offset,
                            damage_kind(t.kind),
                            t.reason
                        ),
                    )?;
                    output::kv(ctx.out, "bytes dropped", t.bytes)?;
                    output::kv(
                        ctx.out,
                        "frames dropped",
                        format!("{} intact frame(s) after the damage", t.frames_dropped),
                    )?;
                    output::kv(ctx.out, "frames kept", report.frames_kept)?;
                }
                output::kv(ctx.out, "backup", backup.as_deref().unwrap_or("none"))?;
            }
        }
    }

    // Afterwards: the log scans clean, and a registered type loads.
    let spin = output::spinner(ctx.progress, "checking the result");
    let result = check_after(fs.as_ref(), &paths, ctx);
    spin.finish_and_clear();
    let (after, status) = result?;
    doc["after"] = after;
    doc["exit_code"] = json!(status.code());
    if ctx.json {
        output::write_json(ctx.out, &doc)?;
    }
    Ok(status)
}

/// Decides what the log needs from a read-only look: what a salvaging
/// repair would do (whether salvage is needed is the plan's kind).
fn plan(
    paths: &DbPaths,
    config: &iqdb_persist::PersistConfig,
    options: &Options,
) -> Result<Plan, CliError> {
    let fs = options.get_file_system();
    if !fs.exists(&paths.snapshot).unwrap_or(false) {
        return Err(CliError::new(
            Status::Io,
            format!(
                "{}: no such snapshot; repair needs the snapshot the log follows",
                paths.snapshot.display()
            ),
        ));
    }
    let (plan, frames_kept) =
        inspect::plan_repair(config, options, true).map_err(|e| CliError::persist("repair", &e))?;
    let log_exists = fs.exists(&paths.wal).unwrap_or(false);
    Ok(Plan {
        plan,
        frames_kept,
        log_exists,
    })
}

/// Scans the log again and loads a registered type read-only.
fn check_after(
    fs: &dyn FileSystem,
    paths: &DbPaths,
    ctx: &mut Context<'_>,
) -> Result<(serde_json::Value, Status), CliError> {
    let mut status = Status::Healthy;
    let mut after = json!({});
    match inspect::scan_log(fs, &paths.wal, |_| ControlFlow::Continue(())) {
        Ok(Some(info)) => {
            let clean = info.damage.is_none();
            after["log_clean"] = json!(clean);
            after["log_frames"] = json!(info.frames);
            if !clean {
                status = Status::Corrupt;
            }
            if !ctx.json {
                let line = match &info.damage {
                    None => format!(
                        "intact, {} frame(s), {} byte(s)",
                        info.frames, info.file_len
                    ),
                    Some(d) => format!("STILL DAMAGED at byte {}: {}", d.offset, d.reason),
                };
                output::kv(ctx.out, "log now", line)?;
            }
        }
        Ok(None) => {
            after["log_clean"] = json!(true);
            after["log_frames"] = json!(0);
            if !ctx.json {
                output::kv(
                    ctx.out,
                    "log now",
                    "none (the next open creates a fresh one)",
                )?;
            }
        }
        Err(e) => {
            after["log_clean"] = json!(false);
            status = status.worst(Status::of_error(&e));
            if !ctx.json {
                output::kv(ctx.out, "log now", format!("unreadable: {e}"))?;
            }
        }
    }
    let index_type = inspect::snapshot_info(fs, &paths.snapshot, false)
        .ok()
        .map(|s| s.header.index_type);
    if let Some(loader) = index_type.as_deref().and_then(|t| ctx.registry.get(t)) {
        match loader(&paths.config(), &Options::default()) {
            Ok(outcome) => {
                after["loads"] = json!(true);
                after["vectors"] = json!(outcome.summary.vectors);
                after["frames_replayed"] = json!(outcome.report.frames_replayed);
                if !ctx.json {
                    output::kv(
                        ctx.out,
                        "database",
                        format!(
                            "loads: {} vector(s) after replaying {} frame(s)",
                            outcome.summary.vectors, outcome.report.frames_replayed
                        ),
                    )?;
                }
            }
            Err(e) => {
                after["loads"] = json!(false);
                after["load_error"] = json!(e.to_string());
                status = status.worst(Status::of_error(&e));
                if !ctx.json {
                    output::kv(ctx.out, "database", format!("DOES NOT LOAD: {e}"))?;
                }
            }
        }
    }
    Ok((after, status))
}
