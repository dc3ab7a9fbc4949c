//! The crate's error type.

use std::fmt;
use std::path::PathBuf;

use iqdb_persist::PersistError;

/// An error from replicating or restoring.
#[non_exhaustive]
#[derive(Debug)]
pub enum ReplicateError {
    /// The object store failed (network, permissions, a missing bucket...).
    Store {
        /// What was being done, with the object's key.
        context: String,
        /// The store's error.
        source: object_store::Error,
    },
    /// The local database (or a restored file) failed.
    Persist {
        /// What was being done.
        context: String,
        /// The library's error.
        source: PersistError,
    },
    /// A local I/O failure outside the library.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An object's bytes do not match its checksum or its manifest entry, or
    /// the manifest itself is damaged.
    Corrupt {
        /// The object's key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// Another replicator holds the replica's lease.
    LeaseHeld {
        /// Who holds it.
        owner: String,
        /// Milliseconds until it expires, if it is not renewed.
        expires_in_ms: u64,
    },
    /// Another replicator took the lease over (a lease record of another
    /// holder or epoch): this one must stop. (A lease that merely ran out,
    /// or whose renewal failed, is renewed again when nobody took it.)
    LeaseLost {
        /// Why.
        reason: String,
    },
    /// A newer writer (a higher lease epoch) rewrote the manifest: this
    /// replicator's writes are refused from now on.
    Fenced {
        /// This replicator's epoch.
        ours: u64,
        /// The epoch found in the manifest.
        found: u64,
    },
    /// An object the manifest lists is not in the store: a concurrent merge
    /// or prune removed it after the manifest was read (a restore then
    /// reads the manifest again), or it was lost.
    Missing {
        /// The object's key.
        key: String,
    },
    /// Nothing to restore or list: the replica holds no manifest, or no
    /// restore point matches the request.
    NotFound {
        /// What was missing.
        what: String,
    },
    /// The database or a request cannot be served as asked (a WAL v1
    /// database, a non-empty restore directory, a bad URL, ...).
    Invalid {
        /// Why.
        reason: String,
    },
}

impl ReplicateError {
    pub(crate) fn store(context: impl Into<String>, source: object_store::Error) -> Self {
        Self::Store {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn persist(context: impl Into<String>, source: PersistError) -> Self {
        Self::Persist {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Corrupt {
            key: key.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        Self::Invalid {
            reason: reason.into(),
        }
    }

    /// Whether the error says stored bytes are damaged (here or in a
    /// restored file).
    #[must_use]
    pub fn is_corruption(&self) -> bool {
        match self {
            Self::Corrupt { .. } => true,
            Self::Persist { source, .. } => source.root_cause().is_corruption(),
            _ => false,
        }
    }

    /// Whether this replicator lost its right to write (lease lost, or
    /// fenced by a newer writer).
    #[must_use]
    pub fn is_lease_loss(&self) -> bool {
        matches!(self, Self::LeaseLost { .. } | Self::Fenced { .. })
    }
}

impl fmt::Display for ReplicateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Store { context, source } => write!(f, "{context}: {source}"),
            Self::Persist { context, source } => write!(f, "{context}: {source}"),
            Self::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Self::Corrupt { key, reason } => write!(f, "corrupt replica object {key}: {reason}"),
            Self::LeaseHeld {
                owner,
                expires_in_ms,
            } => write!(
                f,
                "the replica is locked by another replicator ({owner}); its lease expires in {:.1} s unless renewed",
                *expires_in_ms as f64 / 1000.0
            ),
            Self::LeaseLost { reason } => write!(f, "lost the replica lease: {reason}"),
            Self::Fenced { ours, found } => write!(
                f,
                "fenced: a newer replicator (lease epoch {found}) took over the replica from this one (epoch {ours})"
            ),
            Self::Missing { key } => {
                write!(f, "{key}: the manifest lists it, but it is missing")
            }
            Self::NotFound { what } => write!(f, "{what}"),
            Self::Invalid { reason } => f.write_str(reason),
        }
    }
}

impl std::error::Error for ReplicateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Store { source, .. } => Some(source),
            Self::Persist { source, .. } => Some(source),
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = ReplicateError> = std::result::Result<T, E>;
