//! Against a real S3 protocol server (moto 5.2.5 on loopback, started by
//! scripts/s3-server.sh): shipping and restoring (a multipart snapshot
//! too), damage, the lease under concurrency, takeover and fencing.
//!
//! Skipped with a loud message when the server cannot be started, except
//! under CI (`CI` set), where that fails.

#![cfg(feature = "aws")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::{TestDb, check_restored, new_bucket, s3_endpoint, s3_options};
use iqdb_persist_replicate::{
    Replica, ReplicateError, Replicator, ReplicatorConfig, RestoreOptions, RestoreTarget,
};

fn replica(endpoint: &str, bucket: &str) -> Replica {
    Replica::open(&format!("s3://{bucket}/dbs/main"), &s3_options(endpoint)).unwrap()
}

fn raw_store(endpoint: &str, bucket: &str) -> object_store::aws::AmazonS3 {
    object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .build()
        .unwrap()
}

#[test]
fn s3_ships_checkpoints_and_restores() {
    let Some(endpoint) = s3_endpoint() else {
        return;
    };
    let bucket = new_bucket(&endpoint, "ships");
    let mut db = TestDb::new();
    let mut config = ReplicatorConfig::new(&db.path);
    config.retain_generations = None;
    let mut r = Replicator::new(replica(&endpoint, &bucket), config).unwrap();
    db.insert(5);
    r.sync().unwrap();
    db.checkpoint();
    db.batch(4);
    db.insert(1);
    r.sync().unwrap();
    db.insert(2);
    let report = r.sync().unwrap();
    assert_eq!(report.end_seq, 13);
    r.release().unwrap();
    for (target, end) in [
        (RestoreTarget::Latest, 13),
        (RestoreTarget::Sequence(4), 5),
        (RestoreTarget::Sequence(10), 11),
    ] {
        let out = tempfile::tempdir().unwrap();
        let report = replica(&endpoint, &bucket)
            .restore(
                &out.path().join("r"),
                &RestoreOptions { target, name: None },
            )
            .unwrap();
        assert_eq!(report.end_seq, end, "{target:?}");
        check_restored(&report.path, end);
    }
}

#[test]
fn s3_multipart_snapshot_round_trips() {
    let Some(endpoint) = s3_endpoint() else {
        return;
    };
    let bucket = new_bucket(&endpoint, "multipart");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.iqdb");
    // About 20 MiB: above the 16 MiB single-PUT limit.
    let store =
        iqdb_persist_testkit::generate::store(3, 36_000, 128, iqdb_types::DistanceMetric::Cosine);
    let db = iqdb_persist::PersistedIndex::open_with(store.clone(), common::config(&path)).unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() > 16 << 20);
    let mut r = Replicator::new(replica(&endpoint, &bucket), ReplicatorConfig::new(&path)).unwrap();
    r.sync().unwrap();
    r.release().unwrap();
    drop(db);
    let out = tempfile::tempdir().unwrap();
    let report = replica(&endpoint, &bucket)
        .restore(&out.path().join("r"), &RestoreOptions::default())
        .unwrap();
    assert_eq!(
        std::fs::read(&report.path).unwrap(),
        std::fs::read(&path).unwrap()
    );
    let loaded = iqdb_persist::PersistedIndex::<iqdb_persist_testkit::VectorStore>::load(
        common::config(&report.path),
    )
    .unwrap();
    assert!(loaded.index() == &store);
}

#[test]
fn s3_damage_is_detected() {
    let Some(endpoint) = s3_endpoint() else {
        return;
    };
    let bucket = new_bucket(&endpoint, "damage");
    let mut db = TestDb::new();
    let mut r =
        Replicator::new(replica(&endpoint, &bucket), ReplicatorConfig::new(&db.path)).unwrap();
    db.insert(3);
    r.sync().unwrap();
    db.insert(3);
    r.sync().unwrap();
    r.release().unwrap();
    let manifest = replica(&endpoint, &bucket).manifest().unwrap().unwrap();
    let key = format!("dbs/main/{}", manifest.generations[0].segments[1].key);
    // Replace the last segment's bytes through the S3 API.
    let store = raw_store(&endpoint, &bucket);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use object_store::ObjectStoreExt;
        let path = object_store::path::Path::from(key.as_str());
        let mut bytes = store
            .get(&path)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        store.put(&path, bytes.into()).await.unwrap();
    });
    let out = tempfile::tempdir().unwrap();
    let report = replica(&endpoint, &bucket)
        .restore(&out.path().join("r"), &RestoreOptions::default())
        .unwrap();
    assert!(report.fell_back.is_some());
    assert_eq!(report.end_seq, 4);
    check_restored(&report.path, 4);
}

