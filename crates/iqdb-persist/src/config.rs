//! The 1.0 configuration types, unchanged in shape.
//!
//! [`PersistConfig`] is built with struct literals by 1.0 users, so it keeps
//! exactly its four fields; settings added since live in
//! [`Options`](crate::Options).

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{PersistError, Result};

/// When appended write-ahead-log records are fsynced.
///
/// Snapshots (save, checkpoint, the base snapshot of `open_with`) are always
/// fsynced, whatever the policy: a crash must never leave a half-written
/// snapshot in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum FsyncPolicy {
    /// Every logged write is fsynced before the call returns: a write whose
    /// call returned `Ok` survives kill -9 and power loss.
    Always,
    /// Logged writes are fsynced by a background flusher within the given
    /// interval of being written, even if the writer goes quiet; dropping the
    /// handle syncs. A write is durable once that interval has passed, or
    /// once [`sync`](crate::PersistedIndex::sync) returns.
    Periodic(Duration),
    /// Logged writes are left to the OS until an explicit
    /// [`sync`](crate::PersistedIndex::sync), a checkpoint or drop.
    Never,
}

/// Payload compression for snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Compression {
    /// Store the payload as it is.
    None,
    /// zstd at `level` (1..=22). Needs the `zstd` cargo feature.
    Zstd {
        /// Compression level, 1 (fastest) to 22 (smallest).
        level: i32,
    },
    /// LZ4. Needs the `lz4` cargo feature.
    Lz4,
}

impl Compression {
    /// Checks that this scheme is compiled in and its parameters are valid.
    ///
    /// ```
    /// use iqdb_persist::Compression;
    ///
    /// assert!(Compression::None.validate().is_ok());
    /// # #[cfg(feature = "zstd")]
    /// assert!(Compression::Zstd { level: 0 }.validate().is_err());
    /// ```
    pub fn validate(self) -> Result<()> {
        match self {
            Self::None => Ok(()),
            Self::Zstd { level } => {
                if !cfg!(feature = "zstd") {
                    return Err(PersistError::Unsupported {
                        feature: "zstd compression",
                        available_in: "the `zstd` cargo feature of iqdb-persist",
                    });
                }
                if !(1..=22).contains(&level) {
                    return Err(PersistError::Compression {
                        reason: "zstd level must be in 1..=22",
                    });
                }
                Ok(())
            }
            Self::Lz4 => {
                if cfg!(feature = "lz4") {
                    Ok(())
                } else {
                    Err(PersistError::Unsupported {
                        feature: "LZ4 compression",
                        available_in: "the `lz4` cargo feature of iqdb-persist",
                    })
                }
            }
        }
    }
}

/// Where and how an index is persisted.
///
/// ```
/// use iqdb_persist::{Compression, FsyncPolicy, PersistConfig};
///
/// let mut cfg = PersistConfig::new("vectors.iqdb");
/// cfg.wal_enabled = true;
/// assert_eq!(cfg.fsync_policy, FsyncPolicy::Always);
/// assert_eq!(cfg.compression, Compression::None);
/// ```
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PersistConfig {
    /// The snapshot file. The write-ahead log lives beside it at
    /// `<path>.wal`, the writer lock at `<path>.lock`.
    pub path: PathBuf,
    /// Log every insert and delete to the write-ahead log before applying it,
    /// replay the log on load, and compact it on checkpoint.
    pub wal_enabled: bool,
    /// When logged writes are fsynced.
    pub fsync_policy: FsyncPolicy,
    /// Snapshot payload compression.
    pub compression: Compression,
}

impl PersistConfig {
    /// A config for `path` with the WAL off, `FsyncPolicy::Always` and no
    /// compression.
    #[must_use]
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            ..Self::default()
        }
    }

    /// The write-ahead log's path: `<path>.wal`.
    ///
    /// ```
    /// use iqdb_persist::PersistConfig;
    ///
    /// let cfg = PersistConfig::new("/data/db.iqdb");
    /// assert_eq!(cfg.wal_path(), std::path::Path::new("/data/db.iqdb.wal"));
    /// ```
    #[must_use]
    pub fn wal_path(&self) -> PathBuf {
        sibling(&self.path, "wal")
    }

    /// The writer lock file's path: `<path>.lock`.
    #[must_use]
    pub fn lock_path(&self) -> PathBuf {
        sibling(&self.path, "lock")
    }

    /// The checkpoint intent file's path: `<path>.checkpoint` (present only
    /// while a checkpoint is being installed; see docs/FORMAT.md).
    #[must_use]
    pub fn checkpoint_path(&self) -> PathBuf {
        sibling(&self.path, "checkpoint")
    }
}

impl Default for PersistConfig {
    /// An empty path (set it before use), the WAL off, `Always`, no
    /// compression.
    fn default() -> Self {
        Self {
            path: PathBuf::new(),
            wal_enabled: false,
            fsync_policy: FsyncPolicy::Always,
            compression: Compression::None,
        }
    }
}

/// `<path>.<suffix>`, appending to the full file name (so `db.iqdb` gives
/// `db.iqdb.wal`, as 1.0 names it).
pub(crate) fn sibling(path: &std::path::Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}
