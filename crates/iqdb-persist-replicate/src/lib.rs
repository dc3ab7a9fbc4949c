//! # iqdb-persist-replicate
//!
//! Off-machine durability for [`iqdb_persist`] databases: a [`Replicator`]
//! attached to a WAL-mode database ships every checkpoint snapshot and the
//! log written since to object storage (S3 and S3-compatible servers,
//! a local directory, or memory), continuously, within an interval of the
//! data being durable locally; [`Replica::restore`] rebuilds the database
//! anywhere, to the latest shipped point, a sequence number or a time,
//! verifying every checksum on the way.
//!
//! * Objects are immutable and named by generation and sequence range; each
//!   carries a checksum. The manifest, written last with a conditional put,
//!   is the commit point: an interrupted upload never yields a corrupt
//!   restore, at worst an earlier complete point.
//! * One writer per replica prefix: a lease object taken with conditional
//!   writes, renewed periodically. A new holder bumps the epoch in the
//!   manifest, so a writer that lost its lease is fenced: its next manifest
//!   write fails.
//! * Retention keeps the newest generations and/or a time window, never
//!   what the newest restore point needs, and removes leftovers of
//!   interrupted uploads.
//!
//! The replicator tails the database's files read-only (as Litestream
//! does): the application keeps writing through
//! [`PersistedIndex`](iqdb_persist::PersistedIndex) and needs no hook.
//! docs/REPLICATION.md has the object layout, the manifest format, the
//! lease and fencing protocol, and the restore algorithm.
//!
//! The API is blocking: each [`Replica`] owns a small tokio runtime. Do not
//! call it from inside an async runtime's worker thread (use
//! `spawn_blocking`).
//!
//! ## Example
//!
//! ```
//! use iqdb_persist::{PersistConfig, PersistedIndex};
//! use iqdb_persist_replicate::{Replica, ReplicatorConfig, Replicator, RestoreOptions, StoreOptions};
//! # use iqdb_persist_testkit::generate;
//! # use iqdb_types::DistanceMetric;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let mut config = PersistConfig::new(dir.path().join("db.iqdb"));
//! config.wal_enabled = true;
//! let mut db = PersistedIndex::open_with(generate::store(1, 10, 4, DistanceMetric::Cosine), config)?;
//!
//! let url = "memory://example/db";
//! let mut replicator = Replicator::new(
//!     Replica::open(url, &StoreOptions::default())?,
//!     ReplicatorConfig::new(dir.path().join("db.iqdb")),
//! )?;
//! let (id, vector, meta) = generate::record(1, 10, 4);
//! db.insert(id, vector, meta)?;
//! replicator.sync()?; // `run` or `spawn` do this every interval
//! replicator.release()?;
//!
//! // Anywhere else:
//! let replica = Replica::open(url, &StoreOptions::default())?;
//! let report = replica.restore(&dir.path().join("restored"), &RestoreOptions::default())?;
//! assert_eq!(report.end_seq, 2);
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::path::Path;
use std::sync::Arc;

use object_store::ObjectStore;

mod clock;
mod error;
pub mod faults;
pub mod format;
mod lease;
pub mod manifest;
mod progress;
mod remote;
mod replicator;
mod restore;
mod store;

pub use crate::clock::{Clock, ManualClock, SystemClock};
pub use crate::error::{ReplicateError, Result};
pub use crate::lease::{LeaseRecord, owned_by_this_process};
pub use crate::manifest::{
    Generation, Manifest, RestorePoint, RestoreTarget, SegmentObject, SnapshotObject,
};
pub use crate::progress::{NoProgress, Progress};
pub use crate::replicator::{
    CommitInfo, Replicator, ReplicatorConfig, ReplicatorHandle, ReplicatorStatus, RunSummary,
    StatusMonitor, SyncReport,
};
pub use crate::restore::{
    MAX_SEGMENT_OBJECT_BYTES, RestoreOptions, RestoreReport, VerifyProblem, VerifyReport,
};
pub use crate::store::{LocalStore, ReplicaUrl, StoreOptions, memory_store};

