//! Fixtures: databases built with the library, then damaged on purpose.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use assert_cmd::Command;
use iqdb_persist::inspect::{self, LogEntry, LogInfo};
use iqdb_persist::storage::StdFileSystem;
use iqdb_persist::{Compression, FsyncPolicy, Operation, Options, PersistConfig, PersistedIndex};
use iqdb_persist_testkit::{VectorStore, generate};
use iqdb_types::{DistanceMetric, VectorId};

pub const BASE: u64 = 200;
pub const DIM: usize = 8;

/// A database and what it holds.
pub struct Db {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub wal: PathBuf,
    /// Vectors after replay.
    pub vectors: u64,
    /// Logged operations.
    pub inserts: u64,
    pub deletes: u64,
    /// Log frames.
    pub frames: u64,
}

impl Db {
    pub fn config(&self) -> PersistConfig {
        let mut c = PersistConfig::new(&self.path);
        c.wal_enabled = true;
        c
    }

    pub fn path_str(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// The log's intact frames.
    pub fn frames(&self) -> (Vec<LogEntry>, LogInfo) {
        let mut entries = Vec::new();
        let info = inspect::scan_log(&StdFileSystem, &self.wal, |e| {
            entries.push(e);
            ControlFlow::Continue(())
        })
        .unwrap()
        .unwrap();
        (entries, info)
    }

    pub fn load(&self) -> iqdb_persist::Result<PersistedIndex<VectorStore>> {
        PersistedIndex::<VectorStore>::load(self.config())
    }
}

/// A WAL-mode database: a snapshot of BASE records, then a log with 10
/// single inserts, 3 deletes and one batch of 5 inserts + 1 delete, written
/// under `FsyncPolicy::Always` (so every frame records that the ones before
/// it were synced, and damage to them is corruption, not a torn write).
pub fn wal_db(options: Options) -> Db {
    wal_db_with(options, Compression::None)
}

pub fn wal_db_with(options: Options, compression: Compression) -> Db {
    wal_db_policy(options, compression, FsyncPolicy::Always)
}

/// [`wal_db`] with a chosen fsync policy (synced once at the end).
pub fn wal_db_policy(options: Options, compression: Compression, policy: FsyncPolicy) -> Db {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.iqdb");
    let mut config = PersistConfig::new(&path);
    config.wal_enabled = true;
    config.fsync_policy = policy;
    config.compression = compression;
    let store = generate::store(7, BASE, DIM, DistanceMetric::Euclidean);
    let mut db = PersistedIndex::open_with_options(store, config.clone(), options).unwrap();
    for (id, v, m) in generate::records(8, BASE..BASE + 10, DIM) {
        db.insert(id, v, m).unwrap();
    }
    for i in [0u64, 1, 2] {
        db.delete(&generate::id(i)).unwrap();
    }
    let ops: Vec<Operation> = generate::records(8, BASE + 10..BASE + 15, DIM)
        .map(|(id, vector, metadata)| Operation::Insert {
            id,
            vector,
            metadata,
        })
        .chain([Operation::Delete {
            id: generate::id(3),
        }])
        .collect();
    db.apply(ops).unwrap();
    db.sync().unwrap();
    let v1 = db.options().get_wal_format().version() == 1;
    drop(db);
    Db {
        wal: config.wal_path(),
        path,
        dir,
        vectors: BASE + 15 - 4,
        inserts: 15,
        deletes: 4,
        // A v1 log writes a batch as one frame per operation.
        frames: if v1 { 13 + 6 } else { 14 },
    }
}

/// A snapshot-only database (no log).
pub fn snapshot_db() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap.iqdb");
    let config = PersistConfig::new(&path);
    let store = generate::store(7, BASE, DIM, DistanceMetric::Cosine);
    PersistedIndex::open_with(store, config.clone())
        .unwrap()
        .save()
        .unwrap();
    Db {
        wal: config.wal_path(),
        path,
        dir,
        vectors: BASE,
        inserts: 0,
        deletes: 0,
        frames: 0,
    }
}

pub fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[usize::try_from(offset).unwrap()] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

pub fn truncate(path: &Path, len: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(len).unwrap();
}

pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// `.salvaged-` backups beside the log.
pub fn backups(db: &Db) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(db.dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".wal.salvaged-"))
        .collect();
    out.sort();
    out
}

/// One quick invocation of every command that takes a database, over the
/// database at `db` (`convert` checkpoints it); `bench` and `demo` work in
/// directories under `work`.
pub fn every_command(db: &str, work: &Path) -> Vec<Vec<String>> {
    let bench_dir = work.join("bench");
    std::fs::create_dir_all(&bench_dir).unwrap();
    let demo = work.join("demo");
    let tiny = |v: &[&str]| v.iter().map(|s| (*s).to_string()).collect::<Vec<_>>();
    vec![
        tiny(&["inspect", db]),
        tiny(&["verify", db]),
        tiny(&["wal", "dump", db]),
        tiny(&["repair", db, "--dry-run"]),
        tiny(&["convert", db, "--to", "latest"]),
        tiny(&[
            "bench",
            "--vectors",
            "300",
            "--dim",
            "8",
            "--runs",
            "1",
            "--wal-ops",
            "20",
            "--batches",
            "1",
            "--dir",
            bench_dir.to_str().unwrap(),
        ]),
        tiny(&[
            "demo",
            "--vectors",
            "200",
            "--dim",
            "8",
            "--kill-after",
            "20",
            "--cleanup",
            "--dir",
            demo.to_str().unwrap(),
        ]),
    ]
}

pub fn cli() -> Command {
    Command::cargo_bin("iqdb-persist").unwrap()
}

pub fn json(output: &[u8]) -> serde_json::Value {
    serde_json::from_slice(output).unwrap_or_else(|e| {
        panic!(
            "not one JSON document ({e}):\n{}",
            String::from_utf8_lossy(output)
        )
    })
}

pub fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts stderr is exactly one line and shows no panic.
pub fn assert_one_line_error(output: &std::process::Output) {
    let err = stderr(output);
    assert_eq!(err.lines().count(), 1, "stderr is not one line: {err:?}");
    assert!(err.starts_with("iqdb-persist: error: "), "{err:?}");
    assert!(!err.contains("panicked"), "{err:?}");
    assert!(!err.contains("RUST_BACKTRACE"), "{err:?}");
}

/// Writes a v1 snapshot with any index-type tag and payload (checksum
/// valid), through the library's header writer.
pub fn foreign_snapshot(path: &Path, index_type: &str, payload: &[u8]) {
    let header = iqdb_persist::FileHeader {
        magic: iqdb_persist::MAGIC,
        version: 1,
        index_type: index_type.to_string(),
        dim: 4,
        metric: DistanceMetric::Cosine,
        n_vectors: 3,
        crc32: iqdb_persist::checksum::compute(payload),
    };
    let mut bytes = Vec::new();
    iqdb_persist::format::write_header(&mut bytes, &header).unwrap();
    bytes.extend_from_slice(payload);
    std::fs::write(path, bytes).unwrap();
}

pub fn u64_id(n: u64) -> VectorId {
    VectorId::U64(n)
}

pub fn arc(v: Vec<f32>) -> Arc<[f32]> {
    Arc::from(v)
}
