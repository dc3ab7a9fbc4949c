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
use crate::recovery::{self, IntentState, LogState, RecoveryReport, Truncation};
use crate::replace;
use crate::snapshot::{self, SnapshotFingerprint};
use crate::storage::FileSystem;
use crate::wal::reader::{self, Checked, Next, Opened};
use crate::wal::{Damage, DamageKind, Operation};
use crate::{Persistable, checkpoint, wal};

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
    /// Offset of the stored payload data (after the header, and the v3
    /// extension or the v2 scheme and length).
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
    // v2's region starts with the scheme and length; its data follows them.
    let data_start = if meta.header.version == 2 {
        meta.payload_start + 9
    } else {
        meta.payload_start
    };
    Ok(SnapshotInfo {
        path: path.to_path_buf(),
        file_len: meta.file_len,
        payload_offset: data_start,
        compression: compression::scheme_name(meta.scheme),
        raw_len: meta.raw_len,
        stored_len: meta.file_len - data_start,
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
                damage: Damage::incomplete_header(len),
                stopped_early: false,
            }));
        }
        Opened::Log(log) => *log,
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

/// A pending checkpoint's intent, as [`checkpoint_intent`] reports it.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointIntent {
    /// The snapshot the checkpoint was installing.
    pub snapshot: SnapshotFingerprint,
    /// Sequence number the new log starts at.
    pub next_seq: u64,
    /// Format version of the new log.
    pub wal_version: u32,
    /// Whether that snapshot is in place: the next load completes the
    /// checkpoint (and does not replay the old log); otherwise it abandons
    /// it and replays the log.
    pub snapshot_installed: bool,
}

/// The intent of a checkpoint a crash interrupted, if its file is present.
pub fn checkpoint_intent(
    fs: &dyn FileSystem,
    config: &PersistConfig,
) -> Result<Option<CheckpointIntent>> {
    let Some(intent) = checkpoint::read(fs, &config.checkpoint_path())? else {
        return Ok(None);
    };
    let installed = snapshot::inspect_snapshot_file(fs, &config.path, false, 1)
        .map(|meta| meta.fingerprint() == intent.snapshot)
        .unwrap_or(false);
    Ok(Some(CheckpointIntent {
        snapshot: intent.snapshot,
        next_seq: intent.next_seq,
        wal_version: intent.wal_version,
        snapshot_installed: installed,
    }))
}

/// Whether a checkpoint intent file is present (a checkpoint was interrupted
/// and the next load will finish or abandon it; see [`checkpoint_intent`]).
pub fn checkpoint_pending(fs: &dyn FileSystem, config: &PersistConfig) -> Result<bool> {
    checkpoint_intent(fs, config).map(|intent| intent.is_some())
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
    let mode = options.get_recovery_mode();
    let wal_path = config.wal_path();
    let (intent, log) = recovery::assess(fs.as_ref(), config, meta.fingerprint(), mode, false)?;
    report.checkpoint_completed = matches!(intent, IntentState::Completed(_));
    report.checkpoint_abandoned = intent == IntentState::Abandoned;
    match log {
        LogState::Replay(mut log) => {
            report.wal_version = Some(log.header.version);
            if let Some(damage) = recovery::replay(&mut log, Some(&mut index), &mut report)? {
                recovery::damage_action(&damage, mode, &wal_path)?;
                report.truncated = Some(Truncation::at_damage(&damage, log.file_len, None));
            }
        }
        LogState::Fresh { torn_header } => {
            if let Some(damage) = Damage::incomplete_header(torn_header) {
                report.truncated = Some(Truncation::at_damage(&damage, torn_header, None));
            }
        }
        LogState::SetAside {
            reason,
            bytes,
            operations,
        } => {
            report.truncated = Some(Truncation::whole_log(
                reason,
                DamageKind::Corrupt,
                bytes,
                operations,
                None,
            ));
        }
        LogState::CheckpointCompleted { .. } | LogState::Unlinked => {}
    }
    Ok((index, report))
}

/// What [`repair_log`] would do, as [`plan_repair`] decides it.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepairPlan {
    /// The log needs nothing (intact, missing, or waiting for the next load
    /// to finish an interrupted checkpoint).
    Nothing,
    /// Cut the log at this damage: a torn tail, or (salvage only) corruption.
    Cut(Damage),
    /// Replace the whole log with a fresh one: its header never got written
    /// whole, or (salvage only) it is damaged or follows another snapshot.
    Replace {
        /// Why.
        reason: &'static str,
        /// A torn header (what a crash leaves) or corruption.
        kind: DamageKind,
        /// The log's length.
        bytes: u64,
        /// Logged operations it holds that would be dropped.
        operations: u64,
    },
}

