//! # iqdb-persist-interop
//!
//! File-compatibility harness between this workspace's `iqdb-persist` (1.1)
//! and the published `iqdb-persist` 1.0.0, which this crate depends on under
//! the name [`iqdb_persist_v1`].
//!
//! Both versions persist the same index: the testkit's
//! [`VectorStore`]. Ours uses the
//! testkit's own `Persistable` impl; for 1.0, whose `Persistable` is a
//! different trait, [`V1Store`] wraps the store and implements 1.0's trait
//! with the same [`INDEX_TYPE`](iqdb_persist_testkit::INDEX_TYPE) and the same
//! payload bytes, so a file written by either version names an index type the
//! other accepts.
//!
//! The crate provides:
//!
//! * [`V1Store`], the 1.0 adapter;
//! * [`difference`] / [`assert_same_store`], a record-by-record comparison
//!   (ids, vectors bit for bit, metadata with floats bit for bit) that says
//!   which record differs;
//! * [`Step`] and [`workload`], a deterministic script of inserts, deletes
//!   and updates for write-ahead-log tests, with appliers for 1.0, ours and
//!   a plain store (the expected state);
//! * [`v1_frames`], a reader of WAL v1 frames for assertions about a log's
//!   layout;
//! * [`golden`], the description and writer of the golden files under
//!   `crates/interop/golden/` (see its README).

#![forbid(unsafe_code)]

pub mod golden;

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use iqdb_index::{Index, IndexCore, IndexStats};
use iqdb_persist_testkit::store::{metadata_bitwise_eq, vectors_bitwise_eq};
use iqdb_persist_testkit::{DecodeError, VectorStore, VectorStoreConfig, generate};
use iqdb_types::{DistanceMetric, Hit, Metadata, SearchParams, VectorId};

/// The published 1.0.0 crate, re-exported so tests and the golden generator
/// name one copy of it.
pub use iqdb_persist_v1;

/// The testkit's [`VectorStore`] persisted through iqdb-persist 1.0's
/// `Persistable` trait.
///
/// Every [`IndexCore`] and [`Index`] call is delegated to the wrapped store.
/// The payload is the store's own codec ([`VectorStore::encode`] /
/// [`VectorStore::decode`]) and the tag is the testkit's
/// [`INDEX_TYPE`](iqdb_persist_testkit::INDEX_TYPE), exactly what ours writes
/// for a `VectorStore`, so the files of both versions are interchangeable.
#[derive(Debug, Clone, PartialEq)]
pub struct V1Store(pub VectorStore);

impl V1Store {
    /// The wrapped store.
    #[must_use]
    pub fn store(&self) -> &VectorStore {
        &self.0
    }

    /// Unwraps the store.
    #[must_use]
    pub fn into_store(self) -> VectorStore {
        self.0
    }
}

impl From<VectorStore> for V1Store {
    fn from(store: VectorStore) -> Self {
        Self(store)
    }
}

impl IndexCore for V1Store {
    fn insert(
        &mut self,
        id: VectorId,
        vector: Arc<[f32]>,
        metadata: Option<Metadata>,
    ) -> iqdb_types::Result<()> {
        self.0.insert(id, vector, metadata)
    }

    fn delete(&mut self, id: &VectorId) -> iqdb_types::Result<()> {
        self.0.delete(id)
    }

    fn search(&self, query: &[f32], params: &SearchParams) -> iqdb_types::Result<Vec<Hit>> {
        self.0.search(query, params)
    }

    fn len(&self) -> usize {
        IndexCore::len(&self.0)
    }

    fn dim(&self) -> usize {
        IndexCore::dim(&self.0)
    }

    fn metric(&self) -> DistanceMetric {
        IndexCore::metric(&self.0)
    }

    fn flush(&mut self) -> iqdb_types::Result<()> {
        self.0.flush()
    }

    fn stats(&self) -> IndexStats {
        self.0.stats()
    }
}

impl Index for V1Store {
    type Config = VectorStoreConfig;

    fn new(dim: usize, metric: DistanceMetric, config: Self::Config) -> iqdb_types::Result<Self> {
        VectorStore::new(dim, metric, config).map(Self)
    }
}

impl iqdb_persist_v1::Persistable for V1Store {
    const INDEX_TYPE: &'static str = iqdb_persist_testkit::INDEX_TYPE;

    fn save_to(&self, writer: &mut dyn Write) -> iqdb_persist_v1::Result<()> {
        self.0.encode(writer).map_err(v1_io)
    }

