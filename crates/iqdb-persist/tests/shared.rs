//! `SharedIndex`: many threads writing at once, reloaded and compared with
//! exactly the calls that returned Ok; an fsync failure injected under
//! concurrent writers; checkpoints while writers run; conversions.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use iqdb_index::Index;
use iqdb_persist::{
    FsyncPolicy, Operation, Options, PersistConfig, PersistError, PersistedIndex, SharedIndex,
    SnapshotFormat, WalFormat,
};
use iqdb_persist_testkit::VectorStore;
use iqdb_persist_testkit::simfs::{Fault, OpKind, SimFs};
use iqdb_types::{DistanceMetric, VectorId};

const DIM: usize = 4;

fn empty() -> VectorStore {
    VectorStore::new(DIM, DistanceMetric::Euclidean, Default::default())
        .unwrap_or_else(|e| panic!("{e}"))
}

fn vector(id: u64, writer: u64) -> Arc<[f32]> {
    Arc::from(vec![id as f32, writer as f32, 1.5, -(id as f32) / 7.0])
}

fn config(path: PathBuf, policy: FsyncPolicy) -> PersistConfig {
    PersistConfig {
        path,
        wal_enabled: true,
        fsync_policy: policy,
        compression: iqdb_persist::Compression::None,
    }
}

fn options(fs: &SimFs, wal: WalFormat) -> Options {
    let snapshot = if wal == WalFormat::V1 {
        SnapshotFormat::V2
    } else {
        SnapshotFormat::V3
    };
    Options::new()
        .file_system(Arc::new(fs.clone()))
        .wal_format(wal)
        .snapshot_format(snapshot)
}

/// What each acknowledged insert stored: id -> vector.
type Acked = BTreeMap<u64, Vec<f32>>;

/// `threads` writers insert ids from overlapping ranges (so some collide,
/// within a group and across groups), a few as batches, some with the wrong
/// dimension; returns the acknowledged inserts and the rejected ids.
fn hammer(db: &SharedIndex<VectorStore>, threads: u64, per_thread: u64) -> (Acked, Vec<u64>) {
    let results: Vec<(Acked, Vec<u64>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let db = db.clone();
                s.spawn(move || {
                    let mut acked = Acked::new();
                    let mut failed = Vec::new();
                    for k in 0..per_thread {
                        // Thread t writes ids t*per/2 .. : neighbours overlap.
                        let id = t * per_thread / 2 + k;
                        let v = vector(id, t);
                        if k % 11 == 5 {
                            let bad: Arc<[f32]> = Arc::from(vec![1.0; DIM + 1]);
                            let r = db.insert(VectorId::from(id + 1_000_000), bad, None);
                            assert!(matches!(r, Err(PersistError::IndexBuild(_))), "{r:?}");
                            failed.push(id + 1_000_000);
                        }
                        let r = if k % 7 == 3 {
                            db.apply(vec![Operation::Insert {
                                id: VectorId::from(id),
                                vector: v.clone(),
                                metadata: None,
                            }])
                        } else {
                            db.insert(VectorId::from(id), v.clone(), None)
                        };
                        match r {
                            Ok(()) => {
                                acked.insert(id, v.to_vec());
                            }
                            Err(PersistError::IndexBuild(_) | PersistError::Batch { .. }) => {
                                failed.push(id)
                            }
                            Err(e) => panic!("unexpected error {e}"),
                        }
                    }
                    (acked, failed)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| panic!("writer panicked")))
            .collect()
    });
    let mut acked = Acked::new();
    let mut failed = Vec::new();
    for (a, f) in results {
        for (id, v) in a {
            assert!(acked.insert(id, v).is_none(), "id {id} acknowledged twice");
        }
        failed.extend(f);
    }
    (acked, failed)
}

fn contents(index: &VectorStore) -> Acked {
    index
        .iter()
        .map(|(id, v, _)| match id {
            VectorId::U64(n) => (*n, v.to_vec()),
            other => panic!("unexpected id {other:?}"),
        })
        .collect()
}

