//! The replicator: tails a WAL-mode database's files and ships them.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iqdb_persist::SnapshotFingerprint;
use iqdb_persist::inspect::{self, LogHeader, RawFrame};
use iqdb_persist::storage::{FileSystem, StdFileSystem};
use object_store::PutMode;

use crate::Replica;
use crate::clock::{Clock, SystemClock};
use crate::error::{ReplicateError, Result};
use crate::format;
use crate::lease::{Identity, Lease};
use crate::manifest::{
    GENERATIONS_DIR, Generation, MANIFEST_KEY, Manifest, SegmentObject, SnapshotObject,
};
use crate::progress::{NoProgress, Progress};
use crate::remote::{Remote, update_mode};

/// Settings of a [`Replicator`].
#[derive(Debug, Clone)]
pub struct ReplicatorConfig {
    /// The database's snapshot file (its log is `PATH.wal`).
    pub database: PathBuf,
    /// How often the log is polled and new frames shipped (default 1 s):
    /// a write is in the replica within about this long after it is
    /// durable locally, plus the upload time.
    pub interval: Duration,
    /// The lease's time to live (default 30 s); renewed every third of it.
    pub lease_ttl: Duration,
    /// Keep at least this many newest generations (default 2; at least 1).
    pub retain_generations: Option<usize>,
    /// Also keep every generation still needed to restore to any moment
    /// this far back.
    pub retain_for: Option<Duration>,
    /// Largest segment object (frames beyond are shipped in further
    /// segments; default 16 MiB).
    pub max_segment_bytes: u64,
    /// When the generation being shipped lists more segments than this
    /// (default 256), all but its newest 32 are merged into segments of up
    /// to `max_segment_bytes`, re-read from the local log, so the manifest
    /// stays small however long a generation lives. Restores to a time
    /// inside a merged segment then stop at its start.
    pub max_segments: usize,
    /// While catching up on a backlog, commit the manifest after this many
    /// segments (default 4), so that progress survives a restart and a
    /// long catch-up never holds everything back until its end.
    pub commit_every: usize,
    /// Objects that a commit stopped listing (merged-away segments, pruned
    /// generations) and leftovers are deleted only this long after (default
    /// 5 min), so that a restore that read the previous manifest can still
    /// download them.
    pub delete_grace: Duration,
    /// The clock the lease is measured with (the system's by default;
    /// tests move a [`ManualClock`](crate::ManualClock)).
    pub clock: Arc<dyn Clock>,
}

impl ReplicatorConfig {
    /// The defaults for the database at `database`.
    #[must_use]
    pub fn new(database: impl Into<PathBuf>) -> Self {
        Self {
            database: database.into(),
            interval: Duration::from_secs(1),
            lease_ttl: Duration::from_secs(30),
            retain_generations: Some(2),
            retain_for: None,
            max_segment_bytes: 16 << 20,
            max_segments: 256,
            commit_every: 4,
            delete_grace: Duration::from_secs(300),
            clock: Arc::new(SystemClock),
        }
    }

    fn wal_path(&self) -> PathBuf {
        iqdb_persist::PersistConfig::new(&self.database).wal_path()
    }
}

/// What one [`Replicator::sync`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncReport {
    /// A generation was started (its id), with its snapshot uploaded.
    pub new_generation: Option<String>,
    /// The generation continued from the manifest when the replicator
    /// started (its shipped log is a prefix of the local one).
    pub continued_generation: Option<String>,
    /// Segments uploaded.
    pub segments: u64,
    /// Frames shipped.
    pub frames: u64,
    /// Bytes uploaded (snapshot and segments).
    pub bytes: u64,
    /// Whether a manifest was committed.
    pub committed: bool,
    /// The sequence number after the last operation in the replica.
    pub end_seq: u64,
    /// Generations pruned by retention.
    pub pruned_generations: u64,
    /// Objects deleted (pruned generations and orphans).
    pub deleted_objects: u64,
    /// Segments merged into fewer, larger ones.
    pub merged_segments: u64,
    /// Set when the round failed (only in reports [`Replicator::run`]
    /// passes to its callback; the round is retried): why.
    pub error: Option<String>,
}

/// A committed manifest, as [`Replicator::on_commit`] reports it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CommitInfo {
    /// The newest generation.
    pub generation: String,
    /// Every operation below this sequence number is in the replica.
    pub end_seq: u64,
    /// When the manifest write returned.
    pub at: Instant,
    /// The writer's lease epoch.
    pub epoch: u64,
}

/// Totals of a [`Replicator::run`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunSummary {
    /// Rounds run.
    pub rounds: u64,
    /// Generations started.
    pub generations: u64,
    /// Segments uploaded.
    pub segments: u64,
    /// Frames shipped.
    pub frames: u64,
    /// Bytes uploaded.
    pub bytes: u64,
    /// Manifests committed.
    pub commits: u64,
    /// Rounds that failed with a transient error (retried).
    pub errors: u64,
    /// The sequence number after the last replicated operation.
    pub end_seq: u64,
    /// The lease epoch.
    pub epoch: u64,
}

/// The generation being shipped.
#[derive(Debug, Clone)]
struct Current {
    id: String,
    base_seq: u64,
    fingerprint: SnapshotFingerprint,
    /// Where to read on in the local log.
    offset: u64,
    /// The sequence number the next shipped frame must start with.
    next_seq: u64,
}

type CommitHook = Box<dyn FnMut(&CommitInfo) + Send>;

