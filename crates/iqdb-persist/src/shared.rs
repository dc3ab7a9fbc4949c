//! [`SharedIndex`]: a [`PersistedIndex`] many threads write at once, with
//! group commit.

use std::fmt;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use iqdb_index::Index;
use iqdb_types::{Metadata, VectorId};

use crate::error::{PersistError, Result};
use crate::persisted::PersistedIndex;
use crate::wal::Operation;
use crate::wal::format::{self, KIND_BATCH, KIND_SINGLE, MAX_FRAME_BODY, V2_BODY_PREFIX};
use crate::wal::record;
use crate::wal::writer::WalWriter;
use crate::{FsyncPolicy, Persistable};

mod queue;

/// The synchronisation primitives [`queue`] is written against (std's
/// here; shuttle's in the model test that includes the same file).
mod sync {
    pub(crate) use std::sync::{Arc, Condvar, Mutex, MutexGuard};
    pub(crate) use std::thread::yield_now;
}

use queue::CommitQueue;
use sync::Arc;

/// The most requests one commit group takes.
const MAX_GROUP: usize = 1024;

/// A durable index that many threads write through `&self` at once.
///
/// `SharedIndex` is `Send + Sync`, and cloning it is cheap (an `Arc`): every
/// clone is the same database. Make one with
/// [`PersistedIndex::into_shared`] (or `From`), get the `PersistedIndex`
/// back with [`try_into_inner`](Self::try_into_inner) once only one clone is
/// left.
///
/// ## Group commit
///
/// Concurrent writers join a commit group (leader and followers, like
/// RocksDB's write groups): each caller encodes its own operation, then
/// queues it. One caller, the leader, takes every queued operation, checks
/// each against the index by applying it, in queue order (so the second of
/// two inserts of one id in the same group is the one rejected), writes the
/// frames of the accepted ones with **one** write and — under
/// [`FsyncPolicy::Always`] — **one** fsync (`fdatasync`), then wakes every
/// caller with its own result. The next group forms while one is being
/// written. A rejected operation (duplicate id, wrong dimension, ...) fails
/// only its own caller and is never written to the log, so a reload never
/// sees it. A batch ([`apply`](Self::apply)) is one request: its accepted
/// prefix is logged as one frame (v2; one frame per operation in a v1 log)
/// and [`PersistError::Batch`] says how many were applied, as with
/// [`PersistedIndex::apply`].
///
/// ## What readers see
///
/// [`read`](Self::read) and [`read_guard`](Self::read_guard) share the
/// index with other readers. The leader holds the index exclusively from the
/// first apply of its group until the group's fsync returned, so under
/// `Always` **a reader never sees a write before it is durable** — and a
/// held read guard holds back every write. Under `Periodic(d)` and `Never`
/// a caller's `Ok` (and what readers see) means the write reached the OS: it
/// survives kill -9, and power loss loses at most what the policy allows
/// (`d`; or everything since the last [`sync`](Self::sync),
/// [`checkpoint`](Self::checkpoint) or [`close`](Self::close) under
/// `Never`).
///
/// ## Failures
///
/// If the group's write or fsync fails, every caller with an operation in
/// that group gets the error, and the handle is poisoned: writes, syncs and
/// reads fail with [`PersistError::Poisoned`] from then on (the index in
/// memory holds operations that may not be on disk), until the database is
/// loaded again. The log then holds at most the failed group on top of every
/// acknowledged write. In snapshot mode (`wal_enabled = false`) writes are
/// applied in memory only, as with `PersistedIndex`.
///
/// ```
/// # use iqdb_persist_testkit::VectorStore;
/// use std::sync::Arc;
/// use iqdb_index::{Index, IndexCore};
/// use iqdb_persist::{PersistConfig, PersistedIndex};
/// use iqdb_types::{DistanceMetric, VectorId};
///
/// # fn main() -> iqdb_persist::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let mut config = PersistConfig::new(dir.path().join("db.iqdb"));
/// config.wal_enabled = true;
/// let index = VectorStore::new(2, DistanceMetric::Euclidean, Default::default())?;
/// let db = PersistedIndex::open_with(index, config)?.into_shared();
/// std::thread::scope(|s| {
///     for t in 0..4u64 {
///         let db = db.clone();
///         s.spawn(move || db.insert(VectorId::from(t), Arc::from(vec![t as f32, 1.0]), None));
///     }
/// });
/// assert_eq!(db.read(|index| index.len())?, 4);
/// db.close()?;
/// # Ok(())
/// # }
/// ```
pub struct SharedIndex<I: Index + Persistable> {
    core: Arc<Core<I>>,
}