fn concurrent_reload_matches(wal: WalFormat, policy: FsyncPolicy) {
    let fs = SimFs::new();
    let cfg = config(PathBuf::from("/db/vectors.iqdb"), policy);
    let db = PersistedIndex::open_with_options(empty(), cfg.clone(), options(&fs, wal))
        .unwrap_or_else(|e| panic!("{e}"))
        .into_shared();
    let (acked, failed) = hammer(&db, 8, 60);
    assert!(!failed.is_empty(), "the workload has collisions");
    let live = db.read(contents).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(live, acked);
    // Kill -9: the files as they are, page cache included, no close.
    let killed = PersistedIndex::<VectorStore>::load_with_options(
        cfg.clone(),
        options(&fs.live_image(), wal),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        contents(killed.index()),
        acked,
        "kill -9 {wal:?} {policy:?}"
    );
    if policy == FsyncPolicy::Always {
        // Power loss: only what was fsynced, which is every Ok.
        let lost = PersistedIndex::<VectorStore>::load_with_options(
            cfg.clone(),
            options(&fs.durable_image(), wal),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(contents(lost.index()), acked, "power loss {wal:?}");
    }
    let db = db
        .try_into_inner()
        .unwrap_or_else(|_| panic!("the last clone converts back"));
    db.close().unwrap_or_else(|e| panic!("{e}"));
    let reloaded = PersistedIndex::<VectorStore>::load_with_options(cfg, options(&fs, wal))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(contents(reloaded.index()), acked, "{wal:?} {policy:?}");
}

#[test]
fn concurrent_writers_reload_exactly_the_acknowledged_writes_v2() {
    concurrent_reload_matches(WalFormat::V2, FsyncPolicy::Always);
    concurrent_reload_matches(WalFormat::V2, FsyncPolicy::Never);
    concurrent_reload_matches(
        WalFormat::V2,
        FsyncPolicy::Periodic(Duration::from_millis(5)),
    );
}

#[test]
fn concurrent_writers_reload_exactly_the_acknowledged_writes_v1() {
    concurrent_reload_matches(WalFormat::V1, FsyncPolicy::Always);
    concurrent_reload_matches(WalFormat::V1, FsyncPolicy::Never);
}

#[test]
fn same_group_duplicates_and_batches_split_at_the_rejection() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cfg = config(dir.path().join("db.iqdb"), FsyncPolicy::Always);
    let db = PersistedIndex::open_with(empty(), cfg.clone())
        .unwrap_or_else(|e| panic!("{e}"))
        .into_shared();
    db.insert(VectorId::from(1u64), vector(1, 0), None)
        .unwrap_or_else(|e| panic!("{e}"));
    let batch = vec![
        Operation::Insert {
            id: VectorId::from(2u64),
            vector: vector(2, 0),
            metadata: None,
        },
        Operation::Insert {
            id: VectorId::from(1u64),
            vector: vector(1, 9),
            metadata: None,
        },
        Operation::Insert {
            id: VectorId::from(3u64),
            vector: vector(3, 0),
            metadata: None,
        },
    ];
    match db.apply(batch) {
        Err(PersistError::Batch { applied: 1, .. }) => {}
        other => panic!("expected a batch stopped after 1, got {other:?}"),
    }
    db.delete(&VectorId::from(1u64))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(db.delete(&VectorId::from(1u64)).is_err());
    db.close().unwrap_or_else(|e| panic!("{e}"));
    let reloaded = PersistedIndex::<VectorStore>::load(cfg).unwrap_or_else(|e| panic!("{e}"));
    let expect: Acked = [(2, vector(2, 0).to_vec())].into_iter().collect();
    assert_eq!(contents(reloaded.index()), expect);
}

#[test]
fn checkpoints_while_writers_run() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cfg = config(dir.path().join("db.iqdb"), FsyncPolicy::Always);
    let db = PersistedIndex::open_with(empty(), cfg.clone())
        .unwrap_or_else(|e| panic!("{e}"))
        .into_shared();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (acked, checkpoints) = std::thread::scope(|s| {
        let checkpointer = s.spawn(|| {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                db.checkpoint().unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
            n
        });
        let (acked, _) = hammer(&db, 4, 80);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (
            acked,
            checkpointer.join().unwrap_or_else(|_| panic!("panicked")),
        )
    });
    assert!(checkpoints > 0);
    db.close().unwrap_or_else(|e| panic!("{e}"));
    let reloaded = PersistedIndex::<VectorStore>::load(cfg).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(contents(reloaded.index()), acked);
}

