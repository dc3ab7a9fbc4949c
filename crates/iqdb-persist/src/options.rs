//! Settings added since 1.0.
//!
//! 1.0's [`PersistConfig`](crate::PersistConfig) is built with struct
//! literals, so it cannot grow fields; everything new is an [`Options`]
//! passed to [`PersistedIndex::open_with_options`](crate::PersistedIndex::open_with_options)
//! or [`PersistedIndex::load_with_options`](crate::PersistedIndex::load_with_options).

use std::sync::Arc;

use crate::storage::{FileSystem, StdFileSystem};

/// Which snapshot format to write. Every format is always readable.
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

/// Which write-ahead-log format to write for a new log. An existing log
/// keeps its format until the next checkpoint replaces it.
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
    snapshot_format: SnapshotFormat,
    wal_format: WalFormat,
    recovery_mode: RecoveryMode,
    overwrite_existing: bool,
    file_system: Arc<dyn FileSystem>,
    compression_threads: usize,
    chunk_size: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            snapshot_format: SnapshotFormat::default(),
            wal_format: WalFormat::default(),
            recovery_mode: RecoveryMode::default(),
            overwrite_existing: false,
            file_system: StdFileSystem::shared(),
            compression_threads: 0,
            chunk_size: 1 << 20,
        }
    }
}

impl Options {
    /// The defaults: snapshot v3, WAL v2, [`RecoveryMode::TolerateTornTail`],
    /// no overwriting, the real file system.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Settings whose files iqdb-persist 1.0 reads: snapshot v2 and WAL v1.
    #[must_use]
    pub fn compat_1_0() -> Self {
        Self::default()
            .snapshot_format(SnapshotFormat::V2)
            .wal_format(WalFormat::V1)
    }

    /// The snapshot format to write.
    #[must_use]
    pub fn snapshot_format(mut self, format: SnapshotFormat) -> Self {
        self.snapshot_format = format;
        self
    }

    /// The format of newly created write-ahead logs.
    #[must_use]
    pub fn wal_format(mut self, format: WalFormat) -> Self {
        self.wal_format = format;
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

    /// The snapshot format written.
    #[must_use]
    pub fn get_snapshot_format(&self) -> SnapshotFormat {
        self.snapshot_format
    }

    /// The format of new logs.
    #[must_use]
    pub fn get_wal_format(&self) -> WalFormat {
        self.wal_format
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
