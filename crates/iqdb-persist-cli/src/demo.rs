//! `demo`: the library's main job, end to end, with a real crash.
//!
//! 1. Build a reference index ([`VectorStore`], default 20,000 × 128 with
//!    metadata) and save it as a snapshot.
//! 2. Reload it and compare every vector and metadata map bit for bit.
//! 3. Start a **writer child process** (this binary, re-executed with the
//!    hidden `__demo-writer` subcommand) that opens the database in WAL mode
//!    with `FsyncPolicy::Always` and writes inserts, deletes and atomic
//!    batches from a deterministic plan ([`Planner`]), printing `ack N` on
//!    stdout after each write returned `Ok`.
//! 4. Kill it with SIGKILL mid-stream, after a random number of acks and a
//!    random delay.
//! 5. Recover with `PersistedIndex::load` and show its recovery report.
//! 6. Check that every acknowledged write is there with the right vector and
//!    metadata, every acknowledged delete is gone, and no id is there that
//!    should not be; the one step in flight at the kill may or may not be
//!    there, but entirely or not at all.
//! 7. Run the same k-NN searches (plain and with a metadata filter) on the
//!    parent's own copy of what the writer was told to write and on the
//!    recovered index, and compare the hits exactly.
//! 8. Checkpoint, reload, compare again, and print a report with timings.
//!
//! The files stay in the directory (a fresh one under the system temporary
//! directory unless `--dir`) unless `--cleanup`. Exit code 0 when every
//! check passes, 5 when one fails.

use std::collections::{HashSet, VecDeque};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Args;
use iqdb_index::{Index, IndexCore};
use iqdb_persist::inspect;
use iqdb_persist::{Compression, FsyncPolicy, Operation, Options, PersistConfig, PersistedIndex};
use iqdb_persist_testkit::generate::{self, SplitMix64};
use iqdb_persist_testkit::store::{metadata_bitwise_eq, vectors_bitwise_eq};
use iqdb_persist_testkit::{VectorStore, VectorStoreConfig};
use iqdb_types::{DistanceMetric, Filter, Hit, SearchParams, Value, VectorId};
use serde_json::json;

use crate::bench::{compression_name, parse_compression};
use crate::output;
use crate::{CliError, CliResult, Context, Status, exit_codes};

/// The database file name inside the demo directory.
pub const DB_FILE: &str = "vectors.iqdb";

/// Arguments of `demo`.
#[derive(Debug, Args)]
#[command(after_help = concat!(
    "Examples:
  iqdb-persist demo
  iqdb-persist demo --vectors 2000 --dim 32 --cleanup
  iqdb-persist demo --seed 42 --kill-after 500 --dir /tmp/iqdb-demo --json

",
    exit_codes!()
))]
pub struct DemoArgs {
    /// Vectors in the initial index.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=5_000_000))]
    pub vectors: u64,
    /// Vector dimension.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub dim: u64,
    /// Directory for the database (default: a fresh one under the system
    /// temporary directory). It must not hold a demo database already.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Remove the directory afterwards.
    #[arg(long)]
    pub cleanup: bool,
    /// Seed of the data, the write plan and the kill point (default: from
    /// the clock; printed, so a run can be repeated).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Kill the writer after this many acknowledged writes (default: a
    /// random number from 200 to 1200), then a random 0-20 ms delay.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub kill_after: Option<u64>,
    /// Snapshot compression: none, lz4, zstd or zstd:LEVEL.
    #[arg(long, default_value = "zstd:3", value_parser = parse_compression)]
    pub compression: Compression,
}

/// Arguments of the writer child (internal).
#[derive(Debug, Args)]
#[command(after_help = "Example (internal; started by `demo`):
  iqdb-persist __demo-writer --db /tmp/d/vectors.iqdb --seed 1 --base 2000 --dim 32")]
pub struct WriterArgs {
    /// The database's snapshot path.
    #[arg(long)]
    pub db: PathBuf,
    /// Seed of the plan.
    #[arg(long)]
    pub seed: u64,
    /// Records in the initial index.
    #[arg(long)]
    pub base: u64,
    /// Vector dimension.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub dim: u64,
    /// Stop after this many steps.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_steps: u64,
    /// Stop after this many seconds (a guard if the parent is gone).
    #[arg(long, default_value_t = 60)]
    pub max_seconds: u64,
}

