//! Settings added since 1.0.
//!
//! 1.0's [`PersistConfig`](crate::PersistConfig) is built with struct
//! literals, so it cannot grow fields; everything new is an [`Options`]
//! passed to [`PersistedIndex::open_with_options`](crate::PersistedIndex::open_with_options)
//! or [`PersistedIndex::load_with_options`](crate::PersistedIndex::load_with_options).

use std::sync::Arc;

use crate::format_policy::{self, FormatPolicy, OnDisk};
use crate::storage::{FileSystem, StdFileSystem};

/// Which snapshot format to write. Every format is always readable. Unless
/// set, it follows the [`FormatPolicy`].
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum SnapshotFormat {
    /// Format v2, what 1.0 writes and reads: pick it if you may roll back to
    /// 1.0. Loading verifies the checksum in a first pass over the file;
    /// LZ4 payloads are one block, held in memory while saving and loading.
    V2,
    /// Format v3: checksummed chunks, so saving and loading stream in
    /// bounded memory with compression on all cores, and every byte is
    /// verified before the index decodes it; the header has its own
    /// checksum and records the log sequence number. 1.0 cannot read it.
    #[default]
    V3,
}

impl SnapshotFormat {
    /// The version number written in the header.
    #[must_use]
    pub fn version(self) -> u32 {
        match self {
            Self::V2 => 2,
            Self::V3 => 3,
        }
    }
}

/// Which write-ahead-log format to write. Unless set, it follows the
/// [`FormatPolicy`]; a log that holds operations keeps its format until the
/// next checkpoint replaces it.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum WalFormat {
    /// WAL v1, what 1.0 writes and reads. Checkpoints stay crash-safe (a
    /// checkpoint intent file ties the log to its snapshot), but a batch is
    /// logged as separate frames, so a crash can keep a prefix of it.
    V1,
    /// WAL v2: a header that names the snapshot the log follows, sequence
    /// numbers, and atomic batch frames. 1.0 cannot read it.
    #[default]
    V2,
}

impl WalFormat {
    /// The version number written in the log header.
    #[must_use]
    pub fn version(self) -> u32 {
        match self {
            Self::V1 => 1,
            Self::V2 => 2,
        }
    }
}

/// How loading treats a damaged write-ahead log (in the spirit of RocksDB's
/// `WALRecoveryMode`). A damaged snapshot is always an error.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum RecoveryMode {
    /// Truncate a torn tail (what a crash leaves: a short or zero-filled last
    /// write) and go on; any other damage, such as a bad frame followed by
    /// valid ones, is an error naming the file and offset.
    #[default]
    TolerateTornTail,
    /// Any damage, even a torn tail, is an error; nothing is truncated.
    Strict,
    /// Keep the valid prefix of the log and drop everything from the first
    /// bad frame on, copying the dropped bytes to a backup file beside the
    /// log first. The load's [`RecoveryReport`](crate::RecoveryReport) says
    /// what was dropped. Use it only when you have decided to lose that data.
    Salvage,
}

/// Settings beyond [`PersistConfig`](crate::PersistConfig).
///
/// ```
/// use iqdb_persist::{Options, RecoveryMode, SnapshotFormat};
///
/// let options = Options::new()
///     .snapshot_format(SnapshotFormat::V3)
///     .recovery_mode(RecoveryMode::Strict);
/// assert_eq!(options.get_recovery_mode(), RecoveryMode::Strict);
///
/// // Files 1.0 can read, for deployments that may roll back.
/// let compat = Options::compat_1_0();
/// assert_eq!(compat.get_snapshot_format(), SnapshotFormat::V2);
/// ```
#[derive(Debug, Clone)]
pub struct Options {
    snapshot_format: Option<SnapshotFormat>,
    wal_format: Option<WalFormat>,
    format_policy: Option<FormatPolicy>,
    error_locations: bool,
    recovery_mode: RecoveryMode,
    overwrite_existing: bool,
    file_system: Arc<dyn FileSystem>,
    compression_threads: usize,
    chunk_size: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            snapshot_format: None,
            wal_format: None,
            format_policy: None,
            error_locations: false,
            recovery_mode: RecoveryMode::default(),
            overwrite_existing: false,
            file_system: StdFileSystem::shared(),
            compression_threads: 0,
            chunk_size: 1 << 20,
        }
    }
}

impl Options {
    /// The defaults: formats as the [`FormatPolicy`] in force says (the
    /// [`FORMAT_ENV`](crate::FORMAT_ENV) variable, else
    /// [`FormatPolicy::Keep`]: an existing database keeps its formats, a new
    /// one gets snapshot v3 and WAL v2), [`RecoveryMode::TolerateTornTail`],
    /// 1.0's error variants without locations, no overwriting, the real file
    /// system.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Settings whose files iqdb-persist 1.0 reads: snapshot v2 and WAL v1
    /// ([`FormatPolicy::Compat`]), for every database, new or existing.
    #[must_use]
    pub fn compat_1_0() -> Self {
        Self::default().format_policy(FormatPolicy::Compat)
    }

    /// The snapshot format to write, whatever the [`FormatPolicy`] says.
    #[must_use]
    pub fn snapshot_format(mut self, format: SnapshotFormat) -> Self {
        self.snapshot_format = Some(format);
        self
    }

    /// The log format to write, whatever the [`FormatPolicy`] says. A log
    /// that holds operations keeps its format until the next checkpoint.
    #[must_use]
    pub fn wal_format(mut self, format: WalFormat) -> Self {
        self.wal_format = Some(format);
        self
    }

