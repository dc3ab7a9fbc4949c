//! Bringing a database back after a crash: finish or abandon an interrupted
//! checkpoint, check the log belongs to the snapshot, replay it, and deal
//! with damage as the [`RecoveryMode`] says.
//!
//! Replay re-executes the logged operations in order with the semantics they
//! had when logged: an operation the index rejects now was rejected then
//! too (it is logged before it is applied), so it is skipped and counted; a
//! batch stops at its first rejected operation, as it did.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use iqdb_index::IndexCore;

use crate::checkpoint;
use crate::config::PersistConfig;
use crate::error::{PersistError, Result};
use crate::options::{Options, RecoveryMode};
use crate::snapshot::{SnapshotFingerprint, SnapshotMeta};
use crate::storage::{FileHandle, FileSystem, read_exact_at};
use crate::wal::format;
use crate::wal::format::WalHeader;
use crate::wal::reader::{self, Checked, CheckedFrame, Next, Opened, WalReader};
use crate::wal::writer::WalWriter;
use crate::wal::{self, Damage, DamageKind};

/// What a load found and did. Returned by
/// [`PersistedIndex::recovery_report`](crate::PersistedIndex::recovery_report).
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Format version of the snapshot loaded (0 when none was read).
    pub snapshot_version: u32,
    /// Format version of the log now open (WAL mode only).
    pub wal_version: Option<u32>,
    /// Log frames replayed onto the snapshot.
    pub frames_replayed: u64,
    /// Logged operations applied.
    pub operations_applied: u64,
    /// Logged operations the index rejected on replay, as it did when they
    /// were logged (including the rest of a batch after its rejected one).
    pub operations_rejected: u64,
    /// Part of the log that was cut off, if any.
    pub truncated: Option<Truncation>,
    /// A crash interrupted a checkpoint after its snapshot was installed;
    /// the load finished it (the log's operations were already in the
    /// snapshot and were not replayed).
    pub checkpoint_completed: bool,
    /// A crash interrupted a checkpoint before its snapshot was installed;
    /// the old snapshot and log were used.
    pub checkpoint_abandoned: bool,
    /// A fresh log was created (none existed, or the old one was empty).
    pub wal_created: bool,
    /// Temporary files of crashed saves that were removed.
    pub stale_temp_files_removed: Vec<PathBuf>,
}

/// A cut in the log.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    /// Offset where the log was cut.
    pub offset: u64,
    /// Bytes removed.
    pub bytes: u64,
    /// Torn tail (crash debris) or corruption (dropped by salvage).
    pub kind: DamageKind,
    /// What was wrong.
    pub reason: &'static str,
    /// Valid frames that were dropped with the damage.
    pub frames_dropped: u64,
    /// Where the log was copied before cutting (salvage only).
    pub backup: Option<PathBuf>,
}

/// What an interrupted checkpoint's intent file says, if there is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IntentState {
    /// No intent.
    Absent,
    /// The intent's snapshot is in place: the checkpoint must be completed.
    Completed(checkpoint::Intent),
    /// The intent's snapshot never got installed.
    Abandoned,
    /// The intent is damaged and salvage mode ignores it.
    Ignored,
}

/// What the log beside a snapshot is, decided without changing a file.
#[derive(Debug)]
pub(crate) enum LogState {
    /// An interrupted checkpoint installed the snapshot: the log is obsolete
    /// and a fresh one starts at `next_seq`.
    CheckpointCompleted { next_seq: u64, version: u32 },
    /// No log, or one too short for its header (`torn_header` bytes of it):
    /// a fresh log starts.
    Fresh { torn_header: u64 },
    /// The log holds no operations but does not follow this snapshot.
    Unlinked,
    /// Salvage mode: the log cannot be used (damaged header, or operations
    /// that follow another snapshot) and is set aside whole.
    SetAside {
        reason: &'static str,
        bytes: u64,
        operations: u64,
    },
    /// The log to replay.
    Replay(WalReader),
}

