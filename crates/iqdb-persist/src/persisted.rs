//! [`PersistedIndex`]: an index made durable by snapshots and a log.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use iqdb_index::Index;
use iqdb_types::{Metadata, VectorId};

use crate::config::PersistConfig;
use crate::error::{PersistError, Result};
use crate::options::Options;
use crate::recovery::{self, RecoveryReport};
use crate::snapshot::{self, SnapshotFingerprint, WriteSettings};
use crate::storage::{FileHandle, FileSystem, LockGuard};
use crate::wal::Operation;
use crate::wal::format::WalHeader;
use crate::wal::writer::WalWriter;
use crate::{Persistable, checkpoint, replace, wal};

/// An index wrapped with durable storage.
///
/// * Snapshot mode (`wal_enabled = false`): [`save`](Self::save) writes an
///   atomic snapshot; [`load`](Self::load) reads it back.
/// * WAL mode (`wal_enabled = true`): [`insert`](Self::insert),
///   [`delete`](Self::delete) and [`apply`](Self::apply) are logged before
///   they are applied; [`load`](Self::load) replays the log onto the
///   snapshot; [`checkpoint`](Self::checkpoint) folds the log into a new
///   snapshot. The handle holds an exclusive lock on `<path>.lock` while it
///   lives: a second writer, in this process or another, gets
///   [`PersistError::Locked`].
///
/// Locking rule: every handle that writes the snapshot holds the writer
/// lock while it writes — a WAL-mode handle for its whole life, a
/// snapshot-only handle for each [`save`](Self::save) (which fails with
/// `Locked` while a WAL-mode handle on the same database lives). A
/// snapshot-only [`load`](Self::load) is a reader and takes no lock: it
/// reads the snapshot last renamed into place, whole, and never the log.
///
/// [`close`](Self::close) returns the final sync's result; dropping the
/// handle syncs too, but can only log a failure.
///
/// Writes made through [`index_mut`](Self::index_mut) bypass the log; a
/// checkpoint (or save) makes them durable.
pub struct PersistedIndex<I: Index + Persistable> {
    inner: I,
    config: PersistConfig,
    options: Options,
    wal: Option<Mutex<WalState>>,
    report: RecoveryReport,
}

/// The open log of a WAL-mode handle.
#[derive(Debug)]
struct WalState {
    writer: WalWriter,
    snapshot: SnapshotFingerprint,
    _lock: Box<dyn LockGuard>,
}

impl<I: Index + Persistable + fmt::Debug> fmt::Debug for PersistedIndex<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PersistedIndex")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .field("wal", &self.wal.is_some())
            .finish_non_exhaustive()
    }
}

impl<I: Index + Persistable> PersistedIndex<I> {
    /// Wraps `inner`. In WAL mode this writes `inner` as the base snapshot
    /// and starts an empty log, refusing with
    /// [`PersistError::WouldOverwrite`] if an existing log holds operations
    /// that are not in its snapshot. In snapshot mode nothing is written
    /// until [`save`](Self::save).
    pub fn open_with(inner: I, config: PersistConfig) -> Result<Self> {
        Self::open_with_options(inner, config, Options::default())
    }

    /// [`open_with`](Self::open_with) with [`Options`].
    pub fn open_with_options(inner: I, config: PersistConfig, options: Options) -> Result<Self> {
        let locations = options.get_error_locations();
        Self::open_located(inner, config, options).map_err(|e| e.for_caller(locations))
    }

    fn open_located(inner: I, config: PersistConfig, options: Options) -> Result<Self> {
        config.compression.validate()?;
        let options = options.resolved_for(&config)?;
        let mut this = Self {
            inner,
            config,
            options,
            wal: None,
            report: RecoveryReport::default(),
        };
        if this.config.wal_enabled {
            let fs = this.options.get_file_system().clone();
            let lock = crate::lock::acquire(fs.as_ref(), &this.config)?;
            this.sweep()?;
            let existing = existing_fingerprint(fs.as_ref(), &this.config.path);
            recovery::settle_intent(&fs, &this.config, existing)?;
            if !this.options.get_overwrite_existing() {
                let pending = recovery::pending_operations(fs.as_ref(), &this.config, existing)?;
                if pending > 0 {
                    return Err(PersistError::WouldOverwrite {
                        path: this.config.wal_path(),
                        pending_operations: pending,
                    });
                }
            }
            let installed = install(&this.inner, &this.config, &this.options, 1)?;
            let writer = WalWriter::new(
                &this.config.wal_path(),
                installed.file,
                &installed.header,
                installed.header.len(),
                installed.header.base_seq,
                this.config.fsync_policy,
            )?;
            this.report.wal_created = true;
            this.report.wal_version = Some(installed.header.version);
            this.wal = Some(Mutex::new(WalState {
                writer,
                snapshot: installed.snapshot,
                _lock: lock,
            }));
        }
        Ok(this)
    }

