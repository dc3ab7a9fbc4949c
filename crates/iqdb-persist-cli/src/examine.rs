//! What `inspect` and `verify` share: reading a database's snapshot header,
//! scanning its log, and turning what they find into problems.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;

use iqdb_persist::inspect::{self, LogInfo, SnapshotInfo};
use iqdb_persist::storage::FileSystem;
use iqdb_persist::{DamageKind, Options, PersistError};
use serde_json::json;

use crate::output::{self, Problem, Severity};
use crate::{CliError, DbPaths, Status};

/// Everything found about a database without decoding it.
#[derive(Debug)]
pub(crate) struct Examination {
    pub paths: DbPaths,
    pub snapshot: Option<SnapshotInfo>,
    pub log: Option<LogInfo>,
    /// Whether the (v2) log records this snapshot's fingerprint.
    pub log_follows_snapshot: Option<bool>,
    pub checkpoint_pending: Option<bool>,
    pub temp_files: Vec<PathBuf>,
    pub problems: Vec<Problem>,
}

impl Examination {
    pub(crate) fn status(&self) -> Status {
        output::status_of(&self.problems)
    }
}

/// Reads the snapshot (verifying every checksum and decoding the payload
/// when `verify`) and scans the log. I/O errors other than a missing file
/// end the command; damage becomes problems.
pub(crate) fn examine(
    paths: &DbPaths,
    verify: bool,
    wal_only: bool,
    progress: bool,
) -> Result<Examination, CliError> {
    let options = Options::default();
    let fs: &dyn FileSystem = options.get_file_system().as_ref();
    let config = paths.config();
    let mut problems = Vec::new();

    let snapshot_result = if wal_only {
        None
    } else {
        let what = if verify {
            "verifying snapshot checksums"
        } else {
            "reading snapshot header"
        };
        let spin = output::spinner(progress && verify, what);
        let result = inspect::snapshot_info(fs, &paths.snapshot, verify);
        spin.finish_and_clear();
        Some(result)
    };

    let spin = output::spinner(progress, "scanning write-ahead log");
    let log_result = inspect::scan_log(fs, &paths.wal, |_| ControlFlow::Continue(()));
    spin.finish_and_clear();

    let log = match log_result {
        Ok(Some(info)) => Some(info),
        Ok(None) => None,
        Err(e) if is_io(&e) => return Err(CliError::persist("", &e)),
        Err(e) => {
            problems.push(Problem::from_error("log-header", &paths.wal, &e));
            None
        }
    };
    let log_exists = log.is_some() || !problems.is_empty();

    let snapshot = match snapshot_result {
        None => None,
        Some(Ok(info)) => Some(info),
        Some(Err(e)) if is_not_found(&e) && log_exists => {
            problems.insert(
                0,
                Problem::new(
                    Severity::Error,
                    Status::Io,
                    "snapshot-missing",
                    Some(&paths.snapshot),
                    None,
                    "the snapshot is missing, but its log is here: the database cannot be \
                     loaded (use --wal-only to look at the log alone)",
                ),
            );
            None
        }
        Some(Err(e)) if is_io(&e) => return Err(CliError::persist("", &e)),
        Some(Err(e)) => {
            problems.insert(0, Problem::from_error("snapshot", &paths.snapshot, &e));
            None
        }
    };

    if wal_only && !log_exists {
        return Err(CliError::new(
            Status::Io,
            format!("{}: no write-ahead log there", paths.wal.display()),
        ));
    }

    let checkpoint_pending = match inspect::checkpoint_pending(fs, &config) {
        Ok(pending) => Some(pending),
        Err(e) if is_io(&e) => return Err(CliError::persist("", &e)),
        Err(e) => {
            problems.push(Problem::from_error(
                "checkpoint-intent",
                &config.checkpoint_path(),
                &e,
            ));
            None
        }
    };

    if let Some(info) = &log {
        problems.extend(damage_problem(info));
    } else if !log_exists && snapshot.is_some() {
        problems.push(Problem::new(
            Severity::Info,
            Status::Healthy,
            "no-log",
            Some(&paths.wal),
            None,
            "no write-ahead log: a snapshot-mode database, or one not yet opened in WAL mode",
        ));
    }

    let log_follows_snapshot = match (&snapshot, &log) {
        (Some(s), Some(l)) => l.snapshot.map(|fp| fp == s.fingerprint),
        _ => None,
    };
    if let (Some(false), Some(l)) = (log_follows_snapshot, &log) {
        let operations = l.inserts + l.deletes;
        let (severity, status, message) = if checkpoint_pending == Some(true) {
            (
                Severity::Warning,
                Status::Healthy,
                "the log follows a different snapshot, and a checkpoint intent is pending: \
                 an interrupted checkpoint, which the next open resolves"
                    .to_string(),
            )
        } else if operations == 0 {
            (
                Severity::Info,
                Status::Healthy,
                "the log follows a different snapshot but holds no operations; the next \
                 open replaces it with a fresh one"
                    .to_string(),
            )
        } else {
            (
                Severity::Error,
                Status::Corrupt,
                format!(
                    "the log does not belong to the snapshot beside it (it records snapshot \
                     crc {}, length {}; the snapshot is crc {:#010x}, length {}): its {operations} \
                     operation(s) would be applied to the wrong state, so a load refuses it",
                    l.snapshot
                        .map_or_else(String::new, |f| format!("{:#010x}", f.crc32)),
                    l.snapshot.map_or(0, |f| f.len),
                    snapshot.as_ref().map_or(0, |s| s.fingerprint.crc32),
                    snapshot.as_ref().map_or(0, |s| s.fingerprint.len),
                ),
            )
        };
        problems.push(Problem::new(
            severity,
            status,
            "log-mismatch",
            Some(&paths.wal),
            None,
            message,
        ));
    }
    if let Some(l) = &log
        && l.version == Some(1)
    {
        problems.push(Problem::new(
            Severity::Info,
            Status::Healthy,
            "log-v1",
            Some(&paths.wal),
            None,
            "a v1 log (1.0's format) does not record which snapshot it follows; that cannot be checked",
        ));
    }
    if checkpoint_pending == Some(true) {
        problems.push(Problem::new(
            Severity::Warning,
            Status::Healthy,
            "checkpoint-pending",
            Some(&config.checkpoint_path()),
            None,
            "a checkpoint was interrupted; the next open finishes or abandons it",
        ));
    }

    let temp_files = match inspect::temp_files(fs, &config) {
        Ok(files) => files,
        Err(e) if is_io(&e) => return Err(CliError::persist("", &e)),
        Err(_) => Vec::new(),
    };
    if !temp_files.is_empty() {
        problems.push(Problem::new(
            Severity::Info,
            Status::Healthy,
            "temp-files",
            None,
            None,
            format!(
                "{} leftover temporary file(s) beside the database; the next load or save \
                 removes those whose writer is no longer running",
                temp_files.len()
            ),
        ));
    }

    Ok(Examination {
        paths: paths.clone(),
        snapshot,
        log,
        log_follows_snapshot,
        checkpoint_pending,
        temp_files,
        problems,
    })
}

