//! The crate's error type.
//!
//! The variants up to `Unsupported` are exactly 1.0's (users build them with
//! struct literals, so their fields are frozen). Variants added since name the
//! file, and where it applies the byte offset, so an operator can find the
//! problem.
//!
//! Where 1.0 returned one of its variants, [`PersistedIndex`](crate::PersistedIndex)
//! returns that same variant, bare, so code that matches on it (say
//! `PersistError::ChecksumMismatch { .. } => restore_backup()`) keeps taking
//! the same branch. The file and offset of the damage still reach whoever
//! wants them: they are logged (a `tracing` warning with `path` and
//! `offset`), every [`inspect`](crate::inspect) function (and so the
//! command-line tool) reports them, and
//! [`Options::error_locations`](crate::Options::error_locations) returns them
//! in a [`PersistError::InFile`] wrapper. Errors 1.0 never produced (a
//! damaged log frame, which 1.0 skipped silently) always carry their
//! location.

use std::fmt;
use std::path::{Path, PathBuf};

use error_forge::ForgeError;
use iqdb_types::{DistanceMetric, IqdbError};

/// An error from saving, loading or logging a persisted index.
///
/// `#[non_exhaustive]`: match with a wildcard arm. To look through the
/// location wrapper [`InFile`](PersistError::InFile) (and a failed batch's
/// [`Batch`](PersistError::Batch)) at the underlying cause, use
/// [`PersistError::root_cause`].
#[non_exhaustive]
#[derive(Debug)]
pub enum PersistError {
    /// An OS-level I/O failure on `path`.
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file does not start with the expected magic bytes.
    BadMagic {
        /// The first eight bytes found.
        found: [u8; 8],
    },
    /// The file's format version is not one this build reads.
    UnsupportedVersion {
        /// The version in the file.
        found: u32,
        /// The newest version this build supports.
        supported: u32,
    },
    /// A CRC-32 over stored bytes did not match the recorded value.
    ChecksumMismatch {
        /// The checksum recorded in the file.
        expected: u32,
        /// The checksum computed over the bytes read.
        computed: u32,
    },
    /// The file ended inside its header.
    TruncatedHeader {
        /// Bytes the header field needed.
        needed: usize,
        /// Bytes that were available.
        found: usize,
    },
    /// The file ended inside its payload.
    TruncatedPayload {
        /// Bytes the payload needed.
        needed: u64,
        /// Bytes that were available.
        found: u64,
    },
    /// A metric tag byte that maps to no known metric.
    InvalidMetric {
        /// The tag found.
        tag: u8,
    },
    /// A metric with no on-disk tag in this format.
    UnsupportedMetric {
        /// The metric.
        metric: DistanceMetric,
    },
    /// The file holds a different index type than the caller asked for.
    InvalidIndexType {
        /// The index type recorded in the file.
        found: String,
        /// The caller's `Persistable::INDEX_TYPE`.
        expected: &'static str,
    },
    /// Bytes that decode to a structurally invalid payload or record.
    InvalidPayload {
        /// What was wrong.
        reason: &'static str,
    },
    /// A compression or decompression step failed.
    Compression {
        /// What failed.
        reason: &'static str,
    },
    /// The index rejected an operation (from `Index::new`, `insert`, `delete`,
    /// or a `Persistable` implementation).
    IndexBuild(IqdbError),
    /// A feature that is not available in this build.
    Unsupported {
        /// The feature asked for.
        feature: &'static str,
        /// Where it is available (for example a cargo feature).
        available_in: &'static str,
    },
    /// A problem found in a file, with where it was found. `source` is the
    /// specific cause (a checksum mismatch, a truncation, a bad magic, ...).
    InFile {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset in the file where the problem starts.
        offset: u64,
        /// The specific problem.
        source: Box<PersistError>,
    },
    /// Another handle, in this process or another, holds the database's
    /// writer lock.
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// `open_with` would discard acknowledged writes: the write-ahead log
    /// beside the snapshot holds operations that are not in the snapshot.
    /// Load the database instead, or ask for the overwrite explicitly with
    /// [`Options::overwrite_existing`](crate::Options::overwrite_existing).
    WouldOverwrite {
        /// The write-ahead log holding the operations.
        path: PathBuf,
        /// How many logged operations would be lost.
        pending_operations: u64,
    },
    /// A write-ahead log that does not belong to the snapshot beside it.
    WalMismatch {
        /// The log file.
        path: PathBuf,
        /// What does not match.
        reason: &'static str,
    },
    /// The handle refuses further writes because an earlier write or fsync
    /// failed: the kernel may have dropped dirty pages, so what is durable is
    /// unknown until the database is loaded again.
    Poisoned {
        /// The file whose write or sync failed.
        path: PathBuf,
        /// The original failure.
        reason: String,
    },
    /// A damaged write-ahead-log frame (wrapped in
    /// [`InFile`](PersistError::InFile) with the log's path and the frame's
    /// offset). `torn` is true for damage a crash leaves, reported only in
    /// [`RecoveryMode::Strict`](crate::RecoveryMode::Strict).
    CorruptFrame {
        /// What is wrong with the frame (for example a checksum mismatch).
        reason: &'static str,
        /// Why the damage is judged torn or corrupt.
        verdict: &'static str,
        /// Whether the damage is a torn tail (what a crash leaves).
        torn: bool,
        /// Valid frames found after the damaged one.
        valid_frames_after: u64,
    },
    /// A batch stopped at its first rejected operation. The operations before
    /// it are applied and logged; the rest are not.
    Batch {
        /// How many operations of the batch were applied (and are durable).
        applied: usize,
        /// Why the next operation was rejected.
        source: Box<PersistError>,
    },
    /// A setting (such as the
    /// [`IQDB_PERSIST_FORMAT`](crate::FORMAT_ENV) environment variable) has a
    /// value this build does not understand.
    InvalidSetting {
        /// The setting's name.
        name: &'static str,
        /// The value found.
        value: String,
        /// The values accepted.
        expected: &'static str,
    },
}

