//! The golden files: databases written by iqdb-persist 1.0.0, committed
//! under `crates/interop/golden/` so that every later build is tested
//! against bytes 1.0 really produced.
//!
//! [`FILES`] describes each one by deterministic inputs (a [`Shape`] and
//! how 1.0 wrote it); [`write()`] produces it with 1.0, and
//! [`GoldenFile::expected`] rebuilds the state it must load as, from the same
//! inputs. The `make-golden` binary calls [`write_all`]:
//!
//! ```sh
//! cargo run -p iqdb-persist-interop --bin make-golden -- crates/interop/golden
//! ```

use std::path::{Path, PathBuf};

use iqdb_persist::Compression;
use iqdb_persist_testkit::VectorStore;
use iqdb_types::DistanceMetric;

use crate::{Shape, Step, V1Store, expected_after, v1_config, workload, write_v1_snapshot};

/// How 1.0 wrote a golden file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// A version-1 snapshot, built with 1.0's public header writer and
    /// checksum (see [`write_v1_snapshot`]); 1.0 itself only writes v2.
    SnapshotV1,
    /// A version-2 snapshot: 1.0's `open_with` in snapshot mode, then
    /// `save`, with this compression.
    SnapshotV2(Compression),
    /// A WAL-mode database: 1.0's `open_with` with the WAL on (which writes
    /// the base snapshot), then the [`workload`]`(seed, shape.n, extra)`
    /// through its `insert`/`delete`, then dropped without a checkpoint. The
    /// log is the file named like the snapshot with `.wal` appended.
    WalDatabase {
        /// Sample stream of the workload.
        seed: u64,
        /// Records the workload inserts beyond the base.
        extra: u64,
    },
}

/// One golden database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoldenFile {
    /// The snapshot's file name in the golden directory.
    pub name: &'static str,
    /// The store 1.0 was given (the base, for a WAL database).
    pub shape: Shape,
    /// How it was written.
    pub layout: Layout,
}

/// Every golden database.
pub const FILES: [GoldenFile; 5] = [
    GoldenFile {
        name: "snapshot-v1.iqdb",
        shape: Shape {
            seed: 101,
            n: 60,
            dim: 16,
            metric: DistanceMetric::Euclidean,
        },
        layout: Layout::SnapshotV1,
    },
    GoldenFile {
        name: "snapshot-v2-none.iqdb",
        shape: Shape {
            seed: 102,
            n: 100,
            dim: 12,
            metric: DistanceMetric::Cosine,
        },
        layout: Layout::SnapshotV2(Compression::None),
    },
    GoldenFile {
        name: "snapshot-v2-zstd.iqdb",
        shape: Shape {
            seed: 103,
            n: 100,
            dim: 24,
            metric: DistanceMetric::DotProduct,
        },
        layout: Layout::SnapshotV2(Compression::Zstd { level: 3 }),
    },
    GoldenFile {
        name: "snapshot-v2-lz4.iqdb",
        shape: Shape {
            seed: 104,
            n: 100,
            dim: 24,
            metric: DistanceMetric::Manhattan,
        },
        layout: Layout::SnapshotV2(Compression::Lz4),
    },
    GoldenFile {
        name: "wal-v1.iqdb",
        shape: Shape {
            seed: 105,
            n: 40,
            dim: 8,
            metric: DistanceMetric::Hamming,
        },
        layout: Layout::WalDatabase {
            seed: 106,
            extra: 20,
        },
    },
];

impl GoldenFile {
    /// The file names this database consists of: the snapshot, and for a
    /// WAL database its log.
    #[must_use]
    pub fn file_names(&self) -> Vec<String> {
        let mut names = vec![self.name.to_string()];
        if matches!(self.layout, Layout::WalDatabase { .. }) {
            names.push(format!("{}.wal", self.name));
        }
        names
    }

    /// The operations logged after the base snapshot (empty for a plain
    /// snapshot).
    #[must_use]
    pub fn steps(&self) -> Vec<Step> {
        match self.layout {
            Layout::WalDatabase { seed, extra } => workload(seed, self.shape.n, extra),
            Layout::SnapshotV1 | Layout::SnapshotV2(_) => Vec::new(),
        }
    }

    /// Whether loading needs the WAL on (to replay the log).
    #[must_use]
    pub fn wal_enabled(&self) -> bool {
        matches!(self.layout, Layout::WalDatabase { .. })
    }

    /// The compression 1.0 was configured with.
    #[must_use]
    pub fn compression(&self) -> Compression {
        match self.layout {
            Layout::SnapshotV2(compression) => compression,
            Layout::SnapshotV1 | Layout::WalDatabase { .. } => Compression::None,
        }
    }

    /// The state the database loads as, rebuilt from the inputs.
    #[must_use]
    pub fn expected(&self) -> VectorStore {
        expected_after(&self.shape, &self.steps())
    }
}

/// Writes `file` into `dir` with iqdb-persist 1.0, replacing any earlier
/// copy, and returns the paths written.
///
/// # Errors
///
/// What 1.0 returns, as a message naming the file.
pub fn write(file: &GoldenFile, dir: &Path) -> Result<Vec<PathBuf>, String> {
    let path = dir.join(file.name);
    let fail = |e: iqdb_persist_v1::PersistError| format!("{}: {e}", path.display());
    let config = v1_config(&path, file.wal_enabled(), file.compression());
    match file.layout {
        Layout::SnapshotV1 => write_v1_snapshot(&path, &file.shape.store()).map_err(fail)?,
        Layout::SnapshotV2(_) => {
            let db =
                iqdb_persist_v1::PersistedIndex::open_with(V1Store(file.shape.store()), config)
                    .map_err(fail)?;
            db.save().map_err(fail)?;
        }
        Layout::WalDatabase { .. } => {
            let mut db =
                iqdb_persist_v1::PersistedIndex::open_with(V1Store(file.shape.store()), config)
                    .map_err(fail)?;
            for step in file.steps() {
                step.apply_v1(&mut db).map_err(fail)?;
            }
            drop(db);
        }
    }
    Ok(file
        .file_names()
        .iter()
        .map(|name| dir.join(name))
        .collect())
}

/// Writes every file of [`FILES`] into `dir` (which must exist) and returns
/// the paths written.
///
/// # Errors
///
/// The first failure, as a message naming the file.
pub fn write_all(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut written = Vec::new();
    for file in &FILES {
        written.extend(write(file, dir)?);
    }
    Ok(written)
}