    /// Loads the snapshot at `config.path` and, in WAL mode, replays the
    /// log onto it (truncating a torn tail a crash left; other damage is an
    /// error naming the file and offset).
    pub fn load(config: PersistConfig) -> Result<Self> {
        Self::load_with_options(config, Options::default())
    }

    /// [`load`](Self::load) with [`Options`] (for example a
    /// [`RecoveryMode`](crate::RecoveryMode)).
    pub fn load_with_options(config: PersistConfig, options: Options) -> Result<Self> {
        let locations = options.get_error_locations();
        Self::load_located(config, options).map_err(|e| e.for_caller(locations))
    }

    fn load_located(config: PersistConfig, options: Options) -> Result<Self> {
        config.compression.validate()?;
        let options = options.resolved_for(&config)?;
        let fs = options.get_file_system().clone();
        let lock = if config.wal_enabled {
            Some(crate::lock::acquire(fs.as_ref(), &config)?)
        } else {
            None
        };
        let mut this_report = RecoveryReport {
            stale_temp_files_removed: sweep_all(fs.as_ref(), &config)?,
            ..RecoveryReport::default()
        };
        let (mut inner, meta) =
            snapshot::read_snapshot::<I>(fs.as_ref(), &config.path, options.effective_threads())?;
        this_report.snapshot_version = meta.header.version;
        let wal = match lock {
            Some(lock) => {
                let writer =
                    recovery::recover_log(&config, &options, &mut inner, &meta, &mut this_report)?;
                Some(Mutex::new(WalState {
                    writer,
                    snapshot: meta.fingerprint(),
                    _lock: lock,
                }))
            }
            None => {
                if fs.exists(&config.wal_path()).unwrap_or(false) {
                    tracing::warn!(
                        path = %config.wal_path().display(),
                        "loading with wal_enabled = false: the write-ahead log beside the snapshot is not replayed"
                    );
                }
                None
            }
        };
        Ok(Self {
            inner,
            config,
            options,
            wal,
            report: this_report,
        })
    }

    /// The wrapped index.
    #[must_use]
    pub fn index(&self) -> &I {
        &self.inner
    }

