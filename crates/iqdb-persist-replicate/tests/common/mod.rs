//! Shared fixtures: a WAL-mode database whose every operation is an insert
//! of a known record (so the state after sequence number `s` is known), and
//! the moto S3 server.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use iqdb_persist::{FsyncPolicy, PersistConfig, PersistedIndex};
use iqdb_persist_replicate::{Replica, StoreOptions};
use iqdb_persist_testkit::{VectorStore, generate};
use iqdb_types::DistanceMetric;

pub const SEED: u64 = 11;
pub const BASE: u64 = 50;
pub const DIM: usize = 8;

/// A database and its writer. Operation `s` (sequence number `s`, from 1)
/// inserts record `BASE + s - 1`.
pub struct TestDb {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub db: PersistedIndex<VectorStore>,
}

impl TestDb {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.iqdb");
        let db = PersistedIndex::open_with(
            generate::store(SEED, BASE, DIM, DistanceMetric::Euclidean),
            config(&path),
        )
        .unwrap();
        Self { dir, path, db }
    }

    /// The sequence number the next operation gets.
    pub fn next_seq(&self) -> u64 {
        self.db.next_sequence().unwrap()
    }

    /// Inserts `n` records one by one.
    pub fn insert(&mut self, n: u64) {
        for _ in 0..n {
            let i = BASE + self.next_seq() - 1;
            let (id, v, m) = generate::record(SEED, i, DIM);
            self.db.insert(id, v, m).unwrap();
        }
    }

    /// Inserts `n` records as one batch (one frame).
    pub fn batch(&mut self, n: u64) {
        let first = BASE + self.next_seq() - 1;
        let mut batch = self.db.batch();
        for i in first..first + n {
            let (id, v, m) = generate::record(SEED, i, DIM);
            batch.insert(id, v, m);
        }
        batch.commit().unwrap();
    }

    pub fn checkpoint(&mut self) {
        self.db.checkpoint().unwrap();
    }
}

pub fn config(path: &Path) -> PersistConfig {
    let mut config = PersistConfig::new(path);
    config.wal_enabled = true;
    config.fsync_policy = FsyncPolicy::Always;
    config
}

/// The state after every operation below `end_seq`.
pub fn expected(end_seq: u64) -> VectorStore {
    generate::store(SEED, BASE + end_seq - 1, DIM, DistanceMetric::Euclidean)
}

/// Loads a restored database and checks it holds exactly the operations
/// below `end_seq`.
pub fn check_restored(path: &Path, end_seq: u64) {
    let db = PersistedIndex::<VectorStore>::load(config(path))
        .unwrap_or_else(|e| panic!("restored database does not load: {e}"));
    assert_eq!(db.next_sequence(), Some(end_seq), "next sequence number");
    assert!(
        db.index() == &expected(end_seq),
        "restored state differs from the first {} operations",
        end_seq - 1
    );
}

/// A fresh in-memory replica name.
pub fn memory_url(test: &str) -> String {
    format!("memory://{test}-{}/db", std::process::id())
}

pub fn open(url: &str) -> Replica {
    Replica::open(url, &StoreOptions::default()).unwrap()
}

// ---- moto ------------------------------------------------------------

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace().join("target"), PathBuf::from)
}

fn http(endpoint: &str, method: &str, path: &str) -> Option<u16> {
    let addr = endpoint.strip_prefix("http://")?.trim_end_matches('/');
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split(' ').nth(1)?.parse().ok()
}

fn endpoint_file() -> PathBuf {
    target_dir().join("moto").join("endpoint")
}

fn alive(endpoint: &str) -> bool {
    http(endpoint, "GET", "/moto-api/").is_some_and(|c| c == 200)
}

/// The moto server's endpoint: `IQDB_S3_ENDPOINT`, or the one
/// `scripts/s3-server.sh start` wrote, starting it if needed. `None` (with
/// a loud message) when it cannot be had outside CI; under CI (`CI` set) a
/// missing server fails the test.
pub fn s3_endpoint() -> Option<String> {
    if let Ok(e) = std::env::var("IQDB_S3_ENDPOINT") {
        assert!(
            alive(&e),
            "IQDB_S3_ENDPOINT={e} does not answer GET /moto-api/"
        );
        return Some(e);
    }
    let read = || {
        std::fs::read_to_string(endpoint_file())
            .ok()
            .map(|s| s.trim().to_string())
    };
    if let Some(e) = read().filter(|e| alive(e)) {
        return Some(e);
    }
    let script = workspace().join("scripts/s3-server.sh");
    let started = std::process::Command::new("bash")
        .arg(&script)
        .arg("start")
        .env("CARGO_TARGET_DIR", target_dir())
        .status()
        .is_ok_and(|s| s.success());
    match read().filter(|e| started && alive(e)) {
        Some(e) => Some(e),
        None if std::env::var_os("CI").is_some() => {
            panic!(
                "CI is set but the moto S3 server could not be started ({} start)",
                script.display()
            )
        }
        None => {
            eprintln!(
                "\n!!!!! SKIPPED: no S3 server (moto) could be started with {} start; \
                 this test did not run !!!!!\n",
                script.display()
            );
            None
        }
    }
}

/// Creates a fresh bucket and returns its name.
pub fn new_bucket(endpoint: &str, test: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let name = format!(
        "{}-{}-{}-{nanos}",
        test.replace('_', "-").chars().take(30).collect::<String>(),
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
    .to_lowercase();
    let code = http(endpoint, "PUT", &format!("/{name}"));
    assert_eq!(code, Some(200), "creating bucket {name}");
    name
}

/// Store options for the moto server.
pub fn s3_options(endpoint: &str) -> StoreOptions {
    StoreOptions {
        endpoint: Some(endpoint.to_string()),
        region: Some("us-east-1".into()),
        allow_http: Some(true),
        access_key_id: Some("testing".into()),
        secret_access_key: Some("testing".into()),
        ..StoreOptions::default()
    }
}