/// Ships a WAL-mode database to a replica continuously.
///
/// It holds the replica's lease from [`new`](Self::new) until
/// [`release`](Self::release) (or until the lease runs out, if the process
/// dies). Each [`sync`](Self::sync) reads the log's new intact frames,
/// uploads them as a segment, starts a new generation (uploading the new
/// snapshot) when the database checkpointed, commits the manifest, and
/// prunes what retention allows. [`run`](Self::run) and
/// [`spawn`](Self::spawn) call it every `interval`.
///
/// The database is only read: the replicator never takes its writer lock, so
/// the application writes as usual.
pub struct Replicator {
    remote: Remote,
    config: ReplicatorConfig,
    fs: Arc<dyn FileSystem>,
    me: Identity,
    lease: Lease,
    manifest: Manifest,
    manifest_version: Option<Version>,
    dirty: bool,
    current: Option<Current>,
    progress: Arc<dyn Progress>,
    on_commit: Option<CommitHook>,
    rounds_since_sweep: u64,
    swept: bool,
    /// Keys of segments merged away, deleted after the next commit.
    replaced: Vec<String>,
    /// Objects (or generation directories) no committed manifest lists,
    /// deleted once their grace period is over (clock's monotonic time).
    pending_deletes: Vec<(PendingDelete, Duration)>,
    status: Arc<Mutex<ReplicatorStatus>>,
}

/// Something to delete once its grace period is over.
#[derive(Debug, Clone)]
enum PendingDelete {
    /// One object (a merged-away segment).
    Key(String),
    /// Every object of a pruned generation.
    Generation(String),
}

/// What a running replicator is doing, for health checks and metrics
/// ([`Replicator::monitor`], [`ReplicatorHandle::status`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplicatorStatus {
    /// Whether it is running (false once [`run`](Replicator::run) ended).
    pub running: bool,
    /// The lease epoch.
    pub epoch: u64,
    /// Rounds run (successful or not).
    pub rounds: u64,
    /// Manifests committed.
    pub commits: u64,
    /// Rounds that failed with a transient error.
    pub errors: u64,
    /// Rounds failed in a row just now (0 when the last one worked).
    pub consecutive_errors: u64,
    /// The last transient error.
    pub last_error: Option<String>,
    /// Every operation below this sequence number is in the replica.
    pub end_seq: u64,
    /// When the last manifest was committed (Unix ms; 0 before).
    pub last_commit_ms: u64,
    /// Bytes uploaded.
    pub bytes: u64,
    /// Why it stopped, if it stopped by itself (lost its lease to another
    /// replicator, or a problem retrying cannot fix).
    pub fate: Option<String>,
}

/// Reads a replicator's [`ReplicatorStatus`] from any thread.
#[derive(Debug, Clone)]
pub struct StatusMonitor(Arc<Mutex<ReplicatorStatus>>);

