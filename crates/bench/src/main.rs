//! Side-by-side benchmark: this crate, the published iqdb-persist 1.0 and
//! the raw disk, on the same data, in one invocation.
//!
//! Every measurement runs in a fresh child process (this binary re-executed
//! with `child <task>`), so its peak memory (VmHWM, reset after the index is
//! built) belongs to that one operation. The parent repeats each task,
//! takes medians, and prints markdown tables with ratios to the raw disk and
//! to 1.0, and with `--charts DIR` draws the main comparisons as SVG.
//!
//! ```text
//! iqdb-persist-bench [--smoke] [--runs N] [--sizes 10000x128,200000x768] [--metadata] [--dir DIR]
//!                    [--wal-ops N] [--replay-ops N] [--charts DIR]
//! ```

mod args;
mod charts;
mod concurrent;
mod report;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::Parser as _;
use std::sync::Arc;
use std::time::Instant;

use iqdb_index::{Index, IndexCore};
use iqdb_persist::{
    Compression, FsyncPolicy, Operation, Options, PersistConfig, PersistedIndex, SnapshotFormat,
};
use iqdb_persist_interop::V1Store;
use iqdb_persist_testkit::{VectorStore, generate};
use iqdb_types::{DistanceMetric, Metadata, VectorId};
use serde::{Deserialize, Serialize};

use crate::args::{Args, Child};
use crate::report::{SnapshotResults, WalResults};

/// Which implementation a task runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum Engine {
    /// This crate, default options (snapshot v3, WAL v2).
    Ours,
    /// This crate writing 1.0's formats (snapshot v2, WAL v1).
    OursCompat,
    /// The published iqdb-persist 1.0.0.
    V1,
}

impl Engine {
    /// Every engine, in table order.
    const ALL: [Self; 3] = [Self::Ours, Self::OursCompat, Self::V1];

    fn label(self) -> &'static str {
        match self {
            Self::Ours => "1.1 (v3)",
            Self::OursCompat => "1.1 (v2, compat)",
            Self::V1 => "1.0.0",
        }
    }

    fn options(self) -> Options {
        match self {
            Self::OursCompat => Options::compat_1_0(),
            _ => Options::new().snapshot_format(SnapshotFormat::V3),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum Scheme {
    None,
    Zstd1,
    Lz4,
}

impl Scheme {
    /// Every scheme, in table order.
    const ALL: [Self; 3] = [Self::None, Self::Zstd1, Self::Lz4];

    fn label(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Zstd1 => "zstd 1",
            Self::Lz4 => "lz4",
        }
    }

    fn ours(self) -> Compression {
        match self {
            Self::None => Compression::None,
            Self::Zstd1 => Compression::Zstd { level: 1 },
            Self::Lz4 => Compression::Lz4,
        }
    }

    fn v1(self) -> iqdb_persist_v1::Compression {
        match self {
            Self::None => iqdb_persist_v1::Compression::None,
            Self::Zstd1 => iqdb_persist_v1::Compression::Zstd { level: 1 },
            Self::Lz4 => iqdb_persist_v1::Compression::Lz4,
        }
    }
}

/// One measurement, run in a child process.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Task {
    Save {
        engine: Engine,
        scheme: Scheme,
        n: u64,
        dim: usize,
        metadata: bool,
        path: PathBuf,
    },
    Load {
        engine: Engine,
        scheme: Scheme,
        n: u64,
        dim: usize,
        path: PathBuf,
    },
    RawWrite {
        bytes: u64,
        path: PathBuf,
    },
    RawRead {
        path: PathBuf,
    },
    WalSingle {
        engine: Engine,
        n: u64,
        dim: usize,
        dir: PathBuf,
    },
    RawAppendFsync {
        n: u64,
        record: usize,
        dir: PathBuf,
    },
    WalBatch {
        batches: u64,
        batch: u64,
        dim: usize,
        dir: PathBuf,
    },
    WalPrepare {
        engine: Engine,
        n: u64,
        dim: usize,
        metadata: bool,
        dir: PathBuf,
    },
    WalReplay {
        engine: Engine,
        n: u64,
        dim: usize,
        dir: PathBuf,
    },
    /// The ceiling of a replay: inserting the same records, already in
    /// memory, into an empty index (no persistence at all).
    IndexInsert {
        n: u64,
        dim: usize,
        metadata: bool,
    },
}

