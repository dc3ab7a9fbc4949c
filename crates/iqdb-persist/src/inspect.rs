//! Read-only inspection, verification and repair of database files, for
//! operators and tools (the `iqdb-persist` command line is built on it).
//!
//! Nothing here takes the writer lock or changes a file, except
//! [`repair_log`], which is the explicit salvage path and keeps a backup.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use crate::compression;
use crate::config::PersistConfig;
use crate::error::{PersistError, Result};
use crate::format::FileHeader;
use crate::options::{Options, RecoveryMode};
use crate::recovery::{self, RecoveryReport, Truncation};
use crate::replace;
use crate::snapshot::{self, SnapshotFingerprint};
use crate::storage::FileSystem;
use crate::wal::reader::{self, Next, Opened};
use crate::wal::{Damage, DamageKind, Operation};
use crate::{Persistable, checkpoint};

/// What a snapshot file's header says.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The file.
    pub path: PathBuf,
    /// The common header.
    pub header: FileHeader,
    /// File length.
    pub file_len: u64,
    /// Offset of the payload (after the header and v3 extension).
    pub payload_offset: u64,
    /// Compression scheme name: `none`, `zstd` or `lz4`.
    pub compression: &'static str,
    /// Payload length before compression.
    pub raw_len: u64,
    /// Payload bytes as stored (after compression, with chunk heads).
    pub stored_len: u64,
    /// Number of chunks (v3).
    pub chunks: Option<u64>,
    /// Raw bytes per chunk (v3).
    pub chunk_size: Option<u32>,
    /// Last log sequence number included (v3).
    pub last_seq: Option<u64>,
    /// The fingerprint a log following this snapshot records.
    pub fingerprint: SnapshotFingerprint,
}

/// Parses a snapshot's header. With `verify`, also checks every checksum
/// and decodes the whole (possibly compressed) payload, without needing the
/// index type.
pub fn snapshot_info(fs: &dyn FileSystem, path: &Path, verify: bool) -> Result<SnapshotInfo> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let meta = snapshot::inspect_snapshot_file(fs, path, verify, threads)?;
    Ok(SnapshotInfo {
        path: path.to_path_buf(),
        file_len: meta.file_len,
        payload_offset: meta.payload_start,
        compression: compression::scheme_name(meta.scheme),
        raw_len: meta.raw_len,
        stored_len: meta.file_len - meta.payload_start,
        chunks: meta.v3.map(|e| e.chunk_count),
        chunk_size: meta.v3.map(|e| e.chunk_size),
        last_seq: meta.last_seq(),
        fingerprint: meta.fingerprint(),
        header: meta.header,
    })
}

/// One frame of a log, as [`scan_log`] hands it out.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    /// Offset of the frame in the file.
    pub offset: u64,
    /// Frame length (head and body).
    pub len: u64,
    /// Sequence number of the first operation (v2 logs; v1 logs count from
    /// 1).
    pub first_seq: u64,
    /// Whether the frame is an atomic batch.
    pub batch: bool,
    /// The operations.
    pub operations: Vec<Operation>,
}

/// What a scan of a log found.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogInfo {
    /// The file.
    pub path: PathBuf,
    /// Format version (None when the header is missing or incomplete).
    pub version: Option<u32>,
    /// File length.
    pub file_len: u64,
    /// Sequence number of the log's first operation.
    pub base_seq: u64,
    /// The snapshot the log follows (v2).
    pub snapshot: Option<SnapshotFingerprint>,
    /// Intact frames.
    pub frames: u64,
    /// Batch frames among them.
    pub batches: u64,
    /// Logged inserts.
    pub inserts: u64,
    /// Logged deletes.
    pub deletes: u64,
    /// Length of the intact prefix.
    pub valid_len: u64,
    /// Sequence number the next operation would get.
    pub next_seq: u64,
    /// Damage found after the intact prefix.
    pub damage: Option<Damage>,
    /// Whether the scan stopped early because the visitor asked to.
    pub stopped_early: bool,
}