impl StatusMonitor {
    /// The status now.
    #[must_use]
    pub fn get(&self) -> ReplicatorStatus {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn update(&self, f: impl FnOnce(&mut ReplicatorStatus)) {
        f(&mut self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
    }
}

impl std::fmt::Debug for Replicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicator")
            .field("remote", &self.remote)
            .field("config", &self.config)
            .field("epoch", &self.lease.epoch())
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

/// Reads a log's header (without reading its frames).
fn log_header(
    fs: &dyn FileSystem,
    wal: &Path,
) -> Result<Option<(u32, u64, Option<SnapshotFingerprint>)>> {
    let info = inspect::scan_log(fs, wal, |_| ControlFlow::Break(()))
        .map_err(|e| ReplicateError::persist(format!("reading {}", wal.display()), e))?;
    Ok(info.and_then(|i| i.version.map(|v| (v, i.base_seq, i.snapshot))))
}

impl Replicator {
    /// Takes the replica's lease (refused with
    /// [`ReplicateError::LeaseHeld`] while another replicator holds it) and
    /// fences older writers by committing the manifest with the new epoch.
    /// Nothing is shipped until the first [`sync`](Self::sync).
    ///
    /// # Errors
    ///
    /// A database that is not in WAL mode or has a v1 log, a held lease,
    /// store errors.
    pub fn new(replica: Replica, config: ReplicatorConfig) -> Result<Self> {
        let fs = StdFileSystem::shared();
        let wal = config.wal_path();
        match log_header(fs.as_ref(), &wal)? {
            None => {
                return Err(ReplicateError::invalid(format!(
                    "{}: no write-ahead log beside the snapshot; only WAL-mode databases (wal_enabled = true) can be replicated",
                    config.database.display()
                )));
            }
            Some((1, ..)) => {
                return Err(ReplicateError::invalid(format!(
                    "{}: the log is WAL v1 (iqdb-persist 1.0's format), which carries no sequence numbers; convert it to WAL v2 first (`iqdb-persist convert PATH --to latest`; 1.0 cannot open it afterwards)",
                    wal.display()
                )));
            }
            Some(_) => {}
        }
        if !config.database.exists() {
            return Err(ReplicateError::invalid(format!(
                "{}: no snapshot",
                config.database.display()
            )));
        }
        let remote = replica.remote;
        let me = Identity::current();
        let existing = read_manifest(&remote)?;
        let database = config.database.file_name().map_or_else(
            || "db.iqdb".to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        if let Some((m, _)) = &existing
            && !m.generations.is_empty()
            && m.database != database
        {
            // Retention would soon delete the other database's history.
            return Err(ReplicateError::invalid(format!(
                "{}: the replica holds database {:?}, not {database:?}; use another prefix for each database",
                remote.prefix(),
                m.database
            )));
        }
        let min_epoch = existing.as_ref().map_or(0, |(m, _)| m.epoch);
        let lease = Lease::acquire(
            &remote,
            &me,
            config.lease_ttl,
            min_epoch,
            config.clock.clone(),
        )?;
        // The manifest as it is now that we hold the lease: the previous
        // holder may have committed (merged, pruned) since the first read.
        let existing = match read_manifest(&remote) {
            Ok(m) => m,
            Err(e) => {
                let _ = lease.release(&remote);
                return Err(e);
            }
        };
        tracing::info!(
            replica = %remote.prefix(),
            epoch = lease.epoch(),
            owner = %me.owner,
            "took the replica lease"
        );
        let status = Arc::new(Mutex::new(ReplicatorStatus {
            running: true,
            epoch: lease.epoch(),
            ..ReplicatorStatus::default()
        }));
        let (manifest, manifest_version) = match existing {
            Some((m, v)) => (m, Some(v)),
            None => (Manifest::new(&database), None),
        };
        let mut this = Self {
            remote,
            config,
            fs,
            me,
            lease,
            manifest,
            manifest_version,
            dirty: true,
            current: None,
            progress: Arc::new(NoProgress),
            on_commit: None,
            rounds_since_sweep: 0,
            swept: false,
            replaced: Vec::new(),
            pending_deletes: Vec::new(),
            status,
        };
        this.manifest.database = database;
        // Fencing: the manifest now carries our epoch, so a writer that
        // still thinks it holds the lease fails its next conditional write.
        if let Err(e) = this.commit() {
            if !e.is_lease_loss() {
                let _ = this.release();
            }
            return Err(e);
        }
        Ok(this)
    }

    /// Reports upload progress (snapshots and segments) to `progress`.
    pub fn set_progress(&mut self, progress: Arc<dyn Progress>) {
        self.progress = progress;
    }

    /// Calls `hook` after every committed manifest (for lag measurements).
    pub fn on_commit(&mut self, hook: impl FnMut(&CommitInfo) + Send + 'static) {
        self.on_commit = Some(Box::new(hook));
    }

    /// A handle that reads this replicator's [`ReplicatorStatus`] from any
    /// thread (also after [`run`](Self::run) or [`spawn`](Self::spawn)
    /// took it).
    #[must_use]
    pub fn monitor(&self) -> StatusMonitor {
        StatusMonitor(self.status.clone())
    }

    /// Renews the lease when due; only a takeover is an error (a failed
    /// renewal is tried again later: uploads need no lease, commits check
    /// it themselves).
    fn keep_lease_tolerant(lease: &mut Lease, remote: &Remote) -> Result<()> {
        match lease.keep(remote) {
            Err(e) if e.is_lease_loss() => Err(e),
            Err(e) => {
                tracing::debug!(error = %e, "lease renewal failed; trying again later");
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }

    fn keep_lease(&mut self) -> Result<()> {
        Self::keep_lease_tolerant(&mut self.lease, &self.remote)
    }

    /// The keys the manifest as last committed lists.
    fn referenced(&self) -> HashSet<String> {
        self.manifest
            .generations
            .iter()
            .flat_map(|g| {
                std::iter::once(g.snapshot.key.clone())
                    .chain(g.segments.iter().map(|s| s.key.clone()))
            })
            .collect()
    }

    /// Deletes what is due of the pending deletions (never what the
    /// committed manifest lists again, e.g. after adopting another
    /// writer's manifest).
    fn delete_due(&mut self, report: &mut SyncReport, all: bool) -> Result<()> {
        if self.pending_deletes.is_empty() || self.dirty {
            return Ok(());
        }
        let now = self.config.clock.monotonic();
        let referenced = self.referenced();
        let live_generations: HashSet<&str> = self
            .manifest
            .generations
            .iter()
            .map(|g| g.id.as_str())
            .collect();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending_deletes)
            .into_iter()
            .partition(|(_, at)| all || *at <= now);
        self.pending_deletes = later;
        let mut paths = Vec::new();
        let mut generations = Vec::new();
        for (what, _) in due {
            match what {
                PendingDelete::Key(key) if !referenced.contains(&key) => {
                    paths.push(self.remote.path(&key));
                }
                PendingDelete::Generation(id) if !live_generations.contains(id.as_str()) => {
                    generations.push(id);
                }
                _ => {}
            }
        }
        report.deleted_objects += self.remote.delete(paths)?;
        // A dropped generation's objects are deleted page by page as the
        // listing streams in: memory stays bounded however many it has.
        let remote = &self.remote;
        for id in generations {
            remote.for_each_listed(&Generation::dir(&id), LIST_PAGE, &mut |objects| {
                report.deleted_objects +=
                    remote.delete(objects.into_iter().map(|m| m.location).collect())?;
                Ok(())
            })?;
        }
        Ok(())
    }

    /// The lease epoch this replicator writes with.
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.lease.epoch()
    }

    /// The manifest as last committed (or about to be).
    #[must_use]
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// One round: renew the lease if due, ship what is new, commit,
    /// prune.
    ///
    /// # Errors
    ///
    /// [`ReplicateError::LeaseLost`] and [`ReplicateError::Fenced`] mean
    /// this replicator must stop; other errors are worth retrying.
    pub fn sync(&mut self) -> Result<SyncReport> {
        self.keep_lease()?;
        let mut report = SyncReport::default();
        if self.current.is_none() {
            self.start_generation(&mut report)?;
        }
        self.ship(&mut report)?;
        self.compact(&mut report)?;
        if self.dirty {
            self.commit()?;
            report.committed = true;
            if !self.replaced.is_empty() {
                // Merged away: no committed manifest lists them now; a
                // restore that read the previous one may still need them.
                let due = self.config.clock.monotonic() + self.config.delete_grace;
                for key in std::mem::take(&mut self.replaced) {
                    self.pending_deletes.push((PendingDelete::Key(key), due));
                }
            }
            self.prune(&mut report)?;
        }
        self.delete_due(&mut report, false)?;
        self.rounds_since_sweep += 1;
        if !self.swept || self.rounds_since_sweep >= 600 {
            report.deleted_objects += self.sweep_orphans()?;
        }
        report.end_seq = self
            .manifest
            .generations
            .last()
            .map_or(0, Generation::end_seq);
        Ok(report)
    }

    /// Reads new frames and uploads them; starts a new generation when the
    /// log was replaced by a checkpoint.
    fn ship(&mut self, report: &mut SyncReport) -> Result<()> {
        let wal = self.config.wal_path();
        let mut uploaded = 0usize;
        loop {
            let Some(current) = self.current.clone() else {
                return Ok(());
            };
            let read = inspect::read_log_frames(
                self.fs.as_ref(),
                &wal,
                current.offset,
                self.config.max_segment_bytes,
            )
            .map_err(|e| ReplicateError::persist(format!("reading {}", wal.display()), e))?;
            let Some((header, frames, end)) = read else {
                // The log is being replaced; the next round looks again.
                return Ok(());
            };
            if !same_log(&header, &current)
                || frames
                    .first()
                    .is_some_and(|f| f.first_seq != current.next_seq)
            {
                // A checkpoint replaced the log (and the snapshot): every
                // operation of the old log is in the new snapshot.
                self.current = None;
                self.start_generation(report)?;
                continue;
            }
            if frames.is_empty() {
                return Ok(());
            }
            let read: u64 = frames.iter().map(|f| f.bytes.len() as u64).sum();
            self.upload_segment(&current, &frames, report)?;
            if let Some(c) = self.current.as_mut() {
                c.offset = end;
                c.next_seq = frames.last().map_or(c.next_seq, RawFrame::end_seq);
            }
            uploaded += 1;
            // A long catch-up renews the lease as it goes and commits every
            // few segments, so that its progress is kept whatever happens
            // next.
            self.keep_lease()?;
            if uploaded.is_multiple_of(self.config.commit_every.max(1))
                && read >= self.config.max_segment_bytes
            {
                self.commit()?;
                report.committed = true;
            }
            if read < self.config.max_segment_bytes {
                // Caught up with the log as it was; what was written
                // during the upload goes with the next round (one segment
                // per round keeps the manifest small).
                return Ok(());
            }
        }
    }

    fn upload_segment(
        &mut self,
        current: &Current,
        frames: &[RawFrame],
        report: &mut SyncReport,
    ) -> Result<()> {
        let epoch = self.lease.epoch();
        let (bytes, header) = format::encode_segment(frames);
        let generation = self
            .manifest
            .generations
            .iter_mut()
            .find(|g| g.id == current.id)
            .ok_or_else(|| {
                ReplicateError::invalid("internal: the current generation left the manifest")
            })?;
        let key = generation.segment_key(header.first_seq, header.end_seq, epoch);
        let len = bytes.len() as u64;
        self.progress.begin(
            &format!("segment {}..{}", header.first_seq, header.end_seq),
            len,
        );
        self.remote.put_data(&key, bytes)?;
        self.progress.advance(len);
        self.progress.end();
        generation.segments.push(SegmentObject {
            key,
            first_seq: header.first_seq,
            end_seq: header.end_seq,
            frames: header.frames,
            len,
            crc32: header.body_crc,
            shipped_at_ms: 0,
        });
        self.dirty = true;
        report.segments += 1;
        report.frames += header.frames;
        report.bytes += len;
        Ok(())
    }

    /// Captures the snapshot the log follows and starts (or continues) a
    /// generation with it.
    fn start_generation(&mut self, report: &mut SyncReport) -> Result<()> {
        let wal = self.config.wal_path();
        let path = self.config.database.clone();
        let mut last_problem = String::new();
        for attempt in 0..200u32 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(10 + u64::from(attempt.min(20)) * 5));
            }
            let Some((version, base_seq, Some(fingerprint))) = log_header(self.fs.as_ref(), &wal)?
            else {
                last_problem = "the log has no v2 header (it is being replaced?)".into();
                continue;
            };
            if version < 2 {
                return Err(ReplicateError::invalid(format!(
                    "{}: a checkpoint installed a WAL v1 log, which cannot be replicated",
                    wal.display()
                )));
            }
            let file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) => {
                    last_problem = format!("opening the snapshot: {e}");
                    continue;
                }
            };
            let info = match inspect::snapshot_info(self.fs.as_ref(), &path, false) {
                Ok(info) => info,
                Err(e) => {
                    last_problem = format!("reading the snapshot: {e}");
                    continue;
                }
            };
            if !same_file(&file, &path) {
                last_problem = "the snapshot was replaced while it was read".into();
                continue;
            }
            if info.fingerprint != fingerprint {
                last_problem = "the snapshot is not the one the log follows (a checkpoint is being installed, or was interrupted: open the database to finish it)".into();
                continue;
            }
            if log_header(self.fs.as_ref(), &wal)? != Some((version, base_seq, Some(fingerprint))) {
                last_problem = "the log was replaced while the snapshot was read".into();
                continue;
            }
            if let Some(current) = self.try_continue(base_seq, fingerprint)? {
                report.continued_generation = Some(current.id.clone());
                self.current = Some(current);
                return Ok(());
            }
            let epoch = self.lease.epoch();
            let ordinal = self.manifest.next_ordinal;
            let id = Generation::make_id(ordinal, base_seq, epoch);
            let key = format!("{}/snapshot.iqdb", Generation::dir(&id));
            let len = fingerprint.len;
            self.progress.begin(&format!("snapshot {id}"), len);
            let mut reader = std::io::BufReader::with_capacity(1 << 20, &file);
            let (remote, lease) = (&self.remote, &mut self.lease);
            // A long upload renews the lease as it goes; a failed renewal
            // does not abort it (only a takeover does): the commit after it
            // checks the lease.
            let mut renew = || Self::keep_lease_tolerant(lease, remote);
            let crc = remote.put_stream(&key, &mut reader, len, self.progress.as_ref(), &mut renew);
            self.progress.end();
            let crc = crc?;
            self.manifest.next_ordinal = ordinal + 1;
            self.manifest.generations.push(Generation {
                id: id.clone(),
                ordinal,
                epoch,
                base_seq,
                created_at_ms: 0,
                snapshot: SnapshotObject {
                    key,
                    len,
                    crc32: crc,
                    header_crc32: fingerprint.crc32,
                    version: info.header.version,
                },
                segments: Vec::new(),
            });
            self.dirty = true;
            report.new_generation = Some(id.clone());
            report.bytes += len;
            self.current = Some(Current {
                id,
                base_seq,
                fingerprint,
                offset: 0,
                next_seq: base_seq,
            });
            return Ok(());
        }
        Err(ReplicateError::invalid(format!(
            "{}: could not capture a snapshot consistent with its log: {last_problem}",
            path.display()
        )))
    }

    /// Continues the manifest's newest generation if it follows the same
    /// snapshot and its shipped log is byte for byte a prefix of ours.
    fn try_continue(
        &mut self,
        base_seq: u64,
        fingerprint: SnapshotFingerprint,
    ) -> Result<Option<Current>> {
        let Some(g) = self.manifest.generations.last().cloned() else {
            return Ok(None);
        };
        if g.base_seq != base_seq
            || g.snapshot.header_crc32 != fingerprint.crc32
            || g.snapshot.len != fingerprint.len
        {
            return Ok(None);
        }
        let wal = self.config.wal_path();
        let mut offset = 0u64;
        let mut pending: Vec<RawFrame> = Vec::new();
        for segment in &g.segments {
            let mut crc = crc32fast::Hasher::new();
            let mut frames = 0u64;
            let mut next = segment.first_seq;
            while next < segment.end_seq {
                if pending.is_empty() {
                    // Re-reading a long log takes a while: keep the lease.
                    self.keep_lease()?;
                    let read = inspect::read_log_frames(self.fs.as_ref(), &wal, offset, 8 << 20)
                        .map_err(|e| {
                            ReplicateError::persist(format!("reading {}", wal.display()), e)
                        })?;
                    let Some((header, frames_read, end)) = read else {
                        return Ok(None);
                    };
                    if header.base_seq != base_seq
                        || header.snapshot != Some(fingerprint)
                        || frames_read.is_empty()
                    {
                        return Ok(None);
                    }
                    offset = end;
                    pending = frames_read;
                    pending.reverse();
                }
                let Some(frame) = pending.pop() else {
                    return Ok(None);
                };
                if frame.first_seq != next {
                    return Ok(None);
                }
                crc.update(&frame.bytes);
                frames += 1;
                next = frame.end_seq();
            }
            if next != segment.end_seq
                || frames != segment.frames
                || crc.finalize() != segment.crc32
            {
                return Ok(None);
            }
        }
        // Frames read ahead are shipped again from their offset.
        let resume = pending.last().map_or(offset, |f| f.offset);
        Ok(Some(Current {
            id: g.id.clone(),
            base_seq,
            fingerprint,
            offset: resume,
            next_seq: g.end_seq(),
        }))
    }

    /// Merges the current generation's older segments when it has too
    /// many (see [`ReplicatorConfig::max_segments`]). The frames come from
    /// the local log and must match what was shipped (frame count and CRC
    /// per segment); if anything differs, nothing is merged.
    fn compact(&mut self, report: &mut SyncReport) -> Result<()> {
        let Some(current) = self.current.clone() else {
            return Ok(());
        };
        let max = self.config.max_segments.max(4);
        let Some(idx) = self
            .manifest
            .generations
            .iter()
            .position(|g| g.id == current.id)
        else {
            return Ok(());
        };
        let segments = self.manifest.generations[idx].segments.clone();
        if segments.len() <= max {
            return Ok(());
        }
        let mergeable = segments.len() - (max / 2).min(32);
        let mut groups: Vec<std::ops::Range<usize>> = Vec::new();
        let (mut start, mut bytes) = (0usize, 0u64);
        for (i, seg) in segments.iter().enumerate().take(mergeable) {
            if i > start && bytes + seg.len > self.config.max_segment_bytes {
                groups.push(start..i);
                start = i;
                bytes = 0;
            }
            bytes += seg.len;
        }
        groups.push(start..mergeable);
        groups.retain(|g| g.len() >= 2);
        if groups.is_empty() {
            return Ok(());
        }
        let mut cursor = LogCursor {
            fs: self.fs.clone(),
            wal: self.config.wal_path(),
            current: current.clone(),
            offset: 0,
            pending: std::collections::VecDeque::new(),
        };
        let epoch = self.lease.epoch();
        let mut merged: Vec<(std::ops::Range<usize>, SegmentObject)> = Vec::new();
        for range in groups {
            self.keep_lease()?;
            let mut frames = Vec::new();
            for seg in &segments[range.clone()] {
                let Some(seg_frames) = cursor.take(seg)? else {
                    tracing::warn!(
                        "the local log does not match the shipped segments; not merging"
                    );
                    return Ok(());
                };
                frames.extend(seg_frames);
            }
            let (bytes, header) = format::encode_segment(&frames);
            let key =
                self.manifest.generations[idx].segment_key(header.first_seq, header.end_seq, epoch);
            let len = bytes.len() as u64;
            self.remote.put_data(&key, bytes)?;
            report.bytes += len;
            let shipped_at_ms = segments[range.end - 1].shipped_at_ms;
            merged.push((
                range,
                SegmentObject {
                    key,
                    first_seq: header.first_seq,
                    end_seq: header.end_seq,
                    frames: header.frames,
                    len,
                    crc32: header.body_crc,
                    shipped_at_ms,
                },
            ));
        }
        let mut out = Vec::with_capacity(segments.len());
        let mut i = 0;
        let mut groups = merged.into_iter().peekable();
        while i < segments.len() {
            if let Some((range, _)) = groups.peek()
                && range.start == i
            {
                let (range, seg) = groups.next().unwrap_or_else(|| unreachable!());
                for old in &segments[range.clone()] {
                    if old.key != seg.key {
                        self.replaced.push(old.key.clone());
                    }
                }
                report.merged_segments += range.len() as u64;
                out.push(seg);
                i = range.end;
            } else {
                out.push(segments[i].clone());
                i += 1;
            }
        }
        self.manifest.generations[idx].segments = out;
        self.dirty = true;
        Ok(())
    }

    /// Writes the manifest, conditional on the version last read or
    /// written, with a lease checked (and renewed if due) just before.
    ///
    /// When the precondition fails, the manifest there now decides: a
    /// newer epoch fences this replicator; our own earlier write (whose
    /// answer was lost) is overwritten; an older writer's (a previous
    /// holder that committed between our read and our lease) is adopted —
    /// its generations replace ours, the generation being shipped is found
    /// again with `try_continue` — and then overwritten with our epoch.
    fn commit(&mut self) -> Result<()> {
        let epoch = self.lease.epoch();
        for _ in 0..5 {
            self.lease.keep(&self.remote)?;
            let now = self.config.clock.unix_ms();
            let mut manifest = self.manifest.clone();
            manifest.epoch = epoch;
            manifest.writer = self.me.owner.clone();
            manifest.updated_at_ms = now;
            for g in &mut manifest.generations {
                if g.created_at_ms == 0 {
                    g.created_at_ms = now;
                }
                for s in &mut g.segments {
                    if s.shipped_at_ms == 0 {
                        s.shipped_at_ms = now;
                    }
                }
            }
            let mode = match &self.manifest_version {
                None => PutMode::Create,
                Some((e_tag, version)) => update_mode(e_tag.clone(), version.clone()),
            };
            match self.remote.put(MANIFEST_KEY, manifest.to_bytes(), mode) {
                Ok(put) => {
                    self.manifest = manifest;
                    self.manifest_version = Some((put.e_tag, put.version));
                    self.dirty = false;
                    self.committed();
                    return Ok(());
                }
                Err(
                    object_store::Error::Precondition { .. }
                    | object_store::Error::AlreadyExists { .. },
                ) => {
                    // Someone wrote the manifest since we read it.
                    let Some((theirs, version)) = read_manifest(&self.remote)? else {
                        self.manifest_version = None;
                        continue;
                    };
                    if theirs.epoch > epoch
                        || (theirs.epoch == epoch && theirs.writer != self.me.owner)
                    {
                        return Err(ReplicateError::Fenced {
                            ours: epoch,
                            found: theirs.epoch,
                        });
                    }
                    if theirs.writer == self.me.owner {
                        // Our own write whose answer was lost (it holds a
                        // prefix of what we have now): ours wins.
                        self.manifest.next_ordinal =
                            self.manifest.next_ordinal.max(theirs.next_ordinal);
                        self.manifest_version = Some(version);
                        continue;
                    }
                    // An older writer's: adopt its state (what it lists
                    // exists; ours may list what it deleted).
                    tracing::info!(
                        writer = %theirs.writer,
                        epoch = theirs.epoch,
                        "the previous replicator committed meanwhile; adopting its manifest"
                    );
                    self.adopt(theirs, version);
                }
                Err(e) => {
                    return Err(ReplicateError::store(
                        format!("writing the manifest {}", self.remote.path(MANIFEST_KEY)),
                        e,
                    ));
                }
            }
        }
        Err(ReplicateError::store(
            format!("writing the manifest {}", self.remote.path(MANIFEST_KEY)),
            object_store::Error::Generic {
                store: "replica",
                source: "the manifest kept changing under this replicator".into(),
            },
        ))
    }

    /// Takes another (older) writer's committed manifest as ours: our
    /// uncommitted uploads become orphans (swept later), the generation
    /// being shipped is looked up again, and nothing it lists is deleted.
    fn adopt(&mut self, theirs: Manifest, version: Version) {
        let database = std::mem::take(&mut self.manifest.database);
        let next_ordinal = self.manifest.next_ordinal.max(theirs.next_ordinal);
        self.manifest = theirs;
        if self.manifest.database.is_empty() {
            self.manifest.database = database;
        }
        self.manifest.next_ordinal = next_ordinal;
        self.manifest_version = Some(version);
        self.current = None;
        self.replaced.clear();
        self.dirty = true;
    }

    /// Bookkeeping after a committed manifest.
    fn committed(&mut self) {
        let end_seq = self
            .manifest
            .generations
            .last()
            .map_or(0, Generation::end_seq);
        let now_ms = self.config.clock.unix_ms();
        StatusMonitor(self.status.clone()).update(|s| {
            s.commits += 1;
            s.end_seq = end_seq;
            s.last_commit_ms = now_ms;
        });
        if let Some(hook) = self.on_commit.as_mut() {
            let info = CommitInfo {
                generation: self
                    .manifest
                    .generations
                    .last()
                    .map_or_else(String::new, |g| g.id.clone()),
                end_seq,
                at: Instant::now(),
                epoch: self.lease.epoch(),
            };
            hook(&info);
        }
    }

    /// Drops generations retention no longer keeps: from the manifest
    /// first (committed), then, after the grace period, their objects.
    fn prune(&mut self, report: &mut SyncReport) -> Result<()> {
        let keep = retained(&self.manifest, &self.config, self.config.clock.unix_ms());
        if keep.len() == self.manifest.generations.len() {
            return Ok(());
        }
        let mut kept = Vec::new();
        let mut dropped = Vec::new();
        for (i, g) in std::mem::take(&mut self.manifest.generations)
            .into_iter()
            .enumerate()
        {
            if keep.contains(&i) {
                kept.push(g);
            } else {
                dropped.push(g);
            }
        }
        self.manifest.generations = kept;
        self.dirty = true;
        self.commit()?;
        report.pruned_generations += dropped.len() as u64;
        let due = self.config.clock.monotonic() + self.config.delete_grace;
        for g in dropped {
            // `delete_due` skips it if an adopted manifest lists it again.
            self.pending_deletes
                .push((PendingDelete::Generation(g.id), due));
        }
        Ok(())
    }

    /// Deletes objects under `generations/` that the committed manifest
    /// does not list, that a writer of this epoch or an older one wrote
    /// (leftovers of interrupted uploads and of fenced writers), and that
    /// are older than the grace period (a restore may still be reading
    /// an object a merge or prune just stopped listing). Objects of newer
    /// epochs are never touched.
    fn sweep_orphans(&mut self) -> Result<u64> {
        if self.dirty {
            return Ok(0);
        }
        let epoch = self.lease.epoch();
        let referenced = self.referenced();
        let grace_ms = u64::try_from(self.config.delete_grace.as_millis()).unwrap_or(u64::MAX);
        let now_ms = self.config.clock.unix_ms();
        // The listing streams in pages: memory stays bounded however many
        // objects the bucket holds.
        let (remote, lease) = (&self.remote, &mut self.lease);
        let mut deleted = 0;
        remote.for_each_listed(GENERATIONS_DIR, LIST_PAGE, &mut |objects| {
            let orphans: Vec<_> = objects
                .into_iter()
                .filter(|m| {
                    let key = remote.key_of(&m.location);
                    let modified = u64::try_from(m.last_modified.timestamp_millis()).unwrap_or(0);
                    !referenced.contains(&key)
                        && object_epoch(&key).is_some_and(|e| e <= epoch)
                        && modified.saturating_add(grace_ms) <= now_ms
                })
                .map(|m| m.location)
                .collect();
            if orphans.is_empty() {
                return Ok(());
            }
            // Only while the lease is ours.
            lease.keep(remote)?;
            deleted += remote.delete(orphans)?;
            Ok(())
        })?;
        self.swept = true;
        self.rounds_since_sweep = 0;
        Ok(deleted)
    }

    /// Rounds every `interval` until `stop` is set (or `until` passes),
    /// then ships what is left and releases the lease.
    ///
    /// It rides out outages: a round that fails for any reason retrying can
    /// fix (store errors, timeouts, a lease whose renewal failed or ran
    /// out while the store did not answer) is logged and retried with
    /// backoff (up to 30 s between rounds), and the lease is taken again
    /// when nobody else took it. Only a takeover by another replicator
    /// ([`ReplicateError::LeaseLost`], [`ReplicateError::Fenced`]) or a
    /// database that cannot be replicated ends the run.
    ///
    /// # Errors
    ///
    /// [`ReplicateError::LeaseLost`], [`ReplicateError::Fenced`], a
    /// problem with the database that retrying cannot fix, or the error of
    /// the last round when it failed.
    pub fn run(
        mut self,
        stop: &AtomicBool,
        until: Option<Instant>,
        mut each: impl FnMut(&SyncReport),
    ) -> Result<RunSummary> {
        let monitor = self.monitor();
        let result = self.run_inner(stop, until, &mut each);
        monitor.update(|s| {
            s.running = false;
            if let Err(e) = &result {
                s.fate = Some(e.to_string());
            }
        });
        result
    }

    fn run_inner(
        &mut self,
        stop: &AtomicBool,
        until: Option<Instant>,
        each: &mut dyn FnMut(&SyncReport),
    ) -> Result<RunSummary> {
        let monitor = self.monitor();
        let mut summary = RunSummary {
            epoch: self.epoch(),
            ..RunSummary::default()
        };
        let mut failures = 0u32;
        loop {
            let started = Instant::now();
            let last = stop.load(Ordering::SeqCst) || until.is_some_and(|u| started >= u);
            match self.sync() {
                Ok(report) => {
                    failures = 0;
                    summary.rounds += 1;
                    summary.generations += u64::from(report.new_generation.is_some());
                    summary.segments += report.segments;
                    summary.frames += report.frames;
                    summary.bytes += report.bytes;
                    summary.commits += u64::from(report.committed);
                    summary.end_seq = report.end_seq;
                    monitor.update(|s| {
                        s.rounds += 1;
                        s.consecutive_errors = 0;
                        s.bytes += report.bytes;
                        s.end_seq = report.end_seq;
                    });
                    each(&report);
                }
                Err(e) if e.is_lease_loss() => {
                    tracing::error!(error = %e, "replication stopped: another replicator took over");
                    return Err(e);
                }
                Err(e @ ReplicateError::Invalid { .. }) => {
                    tracing::error!(error = %e, "replication stopped");
                    return Err(e);
                }
                Err(e) => {
                    summary.errors += 1;
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %e, failures, "replication round failed; retrying");
                    monitor.update(|s| {
                        s.rounds += 1;
                        s.errors += 1;
                        s.consecutive_errors += 1;
                        s.last_error = Some(e.to_string());
                    });
                    if last {
                        return Err(e);
                    }
                    each(&SyncReport {
                        error: Some(e.to_string()),
                        ..SyncReport::default()
                    });
                }
            }
            if last {
                let mut report = SyncReport::default();
                let _ = self.delete_due(&mut report, true);
                self.lease_release()?;
                return Ok(summary);
            }
            // Back off while the store fails: 2, 4, 8 ... intervals, at
            // most 30 s (and never past a lease renewal when all is well).
            let mut pause = self.config.interval;
            if failures > 0 {
                pause = (pause * 2u32.saturating_pow(failures.min(16)))
                    .min(Duration::from_secs(30).max(self.config.interval));
            } else {
                pause = pause.min(self.lease.until_renewal());
            }
            let mut wake = started + pause;
            if let Some(u) = until {
                wake = wake.min(u);
            }
            while Instant::now() < wake && !stop.load(Ordering::SeqCst) {
                std::thread::sleep((wake - Instant::now()).min(Duration::from_millis(20)));
            }
        }
    }

    /// Runs [`run`](Self::run) on a thread of its own. Its fate is not
    /// silent: [`ReplicatorHandle::status`] says whether it still runs and
    /// why it stopped, [`ReplicatorHandle::is_finished`] and
    /// [`ReplicatorHandle::stop`] return the error that ended it, and the
    /// error is logged (`tracing`, level error).
    #[must_use]
    pub fn spawn(self) -> ReplicatorHandle {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let monitor = self.monitor();
        let thread = std::thread::Builder::new()
            .name("iqdb-replicator".into())
            .spawn(move || self.run(&flag, None, |_| {}));
        if let Err(e) = &thread {
            monitor.update(|s| {
                s.running = false;
                s.fate = Some(format!("the replicator thread could not start: {e}"));
            });
        }
        ReplicatorHandle {
            stop,
            thread: Some(thread),
            monitor,
        }
    }

    fn lease_release(&mut self) -> Result<()> {
        self.lease.release_in_place(&self.remote)
    }

    /// Gives up the lease, so that another replicator can start at once.
    ///
    /// # Errors
    ///
    /// Store errors (the lease then simply expires).
    pub fn release(mut self) -> Result<()> {
        let mut report = SyncReport::default();
        let _ = self.delete_due(&mut report, true);
        self.lease.release_in_place(&self.remote)
    }
}

