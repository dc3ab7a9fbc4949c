//! Replication and restore against object_store's in-memory store and the
//! local file system: shipping, checkpoints, restore targets, damage,
//! retention, orphans, the lease and fencing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestDb, check_restored, memory_url, open};
use iqdb_persist_replicate::{
    ReplicateError, Replicator, ReplicatorConfig, RestoreOptions, RestoreTarget, StoreOptions,
    memory_store,
};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStoreExt, PutPayload};

fn replicator(url: &str, db: &TestDb) -> Replicator {
    Replicator::new(open(url), ReplicatorConfig::new(&db.path)).unwrap()
}

fn restore(
    url: &str,
    target: RestoreTarget,
) -> (tempfile::TempDir, iqdb_persist_replicate::RestoreReport) {
    let out = tempfile::tempdir().unwrap();
    let report = open(url)
        .restore(
            &out.path().join("r"),
            &RestoreOptions { target, name: None },
        )
        .unwrap();
    (out, report)
}

fn memory_name(url: &str) -> String {
    url.strip_prefix("memory://")
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

/// Flips a byte of an object in a memory replica.
fn damage(url: &str, key: &str, at: usize) {
    let store = memory_store(&memory_name(url));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let path = ObjPath::from(format!("db/{key}"));
        let mut bytes = store
            .get(&path)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec();
        bytes[at] ^= 0x20;
        store.put(&path, PutPayload::from(bytes)).await.unwrap();
    });
}

fn put_raw(url: &str, key: &str, bytes: Vec<u8>) {
    let store = memory_store(&memory_name(url));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        store
            .put(&ObjPath::from(format!("db/{key}")), PutPayload::from(bytes))
            .await
            .unwrap();
    });
}

fn exists(url: &str, key: &str) -> bool {
    let store = memory_store(&memory_name(url));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        store
            .head(&ObjPath::from(format!("db/{key}")))
            .await
            .is_ok()
    })
}

#[test]
fn ships_writes_and_restores_the_latest_point() {
    let url = memory_url("latest");
    let mut db = TestDb::new();
    let mut r = replicator(&url, &db);
    let first = r.sync().unwrap();
    assert!(first.new_generation.is_some());
    assert!(first.committed);
    db.insert(10);
    let report = r.sync().unwrap();
    assert_eq!(
        (report.segments, report.frames, report.end_seq),
        (1, 10, 11)
    );
    db.batch(7);
    db.insert(2);
    let report = r.sync().unwrap();
    assert_eq!((report.frames, report.end_seq), (3, 20));
    // Nothing new: nothing uploaded, no manifest written.
    let idle = r.sync().unwrap();
    assert_eq!((idle.segments, idle.committed), (0, false));
    r.release().unwrap();

    let (out, restored) = restore(&url, RestoreTarget::Latest);
    assert_eq!(restored.end_seq, 20);
    assert_eq!(restored.fell_back, None);
    check_restored(&restored.path, 20);
    drop(out);
}

#[test]
fn a_checkpoint_starts_a_new_generation() {
    let url = memory_url("checkpoint");
    let mut db = TestDb::new();
    let mut config = ReplicatorConfig::new(&db.path);
    config.retain_generations = None;
    let mut r = Replicator::new(open(&url), config).unwrap();
    db.insert(5);
    r.sync().unwrap();
    db.checkpoint();
    db.insert(3);
    let report = r.sync().unwrap();
    assert!(report.new_generation.is_some(), "{report:?}");
    assert_eq!(report.end_seq, 9);
    let manifest = r.manifest().clone();
    assert_eq!(manifest.generations.len(), 2);
    assert_eq!(manifest.generations[1].base_seq, 6);
    // Two checkpoints between rounds: only the newest snapshot is shipped.
    db.checkpoint();
    db.insert(1);
    db.checkpoint();
    db.insert(1);
    let report = r.sync().unwrap();
    assert_eq!(report.end_seq, 11);
    assert_eq!(r.manifest().generations.last().unwrap().base_seq, 10);
    assert_eq!(r.manifest().generations.len(), 3);
    r.release().unwrap();
    for (target, end) in [
        (RestoreTarget::Latest, 11),
        (RestoreTarget::Sequence(3), 4),
        (RestoreTarget::Sequence(5), 6),
        (RestoreTarget::Sequence(7), 8),
    ] {
        let (_out, report) = restore(&url, target);
        assert_eq!(report.end_seq, end, "{target:?}");
        check_restored(&report.path, end);
    }
}