struct Core<I: Index + Persistable> {
    db: RwLock<PersistedIndex<I>>,
    queue: CommitQueue<Request, Result<()>>,
    /// Why the handle stopped accepting writes, once it did.
    poison: OnceLock<String>,
    /// The log's path, for errors.
    wal_path: PathBuf,
}

/// One caller's operation(s), encoded by the caller.
enum Request {
    One {
        op: Operation,
        encoded: Vec<u8>,
    },
    Many {
        ops: Vec<Operation>,
        encoded: Vec<u8>,
        /// Where each operation's encoding ends in `encoded`.
        ends: Vec<usize>,
    },
}

impl<I: Index + Persistable> Clone for SharedIndex<I> {
    fn clone(&self) -> Self {
        Self {
            core: self.core.clone(),
        }
    }
}

impl<I: Index + Persistable + fmt::Debug> fmt::Debug for SharedIndex<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedIndex")
            .field("wal_path", &self.core.wal_path)
            .field("poisoned", &self.core.poison.get())
            .finish_non_exhaustive()
    }
}

impl<I: Index + Persistable> From<PersistedIndex<I>> for SharedIndex<I> {
    fn from(db: PersistedIndex<I>) -> Self {
        Self::new(db)
    }
}

fn panicked() -> Result<()> {
    Err(PersistError::Poisoned {
        path: PathBuf::new(),
        reason: "a commit group's leader panicked".into(),
    })
}

impl<I: Index + Persistable> SharedIndex<I> {
    /// Shares `db` (the same as [`PersistedIndex::into_shared`]).
    pub fn new(db: PersistedIndex<I>) -> Self {
        let wal_path = db.config().wal_path();
        Self {
            core: Arc::new(Core {
                db: RwLock::new(db),
                queue: CommitQueue::new(MAX_GROUP, panicked),
                poison: OnceLock::new(),
                wal_path,
            }),
        }
    }

    /// The `PersistedIndex` back, if this is the last clone (else `self`,
    /// unchanged). A poisoned handle comes back poisoned.
    pub fn try_into_inner(self) -> std::result::Result<PersistedIndex<I>, Self> {
        match Arc::try_unwrap(self.core) {
            Ok(core) => {
                let mut db = core
                    .db
                    .into_inner()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if let (Some(reason), (_, Some(writer))) = (core.poison.get(), db.shared_parts()) {
                    writer.poison(reason.clone());
                }
                Ok(db)
            }
            Err(core) => Err(Self { core }),
        }
    }

    /// Inserts a vector; returns once it is committed (under `Always`, once
    /// the fsync covering it returned). The index's own rules apply: what it
    /// rejects fails with [`PersistError::IndexBuild`] and is not logged.
    pub fn insert(&self, id: VectorId, vector: Arc<[f32]>, meta: Option<Metadata>) -> Result<()> {
        self.submit_one(Operation::Insert {
            id,
            vector,
            metadata: meta,
        })
    }

    /// Deletes a vector (committed as [`insert`](Self::insert) is).
    pub fn delete(&self, id: &VectorId) -> Result<()> {
        self.submit_one(Operation::Delete { id: id.clone() })
    }

    /// Applies `ops` in order as one request of a commit group: at the first
    /// operation the index rejects the batch stops, the applied prefix is
    /// logged (one frame in a v2 log: all or nothing after a crash) and
    /// [`PersistError::Batch`] says how many were applied.
    pub fn apply(&self, ops: Vec<Operation>) -> Result<()> {
        self.check_poison()?;
        if ops.is_empty() {
            return Ok(());
        }
        let mut encoded = Vec::new();
        let mut ends = Vec::with_capacity(ops.len());
        for op in &ops {
            record::encode_op(&mut encoded, op)?;
            ends.push(encoded.len());
        }
        self.submit(Request::Many { ops, encoded, ends })
    }

    /// Makes every committed write durable now (a no-op under `Always`,
    /// where each already is, and in snapshot mode).
    pub fn sync(&self) -> Result<()> {
        self.check_poison()?;
        self.read_db().sync()
    }

    /// Folds the log into a new snapshot (see
    /// [`PersistedIndex::checkpoint`]) while writers keep queueing: it takes
    /// the index exclusively, between two commit groups.
    pub fn checkpoint(&self) -> Result<()> {
        let mut db = self.write_db();
        self.check_poison()?;
        db.checkpoint()
    }

    /// Closes this clone. The last clone closes the database and returns the
    /// final sync's result (see [`PersistedIndex::close`]); any other clone
    /// syncs and lets go.
    pub fn close(self) -> Result<()> {
        match self.try_into_inner() {
            Ok(db) => db.close(),
            Err(this) => this.sync(),
        }
    }