/// What a child reports.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Sample {
    seconds: f64,
    /// Payload bytes (or operations) processed.
    units: u64,
    /// Peak resident memory above the baseline, KiB.
    extra_kib: u64,
    /// Size of the file produced or read.
    file_bytes: u64,
}

const SEED: u64 = 0xBE7C;
const METRIC: DistanceMetric = DistanceMetric::Cosine;

fn proc_status(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Resets VmHWM to the current RSS (Linux ≥ 4.0).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn payload_len(store: &VectorStore) -> u64 {
    let mut counter = CountingWriter(0);
    let _ = store.encode(&mut counter);
    counter.0
}

struct CountingWriter(u64);

impl std::io::Write for CountingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn records(n: u64, dim: usize) -> Vec<(VectorId, Arc<[f32]>, Option<Metadata>)> {
    generate::records(SEED, 0..n, dim).collect()
}

/// The sample store: `n` generated records, with or without their metadata.
fn sample_store(n: u64, dim: usize, metadata: bool) -> Result<VectorStore, String> {
    if metadata {
        return Ok(generate::store(SEED, n, dim, METRIC));
    }
    let config = iqdb_persist_testkit::VectorStoreConfig::default()
        .with_initial_capacity(usize::try_from(n).unwrap_or(0));
    let mut store = VectorStore::new(dim, METRIC, config).map_err(|e| e.to_string())?;
    for (id, vector, _) in generate::records(SEED, 0..n, dim) {
        store.insert(id, vector, None).map_err(|e| e.to_string())?;
    }
    Ok(store)
}

fn wal_config(dir: &Path, policy: FsyncPolicy) -> PersistConfig {
    PersistConfig {
        path: dir.join("db.iqdb"),
        wal_enabled: true,
        fsync_policy: policy,
        compression: Compression::None,
    }
}

fn v1_wal_config(
    dir: &Path,
    policy: iqdb_persist_v1::FsyncPolicy,
) -> iqdb_persist_v1::PersistConfig {
    let mut config = iqdb_persist_v1::PersistConfig::new(dir.join("db.iqdb"));
    config.wal_enabled = true;
    config.fsync_policy = policy;
    config
}

fn empty(dim: usize) -> Result<VectorStore, String> {
    VectorStore::new(dim, METRIC, Default::default()).map_err(|e| e.to_string())
}

fn run_task(task: &Task) -> Result<Sample, String> {
    match task {
        Task::Save {
            engine,
            scheme,
            n,
            dim,
            metadata,
            path,
        } => {
            let store = sample_store(*n, *dim, *metadata)?;
            let units = payload_len(&store);
            let _ = std::fs::remove_file(path);
            reset_peak();
            let base = proc_status("VmRSS:");
            let start = Instant::now();
            match engine {
                Engine::V1 => {
                    let mut config = iqdb_persist_v1::PersistConfig::new(path);
                    config.compression = scheme.v1();
                    let db = iqdb_persist_v1::PersistedIndex::open_with(V1Store(store), config)
                        .map_err(|e| e.to_string())?;
                    db.save().map_err(|e| e.to_string())?;
                    std::mem::forget(db);
                }
                _ => {
                    let mut config = PersistConfig::new(path);
                    config.compression = scheme.ours();
                    let db = PersistedIndex::open_with_options(store, config, engine.options())
                        .map_err(|e| e.to_string())?;
                    db.save().map_err(|e| e.to_string())?;
                    std::mem::forget(db);
                }
            }
            let seconds = start.elapsed().as_secs_f64();
            let extra_kib = proc_status("VmHWM:").saturating_sub(base);
            Ok(Sample {
                seconds,
                units,
                extra_kib,
                file_bytes: file_len(path),
            })
        }
        Task::Load {
            engine,
            scheme,
            n,
            path,
            ..
        } => {
            reset_peak();
            let start = Instant::now();
            match engine {
                Engine::V1 => {
                    let mut config = iqdb_persist_v1::PersistConfig::new(path);
                    config.compression = scheme.v1();
                    let db = iqdb_persist_v1::PersistedIndex::<V1Store>::load(config)
                        .map_err(|e| e.to_string())?;
                    let elapsed = start.elapsed();
                    let result = (IndexCore::len(db.index()), payload_len(&db.index().0));
                    std::mem::forget(db);
                    finish_load(elapsed, result, *n, path)
                }
                _ => {
                    let mut config = PersistConfig::new(path);
                    config.compression = scheme.ours();
                    let db =
                        PersistedIndex::<VectorStore>::load_with_options(config, engine.options())
                            .map_err(|e| e.to_string())?;
                    let elapsed = start.elapsed();
                    let result = (db.index().len(), payload_len(db.index()));
                    std::mem::forget(db);
                    finish_load(elapsed, result, *n, path)
                }
            }
        }
        Task::RawWrite { bytes, path } => {
            let data: Vec<u8> = (0..*bytes).map(|i| (i % 251) as u8).collect();
            let dir = path.parent().unwrap_or(Path::new("."));
            let temp = dir.join("raw.tmp");
            let start = Instant::now();
            let mut file = std::fs::File::create(&temp).map_err(|e| e.to_string())?;
            // 1 MiB writes, as a streaming writer issues them (one huge
            // write call runs into the kernel's dirty-page throttling).
            for piece in data.chunks(1 << 20) {
                file.write_all(piece).map_err(|e| e.to_string())?;
            }
            file.sync_all().map_err(|e| e.to_string())?;
            std::fs::rename(&temp, path).map_err(|e| e.to_string())?;
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| e.to_string())?;
            let seconds = start.elapsed().as_secs_f64();
            Ok(Sample {
                seconds,
                units: *bytes,
                extra_kib: 0,
                file_bytes: *bytes,
            })
        }
        Task::RawRead { path } => {
            let start = Instant::now();
            let data = std::fs::read(path).map_err(|e| e.to_string())?;
            let seconds = start.elapsed().as_secs_f64();
            let units = std::hint::black_box(data).len() as u64;
            Ok(Sample {
                seconds,
                units,
                extra_kib: 0,
                file_bytes: units,
            })
        }
        Task::WalSingle {
            engine,
            n,
            dim,
            dir,
        } => {
            let _ = std::fs::remove_dir_all(dir);
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
            let items = records(*n, *dim);
            let start;
            match engine {
                Engine::V1 => {
                    let mut db = iqdb_persist_v1::PersistedIndex::open_with(
                        V1Store(empty(*dim)?),
                        v1_wal_config(dir, iqdb_persist_v1::FsyncPolicy::Always),
                    )
                    .map_err(|e| e.to_string())?;
                    start = Instant::now();
                    for (id, vector, metadata) in items {
                        db.insert(id, vector, metadata).map_err(|e| e.to_string())?;
                    }
                }
                _ => {
                    let mut db = PersistedIndex::open_with_options(
                        empty(*dim)?,
                        wal_config(dir, FsyncPolicy::Always),
                        engine.options(),
                    )
                    .map_err(|e| e.to_string())?;
                    start = Instant::now();
                    for (id, vector, metadata) in items {
                        db.insert(id, vector, metadata).map_err(|e| e.to_string())?;
                    }
                }
            }
            Ok(Sample {
                seconds: start.elapsed().as_secs_f64(),
                units: *n,
                ..Sample::default()
            })
        }
        Task::RawAppendFsync { n, record, dir } => {
            let _ = std::fs::remove_dir_all(dir);
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("raw.log"))
                .map_err(|e| e.to_string())?;
            let bytes = vec![7u8; *record];
            let start = Instant::now();
            for _ in 0..*n {
                file.write_all(&bytes).map_err(|e| e.to_string())?;
                file.sync_all().map_err(|e| e.to_string())?;
            }
            Ok(Sample {
                seconds: start.elapsed().as_secs_f64(),
                units: *n,
                ..Sample::default()
            })
        }
        Task::WalBatch {
            batches,
            batch,
            dim,
            dir,
        } => {
            let _ = std::fs::remove_dir_all(dir);
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
            let mut db =
                PersistedIndex::open_with(empty(*dim)?, wal_config(dir, FsyncPolicy::Always))
                    .map_err(|e| e.to_string())?;
            let mut all: Vec<Vec<Operation>> = (0..*batches)
                .map(|b| {
                    generate::records(SEED, b * batch..(b + 1) * batch, *dim)
                        .map(|(id, vector, metadata)| Operation::Insert {
                            id,
                            vector,
                            metadata,
                        })
                        .collect()
                })
                .collect();
            let start = Instant::now();
            for ops in all.drain(..) {
                db.apply(ops).map_err(|e| e.to_string())?;
            }
            Ok(Sample {
                seconds: start.elapsed().as_secs_f64(),
                units: batches * batch,
                ..Sample::default()
            })
        }
        Task::WalPrepare {
            engine,
            n,
            dim,
            metadata: with_metadata,
            dir,
        } => {
            let strip = |(id, vector, metadata): (VectorId, Arc<[f32]>, Option<Metadata>)| {
                (id, vector, if *with_metadata { metadata } else { None })
            };
            let _ = std::fs::remove_dir_all(dir);
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
            match engine {
                Engine::V1 => {
                    let mut db = iqdb_persist_v1::PersistedIndex::open_with(
                        V1Store(empty(*dim)?),
                        v1_wal_config(dir, iqdb_persist_v1::FsyncPolicy::Never),
                    )
                    .map_err(|e| e.to_string())?;
                    for (id, vector, metadata) in generate::records(SEED, 0..*n, *dim).map(strip) {
                        db.insert(id, vector, metadata).map_err(|e| e.to_string())?;
                    }
                }
                _ => {
                    let mut db = PersistedIndex::open_with_options(
                        empty(*dim)?,
                        wal_config(dir, FsyncPolicy::Never),
                        engine.options(),
                    )
                    .map_err(|e| e.to_string())?;
                    let mut ops = Vec::new();
                    for (id, vector, metadata) in generate::records(SEED, 0..*n, *dim).map(strip) {
                        ops.push(Operation::Insert {
                            id,
                            vector,
                            metadata,
                        });
                        if ops.len() == 10_000 {
                            db.apply(std::mem::take(&mut ops))
                                .map_err(|e| e.to_string())?;
                        }
                    }
                    db.apply(ops).map_err(|e| e.to_string())?;
                }
            }
            Ok(Sample {
                units: *n,
                file_bytes: file_len(&dir.join("db.iqdb.wal")),
                ..Sample::default()
            })
        }
        Task::IndexInsert { n, dim, metadata } => {
            let items: Vec<_> = generate::records(SEED, 0..*n, *dim)
                .map(|(id, vector, meta)| (id, vector, if *metadata { meta } else { None }))
                .collect();
            let mut store = empty(*dim)?;
            let start = Instant::now();
            for (id, vector, meta) in items {
                store.insert(id, vector, meta).map_err(|e| e.to_string())?;
            }
            let seconds = start.elapsed().as_secs_f64();
            check_len(store.len(), *n)?;
            Ok(Sample {
                seconds,
                units: *n,
                ..Sample::default()
            })
        }
        Task::WalReplay {
            engine,
            n,
            dim,
            dir,
        } => {
            reset_peak();
            let start = Instant::now();
            let len = match engine {
                Engine::V1 => {
                    let db = iqdb_persist_v1::PersistedIndex::<V1Store>::load(v1_wal_config(
                        dir,
                        iqdb_persist_v1::FsyncPolicy::Never,
                    ))
                    .map_err(|e| e.to_string())?;
                    let len = IndexCore::len(db.index());
                    std::mem::forget(db);
                    len
                }
                _ => {
                    let db = PersistedIndex::<VectorStore>::load_with_options(
                        wal_config(dir, FsyncPolicy::Never),
                        engine.options(),
                    )
                    .map_err(|e| e.to_string())?;
                    let len = db.index().len();
                    std::mem::forget(db);
                    len
                }
            };
            let seconds = start.elapsed().as_secs_f64();
            check_len(len, *n)?;
            let _ = dim;
            let extra_kib = proc_status("VmHWM:").saturating_sub(proc_status("VmRSS:"));
            Ok(Sample {
                seconds,
                units: *n,
                extra_kib,
                file_bytes: file_len(&dir.join("db.iqdb.wal")),
            })
        }
    }
}

