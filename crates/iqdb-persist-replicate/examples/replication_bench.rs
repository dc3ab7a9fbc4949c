//! Replication lag and restore throughput against an S3 server (the moto
//! server of scripts/s3-server.sh, on loopback), for docs/BENCHMARKS.md.
//!
//! ```text
//! scripts/s3-server.sh start
//! cargo run --release -p iqdb-persist-replicate --example replication_bench -- [SECONDS] [RATE] [RESTORE_VECTORS]
//! ```
//!
//! * Lag: a writer inserts dim-128 vectors at RATE per second (default 200)
//!   for SECONDS (default 20) under `FsyncPolicy::Always`; a replicator in
//!   the same process ships with interval 1 s, then 100 ms. The lag of a
//!   write is the time from its insert call returning to the return of the
//!   manifest write that first includes it.
//! * Restore: a database of RESTORE_VECTORS dim-128 vectors (default
//!   200 000, about 110 MiB) plus 10 000 logged inserts is shipped, then
//!   restored; throughput is bytes downloaded over the restore's wall time
//!   (download, checksums, snapshot verification, log rebuild).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iqdb_persist::{FsyncPolicy, PersistedIndex};
use iqdb_persist_replicate::{Replica, Replicator, ReplicatorConfig, RestoreOptions};
use iqdb_persist_testkit::generate;
use iqdb_types::DistanceMetric;

mod common;

use common::{bucket, config, options, percentile};

const DIM: usize = 128;

fn endpoint() -> String {
    if let Ok(e) = std::env::var("IQDB_S3_ENDPOINT") {
        return e;
    }
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/moto/endpoint");
    std::fs::read_to_string(&file)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| {
            panic!(
                "no IQDB_S3_ENDPOINT and no {}: run scripts/s3-server.sh start",
                file.display()
            )
        })
}

fn lag(endpoint: &str, seconds: u64, rate: u64, interval: Duration) {
    let name = format!("lag-{}-{}", std::process::id(), interval.as_millis());
    bucket(endpoint, &name);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.iqdb");
    let mut db = PersistedIndex::open_with(
        generate::store(1, 10_000, DIM, DistanceMetric::Cosine),
        config(&path, FsyncPolicy::Always),
    )
    .unwrap();
    let mut rc = ReplicatorConfig::new(&path);
    rc.interval = interval;
    let mut replicator = Replicator::new(
        Replica::open(&format!("s3://{name}/db"), &options(endpoint)).unwrap(),
        rc,
    )
    .unwrap();
    let commits: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let seen = commits.clone();
    replicator.on_commit(move |c| seen.lock().unwrap().push((c.end_seq, c.at)));
    let handle = replicator.spawn();
    std::thread::sleep(Duration::from_millis(500));
    let mut acks: Vec<(u64, Instant)> = Vec::new();
    let start = Instant::now();
    let total = seconds * rate;
    for k in 0..total {
        let due = start + Duration::from_secs_f64(k as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let seq = db.next_sequence().unwrap();
        let (id, v, m) = generate::record(1, 10_000 + k, DIM);
        db.insert(id, v, m).unwrap();
        acks.push((seq, Instant::now()));
    }
    let writing = start.elapsed();
    std::thread::sleep(interval + Duration::from_millis(500));
    let summary = handle.stop().unwrap();
    let commits = commits.lock().unwrap();
    let mut lags: Vec<f64> = acks
        .iter()
        .map(|(seq, at)| {
            let (_, committed) = commits
                .iter()
                .find(|(end, _)| end > seq)
                .expect("every write committed");
            committed.duration_since(*at).as_secs_f64() * 1000.0
        })
        .collect();
    lags.sort_by(f64::total_cmp);
    println!(
        "lag interval={:>5} ms  writes={} ({:.0}/s achieved)  p50={:.1} ms  p99={:.1} ms  max={:.1} ms  commits={} segments={} bytes={}",
        interval.as_millis(),
        total,
        total as f64 / writing.as_secs_f64(),
        percentile(&lags, 0.5),
        percentile(&lags, 0.99),
        lags.last().copied().unwrap_or(0.0),
        summary.commits,
        summary.segments,
        summary.bytes
    );
}

fn restore(endpoint: &str, vectors: u64) {
    let name = format!("restore-{}", std::process::id());
    bucket(endpoint, &name);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.iqdb");
    let mut db = PersistedIndex::open_with(
        generate::store(2, vectors, DIM, DistanceMetric::Cosine),
        config(&path, FsyncPolicy::Always),
    )
    .unwrap();
    let mut batch = db.batch();
    for k in 0..10_000u64 {
        let (id, v, m) = generate::record(2, vectors + k, DIM);
        batch.insert(id, v, m);
        if batch.len() == 100 {
            batch.commit().unwrap();
            batch = db.batch();
        }
    }
    drop(batch);
    let url = format!("s3://{name}/db");
    let shipped = Instant::now();
    let mut r = Replicator::new(
        Replica::open(&url, &options(endpoint)).unwrap(),
        ReplicatorConfig::new(&path),
    )
    .unwrap();
    let report = r.sync().unwrap();
    let ship_time = shipped.elapsed();
    r.release().unwrap();
    let out = tempfile::tempdir().unwrap();
    let replica = Replica::open(&url, &options(endpoint)).unwrap();
    let restored = replica
        .restore(&out.path().join("r"), &RestoreOptions::default())
        .unwrap();
    let secs = restored.elapsed.as_secs_f64();
    let load = Instant::now();
    let loaded = PersistedIndex::<iqdb_persist_testkit::VectorStore>::load(config(
        &restored.path,
        FsyncPolicy::Always,
    ))
    .unwrap();
    assert_eq!(loaded.next_sequence(), Some(restored.end_seq));
    println!(
        "ship   {:.1} MiB (snapshot + {} frames) in {:.2} s = {:.0} MB/s",
        report.bytes as f64 / 1048576.0,
        report.frames,
        ship_time.as_secs_f64(),
        report.bytes as f64 / 1e6 / ship_time.as_secs_f64()
    );
    println!(
        "restore {:.1} MiB ({} frames) in {:.2} s = {:.0} MB/s; then load {:.2} s",
        restored.bytes as f64 / 1048576.0,
        restored.frames,
        secs,
        restored.bytes as f64 / 1e6 / secs,
        load.elapsed().as_secs_f64()
    );
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers"))
        .collect();
    let seconds = args.first().copied().unwrap_or(20);
    let rate = args.get(1).copied().unwrap_or(200);
    let vectors = args.get(2).copied().unwrap_or(200_000);
    let endpoint = endpoint();
    println!(
        "moto at {endpoint}; {seconds} s at {rate} inserts/s (dim {DIM}, FsyncPolicy::Always)"
    );
    lag(&endpoint, seconds, rate, Duration::from_secs(1));
    lag(&endpoint, seconds, rate, Duration::from_millis(100));
    if vectors > 0 {
        restore(&endpoint, vectors);
    }
}