    /// The wrapped index, mutably. Changes made through it are not logged;
    /// a [`checkpoint`](Self::checkpoint) makes them durable.
    pub fn index_mut(&mut self) -> &mut I {
        &mut self.inner
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &PersistConfig {
        &self.config
    }

    /// The options.
    #[must_use]
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// What the load that opened this handle found and did.
    #[must_use]
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The sequence number the next logged operation gets (WAL mode).
    #[must_use]
    pub fn next_sequence(&self) -> Option<u64> {
        self.wal.as_ref().map(|w| lock_state(w).writer.next_seq())
    }

    /// Inserts a vector: logged (and, under `FsyncPolicy::Always`, fsynced)
    /// before it is applied. The index's own rules apply: whatever it
    /// rejects is returned as [`PersistError::IndexBuild`].
    pub fn insert(
        &mut self,
        id: VectorId,
        vector: Arc<[f32]>,
        meta: Option<Metadata>,
    ) -> Result<()> {
        let Some(wal) = self.wal.as_mut() else {
            self.inner.insert(id, vector, meta)?;
            return Ok(());
        };
        let writer = &mut wal_state(wal).writer;
        let mark = writer.append_insert(&id, &vector, meta.as_ref())?;
        match self.inner.insert(id, vector, meta) {
            Ok(()) => writer.commit(),
            Err(e) => Err(reject(writer, mark, e)),
        }
    }

    /// Deletes a vector: logged before it is applied.
    pub fn delete(&mut self, id: &VectorId) -> Result<()> {
        let Some(wal) = self.wal.as_mut() else {
            self.inner.delete(id)?;
            return Ok(());
        };
        let writer = &mut wal_state(wal).writer;
        let mark = writer.append_delete(id)?;
        match self.inner.delete(id) {
            Ok(()) => writer.commit(),
            Err(e) => Err(reject(writer, mark, e)),
        }
    }

    /// Applies many operations in order with one log write and one fsync.
    ///
    /// With a v2 log the batch is one frame: after a crash either all of it
    /// or none of it is replayed. Operations are applied in order; at the
    /// first one the index rejects, the batch stops and
    /// [`PersistError::Batch`] says how many were applied (those are logged
    /// and durable; the rest are not applied).
    ///
    /// ```
    /// # use iqdb_persist_testkit::VectorStore;
    /// use std::sync::Arc;
    /// use iqdb_index::{Index, IndexCore};
    /// use iqdb_persist::{Operation, PersistConfig, PersistedIndex};
    /// use iqdb_types::{DistanceMetric, VectorId};
    ///
    /// # fn main() -> iqdb_persist::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let mut config = PersistConfig::new(dir.path().join("db.iqdb"));
    /// config.wal_enabled = true;
    /// let index = VectorStore::new(2, DistanceMetric::Euclidean, Default::default())?;
    /// let mut db = PersistedIndex::open_with(index, config)?;
    /// let ops = (0..1000u64).map(|i| Operation::Insert {
    ///     id: VectorId::from(i),
    ///     vector: Arc::from(vec![i as f32, 1.0]),
    ///     metadata: None,
    /// });
    /// db.apply(ops.collect())?;
    /// assert_eq!(db.index().len(), 1000);
    /// # Ok(())
    /// # }
    /// ```
    pub fn apply(&mut self, ops: Vec<Operation>) -> Result<()> {
        let Some(wal) = self.wal.as_mut() else {
            return apply_in_order(&mut self.inner, ops)
                .map_err(|(applied, e)| batch_error(applied, e));
        };
        let writer = &mut wal_state(wal).writer;
        if writer.version() < 2 {
            return apply_v1(writer, &mut self.inner, ops);
        }
        writer.append_batch(&ops)?;
        match apply_in_order(&mut self.inner, ops) {
            Ok(()) => writer.commit(),
            Err((applied, e)) => {
                // The frame stays: replay stops the batch at the same place.
                writer.commit()?;
                Err(batch_error(applied, e))
            }
        }
    }

    /// A builder that collects operations and [`apply`](Self::apply)s them
    /// with [`Batch::commit`].
    pub fn batch(&mut self) -> Batch<'_, I> {
        Batch {
            db: self,
            ops: Vec::new(),
        }
    }

    /// Fsyncs every logged write now (WAL mode; a no-op otherwise).
    pub fn sync(&self) -> Result<()> {
        match &self.wal {
            Some(wal) => lock_state(wal).writer.sync(),
            None => Ok(()),
        }
    }

    /// Writes the index to an atomic snapshot. In WAL mode this is a
    /// [`checkpoint`](Self::checkpoint) (a plain snapshot would leave the log
    /// to be replayed onto state that already holds it).
    pub fn save(&self) -> Result<()> {
        match &self.wal {
            Some(wal) => self.checkpoint_locked(&mut lock_state(wal)),
            None => {
                let fs = self.options.get_file_system();
                // The writer lock, for the save's duration: a WAL-mode handle
                // (in this process or another) owns the snapshot while it
                // lives, and a save under it would orphan its log.
                let _lock = crate::lock::acquire(fs.as_ref(), &self.config)?;
                replace::sweep_stale_temps(fs.as_ref(), &self.config.path)?;
                let settings = write_settings(&self.config, &self.options, 0);
                replace::write_atomically(fs, &self.config.path, |file, temp| {
                    snapshot::write_snapshot(file, temp, &self.inner, &settings)
                })?;
                Ok(())
            }
        }
    }

    /// Closes the handle, returning what dropping it would only log: the
    /// result of the final sync of the log (WAL mode). An error means writes
    /// acknowledged under `Periodic` or `Never` since the last successful
    /// sync may not be durable. Snapshot mode has nothing to sync.
    ///
    /// ```
    /// # use iqdb_persist_testkit::VectorStore;
    /// use iqdb_index::Index;
    /// use iqdb_persist::{FsyncPolicy, PersistConfig, PersistedIndex};
    /// use iqdb_types::DistanceMetric;
    ///
    /// # fn main() -> iqdb_persist::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let mut config = PersistConfig::new(dir.path().join("db.iqdb"));
    /// config.wal_enabled = true;
    /// config.fsync_policy = FsyncPolicy::Never;
    /// let index = VectorStore::new(2, DistanceMetric::Euclidean, Default::default())?;
    /// let db = PersistedIndex::open_with(index, config)?;
    /// db.close()?; // the final fsync's outcome
    /// # Ok(())
    /// # }
    /// ```
    pub fn close(mut self) -> Result<()> {
        match self.wal.take() {
            Some(wal) => {
                let mut state = wal
                    .into_inner()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                state.writer.shutdown()
            }
            None => Ok(()),
        }
    }