impl PersistError {
    /// The underlying cause, looking through the [`InFile`](Self::InFile)
    /// and [`Batch`](Self::Batch) wrappers.
    ///
    /// ```
    /// use iqdb_persist::PersistError;
    ///
    /// let err = PersistError::InFile {
    ///     path: "db.iqdb".into(),
    ///     offset: 41,
    ///     source: Box::new(PersistError::ChecksumMismatch { expected: 1, computed: 2 }),
    /// };
    /// assert!(matches!(err.root_cause(), PersistError::ChecksumMismatch { .. }));
    /// assert_eq!(err.to_string(), "db.iqdb: at byte 41: checksum mismatch: expected 0x00000001, computed 0x00000002");
    /// ```
    #[must_use]
    pub fn root_cause(&self) -> &PersistError {
        match self {
            Self::InFile { source, .. } | Self::Batch { source, .. } => source.root_cause(),
            other => other,
        }
    }

    /// The file this error is about, when it names one.
    #[must_use]
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::Io { path, .. }
            | Self::InFile { path, .. }
            | Self::Locked { path }
            | Self::WouldOverwrite { path, .. }
            | Self::WalMismatch { path, .. }
            | Self::Poisoned { path, .. } => Some(path),
            Self::Batch { source, .. } => source.path(),
            _ => None,
        }
    }

    /// The byte offset in [`path`](Self::path) where the problem starts, when
    /// known.
    #[must_use]
    pub fn offset(&self) -> Option<u64> {
        match self {
            Self::InFile { offset, .. } => Some(*offset),
            Self::Batch { source, .. } => source.offset(),
            _ => None,
        }
    }

    /// True when the error means stored bytes are damaged or not an iqdb file
    /// (as opposed to an I/O failure, a lock, or a rejected operation).
    #[must_use]
    pub fn is_corruption(&self) -> bool {
        matches!(
            self.root_cause(),
            Self::BadMagic { .. }
                | Self::UnsupportedVersion { .. }
                | Self::ChecksumMismatch { .. }
                | Self::TruncatedHeader { .. }
                | Self::TruncatedPayload { .. }
                | Self::InvalidMetric { .. }
                | Self::InvalidPayload { .. }
                | Self::Compression { .. }
                | Self::WalMismatch { .. }
                | Self::CorruptFrame { .. }
        )
    }

    /// Whether this is one of the variants 1.0 had (and so may be matched
    /// by code written against 1.0).
    fn is_1_0_variant(&self) -> bool {
        matches!(
            self,
            Self::Io { .. }
                | Self::BadMagic { .. }
                | Self::UnsupportedVersion { .. }
                | Self::ChecksumMismatch { .. }
                | Self::TruncatedHeader { .. }
                | Self::TruncatedPayload { .. }
                | Self::InvalidMetric { .. }
                | Self::UnsupportedMetric { .. }
                | Self::InvalidIndexType { .. }
                | Self::InvalidPayload { .. }
                | Self::Compression { .. }
                | Self::IndexBuild(_)
                | Self::Unsupported { .. }
        )
    }

    /// The error as a caller of [`PersistedIndex`](crate::PersistedIndex)
    /// gets it: with `locations` (see
    /// [`Options::error_locations`](crate::Options::error_locations)) as it
    /// is; otherwise an [`InFile`](Self::InFile) wrapper around one of 1.0's
    /// variants is removed (after logging the location), so the caller sees
    /// the variant 1.0 returned.
    pub(crate) fn for_caller(self, locations: bool) -> Self {
        match self {
            Self::InFile {
                path,
                offset,
                source,
            } if !locations && source.is_1_0_variant() => {
                tracing::warn!(
                    path = %path.display(),
                    offset,
                    error = %source,
                    "damaged file"
                );
                *source
            }
            other => other,
        }
    }

    /// Wraps `self` with the file and offset it was found at. An error that
    /// already names a location is returned unchanged.
    pub(crate) fn in_file(self, path: &Path, offset: u64) -> Self {
        match self {
            Self::InFile { .. }
            | Self::Io { .. }
            | Self::Locked { .. }
            | Self::WouldOverwrite { .. }
            | Self::WalMismatch { .. }
            | Self::Poisoned { .. } => self,
            other => Self::InFile {
                path: path.to_path_buf(),
                offset,
                source: Box::new(other),
            },
        }
    }

    /// An I/O error on `path`.
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl fmt::Display for PersistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, source } if path.as_os_str().is_empty() => {
                write!(f, "I/O error: {source}")
            }
            Self::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Self::BadMagic { found } => write!(
                f,
                "bad magic bytes {found:02x?}: not an iqdb-persist file of this kind"
            ),
            Self::UnsupportedVersion { found, supported } => write!(
                f,
                "unsupported format version {found} (the reader supports versions up to {supported})"
            ),
            Self::ChecksumMismatch { expected, computed } => write!(
                f,
                "checksum mismatch: expected {expected:#010x}, computed {computed:#010x}"
            ),
            Self::TruncatedHeader { needed, found } => write!(
                f,
                "file ends inside its header: needed {needed} more bytes, found {found}"
            ),
            Self::TruncatedPayload { needed, found } => write!(
                f,
                "file ends inside its payload: needed {needed} bytes, found {found}"
            ),
            Self::InvalidMetric { tag } => write!(f, "invalid distance-metric tag {tag}"),
            Self::UnsupportedMetric { metric } => {
                write!(f, "distance metric {metric:?} has no on-disk tag")
            }
            Self::InvalidIndexType { found, expected } => write!(
                f,
                "file holds index type {found:?}, but the caller expects {expected:?}"
            ),
            Self::InvalidPayload { reason } => write!(f, "invalid payload: {reason}"),
            Self::Compression { reason } => write!(f, "compression error: {reason}"),
            Self::IndexBuild(e) => write!(f, "index rejected the operation: {e}"),
            Self::Unsupported {
                feature,
                available_in,
            } => write!(
                f,
                "{feature} is not available in this build: needs {available_in}"
            ),
            Self::InFile {
                path,
                offset,
                source,
            } => write!(f, "{}: at byte {offset}: {source}", path.display()),
            Self::Locked { path } => write!(
                f,
                "{}: the database is open for writing by another handle (in this process or another)",
                path.display()
            ),
            Self::WouldOverwrite {
                path,
                pending_operations,
            } => write!(
                f,
                "{}: refusing to overwrite a database whose log holds {pending_operations} \
                 operation(s) not yet in its snapshot; load it instead, or pass \
                 Options::overwrite_existing(true)",
                path.display()
            ),
            Self::WalMismatch { path, reason } => write!(
                f,
                "{}: write-ahead log does not belong to the snapshot beside it: {reason}",
                path.display()
            ),
            Self::Poisoned { path, reason } => write!(
                f,
                "{}: handle refuses writes after an earlier failure ({reason}); load the database again",
                path.display()
            ),
            Self::CorruptFrame {
                reason,
                verdict,
                torn,
                valid_frames_after,
            } => {
                let what = if *torn {
                    "torn log tail"
                } else {
                    "corrupt log frame"
                };
                write!(f, "{what}: {reason}: {verdict}")?;
                if *valid_frames_after > 0 {
                    write!(f, " ({valid_frames_after} valid frame(s) follow)")?;
                }
                f.write_str(
                    "; load with RecoveryMode::Salvage to keep the log up to here \
                     (the rest is copied to a backup file)",
                )
            }
            Self::Batch { applied, source } => write!(
                f,
                "batch stopped after {applied} applied operation(s): {source}"
            ),
            Self::InvalidSetting {
                name,
                value,
                expected,
            } => write!(
                f,
                "{name}={value:?} is not a valid setting: expected {expected}"
            ),
        }
    }
}