fn is_io(e: &PersistError) -> bool {
    matches!(e.root_cause(), PersistError::Io { .. })
}

pub(crate) fn is_not_found(e: &PersistError) -> bool {
    matches!(e.root_cause(), PersistError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
}

/// The problem a log's damage is, if any.
pub(crate) fn damage_problem(info: &LogInfo) -> Option<Problem> {
    let damage = info.damage.as_ref()?;
    let bytes = info.file_len.saturating_sub(damage.offset);
    Some(match damage.kind {
        DamageKind::Torn if damage.valid_frames_after > 0 => Problem::new(
            Severity::Warning,
            Status::Healthy,
            "torn-tail",
            Some(&info.path),
            Some(damage.offset),
            format!(
                "torn tail: {}, but {} intact frame(s) follow it. None of them records the \
                 damaged frame as synced, so it counts as a write a crash left unfinished \
                 (not corruption), and the next open truncates the log here, DROPPING those \
                 frames ({bytes} byte(s)) without a backup. If the log was synced (for example \
                 under FsyncPolicy::Never or Periodic, then sync()), this may be damage \
                 instead: run `iqdb-persist repair` first, which keeps a backup",
                damage.reason, damage.valid_frames_after
            ),
        ),
        DamageKind::Torn => Problem::new(
            Severity::Warning,
            Status::Healthy,
            "torn-tail",
            Some(&info.path),
            Some(damage.offset),
            format!(
                "torn tail: {}; the last {bytes} byte(s) are an unfinished write, what a \
                 crash leaves. Not corruption: the next open truncates it (`iqdb-persist \
                 repair` does it now, keeping a backup)",
                damage.reason
            ),
        ),
        DamageKind::Corrupt => Problem::new(
            Severity::Error,
            Status::Corrupt,
            "corrupt-frame",
            Some(&info.path),
            Some(damage.offset),
            format!(
                "corrupt frame: {}; {} intact frame(s) follow. A crash cannot explain this \
                 damage, so a load refuses the log. `iqdb-persist repair --salvage` keeps \
                 the log up to here and backs up the rest ({bytes} byte(s))",
                damage.reason, damage.valid_frames_after
            ),
        ),
    })
}

/// The snapshot's header as JSON.
pub(crate) fn snapshot_json(s: &SnapshotInfo) -> serde_json::Value {
    json!({
        "path": s.path.display().to_string(),
        "format_version": s.header.version,
        "index_type": s.header.index_type,
        "dim": s.header.dim,
        "metric": crate::registry::metric_name(s.header.metric),
        "vectors": s.header.n_vectors,
        "compression": s.compression,
        "raw_bytes": s.raw_len,
        "stored_bytes": s.stored_len,
        "compression_ratio": ratio(s.raw_len, s.stored_len),
        "file_bytes": s.file_len,
        "payload_offset": s.payload_offset,
        "chunks": s.chunks,
        "chunk_size": s.chunk_size,
        "last_seq": s.last_seq,
        "fingerprint": {
            "crc32": format!("{:#010x}", s.fingerprint.crc32),
            "len": s.fingerprint.len,
        },
    })
}

/// The log scan as JSON.
pub(crate) fn log_json(l: &LogInfo, follows: Option<bool>) -> serde_json::Value {
    json!({
        "path": l.path.display().to_string(),
        "format_version": l.version,
        "file_bytes": l.file_len,
        "base_seq": l.base_seq,
        "next_seq": l.next_seq,
        "frames": l.frames,
        "batches": l.batches,
        "inserts": l.inserts,
        "deletes": l.deletes,
        "valid_bytes": l.valid_len,
        "snapshot_fingerprint": l.snapshot.map(|f| json!({
            "crc32": format!("{:#010x}", f.crc32),
            "len": f.len,
        })),
        "follows_snapshot": follows,
        "damage": l.damage.as_ref().map(|d| json!({
            "offset": d.offset,
            "bytes": l.file_len.saturating_sub(d.offset),
            "kind": damage_kind(d.kind),
            "reason": d.reason,
            "valid_frames_after": d.valid_frames_after,
        })),
    })
}

pub(crate) fn damage_kind(kind: DamageKind) -> &'static str {
    match kind {
        DamageKind::Torn => "torn",
        DamageKind::Corrupt => "corrupt",
    }
}