/// One step of the writer's plan: one operation, or an atomic batch.
#[derive(Debug, Clone)]
pub enum Step {
    /// `insert` or `delete`.
    Single(Operation),
    /// `apply` of these operations.
    Batch(Vec<Operation>),
}

const WRITER_SALT: u64 = 0xD3_40_5E_ED;

/// The writer's deterministic plan: both processes run the same planner, so
/// the parent knows exactly what the writer was told to write.
///
/// Step `k`: every tenth step is a batch of 8 inserts and 2 deletes; of the
/// rest, every fourth is a delete (alternately of an initial record and of
/// the oldest record the writer inserted); the others insert new records
/// (ids `base`, `base + 1`, ... of [`generate::record`]).
#[derive(Debug, Clone)]
pub struct Planner {
    seed: u64,
    base: u64,
    dim: usize,
    step: u64,
    next_new: u64,
    live_new: VecDeque<u64>,
    base_deleted: HashSet<u64>,
    base_cursor: u64,
}

impl Planner {
    /// A planner for an initial index of `base` records of dimension `dim`.
    #[must_use]
    pub fn new(seed: u64, base: u64, dim: usize) -> Self {
        Self {
            seed,
            base,
            dim,
            step: 0,
            next_new: 0,
            live_new: VecDeque::new(),
            base_deleted: HashSet::new(),
            base_cursor: 0,
        }
    }

    /// The next step.
    pub fn next_step(&mut self) -> Step {
        let k = self.step;
        self.step += 1;
        if k % 10 == 9 {
            let mut ops: Vec<Operation> = (0..8).map(|_| self.insert()).collect();
            ops.push(self.delete_new());
            ops.push(self.delete_base());
            Step::Batch(ops)
        } else if k % 4 == 3 {
            if k % 8 == 3 {
                Step::Single(self.delete_base())
            } else {
                Step::Single(self.delete_new())
            }
        } else {
            Step::Single(self.insert())
        }
    }

    fn insert(&mut self) -> Operation {
        let i = self.base + self.next_new;
        self.next_new += 1;
        self.live_new.push_back(i);
        let (id, vector, metadata) = generate::record(self.seed ^ WRITER_SALT, i, self.dim);
        Operation::Insert {
            id,
            vector,
            metadata,
        }
    }

    fn delete_new(&mut self) -> Operation {
        match self.live_new.pop_front() {
            Some(i) => Operation::Delete {
                id: generate::id(i),
            },
            None => self.delete_base(),
        }
    }

    fn delete_base(&mut self) -> Operation {
        for _ in 0..64 {
            let c = self.base_cursor;
            self.base_cursor += 1;
            let i = c.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) % self.base.max(1);
            if self.base > 0 && self.base_deleted.insert(i) {
                return Operation::Delete {
                    id: generate::id(i),
                };
            }
        }
        self.insert()
    }
}

/// Applies a step to an in-memory index, as the writer's handle does.
///
/// # Errors
///
/// The index's rejection of an operation (the plan never causes one).
pub fn apply_step<I: IndexCore>(index: &mut I, step: &Step) -> iqdb_types::Result<()> {
    let apply = |index: &mut I, op: &Operation| match op {
        Operation::Insert {
            id,
            vector,
            metadata,
        } => index.insert(id.clone(), vector.clone(), metadata.clone()),
        Operation::Delete { id } => index.delete(id),
    };
    match step {
        Step::Single(op) => apply(index, op),
        Step::Batch(ops) => ops.iter().try_for_each(|op| apply(index, op)),
    }
}

/// Runs the writer child: opens the database in WAL mode with
/// `FsyncPolicy::Always` and writes the plan, printing `ready SEQ` once open
/// and `ack K` after step `K` returned `Ok`.
///
/// # Errors
///
/// Any failure to open or write; the parent reports it.
pub fn run_writer(args: &WriterArgs, ctx: &mut Context<'_>) -> CliResult {
    let dim = usize::try_from(args.dim).map_err(|_| CliError::new(Status::Usage, "dim"))?;
    let mut config = PersistConfig::new(&args.db);
    config.wal_enabled = true;
    config.fsync_policy = FsyncPolicy::Always;
    let mut db = PersistedIndex::<VectorStore>::load(config)
        .map_err(|e| CliError::persist("writer: open", &e))?;
    writeln!(ctx.out, "ready {}", db.next_sequence().unwrap_or(0))?;
    ctx.out.flush()?;
    let mut planner = Planner::new(args.seed, args.base, dim);
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    for k in 0..args.max_steps {
        if Instant::now() > deadline {
            break;
        }
        let result = match planner.next_step() {
            Step::Single(Operation::Insert {
                id,
                vector,
                metadata,
            }) => db.insert(id, vector, metadata),
            Step::Single(Operation::Delete { id }) => db.delete(&id),
            Step::Batch(ops) => db.apply(ops),
        };
        result.map_err(|e| CliError::persist(&format!("writer: step {k}"), &e))?;
        writeln!(ctx.out, "ack {k}")?;
        ctx.out.flush()?;
    }
    Ok(Status::Healthy)
}

