//! Replication under injected faults (the `FaultyStore` wrapper over
//! object_store's in-memory store, and a `ManualClock` for the lease):
//! leases that run out while nobody wants them, lost answers, takeovers,
//! a new holder racing the old one's commit, long catch-ups, outages,
//! restores racing merges, hostile bucket contents. Every injected fault is
//! checked to have fired.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{TestDb, check_restored};
use iqdb_persist_replicate::faults::{Fault, FaultyStore, Op};
use iqdb_persist_replicate::{
    Clock, Manifest, ManualClock, Replica, ReplicateError, Replicator, ReplicatorConfig,
    RestoreOptions, RestoreTarget,
};
use object_store::memory::InMemory;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt};

const TTL: Duration = Duration::from_secs(30);

fn faulty() -> Arc<FaultyStore> {
    Arc::new(FaultyStore::new(Arc::new(InMemory::new())))
}

fn replica(store: &Arc<FaultyStore>) -> Replica {
    Replica::with_store(store.clone(), "db").unwrap()
}

/// A replica reading the store underneath (no faults).
fn observer(store: &Arc<FaultyStore>) -> Replica {
    Replica::with_store(store.inner().clone(), "db").unwrap()
}

fn config(db: &TestDb, clock: &Arc<ManualClock>) -> ReplicatorConfig {
    let mut c = ReplicatorConfig::new(&db.path);
    c.lease_ttl = TTL;
    c.clock = clock.clone();
    c.interval = Duration::from_millis(20);
    c
}

fn raw_get(store: &Arc<dyn ObjectStore>, key: &str) -> Option<Vec<u8>> {
    futures::executor::block_on(async {
        match store.get(&ObjPath::from(key)).await {
            Ok(got) => Some(got.bytes().await.unwrap().to_vec()),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => panic!("{e}"),
        }
    })
}

fn raw_put(store: &Arc<dyn ObjectStore>, key: &str, bytes: Vec<u8>) {
    futures::executor::block_on(store.put(&ObjPath::from(key), bytes.into())).unwrap();
}

fn raw_delete(store: &Arc<dyn ObjectStore>, key: &str) {
    futures::executor::block_on(store.delete(&ObjPath::from(key))).unwrap();
}