/// Scans the log at `path` frame by frame without changing it, handing each
/// intact frame to `visit` (return `ControlFlow::Break` to stop). Returns
/// `None` when there is no log.
pub fn scan_log(
    fs: &dyn FileSystem,
    path: &Path,
    mut visit: impl FnMut(LogEntry) -> ControlFlow<()>,
) -> Result<Option<LogInfo>> {
    let mut log = match reader::open(fs, path, false)? {
        Opened::Missing => return Ok(None),
        Opened::Incomplete { len } => {
            return Ok(Some(LogInfo {
                path: path.to_path_buf(),
                version: None,
                file_len: len,
                base_seq: 1,
                snapshot: None,
                frames: 0,
                batches: 0,
                inserts: 0,
                deletes: 0,
                valid_len: 0,
                next_seq: 1,
                damage: (len > 0).then_some(Damage {
                    offset: 0,
                    kind: DamageKind::Torn,
                    reason: "log ends inside its header",
                    valid_frames_after: 0,
                }),
                stopped_early: false,
            }));
        }
        Opened::Log(log) => log,
    };
    let mut info = LogInfo {
        path: path.to_path_buf(),
        version: Some(log.header.version),
        file_len: log.file_len,
        base_seq: log.header.base_seq,
        snapshot: log.header.snapshot,
        frames: 0,
        batches: 0,
        inserts: 0,
        deletes: 0,
        valid_len: log.position(),
        next_seq: log.next_seq,
        damage: None,
        stopped_early: false,
    };
    loop {
        let first_seq = log.next_seq;
        match log.next_frame()? {
            Next::Frame(frame) => {
                info.frames += 1;
                info.batches += u64::from(frame.body.batch);
                for op in &frame.body.ops {
                    match op {
                        Operation::Insert { .. } => info.inserts += 1,
                        Operation::Delete { .. } => info.deletes += 1,
                    }
                }
                info.valid_len = log.position();
                info.next_seq = log.next_seq;
                let entry = LogEntry {
                    offset: frame.offset,
                    len: frame.len,
                    first_seq,
                    batch: frame.body.batch,
                    operations: frame.body.ops,
                };
                if visit(entry).is_break() {
                    info.stopped_early = true;
                    break;
                }
            }
            Next::End => break,
            Next::Damaged(damage) => {
                info.damage = Some(damage);
                break;
            }
        }
    }
    Ok(Some(info))
}

/// Temporary files of saves (ours and 1.0's) beside the database, whether
/// or not their writer is still running.
pub fn temp_files(fs: &dyn FileSystem, config: &PersistConfig) -> Result<Vec<PathBuf>> {
    let dir = replace::parent_dir(&config.path);
    let names = match fs.list_dir(dir) {
        Ok(names) => names,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(PersistError::io(dir, e)),
    };
    let targets = [
        config.path.clone(),
        config.wal_path(),
        config.checkpoint_path(),
    ];
    let mut out: Vec<PathBuf> = names
        .iter()
        .filter(|name| {
            targets.iter().any(|t| {
                t.file_name()
                    .is_some_and(|target| replace::temp_owner(target, name).is_some())
            })
        })
        .map(|name| dir.join(name))
        .collect();
    out.sort();
    Ok(out)
}

/// Whether a checkpoint intent file is present (a checkpoint was interrupted
/// and the next load will finish or abandon it).
pub fn checkpoint_pending(fs: &dyn FileSystem, config: &PersistConfig) -> Result<bool> {
    checkpoint::read(fs, &config.checkpoint_path()).map(|intent| intent.is_some())
}