/// Kills the child when dropped (on any early return).
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One check of the demo.
#[derive(Debug, serde::Serialize)]
struct Check {
    name: &'static str,
    passed: bool,
    detail: String,
}

/// The demo's running state: checks, timings, and what it prints.
struct Demo<'a, 'b> {
    ctx: &'a mut Context<'b>,
    checks: Vec<Check>,
    timings: Vec<(&'static str, Duration)>,
}

impl Demo<'_, '_> {
    fn say(&mut self, line: impl AsRef<str>) -> Result<(), CliError> {
        if !self.ctx.json {
            writeln!(self.ctx.out, "{}", line.as_ref())?;
            self.ctx.out.flush()?;
        }
        Ok(())
    }

    fn check(&mut self, name: &'static str, passed: bool, detail: String) -> Result<(), CliError> {
        let mark = if passed { "ok  " } else { "FAIL" };
        self.say(format!("  [{mark}] {name}: {detail}"))?;
        self.checks.push(Check {
            name,
            passed,
            detail,
        });
        Ok(())
    }

    fn time(&mut self, name: &'static str, d: Duration) {
        self.timings.push((name, d));
    }
}

fn failed(context: &str, e: &iqdb_persist::PersistError) -> CliError {
    CliError::persist(context, e)
}

/// Runs `demo`.
///
/// # Errors
///
/// I/O and library failures that stop the demo (a failed check does not:
/// it is reported and gives exit code 5).
#[allow(clippy::too_many_lines)]
pub fn run(args: &DemoArgs, ctx: &mut Context<'_>) -> CliResult {
    let total = Instant::now();
    let dim =
        usize::try_from(args.dim).map_err(|_| CliError::new(Status::Usage, "--dim too large"))?;
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let mut rng = SplitMix64::new(seed ^ 0x0C0F_FEE0);
    let kill_after = args
        .kill_after
        .unwrap_or_else(|| 200 + rng.next_u64() % 1001);
    let delay = Duration::from_micros(rng.next_u64() % 20_001);
    let dir = demo_dir(args.dir.as_deref())?;
    let db_path = dir.join(DB_FILE);
    let mut demo = Demo {
        ctx,
        checks: Vec::new(),
        timings: Vec::new(),
    };
    demo.say(format!(
        "iqdb-persist demo: {} vectors x {} dims, seed {seed}, in {}",
        args.vectors,
        args.dim,
        dir.display()
    ))?;

    // 1. Build.
    let t = Instant::now();
    let bar = output::bar(demo.ctx.progress, args.vectors, "building the index");
    let capacity = usize::try_from(args.vectors).unwrap_or(0);
    let mut base = VectorStore::new(
        dim,
        DistanceMetric::Cosine,
        VectorStoreConfig::default().with_initial_capacity(capacity),
    )
    .map_err(|e| CliError::new(Status::Failed, format!("building the index: {e}")))?;
    for (i, (id, vector, metadata)) in generate::records(seed, 0..args.vectors, dim).enumerate() {
        base.insert(id, vector, metadata)
            .map_err(|e| CliError::new(Status::Failed, format!("building the index: {e}")))?;
        if i % 1024 == 0 {
            bar.set_position(i as u64);
        }
    }
    bar.finish_and_clear();
    let build = t.elapsed();
    demo.time("build index", build);
    demo.say(format!(
        "1. built a VectorStore: {} vectors with metadata ({})",
        base.len(),
        output::duration(build)
    ))?;

    // 2. Save.
    let mut snap_config = PersistConfig::new(&db_path);
    snap_config.compression = args.compression;
    let spin = output::spinner(demo.ctx.progress, "saving the snapshot");
    let t = Instant::now();
    let db =
        PersistedIndex::open_with_options(base.clone(), snap_config.clone(), Options::default())
            .map_err(|e| failed("save", &e))?;
    db.save().map_err(|e| failed("save", &e))?;
    let save = t.elapsed();
    spin.finish_and_clear();
    drop(db);
    demo.time("save snapshot", save);
    let fs = Options::default().get_file_system().clone();
    let info =
        inspect::snapshot_info(fs.as_ref(), &db_path, false).map_err(|e| failed("inspect", &e))?;
    demo.say(format!(
        "2. saved {} (format v{}, {}: {} payload -> {} file) in {}",
        db_path.display(),
        info.header.version,
        compression_name(args.compression),
        output::bytes(info.raw_len),
        output::bytes(info.file_len),
        output::duration(save)
    ))?;

    // 3. Reload and verify bitwise.
    let spin = output::spinner(demo.ctx.progress, "reloading and comparing");
    let t = Instant::now();
    let reloaded = PersistedIndex::<VectorStore>::load(snap_config.clone())
        .map_err(|e| failed("reload", &e))?;
    let load = t.elapsed();
    let (same, differing) = compare_records(&base, reloaded.index());
    spin.finish_and_clear();
    drop(reloaded);
    demo.time("reload snapshot", load);
    demo.say(format!("3. reloaded in {}", output::duration(load)))?;
    demo.check(
        "reload is bitwise identical",
        differing == 0 && same == base.len(),
        format!(
            "{same} of {} vectors and metadata identical bit for bit, {differing} differ",
            base.len()
        ),
    )?;

    // 4. The writer child, killed mid-stream.
    demo.say(format!(
        "4. writer process: WAL mode, FsyncPolicy::Always; SIGKILL after {kill_after} acks + {:.1} ms",
        delay.as_secs_f64() * 1e3
    ))?;
    let writer = run_child(
        &dir,
        &db_path,
        seed,
        args.vectors,
        args.dim,
        kill_after,
        delay,
        demo.ctx.progress,
    )?;
    demo.time("writer (until killed)", writer.ran);
    let acked = writer.acks;
    #[allow(clippy::cast_precision_loss)]
    let rate = acked as f64 / writer.ran.as_secs_f64().max(1e-9);
    demo.say(format!(
        "   {acked} acknowledged steps in {} ({rate:.0} durable steps/s), then killed ({})",
        output::duration(writer.ran),
        writer.exit
    ))?;
    demo.check(
        "writer was killed mid-stream",
        writer.killed_by_signal && acked >= kill_after,
        format!("{} after {acked} acks", writer.exit),
    )?;

    // The log as the crash left it.
    let log = inspect::scan_log(
        fs.as_ref(),
        &PersistConfig::new(&db_path).wal_path(),
        |_| std::ops::ControlFlow::Continue(()),
    )
    .map_err(|e| failed("scan log", &e))?;
    if let Some(log) = &log {
        let tail = log.damage.as_ref().map_or_else(
            || "ends cleanly".to_string(),
            |d| {
                format!(
                    "{} tail at byte {}: {}",
                    crate::examine::damage_kind(d.kind),
                    d.offset,
                    d.reason
                )
            },
        );
        demo.say(format!(
            "   log after the crash: {} frames, {} inserts, {} deletes, {}; {}",
            log.frames,
            log.inserts,
            log.deletes,
            output::bytes(log.file_len),
            tail
        ))?;
    }

    // Keep a copy of what the crash left, to look at with the other
    // subcommands.
    let crash_copy = if args.cleanup {
        None
    } else {
        Some(copy_crash_state(&dir, &db_path)?)
    };

    // 5. Recover.
    let mut wal_config = PersistConfig::new(&db_path);
    wal_config.wal_enabled = true;
    wal_config.fsync_policy = FsyncPolicy::Always;
    wal_config.compression = args.compression;
    let spin = output::spinner(demo.ctx.progress, "recovering");
    let t = Instant::now();
    let mut recovered = PersistedIndex::<VectorStore>::load(wal_config.clone())
        .map_err(|e| failed("recover", &e))?;
    let recover = t.elapsed();
    spin.finish_and_clear();
    demo.time("recover (load + replay)", recover);
    let report = recovered.recovery_report().clone();
    let truncated = report.truncated.as_ref().map_or_else(
        || "none".to_string(),
        |t| format!("{} bytes at byte {} ({})", t.bytes, t.offset, t.reason),
    );
    demo.say(format!(
        "5. recovered in {}: {} frames replayed, {} operations applied, {} rejected; torn tail truncated: {truncated}",
        output::duration(recover),
        report.frames_replayed,
        report.operations_applied,
        report.operations_rejected
    ))?;

    // 6. Every acknowledged write, nothing else.
    let spin = output::spinner(demo.ctx.progress, "checking every acknowledged write");
    let t = Instant::now();
    let mut planner = Planner::new(seed, args.vectors, dim);
    let mut expected = base;
    let (mut acked_inserts, mut acked_deletes) = (0u64, 0u64);
    let mut deleted_ids = Vec::new();
    for _ in 0..acked {
        let step = planner.next_step();
        count_ops(
            &step,
            &mut acked_inserts,
            &mut acked_deletes,
            &mut deleted_ids,
        );
        apply_step(&mut expected, &step)
            .map_err(|e| CliError::new(Status::Failed, format!("applying the plan: {e}")))?;
    }
    let in_flight = planner.next_step();
    let mut with_in_flight = expected.clone();
    apply_step(&mut with_in_flight, &in_flight)
        .map_err(|e| CliError::new(Status::Failed, format!("applying the plan: {e}")))?;
    let got = recovered.index();
    let (matched, in_flight_applied) = if *got == expected {
        (Some(&expected), false)
    } else if *got == with_in_flight {
        (Some(&with_in_flight), true)
    } else {
        (None, false)
    };
    let reference = matched.unwrap_or(&expected);
    let (same, differing) = compare_records(reference, got);
    let phantoms = got
        .ids()
        .iter()
        .filter(|id| !reference.contains(id))
        .count();
    let resurrected = deleted_ids.iter().filter(|id| got.contains(id)).count();
    spin.finish_and_clear();
    demo.time("check acknowledged writes", t.elapsed());
    demo.say(format!(
        "6. replayed the plan on the parent's copy: {acked} acknowledged steps, plus the one in flight"
    ))?;
    demo.check(
        "every acknowledged write survived",
        matched.is_some() && differing == 0,
        format!(
            "{acked} acked steps ({acked_inserts} inserts, {acked_deletes} deletes): {same} records \
             identical bit for bit, {differing} missing or different"
        ),
    )?;
    demo.check(
        "acknowledged deletes stay deleted",
        resurrected == 0,
        format!(
            "{resurrected} of {} deleted ids came back",
            deleted_ids.len()
        ),
    )?;
    demo.check(
        "no phantom ids",
        phantoms == 0 && matched.is_some(),
        format!(
            "{phantoms} unexpected ids; the step in flight at the kill ({}) is {}",
            step_name(&in_flight),
            if matched.is_none() {
                "inconsistent"
            } else if in_flight_applied {
                "present, entirely (its write reached the OS before the kill, but was not acknowledged yet)"
            } else {
                "absent, entirely"
            }
        ),
    )?;

    // 7. The same searches before and after.
    let spin = output::spinner(demo.ctx.progress, "searching");
    let t = Instant::now();
    let (searches, hits, identical) = compare_searches(seed, dim, reference, got)?;
    spin.finish_and_clear();
    demo.time("k-NN searches", t.elapsed());
    demo.say(format!(
        "7. searched the parent's copy and the recovered index ({searches} queries each)"
    ))?;
    demo.check(
        "k-NN results identical before and after the crash",
        identical == searches,
        format!(
            "{identical} of {searches} searches (k=10; half with the filter group = \"g3\" AND score > 0.25) \
             return identical hits, {hits} hits compared (ids, distances bit for bit, metadata)"
        ),
    )?;

    // 8. Checkpoint, reload, compare.
    let spin = output::spinner(demo.ctx.progress, "checkpointing");
    let t = Instant::now();
    recovered
        .checkpoint()
        .map_err(|e| failed("checkpoint", &e))?;
    let checkpoint = t.elapsed();
    spin.finish_and_clear();
    demo.time("checkpoint", checkpoint);
    drop(recovered);
    demo.say(format!(
        "8. checkpointed in {}",
        output::duration(checkpoint)
    ))?;
    let log_after = inspect::scan_log(fs.as_ref(), &wal_config.wal_path(), |_| {
        std::ops::ControlFlow::Continue(())
    })
    .map_err(|e| failed("scan log", &e))?;
    let frames_after = log_after.as_ref().map_or(0, |l| l.frames);
    let t = Instant::now();
    let after = PersistedIndex::<VectorStore>::load(wal_config.clone())
        .map_err(|e| failed("reload", &e))?;
    demo.time("reload after checkpoint", t.elapsed());
    demo.check(
        "checkpoint folds the log into the snapshot",
        frames_after == 0 && after.index() == reference && after.recovery_report().frames_replayed == 0,
        format!(
            "checkpoint took {}; the new log holds {frames_after} frames; reload has {} vectors, {}",
            output::duration(checkpoint),
            after.index().len(),
            if after.index() == reference { "identical" } else { "DIFFERENT" }
        ),
    )?;
    drop(after);

    let passed = demo.checks.iter().all(|c| c.passed);
    let status = if passed {
        Status::Healthy
    } else {
        Status::Failed
    };
    let elapsed = total.elapsed();
    demo.time("total", elapsed);

    if demo.ctx.json {
        let doc = json!({
            "dir": dir.display().to_string(),
            "database": db_path.display().to_string(),
            "seed": seed,
            "vectors": args.vectors,
            "dim": args.dim,
            "compression": compression_name(args.compression),
            "kill_after": kill_after,
            "acknowledged_steps": acked,
            "in_flight_step_applied": in_flight_applied,
            "recovery": {
                "frames_replayed": report.frames_replayed,
                "operations_applied": report.operations_applied,
                "operations_rejected": report.operations_rejected,
                "torn_tail_truncated": report.truncated.as_ref().map(|t| json!({
                    "offset": t.offset, "bytes": t.bytes, "reason": t.reason,
                })),
                "wal_version": report.wal_version,
            },
            "checks": demo.checks,
            "timings_seconds": demo.timings.iter().map(|(k, d)| (k.to_string(), json!(d.as_secs_f64()))).collect::<serde_json::Map<_, _>>(),
            "kept": !args.cleanup,
            "crash_state_copy": crash_copy.as_ref().map(|p| p.display().to_string()),
            "passed": passed,
            "exit_code": status.code(),
        });
        output::write_json(demo.ctx.out, &doc)?;
    } else {
        let out = &mut *demo.ctx.out;
        writeln!(out, "Timings:")?;
        for (name, d) in &demo.timings {
            output::kv_wide(out, name, output::duration(*d))?;
        }
        let n_passed = demo.checks.iter().filter(|c| c.passed).count();
        writeln!(
            out,
            "Result: {} ({n_passed} of {} checks passed)",
            if passed { "PASSED" } else { "FAILED" },
            demo.checks.len()
        )?;
        if args.cleanup {
            writeln!(out, "Removed {}", dir.display())?;
        } else {
            writeln!(out, "Kept {}", dir.display())?;
            if let Some(copy) = &crash_copy {
                writeln!(
                    out,
                    "The files as the crash left them are in {}; try:\n  iqdb-persist wal dump {} --limit 20\n  iqdb-persist verify {}",
                    copy.parent()
                        .map_or_else(|| copy.display().to_string(), |p| p.display().to_string()),
                    copy.display(),
                    copy.display()
                )?;
            }
        }
    }
    if args.cleanup {
        std::fs::remove_dir_all(&dir)
            .map_err(|e| CliError::new(Status::Io, format!("{}: {e}", dir.display())))?;
    }
    Ok(status)
}

/// The demo directory: `--dir` (created; must not hold a demo database) or
/// a fresh one under the system temporary directory.
fn demo_dir(dir: Option<&Path>) -> Result<PathBuf, CliError> {
    let io =
        |p: &Path, e: std::io::Error| CliError::new(Status::Io, format!("{}: {e}", p.display()));
    match dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| io(d, e))?;
            let db = d.join(DB_FILE);
            let wal = PersistConfig::new(&db).wal_path();
            if db.exists() || wal.exists() {
                return Err(CliError::new(
                    Status::Usage,
                    format!(
                        "{} already holds a demo database; pass an empty directory",
                        d.display()
                    ),
                ));
            }
            Ok(d.to_path_buf())
        }
        None => tempfile::Builder::new()
            .prefix("iqdb-persist-demo-")
            .tempdir()
            .map(tempfile::TempDir::keep)
            .map_err(|e| CliError::new(Status::Io, format!("temporary directory: {e}"))),
    }
}