fn restore_latest(r: &Replica) -> (tempfile::TempDir, iqdb_persist_replicate::RestoreReport) {
    let out = tempfile::tempdir().unwrap();
    let report = r
        .restore(&out.path().join("r"), &RestoreOptions::default())
        .unwrap();
    (out, report)
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_lease_that_ran_out_while_nobody_wanted_it_is_taken_again() {
    let store = faulty();
    let clock = Arc::new(ManualClock::new());
    let mut db = TestDb::new();
    let mut r = Replicator::new(replica(&store), config(&db, &clock)).unwrap();
    db.insert(3);
    r.sync().unwrap();
    // The store did not answer for four times the lease's time to live.
    clock.advance(TTL * 4);
    db.insert(2);
    let report = r.sync().expect("a lease nobody took is renewed, not lost");
    assert_eq!(report.end_seq, 6);
    assert_eq!(r.epoch(), 1, "same holder, same epoch");
    let lease = observer(&store).lease().unwrap().unwrap();
    assert_eq!(lease.epoch, 1);
    assert!(lease.expires_at_ms > clock.unix_ms(), "renewed");
    r.release().unwrap();
}

#[test]
fn a_lost_answer_to_a_renewal_is_not_a_takeover() {
    let store = faulty();
    let clock = Arc::new(ManualClock::new());
    let mut db = TestDb::new();
    let mut r = Replicator::new(replica(&store), config(&db, &clock)).unwrap();
    db.insert(1);
    r.sync().unwrap();

    // The renewal lands, its answer is lost, the client retries it and
    // gets 412 (its own first attempt changed the ETag).
    store.inject(Op::Put, "db/lease", Fault::AppliedThenRetried);
    clock.advance(TTL / 2);
    db.insert(1);
    let report = r.sync().expect("our own renewal is not a takeover");
    assert_eq!(store.fired(Fault::AppliedThenRetried), 1);
    assert_eq!(report.end_seq, 3);

    // The renewal lands and its answer is lost (a timeout).
    store.inject(Op::Put, "db/lease", Fault::LostResponse);
    clock.advance(TTL / 2);
    db.insert(1);
    let report = r.sync().expect("a lost answer is retried, not fatal");
    assert_eq!(store.fired(Fault::LostResponse), 1);
    assert_eq!(report.end_seq, 4);
    assert_eq!(r.epoch(), 1);
    // And the next renewal works as usual.
    clock.advance(TTL / 2);
    db.insert(1);
    assert_eq!(r.sync().unwrap().end_seq, 5);
    r.release().unwrap();
}

#[test]
fn a_lost_answer_to_taking_the_lease_is_recognised() {
    let store = faulty();
    let clock = Arc::new(ManualClock::new());
    let db = TestDb::new();
    store.inject(Op::Put, "db/lease", Fault::LostResponse);
    let r = Replicator::new(replica(&store), config(&db, &clock))
        .expect("the lease our own lost write took is ours");
    assert_eq!(store.fired(Fault::LostResponse), 1);
    assert_eq!(r.epoch(), 1);
    r.release().unwrap();
}

#[test]
fn a_takeover_by_another_replicator_stops_the_old_one() {
    let store = faulty();
    let mut db = TestDb::new();
    let clock_a = Arc::new(ManualClock::new());
    let mut a = Replicator::new(replica(&store), config(&db, &clock_a)).unwrap();
    db.insert(2);
    a.sync().unwrap();
    // B's clock says A's lease expired (A stalled); B takes over.
    let clock_b = Arc::new(ManualClock::new());
    clock_b.advance(TTL * 2);
    let mut b = Replicator::new(replica(&store), config(&db, &clock_b)).unwrap();
    assert_eq!(b.epoch(), 2);
    db.insert(1);
    let err = a.sync().unwrap_err();
    assert!(err.is_lease_loss(), "{err}");
    // Also when A notices at its renewal.
    clock_a.advance(TTL);
    let err = a.sync().unwrap_err();
    assert!(err.is_lease_loss(), "{err}");
    assert_eq!(b.sync().unwrap().end_seq, 4);
    b.release().unwrap();
}

#[test]
fn spawned_replicators_report_their_fate() {
    let store = faulty();
    let mut db = TestDb::new();
    let clock_a = Arc::new(ManualClock::new());
    let a = Replicator::new(replica(&store), config(&db, &clock_a)).unwrap();
    let handle = a.spawn();
    db.insert(2);
    wait_for("the first commit", || handle.status().end_seq == 3);
    assert!(handle.status().running);
    let clock_b = Arc::new(ManualClock::new());
    clock_b.advance(TTL * 2);
    let b = Replicator::new(replica(&store), config(&db, &clock_b)).unwrap();
    db.insert(1);
    wait_for("the old replicator to stop", || handle.is_finished());
    let status = handle.status();
    assert!(!status.running);
    let fate = status.fate.clone().expect("it says why it stopped");
    assert!(fate.contains("fenced") || fate.contains("took"), "{fate}");
    let err = handle.stop().unwrap_err();
    assert!(err.is_lease_loss(), "{err}");
    b.release().unwrap();
}

#[test]
fn a_new_holder_adopts_what_the_old_one_committed_meanwhile() {
    let store = faulty();
    let inner = store.inner().clone();
    let mut db = TestDb::new();
    let clock_a = Arc::new(ManualClock::new());
    let mut ca = config(&db, &clock_a);
    ca.retain_generations = Some(1);
    ca.delete_grace = Duration::ZERO;
    let mut a = Replicator::new(replica(&store), ca).unwrap();
    db.insert(3);
    a.sync().unwrap();
    let m1 = raw_get(&inner, "db/manifest").unwrap();
    let old_generation = a.manifest().generations[0].id.clone();
    // A checkpoints, starts a new generation, prunes the old one and
    // deletes its objects.
    db.checkpoint();
    db.insert(2);
    let report = a.sync().unwrap();
    assert_eq!(report.pruned_generations, 1);
    assert!(report.deleted_objects >= 2, "{report:?}");
    let m2 = raw_get(&inner, "db/manifest").unwrap();
    // B read the manifest before A's commit...
    raw_put(&inner, "db/manifest", m1);
    // ... and A's commit lands between B's read and B's first write.
    store.before_next(Op::Put, "db/manifest", move |inner| {
        raw_put(inner, "db/manifest", m2);
    });
    let clock_b = Arc::new(ManualClock::new());
    clock_b.advance(TTL * 2);
    let mut b = Replicator::new(replica(&store), config(&db, &clock_b)).unwrap();
    assert_eq!(store.pending_hooks(), 0, "the race was staged");
    let ids: Vec<_> = b
        .manifest()
        .generations
        .iter()
        .map(|g| g.id.clone())
        .collect();
    assert!(
        !ids.contains(&old_generation),
        "{ids:?} lists deleted objects"
    );
    assert_eq!(b.manifest().epoch, 2);
    let (_dir, report) = restore_latest(&observer(&store));
    assert_eq!(report.end_seq, 6);
    check_restored(&report.path, 6);
    db.insert(1);
    assert_eq!(b.sync().unwrap().end_seq, 7);
    let (_dir, report) = restore_latest(&observer(&store));
    check_restored(&report.path, 7);
    b.release().unwrap();
}

#[test]
fn a_long_catch_up_commits_as_it_goes_and_keeps_its_lease() {
    let store = faulty();
    let clock = Arc::new(ManualClock::new());
    let mut db = TestDb::new();
    let mut c = config(&db, &clock);
    c.max_segment_bytes = 2048;
    c.commit_every = 2;
    c.max_segments = 100_000;
    let mut r = Replicator::new(replica(&store), c).unwrap();
    db.insert(300);
    // Each segment upload takes half the lease's time to live.
    for _ in 0..1000 {
        let clock = clock.clone();
        store.before_next(Op::Put, "/wal/", move |_| clock.advance(TTL / 2));
    }
    let commits = Arc::new(AtomicU64::new(0));
    let counted = commits.clone();
    r.on_commit(move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
    });
    let report = r
        .sync()
        .expect("a catch-up longer than the lease keeps the lease");
    let hooks_run = 1000 - store.pending_hooks();
    assert!(hooks_run >= 8, "only {hooks_run} segment uploads");
    assert_eq!(report.end_seq, 301);
    let n = commits.load(Ordering::SeqCst);
    assert!(n >= 4, "{n} commits for {} segments", report.segments);
    let (_dir, restored) = restore_latest(&observer(&store));
    check_restored(&restored.path, 301);
    r.release().unwrap();
}