/// Loads the snapshot and replays its log in memory, as a load would, but
/// without the writer lock and without changing any file: damage is
/// reported in the returned report's `truncated` field (or as an error, as
/// `options`' recovery mode says) instead of being cut off.
pub fn load_read_only<I: Persistable>(
    config: &PersistConfig,
    options: &Options,
) -> Result<(I, RecoveryReport)> {
    let fs = options.get_file_system();
    let (mut index, meta) =
        snapshot::read_snapshot::<I>(fs.as_ref(), &config.path, options.effective_threads())?;
    let mut report = RecoveryReport {
        snapshot_version: meta.header.version,
        ..RecoveryReport::default()
    };
    if !config.wal_enabled {
        return Ok((index, report));
    }
    let fingerprint = meta.fingerprint();
    if let Ok(Some(intent)) = checkpoint::read(fs.as_ref(), &config.checkpoint_path())
        && intent.snapshot == fingerprint
    {
        report.checkpoint_completed = true;
        return Ok((index, report));
    }
    let wal_path = config.wal_path();
    let mode = options.get_recovery_mode();
    let mut log = match reader::open(fs.as_ref(), &wal_path, false)? {
        Opened::Log(log) => log,
        Opened::Missing | Opened::Incomplete { .. } => return Ok((index, report)),
    };
    report.wal_version = Some(log.header.version);
    if log.header.version >= 2 && log.header.snapshot != Some(fingerprint) {
        return Err(PersistError::WalMismatch {
            path: wal_path,
            reason: "the log follows a different snapshot",
        });
    }
    loop {
        match log.next_frame()? {
            Next::Frame(frame) => {
                report.frames_replayed += 1;
                recovery::apply_frame(&mut index, frame.body.ops, frame.body.batch, &mut report);
            }
            Next::End => break,
            Next::Damaged(damage) => {
                let refuse = mode == RecoveryMode::Strict
                    || (damage.kind == DamageKind::Corrupt && mode != RecoveryMode::Salvage);
                if refuse {
                    return Err(PersistError::CorruptFrame {
                        reason: damage.reason,
                        torn: damage.kind == DamageKind::Torn,
                        valid_frames_after: damage.valid_frames_after,
                    }
                    .in_file(&wal_path, damage.offset));
                }
                report.truncated = Some(Truncation {
                    offset: damage.offset,
                    bytes: log.file_len - damage.offset,
                    kind: damage.kind,
                    reason: damage.reason,
                    frames_dropped: damage.valid_frames_after,
                    backup: None,
                });
                break;
            }
        }
    }
    Ok((index, report))
}

/// What [`repair_log`] did.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairReport {
    /// The damage found, if any.
    pub damage: Option<Damage>,
    /// The cut made, if any (with the backup's path).
    pub truncated: Option<Truncation>,
    /// Intact frames kept.
    pub frames_kept: u64,
}

/// The explicit repair of a database's log: copies the log to a backup, then
/// cuts a torn tail, or, only with `salvage`, cuts at the first corrupt
/// frame. Takes the writer lock. Never runs implicitly.
pub fn repair_log(
    config: &PersistConfig,
    options: &Options,
    salvage: bool,
) -> Result<RepairReport> {
    let fs = options.get_file_system();
    let lock_path = config.lock_path();
    let _lock = fs.try_lock(&lock_path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::WouldBlock {
            PersistError::Locked {
                path: lock_path.clone(),
            }
        } else {
            PersistError::io(&lock_path, e)
        }
    })?;
    let wal_path = config.wal_path();
    let info =
        scan_log(fs.as_ref(), &wal_path, |_| ControlFlow::Continue(()))?.ok_or_else(|| {
            PersistError::io(
                &wal_path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no write-ahead log"),
            )
        })?;
    let mut report = RepairReport {
        damage: info.damage.clone(),
        truncated: None,
        frames_kept: info.frames,
    };
    let Some(damage) = info.damage else {
        return Ok(report);
    };
    if damage.kind == DamageKind::Corrupt && !salvage {
        return Err(PersistError::CorruptFrame {
            reason: damage.reason,
            torn: false,
            valid_frames_after: damage.valid_frames_after,
        }
        .in_file(&wal_path, damage.offset));
    }
    let backup = recovery::backup_log(fs, &wal_path)?;
    let file = fs
        .open_write(&wal_path)
        .map_err(|e| PersistError::io(&wal_path, e))?;
    file.set_len(damage.offset)
        .and_then(|()| file.sync_all())
        .map_err(|e| PersistError::io(&wal_path, e))?;
    report.truncated = Some(Truncation {
        offset: damage.offset,
        bytes: info.file_len - damage.offset,
        kind: damage.kind,
        reason: damage.reason,
        frames_dropped: damage.valid_frames_after,
        backup: Some(backup),
    });
    Ok(report)
}