/// A load's sample: the peak above the loaded index is VmHWM minus the RSS
/// that stays (the index).
fn finish_load(
    elapsed: std::time::Duration,
    (len, units): (usize, u64),
    n: u64,
    path: &Path,
) -> Result<Sample, String> {
    let extra_kib = proc_status("VmHWM:").saturating_sub(proc_status("VmRSS:"));
    check_len(len, n)?;
    Ok(Sample {
        seconds: elapsed.as_secs_f64(),
        units,
        extra_kib,
        file_bytes: file_len(path),
    })
}

fn check_len(found: usize, expected: u64) -> Result<(), String> {
    if found as u64 == expected {
        Ok(())
    } else {
        Err(format!("loaded {found} vectors, expected {expected}"))
    }
}

/// Runs `task` in a fresh child process.
fn spawn(task: &Task) -> Result<Sample, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let json = serde_json::to_string(task).map_err(|e| e.to_string())?;
    let out = Command::new(exe)
        .arg("child")
        .arg(json)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "{task:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{task:?}: bad child output: {e}"))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Medians of repeated samples.
#[derive(Debug, Clone, Copy, Default)]
struct Summary {
    seconds: f64,
    units: u64,
    extra_mib: f64,
    file_bytes: u64,
}

impl Summary {
    fn rate(&self) -> f64 {
        self.units as f64 / self.seconds
    }
    fn mb_per_s(&self) -> f64 {
        self.rate() / 1e6
    }
}

