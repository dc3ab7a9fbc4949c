//! `repair PATH`: the explicit salvage path for a damaged log.
//!
//! * A torn tail (what a crash leaves) is cut off; the next open would do
//!   the same, `repair` does it now.
//! * Corruption (damage a crash cannot explain) is cut off only with
//!   `--salvage`: the log is kept up to the first bad frame and every intact
//!   frame after it is lost. Without the flag, `repair` refuses with exit
//!   code 1 and says what the flag would drop.
//! * A log whose header is damaged, or that belongs to a different snapshot
//!   and holds operations, cannot be cut; with `--salvage` it is set aside
//!   whole (renamed to a backup, so the next open starts a fresh log from
//!   the snapshot), as `RecoveryMode::Salvage` would.
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
use iqdb_persist::inspect::{self, LogInfo};
use iqdb_persist::storage::FileSystem;
use iqdb_persist::{DamageKind, Options, PersistError};
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

/// What the log needs.
#[derive(Debug)]
enum Plan {
    /// Nothing to repair.
    Nothing(String),
    /// Cut at the damage (a torn tail, or corruption with `--salvage`).
    Cut {
        offset: u64,
        bytes: u64,
        kind: DamageKind,
        reason: &'static str,
        frames_after: u64,
        frames_kept: u64,
    },
    /// Rename the whole log to a backup (needs `--salvage`).
    SetAside { reason: String, bytes: u64 },
}

impl Plan {
    fn needs_salvage(&self) -> bool {
        match self {
            Self::Nothing(_) => false,
            Self::Cut { kind, .. } => *kind == DamageKind::Corrupt,
            Self::SetAside { .. } => true,
        }
    }