    /// Folds the log into a new snapshot and starts an empty log, crash-safely
    /// (see docs/FORMAT.md, "Checkpoint protocol"). In snapshot mode, the
    /// same as [`save`](Self::save).
    pub fn checkpoint(&mut self) -> Result<()> {
        self.save()
    }

    /// Turns the handle into a [`SharedIndex`](crate::SharedIndex): `Send +
    /// Sync + Clone`, written through `&self` by many threads at once with
    /// group commit.
    pub fn into_shared(self) -> crate::SharedIndex<I> {
        crate::SharedIndex::new(self)
    }

    /// The index and, in WAL mode, the log writer, for the shared handle's
    /// group commit.
    pub(crate) fn shared_parts(&mut self) -> (&mut I, Option<&mut WalWriter>) {
        let writer = self.wal.as_mut().map(|wal| &mut wal_state(wal).writer);
        (&mut self.inner, writer)
    }

    fn sweep(&self) -> Result<()> {
        sweep_all(self.options.get_file_system().as_ref(), &self.config).map(drop)
    }

    fn checkpoint_locked(&self, state: &mut WalState) -> Result<()> {
        state.writer.check_poison()?;
        self.sweep()?;
        let next_seq = state.writer.next_seq();
        let installed = match install(&self.inner, &self.config, &self.options, next_seq) {
            Ok(installed) => installed,
            Err(InstallError::Before(e)) => return Err(e),
            Err(InstallError::After(e)) => {
                // The snapshot may be in place with the old log beside it;
                // the next load resolves that from the intent, but this
                // handle must not append to a log that may be obsolete.
                state.writer.poison(format!(
                    "checkpoint failed after its snapshot was installed: {e}"
                ));
                return Err(e);
            }
        };
        state.writer.replace_file(installed.file, &installed.header);
        state.snapshot = installed.snapshot;
        Ok(())
    }
}

/// A batch of operations to [`apply`](PersistedIndex::apply) together.
#[must_use = "a batch does nothing until committed"]
pub struct Batch<'a, I: Index + Persistable> {
    db: &'a mut PersistedIndex<I>,
    ops: Vec<Operation>,
}

impl<I: Index + Persistable> Batch<'_, I> {
    /// Adds an insert.
    pub fn insert(
        &mut self,
        id: VectorId,
        vector: Arc<[f32]>,
        metadata: Option<Metadata>,
    ) -> &mut Self {
        self.ops.push(Operation::Insert {
            id,
            vector,
            metadata,
        });
        self
    }

    /// Adds a delete.
    pub fn delete(&mut self, id: VectorId) -> &mut Self {
        self.ops.push(Operation::Delete { id });
        self
    }

    /// The number of operations collected.
    #[must_use]
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether no operation was collected.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Logs and applies the operations (see [`PersistedIndex::apply`]).
    pub fn commit(self) -> Result<()> {
        self.db.apply(self.ops)
    }
}