/// Reads the intent and opens the log beside the snapshot with
/// `fingerprint`, deciding what recovery must do. Errors where `mode`
/// refuses to go on.
pub(crate) fn assess(
    fs: &dyn FileSystem,
    config: &PersistConfig,
    fingerprint: SnapshotFingerprint,
    mode: RecoveryMode,
    write: bool,
) -> Result<(IntentState, LogState)> {
    let intent = match checkpoint::read(fs, &config.checkpoint_path()) {
        Ok(Some(intent)) if intent.snapshot == fingerprint => IntentState::Completed(intent),
        Ok(Some(_)) => IntentState::Abandoned,
        Ok(None) => IntentState::Absent,
        Err(e) if mode == RecoveryMode::Salvage => {
            tracing::warn!(error = %e, "ignoring a damaged checkpoint intent");
            IntentState::Ignored
        }
        Err(e) => return Err(e),
    };
    if let IntentState::Completed(completed) = intent {
        let version = if completed.wal_version == 1 { 1 } else { 2 };
        let log = LogState::CheckpointCompleted {
            next_seq: completed.next_seq,
            version,
        };
        return Ok((intent, log));
    }
    let wal_path = config.wal_path();
    let log = match reader::open(fs, &wal_path, write) {
        Ok(Opened::Missing) => LogState::Fresh { torn_header: 0 },
        Ok(Opened::Incomplete { len }) => {
            if len > 0 && mode == RecoveryMode::Strict {
                let damage = crate::wal::Damage::incomplete_header(len);
                return Err(damage.map_or_else(
                    || PersistError::InvalidPayload {
                        reason: "log ends inside its header",
                    },
                    |d| d.to_error(&wal_path),
                ));
            }
            LogState::Fresh { torn_header: len }
        }
        Ok(Opened::Log(mut log)) => {
            if log.header.version < 2 || log.header.snapshot == Some(fingerprint) {
                LogState::Replay(*log)
            } else {
                let operations = count_operations(&mut log)?;
                if operations == 0 {
                    LogState::Unlinked
                } else if mode == RecoveryMode::Salvage {
                    LogState::SetAside {
                        reason: "log follows a different snapshot",
                        bytes: log.file_len,
                        operations,
                    }
                } else {
                    return Err(PersistError::WalMismatch {
                        path: wal_path,
                        reason: "the log follows a different snapshot; its operations would be \
                                 applied to the wrong state (load with RecoveryMode::Salvage to \
                                 set the log aside and start from the snapshot)",
                    });
                }
            }
        }
        Err(e) if mode == RecoveryMode::Salvage && e.is_corruption() => LogState::SetAside {
            reason: "log header is damaged",
            bytes: file_len(fs, &wal_path)?,
            operations: 0,
        },
        Err(e) => return Err(e),
    };
    Ok((intent, log))
}

/// Whether damage found in a replay is cut off (`Some(backup?)`) or is an
/// error, as `mode` says.
pub(crate) fn damage_action(damage: &Damage, mode: RecoveryMode, path: &Path) -> Result<bool> {
    let refuse = mode == RecoveryMode::Strict
        || (damage.kind == DamageKind::Corrupt && mode != RecoveryMode::Salvage);
    if refuse {
        Err(damage.to_error(path))
    } else {
        Ok(mode == RecoveryMode::Salvage)
    }
}

/// Replays the log's frames onto `index` (or, with `None`, only scans them)
/// up to damage or the end; returns the damage to cut at, if any.
///
/// A helper thread reads frames and checks their lengths, checksums and
/// sequence numbers into batch buffers (about 1 MiB each, recycled); this
/// thread decodes and applies them. Decoding stays on the thread that applies
/// because it allocates what the index keeps or frees (vectors, ids,
/// metadata): allocating on one thread and freeing on another makes the
/// threads contend for the allocator's locks.
pub(crate) fn replay<I: IndexCore + ?Sized>(
    log: &mut WalReader,
    mut index: Option<&mut I>,
    report: &mut RecoveryReport,
) -> Result<Option<Damage>> {
    const BATCH_BYTES: usize = 1 << 20;
    #[derive(Default)]
    struct Batch {
        bytes: Vec<u8>,
        frames: Vec<CheckedFrame>,
    }
    let version = log.header.version;
    let path = log.path().to_path_buf();
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(2);
        let (free_tx, free_rx) = std::sync::mpsc::channel::<Batch>();
        let reader = scope.spawn(move || -> Result<Option<Damage>> {
            let mut batch = Batch::default();
            let outcome = loop {
                match log.next_checked(&mut batch.bytes) {
                    Ok(Checked::Frame(frame)) => {
                        batch.frames.push(frame);
                        if batch.bytes.len() >= BATCH_BYTES {
                            let mut next = free_rx.try_recv().unwrap_or_default();
                            next.bytes.clear();
                            next.frames.clear();
                            if tx.send(std::mem::replace(&mut batch, next)).is_err() {
                                return Ok(None);
                            }
                        }
                    }
                    Ok(Checked::End) => break Ok(None),
                    Ok(Checked::Damaged(damage)) => break Ok(Some(damage)),
                    Err(e) => break Err(e),
                }
            };
            if !batch.frames.is_empty() {
                let _ = tx.send(batch);
            }
            outcome
        });
        let mut failed = None;
        'batches: for batch in rx {
            for frame in &batch.frames {
                let mut stopped = false;
                let decoded = format::for_each_op(
                    version,
                    &batch.bytes[frame.body.clone()],
                    |op, in_batch| {
                        let Some(index) = index.as_deref_mut() else {
                            return;
                        };
                        if stopped {
                            // A batch stops at its first rejected operation.
                            report.operations_rejected += 1;
                        } else if op.apply_to(index).is_ok() {
                            report.operations_applied += 1;
                        } else {
                            report.operations_rejected += 1;
                            stopped = in_batch;
                        }
                    },
                );
                match decoded {
                    Ok(_) => report.frames_replayed += 1,
                    Err(e) => {
                        // Its checksum holds: never a crash artifact.
                        failed = Some(e.in_file(&path, frame.offset));
                        break 'batches;
                    }
                }
            }
            let _ = free_tx.send(batch);
        }
        let outcome = reader.join().unwrap_or(Err(PersistError::InvalidPayload {
            reason: "log reader thread panicked",
        }));
        match failed {
            Some(e) => Err(e),
            None => outcome,
        }
    })
}