#[test]
fn restores_to_a_sequence_number_and_a_time() {
    let url = memory_url("targets");
    let mut db = TestDb::new();
    let mut r = replicator(&url, &db);
    r.sync().unwrap();
    let mut times = Vec::new();
    for _ in 0..3 {
        db.insert(2);
        db.batch(3);
        std::thread::sleep(Duration::from_millis(5));
        r.sync().unwrap();
        std::thread::sleep(Duration::from_millis(5));
        times.push((
            iqdb_persist_replicate::parse_time(&chrono_now()).unwrap(),
            db.next_seq(),
        ));
    }
    r.release().unwrap();
    // A sequence number inside a batch leaves the batch out whole.
    let (_o, report) = restore(&url, RestoreTarget::Sequence(4));
    assert_eq!(report.end_seq, 3);
    check_restored(&report.path, 3);
    let (_o, report) = restore(&url, RestoreTarget::Sequence(5));
    assert_eq!(report.end_seq, 6);
    check_restored(&report.path, 6);
    for (t, end) in &times {
        let (_o, report) = restore(&url, RestoreTarget::Time(*t));
        assert_eq!(report.end_seq, *end, "time {t}");
        check_restored(&report.path, *end);
    }
    let manifest = open(&url).manifest().unwrap().unwrap();
    let before = manifest.generations[0].created_at_ms - 1;
    let err = open(&url)
        .restore(
            &tempfile::tempdir().unwrap().path().join("x"),
            &RestoreOptions {
                target: RestoreTarget::Time(before),
                name: None,
            },
        )
        .unwrap_err();
    assert!(matches!(err, ReplicateError::NotFound { .. }), "{err}");
    let err = open(&url)
        .restore(
            &tempfile::tempdir().unwrap().path().join("x"),
            &RestoreOptions {
                target: RestoreTarget::Sequence(99),
                name: None,
            },
        )
        .unwrap_err();
    assert!(matches!(err, ReplicateError::NotFound { .. }), "{err}");
}

fn chrono_now() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    format!("@{}", ms as f64 / 1000.0)
}

#[test]
fn damaged_objects_are_caught_and_never_restored() {
    let url = memory_url("damage");
    let mut db = TestDb::new();
    let mut r = replicator(&url, &db);
    db.insert(4);
    r.sync().unwrap();
    db.checkpoint();
    db.insert(3);
    r.sync().unwrap();
    db.insert(2);
    r.sync().unwrap();
    r.release().unwrap();
    let manifest = open(&url).manifest().unwrap().unwrap();
    let newest = manifest.generations.last().unwrap().clone();
    assert_eq!(newest.segments.len(), 2);

    // A damaged last segment: the latest restore stops before it, says so.
    damage(&url, &newest.segments[1].key, 80);
    let (_o, report) = restore(&url, RestoreTarget::Latest);
    assert_eq!(report.end_seq, 8);
    let why = report.fell_back.clone().unwrap();
    assert!(why.contains("checksum"), "{why}");
    check_restored(&report.path, 8);
    // Asked for exactly that point: an error, and nothing left behind.
    let out = tempfile::tempdir().unwrap();
    let err = open(&url)
        .restore(
            &out.path().join("x"),
            &RestoreOptions {
                target: RestoreTarget::Sequence(9),
                name: None,
            },
        )
        .unwrap_err();
    assert!(err.is_corruption(), "{err}");
    assert_eq!(std::fs::read_dir(out.path().join("x")).unwrap().count(), 0);

    // A damaged snapshot: the previous generation.
    damage(&url, &newest.snapshot.key, 100);
    let (_o, report) = restore(&url, RestoreTarget::Latest);
    assert_eq!(report.generation, manifest.generations[0].id);
    assert_eq!(report.end_seq, 5);
    check_restored(&report.path, 5);

    // A damaged manifest: an error, never a guess.
    damage(&url, "manifest", 200);
    let err = open(&url).manifest().unwrap_err();
    assert!(err.is_corruption(), "{err}");
}