fn wal_state(wal: &mut Mutex<WalState>) -> &mut WalState {
    wal.get_mut()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn lock_state(wal: &Mutex<WalState>) -> MutexGuard<'_, WalState> {
    wal.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Handles an operation the index rejected after it was logged. A v2 log
/// keeps the frame (replay rejects it again, deterministically); a v1 log
/// drops it, because 1.0's replay fails on a rejected operation.
fn reject(
    writer: &mut WalWriter,
    mark: wal::writer::Mark,
    e: iqdb_types::IqdbError,
) -> PersistError {
    if writer.version() < 2
        && let Err(undo) = writer.rollback(mark)
    {
        return undo;
    }
    PersistError::from(e)
}

fn batch_error(applied: usize, e: iqdb_types::IqdbError) -> PersistError {
    PersistError::Batch {
        applied,
        source: Box::new(PersistError::from(e)),
    }
}

/// A batch on a v1 log, whose frames each hold one operation and whose
/// replay (1.0's too) goes on after a rejected one: log each operation just
/// before applying it and cut a rejected one off again, so the log holds
/// exactly the applied prefix; then sync once.
fn apply_v1<I: Index>(writer: &mut WalWriter, index: &mut I, ops: Vec<Operation>) -> Result<()> {
    for (i, op) in ops.into_iter().enumerate() {
        let mark = writer.append_batch(std::slice::from_ref(&op))?;
        if let Err(e) = op.apply_to(index) {
            writer.rollback(mark)?;
            writer.commit()?;
            return Err(batch_error(i, e));
        }
    }
    writer.commit()
}

/// Applies `ops` in order, stopping at the first rejection.
fn apply_in_order<I: Index>(
    index: &mut I,
    ops: Vec<Operation>,
) -> std::result::Result<(), (usize, iqdb_types::IqdbError)> {
    for (i, op) in ops.into_iter().enumerate() {
        op.apply_to(index).map_err(|e| (i, e))?;
    }
    Ok(())
}

/// How snapshots of this database are written.
fn write_settings(config: &PersistConfig, options: &Options, last_seq: u64) -> WriteSettings {
    WriteSettings {
        format: options.get_snapshot_format(),
        compression: config.compression,
        chunk_size: options.get_chunk_size(),
        threads: options.effective_threads(),
        last_seq,
    }
}

/// Removes temporaries crashed saves left beside the database's files.
fn sweep_all(fs: &dyn FileSystem, config: &PersistConfig) -> Result<Vec<std::path::PathBuf>> {
    let mut removed = replace::sweep_stale_temps(fs, &config.path)?;
    removed.extend(replace::sweep_stale_temps(fs, &config.wal_path())?);
    removed.extend(replace::sweep_stale_temps(fs, &config.checkpoint_path())?);
    Ok(removed)
}

/// The fingerprint of the snapshot at `path`, if one is there and its
/// header parses.
fn existing_fingerprint(fs: &dyn FileSystem, path: &Path) -> Option<SnapshotFingerprint> {
    snapshot::inspect_snapshot_file(fs, path, false, 1)
        .ok()
        .map(|meta| meta.fingerprint())
}

/// A snapshot installed with a fresh log beside it.
pub(crate) struct Installed {
    snapshot: SnapshotFingerprint,
    file: Arc<dyn FileHandle>,
    header: WalHeader,
}

/// Whether a failed install may have changed the files in place.
pub(crate) enum InstallError {
    /// Nothing was installed; the old snapshot and log stand.
    Before(PersistError),
    /// The snapshot may have been installed.
    After(PersistError),
}

impl From<InstallError> for PersistError {
    fn from(e: InstallError) -> Self {
        match e {
            InstallError::Before(e) | InstallError::After(e) => e,
        }
    }
}

/// The checkpoint protocol: snapshot to a temporary, durable intent,
/// rename, fresh log, intent removed (see [`checkpoint`]).
pub(crate) fn install<S: snapshot::Source>(
    index: &S,
    config: &PersistConfig,
    options: &Options,
    next_seq: u64,
) -> std::result::Result<Installed, InstallError> {
    let fs = options.get_file_system();
    let settings = write_settings(config, options, next_seq.saturating_sub(1));
    let (prepared, written) = replace::prepare(fs, &config.path, |file, temp| {
        index.write_to(file, temp, &settings)
    })
    .map_err(InstallError::Before)?;
    let wal_version = options.get_wal_format().version();
    let intent = checkpoint::Intent {
        snapshot: written.fingerprint,
        next_seq,
        wal_version,
    };
    let intent_path = config.checkpoint_path();
    // A failed intent write may leave the intent in place (renamed, then its
    // directory fsync failed): nothing more may be acknowledged on the old
    // log, or a load would take the intent for a completed checkpoint when
    // its snapshot is byte for byte the one in place, and drop the log.
    checkpoint::write(fs, &intent_path, &intent).map_err(InstallError::After)?;
    let after = |e| InstallError::After(e);
    prepared.install(&config.path).map_err(after)?;
    let (file, header) = wal::create_log(
        fs,
        &config.wal_path(),
        wal_version,
        next_seq,
        written.fingerprint,
    )
    .map_err(after)?;
    checkpoint::remove(fs.as_ref(), &intent_path).map_err(after)?;
    Ok(Installed {
        snapshot: written.fingerprint,
        file,
        header,
    })
}