fn repeat(
    runs: usize,
    task: &Task,
    before: impl Fn() -> Result<(), String>,
) -> Result<Summary, String> {
    let mut samples = Vec::new();
    for _ in 0..runs {
        before()?;
        samples.push(spawn(task)?);
    }
    Ok(summarize(&samples))
}

/// Medians of samples.
fn summarize(samples: &[Sample]) -> Summary {
    Summary {
        seconds: median(samples.iter().map(|s| s.seconds).collect()),
        units: samples.first().map_or(0, |s| s.units),
        extra_mib: median(
            samples
                .iter()
                .map(|s| s.extra_kib as f64 / 1024.0)
                .collect(),
        ),
        file_bytes: samples.first().map_or(0, |s| s.file_bytes),
    }
}

fn drop_caches_hint(path: &Path) -> Result<(), String> {
    // Warm-cache loads: read the file once so every engine starts equal.
    std::fs::read(path)
        .map(drop)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Every measurement, the tables on success, and the charts if asked for.
fn run_all(args: &Args) -> Result<String, String> {
    if let (Some(charts), Ok(dir)) = (&args.charts, std::path::absolute(&args.dir))
        && std::path::absolute(charts).is_ok_and(|c| c.starts_with(&dir))
    {
        return Err(format!(
            "--charts {} lies inside --dir {}, which is removed after the run",
            charts.display(),
            args.dir.display()
        ));
    }
    std::fs::create_dir_all(&args.dir).map_err(|e| e.to_string())?;
    let mut out = String::new();
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let _ = writeln!(
        out,
        "Medians of {} run(s), one fresh process per measurement; {} core(s); files in `{}`.\n",
        args.runs,
        threads,
        args.dir.display()
    );
    let snapshots = args
        .sizes
        .iter()
        .map(|&(n, dim)| measure_snapshots(args, n, dim))
        .collect::<Result<Vec<_>, _>>()?;
    let wal = measure_wal(args)?;
    for s in &snapshots {
        let _ = writeln!(out, "{}", report::snapshot_table(s));
    }
    out.push_str(&report::wal_table(&wal));
    if let Some(dir) = &args.charts {
        for path in charts::draw_all(dir, &snapshots, &wal)? {
            eprintln!("  chart: {}", path.display());
        }
    }
    Ok(out)
}

/// Save and load of one size, every engine and scheme, and the raw disk.
fn measure_snapshots(args: &Args, n: u64, dim: usize) -> Result<SnapshotResults, String> {
    // Each run measures every engine and the raw disk once, in turn, so
    // the disk's noise spreads evenly over them.
    let mut saves: BTreeMap<(Engine, Scheme), Vec<Sample>> = BTreeMap::new();
    let mut loads: BTreeMap<(Engine, Scheme), Vec<Sample>> = BTreeMap::new();
    let (mut raw_writes, mut raw_reads) = (Vec::new(), Vec::new());
    let raw_path = args.dir.join(format!("raw-{n}x{dim}.bin"));
    let mut payload = 0;
    for run in 0..args.runs {
        for scheme in Scheme::ALL {
            for engine in Engine::ALL {
                let path = args
                    .dir
                    .join(format!("snap-{n}x{dim}-{engine:?}-{scheme:?}.iqdb"));
                eprintln!(
                    "  run {}: {n}x{dim} {} {} ...",
                    run + 1,
                    engine.label(),
                    scheme.label()
                );
                let save = spawn(&Task::Save {
                    engine,
                    scheme,
                    n,
                    dim,
                    metadata: args.metadata,
                    path: path.clone(),
                })?;
                payload = save.units;
                drop_caches_hint(&path)?;
                let load = spawn(&Task::Load {
                    engine,
                    scheme,
                    n,
                    dim,
                    path: path.clone(),
                })?;
                let _ = std::fs::remove_file(&path);
                saves.entry((engine, scheme)).or_default().push(save);
                loads.entry((engine, scheme)).or_default().push(load);
            }
        }
        raw_writes.push(spawn(&Task::RawWrite {
            bytes: payload,
            path: raw_path.clone(),
        })?);
        drop_caches_hint(&raw_path)?;
        raw_reads.push(spawn(&Task::RawRead {
            path: raw_path.clone(),
        })?);
        let _ = std::fs::remove_file(&raw_path);
    }
    let results = saves
        .iter()
        .map(|(key, s)| {
            (
                *key,
                (
                    summarize(s),
                    summarize(loads.get(key).map_or(&[][..], Vec::as_slice)),
                ),
            )
        })
        .collect();
    Ok(SnapshotResults {
        n,
        dim,
        metadata: args.metadata,
        payload,
        raw_write: summarize(&raw_writes),
        raw_read: summarize(&raw_reads),
        results,
    })
}

/// Durable single inserts, batches, and replay against its ceiling.
fn measure_wal(args: &Args) -> Result<WalResults, String> {
    let runs = args.runs as usize;
    let dim = 128;
    let wal_dir = args.dir.join("wal");
    eprintln!("  WAL single inserts ...");
    let record = {
        let (id, vector, metadata) = generate::record(SEED, 1, dim);
        let mut buf = Vec::new();
        let op = Operation::Insert {
            id,
            vector,
            metadata,
        };
        let _ = iqdb_persist_bench_frame_len(&op, &mut buf);
        buf.len()
    };
    let raw_append = repeat(
        runs,
        &Task::RawAppendFsync {
            n: args.wal_ops,
            record,
            dir: wal_dir.clone(),
        },
        || Ok(()),
    )?;
    let single = Engine::ALL
        .iter()
        .map(|&engine| {
            repeat(
                runs,
                &Task::WalSingle {
                    engine,
                    n: args.wal_ops,
                    dim,
                    dir: wal_dir.clone(),
                },
                || Ok(()),
            )
            .map(|s| (engine, s))
        })
        .collect::<Result<_, _>>()?;
    eprintln!("  WAL batches ...");
    let batches = (args.wal_ops * 10 / 1000).max(1);
    let batch = repeat(
        runs,
        &Task::WalBatch {
            batches,
            batch: 1000,
            dim,
            dir: wal_dir.clone(),
        },
        || Ok(()),
    )?;
    eprintln!("  WAL replay ...");
    let mut replay = Vec::new();
    let mut ceilings = Vec::new();
    for metadata in [true, false] {
        for engine in [Engine::Ours, Engine::V1] {
            let dir = args.dir.join(format!("replay-{engine:?}-{metadata}"));
            spawn(&Task::WalPrepare {
                engine,
                n: args.replay_ops,
                dim,
                metadata,
                dir: dir.clone(),
            })?;
            let s = repeat(
                runs,
                &Task::WalReplay {
                    engine,
                    n: args.replay_ops,
                    dim,
                    dir: dir.clone(),
                },
                || Ok(()),
            )?;
            let _ = std::fs::remove_dir_all(&dir);
            replay.push((engine, metadata, s));
        }
        let ceiling = repeat(
            runs,
            &Task::IndexInsert {
                n: args.replay_ops,
                dim,
                metadata,
            },
            || Ok(()),
        )?;
        ceilings.push((metadata, ceiling));
    }
    let _ = std::fs::remove_dir_all(&wal_dir);
    Ok(WalResults {
        dim,
        record,
        raw_append,
        single,
        batch,
        replay,
        ceilings,
        replay_ops: args.replay_ops,
    })
}

/// The size of a logged insert frame (v2), for a like-for-like raw baseline.
fn iqdb_persist_bench_frame_len(op: &Operation, buf: &mut Vec<u8>) -> Result<(), String> {
    // head 8 + kind/seq/synced 17 + the operation's encoding.
    if let Operation::Insert {
        id,
        vector,
        metadata,
    } = op
    {
        let id_len = match id {
            VectorId::U64(_) => 9,
            VectorId::Bytes(b) => 9 + b.len(),
        };
        let meta_len = metadata.as_ref().map_or(1, |m| {
            5 + m.iter().map(|(k, _)| 4 + k.len() + 16).sum::<usize>()
        });
        buf.resize(8 + 17 + 1 + id_len + 4 + vector.len() * 4 + meta_len, 0);
    }
    Ok(())
}

fn main() -> ExitCode {
    // `concurrent` has its own arguments (crates/bench/src/concurrent.rs).
    let raw: Vec<String> = std::env::args().collect();
    if matches!(
        raw.get(1).map(String::as_str),
        Some("concurrent" | "concurrent-child")
    ) {
        return concurrent::run(&raw[1..]);
    }
    let args = Args::parse().resolved();
    if let Some(Child::Child { task }) = &args.child {
        let Ok(task) = serde_json::from_str::<Task>(task) else {
            eprintln!("child: bad task");
            return ExitCode::from(2);
        };
        return match run_task(&task) {
            Ok(sample) => {
                println!("{}", serde_json::to_string(&sample).unwrap_or_default());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    match run_all(&args) {
        Ok(table) => {
            println!("{table}");
            let _ = std::fs::remove_dir_all(&args.dir);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            ExitCode::FAILURE
        }
    }
}