/// What [`repair_log`] did.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairReport {
    /// What was planned (and done).
    pub plan: RepairPlan,
    /// The damage found, if any.
    pub damage: Option<Damage>,
    /// The cut made, if any (with the backup's path).
    pub truncated: Option<Truncation>,
    /// Intact frames kept.
    pub frames_kept: u64,
    /// Whether the log was replaced by a fresh one (after a backup).
    pub log_replaced: bool,
}

/// Decides, without changing anything, what [`repair_log`] would do; errors
/// as it would (for example on corruption without `salvage`). Returns the
/// plan and the number of intact frames the log keeps.
pub fn plan_repair(
    config: &PersistConfig,
    options: &Options,
    salvage: bool,
) -> Result<(RepairPlan, u64)> {
    let fs = options.get_file_system();
    let meta = snapshot::inspect_snapshot_file(fs.as_ref(), &config.path, false, 1)?;
    let (plan, frames, _) = plan_with(fs.as_ref(), config, meta.fingerprint(), salvage, false)?;
    Ok((plan, frames))
}

fn plan_with(
    fs: &dyn FileSystem,
    config: &PersistConfig,
    fingerprint: SnapshotFingerprint,
    salvage: bool,
    write: bool,
) -> Result<(RepairPlan, u64, Option<reader::WalReader>)> {
    let mode = if salvage {
        RecoveryMode::Salvage
    } else {
        RecoveryMode::TolerateTornTail
    };
    let wal_path = config.wal_path();
    let (_, log) = recovery::assess(fs, config, fingerprint, mode, write)?;
    Ok(match log {
        LogState::Replay(mut log) => {
            let mut scan = RecoveryReport::default();
            let damage = recovery::replay::<dyn iqdb_index::IndexCore>(&mut log, None, &mut scan)?;
            let plan = match damage {
                Some(damage) => {
                    recovery::damage_action(&damage, mode, &wal_path)?;
                    RepairPlan::Cut(damage)
                }
                None => RepairPlan::Nothing,
            };
            (plan, scan.frames_replayed, Some(log))
        }
        LogState::Fresh { torn_header } => match Damage::incomplete_header(torn_header) {
            Some(damage) => (
                RepairPlan::Replace {
                    reason: damage.reason,
                    kind: DamageKind::Torn,
                    bytes: torn_header,
                    operations: 0,
                },
                0,
                None,
            ),
            None => (RepairPlan::Nothing, 0, None),
        },
        LogState::SetAside {
            reason,
            bytes,
            operations,
        } => (
            RepairPlan::Replace {
                reason,
                kind: DamageKind::Corrupt,
                bytes,
                operations,
            },
            0,
            None,
        ),
        LogState::CheckpointCompleted { .. } | LogState::Unlinked => (RepairPlan::Nothing, 0, None),
    })
}

/// The explicit repair of a database's log, under the writer lock and
/// after copying the log to a backup: cuts a torn tail, replaces a log whose
/// header never got written, and only with `salvage` cuts the log at the
/// first corrupt frame or sets aside a log with a damaged header or one that
/// follows a different snapshot (starting a fresh one). A pending checkpoint
/// is left for the next load to finish. Never runs implicitly; see
/// [`plan_repair`] for a dry run.
pub fn repair_log(
    config: &PersistConfig,
    options: &Options,
    salvage: bool,
) -> Result<RepairReport> {
    let fs = options.get_file_system();
    let _lock = crate::lock::acquire(fs.as_ref(), config)?;
    let meta = snapshot::inspect_snapshot_file(fs.as_ref(), &config.path, false, 1)?;
    let fingerprint = meta.fingerprint();
    let wal_path = config.wal_path();
    let (plan, frames_kept, log) = plan_with(fs.as_ref(), config, fingerprint, salvage, true)?;
    let mut report = RepairReport {
        plan: plan.clone(),
        damage: None,
        truncated: None,
        frames_kept,
        log_replaced: false,
    };
    match plan {
        RepairPlan::Nothing => {}
        RepairPlan::Cut(damage) => {
            let log = log.ok_or(PersistError::InvalidPayload {
                reason: "repair lost track of the log",
            })?;
            let backup = recovery::backup_log(fs, &wal_path)?;
            let file = log.file();
            file.set_len(damage.offset)
                .and_then(|()| file.sync_all())
                .map_err(|e| PersistError::io(&wal_path, e))?;
            report.truncated = Some(Truncation::at_damage(&damage, log.file_len, Some(backup)));
            report.damage = Some(damage);
        }
        RepairPlan::Replace {
            reason,
            kind,
            bytes,
            operations,
        } => {
            let backup = recovery::backup_log(fs, &wal_path)?;
            let version = crate::format_policy::formats(
                crate::format_policy::policy(options)?,
                None,
                options.explicit_wal_format(),
                crate::format_policy::OnDisk {
                    snapshot: Some(meta.header.version),
                    wal: None,
                },
            )
            .1
            .version();
            let base = meta.last_seq().map_or(1, |seq| seq + 1);
            wal::create_log(fs, &wal_path, version, base, fingerprint)?;
            report.truncated = Some(Truncation::whole_log(
                reason,
                kind,
                bytes,
                operations,
                Some(backup),
            ));
            report.log_replaced = true;
        }
    }
    Ok(report)
}