#[test]
fn retention_keeps_the_newest_generations_and_sweeps_orphans() {
    let url = memory_url("retention");
    let mut db = TestDb::new();
    let mut config = ReplicatorConfig::new(&db.path);
    config.retain_generations = Some(2);
    // Deleted at once (the grace period has a test of its own).
    config.delete_grace = Duration::ZERO;
    let mut r = Replicator::new(open(&url), config.clone()).unwrap();
    r.sync().unwrap();
    let first = r.manifest().generations[0].clone();
    for _ in 0..3 {
        db.insert(2);
        r.sync().unwrap();
        db.checkpoint();
        db.insert(1);
        r.sync().unwrap();
    }
    let manifest = r.manifest().clone();
    assert_eq!(manifest.generations.len(), 2);
    assert!(
        !exists(&url, &first.snapshot.key),
        "pruned snapshot still stored"
    );
    for g in &manifest.generations {
        assert!(exists(&url, &g.snapshot.key));
        for s in &g.segments {
            assert!(exists(&url, &s.key));
        }
    }
    // Leftovers of an interrupted upload (this epoch or older) go; objects
    // of a newer epoch (a new writer's uploads in flight) stay.
    let epoch = r.epoch();
    let gen_dir = format!("generations/{}", manifest.generations[1].id);
    let orphan = format!("{gen_dir}/wal/00000000000000000100-00000000000000000200-e{epoch:08}.seg");
    let newer = format!(
        "{gen_dir}/wal/00000000000000000100-00000000000000000200-e{:08}.seg",
        epoch + 5
    );
    put_raw(&url, &orphan, vec![1, 2, 3]);
    put_raw(&url, &newer, vec![1, 2, 3]);
    r.release().unwrap();
    let mut r = Replicator::new(open(&url), config).unwrap();
    r.sync().unwrap();
    assert!(!exists(&url, &orphan));
    assert!(exists(&url, &newer));
    r.release().unwrap();
    let (_o, report) = restore(&url, RestoreTarget::Latest);
    check_restored(&report.path, db.next_seq());
}

#[test]
fn retention_by_time_keeps_what_the_window_needs() {
    let url = memory_url("retain-for");
    let mut db = TestDb::new();
    let mut config = ReplicatorConfig::new(&db.path);
    config.retain_generations = Some(1);
    config.retain_for = Some(Duration::from_secs(3600));
    let mut r = Replicator::new(open(&url), config.clone()).unwrap();
    for _ in 0..3 {
        db.insert(1);
        r.sync().unwrap();
        db.checkpoint();
    }
    r.sync().unwrap();
    assert_eq!(r.manifest().generations.len(), 4, "all within the hour");
    r.release().unwrap();
    config.retain_for = Some(Duration::from_millis(1));
    std::thread::sleep(Duration::from_millis(20));
    let mut r = Replicator::new(open(&url), config).unwrap();
    db.insert(1);
    r.sync().unwrap();
    assert_eq!(r.manifest().generations.len(), 1);
    r.release().unwrap();
    let (_o, report) = restore(&url, RestoreTarget::Latest);
    check_restored(&report.path, db.next_seq());
}

#[test]
fn one_replicator_per_prefix() {
    let url = memory_url("lease");
    let db = TestDb::new();
    let first = replicator(&url, &db);
    let err = Replicator::new(open(&url), ReplicatorConfig::new(&db.path)).unwrap_err();
    assert!(matches!(err, ReplicateError::LeaseHeld { .. }), "{err}");
    let epoch = first.epoch();
    first.release().unwrap();
    let second = replicator(&url, &db);
    assert_eq!(second.epoch(), epoch + 1);
    assert_eq!(open(&url).manifest().unwrap().unwrap().epoch, epoch + 1);
}

#[test]
fn an_expired_lease_is_taken_over_and_its_holder_stops() {
    let url = memory_url("expired");
    let mut db = TestDb::new();
    let mut config = ReplicatorConfig::new(&db.path);
    config.lease_ttl = Duration::from_millis(300);
    let mut stale = Replicator::new(open(&url), config.clone()).unwrap();
    stale.sync().unwrap();
    std::thread::sleep(Duration::from_millis(350));
    let mut fresh = Replicator::new(open(&url), config).unwrap();
    assert_eq!(fresh.epoch(), stale.epoch() + 1);
    db.insert(3);
    let err = stale.sync().unwrap_err();
    assert!(err.is_lease_loss(), "{err}");
    fresh.sync().unwrap();
    fresh.release().unwrap();
    let (_o, report) = restore(&url, RestoreTarget::Latest);
    check_restored(&report.path, 4);
}