    fn load_from(reader: &mut dyn Read) -> iqdb_persist_v1::Result<Self> {
        VectorStore::decode(reader).map(Self).map_err(|e| match e {
            DecodeError::Truncated { needed, found } => {
                iqdb_persist_v1::PersistError::TruncatedPayload { needed, found }
            }
            DecodeError::Invalid { reason } => {
                iqdb_persist_v1::PersistError::InvalidPayload { reason }
            }
            DecodeError::InvalidMetric { tag } => {
                iqdb_persist_v1::PersistError::InvalidMetric { tag }
            }
            DecodeError::Io(source) => v1_io(source),
            _ => iqdb_persist_v1::PersistError::InvalidPayload {
                reason: "vector-store payload rejected",
            },
        })
    }
}

fn v1_io(source: io::Error) -> iqdb_persist_v1::PersistError {
    iqdb_persist_v1::PersistError::Io {
        path: PathBuf::new(),
        source,
    }
}

/// The 1.0 equivalent of one of our compression settings.
#[must_use]
pub fn to_v1_compression(compression: iqdb_persist::Compression) -> iqdb_persist_v1::Compression {
    match compression {
        iqdb_persist::Compression::None => iqdb_persist_v1::Compression::None,
        iqdb_persist::Compression::Zstd { level } => iqdb_persist_v1::Compression::Zstd { level },
        iqdb_persist::Compression::Lz4 => iqdb_persist_v1::Compression::Lz4,
    }
}

/// The v2 scheme tag (the byte after the header) of a compression setting.
#[must_use]
pub fn scheme_tag(compression: iqdb_persist::Compression) -> u8 {
    match compression {
        iqdb_persist::Compression::None => 0,
        iqdb_persist::Compression::Zstd { .. } => 1,
        iqdb_persist::Compression::Lz4 => 2,
    }
}

/// Every compression setting the interop tests cover: none, zstd at levels
/// 1 and 19, and LZ4.
pub const SCHEMES: [iqdb_persist::Compression; 4] = [
    iqdb_persist::Compression::None,
    iqdb_persist::Compression::Zstd { level: 1 },
    iqdb_persist::Compression::Zstd { level: 19 },
    iqdb_persist::Compression::Lz4,
];

/// Our configuration for `path`.
#[must_use]
pub fn config(
    path: &Path,
    wal_enabled: bool,
    compression: iqdb_persist::Compression,
) -> iqdb_persist::PersistConfig {
    let mut config = iqdb_persist::PersistConfig::new(path);
    config.wal_enabled = wal_enabled;
    config.compression = compression;
    config
}

/// 1.0's configuration for `path`, the same settings as [`config`].
#[must_use]
pub fn v1_config(
    path: &Path,
    wal_enabled: bool,
    compression: iqdb_persist::Compression,
) -> iqdb_persist_v1::PersistConfig {
    let mut config = iqdb_persist_v1::PersistConfig::new(path);
    config.wal_enabled = wal_enabled;
    config.compression = to_v1_compression(compression);
    config
}

/// The shape of a sample store: records `0..n` of [`generate`]'s stream
/// `seed`, `dim` components, under `metric`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Sample stream.
    pub seed: u64,
    /// Number of records.
    pub n: u64,
    /// Vector dimension.
    pub dim: usize,
    /// Distance metric.
    pub metric: DistanceMetric,
}

impl Shape {
    /// The store this shape describes (see [`generate::store`]).
    #[must_use]
    pub fn store(&self) -> VectorStore {
        generate::store(self.seed, self.n, self.dim, self.metric)
    }
}

/// The shapes the round-trip tests cover: empty, one record, about a
/// thousand records; dimensions from 1 to 64; all five metrics. Records mix
/// `U64` and `Bytes` ids (including non-UTF-8 ones) and metadata with every
/// value kind, or none (see [`generate`]).
pub const SHAPES: [Shape; 6] = [
    Shape {
        seed: 11,
        n: 0,
        dim: 1,
        metric: DistanceMetric::Cosine,
    },
    Shape {
        seed: 12,
        n: 1,
        dim: 64,
        metric: DistanceMetric::DotProduct,
    },
    Shape {
        seed: 13,
        n: 1000,
        dim: 8,
        metric: DistanceMetric::Euclidean,
    },
    Shape {
        seed: 14,
        n: 997,
        dim: 64,
        metric: DistanceMetric::Manhattan,
    },
    Shape {
        seed: 15,
        n: 37,
        dim: 3,
        metric: DistanceMetric::Hamming,
    },
    Shape {
        seed: 16,
        n: 257,
        dim: 33,
        metric: DistanceMetric::Cosine,
    },
];