    /// Calls `f` with the index, shared with other readers. Fails once the
    /// handle is poisoned (see the type's docs).
    pub fn read<R>(&self, f: impl FnOnce(&I) -> R) -> Result<R> {
        let guard = self.read_guard()?;
        Ok(f(&guard))
    }

    /// The index, shared with other readers, for as long as the guard lives
    /// (which holds back every write: keep it short).
    pub fn read_guard(&self) -> Result<SharedReadGuard<'_, I>> {
        let guard = self.read_db();
        self.check_poison()?;
        Ok(SharedReadGuard { guard })
    }

    /// The sequence number the next logged operation gets (WAL mode).
    pub fn next_sequence(&self) -> Option<u64> {
        self.read_db().next_sequence()
    }

    /// Whether the handle stopped accepting writes after a failure.
    #[must_use]
    pub fn is_poisoned(&self) -> bool {
        self.core.poison.get().is_some()
    }

    fn read_db(&self) -> RwLockReadGuard<'_, PersistedIndex<I>> {
        self.core
            .db
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_db(&self) -> RwLockWriteGuard<'_, PersistedIndex<I>> {
        self.core
            .db
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn check_poison(&self) -> Result<()> {
        match self.core.poison.get() {
            Some(reason) => Err(PersistError::Poisoned {
                path: self.core.wal_path.clone(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    fn submit_one(&self, op: Operation) -> Result<()> {
        self.check_poison()?;
        let mut encoded = Vec::with_capacity(64);
        record::encode_op(&mut encoded, &op)?;
        self.submit(Request::One { op, encoded })
    }

    fn submit(&self, req: Request) -> Result<()> {
        self.core.queue.submit(req, |group| self.commit(group))
    }

    /// The leader's part: one group, under the exclusive index lock.
    fn commit(&self, group: Vec<Request>) -> Vec<Result<()>> {
        let mut db = self.write_db();
        let _guard = PanicGuard(&self.core.poison);
        if self.core.poison.get().is_some() || self.core.db.is_poisoned() {
            return group.iter().map(|_| self.check_poison_or_panic()).collect();
        }
        let (index, writer) = db.shared_parts();
        match writer {
            None => group
                .into_iter()
                .map(|req| match req {
                    Request::One { op, .. } => op.apply_to(index).map_err(PersistError::from),
                    Request::Many { ops, .. } => apply_prefix(index, ops).1,
                })
                .collect(),
            Some(writer) => self.commit_logged(index, writer, group),
        }
    }

    fn check_poison_or_panic(&self) -> Result<()> {
        self.check_poison().and_then(|()| panicked())
    }

    fn commit_logged(
        &self,
        index: &mut I,
        writer: &mut WalWriter,
        group: Vec<Request>,
    ) -> Vec<Result<()>> {
        if let Err(e) = writer.check_poison() {
            let _ = self.core.poison.set(e.to_string());
            return group.iter().map(|_| Err(replicate(&e))).collect();
        }
        let version = writer.version();
        let synced = writer.synced_len();
        let first = writer.next_seq();
        let mut seq = first;
        let mut buf = Vec::with_capacity(group.len() * 600);
        let mut results = Vec::with_capacity(group.len());
        // Whether each caller's result depends on the group's write.
        let mut logged = Vec::with_capacity(group.len());
        for req in group {
            let (result, applied) = match req {
                Request::One { op, encoded } => {
                    if body_len(version, 1, encoded.len()) > MAX_FRAME_BODY as usize {
                        (Err(too_large()), 0)
                    } else {
                        match op.apply_to(index) {
                            Ok(()) => {
                                push_frame(&mut buf, version, KIND_SINGLE, seq, synced, &encoded);
                                (Ok(()), 1)
                            }
                            Err(e) => (Err(PersistError::from(e)), 0),
                        }
                    }
                }
                Request::Many { ops, encoded, ends } => {
                    if version >= 2
                        && body_len(version, ops.len().max(2), encoded.len())
                            > MAX_FRAME_BODY as usize
                        || version < 2 && op_lens(&ends).any(|len| len > MAX_FRAME_BODY as usize)
                    {
                        (Err(too_large()), 0)
                    } else {
                        let (applied, result) = apply_prefix(index, ops);
                        if applied > 0 {
                            push_batch(&mut buf, version, seq, synced, &encoded, &ends[..applied]);
                        }
                        (result, applied)
                    }
                }
            };
            seq += applied as u64;
            results.push(result);
            logged.push(applied > 0);
        }
        if seq > first {
            let durable = writer
                .write_frames(&buf, seq - first)
                .and_then(|_| writer.commit());
            if let Err(e) = durable {
                let reason = format!("a commit group's write or fsync failed: {e}");
                writer.poison(reason.clone());
                let _ = self.core.poison.set(reason);
                for (result, logged) in results.iter_mut().zip(&logged) {
                    if *logged {
                        *result = Err(replicate(&e));
                    }
                }
            }
        }
        results
    }

    /// The fsync policy in force.
    #[must_use]
    pub fn fsync_policy(&self) -> FsyncPolicy {
        self.read_db().config().fsync_policy
    }
}

/// Poisons the handle if the leader panics mid-group (the index may hold
/// part of the group).
struct PanicGuard<'a>(&'a OnceLock<String>);

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.0.set("a commit group's leader panicked".into());
        }
    }
}

