//! # iqdb-persist
//!
//! Crash-safe persistence for iQDB vector indexes. Wrap any index that
//! implements [`iqdb_index::Index`] and [`Persistable`] in a
//! [`PersistedIndex`] and it becomes durable:
//!
//! * **Atomic, checksummed snapshots**: a temporary file in the same
//!   directory, fsynced, renamed over the old snapshot, directory fsynced. A
//!   crash leaves the old snapshot or the new one, never a mix.
//! * **A write-ahead log** (`wal_enabled`): every insert and delete is logged
//!   before it is applied. Under [`FsyncPolicy::Always`] a call that returned
//!   `Ok` survives kill -9 and power loss; [`PersistedIndex::batch`] commits
//!   many writes with one fsync. Loading replays the log, truncates a torn
//!   tail left by a crash, and reports real corruption as an error naming the
//!   file and offset.
//! * **Compression** (features `zstd`, `lz4`), streamed in bounded memory.
//!
//! It is a drop-in replacement for iqdb-persist 1.0: the same API, and every
//! file 1.0 wrote loads. See the README for what is different.
//!
//! ## Example
//!
//! ```
//! # use iqdb_persist_testkit::VectorStore as MyIndex;
//! use std::sync::Arc;
//! use iqdb_index::Index;
//! use iqdb_persist::{PersistConfig, PersistedIndex};
//! use iqdb_types::{DistanceMetric, VectorId};
//!
//! # fn main() -> iqdb_persist::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let mut config = PersistConfig::new(dir.path().join("vectors.iqdb"));
//! config.wal_enabled = true;
//!
//! // Create: writes a base snapshot and an empty log.
//! let index = MyIndex::new(3, DistanceMetric::Cosine, Default::default())?;
//! let mut db = PersistedIndex::open_with(index, config.clone())?;
//! db.insert(VectorId::from(1u64), Arc::from(vec![1.0, 0.0, 0.0]), None)?;
//! drop(db);
//!
//! // Reopen: the snapshot plus the replayed log.
//! let db = PersistedIndex::<MyIndex>::load(config)?;
//! assert_eq!(iqdb_index::IndexCore::len(db.index()), 1);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]
#![forbid(unsafe_code)]

use std::io::{Read, Write};

use iqdb_index::Index;

mod checkpoint;
pub mod checksum;
mod compression;
mod config;
mod error;
pub mod format;
pub mod format_policy;
pub mod inspect;
mod lock;
mod options;
mod persisted;
mod recovery;
mod replace;
mod shared;
mod snapshot;
pub mod storage;
mod wal;

pub use crate::config::{Compression, FsyncPolicy, PersistConfig};
pub use crate::error::{PersistError, Result};
pub use crate::format::{CURRENT_VERSION, FileHeader, LATEST_VERSION, MAGIC};
pub use crate::format_policy::{FORMAT_ENV, FormatPolicy};
pub use crate::options::{Options, RecoveryMode, SnapshotFormat, WalFormat};
pub use crate::persisted::{Batch, PersistedIndex};
pub use crate::recovery::{RecoveryReport, Truncation};
pub use crate::shared::{SharedIndex, SharedReadGuard};
pub use crate::snapshot::SnapshotFingerprint;
pub use crate::wal::{Damage, DamageKind, Operation};

/// This crate's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// An index that can write itself to a byte stream and read itself back.
///
/// `save_to` and `load_from` get buffered streams, so writing a few bytes per
/// call is fine. The bytes they see are the raw payload: framing, checksums
/// and compression are this crate's job. A `load_from` should fail (not
/// panic) on bytes it does not understand, and should not allocate more than
/// the bytes it has actually read justify.
pub trait Persistable: Index {
    /// A short, stable tag for the index type, recorded in the snapshot
    /// header and checked on load.
    const INDEX_TYPE: &'static str;

    /// Writes the index's state to `writer`.
    fn save_to(&self, writer: &mut dyn Write) -> Result<()>;

    /// Reads an index written by [`save_to`](Persistable::save_to).
    fn load_from(reader: &mut dyn Read) -> Result<Self>
    where
        Self: Sized;
}

#[cfg(test)]
mod persisted_tests;
#[cfg(test)]
mod test_support;

/// The README's code, compiled as a doctest so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
