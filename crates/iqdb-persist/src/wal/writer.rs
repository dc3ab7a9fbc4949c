//! Appending to the log, fsync policies, and the background flusher.
//!
//! A frame is written with one positional write at the end of the valid
//! log. If the write fails, the partial frame is cut off again; if even that
//! fails, or an fsync fails, the writer is poisoned: after a failed fsync the
//! kernel may have dropped the dirty pages, so nothing more is accepted until
//! the database is loaded again (which re-reads what is really on disk).
//!
//! Under `Periodic(d)`, a flusher thread fsyncs within `d / 2` of the first
//! unsynced write, so every write is durable within `d` even if the writer
//! goes quiet. Dropping the writer stops the flusher and syncs.
//!
//! Only one fsync runs at a time (`Shared::sync_turn`): Linux reports a
//! writeback error once per open file description, so if the flusher's
//! fsync failed while a caller's `sync()` ran its own, the caller's could
//! return Ok for data that never reached the disk. Taking turns, the second
//! fsync starts only after the first one's outcome (success or poison) is
//! recorded, and a poisoned writer never reports a sync as done.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use iqdb_types::{Metadata, VectorId};

use crate::config::FsyncPolicy;
use crate::error::{PersistError, Result};
use crate::storage::FileHandle;
use crate::wal::format::{self, KIND_BATCH, KIND_SINGLE, WalHeader};
use crate::wal::record::{self, Operation};