/// A replicator running on its own thread.
#[derive(Debug)]
pub struct ReplicatorHandle {
    stop: Arc<AtomicBool>,
    thread: Option<std::io::Result<std::thread::JoinHandle<Result<RunSummary>>>>,
    monitor: StatusMonitor,
}

impl ReplicatorHandle {
    /// Ships what is left, releases the lease, and returns the totals.
    ///
    /// # Errors
    ///
    /// The error that ended the run.
    pub fn stop(mut self) -> Result<RunSummary> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take() {
            Some(Ok(thread)) => thread
                .join()
                .unwrap_or_else(|_| Err(ReplicateError::invalid("the replicator thread panicked"))),
            Some(Err(e)) => Err(ReplicateError::io("<replicator thread>", e)),
            None => Ok(RunSummary::default()),
        }
    }

    /// Whether the replicator stopped by itself (an error: see
    /// [`status`](Self::status) for which, or [`stop`](Self::stop)).
    #[must_use]
    pub fn is_finished(&self) -> bool {
        match &self.thread {
            Some(Ok(t)) => t.is_finished(),
            Some(Err(_)) => true,
            None => true,
        }
    }

    /// What the replicator is doing, or why it stopped.
    #[must_use]
    pub fn status(&self) -> ReplicatorStatus {
        self.monitor.get()
    }

    /// A handle reading the status from elsewhere.
    #[must_use]
    pub fn monitor(&self) -> StatusMonitor {
        self.monitor.clone()
    }
}