/// A log's header, as [`read_log_frames`] reports it.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogHeader {
    /// Format version.
    pub version: u32,
    /// Sequence number of the log's first operation.
    pub base_seq: u64,
    /// The snapshot the log follows (v2).
    pub snapshot: Option<SnapshotFingerprint>,
    /// Header length: the offset of the first frame.
    pub len: u64,
}

/// One intact frame exactly as stored (head and body), for shipping a log
/// elsewhere (replication) and rebuilding it there with [`write_log`].
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    /// Offset of the frame in its log.
    pub offset: u64,
    /// Sequence number of its first operation.
    pub first_seq: u64,
    /// Number of operations in it.
    pub operations: u64,
    /// The frame's bytes.
    pub bytes: Vec<u8>,
}

impl RawFrame {
    /// A v2 frame from its stored bytes (head and body), for example as
    /// shipped elsewhere and downloaded again: checks its length and
    /// checksum and decodes its body for the sequence number and operation
    /// count. `offset` is 0 (the frame is in no file); [`write_log`] places
    /// it.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        use crate::wal::format::{FRAME_HEAD_LEN, V2_BODY_PREFIX};
        let head = FRAME_HEAD_LEN as usize;
        let bad = |reason| PersistError::InvalidPayload { reason };
        if bytes.len() < head + V2_BODY_PREFIX + 1 {
            return Err(bad("frame is too short to be a v2 frame"));
        }
        let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        if len != bytes.len() - head {
            return Err(bad("frame length field does not match its bytes"));
        }
        let stored = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        crate::checksum::verify(&bytes[head..], stored)?;
        let body = wal::format::decode_body(2, &bytes[head..])?;
        let first_seq = body.first_seq.ok_or(bad("frame has no sequence number"))?;
        let operations = body.ops.len() as u64;
        if first_seq.checked_add(operations).is_none() {
            return Err(bad("frame's sequence numbers overflow"));
        }
        Ok(Self {
            offset: 0,
            first_seq,
            operations,
            bytes,
        })
    }

    /// The sequence number after its last operation.
    #[must_use]
    pub fn end_seq(&self) -> u64 {
        // `from_bytes` refuses frames whose numbers overflow; saturating
        // keeps a hand-built one from panicking.
        self.first_seq.saturating_add(self.operations)
    }
}