/// raw / stored, rounded to 3 decimals.
pub(crate) fn ratio(raw: u64, stored: u64) -> Option<f64> {
    #[allow(clippy::cast_precision_loss)]
    (stored > 0).then(|| ((raw as f64 / stored as f64) * 1000.0).round() / 1000.0)
}

/// The examination as a JSON object (without the status fields).
pub(crate) fn examination_json(e: &Examination) -> serde_json::Map<String, serde_json::Value> {
    let mut map = serde_json::Map::new();
    map.insert("path".into(), json!(e.paths.snapshot.display().to_string()));
    map.insert(
        "snapshot".into(),
        e.snapshot
            .as_ref()
            .map_or(serde_json::Value::Null, snapshot_json),
    );
    map.insert(
        "log".into(),
        e.log.as_ref().map_or(serde_json::Value::Null, |l| {
            log_json(l, e.log_follows_snapshot)
        }),
    );
    map.insert("checkpoint_pending".into(), json!(e.checkpoint_pending));
    map.insert(
        "temp_files".into(),
        json!(
            e.temp_files
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
        ),
    );
    map
}

/// Writes the snapshot section as text.
pub(crate) fn write_snapshot_text(out: &mut dyn Write, s: &SnapshotInfo) -> std::io::Result<()> {
    writeln!(out, "Snapshot {}", s.path.display())?;
    output::kv(out, "format", format!("v{}", s.header.version))?;
    output::kv(out, "index type", &s.header.index_type)?;
    output::kv(out, "dimension", s.header.dim)?;
    output::kv(out, "metric", crate::registry::metric_name(s.header.metric))?;
    output::kv(out, "vectors", s.header.n_vectors)?;
    let ratio =
        ratio(s.raw_len, s.stored_len).map_or_else(String::new, |r| format!(", ratio {r:.3}"));
    output::kv(
        out,
        "compression",
        format!(
            "{} (raw {}, stored {}{ratio})",
            s.compression,
            output::bytes(s.raw_len),
            output::bytes(s.stored_len)
        ),
    )?;
    output::kv(out, "file size", output::bytes_exact(s.file_len))?;
    if let (Some(chunks), Some(size)) = (s.chunks, s.chunk_size) {
        output::kv(
            out,
            "chunks",
            format!("{chunks} of up to {}", output::bytes(u64::from(size))),
        )?;
    }
    if let Some(seq) = s.last_seq {
        output::kv(out, "last sequence", seq)?;
    }
    output::kv(
        out,
        "fingerprint",
        format!(
            "crc {:#010x}, length {}",
            s.fingerprint.crc32, s.fingerprint.len
        ),
    )
}