#[test]
fn a_stale_writer_is_fenced_by_the_manifest() {
    // The stale writer still believes its lease valid (a clock that runs
    // slow, a long pause): only the manifest's conditional write stops it.
    let url = memory_url("fenced");
    let mut db = TestDb::new();
    let mut stale = replicator(&url, &db);
    stale.sync().unwrap();
    // The lease as an expired one would look to the next writer.
    let store = memory_store(&memory_name(&url));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let path = ObjPath::from("db/lease");
        let bytes = store.get(&path).await.unwrap().bytes().await.unwrap();
        let mut lease: iqdb_persist_replicate::LeaseRecord =
            serde_json::from_slice(&bytes).unwrap();
        lease.expires_at_ms = 1;
        lease.boot_id = "another machine".into();
        store
            .put(&path, PutPayload::from(serde_json::to_vec(&lease).unwrap()))
            .await
            .unwrap();
    });
    let mut fresh = replicator(&url, &db);
    db.insert(2);
    let before = open(&url).manifest().unwrap().unwrap();
    let err = stale.sync().unwrap_err();
    assert!(matches!(err, ReplicateError::Fenced { .. }), "{err}");
    assert_eq!(
        open(&url).manifest().unwrap().unwrap(),
        before,
        "the stale writer changed the manifest"
    );
    fresh.sync().unwrap();
    fresh.release().unwrap();
    let (_o, report) = restore(&url, RestoreTarget::Latest);
    check_restored(&report.path, 3);
}

#[test]
fn a_restarted_replicator_continues_the_generation() {
    let url = memory_url("continue");
    let mut db = TestDb::new();
    let mut r = replicator(&url, &db);
    db.insert(4);
    r.sync().unwrap();
    r.release().unwrap();
    db.insert(2);
    let mut r = replicator(&url, &db);
    let report = r.sync().unwrap();
    assert!(report.new_generation.is_none(), "{report:?}");
    assert!(report.continued_generation.is_some(), "{report:?}");
    assert_eq!((report.frames, report.end_seq), (2, 7));
    r.release().unwrap();
    assert_eq!(open(&url).manifest().unwrap().unwrap().generations.len(), 1);
    let (_o, report) = restore(&url, RestoreTarget::Latest);
    check_restored(&report.path, 7);

    // A different database with the same history start does not continue
    // it: its log bytes differ.
    let mut other = TestDb::new();
    other.insert(3);
    let mut r = replicator(&url, &other);
    let report = r.sync().unwrap();
    assert!(report.new_generation.is_some(), "{report:?}");
    r.release().unwrap();
}

#[test]
fn file_urls_work_including_conditional_writes() {
    let remote = tempfile::tempdir().unwrap();
    let url = format!("file://{}", remote.path().join("replica").display());
    let mut db = TestDb::new();
    let mut r = replicator(&url, &db);
    db.insert(3);
    db.checkpoint();
    db.insert(2);
    r.sync().unwrap();
    let err = Replicator::new(open(&url), ReplicatorConfig::new(&db.path)).unwrap_err();
    assert!(matches!(err, ReplicateError::LeaseHeld { .. }), "{err}");
    db.insert(2);
    r.sync().unwrap();
    r.release().unwrap();
    let (_o, report) = restore(&url, RestoreTarget::Latest);
    check_restored(&report.path, 8);
    assert!(remote.path().join("replica/manifest").exists());
}

#[test]
fn refuses_wal_v1_databases_and_snapshot_only_ones() {
    use iqdb_persist::{Options, PersistedIndex};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.iqdb");
    let store = iqdb_persist_testkit::generate::store(1, 5, 4, iqdb_types::DistanceMetric::Cosine);
    drop(
        PersistedIndex::open_with_options(
            store.clone(),
            common::config(&path),
            Options::compat_1_0(),
        )
        .unwrap(),
    );
    let err = Replicator::new(open(&memory_url("v1")), ReplicatorConfig::new(&path)).unwrap_err();
    assert!(err.to_string().contains("WAL v1"), "{err}");
    let plain = dir.path().join("plain.iqdb");
    PersistedIndex::open_with(store, iqdb_persist::PersistConfig::new(&plain))
        .unwrap()
        .save()
        .unwrap();
    let err =
        Replicator::new(open(&memory_url("plain")), ReplicatorConfig::new(&plain)).unwrap_err();
    assert!(err.to_string().contains("WAL-mode"), "{err}");
}