    /// Which formats to write where [`snapshot_format`](Self::snapshot_format)
    /// and [`wal_format`](Self::wal_format) are not set. Without this, the
    /// [`FORMAT_ENV`](crate::FORMAT_ENV) variable decides, else
    /// [`FormatPolicy::Keep`].
    #[must_use]
    pub fn format_policy(mut self, policy: FormatPolicy) -> Self {
        self.format_policy = Some(policy);
        self
    }

    /// Whether errors from [`PersistedIndex`](crate::PersistedIndex) about a
    /// damaged file always come wrapped in
    /// [`PersistError::InFile`](crate::PersistError::InFile) with the file
    /// and byte offset (`true`), or, where 1.0 returned one of its variants,
    /// as that variant, bare, as 1.0 did (`false`, the default, so code
    /// written against 1.0 takes the same branches). Either way the location
    /// is logged as a `tracing` warning, and errors 1.0 never produced (a
    /// damaged log frame) always carry it.
    ///
    /// ```
    /// use iqdb_persist::Options;
    ///
    /// assert!(!Options::new().get_error_locations());
    /// assert!(Options::new().error_locations(true).get_error_locations());
    /// ```
    #[must_use]
    pub fn error_locations(mut self, locations: bool) -> Self {
        self.error_locations = locations;
        self
    }

    /// How loading treats a damaged log.
    #[must_use]
    pub fn recovery_mode(mut self, mode: RecoveryMode) -> Self {
        self.recovery_mode = mode;
        self
    }

    /// Let `open_with` replace a database whose log holds operations not yet
    /// in its snapshot (off by default: it refuses with
    /// [`PersistError::WouldOverwrite`](crate::PersistError::WouldOverwrite)).
    #[must_use]
    pub fn overwrite_existing(mut self, overwrite: bool) -> Self {
        self.overwrite_existing = overwrite;
        self
    }

    /// Perform all file I/O through `fs` (for fault injection and tests).
    #[must_use]
    pub fn file_system(mut self, fs: Arc<dyn FileSystem>) -> Self {
        self.file_system = fs;
        self
    }

    /// Worker threads compressing and decompressing v3 chunks; 0 (the
    /// default) uses the machine's available parallelism.
    #[must_use]
    pub fn compression_threads(mut self, threads: usize) -> Self {
        self.compression_threads = threads;
        self
    }

    /// Raw bytes per v3 chunk (clamped to 4 KiB ..= 16 MiB; default 1 MiB).
    #[must_use]
    pub fn chunk_size(mut self, bytes: usize) -> Self {
        self.chunk_size = bytes;
        self
    }

    /// The snapshot format written: the one set, else what the
    /// [`FormatPolicy`] gives a new database. (The options of an open
    /// [`PersistedIndex`](crate::PersistedIndex) say what its database is
    /// written in.)
    #[must_use]
    pub fn get_snapshot_format(&self) -> SnapshotFormat {
        self.for_new_database().0
    }

    /// The log format written: the one set, else what the [`FormatPolicy`]
    /// gives a new database.
    #[must_use]
    pub fn get_wal_format(&self) -> WalFormat {
        self.for_new_database().1
    }

    /// The format policy set with [`format_policy`](Self::format_policy).
    #[must_use]
    pub fn get_format_policy(&self) -> Option<FormatPolicy> {
        self.format_policy
    }

    /// Whether errors always carry their file and offset (see
    /// [`error_locations`](Self::error_locations)).
    #[must_use]
    pub fn get_error_locations(&self) -> bool {
        self.error_locations
    }

    /// The formats of a new database (an invalid environment setting counts
    /// as unset here; opening reports it).
    fn for_new_database(&self) -> (SnapshotFormat, WalFormat) {
        let policy = format_policy::policy(self).unwrap_or(self.format_policy.unwrap_or_default());
        format_policy::formats(
            policy,
            self.snapshot_format,
            self.wal_format,
            OnDisk::default(),
        )
    }

    pub(crate) fn explicit_snapshot_format(&self) -> Option<SnapshotFormat> {
        self.snapshot_format
    }

    pub(crate) fn explicit_wal_format(&self) -> Option<WalFormat> {
        self.wal_format
    }

    pub(crate) fn clear_explicit_formats(mut self) -> Self {
        self.snapshot_format = None;
        self.wal_format = None;
        self
    }

    /// These options with both formats fixed for the database at `config`,
    /// as its files are now (see [`FormatPolicy`]).
    pub(crate) fn resolved_for(self, config: &crate::PersistConfig) -> crate::Result<Self> {
        let on_disk = OnDisk::read(self.file_system.as_ref(), config);
        format_policy::resolve(self, on_disk)
    }

    /// The recovery mode.
    #[must_use]
    pub fn get_recovery_mode(&self) -> RecoveryMode {
        self.recovery_mode
    }

    /// Whether `open_with` may replace a database with pending log records.
    #[must_use]
    pub fn get_overwrite_existing(&self) -> bool {
        self.overwrite_existing
    }

    /// The file system all I/O goes through.
    #[must_use]
    pub fn get_file_system(&self) -> &Arc<dyn FileSystem> {
        &self.file_system
    }

    /// The number of compression threads to use (resolving 0).
    #[must_use]
    pub fn effective_threads(&self) -> usize {
        if self.compression_threads > 0 {
            self.compression_threads
        } else {
            std::thread::available_parallelism().map_or(1, usize::from)
        }
    }

    /// Raw bytes per v3 chunk.
    #[must_use]
    pub fn get_chunk_size(&self) -> usize {
        self.chunk_size
    }
}