impl Truncation {
    /// The cut at `damage.offset` of a log `file_len` bytes long.
    pub(crate) fn at_damage(damage: &Damage, file_len: u64, backup: Option<PathBuf>) -> Self {
        Self {
            offset: damage.offset,
            bytes: file_len - damage.offset,
            kind: damage.kind,
            reason: damage.reason,
            frames_dropped: damage.valid_frames_after,
            backup,
        }
    }

    /// The whole log set aside (salvage), with what it held.
    pub(crate) fn whole_log(
        reason: &'static str,
        kind: DamageKind,
        bytes: u64,
        operations: u64,
        backup: Option<PathBuf>,
    ) -> Self {
        Self {
            offset: 0,
            bytes,
            kind,
            reason,
            frames_dropped: operations,
            backup,
        }
    }
}

/// Recovers the log of a WAL-mode database whose snapshot is loaded into
/// `index`, returning a writer positioned after its last valid frame.
pub(crate) fn recover_log<I: IndexCore + ?Sized>(
    config: &PersistConfig,
    options: &Options,
    index: &mut I,
    snapshot: &SnapshotMeta,
    report: &mut RecoveryReport,
) -> Result<WalWriter> {
    let fs = options.get_file_system();
    let wal_path = config.wal_path();
    let fingerprint = snapshot.fingerprint();
    let fresh_base = snapshot.last_seq().map_or(1, |seq| seq + 1);
    let mode = options.get_recovery_mode();
    let new_version = options.get_wal_format().version();
    let (intent, log) = assess(fs.as_ref(), config, fingerprint, mode, true)?;
    report.checkpoint_completed = matches!(intent, IntentState::Completed(_));
    report.checkpoint_abandoned = intent == IntentState::Abandoned;
    let writer = match log {
        LogState::Replay(mut log) => {
            report.wal_version = Some(log.header.version);
            if let Some(damage) = replay(&mut log, Some(index), report)? {
                let backup = if damage_action(&damage, mode, &wal_path)? {
                    Some(backup_log(fs, &wal_path)?)
                } else {
                    None
                };
                let file = log.file();
                file.set_len(damage.offset)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| PersistError::io(&wal_path, e))?;
                tracing::warn!(
                    path = %wal_path.display(),
                    offset = damage.offset,
                    reason = damage.reason,
                    verdict = damage.verdict,
                    "cut the write-ahead log at a damaged frame"
                );
                report.truncated = Some(Truncation::at_damage(&damage, log.file_len, backup));
            }
            if report.frames_replayed == 0 && log.header.version != new_version {
                // An empty log of the other format: switch formats now, for free.
                report.wal_created = true;
                report.wal_version = Some(new_version);
                fresh_log(
                    config,
                    fs,
                    new_version,
                    fresh_base.max(log.next_seq),
                    fingerprint,
                )?
            } else {
                let header = log.header;
                // v2 frames before the last frame's synced length were seen
                // durable by their writer; a v1 log cannot tell.
                let (unsure_from, mark) = if header.version >= 2 {
                    let from = log.last_synced_len.clamp(header.len(), log.position());
                    // More than the last frame unsure (written under
                    // `Periodic`/`Never`): leave a sync mark, so the next
                    // load need not write it all back again.
                    (from, (from < log.last_frame_offset).then_some(log.next_seq))
                } else {
                    (header.len(), None)
                };
                let end = make_durable(
                    log.file().as_ref(),
                    &wal_path,
                    unsure_from,
                    log.position(),
                    mark,
                )?;
                writer(
                    config,
                    &wal_path,
                    log.file().clone(),
                    &header,
                    end,
                    log.next_seq,
                )?
            }
        }
        LogState::CheckpointCompleted { next_seq, version } => {
            report.wal_version = Some(version);
            fresh_log(config, fs, version, next_seq, fingerprint)?
        }
        LogState::Fresh { torn_header } => {
            if let Some(damage) = crate::wal::Damage::incomplete_header(torn_header) {
                report.truncated = Some(Truncation::at_damage(&damage, torn_header, None));
            }
            report.wal_created = true;
            report.wal_version = Some(new_version);
            fresh_log(config, fs, new_version, fresh_base, fingerprint)?
        }
        LogState::Unlinked => {
            report.wal_created = true;
            report.wal_version = Some(new_version);
            fresh_log(config, fs, new_version, fresh_base, fingerprint)?
        }
        LogState::SetAside {
            reason,
            bytes,
            operations,
        } => {
            let backup = backup_log(fs, &wal_path)?;
            report.truncated = Some(Truncation::whole_log(
                reason,
                DamageKind::Corrupt,
                bytes,
                operations,
                Some(backup),
            ));
            report.wal_created = true;
            report.wal_version = Some(new_version);
            fresh_log(config, fs, new_version, fresh_base, fingerprint)?
        }
    };
    if intent != IntentState::Absent {
        // Only now that the log is what the snapshot needs.
        checkpoint::remove(fs.as_ref(), &config.checkpoint_path())?;
    }
    // What this load saw of the directory may not be durable yet: a failed
    // directory fsync (or a crash of the process) can leave an unlink or a
    // rename in the page cache only. The first write acknowledged on top of
    // it must not be undone by power loss bringing an old name back (an
    // intent whose removal never reached the disk would complete a finished
    // checkpoint again and discard the log).
    let dir = crate::replace::parent_dir(&config.path);
    fs.sync_dir(dir).map_err(|e| PersistError::io(dir, e))?;
    Ok(writer)
}

