//! The replication figures of issue 10, for docs/BENCHMARKS.md: lag across
//! a frozen S3 server, restore of a large replica, and the replicator's
//! memory over a long run. Each mode starts a private moto server (its own
//! state directory, so freezing it disturbs nobody) with
//! scripts/s3-server.sh and stops it at the end.
//!
//! ```text
//! cargo run --release -p iqdb-persist-replicate --example replication_soak -- freeze [BEFORE_S FREEZE_S AFTER_S RATE]
//! cargo run --release -p iqdb-persist-replicate --example replication_soak -- restore [SNAPSHOT_VECTORS LOGGED_INSERTS]
//! cargo run --release -p iqdb-persist-replicate --example replication_soak -- memory [SECONDS RATE BATCH]
//! ```
//!
//! * `freeze` (defaults 30 60 60 100): a writer inserts dim-128 vectors
//!   at RATE per second under `FsyncPolicy::Always`; a replicator (default
//!   configuration, interval 1 s) in the same process ships them. After
//!   BEFORE_S the server is stopped with SIGSTOP for FREEZE_S, then resumed
//!   with SIGCONT; the writer goes on for AFTER_S. Lag of a write: from its
//!   insert call returning to the return of the first manifest write that
//!   includes it, reported per phase (before: committed before SIGSTOP;
//!   during: the rest of those acknowledged before SIGCONT; after:
//!   acknowledged after SIGCONT);
//!   catch-up: from SIGCONT to the commit that includes every write
//!   acknowledged before SIGCONT.
//! * `restore` (defaults 1 000 000 and 900 000: a ~600 MB snapshot and a
//!   ~500 MB log): the database is shipped, then restored by a child
//!   process which reports its wall time and peak RSS (VmHWM).
//! * `memory` (defaults 600 s at 1000 inserts/s, in durable batches of
//!   10): the replicator runs in a child process (default configuration)
//!   while this process writes;
//!   the child's RSS is sampled every second and its VmHWM read at the end;
//!   lag as in `freeze` (commit times reported by the child, wall clock).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use iqdb_persist::{FsyncPolicy, PersistedIndex};
use iqdb_persist_replicate::{Replica, Replicator, ReplicatorConfig, RestoreOptions};
use iqdb_persist_testkit::generate;
use iqdb_types::DistanceMetric;

mod common;

use common::{bucket, config, options, percentile};

const DIM: usize = 128;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A private moto server, stopped on drop.
struct Moto {
    state: tempfile::TempDir,
    endpoint: String,
    pid: u32,
}

impl Moto {
    fn start() -> Self {
        let state = tempfile::tempdir().unwrap();
        let ok = Command::new("bash")
            .arg(workspace().join("scripts/s3-server.sh"))
            .arg("start")
            .env("IQDB_MOTO_STATE", state.path())
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "could not start moto");
        let read = |f: &str| {
            std::fs::read_to_string(state.path().join(f))
                .unwrap()
                .trim()
                .to_string()
        };
        let endpoint = read("endpoint");
        let pid = read("pid").parse().unwrap();
        Self {
            state,
            endpoint,
            pid,
        }
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    fn rss_mib(&self) -> f64 {
        status_kib(self.pid, "VmHWM:").unwrap_or(0) as f64 / 1024.0
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.pid.to_string()])
            .status();
        let _ = Command::new("bash")
            .arg(workspace().join("scripts/s3-server.sh"))
            .arg("stop")
            .env("IQDB_MOTO_STATE", self.state.path())
            .status();
    }
}

/// A field of /proc/PID/status, in KiB.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn summary(name: &str, mut lags: Vec<f64>) {
    lags.sort_by(f64::total_cmp);
    println!(
        "  {name:<7} writes={:>7}  lag p50={:>9.1} ms  p99={:>9.1} ms  max={:>9.1} ms",
        lags.len(),
        percentile(&lags, 0.5),
        percentile(&lags, 0.99),
        lags.last().copied().unwrap_or(f64::NAN)
    );
}

/// The lag of each acknowledged write `(seq, at)` against commits
/// `(end_seq, at)` sorted by time (end_seq grows).
fn lags<T: Copy>(acks: &[(u64, T)], commits: &[(u64, T)], ms: impl Fn(T, T) -> f64) -> Vec<f64> {
    let mut out = Vec::with_capacity(acks.len());
    let mut c = 0;
    for &(seq, at) in acks {
        while c < commits.len() && commits[c].0 <= seq {
            c += 1;
        }
        let Some(&(_, committed)) = commits.get(c) else {
            panic!("write {seq} never committed");
        };
        out.push(ms(at, committed));
    }
    out
}