/// Reads the intact frames of the log at `path` that start at or after
/// `from` (0 or the header length for the first one, else a previous frame's
/// end), up to about `max_bytes`. Frames still being written (a torn tail)
/// are not returned; corruption is an error. Returns the header, the frames,
/// and the offset after the last one (where to continue), or `None` when
/// the log is missing or has no header yet.
pub fn read_log_frames(
    fs: &dyn FileSystem,
    path: &Path,
    from: u64,
    max_bytes: u64,
) -> Result<Option<(LogHeader, Vec<RawFrame>, u64)>> {
    let mut log = match reader::open(fs, path, false)? {
        Opened::Log(log) => *log,
        Opened::Missing | Opened::Incomplete { .. } => return Ok(None),
    };
    let header = LogHeader {
        version: log.header.version,
        base_seq: log.header.base_seq,
        snapshot: log.header.snapshot,
        len: log.header.len(),
    };
    // Straight to `from` when its frame says where the sequence stands;
    // otherwise (v1, or a start) read through from the header.
    log.skip_to(from)?;
    let mut frames = Vec::new();
    let mut bytes = 0u64;
    let mut body = Vec::new();
    loop {
        let first_seq = log.next_seq;
        body.clear();
        match log.next_checked(&mut body)? {
            Checked::Frame(frame) => {
                if frame.offset < from {
                    continue;
                }
                // The head is the body's length and (verified) checksum.
                let mut raw = Vec::with_capacity(frame.len as usize);
                raw.extend_from_slice(&(body.len() as u32).to_le_bytes());
                raw.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
                raw.extend_from_slice(&body);
                bytes += frame.len;
                frames.push(RawFrame {
                    offset: frame.offset,
                    first_seq,
                    operations: log.next_seq - first_seq,
                    bytes: raw,
                });
                if bytes >= max_bytes {
                    break;
                }
            }
            Checked::End => break,
            Checked::Damaged(damage) if damage.kind == DamageKind::Torn => break,
            Checked::Damaged(damage) => {
                return Err(damage.to_error(path));
            }
        }
    }
    let end = frames
        .last()
        .map_or(from.max(header.len), |f| f.offset + f.bytes.len() as u64);
    Ok(Some((header, frames, end)))
}

/// Writes, atomically, a v2 log at `path` that follows the snapshot with
/// fingerprint `snapshot` and holds `frames` (v2 frames numbered
/// consecutively from `base_seq`, as [`read_log_frames`] returns them, from
/// any log). Each frame is re-stamped for its new position (its synced
/// length is its own offset, since the whole file is synced) and its
/// checksum recomputed, after the original checksum is verified.
pub fn write_log(
    fs: &std::sync::Arc<dyn FileSystem>,
    path: &Path,
    snapshot: SnapshotFingerprint,
    base_seq: u64,
    frames: &[RawFrame],
) -> Result<()> {
    let mut frames = frames.iter();
    write_log_from(fs, path, snapshot, base_seq, || Ok(frames.next()))
}

/// As [`write_log`], with the frames pulled one at a time from `pull`
/// (until it returns `None`), so that a log of any length is written in
/// bounded memory (a restore downloads it segment by segment). An error
/// from `pull` abandons the log (nothing is installed) and is returned.
pub fn write_log_from<F: std::borrow::Borrow<RawFrame>>(
    fs: &std::sync::Arc<dyn FileSystem>,
    path: &Path,
    snapshot: SnapshotFingerprint,
    base_seq: u64,
    mut pull: impl FnMut() -> Result<Option<F>>,
) -> Result<()> {
    use crate::wal::format::{FRAME_HEAD_LEN, V2_BODY_PREFIX, WalHeader};
    let header = WalHeader {
        version: 2,
        base_seq,
        snapshot: Some(snapshot),
    };
    let head = FRAME_HEAD_LEN as usize;
    replace::write_atomically(fs, path, |file, temp| {
        use std::io::Write;
        let io = |e| PersistError::io(temp, e);
        let mut out = crate::storage::FileWriter::new(file.clone(), 0, 1 << 20);
        let header_bytes = header.encode();
        out.write_all(&header_bytes).map_err(io)?;
        let mut offset = header_bytes.len() as u64;
        let mut next = base_seq;
        let mut copy = Vec::new();
        while let Some(frame) = pull()? {
            let bytes = &frame.borrow().bytes;
            let bad = |reason| PersistError::InvalidPayload { reason };
            if bytes.len() < head + V2_BODY_PREFIX {
                return Err(bad("frame is too short to be a v2 frame"));
            }
            let stored = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
            crate::checksum::verify(&bytes[head..], stored)?;
            let body = crate::wal::format::decode_body(2, &bytes[head..])?;
            if body.first_seq != Some(next) {
                return Err(bad(
                    "frames are not numbered consecutively from the base sequence",
                ));
            }
            next = next
                .checked_add(body.ops.len() as u64)
                .ok_or(bad("frame's sequence numbers overflow"))?;
            copy.clear();
            copy.extend_from_slice(bytes);
            copy[head + 9..head + 17].copy_from_slice(&offset.to_le_bytes());
            let crc = crc32fast::hash(&copy[head..]);
            copy[4..8].copy_from_slice(&crc.to_le_bytes());
            out.write_all(&copy).map_err(io)?;
            offset += copy.len() as u64;
        }
        out.finish().map(drop).map_err(io)
    })
}
