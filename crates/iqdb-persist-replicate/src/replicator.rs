//! The replicator: tails a WAL-mode database's files and ships them.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use iqdb_persist::SnapshotFingerprint;
use iqdb_persist::inspect::{self, LogHeader, RawFrame};
use iqdb_persist::storage::{FileSystem, StdFileSystem};
use object_store::PutMode;

use crate::error::{ReplicateError, Result};
use crate::format;
use crate::lease::{Identity, Lease};
use crate::manifest::{
    GENERATIONS_DIR, Generation, MANIFEST_KEY, Manifest, SegmentObject, SnapshotObject,
};
use crate::progress::{NoProgress, Progress};
use crate::remote::{Remote, update_mode};
use crate::{Replica, unix_ms};

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
        let lease = Lease::acquire(&remote, &me, config.lease_ttl, min_epoch)?;
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
        self.lease.check()?;
        if self.lease.renewal_due() {
            self.lease.renew(&self.remote)?;
        }
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
                // Merged away: no committed manifest lists them now.
                let paths = std::mem::take(&mut self.replaced)
                    .iter()
                    .map(|k| self.remote.path(k))
                    .collect();
                report.deleted_objects += self.remote.delete(paths)?;
            }
            self.prune(&mut report)?;
        }
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
            // A long upload must not outlive the lease.
            let mut renew = || {
                lease.check()?;
                if lease.renewal_due() {
                    lease.renew(remote)?;
                }
                Ok(())
            };
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
        &self,
        base_seq: u64,
        fingerprint: SnapshotFingerprint,
    ) -> Result<Option<Current>> {
        let Some(g) = self.manifest.generations.last() else {
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
    /// written.
    fn commit(&mut self) -> Result<()> {
        let epoch = self.lease.epoch();
        for _ in 0..5 {
            self.lease.check()?;
            let now = unix_ms();
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
                    if let Some(hook) = self.on_commit.as_mut() {
                        let info = CommitInfo {
                            generation: self
                                .manifest
                                .generations
                                .last()
                                .map_or_else(String::new, |g| g.id.clone()),
                            end_seq: self
                                .manifest
                                .generations
                                .last()
                                .map_or(0, Generation::end_seq),
                            at: Instant::now(),
                            epoch,
                        };
                        hook(&info);
                    }
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
                    if theirs.epoch > epoch {
                        return Err(ReplicateError::Fenced {
                            ours: epoch,
                            found: theirs.epoch,
                        });
                    }
                    // An older writer's (fenced by this write) or our own
                    // write whose answer was lost: ours wins.
                    self.manifest.next_ordinal =
                        self.manifest.next_ordinal.max(theirs.next_ordinal);
                    self.manifest_version = Some(version);
                }
                Err(e) => {
                    return Err(ReplicateError::store(
                        format!("writing the manifest {}", self.remote.path(MANIFEST_KEY)),
                        e,
                    ));
                }
            }
        }
        Err(ReplicateError::LeaseLost {
            reason: "the manifest kept changing under this replicator".into(),
        })
    }

    /// Drops generations retention no longer keeps: from the manifest
    /// first (committed), then their objects.
    fn prune(&mut self, report: &mut SyncReport) -> Result<()> {
        let keep = retained(&self.manifest, &self.config, unix_ms());
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
        for g in &dropped {
            let objects = self.remote.list(&Generation::dir(&g.id))?;
            report.deleted_objects += self
                .remote
                .delete(objects.into_iter().map(|m| m.location).collect())?;
        }
        Ok(())
    }

    /// Deletes objects under `generations/` that the committed manifest
    /// does not list and that a writer of this epoch or an older one wrote
    /// (leftovers of interrupted uploads and of fenced writers). Objects of
    /// newer epochs are never touched.
    fn sweep_orphans(&mut self) -> Result<u64> {
        if self.dirty {
            return Ok(0);
        }
        let epoch = self.lease.epoch();
        let referenced: HashSet<String> = self
            .manifest
            .generations
            .iter()
            .flat_map(|g| {
                std::iter::once(g.snapshot.key.clone())
                    .chain(g.segments.iter().map(|s| s.key.clone()))
            })
            .collect();
        let objects = self.remote.list(GENERATIONS_DIR)?;
        let orphans: Vec<_> = objects
            .into_iter()
            .filter(|m| {
                let key = self.remote.key_of(&m.location);
                !referenced.contains(&key) && object_epoch(&key).is_some_and(|e| e <= epoch)
            })
            .map(|m| m.location)
            .collect();
        // Only after a committed manifest proved we still hold the lease.
        self.lease.check()?;
        let deleted = self.remote.delete(orphans)?;
        self.swept = true;
        self.rounds_since_sweep = 0;
        Ok(deleted)
    }

    /// Rounds every `interval` until `stop` is set (or `until` passes),
    /// then ships what is left and releases the lease. Transient errors are
    /// logged and retried; losing the lease ends the run with an error.
    ///
    /// # Errors
    ///
    /// [`ReplicateError::LeaseLost`], [`ReplicateError::Fenced`], or a
    /// problem with the database that retrying cannot fix.
    pub fn run(
        mut self,
        stop: &AtomicBool,
        until: Option<Instant>,
        mut each: impl FnMut(&SyncReport),
    ) -> Result<RunSummary> {
        let mut summary = RunSummary {
            epoch: self.epoch(),
            ..RunSummary::default()
        };
        loop {
            let started = Instant::now();
            let last = stop.load(Ordering::SeqCst) || until.is_some_and(|u| started >= u);
            match self.sync() {
                Ok(report) => {
                    summary.rounds += 1;
                    summary.generations += u64::from(report.new_generation.is_some());
                    summary.segments += report.segments;
                    summary.frames += report.frames;
                    summary.bytes += report.bytes;
                    summary.commits += u64::from(report.committed);
                    summary.end_seq = report.end_seq;
                    each(&report);
                }
                Err(e) if e.is_lease_loss() => return Err(e),
                Err(e @ ReplicateError::Invalid { .. }) => return Err(e),
                Err(e) => {
                    summary.errors += 1;
                    tracing::warn!(error = %e, "replication round failed; retrying");
                    if last {
                        return Err(e);
                    }
                }
            }
            if last {
                self.release()?;
                return Ok(summary);
            }
            let mut wake = started + self.config.interval;
            wake = wake.min(self.lease.next_renewal());
            if let Some(u) = until {
                wake = wake.min(u);
            }
            while Instant::now() < wake && !stop.load(Ordering::SeqCst) {
                std::thread::sleep((wake - Instant::now()).min(Duration::from_millis(20)));
            }
        }
    }

    /// Runs [`run`](Self::run) on a thread of its own.
    #[must_use]
    pub fn spawn(self) -> ReplicatorHandle {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("iqdb-replicator".into())
            .spawn(move || self.run(&flag, None, |_| {}));
        ReplicatorHandle {
            stop,
            thread: Some(thread),
        }
    }

    /// Gives up the lease, so that another replicator can start at once.
    ///
    /// # Errors
    ///
    /// Store errors (the lease then simply expires).
    pub fn release(self) -> Result<()> {
        self.lease.release(&self.remote)
    }
}

/// A replicator running on its own thread.
#[derive(Debug)]
pub struct ReplicatorHandle {
    stop: Arc<AtomicBool>,
    thread: Option<std::io::Result<std::thread::JoinHandle<Result<RunSummary>>>>,
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

    /// Whether the replicator stopped by itself (an error).
    #[must_use]
    pub fn is_finished(&self) -> bool {
        matches!(&self.thread, Some(Ok(t)) if t.is_finished())
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

/// The manifest and its version, if there is one.
/// An object's version: ETag and version id.
pub(crate) type Version = (Option<String>, Option<String>);

pub(crate) fn read_manifest(remote: &Remote) -> Result<Option<(Manifest, Version)>> {
    let Some(fetched) = remote.get(MANIFEST_KEY)? else {
        return Ok(None);
    };
    let manifest = Manifest::from_bytes(remote.path(MANIFEST_KEY).as_ref(), &fetched.bytes)?;
    Ok(Some((manifest, (fetched.e_tag, fetched.version))))
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