#[test]
fn run_rides_out_an_outage_longer_than_the_lease() {
    let store = faulty();
    let clock = Arc::new(ManualClock::new());
    let mut db = TestDb::new();
    let handle = Replicator::new(replica(&store), config(&db, &clock))
        .unwrap()
        .spawn();
    db.insert(5);
    let watch = observer(&store);
    let end = |r: &Replica| {
        r.manifest()
            .unwrap()
            .and_then(|m| {
                m.generations
                    .last()
                    .map(iqdb_persist_replicate::Generation::end_seq)
            })
            .unwrap_or(0)
    };
    wait_for("the first writes", || end(&watch) == 6);
    // The store stops answering (requests time out); the lease runs out.
    store.freeze(Some(Duration::from_millis(30)));
    clock.advance(TTL * 3);
    db.insert(10);
    wait_for("failed rounds", || handle.status().consecutive_errors >= 3);
    assert_eq!(end(&watch), 6);
    store.thaw();
    wait_for("the replica to catch up", || end(&watch) == 16);
    assert!(!handle.is_finished(), "{:?}", handle.status());
    let status = handle.status();
    assert!(status.running && status.errors >= 3, "{status:?}");
    assert_eq!(status.epoch, 1);
    let summary = handle.stop().unwrap();
    assert_eq!(summary.end_seq, 16);
    let (_dir, report) = restore_latest(&watch);
    check_restored(&report.path, 16);
}

/// A replica with two generations and a few segments; returns the store,
/// the database and the committed manifest.
fn populated() -> (Arc<FaultyStore>, TestDb, Manifest) {
    let store = faulty();
    let clock = Arc::new(ManualClock::new());
    let mut db = TestDb::new();
    let mut c = config(&db, &clock);
    c.retain_generations = None;
    let mut r = Replicator::new(replica(&store), c).unwrap();
    db.insert(3);
    r.sync().unwrap();
    db.checkpoint();
    db.insert(2);
    r.sync().unwrap();
    db.insert(2);
    r.sync().unwrap();
    r.release().unwrap();
    let m = observer(&store).manifest().unwrap().unwrap();
    assert_eq!(m.generations.len(), 2);
    assert_eq!(m.generations[1].segments.len(), 2);
    (store, db, m)
}