/// Makes the log's valid bytes durable before anything is appended to them;
/// returns the log's new end.
///
/// What a load reads may be only in the page cache: after kill -9 between a
/// write and its fsync, the pages are still dirty (an fsync writes them);
/// after a failed fsync, Linux has marked them clean without writing them
/// ("fsyncgate"), so an fsync alone does nothing and power loss would cut a
/// hole under writes acknowledged later. Writing the bytes in
/// `[from, end)` back over themselves dirties those pages again, and the
/// fsync then writes them. Setting the length makes a truncation whose
/// sync failed durable too. With `mark` (a v2 log; the next sequence
/// number), a sync mark frame is appended once that fsync returned,
/// recording everything before it as durable, and fsynced in turn.
fn make_durable(
    file: &dyn FileHandle,
    path: &Path,
    from: u64,
    end: u64,
    mark: Option<u64>,
) -> Result<u64> {
    let io = |e| PersistError::io(path, e);
    let mut buf = vec![0u8; (end.saturating_sub(from)).min(1 << 20) as usize];
    let mut at = from;
    while at < end {
        let n = ((end - at) as usize).min(buf.len());
        read_exact_at(file, &mut buf[..n], at).map_err(io)?;
        file.write_all_at(&buf[..n], at).map_err(io)?;
        at += n as u64;
    }
    file.set_len(end).map_err(io)?;
    file.sync_all().map_err(io)?;
    let Some(next_seq) = mark else {
        return Ok(end);
    };
    let frame = format::sync_mark(next_seq, end)?;
    file.write_all_at(&frame, end).map_err(io)?;
    file.sync_data().map_err(io)?;
    Ok(end + frame.len() as u64)
}

/// Creates a fresh log and a writer on it.
fn fresh_log(
    config: &PersistConfig,
    fs: &Arc<dyn FileSystem>,
    version: u32,
    base_seq: u64,
    fingerprint: SnapshotFingerprint,
) -> Result<WalWriter> {
    let wal_path = config.wal_path();
    let (file, header) = wal::create_log(fs, &wal_path, version, base_seq, fingerprint)?;
    writer(
        config,
        &wal_path,
        file,
        &header,
        header.len(),
        header.base_seq,
    )
}