impl std::error::Error for PersistError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            Self::IndexBuild(e) => Some(e),
            Self::InFile { source, .. } | Self::Batch { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

impl ForgeError for PersistError {
    fn kind(&self) -> &'static str {
        match self {
            Self::Io { .. } => "Io",
            Self::BadMagic { .. } => "BadMagic",
            Self::UnsupportedVersion { .. } => "UnsupportedVersion",
            Self::ChecksumMismatch { .. } => "ChecksumMismatch",
            Self::TruncatedHeader { .. } => "TruncatedHeader",
            Self::TruncatedPayload { .. } => "TruncatedPayload",
            Self::InvalidMetric { .. } => "InvalidMetric",
            Self::UnsupportedMetric { .. } => "UnsupportedMetric",
            Self::InvalidIndexType { .. } => "InvalidIndexType",
            Self::InvalidPayload { .. } => "InvalidPayload",
            Self::Compression { .. } => "Compression",
            Self::IndexBuild(_) => "IndexBuild",
            Self::Unsupported { .. } => "Unsupported",
            Self::InFile { .. } => "InFile",
            Self::Locked { .. } => "Locked",
            Self::WouldOverwrite { .. } => "WouldOverwrite",
            Self::WalMismatch { .. } => "WalMismatch",
            Self::Poisoned { .. } => "Poisoned",
            Self::CorruptFrame { .. } => "CorruptFrame",
            Self::Batch { .. } => "Batch",
            Self::InvalidSetting { .. } => "InvalidSetting",
        }
    }

    fn caption(&self) -> &'static str {
        match self {
            Self::Io { .. } => "an operating-system I/O call failed",
            Self::BadMagic { .. } => "the file is not an iqdb-persist file of the expected kind",
            Self::UnsupportedVersion { .. } => "the file's format version is not supported",
            Self::ChecksumMismatch { .. } => "stored bytes do not match their checksum",
            Self::TruncatedHeader { .. } => "the file ends inside its header",
            Self::TruncatedPayload { .. } => "the file ends inside its payload",
            Self::InvalidMetric { .. } => "a metric tag maps to no known distance metric",
            Self::UnsupportedMetric { .. } => "the distance metric has no on-disk tag",
            Self::InvalidIndexType { .. } => "the file holds a different index type",
            Self::InvalidPayload { .. } => "stored bytes decode to an invalid payload",
            Self::Compression { .. } => "a compression or decompression step failed",
            Self::IndexBuild(_) => "the index rejected an operation",
            Self::Unsupported { .. } => "the feature is not available in this build",
            Self::InFile { .. } => "a file is damaged at a known offset",
            Self::Locked { .. } => "the database is open for writing elsewhere",
            Self::WouldOverwrite { .. } => "opening would discard acknowledged writes",
            Self::WalMismatch { .. } => "the log does not belong to the snapshot",
            Self::Poisoned { .. } => "the handle stopped accepting writes after a failure",
            Self::CorruptFrame { .. } => "a write-ahead-log frame is damaged",
            Self::Batch { .. } => "a batch stopped at a rejected operation",
            Self::InvalidSetting { .. } => "a setting has a value this build does not understand",
        }
    }

    fn is_fatal(&self) -> bool {
        matches!(self, Self::Poisoned { .. })
    }
}