fn install(store: &Arc<FaultyStore>, m: &Manifest) {
    raw_put(store.inner(), "db/manifest", m.to_bytes());
}

#[test]
fn hostile_manifests_are_errors_never_panics_or_huge_allocations() {
    let (store, _db, good) = populated();
    let r = observer(&store);
    type Mutation = fn(&mut Manifest);
    let cases: [(&str, Mutation); 6] = [
        ("log base after the snapshot's end", |m| {
            m.generations[1].base_seq += 1;
        }),
        ("segment length u64::MAX", |m| {
            m.generations[1].segments[1].len = u64::MAX;
        }),
        ("snapshot length u64::MAX", |m| {
            m.generations[1].snapshot.len = u64::MAX - 1;
        }),
        ("segment outside its generation", |m| {
            let other = m.generations[0].snapshot.key.clone();
            m.generations[1].segments[0].key = other;
        }),
        ("empty sequence range", |m| {
            let s = &mut m.generations[1].segments[0];
            s.end_seq = s.first_seq;
        }),
        ("snapshot key elsewhere", |m| {
            m.generations[1].snapshot.key = "lease".into();
        }),
    ];
    for (what, mutate) in cases {
        let mut m = good.clone();
        mutate(&mut m);
        install(&store, &m);
        let out = tempfile::tempdir().unwrap();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            r.restore(&out.path().join("r"), &RestoreOptions::default())
        }));
        let result = result.unwrap_or_else(|_| panic!("{what}: restore panicked"));
        match result {
            Ok(report) => {
                assert!(
                    report.fell_back.is_some(),
                    "{what}: restored the damaged point"
                );
                check_restored(&report.path, report.end_seq);
            }
            Err(e) => assert!(e.is_corruption(), "{what}: {e}"),
        }
        // For a chosen point it is an error, named as damage.
        let out = tempfile::tempdir().unwrap();
        let err = r
            .restore(
                &out.path().join("r"),
                &RestoreOptions {
                    target: RestoreTarget::Sequence(6),
                    name: None,
                },
            )
            .unwrap_err();
        assert!(err.is_corruption(), "{what}: {err}");
    }
    // An oversized lease object is refused by its size.
    raw_put(store.inner(), "db/lease", vec![b' '; 1 << 20]);
    let err = r.lease().unwrap_err();
    assert!(err.is_corruption(), "{err}");
}

#[test]
fn objects_of_the_wrong_size_are_retried_then_caught() {
    let (store, _db, m) = populated();
    let r = replica(&store);
    let seg = m.generations[1].segments[0].key.clone();
    // Once: a short body is a transfer error, retried.
    store.inject(Op::Get, &seg, Fault::Truncated);
    store.inject(Op::Get, &seg, Fault::Extended);
    let (_dir, report) = restore_latest(&r);
    assert_eq!(store.fired(Fault::Truncated), 1);
    assert_eq!(store.fired(Fault::Extended), 1);
    assert!(report.fell_back.is_none(), "{report:?}");
    check_restored(&report.path, 8);
    // Every time: the object is not what the manifest says.
    for _ in 0..10 {
        store.inject(Op::Get, &seg, Fault::Extended);
    }
    let (_dir, report) = restore_latest(&r);
    assert!(store.fired(Fault::Extended) >= 5);
    let why = report.fell_back.expect("falls back before the bad segment");
    assert!(why.contains("bytes"), "{why}");
    check_restored(&report.path, report.end_seq);
}

