//! Fsync policies, observed through the durable image of [`SimFs`] (what
//! power loss would leave): `Periodic` makes writes durable while the writer
//! is idle, dropping a handle syncs, `Never` leaves writes to `sync()`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use iqdb_index::Index;
use iqdb_persist::{FsyncPolicy, Options, PersistConfig, PersistedIndex};
use iqdb_persist_crash_tests::{DIM, Model, record, store_model};
use iqdb_persist_testkit::VectorStore;
use iqdb_persist_testkit::simfs::SimFs;
use iqdb_types::DistanceMetric;

fn config(policy: FsyncPolicy) -> PersistConfig {
    PersistConfig {
        path: PathBuf::from("/db/vectors.iqdb"),
        wal_enabled: true,
        fsync_policy: policy,
        compression: iqdb_persist::Compression::None,
    }
}

fn open(fs: &SimFs, policy: FsyncPolicy) -> PersistedIndex<VectorStore> {
    let store = VectorStore::new(DIM, DistanceMetric::Euclidean, Default::default())
        .unwrap_or_else(|e| panic!("{e}"));
    PersistedIndex::open_with_options(
        store,
        config(policy),
        Options::new().file_system(Arc::new(fs.clone())),
    )
    .unwrap_or_else(|e| panic!("open: {e}"))
}

/// The state a power loss right now would leave.
fn durable_state(fs: &SimFs, policy: FsyncPolicy) -> Model {
    let image = fs.durable_image();
    let db = PersistedIndex::<VectorStore>::load_with_options(
        config(policy),
        Options::new().file_system(Arc::new(image)),
    )
    .unwrap_or_else(|e| panic!("durable image does not load: {e}"));
    store_model(db.index()).unwrap_or_else(|e| panic!("{e}"))
}

fn insert(db: &mut PersistedIndex<VectorStore>, i: u64) {
    let (id, vector, metadata) = record(i);
    db.insert(id, vector, metadata)
        .unwrap_or_else(|e| panic!("insert {i}: {e}"));
}

/// 1.0 defect 7: under `Periodic(10 ms)`, acknowledged writes stayed
/// unsynced through 150 ms of idle.
#[test]
fn periodic_syncs_while_the_writer_is_idle() {
    let fs = SimFs::new();
    let policy = FsyncPolicy::Periodic(Duration::from_millis(10));
    let mut db = open(&fs, policy);
    for i in 0..20 {
        insert(&mut db, i);
    }
    // The writer goes quiet; the flusher must make everything durable. Poll
    // (no timing is asserted: a slow machine only makes the test wait).
    let expected: Model = (0..20).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while durable_state(&fs, policy) != expected {
        assert!(
            Instant::now() < deadline,
            "writes never became durable while idle"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(db);
}

/// 1.0 defect 7, second half: dropping the handle did not sync.
#[test]
fn dropping_the_handle_syncs() {
    let fs = SimFs::new();
    let policy = FsyncPolicy::Periodic(Duration::from_secs(3600));
    let mut db = open(&fs, policy);
    for i in 0..5 {
        insert(&mut db, i);
    }
    assert_eq!(
        durable_state(&fs, policy),
        Model::new(),
        "synced before the interval or the drop"
    );
    drop(db);
    assert_eq!(durable_state(&fs, policy), (0..5).collect::<Model>());
}

#[test]
fn never_leaves_writes_to_explicit_sync() {
    let fs = SimFs::new();
    let policy = FsyncPolicy::Never;
    let mut db = open(&fs, policy);
    insert(&mut db, 1);
    assert_eq!(durable_state(&fs, policy), Model::new());
    db.sync().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        durable_state(&fs, policy),
        [1].into_iter().collect::<Model>()
    );
    insert(&mut db, 2);
    db.checkpoint().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        durable_state(&fs, policy),
        [1, 2].into_iter().collect::<Model>()
    );
}

/// 1.0 defect 8: every insert paid its own fsync. A batch pays one.
#[test]
fn a_batch_of_many_writes_costs_one_fsync() {
    let fs = SimFs::new();
    let mut db = open(&fs, FsyncPolicy::Always);
    let before = fs.trace().len();
    let ops = (0..1000)
        .map(|i| iqdb_persist_crash_tests::Op::Insert(i).to_operation())
        .collect();
    db.apply(ops).unwrap_or_else(|e| panic!("{e}"));
    let kinds: Vec<_> = fs.trace()[before..]
        .iter()
        .map(|(_, kind, _)| *kind)
        .collect();
    use iqdb_persist_testkit::simfs::OpKind;
    assert_eq!(kinds, vec![OpKind::Write, OpKind::Sync]);
    assert_eq!(durable_state(&fs, FsyncPolicy::Always).len(), 1000);
}