/// Writes the log section as text.
pub(crate) fn write_log_text(
    out: &mut dyn Write,
    l: &LogInfo,
    follows: Option<bool>,
) -> std::io::Result<()> {
    writeln!(out, "Log {}", l.path.display())?;
    output::kv(
        out,
        "format",
        l.version.map_or_else(
            || "unknown (header incomplete)".to_string(),
            |v| format!("v{v}"),
        ),
    )?;
    output::kv(out, "file size", output::bytes_exact(l.file_len))?;
    output::kv(out, "base sequence", l.base_seq)?;
    output::kv(out, "next sequence", l.next_seq)?;
    output::kv(
        out,
        "frames",
        format!("{} ({} batch frame(s))", l.frames, l.batches),
    )?;
    output::kv(
        out,
        "operations",
        format!("{} insert(s), {} delete(s)", l.inserts, l.deletes),
    )?;
    output::kv(out, "valid length", output::bytes_exact(l.valid_len))?;
    let tail = match &l.damage {
        None => "none: the log ends cleanly".to_string(),
        Some(d) => format!(
            "{} at byte {} ({} byte(s)): {}",
            damage_kind(d.kind),
            d.offset,
            l.file_len.saturating_sub(d.offset),
            d.reason
        ),
    };
    output::kv(out, "damage", tail)?;
    let belongs = match (follows, l.version) {
        (Some(true), _) => "yes (its fingerprint matches the snapshot)".to_string(),
        (Some(false), _) => "NO (it records a different snapshot)".to_string(),
        (None, Some(1)) => "unknown (v1 logs record no fingerprint)".to_string(),
        (None, None) => "unknown (the log's header is incomplete)".to_string(),
        (None, _) => "unknown (no snapshot to compare)".to_string(),
    };
    output::kv(out, "belongs to snapshot", belongs)
}

/// Writes the problems list and the status line.
pub(crate) fn write_problems_text(
    out: &mut dyn Write,
    problems: &[Problem],
    status: Status,
) -> std::io::Result<()> {
    if problems.is_empty() {
        writeln!(out, "Findings: none")?;
    } else {
        writeln!(out, "Findings:")?;
        let mut sorted: Vec<&Problem> = problems.iter().collect();
        sorted.sort_by_key(|p| std::cmp::Reverse(p.severity));
        for p in sorted {
            p.write_text(out)?;
        }
    }
    writeln!(
        out,
        "Status: {} (exit code {})",
        output::status_word(status, problems),
        status.code()
    )
}