/// Describes the first difference between two stores, or `None` when they
/// hold the same dimension, metric and records (ids equal, vectors equal bit
/// for bit, metadata equal with floats compared bit for bit).
#[must_use]
pub fn difference(expected: &VectorStore, actual: &VectorStore) -> Option<String> {
    if expected.dim() != actual.dim() {
        return Some(format!(
            "dim: expected {}, found {}",
            expected.dim(),
            actual.dim()
        ));
    }
    if expected.metric() != actual.metric() {
        return Some(format!(
            "metric: expected {:?}, found {:?}",
            expected.metric(),
            actual.metric()
        ));
    }
    for (id, vector, metadata) in expected.iter() {
        let Some((found_vector, found_metadata)) = actual.get(id) else {
            return Some(format!("record {id:?} is missing"));
        };
        if !vectors_bitwise_eq(vector, found_vector) {
            return Some(format!(
                "record {id:?}: vector {found_vector:?} differs from the expected {vector:?}"
            ));
        }
        let same_metadata = match (metadata, found_metadata) {
            (None, None) => true,
            (Some(a), Some(b)) => metadata_bitwise_eq(a, b),
            _ => false,
        };
        if !same_metadata {
            return Some(format!(
                "record {id:?}: metadata {found_metadata:?} differs from the expected {metadata:?}"
            ));
        }
    }
    if let Some(extra) = actual.ids().iter().find(|id| !expected.contains(id)) {
        return Some(format!("unexpected record {extra:?}"));
    }
    if expected.len() != actual.len() {
        // Unreachable for well-formed stores (ids are unique), kept so the
        // comparison never depends on that.
        return Some(format!(
            "len: expected {}, found {}",
            expected.len(),
            actual.len()
        ));
    }
    None
}

/// Panics, naming `context` and the first differing record, unless the two
/// stores hold the same records (see [`difference`]).
///
/// # Panics
///
/// When the stores differ.
#[track_caller]
pub fn assert_same_store(expected: &VectorStore, actual: &VectorStore, context: &str) {
    if let Some(diff) = difference(expected, actual) {
        panic!(
            "{context}: loaded store differs from the expected one \
             ({} records expected, {} found): {diff}",
            expected.len(),
            actual.len()
        );
    }
}

/// One write of a [`workload`]: record `i`'s id, with the vector and
/// metadata of sample stream `seed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Insert [`generate::record(seed, i, dim)`](generate::record).
    Insert {
        /// Sample stream.
        seed: u64,
        /// Record number (the id is [`generate::id(i)`](generate::id)).
        i: u64,
    },
    /// Delete [`generate::id(i)`](generate::id).
    Delete {
        /// Record number.
        i: u64,
    },
}

impl Step {
    /// This step as one of our [`Operation`](iqdb_persist::Operation)s.
    #[must_use]
    pub fn operation(self, dim: usize) -> iqdb_persist::Operation {
        match self {
            Self::Insert { seed, i } => {
                let (id, vector, metadata) = generate::record(seed, i, dim);
                iqdb_persist::Operation::Insert {
                    id,
                    vector,
                    metadata,
                }
            }
            Self::Delete { i } => iqdb_persist::Operation::Delete {
                id: generate::id(i),
            },
        }
    }

    /// Applies this step to a plain index (the expected state).
    ///
    /// # Errors
    ///
    /// Whatever the index rejects.
    pub fn apply_to<I: IndexCore>(self, index: &mut I) -> iqdb_types::Result<()> {
        match self {
            Self::Insert { seed, i } => {
                let (id, vector, metadata) = generate::record(seed, i, index.dim());
                index.insert(id, vector, metadata)
            }
            Self::Delete { i } => index.delete(&generate::id(i)),
        }
    }

    /// Applies this step through 1.0's WAL-logging wrapper.
    ///
    /// # Errors
    ///
    /// What 1.0 returns.
    pub fn apply_v1(
        self,
        db: &mut iqdb_persist_v1::PersistedIndex<V1Store>,
    ) -> iqdb_persist_v1::Result<()> {
        match self {
            Self::Insert { seed, i } => {
                let (id, vector, metadata) = generate::record(seed, i, db.index().0.dim());
                db.insert(id, vector, metadata)
            }
            Self::Delete { i } => db.delete(&generate::id(i)),
        }
    }

    /// Applies this step through our WAL-logging wrapper, one operation per
    /// call.
    ///
    /// # Errors
    ///
    /// What ours returns.
    pub fn apply_ours(
        self,
        db: &mut iqdb_persist::PersistedIndex<VectorStore>,
    ) -> iqdb_persist::Result<()> {
        let dim = db.index().dim();
        match self.operation(dim) {
            iqdb_persist::Operation::Insert {
                id,
                vector,
                metadata,
            } => db.insert(id, vector, metadata),
            iqdb_persist::Operation::Delete { id } => db.delete(&id),
        }
    }
}