/// Copies the snapshot and log as the crash left them to
/// `DIR/after-crash/`, returning the copy's snapshot path.
fn copy_crash_state(dir: &Path, db_path: &Path) -> Result<PathBuf, CliError> {
    let io =
        |p: &Path, e: std::io::Error| CliError::new(Status::Io, format!("{}: {e}", p.display()));
    let target_dir = dir.join("after-crash");
    std::fs::create_dir_all(&target_dir).map_err(|e| io(&target_dir, e))?;
    let target = target_dir.join(DB_FILE);
    std::fs::copy(db_path, &target).map_err(|e| io(db_path, e))?;
    let wal = PersistConfig::new(db_path).wal_path();
    let target_wal = PersistConfig::new(&target).wal_path();
    if wal.exists() {
        std::fs::copy(&wal, &target_wal).map_err(|e| io(&wal, e))?;
    }
    Ok(target)
}

/// What happened to the writer.
struct WriterRun {
    acks: u64,
    ran: Duration,
    killed_by_signal: bool,
    exit: String,
}

#[allow(clippy::too_many_arguments)]
fn run_child(
    dir: &Path,
    db_path: &Path,
    seed: u64,
    base: u64,
    dim: u64,
    kill_after: u64,
    delay: Duration,
    progress: bool,
) -> Result<WriterRun, CliError> {
    let exe = std::env::current_exe()
        .map_err(|e| CliError::new(Status::Io, format!("finding this program: {e}")))?;
    let stderr_path = dir.join("writer.stderr");
    let stderr = std::fs::File::create(&stderr_path)
        .map_err(|e| CliError::new(Status::Io, format!("{}: {e}", stderr_path.display())))?;
    let mut child = Command::new(exe)
        .arg("__demo-writer")
        .arg("--db")
        .arg(db_path)
        .args([
            "--seed",
            &seed.to_string(),
            "--base",
            &base.to_string(),
            "--dim",
            &dim.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|e| CliError::new(Status::Io, format!("starting the writer: {e}")))?;
    let stdout = child.stdout.take();
    let mut guard = ChildGuard(Some(child));
    let Some(stdout) = stdout else {
        return Err(CliError::new(Status::Failed, "the writer has no stdout"));
    };
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            match stdout.read_line(&mut line) {
                // A line cut short by the kill was never fully printed: it
                // is not an acknowledgement.
                Ok(n) if n > 0 && line.ends_with('\n') => {
                    if tx.send(line.trim_end().to_string()).is_err() {
                        break;
                    }
                }
                _ => break,
            }
        }
    });
    let writer_error = |what: &str| {
        let text = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        let last = text.lines().last().unwrap_or("").trim().to_string();
        CliError::new(Status::Failed, format!("the writer {what}: {last}"))
    };

    // Wait until it is open.
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(line) if line.starts_with("ready") => {}
        Ok(line) => return Err(writer_error(&format!("said {line:?}"))),
        Err(_) => return Err(writer_error("did not start")),
    }
    let started = Instant::now();
    let bar = output::bar(progress, kill_after, "writer: acknowledged writes");
    let mut acks = 0u64;
    let mut next_expected = 0u64;
    let mut out_of_order = false;
    let mut count = |line: &str, acks: &mut u64| {
        if let Some(k) = line
            .strip_prefix("ack ")
            .and_then(|k| k.parse::<u64>().ok())
        {
            out_of_order |= k != next_expected;
            next_expected = k + 1;
            *acks += 1;
        }
    };
    while acks < kill_after {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                count(&line, &mut acks);
                bar.set_position(acks);
            }
            Err(_) => return Err(writer_error("stopped before it was killed")),
        }
    }
    std::thread::sleep(delay);
    let mut child = guard
        .0
        .take()
        .ok_or_else(|| CliError::new(Status::Failed, "writer lost"))?;
    let _ = child.kill();
    let ran = started.elapsed();
    let status = child
        .wait()
        .map_err(|e| CliError::new(Status::Io, format!("waiting for the writer: {e}")))?;
    // Every ack printed before the kill is in the pipe: read to the end.
    while let Ok(line) = rx.recv() {
        count(&line, &mut acks);
    }
    let _ = reader.join();
    bar.finish_and_clear();
    if out_of_order {
        return Err(CliError::new(
            Status::Failed,
            "the writer's acks were out of order",
        ));
    }
    if std::fs::metadata(&stderr_path).is_ok_and(|m| m.len() == 0) {
        let _ = std::fs::remove_file(&stderr_path);
    }
    let (killed_by_signal, exit) = describe_exit(status);
    Ok(WriterRun {
        acks,
        ran,
        killed_by_signal,
        exit,
    })
}