    fn describe(&self, wal: &Path) -> String {
        match self {
            Self::Nothing(why) => why.clone(),
            Self::Cut {
                offset,
                bytes,
                kind,
                reason,
                frames_after,
                frames_kept,
            } => format!(
                "copy {wal} to a backup, then cut it at byte {offset}: drop {bytes} byte(s) \
                 ({} damage: {reason}; {frames_after} intact frame(s) after it), keep \
                 {frames_kept} frame(s)",
                damage_kind(*kind),
                wal = wal.display()
            ),
            Self::SetAside { reason, bytes } => format!(
                "rename {wal} ({bytes} byte(s)) to a backup, so the next open starts a \
                 fresh log from the snapshot: {reason}",
                wal = wal.display()
            ),
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
    let plan = plan(fs.as_ref(), &paths)?;
    let wal = paths.wal.display().to_string();

    let refused = plan.needs_salvage() && !args.salvage;
    if refused || args.dry_run || matches!(plan, Plan::Nothing(_)) {
        let status = if refused {
            Status::Corrupt
        } else {
            Status::Healthy
        };
        let action = match (&plan, refused) {
            (Plan::Nothing(_), _) => "none",
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
        } else if let Plan::Nothing(why) = &plan {
            writeln!(ctx.out, "Nothing to repair: {why}")?;
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
    match &plan {
        Plan::SetAside { reason, bytes } => {
            let spin = output::spinner(ctx.progress, "setting the log aside");
            let result = set_aside(&fs, &paths, &config);
            spin.finish_and_clear();
            let backup = result?;
            doc["action"] = json!("set-aside");
            doc["set_aside"] = json!({
                "reason": reason,
                "bytes": bytes,
                "backup": backup.display().to_string(),
            });
            if !ctx.json {
                writeln!(ctx.out, "Set the log aside: {reason}")?;
                output::kv(
                    ctx.out,
                    "dropped",
                    format!("the whole log, {bytes} byte(s)"),
                )?;
                output::kv(ctx.out, "backup", backup.display())?;
                output::kv(ctx.out, "next open", "starts a fresh log from the snapshot")?;
            }
        }
        Plan::Cut { .. } | Plan::Nothing(_) => {
            let spin = output::spinner(ctx.progress, "backing up and cutting the log");
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
                    doc["action"] = json!("cut");
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
                        output::kv(ctx.out, "backup", backup.as_deref().unwrap_or("none"))?;
                    }
                }
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

/// Decides what the log needs from a read-only look.
fn plan(fs: &dyn FileSystem, paths: &DbPaths) -> Result<Plan, CliError> {
    let scan = inspect::scan_log(fs, &paths.wal, |_| ControlFlow::Continue(()));
    let file_len = |path: &Path| {
        fs.open_read(path)
            .and_then(|f| f.len())
            .map_err(|e| CliError::new(Status::Io, format!("{}: {e}", path.display())))
    };
    let info: LogInfo = match scan {
        Ok(Some(info)) => info,
        Ok(None) => {
            return match fs.exists(&paths.snapshot) {
                Ok(true) => Ok(Plan::Nothing(format!(
                    "there is no write-ahead log beside {}",
                    paths.snapshot.display()
                ))),
                _ => Err(CliError::new(
                    Status::Io,
                    format!(
                        "{}: no such database (neither the snapshot nor its log exists)",
                        paths.snapshot.display()
                    ),
                )),
            };
        }
        Err(e) if matches!(e.root_cause(), PersistError::Io { .. }) => {
            return Err(CliError::persist("", &e));
        }
        Err(e) => {
            return Ok(Plan::SetAside {
                reason: format!("its header is damaged ({e})"),
                bytes: file_len(&paths.wal)?,
            });
        }
    };
    let operations = info.inserts + info.deletes;
    if let Some(log_fp) = info.snapshot
        && operations > 0
        && let Ok(snapshot) = inspect::snapshot_info(fs, &paths.snapshot, false)
        && snapshot.fingerprint != log_fp
    {
        let pending = inspect::checkpoint_pending(fs, &paths.config()).unwrap_or(true);
        if pending {
            return Ok(Plan::Nothing(
                "the log follows a different snapshot, but a checkpoint intent is pending: \
                 an interrupted checkpoint, which the next open of the database resolves"
                    .to_string(),
            ));
        }
        return Ok(Plan::SetAside {
            reason: format!(
                "it follows a different snapshot, so its {operations} operation(s) cannot \
                 be replayed onto this one"
            ),
            bytes: info.file_len,
        });
    }
    Ok(match &info.damage {
        None => Plan::Nothing(format!(
            "the log is intact ({} frame(s), {} byte(s))",
            info.frames, info.file_len
        )),
        Some(d) => Plan::Cut {
            offset: d.offset,
            bytes: info.file_len.saturating_sub(d.offset),
            kind: d.kind,
            reason: d.reason,
            frames_after: d.valid_frames_after,
            frames_kept: info.frames,
        },
    })
}

/// Renames the whole log to `PATH.wal.salvaged-SECS-N` under the writer
/// lock, and makes the rename durable.
fn set_aside(
    fs: &std::sync::Arc<dyn FileSystem>,
    paths: &DbPaths,
    config: &iqdb_persist::PersistConfig,
) -> Result<PathBuf, CliError> {
    let lock_path = config.lock_path();
    let _lock = fs.try_lock(&lock_path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::WouldBlock {
            CliError::persist(
                "repair",
                &PersistError::Locked {
                    path: lock_path.clone(),
                },
            )
        } else {
            CliError::new(Status::Io, format!("{}: {e}", lock_path.display()))
        }
    })?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let io =
        |p: &Path, e: std::io::Error| CliError::new(Status::Io, format!("{}: {e}", p.display()));
    let mut n = 0u32;
    let backup = loop {
        let mut name = paths.wal.as_os_str().to_owned();
        name.push(format!(".salvaged-{stamp}-{n}"));
        let candidate = PathBuf::from(name);
        if !fs.exists(&candidate).map_err(|e| io(&candidate, e))? {
            break candidate;
        }
        n += 1;
    };
    fs.rename(&paths.wal, &backup)
        .map_err(|e| io(&paths.wal, e))?;
    let dir = match paths.wal.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs.sync_dir(&dir).map_err(|e| io(&dir, e))?;
    Ok(backup)
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