fn freeze(before: u64, frozen: u64, after: u64, rate: u64) {
    let moto = Moto::start();
    bucket(&moto.endpoint, "freeze");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.iqdb");
    let mut db = PersistedIndex::open_with(
        generate::store(1, 10_000, DIM, DistanceMetric::Cosine),
        config(&path, FsyncPolicy::Always),
    )
    .unwrap();
    let mut replicator = Replicator::new(
        Replica::open("s3://freeze/db", &options(&moto.endpoint)).unwrap(),
        ReplicatorConfig::new(&path),
    )
    .unwrap();
    let commits: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let seen = commits.clone();
    replicator.on_commit(move |c| seen.lock().unwrap().push((c.end_seq, c.at)));
    let handle = replicator.spawn();
    std::thread::sleep(Duration::from_secs(1));
    let mut acks: Vec<(u64, Instant)> = Vec::new();
    let start = Instant::now();
    let total = (before + frozen + after) * rate;
    let (mut stopped_at, mut resumed_at) = (None, None);
    for k in 0..total {
        let due = start + Duration::from_secs_f64(k as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let t = start.elapsed();
        if stopped_at.is_none() && t >= Duration::from_secs(before) {
            moto.signal("STOP");
            stopped_at = Some(Instant::now());
        }
        if resumed_at.is_none() && t >= Duration::from_secs(before + frozen) {
            moto.signal("CONT");
            resumed_at = Some(Instant::now());
        }
        let seq = db.next_sequence().unwrap();
        let (id, v, m) = generate::record(1, 10_000 + k, DIM);
        db.insert(id, v, m).unwrap();
        acks.push((seq, Instant::now()));
    }
    let writing = start.elapsed();
    let last = db.next_sequence().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while commits.lock().unwrap().last().is_none_or(|c| c.0 < last) {
        assert!(Instant::now() < deadline, "never caught up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let run = handle.stop().unwrap();
    let (stopped_at, resumed_at) = (stopped_at.unwrap(), resumed_at.unwrap());
    let commits = commits.lock().unwrap();
    let acked_before_cont = acks
        .iter()
        .filter(|(_, at)| *at < resumed_at)
        .map(|(s, _)| *s)
        .max()
        .unwrap();
    let caught_up = commits
        .iter()
        .find(|(end, _)| *end > acked_before_cont)
        .unwrap()
        .1;
    let all = lags(&acks, &commits, |a, c| {
        c.duration_since(a).as_secs_f64() * 1000.0
    });
    // Before: writes committed before SIGSTOP; during: the others
    // acknowledged before SIGCONT; after: acknowledged after SIGCONT.
    let phase = |which: u8| -> Vec<f64> {
        acks.iter()
            .zip(&all)
            .filter(|((_, at), lag)| {
                let committed = *at + Duration::from_secs_f64(**lag / 1000.0);
                match which {
                    0 => committed < stopped_at,
                    1 => committed >= stopped_at && *at < resumed_at,
                    _ => *at >= resumed_at,
                }
            })
            .map(|(_, l)| *l)
            .collect()
    };
    println!(
        "freeze: {before} s, SIGSTOP {frozen} s, {after} s at {rate} inserts/s ({:.0}/s achieved), interval 1 s, moto pid {}",
        total as f64 / writing.as_secs_f64(),
        moto.pid
    );
    summary("before", phase(0));
    summary("during", phase(1));
    summary("after", phase(2));
    println!(
        "  caught up {:.2} s after SIGCONT (every write acknowledged before it committed); round errors {}, commits {}",
        caught_up.duration_since(resumed_at).as_secs_f64(),
        run.errors,
        run.commits
    );
}

fn restore(vectors: u64, logged: u64) {
    let moto = Moto::start();
    bucket(&moto.endpoint, "restore");
    let dir = tempfile::tempdir_in(workspace().join("target/tmp")).unwrap();
    let path = dir.path().join("db.iqdb");
    let built = Instant::now();
    let mut db = PersistedIndex::open_with(
        generate::store(2, vectors, DIM, DistanceMetric::Cosine),
        config(&path, FsyncPolicy::Never),
    )
    .unwrap();
    let mut batch = db.batch();
    for k in 0..logged {
        let (id, v, m) = generate::record(2, vectors + k, DIM);
        batch.insert(id, v, m);
        if batch.len() == 1000 {
            batch.commit().unwrap();
            batch = db.batch();
        }
    }
    batch.commit().unwrap();
    let snapshot_bytes = std::fs::metadata(&path).unwrap().len();
    let wal_bytes: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path() != path)
        .map(|e| {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                std::fs::read_dir(e.path())
                    .unwrap()
                    .map(|f| f.unwrap().metadata().unwrap().len())
                    .sum()
            } else {
                m.len()
            }
        })
        .sum();
    drop(db);
    println!(
        "restore: snapshot {:.1} MB ({vectors} vectors), log {:.1} MB ({logged} inserts); built in {:.1} s",
        snapshot_bytes as f64 / 1e6,
        wal_bytes as f64 / 1e6,
        built.elapsed().as_secs_f64()
    );
    let url = "s3://restore/db";
    let shipped = Instant::now();
    let mut r = Replicator::new(
        Replica::open(url, &options(&moto.endpoint)).unwrap(),
        ReplicatorConfig::new(&path),
    )
    .unwrap();
    let report = r.sync().unwrap();
    r.release().unwrap();
    println!(
        "  shipped {:.1} MB in {:.1} s",
        report.bytes as f64 / 1e6,
        shipped.elapsed().as_secs_f64()
    );
    std::fs::remove_dir_all(dir.path()).unwrap();
    let out = tempfile::tempdir_in(workspace().join("target/tmp")).unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "restore-child",
            &moto.endpoint,
            url,
            out.path().join("r").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(child.status.success(), "{child:?}");
    print!("{}", String::from_utf8_lossy(&child.stdout));
    println!("  moto peak RSS {:.0} MiB", moto.rss_mib());
}

fn restore_child(endpoint: &str, url: &str, dir: &str) {
    let replica = Replica::open(url, &options(endpoint)).unwrap();
    let restored = replica
        .restore(Path::new(dir), &RestoreOptions::default())
        .unwrap();
    let secs = restored.elapsed.as_secs_f64();
    let hwm = status_kib(std::process::id(), "VmHWM:").unwrap();
    println!(
        "  restored {:.1} MB ({} frames, {} segments) in {:.2} s = {:.0} MB/s; restore process peak RSS {:.0} MiB",
        restored.bytes as f64 / 1e6,
        restored.frames,
        restored.segments,
        secs,
        restored.bytes as f64 / 1e6 / secs,
        hwm as f64 / 1024.0
    );
}

fn memory(seconds: u64, rate: u64, batch: u64) {
    let moto = Moto::start();
    bucket(&moto.endpoint, "memory");
    let dir = tempfile::tempdir_in(workspace().join("target/tmp")).unwrap();
    let path = dir.path().join("db.iqdb");
    let mut db = PersistedIndex::open_with(
        generate::store(3, 10_000, DIM, DistanceMetric::Cosine),
        config(&path, FsyncPolicy::Always),
    )
    .unwrap();
    let url = "s3://memory/db";
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "replicate-child",
            &moto.endpoint,
            url,
            path.to_str().unwrap(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let commits: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let lines = {
        let commits = commits.clone();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut other = Vec::new();
            for line in std::io::BufReader::new(stdout).lines() {
                let line = line.unwrap();
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.first() == Some(&"commit") {
                    commits
                        .lock()
                        .unwrap()
                        .push((f[1].parse().unwrap(), f[2].parse().unwrap()));
                } else {
                    other.push(line);
                }
            }
            other
        })
    };
    while commits.lock().unwrap().is_empty() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut acks: Vec<(u64, u64)> = Vec::new();
    let mut samples: Vec<(f64, u64)> = Vec::new();
    let start = Instant::now();
    let total = seconds * rate;
    let mut next_sample = Duration::ZERO;
    let batch = batch.max(1);
    let mut k = 0;
    while k < total {
        let due = start + Duration::from_secs_f64(k as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if start.elapsed() >= next_sample {
            samples.push((
                start.elapsed().as_secs_f64(),
                status_kib(pid, "VmRSS:").unwrap_or(0),
            ));
            next_sample += Duration::from_secs(1);
        }
        let seq = db.next_sequence().unwrap();
        let mut b = db.batch();
        let n = batch.min(total - k);
        for j in 0..n {
            let (id, v, m) = generate::record(3, 10_000 + k + j, DIM);
            b.insert(id, v, m);
        }
        b.commit().unwrap();
        let at = unix_ms();
        for j in 0..n {
            acks.push((seq + j, at));
        }
        k += n;
    }
    let writing = start.elapsed();
    let last = db.next_sequence().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while commits.lock().unwrap().last().is_none_or(|c| c.0 < last) {
        assert!(Instant::now() < deadline, "never caught up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let wal_bytes: u64 = walk_bytes(dir.path()) - std::fs::metadata(&path).unwrap().len();
    drop(child.stdin.take());
    let status = child.wait().unwrap();
    assert!(status.success());
    let other = lines.join().unwrap();
    let commits = commits.lock().unwrap();
    let mut all = lags(&acks, &commits, |a, c| c.saturating_sub(a) as f64);
    all.sort_by(f64::total_cmp);
    let rss = |from: f64, to: f64| {
        samples
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, r)| *r)
            .max()
            .unwrap_or(0) as f64
            / 1024.0
    };
    let s = seconds as f64;
    println!(
        "memory: {seconds} s at {rate} inserts/s ({:.0}/s achieved) in durable batches of {batch} (FsyncPolicy::Always), replicator default config in a child process; local log grew to {:.0} MB",
        total as f64 / writing.as_secs_f64(),
        wal_bytes as f64 / 1e6
    );
    println!(
        "  replicator RSS (max of 1 s samples) first 10%: {:.0} MiB, 10-50%: {:.0} MiB, 50-100%: {:.0} MiB",
        rss(0.0, s * 0.1),
        rss(s * 0.1, s * 0.5),
        rss(s * 0.5, s + 1.0)
    );
    for line in other {
        println!("  {line}");
    }
    println!(
        "  lag p50={:.0} ms  p99={:.0} ms  max={:.0} ms (wall clock, ms resolution); moto peak RSS {:.0} MiB",
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        all.last().copied().unwrap_or(f64::NAN),
        moto.rss_mib()
    );
}

fn walk_bytes(p: &Path) -> u64 {
    let m = std::fs::metadata(p).unwrap();
    if m.is_dir() {
        std::fs::read_dir(p)
            .unwrap()
            .map(|e| walk_bytes(&e.unwrap().path()))
            .sum()
    } else {
        m.len()
    }
}

fn replicate_child(endpoint: &str, url: &str, path: &str) {
    let mut r = Replicator::new(
        Replica::open(url, &options(endpoint)).unwrap(),
        ReplicatorConfig::new(Path::new(path)),
    )
    .unwrap();
    r.on_commit(|c| {
        let mut out = std::io::stdout().lock();
        writeln!(out, "commit {} {}", c.end_seq, unix_ms()).unwrap();
        out.flush().unwrap();
    });
    let handle = r.spawn();
    // Runs until the parent closes stdin.
    let mut sink = Vec::new();
    std::io::stdin().read_to_end(&mut sink).unwrap();
    let run = handle.stop().unwrap();
    let hwm = status_kib(std::process::id(), "VmHWM:").unwrap();
    println!(
        "replicator process peak RSS (VmHWM) {:.0} MiB; commits {}, segments {}, {:.0} MB shipped, round errors {}",
        hwm as f64 / 1024.0,
        run.commits,
        run.segments,
        run.bytes as f64 / 1e6,
        run.errors
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n = |i: usize, d: u64| args.get(i).map_or(d, |a| a.parse().expect("a number"));
    match args.first().map(String::as_str) {
        Some("freeze") => freeze(n(1, 30), n(2, 60), n(3, 60), n(4, 100)),
        Some("restore") => restore(n(1, 1_000_000), n(2, 900_000)),
        Some("memory") => memory(n(1, 600), n(2, 1000), n(3, 10)),
        Some("restore-child") => restore_child(&args[1], &args[2], &args[3]),
        Some("replicate-child") => replicate_child(&args[1], &args[2], &args[3]),
        _ => {
            eprintln!("usage: replication_soak freeze|restore|memory [numbers]");
            std::process::exit(2);
        }
    }
}