impl Drop for ReplicatorHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(Ok(thread)) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads the local log's frames in order, segment by segment.
struct LogCursor {
    fs: Arc<dyn FileSystem>,
    wal: PathBuf,
    current: Current,
    offset: u64,
    pending: std::collections::VecDeque<RawFrame>,
}

impl LogCursor {
    /// The frames of a shipped segment, if the local log still holds them
    /// exactly as shipped.
    fn take(&mut self, seg: &SegmentObject) -> Result<Option<Vec<RawFrame>>> {
        let mut frames = Vec::new();
        let mut crc = crc32fast::Hasher::new();
        let mut next = seg.first_seq;
        while next < seg.end_seq {
            if self.pending.is_empty() {
                let read =
                    inspect::read_log_frames(self.fs.as_ref(), &self.wal, self.offset, 8 << 20)
                        .map_err(|e| {
                            ReplicateError::persist(format!("reading {}", self.wal.display()), e)
                        })?;
                let Some((header, read, end)) = read else {
                    return Ok(None);
                };
                if !same_log(&header, &self.current) || read.is_empty() {
                    return Ok(None);
                }
                self.offset = end;
                self.pending.extend(read);
            }
            let Some(frame) = self.pending.pop_front() else {
                return Ok(None);
            };
            if frame.first_seq < seg.first_seq {
                continue;
            }
            if frame.first_seq != next {
                return Ok(None);
            }
            crc.update(&frame.bytes);
            next = frame.end_seq();
            frames.push(frame);
        }
        let ok =
            next == seg.end_seq && frames.len() as u64 == seg.frames && crc.finalize() == seg.crc32;
        Ok(ok.then_some(frames))
    }
}