/// This crate's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What [`Replica::unlisted`] found: objects under `generations/` that the
/// manifest does not list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnlistedObjects {
    /// How many there are.
    pub count: u64,
    /// Their total size in bytes.
    pub bytes: u64,
    /// The first of their keys (relative to the prefix), in key order, at
    /// most the number asked for; `count` says how many there are in all.
    pub keys: Vec<String>,
}

/// A replica: an object store and a key prefix holding one database's
/// generations, manifest and lease.
#[derive(Debug)]
pub struct Replica {
    pub(crate) remote: remote::Remote,
    url: String,
}

impl Replica {
    /// Opens the replica a URL names: `s3://BUCKET/PREFIX` (endpoint,
    /// region and credentials from `options` and the AWS environment
    /// variables), `file:///DIR` or `memory://NAME/PREFIX` (in-process).
    ///
    /// # Errors
    ///
    /// A bad URL, or a store that cannot be configured.
    pub fn open(url: &str, options: &StoreOptions) -> Result<Self> {
        let parsed = ReplicaUrl::parse(url)?;
        let (store, prefix) = store::open(&parsed, options)?;
        Ok(Self {
            remote: remote::Remote::new(store, &prefix)?,
            url: parsed.to_string(),
        })
    }

    /// A replica in any `object_store` store, under `prefix`.
    ///
    /// # Errors
    ///
    /// When the runtime cannot be started.
    pub fn with_store(store: Arc<dyn ObjectStore>, prefix: &str) -> Result<Self> {
        let url = format!("{store}/{prefix}");
        Ok(Self {
            remote: remote::Remote::new(store, prefix)?,
            url,
        })
    }

    /// The URL (or store description) it was opened with.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The key prefix.
    #[must_use]
    pub fn prefix(&self) -> &str {
        self.remote.prefix()
    }

    /// The committed manifest, verified, or `None` for an empty replica.
    ///
    /// # Errors
    ///
    /// Store errors; [`ReplicateError::Corrupt`] for a damaged manifest.
    pub fn manifest(&self) -> Result<Option<Manifest>> {
        Ok(replicator::read_manifest(&self.remote)?.map(|(m, _)| m))
    }

    /// Keys (relative to the prefix) of the objects under `generations/`
    /// that the manifest does not list: leftovers of interrupted uploads or
    /// of fenced writers (the next replicator removes those of its epoch or
    /// older), or a running replicator's uploads not yet committed.
    ///
    /// This returns every such key; a bucket with very many of them is
    /// better summarised with [`unlisted`](Self::unlisted), which keeps at
    /// most a given number of keys in memory.
    ///
    /// # Errors
    ///
    /// Store errors, a damaged manifest.
    pub fn unlisted_objects(&self) -> Result<Vec<String>> {
        Ok(self.unlisted(usize::MAX)?.keys)
    }

    /// The objects under `generations/` that the manifest does not list
    /// (see [`unlisted_objects`](Self::unlisted_objects)): their number and
    /// size, and the first `max_keys` of their keys in key order. The
    /// listing is processed page by page as it streams in, so memory holds
    /// the manifest's keys plus at most `max_keys` keys, however many
    /// objects the bucket has.
    ///
    /// # Errors
    ///
    /// Store errors, a damaged manifest.
    pub fn unlisted(&self, max_keys: usize) -> Result<UnlistedObjects> {
        let manifest = self.manifest()?;
        let listed: std::collections::HashSet<&str> = manifest
            .iter()
            .flat_map(|m| m.generations.iter())
            .flat_map(|g| {
                std::iter::once(g.snapshot.key.as_str())
                    .chain(g.segments.iter().map(|s| s.key.as_str()))
            })
            .collect();
        let mut out = UnlistedObjects::default();
        let mut kept = std::collections::BTreeSet::new();
        let remote = &self.remote;
        remote.for_each_listed(
            manifest::GENERATIONS_DIR,
            replicator::LIST_PAGE,
            &mut |page| {
                for meta in page {
                    let key = remote.key_of(&meta.location);
                    if listed.contains(key.as_str()) {
                        continue;
                    }
                    out.count += 1;
                    out.bytes = out.bytes.saturating_add(meta.size);
                    if max_keys == 0 {
                        continue;
                    }
                    if kept.len() < max_keys {
                        kept.insert(key);
                    } else if kept.last().is_some_and(|last| key < *last) {
                        kept.pop_last();
                        kept.insert(key);
                    }
                }
                Ok(())
            },
        )?;
        out.keys = kept.into_iter().collect();
        Ok(out)
    }