impl From<IqdbError> for PersistError {
    fn from(value: IqdbError) -> Self {
        Self::IndexBuild(value)
    }
}

/// A [`Result`](core::result::Result) whose error is [`PersistError`].
pub type Result<T> = core::result::Result<T, PersistError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_file_wraps_once_and_names_the_file() {
        let err = PersistError::TruncatedPayload {
            needed: 10,
            found: 3,
        }
        .in_file(Path::new("a.iqdb"), 7)
        .in_file(Path::new("b.iqdb"), 9);
        assert_eq!(err.path(), Some(Path::new("a.iqdb")));
        assert_eq!(err.offset(), Some(7));
        assert!(err.is_corruption());
        assert!(err.to_string().starts_with("a.iqdb: at byte 7: "));
    }

    #[test]
    fn io_errors_are_not_wrapped() {
        let err = PersistError::io(Path::new("x"), std::io::Error::other("boom"))
            .in_file(Path::new("y"), 0);
        assert!(matches!(err, PersistError::Io { .. }));
        assert!(!err.is_corruption());
    }

    #[test]
    fn callers_get_1_0_variants_unless_they_ask_for_locations() {
        let located = || {
            PersistError::ChecksumMismatch {
                expected: 1,
                computed: 2,
            }
            .in_file(Path::new("a.iqdb"), 41)
        };
        assert!(matches!(
            located().for_caller(false),
            PersistError::ChecksumMismatch {
                expected: 1,
                computed: 2
            }
        ));
        let kept = located().for_caller(true);
        assert_eq!(kept.offset(), Some(41));
        assert_eq!(kept.path(), Some(Path::new("a.iqdb")));
        // A cause 1.0 never had keeps its location.
        let frame = PersistError::CorruptFrame {
            reason: "checksum mismatch",
            verdict: "valid frames follow",
            torn: false,
            valid_frames_after: 3,
        }
        .in_file(Path::new("a.iqdb.wal"), 99)
        .for_caller(false);
        assert_eq!(frame.offset(), Some(99));
    }

    #[test]
    fn error_is_send_sync_static() {
        fn assert_bounds<T: Send + Sync + 'static + std::error::Error>() {}
        assert_bounds::<PersistError>();
    }
}
