//! `bench`: save, load and log throughput, printed beside the raw disk's.
//!
//! On generated vectors ([`iqdb_persist_testkit::generate`]) in a temporary
//! directory (or `--dir`), each measurement is repeated `--runs` times and
//! the median reported, beside a raw-disk figure taken in the same run:
//!
//! | measurement | iqdb-persist | raw disk, same byte count |
//! |---|---|---|
//! | save | `PersistedIndex::save` (atomic snapshot) | write + fsync + rename + directory fsync |
//! | load | `PersistedIndex::load` (verify + decode) | read the file into a fresh buffer |
//! | single durable insert | `insert` under `FsyncPolicy::Always` | append + fdatasync, one frame's bytes each |
//! | batch of 1000 | `PersistedIndex::apply` | append 1000 frames' bytes + fdatasync |
//! | log replay | `load` of a database whose log holds every insert | read the log into a fresh buffer |
//!
//! Reads come from the page cache (both sides alike). The figures are this
//! machine's, this run's: reported, never asserted.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use comfy_table::{Table, presets};
use iqdb_index::Index;
use iqdb_persist::{
    Compression, FsyncPolicy, Operation, Options, PersistConfig, PersistedIndex, SnapshotFormat,
};
use iqdb_persist_testkit::{VectorStore, VectorStoreConfig, generate};
use iqdb_types::DistanceMetric;
use serde_json::json;

use crate::output;
use crate::{CliError, CliResult, Context, Status, exit_codes};

/// Snapshot format to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// v2: what 1.0 reads.
    V2,
    /// v3: chunked, streaming (the default).
    V3,
}

impl From<FormatArg> for SnapshotFormat {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::V2 => SnapshotFormat::V2,
            FormatArg::V3 => SnapshotFormat::V3,
        }
    }
}

/// Parses `none`, `lz4`, `zstd` or `zstd:LEVEL` (1..=22).
///
/// # Errors
///
/// A message for anything else.
pub fn parse_compression(s: &str) -> Result<Compression, String> {
    let lower = s.to_ascii_lowercase();
    let c = match lower.as_str() {
        "none" => Compression::None,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd { level: 3 },
        other => {
            let level = other.strip_prefix("zstd:").ok_or_else(|| {
                format!("unknown compression {s:?}: use none, lz4, zstd or zstd:LEVEL")
            })?;
            let level: i32 = level
                .parse()
                .map_err(|_| format!("zstd level {level:?} is not a number"))?;
            Compression::Zstd { level }
        }
    };
    c.validate().map_err(|e| e.to_string())?;
    Ok(c)
}

/// The name of a compression setting, as parsed by [`parse_compression`].
#[must_use]
pub fn compression_name(c: Compression) -> String {
    match c {
        Compression::None => "none".to_string(),
        Compression::Lz4 => "lz4".to_string(),
        Compression::Zstd { level } => format!("zstd:{level}"),
    }
}

/// Arguments of `bench`.
#[derive(Debug, Args)]
#[command(after_help = concat!(
    "Examples:
  iqdb-persist bench
  iqdb-persist bench --vectors 200000 --dim 768 --compression zstd:3 --runs 5
  iqdb-persist bench --format v2 --compression lz4 --dir /mnt/nvme/tmp --json

",
    exit_codes!()
))]
pub struct BenchArgs {
    /// Vectors in the snapshot.
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..=50_000_000))]
    pub vectors: u64,
    /// Vector dimension.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub dim: u64,
    /// Snapshot compression: none, lz4, zstd or zstd:LEVEL.
    #[arg(long, default_value = "none", value_parser = parse_compression)]
    pub compression: Compression,
    /// Snapshot format.
    #[arg(long, value_enum, default_value_t = FormatArg::V3)]
    pub format: FormatArg,
    /// Where to put the files: a fresh subdirectory of DIR (default: of the
    /// system temporary directory), removed afterwards.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Repetitions of each measurement (the median is reported).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub runs: u64,
    /// Single durable inserts per run.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub wal_ops: u64,
    /// Batches of 1000 inserts per run.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub batches: u64,
    /// Seed of the generated data.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