/// A deterministic script of writes onto a store of records `0..base_n`,
/// in this order: inserts of records `base_n..base_n + extra` (stream
/// `seed`); deletes of the records of `0..base_n + extra` whose number is a
/// multiple of 3; re-inserts with new values (stream `seed + 1`) of every
/// second one of those deleted (records 0, 6, 12, ...), so those ids come
/// back with different vectors and metadata (an update).
///
/// Every step is valid for a strict index: no duplicate insert, no delete of
/// an absent id.
#[must_use]
pub fn workload(seed: u64, base_n: u64, extra: u64) -> Vec<Step> {
    let total = base_n + extra;
    let inserts = (base_n..total).map(|i| Step::Insert { seed, i });
    let deleted: Vec<u64> = (0..total).filter(|i| i % 3 == 0).collect();
    let deletes = deleted.iter().map(|&i| Step::Delete { i });
    let updates = deleted
        .iter()
        .step_by(2)
        .map(|&i| Step::Insert { seed: seed + 1, i });
    inserts.chain(deletes).chain(updates).collect()
}

/// The store `shape` describes after `steps`.
///
/// # Panics
///
/// When a step is rejected (a bug in the script).
#[must_use]
pub fn expected_after(shape: &Shape, steps: &[Step]) -> VectorStore {
    let mut store = shape.store();
    for (k, step) in steps.iter().enumerate() {
        if let Err(e) = step.apply_to(&mut store) {
            panic!("workload step {k} ({step:?}) rejected by the reference store: {e}");
        }
    }
    store
}

/// The magic of every write-ahead log.
pub const WAL_MAGIC: [u8; 8] = *b"IQDBWAL\0";

/// The frame bodies of a complete WAL v1 file (12-byte header, then
/// `[len u32][crc32 u32][body]` frames), checking the header and every
/// frame's CRC-32, and that the last frame ends exactly at the end of the
/// file.
///
/// # Errors
///
/// A description of the first thing that is not as described.
pub fn v1_frames(bytes: &[u8]) -> Result<Vec<&[u8]>, String> {
    let header = bytes
        .get(..12)
        .ok_or_else(|| format!("log of {} bytes has no 12-byte header", bytes.len()))?;
    if header[..8] != WAL_MAGIC {
        return Err(format!("bad log magic {:02x?}", &header[..8]));
    }
    let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if version != 1 {
        return Err(format!("log version {version}, expected 1"));
    }
    let mut frames = Vec::new();
    let mut at = 12usize;
    while at < bytes.len() {
        let head = bytes
            .get(at..at + 8)
            .ok_or_else(|| format!("frame head at byte {at} is cut short"))?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let body = bytes
            .get(at + 8..at + 8 + len)
            .ok_or_else(|| format!("frame body at byte {} is cut short", at + 8))?;
        let computed = iqdb_persist_v1::checksum::compute(body);
        if computed != crc {
            return Err(format!(
                "frame at byte {at}: CRC {computed:#010x}, recorded {crc:#010x}"
            ));
        }
        frames.push(body);
        at += 8 + len;
    }
    Ok(frames)
}

/// Writes a version-1 snapshot of `store` to `path`, the way 1.0's format
/// defines it: the header (written by 1.0's public
/// [`format::write_header`](iqdb_persist_v1::format::write_header) with
/// `version: 1`), then the payload verbatim, the header's CRC being 1.0's
/// [`checksum::compute`](iqdb_persist_v1::checksum::compute) of the payload.
///
/// 1.0 reads such files but only writes version 2, so this is the only way
/// to produce one with 1.0's code.
///
/// # Errors
///
/// What 1.0's header writer or the file system returns.
pub fn write_v1_snapshot(path: &Path, store: &VectorStore) -> iqdb_persist_v1::Result<()> {
    use iqdb_persist_v1::Persistable as _;

    let adapter = V1Store(store.clone());
    let mut payload = Vec::new();
    adapter.save_to(&mut payload)?;
    let header = iqdb_persist_v1::FileHeader {
        magic: iqdb_persist_v1::MAGIC,
        version: 1,
        index_type: <V1Store as iqdb_persist_v1::Persistable>::INDEX_TYPE.to_string(),
        dim: store.dim(),
        metric: store.metric(),
        n_vectors: store.len(),
        crc32: iqdb_persist_v1::checksum::compute(&payload),
    };
    let mut bytes = Vec::with_capacity(header.index_type.len() + 41 + payload.len());
    iqdb_persist_v1::format::write_header(&mut bytes, &header)?;
    bytes.extend_from_slice(&payload);
    std::fs::write(path, &bytes).map_err(|source| iqdb_persist_v1::PersistError::Io {
        path: path.to_path_buf(),
        source,
    })
}
