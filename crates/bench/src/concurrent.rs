//! `iqdb-persist-bench concurrent`: durable inserts from many threads at
//! once (dim 128, `FsyncPolicy::Always`): `SharedIndex`'s group commit
//! against a `PersistedIndex` behind a `Mutex` and raw append + fdatasync.
//! One fresh process per measurement; medians over `--runs`.
//!
//! ```text
//! iqdb-persist-bench concurrent [--threads 1,8,64] [--runs 5] [--dir D]
//! ```

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use iqdb_index::Index;
use iqdb_persist::{FsyncPolicy, PersistConfig, PersistedIndex};
use iqdb_persist_testkit::VectorStore;
use iqdb_types::{DistanceMetric, VectorId};

const DIM: usize = 128;

/// One measurement: durable inserts per second and latency percentiles.
struct Figure {
    per_sec: f64,
    p50_us: f64,
    p99_us: f64,
}

fn ops_for(threads: usize) -> usize {
    (300 * threads).max(3000)
}

fn vector(i: usize) -> Arc<[f32]> {
    (0..DIM).map(|d| (i * 31 + d) as f32 * 0.001).collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

fn store() -> Result<VectorStore, String> {
    VectorStore::new(DIM, DistanceMetric::Euclidean, Default::default()).map_err(|e| e.to_string())
}

fn open(dir: &Path) -> Result<PersistedIndex<VectorStore>, String> {
    let mut config = PersistConfig::new(dir.join("db.iqdb"));
    config.wal_enabled = true;
    config.fsync_policy = FsyncPolicy::Always;
    PersistedIndex::open_with(store()?, config).map_err(|e| e.to_string())
}

/// Runs `threads` writers each calling `insert(i)` for its share of `ops`;
/// returns the figure.
fn drive(
    threads: usize,
    ops: usize,
    insert: &(dyn Fn(usize) -> Result<(), String> + Sync),
) -> Result<Figure, String> {
    let per = ops / threads;
    let start = Instant::now();
    let latencies: Vec<Vec<f64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || -> Result<Vec<f64>, String> {
                    let mut lat = Vec::with_capacity(per);
                    for k in 0..per {
                        let t0 = Instant::now();
                        insert(t * per + k)?;
                        lat.push(t0.elapsed().as_secs_f64() * 1e6);
                    }
                    Ok(lat)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| "writer panicked".to_string())?)
            .collect::<Result<_, String>>()
    })?;
    let elapsed = start.elapsed().as_secs_f64();
    let mut all: Vec<f64> = latencies.into_iter().flatten().collect();
    all.sort_by(f64::total_cmp);
    Ok(Figure {
        per_sec: all.len() as f64 / elapsed,
        p50_us: percentile(&all, 0.5),
        p99_us: percentile(&all, 0.99),
    })
}

fn child(engine: &str, threads: usize, dir: &Path) -> Result<Figure, String> {
    let ops = ops_for(threads);
    match engine {
        "shared" => {
            let db = open(dir)?.into_shared();
            let figure = drive(threads, ops, &|i| {
                db.insert(VectorId::from(i as u64), vector(i), None)
                    .map_err(|e| e.to_string())
            })?;
            db.close().map_err(|e| e.to_string())?;
            Ok(figure)
        }
        "mutex" => {
            let db = Mutex::new(open(dir)?);
            drive(threads, ops, &|i| {
                db.lock()
                    .map_err(|_| "poisoned".to_string())?
                    .insert(VectorId::from(i as u64), vector(i), None)
                    .map_err(|e| e.to_string())
            })
        }
        "raw" => {
            // Append a 533-byte frame (a dim-128 insert's size) + fdatasync.
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("raw.log"))
                .map_err(|e| e.to_string())?;
            let file = Mutex::new(file);
            let frame = vec![7u8; 533];
            drive(threads, ops, &|_| {
                use std::io::Write as _;
                let mut f = file.lock().map_err(|_| "poisoned".to_string())?;
                f.write_all(&frame).map_err(|e| e.to_string())?;
                f.sync_data().map_err(|e| e.to_string())
            })
        }
        other => Err(format!("unknown engine {other}")),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// The `concurrent` and `concurrent-child` subcommands (`args` after the
/// program name).
pub(crate) fn run(args: &[String]) -> ExitCode {
    match run_inner(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_inner(args: &[String]) -> Result<(), String> {
    if args.first().map(String::as_str) == Some("concurrent-child") {
        let engine = args.get(1).ok_or("engine")?;
        let threads: usize = args
            .get(2)
            .ok_or("threads")?
            .parse()
            .map_err(|e| format!("{e}"))?;
        let dir = PathBuf::from(args.get(3).ok_or("dir")?);
        let f = child(engine, threads, &dir)?;
        println!("{} {} {}", f.per_sec, f.p50_us, f.p99_us);
        return Ok(());
    }
    let mut threads = vec![1usize, 8, 64];
    let mut runs = 5usize;
    let mut dir = std::env::temp_dir();
    let mut it = args.iter().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--threads" => {
                threads = value()?
                    .split(',')
                    .map(|t| t.parse().map_err(|e| format!("--threads: {e}")))
                    .collect::<Result<_, String>>()?;
            }
            "--runs" => runs = value()?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--dir" => dir = PathBuf::from(value()?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    println!("| engine | threads | durable inserts/s | p50 µs | p99 µs |");
    println!("|---|---:|---:|---:|---:|");
    let mut rows = vec![("raw", 1usize)];
    for engine in ["shared", "mutex"] {
        for &t in &threads {
            rows.push((engine, t));
        }
    }
    for (engine, t) in rows {
        let (mut rate, mut p50, mut p99) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            let work = tempfile_dir(&dir)?;
            let out = Command::new(&exe)
                .args(["concurrent-child", engine, &t.to_string()])
                .arg(&work)
                .output()
                .map_err(|e| e.to_string())?;
            let _ = std::fs::remove_dir_all(&work);
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).into_owned());
            }
            let text = String::from_utf8_lossy(&out.stdout);
            let nums: Vec<f64> = text
                .split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect();
            if let [r, a, b] = nums[..] {
                rate.push(r);
                p50.push(a);
                p99.push(b);
            }
        }
        println!(
            "| {engine} | {t} | {:.0} | {:.0} | {:.0} |",
            median(rate),
            median(p50),
            median(p99)
        );
    }
    Ok(())
}

fn tempfile_dir(parent: &Path) -> Result<PathBuf, String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = parent.join(format!("iqdb-concurrent-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    Ok(dir)
}