#[test]
fn a_restore_survives_a_merge_that_deletes_what_it_was_reading() {
    let store = faulty();
    let inner = store.inner().clone();
    let clock = Arc::new(ManualClock::new());
    let mut db = TestDb::new();
    let mut c = config(&db, &clock);
    c.max_segments = 4;
    c.delete_grace = Duration::ZERO;
    let mut r = Replicator::new(replica(&store), c).unwrap();
    for _ in 0..4 {
        db.insert(2);
        r.sync().unwrap();
    }
    let m1 = raw_get(&inner, "db/manifest").unwrap();
    let m1_parsed = observer(&store).manifest().unwrap().unwrap();
    let old: Vec<(String, Vec<u8>)> = m1_parsed.generations[0]
        .segments
        .iter()
        .map(|s| {
            let key = format!("db/{}", s.key);
            let bytes = raw_get(&inner, &key).unwrap();
            (key, bytes)
        })
        .collect();
    db.insert(2);
    let report = r.sync().unwrap();
    assert!(report.merged_segments >= 2, "{report:?}");
    let m2 = raw_get(&inner, "db/manifest").unwrap();
    let gone: Vec<String> = old
        .iter()
        .filter(|(k, _)| raw_get(&inner, k).is_none())
        .map(|(k, _)| k.clone())
        .collect();
    assert!(!gone.is_empty(), "the merge deleted old segments");
    r.release().unwrap();
    // Back to before the merge; the restore reads that manifest, and the
    // merge commits and deletes while it downloads the first segment.
    raw_put(&inner, "db/manifest", m1);
    for (k, b) in &old {
        raw_put(&inner, k, b.clone());
    }
    let first = old[0].0.clone();
    store.before_next(Op::Get, &first, move |inner| {
        for k in &gone {
            raw_delete(inner, k);
        }
        raw_put(inner, "db/manifest", m2);
    });
    let (_dir, report) = restore_latest(&replica(&store));
    assert_eq!(store.pending_hooks(), 0, "the race was staged");
    assert!(report.fell_back.is_none(), "{report:?}");
    assert_eq!(report.end_seq, 11);
    check_restored(&report.path, 11);
}

#[test]
fn merged_away_segments_are_deleted_only_after_the_grace_period() {
    let store = faulty();
    let inner = store.inner().clone();
    let clock = Arc::new(ManualClock::new());
    let mut db = TestDb::new();
    let mut c = config(&db, &clock);
    c.max_segments = 4;
    c.delete_grace = Duration::from_secs(60);
    let mut r = Replicator::new(replica(&store), c).unwrap();
    for _ in 0..4 {
        db.insert(2);
        r.sync().unwrap();
    }
    let old: Vec<String> = r.manifest().generations[0]
        .segments
        .iter()
        .map(|s| format!("db/{}", s.key))
        .collect();
    db.insert(2);
    let report = r.sync().unwrap();
    assert!(report.merged_segments >= 2, "{report:?}");
    let unlisted: Vec<&String> = old
        .iter()
        .filter(|k| {
            !r.manifest()
                .generations
                .iter()
                .flat_map(|g| g.segments.iter())
                .any(|s| format!("db/{}", s.key) == **k)
        })
        .collect();
    assert!(!unlisted.is_empty());
    for k in &unlisted {
        assert!(
            raw_get(&inner, k).is_some(),
            "{k} deleted within the grace period"
        );
    }
    clock.advance(Duration::from_secs(61));
    r.sync().unwrap();
    for k in &unlisted {
        assert!(
            raw_get(&inner, k).is_none(),
            "{k} kept after the grace period"
        );
    }
    r.release().unwrap();
}

#[test]
fn a_failed_restore_leaves_nothing_behind_and_a_retry_works() {
    let (store, _db, m) = populated();
    let r = replica(&store);
    let snapshot = m.generations[1].snapshot.key.clone();
    for _ in 0..10 {
        store.inject(Op::Get, &snapshot, Fault::Error);
    }
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("r");
    let err = r
        .restore(
            &dir,
            &RestoreOptions {
                target: RestoreTarget::Sequence(6),
                name: None,
            },
        )
        .unwrap_err();
    assert!(store.fired(Fault::Error) >= 5, "{err}");
    assert!(matches!(err, ReplicateError::Store { .. }), "{err}");
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    // A leftover of an older, killed restore does not block a retry.
    std::fs::write(dir.join(".db.iqdb.restore-tmp"), b"partial").unwrap();
    // Use up the remaining scripted faults.
    while store.pending() > 0 {
        let _ = futures::executor::block_on(store.get(&ObjPath::from(format!("db/{snapshot}"))));
    }
    let report = r
        .restore(
            &dir,
            &RestoreOptions {
                target: RestoreTarget::Sequence(6),
                name: None,
            },
        )
        .unwrap();
    check_restored(&report.path, 7);
    assert!(!dir.join(".db.iqdb.restore-tmp").exists());
}