    /// The lease object, if any.
    ///
    /// # Errors
    ///
    /// Store errors, a damaged lease object.
    pub fn lease(&self) -> Result<Option<LeaseRecord>> {
        lease::read(&self.remote)
    }

    /// Downloads every object the manifest lists and checks it: its size
    /// and CRC-32, and for log segments their header, every frame's
    /// checksum and numbering, and that they follow each other. Damaged
    /// or missing objects are listed in the report (an object a running
    /// replicator merged or pruned since the manifest was read shows as
    /// missing: run it again). Memory stays at one segment.
    ///
    /// # Errors
    ///
    /// Store errors (after retries), [`ReplicateError::NotFound`] for an
    /// empty replica, a damaged manifest.
    pub fn verify(&self, progress: &dyn Progress) -> Result<VerifyReport> {
        let manifest = self.manifest()?.ok_or_else(|| ReplicateError::NotFound {
            what: format!("{}: no replica here (no manifest)", self.url),
        })?;
        restore::verify(&self.remote, &manifest, progress)
    }

    /// Restores into `dir` (absent or empty), without progress reports.
    ///
    /// # Errors
    ///
    /// See [`restore_with_progress`](Self::restore_with_progress).
    pub fn restore(&self, dir: &Path, options: &RestoreOptions) -> Result<RestoreReport> {
        self.restore_with_progress(dir, options, &NoProgress)
    }

    /// Restores the point `options.target` names into `dir` (absent or
    /// empty): downloads the generation's snapshot and checks its CRC-32
    /// and every checksum inside it, downloads and checks the segments up
    /// to the target, and writes the log with
    /// [`iqdb_persist::inspect::write_log`] (which checks every frame).
    /// The directory then holds `NAME` and `NAME.wal`, which
    /// `PersistedIndex::load` opens with the WAL enabled.
    ///
    /// Restoring the latest point, a damaged object makes the restore fall
    /// back to the newest earlier point that is intact
    /// ([`RestoreReport::fell_back`] says why); for a chosen sequence
    /// number or time it is an error. Nothing damaged is ever written.
    ///
    /// # Errors
    ///
    /// [`ReplicateError::NotFound`] when there is nothing to restore for
    /// the target, [`ReplicateError::Corrupt`] for damage with no fallback,
    /// [`ReplicateError::Invalid`] for a non-empty directory, store and
    /// I/O errors.
    pub fn restore_with_progress(
        &self,
        dir: &Path,
        options: &RestoreOptions,
        progress: &dyn Progress,
    ) -> Result<RestoreReport> {
        let manifest = self.manifest()?.ok_or_else(|| ReplicateError::NotFound {
            what: format!("{}: no replica here (no manifest)", self.url),
        })?;
        restore::restore(&self.remote, &manifest, dir, options, progress)
    }
}

/// Now, in Unix milliseconds.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A Unix-milliseconds time as RFC 3339 (UTC).
#[must_use]
pub fn format_time(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || format!("@{ms}ms"),
            |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        )
}

/// Parses an RFC 3339 time (`2026-11-26T08:00:00Z`) or `@SECONDS` (Unix
/// time) into Unix milliseconds.
///
/// ```
/// use iqdb_persist_replicate::parse_time;
///
/// assert_eq!(parse_time("@1700000000"), Some(1_700_000_000_000));
/// assert_eq!(parse_time("1970-01-01T00:00:01.5Z"), Some(1500));
/// assert_eq!(parse_time("yesterday"), None);
/// ```
#[must_use]
pub fn parse_time(text: &str) -> Option<u64> {
    if let Some(secs) = text.strip_prefix('@') {
        let secs: f64 = secs.parse().ok()?;
        return (secs >= 0.0).then(|| (secs * 1000.0).round() as u64);
    }
    let t = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    u64::try_from(t.timestamp_millis()).ok()
}