const BATCH: u64 = 1000;

/// One measured quantity over the runs.
#[derive(Debug, Default, Clone)]
struct Samples(Vec<Duration>);

impl Samples {
    fn median(&self) -> Duration {
        let mut v = self.0.clone();
        v.sort();
        if v.is_empty() {
            return Duration::ZERO;
        }
        let mid = v.len() / 2;
        if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2
        }
    }

    fn json(&self) -> serde_json::Value {
        json!(self.0.iter().map(Duration::as_secs_f64).collect::<Vec<_>>())
    }
}

/// A row of the results: iqdb-persist beside the raw disk.
#[derive(Debug)]
struct Row {
    name: &'static str,
    /// Bytes moved per measurement (iqdb-persist's file or log bytes).
    bytes: u64,
    /// Operations per measurement (0 for byte throughput rows).
    ops: u64,
    lib: Samples,
    raw: Samples,
}

fn per_sec(n: u64, d: Duration) -> f64 {
    let s = d.as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    if s > 0.0 { n as f64 / s } else { 0.0 }
}

impl Row {
    fn lib_rate(&self) -> f64 {
        if self.ops > 0 {
            per_sec(self.ops, self.lib.median())
        } else {
            per_sec(self.bytes, self.lib.median()) / 1e6
        }
    }

    fn raw_rate(&self) -> f64 {
        if self.ops > 0 {
            per_sec(self.ops, self.raw.median())
        } else {
            per_sec(self.bytes, self.raw.median()) / 1e6
        }
    }

    fn ratio(&self) -> f64 {
        let raw = self.raw_rate();
        if raw > 0.0 {
            self.lib_rate() / raw
        } else {
            0.0
        }
    }

    fn unit(&self) -> &'static str {
        if self.ops > 0 { "ops/s" } else { "MB/s" }
    }

    fn json(&self) -> serde_json::Value {
        let mb = |d: Duration| per_sec(self.bytes, d) / 1e6;
        json!({
            "name": self.name,
            "bytes": self.bytes,
            "operations": self.ops,
            "iqdb_persist": {
                "median_seconds": self.lib.median().as_secs_f64(),
                "seconds": self.lib.json(),
                "mb_per_s": mb(self.lib.median()),
                "ops_per_s": (self.ops > 0).then(|| per_sec(self.ops, self.lib.median())),
            },
            "raw_disk": {
                "median_seconds": self.raw.median().as_secs_f64(),
                "seconds": self.raw.json(),
                "mb_per_s": mb(self.raw.median()),
                "ops_per_s": (self.ops > 0).then(|| per_sec(self.ops, self.raw.median())),
            },
            "ratio_to_raw": self.ratio(),
        })
    }
}

fn io_err(path: &Path, e: &std::io::Error) -> CliError {
    CliError::new(Status::Io, format!("{}: {e}", path.display()))
}

fn file_len(path: &Path) -> Result<u64, CliError> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| io_err(path, &e))
}