fn writer(
    config: &PersistConfig,
    path: &Path,
    file: Arc<dyn FileHandle>,
    header: &WalHeader,
    end: u64,
    next_seq: u64,
) -> Result<WalWriter> {
    WalWriter::new(path, file, header, end, next_seq, config.fsync_policy)
}

/// Counts the operations a log holds that a new log would discard: those
/// of its valid frames and, when the log is damaged in a way a crash cannot
/// explain (or valid frames follow the damage), at least one more for the
/// damaged part. Only a clean end or a torn tail with nothing after it
/// counts as holding exactly the valid frames.
fn count_operations(log: &mut WalReader) -> Result<u64> {
    let mut count = 0u64;
    loop {
        match log.next_frame()? {
            Next::Frame(frame) => count += frame.body.ops.len() as u64,
            Next::End => return Ok(count),
            Next::Damaged(damage) => {
                if damage.kind == DamageKind::Torn && damage.valid_frames_after == 0 {
                    return Ok(count);
                }
                return Ok(count.saturating_add(damage.valid_frames_after.max(1)));
            }
        }
    }
}

/// Finishes or abandons an interrupted checkpoint before `open_with` writes
/// its own intent: an intent matching the snapshot in place means that
/// snapshot holds the old log's operations, so the log is replaced by the
/// fresh one the intent names; any other intent names a snapshot that was
/// never installed and is removed. (Overwriting a pending intent and then
/// failing before installing the new snapshot left the installed snapshot
/// beside the old log, with nothing to say they no longer match.)
pub(crate) fn settle_intent(
    fs: &Arc<dyn FileSystem>,
    config: &PersistConfig,
    snapshot: Option<SnapshotFingerprint>,
) -> Result<()> {
    let path = config.checkpoint_path();
    let Some(intent) = checkpoint::read(fs.as_ref(), &path)? else {
        return Ok(());
    };
    if let Some(fingerprint) = snapshot
        && intent.snapshot == fingerprint
    {
        let version = if intent.wal_version == 1 { 1 } else { 2 };
        wal::create_log(
            fs,
            &config.wal_path(),
            version,
            intent.next_seq,
            fingerprint,
        )?;
    }
    checkpoint::remove(fs.as_ref(), &path)
}

/// The number of logged operations a new `open_with` would discard: those
/// in a log that is not made obsolete by a completed checkpoint.
pub(crate) fn pending_operations(
    fs: &dyn FileSystem,
    config: &PersistConfig,
    snapshot: Option<SnapshotFingerprint>,
) -> Result<u64> {
    if let (Some(fp), Ok(Some(intent))) =
        (snapshot, checkpoint::read(fs, &config.checkpoint_path()))
        && intent.snapshot == fp
    {
        return Ok(0);
    }
    match reader::open(fs, &config.wal_path(), false)? {
        Opened::Log(mut log) => count_operations(&mut log),
        Opened::Missing | Opened::Incomplete { .. } => Ok(0),
    }
}

fn file_len(fs: &dyn FileSystem, path: &Path) -> Result<u64> {
    fs.open_read(path)
        .and_then(|f| f.len())
        .map_err(|e| PersistError::io(path, e))
}

/// Copies the log to `<log>.salvaged-<n>` (durably) before it is cut.
pub(crate) fn backup_log(fs: &Arc<dyn FileSystem>, path: &Path) -> Result<PathBuf> {
    let source = fs.open_read(path).map_err(|e| PersistError::io(path, e))?;
    let len = source.len().map_err(|e| PersistError::io(path, e))?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut n = 0u32;
    let (backup, target) = loop {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".salvaged-{stamp}-{n}"));
        let backup = PathBuf::from(name);
        match fs.create_new(&backup) {
            Ok(file) => break (backup, file),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
            Err(e) => return Err(PersistError::io(&backup, e)),
        }
    };
    let mut buf = vec![0u8; (1 << 20).min(len as usize).max(1)];
    let mut at = 0u64;
    while at < len {
        let n = ((len - at) as usize).min(buf.len());
        read_exact_at(source.as_ref(), &mut buf[..n], at).map_err(|e| PersistError::io(path, e))?;
        target
            .write_all_at(&buf[..n], at)
            .map_err(|e| PersistError::io(&backup, e))?;
        at += n as u64;
    }
    target
        .sync_all()
        .map_err(|e| PersistError::io(&backup, e))?;
    let dir = crate::replace::parent_dir(path);
    fs.sync_dir(dir).map_err(|e| PersistError::io(dir, e))?;
    Ok(backup)
}