#[cfg(unix)]
fn describe_exit(status: std::process::ExitStatus) -> (bool, String) {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(9) => (true, "killed by SIGKILL".to_string()),
        Some(s) => (false, format!("killed by signal {s}")),
        None => (false, format!("exited by itself ({status})")),
    }
}

#[cfg(not(unix))]
fn describe_exit(status: std::process::ExitStatus) -> (bool, String) {
    (!status.success(), format!("terminated ({status})"))
}

fn count_ops(step: &Step, inserts: &mut u64, deletes: &mut u64, deleted: &mut Vec<VectorId>) {
    let ops: &[Operation] = match step {
        Step::Single(op) => std::slice::from_ref(op),
        Step::Batch(ops) => ops,
    };
    for op in ops {
        match op {
            Operation::Insert { .. } => *inserts += 1,
            Operation::Delete { id } => {
                *deletes += 1;
                deleted.push(id.clone());
            }
        }
    }
}

fn step_name(step: &Step) -> String {
    match step {
        Step::Single(Operation::Insert { .. }) => "an insert".to_string(),
        Step::Single(Operation::Delete { .. }) => "a delete".to_string(),
        Step::Batch(ops) => format!("a batch of {}", ops.len()),
    }
}

/// Compares every record of `expected` with `got`: (identical, missing or
/// different).
fn compare_records(expected: &VectorStore, got: &VectorStore) -> (usize, usize) {
    let mut same = 0;
    let mut differing = 0;
    for (id, vector, metadata) in expected.iter() {
        let ok = got.get(id).is_some_and(|(v, m)| {
            vectors_bitwise_eq(vector, v)
                && match (metadata, m) {
                    (None, None) => true,
                    (Some(a), Some(b)) => metadata_bitwise_eq(a, b),
                    _ => false,
                }
        });
        if ok {
            same += 1;
        } else {
            differing += 1;
        }
    }
    (same, differing)
}