/// Sync bookkeeping shared with the flusher.
#[derive(Debug)]
struct SyncState {
    file: Arc<dyn FileHandle>,
    /// Bumped when the log file is replaced or cut: an fsync that started
    /// before is not recorded.
    generation: u64,
    /// Log length written so far.
    written: u64,
    /// Log length known durable.
    synced: u64,
    /// When the oldest write not yet covered by a started sync happened.
    pending_since: Option<Instant>,
    shutdown: bool,
    poison: Option<String>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<SyncState>,
    wake: Condvar,
    /// Held for the whole of every fsync of the log (see the module docs).
    sync_turn: Mutex<()>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, SyncState> {
        // A panic while holding this lock leaves plain numbers behind; keep going.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn sync_turn(&self) -> MutexGuard<'_, ()> {
        self.sync_turn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Where the log stood before an append, to cut a failed frame off again.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark {
    end: u64,
    next_seq: u64,
}

/// Appends frames to an open log.
#[derive(Debug)]
pub(crate) struct WalWriter {
    path: PathBuf,
    file: Arc<dyn FileHandle>,
    version: u32,
    end: u64,
    next_seq: u64,
    policy: FsyncPolicy,
    frame: Vec<u8>,
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
}

impl WalWriter {
    /// A writer appending at `end` (the end of the valid log, already durable)
    /// with the next operation numbered `next_seq`. Fails if the `Periodic`
    /// policy's flusher thread cannot be started (the policy would silently
    /// become sync-on-drop).
    pub(crate) fn new(
        path: &Path,
        file: Arc<dyn FileHandle>,
        header: &WalHeader,
        end: u64,
        next_seq: u64,
        policy: FsyncPolicy,
    ) -> Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(SyncState {
                file: file.clone(),
                generation: 0,
                written: end,
                synced: end,
                pending_since: None,
                shutdown: false,
                poison: None,
            }),
            wake: Condvar::new(),
            sync_turn: Mutex::new(()),
        });
        let flusher = match policy {
            FsyncPolicy::Periodic(interval) => {
                let shared = shared.clone();
                let flusher_path = path.to_path_buf();
                let spawned = std::thread::Builder::new()
                    .name("iqdb-persist-flusher".into())
                    .spawn(move || flusher_loop(&shared, interval, &flusher_path));
                Some(spawned.map_err(|e| PersistError::io(path, e))?)
            }
            _ => None,
        };
        Ok(Self {
            path: path.to_path_buf(),
            file,
            version: header.version,
            end,
            next_seq,
            policy,
            frame: Vec::with_capacity(4096),
            shared,
            flusher,
        })
    }

    /// The log's format version.
    pub(crate) fn version(&self) -> u32 {
        self.version
    }

    /// The sequence number the next operation gets.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Fails if the writer is poisoned.
    pub(crate) fn check_poison(&self) -> Result<()> {
        match &self.shared.lock().poison {
            Some(reason) => Err(PersistError::Poisoned {
                path: self.path.clone(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Refuses all further writes.
    pub(crate) fn poison(&self, reason: String) {
        let mut state = self.shared.lock();
        if state.poison.is_none() {
            state.poison = Some(reason);
        }
    }

    /// Log length known durable (recorded in v2 frames as they are written).
    pub(crate) fn synced_len(&self) -> u64 {
        self.shared.lock().synced
    }

    /// Logs one insert (not yet synced; see [`commit`](Self::commit)).
    pub(crate) fn append_insert(
        &mut self,
        id: &VectorId,
        vector: &[f32],
        metadata: Option<&Metadata>,
    ) -> Result<Mark> {
        self.check_poison()?;
        let synced = self.synced_len();
        let mut frame = std::mem::take(&mut self.frame);
        format::begin_frame(&mut frame, self.version, KIND_SINGLE, self.next_seq, synced);
        let encoded = record::encode_insert(&mut frame, id, vector, metadata)
            .and_then(|()| format::finish_frame(&mut frame));
        let result = encoded.and_then(|()| self.write_frames(&frame, 1));
        self.frame = frame;
        result
    }

    /// Logs one delete (not yet synced).
    pub(crate) fn append_delete(&mut self, id: &VectorId) -> Result<Mark> {
        self.check_poison()?;
        let synced = self.synced_len();
        let mut frame = std::mem::take(&mut self.frame);
        format::begin_frame(&mut frame, self.version, KIND_SINGLE, self.next_seq, synced);
        record::encode_delete(&mut frame, id);
        let result = format::finish_frame(&mut frame).and_then(|()| self.write_frames(&frame, 1));
        self.frame = frame;
        result
    }

    /// Logs a batch: one frame in v2 (all or nothing after a crash), one
    /// frame per operation in v1, written with a single write either way.
    pub(crate) fn append_batch(&mut self, ops: &[Operation]) -> Result<Mark> {
        self.check_poison()?;
        if ops.is_empty() {
            return Ok(Mark {
                end: self.end,
                next_seq: self.next_seq,
            });
        }
        let synced = self.synced_len();
        let mut buf = Vec::new();
        if self.version >= 2 {
            format::begin_frame(&mut buf, self.version, KIND_BATCH, self.next_seq, synced);
            let count = u32::try_from(ops.len()).map_err(|_| PersistError::InvalidPayload {
                reason: "batch has more than 2^32 operations",
            })?;
            buf.extend_from_slice(&count.to_le_bytes());
            for op in ops {
                record::encode_op(&mut buf, op)?;
            }
            format::finish_frame(&mut buf)?;
        } else {
            for op in ops {
                let start = buf.len();
                format::append_frame_start(&mut buf, self.version, KIND_SINGLE, 0, 0);
                record::encode_op(&mut buf, op)?;
                format::finish_frame(&mut buf[start..])?;
            }
        }
        self.write_frames(&buf, ops.len() as u64)
    }

    /// Writes already encoded frames holding `ops` operations with one
    /// positional write at the end of the log (also used by the shared
    /// handle's group commit, which encodes a whole group's frames).
    pub(crate) fn write_frames(&mut self, bytes: &[u8], ops: u64) -> Result<Mark> {
        let mark = Mark {
            end: self.end,
            next_seq: self.next_seq,
        };
        if let Err(e) = self.file.write_all_at(bytes, self.end) {
            // Cut off whatever part of the frame reached the file.
            if let Err(undo) = self.file.set_len(self.end) {
                self.poison(format!(
                    "write failed ({e}) and could not be undone ({undo})"
                ));
            }
            return Err(PersistError::io(&self.path, e));
        }
        self.end += bytes.len() as u64;
        self.next_seq += ops;
        let mut state = self.shared.lock();
        state.written = self.end;
        if matches!(self.policy, FsyncPolicy::Periodic(_)) && state.pending_since.is_none() {
            state.pending_since = Some(Instant::now());
            self.shared.wake.notify_one();
        }
        Ok(mark)
    }

    /// Removes the frames appended since `mark` (used for operations the
    /// index rejected, in a v1 log that 1.0 must be able to replay).
    ///
    /// The cut is fsynced at once: otherwise the rejected frame's bytes,
    /// still pending in the page cache, could reach the disk mixed sector by
    /// sector with the frames written over them next, and power loss would
    /// leave a damaged frame followed by valid ones, which reads as
    /// corruption rather than a torn tail.
    pub(crate) fn rollback(&mut self, mark: Mark) -> Result<()> {
        let _turn = self.shared.sync_turn();
        let cut = self
            .file
            .set_len(mark.end)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = cut {
            self.poison(format!("could not cut off a rejected frame ({e})"));
            return Err(PersistError::io(&self.path, e));
        }
        self.end = mark.end;
        self.next_seq = mark.next_seq;
        let mut state = self.shared.lock();
        state.written = self.end;
        state.synced = self.end;
        // No fsync can be in flight here (the turn is held), but a result
        // recorded for the old bytes must never count for the new ones.
        state.generation += 1;
        Ok(())
    }

    /// Makes the appended frames durable as the policy says: now under
    /// `Always`, later otherwise.
    pub(crate) fn commit(&mut self) -> Result<()> {
        match self.policy {
            FsyncPolicy::Always => self.sync(),
            _ => Ok(()),
        }
    }

    /// Fsyncs everything written so far.
    pub(crate) fn sync(&self) -> Result<()> {
        let _turn = self.shared.sync_turn();
        // Checked with the turn held: a flusher fsync that failed before we
        // got here has poisoned the writer.
        self.check_poison()?;
        let (file, target, generation) = {
            let mut state = self.shared.lock();
            if state.synced >= state.written {
                return Ok(());
            }
            state.pending_since = None;
            (state.file.clone(), state.written, state.generation)
        };
        match file.sync_data() {
            Ok(()) => {
                let mut state = self.shared.lock();
                if state.generation == generation {
                    state.synced = state.synced.max(target);
                }
                Ok(())
            }
            Err(e) => {
                self.poison(format!("fsync failed: {e}"));
                Err(PersistError::io(&self.path, e))
            }
        }
    }

    /// Switches to a new log file (after a checkpoint installed it).
    pub(crate) fn replace_file(&mut self, file: Arc<dyn FileHandle>, header: &WalHeader) {
        let end = header.len();
        self.file = file.clone();
        self.version = header.version;
        self.end = end;
        self.next_seq = header.base_seq;
        let mut state = self.shared.lock();
        state.file = file;
        state.generation += 1;
        state.written = end;
        state.synced = end;
        state.pending_since = None;
    }

    /// Stops the flusher and syncs what is unsynced; the result of that
    /// final sync (an error if the writer is poisoned with unsynced data).
    pub(crate) fn shutdown(&mut self) -> Result<()> {
        {
            let mut state = self.shared.lock();
            if state.shutdown {
                return Ok(());
            }
            state.shutdown = true;
            self.shared.wake.notify_all();
        }
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
        let unsynced = {
            let state = self.shared.lock();
            state.synced < state.written
        };
        if unsynced { self.sync() } else { Ok(()) }
    }
}

impl Drop for WalWriter {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(
                path = %self.path.display(),
                error = %e,
                "the write-ahead log's final sync failed: writes since the last successful sync may be lost (use PersistedIndex::close to get this error)"
            );
        }
    }
}

fn flusher_loop(shared: &Shared, interval: Duration, path: &Path) {
    let delay = interval / 2;
    let mut state = shared.lock();
    loop {
        while !state.shutdown && state.pending_since.is_none() {
            state = shared
                .wake
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        if state.shutdown {
            return;
        }
        let since = state.pending_since.unwrap_or_else(Instant::now);
        let deadline = since + delay;
        loop {
            let now = Instant::now();
            if state.shutdown || now >= deadline {
                break;
            }
            state = shared
                .wake
                .wait_timeout(state, deadline - now)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        if state.shutdown {
            return;
        }
        if state.poison.is_some() {
            state.pending_since = None;
            continue;
        }
        state.pending_since = None;
        drop(state);
        let turn = shared.sync_turn();
        state = shared.lock();
        if state.poison.is_some() || state.synced >= state.written {
            drop(turn);
            continue;
        }
        let file = state.file.clone();
        let target = state.written;
        let generation = state.generation;
        drop(state);
        let result = file.sync_data();
        state = shared.lock();
        match result {
            Ok(()) => {
                if state.generation == generation {
                    state.synced = state.synced.max(target);
                }
            }
            Err(e) => {
                if state.poison.is_none() {
                    state.poison = Some(format!(
                        "background fsync of {} failed: {e}",
                        path.display()
                    ));
                }
            }
        }
    }
}
