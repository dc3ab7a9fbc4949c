//! iqdb's own persistence API, end to end, over our iqdb-persist: create a
//! database at a path (WAL on), upsert with metadata, replace existing ids,
//! delete present and absent ids (iqdb treats an absent delete as `false`,
//! not an error), drop or close, reopen, and check that every record and
//! every search result is what it was, for every compression scheme and
//! fsync policy and for each index kind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use iqdb::{
    Compression, DistanceMetric, FsyncPolicy, HnswConfig, IndexKind, Iqdb, IqdbConfig, IvfConfig,
    Metadata, Vector, VectorId,
};
use iqdb_persist_testkit::generate;

const DIM: usize = 12;
const METRIC: DistanceMetric = DistanceMetric::Euclidean;

/// What the database should hold: id -> (vector, metadata).
type Model = HashMap<VectorId, (Vec<f32>, Option<Metadata>)>;

fn vector(values: &[f32]) -> Vector {
    Vector::new(values.to_vec()).unwrap()
}

fn upsert(db: &Iqdb, model: &mut Model, seed: u64, i: u64) {
    let (id, values, metadata) = generate::record(seed, i, DIM);
    db.upsert(id.clone(), vector(&values), metadata.clone())
        .unwrap_or_else(|e| panic!("upsert of record {i} (stream {seed}): {e}"));
    model.insert(id, (values.to_vec(), metadata));
}

fn delete(db: &Iqdb, model: &mut Model, i: u64) {
    let id = generate::id(i);
    let existed = db
        .delete(&id)
        .unwrap_or_else(|e| panic!("delete of record {i}: {e}"));
    assert_eq!(
        existed,
        model.remove(&id).is_some(),
        "delete of record {i} reports whether it existed"
    );
}

/// Session 1's writes: 150 inserts with metadata, 40 replacements of
/// existing ids with new values, 30 deletes of present ids, 10 of absent
/// ones.
fn first_session(db: &Iqdb, model: &mut Model) {
    for i in 0..150 {
        upsert(db, model, 1, i);
    }
    for i in (0..150).step_by(4).take(40) {
        upsert(db, model, 2, i);
    }
    for i in (1..150).step_by(5).take(30) {
        delete(db, model, i);
    }
    for i in 1000..1010 {
        delete(db, model, i); // absent: returns false, not an error
    }
    assert_eq!(db.len(), model.len(), "len after session 1");
}

fn queries() -> Vec<Vector> {
    (0..6)
        .map(|i| vector(&generate::record(77, i, DIM).1))
        .collect()
}

/// Every record as the model says, and nothing else.
fn check_records(db: &Iqdb, model: &Model, context: &str) {
    assert_eq!(db.len(), model.len(), "{context}: len");
    for i in 0..1010 {
        let id = generate::id(i);
        let found = db
            .get(&id)
            .unwrap_or_else(|e| panic!("{context}: get {id:?}: {e}"))
            .map(|(v, m)| (v.as_slice().to_vec(), m));
        let expected = model.get(&id).cloned();
        assert_eq!(found, expected, "{context}: record {i}");
    }
}

/// The top-10 of every query: ids, distances (bit for bit) and metadata.
fn search_all(db: &Iqdb) -> Vec<Vec<(VectorId, u32, Option<Metadata>)>> {
    queries()
        .iter()
        .map(|q| {
            db.search(q, 10)
                .unwrap()
                .into_iter()
                .map(|hit| (hit.id, hit.distance.to_bits(), hit.metadata))
                .collect()
        })
        .collect()
}

fn config(compression: Compression, fsync: FsyncPolicy) -> IqdbConfig {
    IqdbConfig::new(DIM, METRIC)
        .compression(compression)
        .fsync(fsync)
}

/// Create, write, drop without closing (the log is replayed on reopen),
/// write more, close (checkpoint), reopen: the same records and search
/// results at every step.
fn round_trip(path: &Path, config: &IqdbConfig, context: &str) {
    let mut model = Model::new();
    let db = Iqdb::open_with(path, config.clone()).unwrap();
    assert!(
        path.exists(),
        "{context}: creating writes the snapshot at once"
    );
    first_session(&db, &mut model);
    check_records(&db, &model, context);
    let hits = search_all(&db);
    assert!(
        hits.iter().all(|h| h.len() == 10),
        "{context}: every query has 10 hits"
    );
    drop(db); // no close: the writes are only in the log

    let db = Iqdb::open_with(path, config.clone())
        .unwrap_or_else(|e| panic!("{context}: reopen after drop: {e}"));
    let context2 = format!("{context}, reopened after drop");
    check_records(&db, &model, &context2);
    assert_eq!(search_all(&db), hits, "{context2}: search results");

    for i in 150..200 {
        upsert(&db, &mut model, 3, i);
    }
    for i in (0..200).step_by(7) {
        delete(&db, &mut model, i);
    }
    let hits = search_all(&db);
    db.close()
        .unwrap_or_else(|e| panic!("{context}: close: {e}"));

    let db = Iqdb::open_with(path, config.clone())
        .unwrap_or_else(|e| panic!("{context}: reopen after close: {e}"));
    let context3 = format!("{context}, reopened after close");
    check_records(&db, &model, &context3);
    assert_eq!(search_all(&db), hits, "{context3}: search results");
}