fn same_log(header: &LogHeader, current: &Current) -> bool {
    header.base_seq == current.base_seq && header.snapshot == Some(current.fingerprint)
}

/// Whether the open `file` is the file at `path` now.
fn same_file(file: &std::fs::File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (file, path);
        true
    }
}

/// An object's version: ETag and version id.
pub(crate) type Version = (Option<String>, Option<String>);

/// Bytes a manifest may have (a generation of 256 segments takes about
/// 100 KB; anything near this is not a manifest we wrote).
pub(crate) const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// Objects handled per page of a listing (the orphan sweep, deleting a
/// dropped generation, [`Replica::unlisted`](crate::Replica::unlisted)):
/// what a listing holds in memory at once.
pub(crate) const LIST_PAGE: usize = 1000;

/// The manifest and its version, if there is one.
/// A manifest that does not verify is read twice more before it counts as
/// damaged (a body mangled in transit reads fine the next time).
pub(crate) fn read_manifest(remote: &Remote) -> Result<Option<(Manifest, Version)>> {
    let mut attempt = 0;
    loop {
        let Some(fetched) = remote.get_capped(MANIFEST_KEY, MAX_MANIFEST_BYTES)? else {
            return Ok(None);
        };
        match Manifest::from_bytes(remote.path(MANIFEST_KEY).as_ref(), &fetched.bytes) {
            Ok(manifest) => return Ok(Some((manifest, (fetched.e_tag, fetched.version)))),
            Err(e) if attempt < 2 => {
                attempt += 1;
                tracing::debug!(error = %e, "the manifest does not verify; reading it again");
            }
            Err(e) => return Err(e),
        }
    }
}