fn fsync_failure(wal: WalFormat) {
    let fs = SimFs::new();
    let cfg = config(PathBuf::from("/db/vectors.iqdb"), FsyncPolicy::Always);
    let db = PersistedIndex::open_with_options(empty(), cfg.clone(), options(&fs, wal))
        .unwrap_or_else(|e| panic!("{e}"))
        .into_shared();
    // The 20th fsync after the open fails.
    fs.fail_next(OpKind::Sync, 19, Fault::Io);
    let threads = 6u64;
    let outcomes: Vec<Vec<(u64, Result<(), String>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let db = db.clone();
                s.spawn(move || {
                    let mut out = Vec::new();
                    for k in 0..200u64 {
                        let id = t * 1000 + k;
                        let r = db.insert(VectorId::from(id), vector(id, t), None);
                        let stop = r.is_err();
                        out.push((id, r.map_err(|e| format!("{e:?}"))));
                        if stop && db.is_poisoned() {
                            break;
                        }
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| panic!("writer panicked")))
            .collect()
    });
    let fired = fs.fired_faults();
    assert_eq!(fired.len(), 1, "the fsync fault fired: {fired:?}");
    assert_eq!(fired[0].kind, OpKind::Sync);
    assert!(db.is_poisoned());
    assert!(matches!(
        db.read(|i| i.len()),
        Err(PersistError::Poisoned { .. })
    ));
    assert!(db.insert(VectorId::from(9u64), vector(9, 9), None).is_err());
    let mut acked = Acked::new();
    let mut io_failed = Acked::new();
    for (t, out) in outcomes.iter().enumerate() {
        for (id, r) in out {
            match r {
                Ok(()) => {
                    acked.insert(*id, vector(*id, t as u64).to_vec());
                }
                Err(e) if e.starts_with("Io") => {
                    io_failed.insert(*id, vector(*id, t as u64).to_vec());
                }
                Err(e) => assert!(e.starts_with("Poisoned"), "{e}"),
            }
        }
        // Every thread stopped on an error: it saw the failure or the poison.
        assert!(out.last().is_some_and(|(_, r)| r.is_err()));
    }
    assert!(
        !io_failed.is_empty(),
        "the failed group's callers got the I/O error"
    );
    // Converted back, the handle stays poisoned.
    let mut inner = db
        .try_into_inner()
        .unwrap_or_else(|_| panic!("the last clone converts back"));
    assert!(matches!(
        inner.insert(VectorId::from(9u64), vector(9, 9), None),
        Err(PersistError::Poisoned { .. })
    ));
    drop(inner);
    // Power loss: exactly the acknowledged writes.
    let durable = PersistedIndex::<VectorStore>::load_with_options(
        cfg.clone(),
        options(&fs.durable_image(), wal),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(contents(durable.index()), acked, "{wal:?}");
    // Kill -9 (the page cache kept): every acknowledged write, plus at most
    // the failed group, whose callers all got the error.
    let live =
        PersistedIndex::<VectorStore>::load_with_options(cfg, options(&fs.live_image(), wal))
            .unwrap_or_else(|e| panic!("{e}"));
    let live = contents(live.index());
    for (id, v) in &acked {
        assert_eq!(live.get(id), Some(v), "acknowledged {id} kept");
    }
    for (id, v) in &live {
        assert!(
            acked.get(id) == Some(v) || io_failed.get(id) == Some(v),
            "{id} present but neither acknowledged nor in the failed group"
        );
    }
}

#[test]
fn fsync_failure_fails_every_waiter_and_poisons_v2() {
    fsync_failure(WalFormat::V2);
}

#[test]
fn fsync_failure_fails_every_waiter_and_poisons_v1() {
    fsync_failure(WalFormat::V1);
}

#[test]
fn converts_both_ways() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cfg = config(dir.path().join("db.iqdb"), FsyncPolicy::Always);
    let db = PersistedIndex::open_with(empty(), cfg).unwrap_or_else(|e| panic!("{e}"));
    let shared = SharedIndex::from(db);
    let other = shared.clone();
    let Err(shared) = shared.try_into_inner() else {
        panic!("two clones: no conversion back");
    };
    drop(other);
    let mut db = shared
        .try_into_inner()
        .unwrap_or_else(|_| panic!("the last clone converts back"));
    db.insert(VectorId::from(1u64), vector(1, 0), None)
        .unwrap_or_else(|e| panic!("{e}"));
    let shared = db.into_shared();
    assert_eq!(
        shared.read(|i| i.len()).unwrap_or_else(|e| panic!("{e}")),
        1
    );
    assert_eq!(shared.read_guard().map(|g| g.dim()).ok(), Some(DIM));
    fn send_sync<T: Send + Sync + Clone>(_: &T) {}
    send_sync(&shared);
    shared.close().unwrap_or_else(|e| panic!("{e}"));
}