#[test]
fn verify_downloads_every_object_and_names_the_damaged_ones() {
    let (store, _db, m) = populated();
    let r = observer(&store);
    let report = r.verify(&iqdb_persist_replicate::NoProgress).unwrap();
    let listed = m
        .generations
        .iter()
        .map(|g| 1 + g.segments.len() as u64)
        .sum::<u64>();
    assert_eq!(report.objects, listed);
    assert!(report.problems.is_empty(), "{report:?}");
    // One segment damaged (a flipped byte in its frames), one missing.
    let damaged = format!("db/{}", m.generations[1].segments[0].key);
    let mut bytes = raw_get(store.inner(), &damaged).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    raw_put(store.inner(), &damaged, bytes);
    let missing = format!("db/{}", m.generations[1].segments[1].key);
    raw_delete(store.inner(), &missing);
    let report = r.verify(&iqdb_persist_replicate::NoProgress).unwrap();
    let keys: Vec<&str> = report.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, vec![damaged.as_str(), missing.as_str()], "{report:?}");
}

#[test]
fn the_orphan_sweep_pages_through_a_large_listing() {
    let (store, db, m) = populated();
    let dir = format!("db/generations/{}/wal", m.generations[1].id);
    for i in 0..2500u64 {
        raw_put(
            store.inner(),
            &format!("{dir}/{i:020}-{i:020}-e00000001.seg"),
            vec![0],
        );
    }
    assert_eq!(observer(&store).unlisted_objects().unwrap().len(), 2500);
    let clock = Arc::new(ManualClock::new());
    let mut c = config(&db, &clock);
    c.delete_grace = Duration::ZERO;
    c.retain_generations = None;
    let mut r = Replicator::new(replica(&store), c).unwrap();
    let report = r.sync().unwrap();
    assert_eq!(report.deleted_objects, 2500, "{report:?}");
    assert!(observer(&store).unlisted_objects().unwrap().is_empty());
    r.release().unwrap();
}

#[test]
fn unlisted_keeps_at_most_the_keys_asked_for() {
    let (store, _db, m) = populated();
    let dir = format!("db/generations/{}/wal", m.generations[1].id);
    for i in 0..2500u64 {
        raw_put(
            store.inner(),
            &format!("{dir}/{i:020}-{i:020}-e00000001.seg"),
            vec![0; 3],
        );
    }
    let r = observer(&store);
    let summary = r.unlisted(10).unwrap();
    assert_eq!(summary.count, 2500);
    assert_eq!(summary.bytes, 7500);
    let mut all = r.unlisted_objects().unwrap();
    assert_eq!(all.len(), 2500);
    all.sort();
    assert_eq!(summary.keys, all[..10].to_vec());
    assert_eq!(r.unlisted(0).unwrap().keys, Vec::<String>::new());
}

/// Deleting a generation retention dropped consumes its listing page by
/// page: the first delete goes out after at most one page was listed,
/// although the generation holds thousands of objects.
#[test]
fn a_dropped_generation_is_deleted_page_by_page() {
    let (store, mut db, m) = populated();
    let old = &m.generations[0];
    let dir = format!("db/generations/{}/wal", old.id);
    for i in 0..2500u64 {
        raw_put(
            store.inner(),
            &format!("{dir}/{i:020}-{i:020}-e00000001.seg"),
            vec![0],
        );
    }
    let clock = Arc::new(ManualClock::new());
    let mut c = config(&db, &clock);
    c.delete_grace = Duration::ZERO;
    c.retain_generations = Some(1);
    let mut r = Replicator::new(replica(&store), c).unwrap();
    db.insert(1);
    let listed = store.listed();
    let before = listed.load(Ordering::SeqCst);
    let at_first_delete = Arc::new(AtomicU64::new(u64::MAX));
    {
        let (listed, seen) = (listed.clone(), at_first_delete.clone());
        store.before_next(Op::Delete, "", move |_| {
            seen.store(listed.load(Ordering::SeqCst), Ordering::SeqCst);
        });
    }
    let report = r.sync().unwrap();
    assert_eq!(store.pending_hooks(), 0, "a delete was made");
    assert!(report.pruned_generations >= 1, "{report:?}");
    assert!(report.deleted_objects > 2500, "{report:?}");
    let first = at_first_delete.load(Ordering::SeqCst) - before;
    let total = listed.load(Ordering::SeqCst) - before;
    assert!(
        first <= 1000,
        "{first} objects listed before the first delete"
    );
    assert!(total > 2500, "{total} listed in all");
    let left = futures::executor::block_on(async {
        use futures::StreamExt;
        store
            .inner()
            .list(Some(&ObjPath::from(format!("db/generations/{}", old.id))))
            .count()
            .await
    });
    assert_eq!(left, 0);
    r.release().unwrap();
}