/// Runs the same searches on both indexes: (searches, hits compared,
/// searches with identical results).
fn compare_searches(
    seed: u64,
    dim: usize,
    a: &VectorStore,
    b: &VectorStore,
) -> Result<(usize, usize, usize), CliError> {
    let filter = Filter::and(vec![
        Filter::eq("group", Value::String("g3".to_string())),
        Filter::gt("score", Value::Float(0.25)),
    ]);
    let mut searches = 0;
    let mut hits = 0;
    let mut identical = 0;
    for q in 0..8u64 {
        let (_, query, _) = generate::record(seed ^ 0x5EA4C4, q, dim);
        for filtered in [false, true] {
            let mut params = SearchParams::new(10, DistanceMetric::Cosine);
            if filtered {
                params.filter = Some(filter.clone());
            }
            let search = |s: &VectorStore| {
                s.search(&query, &params)
                    .map_err(|e| CliError::new(Status::Failed, format!("search: {e}")))
            };
            let (ha, hb) = (search(a)?, search(b)?);
            searches += 1;
            hits += ha.len();
            if hits_identical(&ha, &hb) {
                identical += 1;
            }
        }
    }
    Ok((searches, hits, identical))
}

fn hits_identical(a: &[Hit], b: &[Hit]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.id == y.id
                && x.distance.to_bits() == y.distance.to_bits()
                && match (&x.metadata, &y.metadata) {
                    (None, None) => true,
                    (Some(p), Some(q)) => metadata_bitwise_eq(p, q),
                    _ => false,
                }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_is_deterministic_and_valid() -> Result<(), Box<dyn std::error::Error>> {
        let base = generate::store(3, 50, 4, DistanceMetric::Cosine);
        let mut a = Planner::new(3, 50, 4);
        let mut b = Planner::new(3, 50, 4);
        let mut store = base.clone();
        let mut kinds = HashSet::new();
        for _ in 0..400 {
            let (sa, sb) = (a.next_step(), b.next_step());
            assert_eq!(format!("{sa:?}"), format!("{sb:?}"));
            kinds.insert(step_name(&sa));
            apply_step(&mut store, &sa)?;
        }
        assert!(kinds.contains("an insert"));
        assert!(kinds.contains("a delete"));
        assert!(kinds.contains("a batch of 10"));
        // Deleting past the initial records falls back to inserts.
        assert!(store.len() > 50);
        Ok(())
    }
}