/// The epoch in an object key written by a replicator: `-eNNNNNNNN` in its
/// segment name or its generation's id.
pub(crate) fn object_epoch(key: &str) -> Option<u64> {
    let rest = key.strip_prefix(GENERATIONS_DIR)?.strip_prefix('/')?;
    let (gen_id, name) = rest.split_once('/')?;
    let tail = |s: &str| -> Option<u64> { s.rsplit_once("-e")?.1.parse().ok() };
    if let Some(seg) = name
        .strip_prefix("wal/")
        .and_then(|n| n.strip_suffix(".seg"))
    {
        return tail(seg);
    }
    tail(gen_id)
}

/// Indexes of the generations retention keeps.
pub(crate) fn retained(manifest: &Manifest, config: &ReplicatorConfig, now_ms: u64) -> Vec<usize> {
    let n = manifest.generations.len();
    if n == 0 {
        return Vec::new();
    }
    if config.retain_generations.is_none() && config.retain_for.is_none() {
        return (0..n).collect();
    }
    let count = config.retain_generations.map_or(1, |k| k.max(1));
    (0..n)
        .filter(|&i| {
            if i + count >= n {
                return true;
            }
            config.retain_for.is_some_and(|window| {
                // Needed until the next generation's snapshot replaced it,
                // and for `window` after that.
                let superseded = manifest.generations[i + 1].created_at_ms;
                let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
                superseded.saturating_add(window_ms) >= now_ms
            })
        })
        .collect()
}