#[test]
fn restore_refuses_a_non_empty_directory_and_an_empty_replica() {
    let url = memory_url("refuse");
    let err = open(&url)
        .restore(
            &tempfile::tempdir().unwrap().path().join("x"),
            &RestoreOptions::default(),
        )
        .unwrap_err();
    assert!(matches!(err, ReplicateError::NotFound { .. }), "{err}");
    let db = TestDb::new();
    let mut r = replicator(&url, &db);
    r.sync().unwrap();
    r.release().unwrap();
    let err = open(&url)
        .restore(db.dir.path(), &RestoreOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
}

#[test]
fn run_ships_within_the_interval_and_releases_on_stop() {
    let url = memory_url("run");
    let mut db = TestDb::new();
    let mut config = ReplicatorConfig::new(&db.path);
    config.interval = Duration::from_millis(50);
    let commits = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut r = Replicator::new(open(&url), config).unwrap();
    let seen = commits.clone();
    r.on_commit(move |c| seen.lock().unwrap().push(c.end_seq));
    let handle = r.spawn();
    db.insert(5);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while commits.lock().unwrap().last() != Some(&6) {
        assert!(
            std::time::Instant::now() < deadline,
            "not shipped: {:?}",
            commits.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let summary = handle.stop().unwrap();
    assert_eq!(summary.end_seq, 6);
    assert!(open(&url).lease().unwrap().unwrap().released);
    let _ = StoreOptions::default();
}

#[test]
fn a_replica_serves_one_database() {
    let url = memory_url("one-db");
    let db = TestDb::new();
    let mut r = replicator(&url, &db);
    r.sync().unwrap();
    r.release().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.iqdb");
    std::fs::copy(&db.path, &other).unwrap();
    std::fs::copy(
        iqdb_persist::PersistConfig::new(&db.path).wal_path(),
        iqdb_persist::PersistConfig::new(&other).wal_path(),
    )
    .unwrap();
    let err = Replicator::new(open(&url), ReplicatorConfig::new(&other)).unwrap_err();
    assert!(err.to_string().contains("another prefix"), "{err}");
    // The refusal left the lease free.
    replicator(&url, &db).release().unwrap();
}

#[test]
fn old_segments_are_merged_so_the_manifest_stays_small() {
    let url = memory_url("compact");
    let mut db = TestDb::new();
    let mut config = ReplicatorConfig::new(&db.path);
    config.max_segments = 6;
    config.max_segment_bytes = 3000;
    let mut r = Replicator::new(open(&url), config).unwrap();
    r.sync().unwrap();
    let mut merged = 0;
    let mut checkpoints = Vec::new();
    for round in 0..30 {
        if round % 4 == 3 {
            db.batch(3);
        } else {
            db.insert(1 + round % 2);
        }
        let report = r.sync().unwrap();
        merged += report.merged_segments;
        checkpoints.push(db.next_seq());
        let segments = &r.manifest().generations[0].segments;
        assert!(
            segments.len() <= 6 + 1,
            "round {round}: {} segments",
            segments.len()
        );
        // Contiguous.
        for w in segments.windows(2) {
            assert_eq!(w[0].end_seq, w[1].first_seq);
        }
    }
    assert!(merged > 0);
    assert!(
        r.manifest().generations[0]
            .segments
            .iter()
            .any(|s| s.len > 1000)
    );
    r.release().unwrap();
    // Merged-away objects are gone; every point still restores.
    assert_eq!(open(&url).unlisted_objects().unwrap(), Vec::<String>::new());
    for end in [2, checkpoints[10], checkpoints[29]] {
        let (_o, report) = restore(&url, RestoreTarget::Sequence(end - 1));
        assert_eq!(report.end_seq, end);
        check_restored(&report.path, end);
    }
    // A restarted replicator continues the merged generation.
    let mut r = replicator(&url, &db);
    assert!(r.sync().unwrap().continued_generation.is_some());
    r.release().unwrap();
}