#[test]
fn round_trip_every_compression() {
    for compression in [
        Compression::None,
        Compression::Zstd { level: 3 },
        Compression::Zstd { level: 19 },
        Compression::Lz4,
    ] {
        let dir = tempfile::tempdir().unwrap();
        round_trip(
            &dir.path().join("db.iqdb"),
            &config(compression, FsyncPolicy::Always),
            &format!("{compression:?}"),
        );
    }
}

#[test]
fn round_trip_every_fsync_policy() {
    for fsync in [
        FsyncPolicy::Periodic(Duration::from_millis(20)),
        FsyncPolicy::Never,
    ] {
        let dir = tempfile::tempdir().unwrap();
        round_trip(
            &dir.path().join("db.iqdb"),
            &config(Compression::Lz4, fsync),
            &format!("{fsync:?}"),
        );
    }
}

#[test]
fn round_trip_hnsw_and_ivf() {
    let kinds = [
        IndexKind::Hnsw(HnswConfig::default()),
        IndexKind::Ivf(
            IvfConfig::default()
                .with_n_clusters(4)
                .with_n_probes(4)
                .with_seed(7),
        ),
    ];
    for kind in kinds {
        let dir = tempfile::tempdir().unwrap();
        let config = config(Compression::Zstd { level: 3 }, FsyncPolicy::Always).index(kind);
        round_trip(&dir.path().join("db.iqdb"), &config, &format!("{kind:?}"));
    }
}

/// `flush` compacts: the log shrinks back to its header and a reopen
/// replays nothing but sees everything.
#[test]
fn flush_folds_the_log_into_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.iqdb");
    let wal = dir.path().join("db.iqdb.wal");
    let config = config(Compression::None, FsyncPolicy::Always);
    let mut model = Model::new();
    let db = Iqdb::open_with(&path, config.clone()).unwrap();
    let empty_log = std::fs::metadata(&wal).unwrap().len();
    first_session(&db, &mut model);
    let full_log = std::fs::metadata(&wal).unwrap().len();
    assert!(full_log > empty_log, "writes are logged");
    db.flush().unwrap();
    assert_eq!(
        std::fs::metadata(&wal).unwrap().len(),
        empty_log,
        "after flush the log is empty again"
    );
    drop(db);
    let db = Iqdb::open_with(&path, config).unwrap();
    check_records(&db, &model, "after flush and reopen");
}

/// iqdb's handle is `Send + Sync` (it needs `PersistedIndex<IqdbCore>` to
/// be): writers on several threads share one database, and every write is
/// there after a reopen.
#[test]
fn concurrent_writers_through_one_handle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.iqdb");
    let config = config(Compression::None, FsyncPolicy::Always);
    let db = Arc::new(Iqdb::open_with(&path, config.clone()).unwrap());
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let db = Arc::clone(&db);
            std::thread::spawn(move || {
                for i in (t * 50)..(t * 50 + 50) {
                    let (id, values, metadata) = generate::record(9, i, DIM);
                    db.upsert(id, vector(&values), metadata).unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    drop(db);
    let model: Model = generate::records(9, 0..200, DIM)
        .map(|(id, values, metadata)| (id, (values.to_vec(), metadata)))
        .collect();
    let db = Iqdb::open_with(&path, config).unwrap();
    check_records(&db, &model, "after concurrent writers");
}

/// With ours, a second handle on a database that is open for writing is
/// refused (1.0 let both append to one log and lose writes): iqdb surfaces
/// our `Locked` error through `Error::Persist`.
#[test]
fn a_second_open_while_the_first_is_live_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.iqdb");
    let config = config(Compression::None, FsyncPolicy::Always);
    let first = Iqdb::open_with(&path, config.clone()).unwrap();
    first
        .upsert(VectorId::from(1u64), vector(&[0.5; DIM]), None)
        .unwrap();
    let err = Iqdb::open_with(&path, config.clone()).expect_err("second writer");
    assert!(
        matches!(
            err,
            iqdb::Error::Persist(iqdb_persist::PersistError::Locked { .. })
        ),
        "expected Error::Persist(Locked), got {err:?}"
    );
    first.close().unwrap();
    let again = Iqdb::open_with(&path, config).unwrap();
    assert_eq!(again.len(), 1, "the first handle's write is there");
}

/// iqdb 1.0's own test suite (its tests/recovery.rs) appends 13 bytes of
/// 0xAB to the log after two acknowledged upserts, as a torn write, and
/// expects the reopen to drop them, keep both records and take new writes.
/// The same, written here independently.
#[test]
fn junk_after_the_last_frame_is_dropped_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.iqdb");
    let db = Iqdb::open(&path, 2, DistanceMetric::Cosine).unwrap();
    db.upsert(VectorId::from(1u64), vector(&[0.1, 0.2]), None)
        .unwrap();
    db.upsert(VectorId::from(2u64), vector(&[0.3, 0.4]), None)
        .unwrap();
    drop(db);
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("db.iqdb.wal"))
        .unwrap();
    std::io::Write::write_all(&mut log, &[0xAB; 13]).unwrap();
    drop(log);

    let db = Iqdb::open(&path, 2, DistanceMetric::Cosine)
        .unwrap_or_else(|e| panic!("reopen after a junk tail: {e}"));
    assert_eq!(db.len(), 2, "both acknowledged upserts survive");
    db.upsert(VectorId::from(3u64), vector(&[0.5, 0.6]), None)
        .unwrap();
    db.close().unwrap();
    let db = Iqdb::open(&path, 2, DistanceMetric::Cosine).unwrap();
    assert_eq!(db.len(), 3, "the write after recovery is durable");
}