#[test]
fn s3_exactly_one_of_two_concurrent_replicators_wins() {
    let Some(endpoint) = s3_endpoint() else {
        return;
    };
    let db = TestDb::new();
    for round in 0..8 {
        let bucket = new_bucket(&endpoint, "race");
        let barrier = Arc::new(Barrier::new(2));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (endpoint, bucket, path, barrier) = (
                    endpoint.clone(),
                    bucket.clone(),
                    db.path.clone(),
                    barrier.clone(),
                );
                std::thread::spawn(move || {
                    let replica = replica(&endpoint, &bucket);
                    barrier.wait();
                    Replicator::new(replica, ReplicatorConfig::new(path))
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let winners = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(winners, 1, "round {round}: {results:?}");
        for r in &results {
            if let Err(e) = r {
                assert!(
                    matches!(e, ReplicateError::LeaseHeld { .. }),
                    "round {round}: {e}"
                );
            }
        }
    }
}

#[test]
fn s3_expired_lease_takeover_fences_the_stale_writer() {
    let Some(endpoint) = s3_endpoint() else {
        return;
    };
    let bucket = new_bucket(&endpoint, "takeover");
    let mut db = TestDb::new();
    let mut config = ReplicatorConfig::new(&db.path);
    config.lease_ttl = Duration::from_millis(600);
    let mut stale = Replicator::new(replica(&endpoint, &bucket), config.clone()).unwrap();
    stale.sync().unwrap();
    let err = Replicator::new(replica(&endpoint, &bucket), config.clone()).unwrap_err();
    assert!(matches!(err, ReplicateError::LeaseHeld { .. }), "{err}");
    std::thread::sleep(Duration::from_millis(700));
    let mut fresh = Replicator::new(replica(&endpoint, &bucket), config).unwrap();
    assert_eq!(fresh.epoch(), stale.epoch() + 1);
    db.insert(2);
    let err = stale.sync().unwrap_err();
    assert!(err.is_lease_loss(), "{err}");
    let report = fresh.sync().unwrap();
    assert_eq!(report.end_seq, 3);
    fresh.release().unwrap();
    let out = tempfile::tempdir().unwrap();
    let report = replica(&endpoint, &bucket)
        .restore(&out.path().join("r"), &RestoreOptions::default())
        .unwrap();
    check_restored(&report.path, 3);
}

#[test]
fn s3_a_stale_writer_that_still_trusts_its_lease_is_fenced() {
    let Some(endpoint) = s3_endpoint() else {
        return;
    };
    let bucket = new_bucket(&endpoint, "fenced");
    let mut db = TestDb::new();
    let mut stale =
        Replicator::new(replica(&endpoint, &bucket), ReplicatorConfig::new(&db.path)).unwrap();
    stale.sync().unwrap();
    // Make the lease look expired to the next writer (a skewed clock, a
    // long pause), while the stale writer still trusts it locally.
    let store = raw_store(&endpoint, &bucket);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use object_store::ObjectStoreExt;
        let path = object_store::path::Path::from("dbs/main/lease");
        let bytes = store.get(&path).await.unwrap().bytes().await.unwrap();
        let mut lease: iqdb_persist_replicate::LeaseRecord =
            serde_json::from_slice(&bytes).unwrap();
        lease.expires_at_ms = 1;
        lease.boot_id = "another machine".into();
        store
            .put(&path, serde_json::to_vec(&lease).unwrap().into())
            .await
            .unwrap();
    });
    let mut fresh =
        Replicator::new(replica(&endpoint, &bucket), ReplicatorConfig::new(&db.path)).unwrap();
    db.insert(2);
    let before = replica(&endpoint, &bucket).manifest().unwrap().unwrap();
    let err = stale.sync().unwrap_err();
    assert!(matches!(err, ReplicateError::Fenced { .. }), "{err}");
    assert_eq!(
        replica(&endpoint, &bucket).manifest().unwrap().unwrap(),
        before
    );
    assert_eq!(fresh.sync().unwrap().end_seq, 3);
    fresh.release().unwrap();
}