/// Runs `bench`.
///
/// # Errors
///
/// I/O errors and library failures.
pub fn run(args: &BenchArgs, ctx: &mut Context<'_>) -> CliResult {
    let dim =
        usize::try_from(args.dim).map_err(|_| CliError::new(Status::Usage, "--dim too large"))?;
    let (_guard, dir) = work_dir(args.dir.as_deref())?;
    let total = Instant::now();

    let spin = output::spinner(ctx.progress, "generating vectors");
    let store = generate::store(args.seed, args.vectors, dim, DistanceMetric::Cosine);
    spin.finish_and_clear();

    let options = Options::default().snapshot_format(args.format.into());
    let snap_path = dir.join("bench.iqdb");
    let mut snap_config = PersistConfig::new(&snap_path);
    snap_config.compression = args.compression;
    let db = PersistedIndex::open_with_options(store, snap_config.clone(), options.clone())
        .map_err(|e| CliError::persist("bench", &e))?;

    let runs = args.runs;
    let steps = runs * 5;
    let bar = output::bar(ctx.progress, steps, "benchmarking");
    let mut save = Row {
        name: "save snapshot",
        bytes: 0,
        ops: 0,
        lib: Samples::default(),
        raw: Samples::default(),
    };
    let mut load = Row {
        name: "load snapshot",
        bytes: 0,
        ops: 0,
        lib: Samples::default(),
        raw: Samples::default(),
    };
    let mut single = Row {
        name: "durable insert (Always)",
        bytes: 0,
        ops: args.wal_ops,
        lib: Samples::default(),
        raw: Samples::default(),
    };
    let mut batch = Row {
        name: "batch of 1000 (apply)",
        bytes: 0,
        ops: args.batches * BATCH,
        lib: Samples::default(),
        raw: Samples::default(),
    };
    let mut replay = Row {
        name: "log replay (load)",
        bytes: 0,
        ops: 0,
        lib: Samples::default(),
        raw: Samples::default(),
    };
    let mut replay_ops = 0u64;
    let raw_path = dir.join("raw.bin");

    for run in 0..runs {
        // Save, and the raw write of the same bytes.
        bar.set_message(format!("save (run {}/{runs})", run + 1));
        let t = Instant::now();
        db.save().map_err(|e| CliError::persist("save", &e))?;
        save.lib.0.push(t.elapsed());
        let bytes = std::fs::read(&snap_path).map_err(|e| io_err(&snap_path, &e))?;
        save.bytes = bytes.len() as u64;
        load.bytes = save.bytes;
        save.raw.0.push(raw_replace(&dir, &raw_path, &bytes)?);
        drop(bytes);
        bar.inc(1);

        // Load, and the raw read.
        bar.set_message(format!("load (run {}/{runs})", run + 1));
        let t = Instant::now();
        let loaded = PersistedIndex::<VectorStore>::load(snap_config.clone())
            .map_err(|e| CliError::persist("load", &e))?;
        load.lib.0.push(t.elapsed());
        if loaded.index().len() as u64 != args.vectors {
            return Err(CliError::new(
                Status::Failed,
                "load returned the wrong number of vectors",
            ));
        }
        drop(loaded);
        let t = Instant::now();
        let bytes = std::fs::read(&snap_path).map_err(|e| io_err(&snap_path, &e))?;
        load.raw.0.push(t.elapsed());
        drop(bytes);
        bar.inc(1);

        // Single durable inserts.
        bar.set_message(format!("durable inserts (run {}/{runs})", run + 1));
        let wal_db_path = dir.join(format!("wal-{run}.iqdb"));
        let mut wal_config = PersistConfig::new(&wal_db_path);
        wal_config.wal_enabled = true;
        wal_config.fsync_policy = FsyncPolicy::Always;
        let empty = VectorStore::new(dim, DistanceMetric::Cosine, VectorStoreConfig::default())
            .map_err(|e| CliError::new(Status::Failed, format!("bench: {e}")))?;
        let mut wal_db =
            PersistedIndex::open_with_options(empty, wal_config.clone(), options.clone())
                .map_err(|e| CliError::persist("open", &e))?;
        let wal_path = wal_config.wal_path();
        let before = file_len(&wal_path)?;
        let records: Vec<_> = generate::records(args.seed ^ 0x5157, 0..args.wal_ops, dim).collect();
        let t = Instant::now();
        for (id, vector, metadata) in records {
            wal_db
                .insert(id, vector, metadata)
                .map_err(|e| CliError::persist("insert", &e))?;
        }
        single.lib.0.push(t.elapsed());
        let after_single = file_len(&wal_path)?;
        single.bytes = after_single - before;
        let frame = usize::try_from(single.bytes / args.wal_ops.max(1))
            .unwrap_or(1)
            .max(1);
        single
            .raw
            .0
            .push(raw_appends(&raw_path, frame, args.wal_ops)?);
        bar.inc(1);

        // Batches of 1000.
        bar.set_message(format!("batches (run {}/{runs})", run + 1));
        let mut batches = Vec::new();
        for b in 0..args.batches {
            let start = args.wal_ops + b * BATCH;
            let ops: Vec<Operation> =
                generate::records(args.seed ^ 0x5157, start..start + BATCH, dim)
                    .map(|(id, vector, metadata)| Operation::Insert {
                        id,
                        vector,
                        metadata,
                    })
                    .collect();
            batches.push(ops);
        }
        let t = Instant::now();
        for ops in batches {
            wal_db
                .apply(ops)
                .map_err(|e| CliError::persist("apply", &e))?;
        }
        batch.lib.0.push(t.elapsed());
        let after_batches = file_len(&wal_path)?;
        batch.bytes = after_batches - after_single;
        let batch_bytes = usize::try_from(batch.bytes / args.batches)
            .unwrap_or(1)
            .max(1);
        batch
            .raw
            .0
            .push(raw_appends(&raw_path, batch_bytes, args.batches)?);
        drop(wal_db);
        bar.inc(1);

        // Replay of that log.
        bar.set_message(format!("replay (run {}/{runs})", run + 1));
        let t = Instant::now();
        let replayed = PersistedIndex::<VectorStore>::load(wal_config.clone())
            .map_err(|e| CliError::persist("replay", &e))?;
        replay.lib.0.push(t.elapsed());
        replay_ops = replayed.recovery_report().operations_applied;
        replay.bytes = after_batches - before;
        drop(replayed);
        let t = Instant::now();
        let bytes = std::fs::read(&wal_path).map_err(|e| io_err(&wal_path, &e))?;
        replay.raw.0.push(t.elapsed());
        drop(bytes);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let _ = std::fs::remove_file(&raw_path);
    let rows = [save, load, single, batch, replay];
    let raw_payload = db_raw_len(&snap_path);

    if ctx.json {
        let doc = json!({
            "config": {
                "vectors": args.vectors,
                "dim": args.dim,
                "compression": compression_name(args.compression),
                "format": format!("{:?}", args.format).to_lowercase(),
                "runs": args.runs,
                "wal_ops": args.wal_ops,
                "batches": args.batches,
                "dir": dir.display().to_string(),
            },
            "snapshot": {
                "file_bytes": rows[0].bytes,
                "raw_payload_bytes": raw_payload,
                "compression_ratio": raw_payload.and_then(|r| crate::examine::ratio(r, rows[0].bytes)),
            },
            "replay_operations": replay_ops,
            "results": rows.iter().map(Row::json).collect::<Vec<_>>(),
            "total_seconds": total.elapsed().as_secs_f64(),
        });
        output::write_json(ctx.out, &doc)?;
        return Ok(Status::Healthy);
    }

    let out = &mut *ctx.out;
    writeln!(
        out,
        "bench: {} vectors x {} dims, format {}, compression {}, {} run(s) (medians), in {}",
        args.vectors,
        args.dim,
        format!("{:?}", args.format).to_lowercase(),
        compression_name(args.compression),
        runs,
        dir.display()
    )?;
    if let Some(raw) = raw_payload {
        writeln!(
            out,
            "snapshot: {} on disk, {} payload (ratio {:.3})",
            output::bytes(rows[0].bytes),
            output::bytes(raw),
            crate::examine::ratio(raw, rows[0].bytes).unwrap_or(0.0)
        )?;
    }
    let mut table = Table::new();
    table.load_preset(presets::ASCII_MARKDOWN);
    table.set_header(vec![
        "operation",
        "data",
        "iqdb-persist",
        "raw disk",
        "vs raw",
    ]);
    for row in &rows {
        let data = if row.ops > 0 {
            format!("{} ops, {}", row.ops, output::bytes(row.bytes))
        } else {
            output::bytes(row.bytes)
        };
        table.add_row(vec![
            row.name.to_string(),
            data,
            format!(
                "{:.0} {} ({})",
                row.lib_rate(),
                row.unit(),
                output::duration(row.lib.median())
            ),
            format!(
                "{:.0} {} ({})",
                row.raw_rate(),
                row.unit(),
                output::duration(row.raw.median())
            ),
            format!("{:.2}x", row.ratio()),
        ]);
    }
    writeln!(out, "{table}")?;
    let replay_row = &rows[4];
    writeln!(
        out,
        "log replay: {replay_ops} operations in {} = {:.0} ops/s",
        output::duration(replay_row.lib.median()),
        per_sec(replay_ops, replay_row.lib.median())
    )?;
    writeln!(
        out,
        "raw disk: save = write+fsync+rename+dir fsync of the same bytes; load/replay = read into a \
         fresh buffer (page cache, both sides); inserts = append+fdatasync of the same frame sizes"
    )?;
    writeln!(out, "total {}", output::duration(total.elapsed()))?;
    Ok(Status::Healthy)
}

/// The snapshot's raw payload length, through the library.
fn db_raw_len(path: &Path) -> Option<u64> {
    let options = Options::default();
    iqdb_persist::inspect::snapshot_info(options.get_file_system().as_ref(), path, false)
        .ok()
        .map(|s| s.raw_len)
}

/// A fresh directory: `dir/iqdb-persist-bench-XXXX` or one in the system
/// temp dir, removed when the guard drops.
fn work_dir(parent: Option<&Path>) -> Result<(tempfile::TempDir, PathBuf), CliError> {
    let builder = {
        let mut b = tempfile::Builder::new();
        b.prefix("iqdb-persist-bench-");
        b
    };
    let dir = match parent {
        Some(p) => {
            std::fs::create_dir_all(p).map_err(|e| io_err(p, &e))?;
            builder.tempdir_in(p).map_err(|e| io_err(p, &e))?
        }
        None => builder
            .tempdir()
            .map_err(|e| CliError::new(Status::Io, format!("temporary directory: {e}")))?,
    };
    let path = dir.path().to_path_buf();
    Ok((dir, path))
}

/// Write + fsync + rename + directory fsync of `bytes`, as an atomic
/// replace does.
fn raw_replace(dir: &Path, target: &Path, bytes: &[u8]) -> Result<Duration, CliError> {
    let tmp = dir.join("raw.tmp");
    let t = Instant::now();
    let mut f = File::create(&tmp).map_err(|e| io_err(&tmp, &e))?;
    f.write_all(bytes).map_err(|e| io_err(&tmp, &e))?;
    f.sync_all().map_err(|e| io_err(&tmp, &e))?;
    drop(f);
    std::fs::rename(&tmp, target).map_err(|e| io_err(target, &e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, &e))?;
    Ok(t.elapsed())
}

/// `count` appends of `size` bytes, each followed by fdatasync.
fn raw_appends(path: &Path, size: usize, count: u64) -> Result<Duration, CliError> {
    let _ = std::fs::remove_file(path);
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io_err(path, &e))?;
    let buf: Arc<[u8]> = (0..size).map(|i| (i % 251) as u8).collect();
    let t = Instant::now();
    for _ in 0..count {
        f.write_all(&buf).map_err(|e| io_err(path, &e))?;
        f.sync_data().map_err(|e| io_err(path, &e))?;
    }
    Ok(t.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_arguments() {
        assert_eq!(parse_compression("none"), Ok(Compression::None));
        assert_eq!(parse_compression("LZ4"), Ok(Compression::Lz4));
        assert_eq!(
            parse_compression("zstd"),
            Ok(Compression::Zstd { level: 3 })
        );
        assert_eq!(
            parse_compression("zstd:19"),
            Ok(Compression::Zstd { level: 19 })
        );
        assert!(parse_compression("zstd:0").is_err());
        assert!(parse_compression("zstd:x").is_err());
        assert!(parse_compression("gzip").is_err());
        assert_eq!(compression_name(Compression::Zstd { level: 7 }), "zstd:7");
    }

    #[test]
    fn medians() {
        let s = Samples(vec![
            Duration::from_millis(3),
            Duration::from_millis(1),
            Duration::from_millis(2),
        ]);
        assert_eq!(s.median(), Duration::from_millis(2));
        let s = Samples(vec![Duration::from_millis(1), Duration::from_millis(3)]);
        assert_eq!(s.median(), Duration::from_millis(2));
    }
}