/// Shared access to a [`SharedIndex`]'s index (see
/// [`SharedIndex::read_guard`]).
pub struct SharedReadGuard<'a, I: Index + Persistable> {
    guard: RwLockReadGuard<'a, PersistedIndex<I>>,
}

impl<I: Index + Persistable> Deref for SharedReadGuard<'_, I> {
    type Target = I;

    fn deref(&self) -> &I {
        self.guard.index()
    }
}

/// Applies `ops` in order up to the first rejection: how many applied, and
/// the batch's result.
fn apply_prefix<I: Index>(index: &mut I, ops: Vec<Operation>) -> (usize, Result<()>) {
    let n = ops.len();
    for (i, op) in ops.into_iter().enumerate() {
        if let Err(e) = op.apply_to(index) {
            return (
                i,
                Err(PersistError::Batch {
                    applied: i,
                    source: Box::new(PersistError::from(e)),
                }),
            );
        }
    }
    (n, Ok(()))
}

/// The body length of a frame holding `ops` operations encoded in `bytes`
/// bytes (v2: a single-operation frame for 1, a batch frame for more — a
/// batch request passes at least 2; v1 frames hold one operation each).
fn body_len(version: u32, ops: usize, bytes: usize) -> usize {
    match (version >= 2, ops) {
        (false, _) => bytes,
        (true, 1) => V2_BODY_PREFIX + bytes,
        (true, _) => V2_BODY_PREFIX + 4 + bytes,
    }
}

/// The length of each operation's encoding, from their end offsets.
fn op_lens(ends: &[usize]) -> impl Iterator<Item = usize> + '_ {
    ends.iter()
        .scan(0, |start, &end| Some(end - std::mem::replace(start, end)))
}

fn too_large() -> PersistError {
    PersistError::InvalidPayload {
        reason: "log record is larger than 256 MiB; split the batch",
    }
}

/// Appends one frame with `body` (one encoded operation) to `buf`.
fn push_frame(buf: &mut Vec<u8>, version: u32, kind: u8, seq: u64, synced: u64, body: &[u8]) {
    let start = buf.len();
    format::append_frame_start(buf, version, kind, seq, synced);
    buf.extend_from_slice(body);
    // The size was checked against the limit before the operation applied.
    let _ = format::finish_frame(&mut buf[start..]);
}

/// Appends the frames of a batch's applied prefix: one batch frame (v2), or
/// one frame per operation (v1). `ends` are the prefix's end offsets.
fn push_batch(
    buf: &mut Vec<u8>,
    version: u32,
    seq: u64,
    synced: u64,
    encoded: &[u8],
    ends: &[usize],
) {
    if version >= 2 {
        let start = buf.len();
        format::append_frame_start(buf, version, KIND_BATCH, seq, synced);
        let count = u32::try_from(ends.len()).unwrap_or(u32::MAX);
        buf.extend_from_slice(&count.to_le_bytes());
        buf.extend_from_slice(&encoded[..ends.last().copied().unwrap_or(0)]);
        let _ = format::finish_frame(&mut buf[start..]);
    } else {
        let mut start = 0;
        for &end in ends {
            push_frame(buf, version, KIND_SINGLE, 0, 0, &encoded[start..end]);
            start = end;
        }
    }
}

/// A copy of `e` for another caller of the same failed group.
fn replicate(e: &PersistError) -> PersistError {
    match e {
        PersistError::Io { path, source } => PersistError::Io {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        PersistError::Poisoned { path, reason } => PersistError::Poisoned {
            path: path.clone(),
            reason: reason.clone(),
        },
        other => PersistError::Poisoned {
            path: PathBuf::new(),
            reason: other.to_string(),
        },
    }
}
