//! The deterministic chained-fault simulator (issue 9).
//!
//! One *history* is a seeded random sequence of database operations
//! (inserts, deletes, batches with rejected operations, checkpoints, saves,
//! syncs, drops, reloads, `open_with`, snapshot-only readers) interleaved
//! with faults on one [`SimFs`] that lives through all of them: I/O errors
//! (EIO, ENOSPC) on any mutating operation, several scheduled at once;
//! process crashes that keep the page cache, now or in the middle of an
//! operation; power losses that leave one disk image the model allows, now
//! or in the middle of an operation, or of a recovery. After every fault the
//! database is recovered from what the fault left (the live page cache after
//! a process crash, the chosen disk image after a power loss), more writes
//! are acknowledged, the next fault comes, and so on: the chain is the
//! point.
//!
//! # The oracle
//!
//! The simulator keeps the *history* of states the log may hold: the state
//! the last recovery found, then the state after every logged unit since
//! (a single operation, a v2 batch, or each operation of a v1 batch,
//! whether it was acknowledged, failed, or in flight when a crash hit). The
//! *floor* is the last state the caller was promised: under
//! `FsyncPolicy::Always` every write that returned `Ok` (or a batch stopped
//! at a rejected operation, whose prefix is acknowledged), under every
//! policy a returned `sync()`, `checkpoint()`, `save()` or `close()`. After
//! every recovery the database must load, and the recovered index must
//! equal, bit for bit (every vector and metadata value against the record
//! generator), one state of the history at or after the floor: every
//! acknowledged write kept, in order; unacknowledged ones all-or-nothing per
//! logged unit and only as a prefix; nothing that was never written. A
//! reload with no fault since the last load must find the newest state. The
//! history is then cut at the state found (the largest matching one, which
//! allows the most), and goes on from there.
//!
//! Besides: the in-memory index must match the model after every call
//! (`Ok`, rejected, or stopped batches exactly; failed calls either before
//! or after); a snapshot-only reader must see a state a snapshot may hold;
//! a snapshot-only `save()` beside a live writer must be refused;
//! `open_with` must not replace a database whose log holds operations; and
//! every fault scheduled must have fired by the end of the history.
//!
//! Everything is a function of the seed: `Periodic` runs with an interval
//! longer than any history, so its flusher never races the simulation (its
//! flushes are the drop-time ones, which the oracle does not count as
//! acknowledgements).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use iqdb_index::Index;
use iqdb_persist::{
    Compression, FsyncPolicy, Options, PersistConfig, PersistError, PersistedIndex, SnapshotFormat,
    WalFormat,
};
use iqdb_persist_testkit::VectorStore;
use iqdb_persist_testkit::generate::SplitMix64;
use iqdb_persist_testkit::simfs::{Fault, OpKind, PowerLossModel, SimFs};
use iqdb_types::DistanceMetric;

use iqdb_persist::Operation;
use iqdb_persist_testkit::generate;
use iqdb_persist_testkit::store::{metadata_bitwise_eq, vectors_bitwise_eq};
use iqdb_types::{Metadata, VectorId};

use crate::{
    DIM, Model, Op, Outcome, SEED, Step, Workload, apply_outcome, batch_prefix, classify, number_of,
};

/// The records of a history: `generate::record(SEED, i, dim)` with the last
/// `zeros` components set to zero (zero-padded embeddings, whose frames hold
/// runs of zeros as long as a lost sector).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Vector dimension.
    pub dim: usize,
    /// Trailing components that are zero.
    pub zeros: usize,
}

impl Shape {
    /// Record `i`.
    #[must_use]
    pub fn record(self, i: u64) -> (VectorId, Arc<[f32]>, Option<Metadata>) {
        let (id, vector, metadata) = generate::record(SEED, i, self.dim);
        if self.zeros == 0 {
            return (id, vector, metadata);
        }
        let mut v = vector.to_vec();
        let from = self.dim.saturating_sub(self.zeros);
        for x in &mut v[from..] {
            *x = 0.0;
        }
        (id, Arc::from(v), metadata)
    }

    fn operation(self, op: &Op) -> Operation {
        match op {
            Op::Insert(i) => {
                let (id, vector, metadata) = self.record(*i);
                Operation::Insert {
                    id,
                    vector,
                    metadata,
                }
            }
            Op::Delete(i) => Operation::Delete {
                id: generate::id(*i),
            },
        }
    }

    /// Runs a write step (as `crate::execute` does, with these records).
    fn execute(self, db: &mut Db, step: &Step) -> Outcome {
        let result = match step {
            Step::Op(Op::Insert(i)) => {
                let (id, vector, metadata) = self.record(*i);
                db.insert(id, vector, metadata)
            }
            Step::Op(Op::Delete(i)) => db.delete(&generate::id(*i)),
            Step::Batch(ops) => db.apply(ops.iter().map(|op| self.operation(op)).collect()),
            _ => return Outcome::Failed("not a write".into()),
        };
        classify(result)
    }

    /// The records a store holds, after checking every vector and metadata
    /// value bit for bit against the record it claims to be.
    fn model(self, store: &VectorStore) -> Result<Model, String> {
        let mut model = Model::new();
        for (id, vector, metadata) in store.iter() {
            let i = number_of(id).ok_or_else(|| format!("phantom id {id} is no record's"))?;
            let (_, expected_vector, expected_meta) = self.record(i);
            if !vectors_bitwise_eq(vector, &expected_vector) {
                return Err(format!("record {i} has the wrong vector"));
            }
            let meta_ok = match (metadata, expected_meta.as_ref()) {
                (None, None) => true,
                (Some(a), Some(b)) => metadata_bitwise_eq(a, b),
                _ => false,
            };
            if !meta_ok {
                return Err(format!("record {i} has the wrong metadata"));
            }
            if !model.insert(i) {
                return Err(format!("record {i} is present twice"));
            }
        }
        if model.len() != store.len() {
            return Err("store length disagrees with its contents".into());
        }
        Ok(model)
    }

    fn empty(self) -> Result<VectorStore, String> {
        VectorStore::new(self.dim, DistanceMetric::Euclidean, Default::default())
            .map_err(|e| format!("empty store: {e}"))
    }

    /// An index holding records `first..first + n` (what `open_with` installs).
    fn base(self, first: u64, n: u64) -> Result<VectorStore, String> {
        use iqdb_index::IndexCore;
        let mut store = self.empty()?;
        for i in first..first + n {
            let (id, vector, metadata) = self.record(i);
            store
                .insert(id, vector, metadata)
                .map_err(|e| format!("base store: {e}"))?;
        }
        Ok(store)
    }
}

/// The settings of one history, all derived from its seed.
#[derive(Debug, Clone, Copy)]
pub struct SimConfig {
    /// The fsync policy.
    pub policy: FsyncPolicy,
    /// The snapshot format written.
    pub snapshot: SnapshotFormat,
    /// The log format written.
    pub wal: WalFormat,
    /// Snapshot compression.
    pub compression: Compression,
    /// Whether the options are `Options::compat_1_0()`.
    pub compat: bool,
    /// Steps in the history.
    pub steps: usize,
    /// The records written.
    pub shape: Shape,
}

impl SimConfig {
    /// The settings seed `seed` runs with.
    #[must_use]
    pub fn for_seed(seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed ^ 0x5EED_C0F1_6000_0000);
        let policy = match rng.next_u64() % 4 {
            0 | 1 => FsyncPolicy::Always,
            2 => FsyncPolicy::Periodic(Duration::from_secs(24 * 3600)),
            _ => FsyncPolicy::Never,
        };
        let (snapshot, wal, compat) = match rng.next_u64() % 6 {
            0 | 1 => (SnapshotFormat::V3, WalFormat::V2, false),
            2 | 3 => (SnapshotFormat::V2, WalFormat::V1, true),
            4 => (SnapshotFormat::V3, WalFormat::V1, false),
            _ => (SnapshotFormat::V2, WalFormat::V2, false),
        };
        let compression = match rng.next_u64() % 8 {
            0 => Compression::Lz4,
            1 => Compression::Zstd { level: 1 },
            _ => Compression::None,
        };
        Self {
            policy,
            snapshot,
            wal,
            compression,
            compat,
            steps: 120 + (rng.next_u64() % 60) as usize,
            shape: if rng.next_u64().is_multiple_of(6) {
                Shape {
                    dim: 384,
                    zeros: 288,
                }
            } else {
                Shape { dim: DIM, zeros: 0 }
            },
        }
    }

    fn policy_name(&self) -> &'static str {
        match self.policy {
            FsyncPolicy::Always => "Always",
            FsyncPolicy::Periodic(_) => "Periodic",
            FsyncPolicy::Never => "Never",
        }
    }
}

impl fmt::Display for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} snapshot v{} WAL v{} {:?}{}{}",
            self.policy_name(),
            self.snapshot.version(),
            self.wal.version(),
            self.compression,
            if self.compat { " (compat_1_0)" } else { "" },
            if self.shape.zeros > 0 {
                " zero-padded"
            } else {
                ""
            }
        )
    }
}

/// What the simulator checked, summed over histories.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Histories run.
    pub histories: u64,
    /// Steps taken (operations and faults).
    pub steps: u64,
    /// Histories per fsync policy / format combination.
    pub configs: BTreeMap<String, u64>,
    /// Faults injected that fired, by kind.
    pub faults: BTreeMap<String, u64>,
    /// Write operations acknowledged (each operation of a batch counts).
    pub acknowledged: u64,
    /// Acknowledged operations a recovery then found in place.
    pub acknowledged_checked: u64,
    /// Operations the index rejected (and so must never be replayed).
    pub rejected: u64,
    /// Recoveries whose result the oracle checked.
    pub recoveries: u64,
    /// Calls other than writes, by kind.
    pub calls: BTreeMap<String, u64>,
}

impl Stats {
    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Stats) {
        self.histories += other.histories;
        self.steps += other.steps;
        self.acknowledged += other.acknowledged;
        self.acknowledged_checked += other.acknowledged_checked;
        self.rejected += other.rejected;
        self.recoveries += other.recoveries;
        for (map, from) in [
            (&mut self.configs, &other.configs),
            (&mut self.faults, &other.faults),
            (&mut self.calls, &other.calls),
        ] {
            for (k, v) in from {
                *map.entry(k.clone()).or_default() += v;
            }
        }
    }

    fn count(map: &mut BTreeMap<String, u64>, key: impl Into<String>) {
        *map.entry(key.into()).or_default() += 1;
    }

    /// The total number of faults that fired.
    #[must_use]
    pub fn faults_total(&self) -> u64 {
        self.faults.values().sum()
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} histories, {} steps, {} faults fired, {} recoveries checked, \
             {} acknowledged writes ({} checked present after a recovery), {} rejected",
            self.histories,
            self.steps,
            self.faults_total(),
            self.recoveries,
            self.acknowledged,
            self.acknowledged_checked,
            self.rejected
        )?;
        let join = |m: &BTreeMap<String, u64>| {
            m.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(f, "  faults: {}", join(&self.faults))?;
        writeln!(f, "  calls: {}", join(&self.calls))?;
        write!(f, "  configurations: {}", join(&self.configs))
    }
}

/// A history that broke the contract.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The seed that replays it.
    pub seed: u64,
    /// The settings.
    pub config: SimConfig,
    /// The step at which the oracle failed.
    pub step: usize,
    /// What went wrong.
    pub message: String,
    /// The last events before it.
    pub recent: Vec<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {} ({}) failed at step {}: {}",
            self.seed, self.config, self.step, self.message
        )?;
        writeln!(f, "  last events:")?;
        for e in &self.recent {
            writeln!(f, "    {e}")?;
        }
        write!(
            f,
            "  replay: IQDB_SIM_SEED={} cargo test -p iqdb-persist-crash-tests --test simulation -- --nocapture",
            self.seed
        )
    }
}

fn db_path() -> PathBuf {
    PathBuf::from("/db/vectors.iqdb")
}

type Db = PersistedIndex<VectorStore>;

/// Runs one history; `Err` if the oracle failed.
pub fn run_history(seed: u64) -> Result<Stats, Box<Failure>> {
    let config = SimConfig::for_seed(seed);
    let mut sim = Sim::new(seed, config);
    let result = sim.run();
    match result {
        Ok(()) => Ok(sim.stats),
        Err(message) => Err(Box::new(Failure {
            seed,
            config,
            step: sim.step,
            message,
            recent: sim.recent.iter().cloned().collect(),
        })),
    }
}

struct Sim {
    config: SimConfig,
    rng: SplitMix64,
    fs: SimFs,
    db: Option<Db>,
    /// The process the handle belongs to.
    db_epoch: u64,
    workload: Workload,
    /// States the log may hold, oldest first; the last is the live state.
    history: Vec<Model>,
    /// Index in `history` of the newest acknowledged state.
    floor: usize,
    /// Acknowledged operations not yet checked by a recovery.
    unchecked: u64,
    /// Index in `history` of the state the snapshot holds, when known.
    snapshot_at: Option<usize>,
    /// States the snapshot file may hold.
    snapshot_states: Vec<Model>,
    /// A state a failed `open_with` may have installed instead.
    open_with_alternative: Option<Model>,
    /// An I/O error since the last load: the handle may be poisoned, and a
    /// reload may find less than memory holds.
    tainted: bool,
    /// Faults fired so far (index into `fs.fired_faults()`).
    fired_seen: usize,
    step: usize,
    stats: Stats,
    recent: VecDeque<String>,
}

impl Sim {
    fn new(seed: u64, config: SimConfig) -> Self {
        let mut stats = Stats {
            histories: 1,
            ..Stats::default()
        };
        Stats::count(&mut stats.configs, config.to_string());
        Self {
            config,
            rng: SplitMix64::new(seed),
            fs: SimFs::new(),
            db: None,
            db_epoch: 0,
            workload: Workload::new(seed ^ 0xABCD, 0),
            history: vec![Model::new()],
            floor: 0,
            unchecked: 0,
            snapshot_at: Some(0),
            snapshot_states: vec![Model::new()],
            open_with_alternative: None,
            tainted: false,
            fired_seen: 0,
            step: 0,
            stats,
            recent: VecDeque::new(),
        }
    }

    fn below(&mut self, n: u64) -> u64 {
        self.rng.next_u64() % n.max(1)
    }

    fn event(&mut self, text: String) {
        if self.recent.len() == 40 {
            self.recent.pop_front();
        }
        self.recent.push_back(format!("[{}] {text}", self.step));
    }

    fn persist_config(&self, wal: bool) -> PersistConfig {
        PersistConfig {
            path: db_path(),
            wal_enabled: wal,
            fsync_policy: self.config.policy,
            compression: self.config.compression,
        }
    }

    /// Options for a new process's handle.
    fn options(&self) -> Options {
        let base = if self.config.compat {
            Options::compat_1_0()
        } else {
            Options::new()
                .snapshot_format(self.config.snapshot)
                .wal_format(self.config.wal)
        };
        base.file_system(Arc::new(self.fs.process()))
            .chunk_size(4096)
            .compression_threads(1)
    }

    fn atomic_batches(&self) -> bool {
        self.config.wal == WalFormat::V2
    }

    fn current(&self) -> &Model {
        // The history is never empty.
        &self.history[self.history.len() - 1]
    }

    /// Records the faults that fired since the last look.
    fn note_fired(&mut self) {
        let fired = self.fs.fired_faults();
        for f in &fired[self.fired_seen..] {
            let name = format!("{:?} on {:?}", f.fault, f.kind);
            Stats::count(&mut self.stats.faults, name.clone());
            let text = format!("fault fired: {name} #{} {}", f.operation, f.path.display());
            self.event(text);
        }
        self.fired_seen = fired.len();
    }

    /// Whether the handle's process is gone (a crash of either kind).
    fn crashed(&self) -> bool {
        self.fs.has_crashed() || (self.db.is_some() && self.fs.epoch() != self.db_epoch)
    }

    fn acknowledge(&mut self) {
        self.floor = self.history.len() - 1;
    }

    /// Pushes the states a write leaves: one per logged unit.
    fn push_units(&mut self, before: &Model, step: &Step, applied: usize) {
        let ops: &[Op] = match step {
            Step::Op(op) => std::slice::from_ref(op),
            Step::Batch(ops) => ops,
            _ => &[],
        };
        let mut state = before.clone();
        for (k, op) in ops[..applied].iter().enumerate() {
            op.apply(&mut state);
            if !self.atomic_batches() || k + 1 == applied {
                self.history.push(state.clone());
            }
        }
    }

    fn run(&mut self) -> Result<(), String> {
        let store = self.config.shape.empty()?;
        let db =
            PersistedIndex::open_with_options(store, self.persist_config(true), self.options())
                .map_err(|e| format!("initial open_with: {e}"))?;
        self.db_epoch = self.fs.epoch();
        self.db = Some(db);
        self.event(format!("open_with {}", self.config));
        for step in 0..self.config.steps {
            self.step = step;
            self.stats.steps += 1;
            if self.db.is_none() {
                self.recover("reload")?;
            }
            self.one_step()?;
            self.note_fired();
            if self.crashed() {
                self.after_crash()?;
            }
        }
        self.step = self.config.steps;
        self.drain_faults()?;
        // The last word: a power loss, a recovery, and a clean reload.
        self.event("final power loss".into());
        self.power_loss_now()?;
        self.drop_db("final clean reload");
        self.recover_clean()?;
        self.drop_db("end");
        Ok(())
    }

    fn one_step(&mut self) -> Result<(), String> {
        let roll = self.below(100);
        match roll {
            0..=49 => self.write(),
            50..=54 => self.checkpoint(false),
            55..=56 => self.checkpoint(true),
            57..=61 => self.sync(),
            62..=63 => {
                self.drop_db("drop");
                self.recover_clean()
            }
            64..=65 => {
                self.close()?;
                if self.crashed() || self.fs.has_crashed() {
                    return self.after_crash();
                }
                self.recover_clean()
            }
            66..=67 => self.snapshot_reader(),
            68 => self.open_with(),
            69 => self.bit_rot(),
            70..=79 => {
                self.schedule_io_fault();
                Ok(())
            }
            80..=84 => {
                self.event("process crash now".into());
                self.fs.crash_process();
                Stats::count(&mut self.stats.faults, "process crash (between calls)");
                Ok(())
            }
            85..=88 => {
                if !self.fs.crash_pending() {
                    let at = self.fs.operation_count() + self.below(12);
                    self.event(format!("process crash scheduled after op #{at}"));
                    self.fs.crash_process_after(at);
                }
                Ok(())
            }
            89..=92 => {
                self.event("power loss now".into());
                self.power_loss_now()
            }
            _ => {
                if !self.fs.crash_pending() {
                    let at = self.fs.operation_count() + self.below(12);
                    self.event(format!("power loss scheduled after op #{at}"));
                    self.fs.crash_after(at);
                }
                Ok(())
            }
        }
    }

    fn schedule_io_fault(&mut self) {
        if self.fs.pending_faults() >= 3 {
            return;
        }
        let fault = if self.below(3) == 0 {
            Fault::NoSpace
        } else {
            Fault::Io
        };
        if self.below(2) == 0 {
            let at = self.fs.operation_count() + self.below(10);
            self.event(format!("fault scheduled: {fault:?} at op #{at}"));
            self.fs.fail_operation(at, fault);
        } else {
            let kinds = [
                OpKind::Sync,
                OpKind::SyncDir,
                OpKind::Write,
                OpKind::Rename,
                OpKind::Create,
                OpKind::Remove,
            ];
            let kind = kinds[self.below(kinds.len() as u64) as usize];
            let skip = self.below(3);
            self.event(format!(
                "fault scheduled: {fault:?} on the {} next {kind:?}",
                skip + 1
            ));
            self.fs.fail_next(kind, skip, fault);
        }
    }

    fn power_loss_now(&mut self) -> Result<(), String> {
        let seed = self.rng.next_u64();
        let report = self.fs.power_loss(seed, PowerLossModel::default());
        Stats::count(&mut self.stats.faults, "power loss");
        if report.sectors_intermediate > 0 {
            Stats::count(&mut self.stats.faults, "power loss: intermediate sector");
        }
        if report.sectors_torn > 0 {
            Stats::count(&mut self.stats.faults, "power loss: torn tail sector");
        }
        if report.names_kept < report.names_pending {
            Stats::count(&mut self.stats.faults, "power loss: namespace ops lost");
        }
        self.event(format!("power loss image: {report:?}"));
        self.drop_db("dead after power loss");
        self.recover("after power loss")
    }

    /// A crash hit the handle: reboot if the machine went down, then recover.
    fn after_crash(&mut self) -> Result<(), String> {
        self.drop_db("dead after crash");
        if self.fs.has_crashed() {
            let seed = self.rng.next_u64();
            let report = self.fs.power_loss(seed, PowerLossModel::default());
            Stats::count(&mut self.stats.faults, "power loss (mid-operation)");
            self.event(format!("power loss mid-operation, image: {report:?}"));
            self.recover("after power loss mid-operation")
        } else {
            Stats::count(&mut self.stats.faults, "process crash (mid-operation)");
            self.recover("after process crash")
        }
    }

    /// `close()`: the final fsync's outcome. `Ok` acknowledges everything
    /// written.
    fn close(&mut self) -> Result<(), String> {
        let Some(db) = self.db.take() else {
            return Ok(());
        };
        Stats::count(&mut self.stats.calls, "close");
        let result = db.close();
        self.note_fired();
        self.event(format!("close -> {result:?}"));
        match result {
            Ok(()) => self.acknowledge_sync(),
            Err(_) => self.tainted = true,
        }
        Ok(())
    }

    fn drop_db(&mut self, why: &str) {
        if let Some(db) = self.db.take() {
            self.event(format!("drop handle ({why})"));
            let (epoch, down) = (self.fs.epoch(), self.fs.has_crashed());
            drop(db);
            self.note_fired();
            if !down && self.fs.has_crashed() {
                self.event("power loss during the drop's sync".into());
            } else if self.fs.epoch() != epoch && epoch == self.db_epoch {
                Stats::count(&mut self.stats.faults, "process crash (during drop)");
                self.event("process crash during the drop's sync".into());
            }
        }
    }

    fn write(&mut self) -> Result<(), String> {
        let step = loop {
            let current = self.current().clone();
            if let s @ (Step::Op(_) | Step::Batch(_)) = self.workload.next_step(&current) {
                break s;
            }
        };
        let before = self.current().clone();
        let Some(db) = self.db.as_mut() else {
            return Ok(());
        };
        let shape = self.config.shape;
        let outcome = shape.execute(db, &step);
        let actual = shape.model(db.index());
        self.note_fired();
        self.event(format!("{} -> {outcome:?}", step.encode()));
        let ops = match &step {
            Step::Batch(ops) => ops.len(),
            _ => 1,
        };
        match &outcome {
            Outcome::Ok | Outcome::Rejected | Outcome::Stopped(_) => {
                let expected = apply_outcome(&before, &step, &outcome)?;
                if actual.as_ref() != Ok(&expected) {
                    return Err(format!(
                        "after {} the index holds {:?}, the model says {} records",
                        step.encode(),
                        actual.map(|m| m.len()),
                        expected.len()
                    ));
                }
                let applied = match outcome {
                    Outcome::Ok => ops,
                    Outcome::Stopped(k) => k,
                    _ => 0,
                };
                self.stats.rejected += (ops - applied) as u64;
                if applied > 0 {
                    self.push_units(&before, &step, applied);
                }
                let acked = match outcome {
                    Outcome::Ok | Outcome::Stopped(_) => applied,
                    _ => 0,
                };
                if acked > 0 {
                    self.stats.acknowledged += acked as u64;
                    if self.config.policy == FsyncPolicy::Always {
                        self.acknowledge();
                        self.unchecked += acked as u64;
                    }
                }
            }
            Outcome::Failed(e) => {
                // Either nothing happened, or (a prefix of) the step is in
                // memory and maybe in the log.
                let actual = actual.map_err(|e| format!("after a failed write: {e}"))?;
                let prefix = match &step {
                    Step::Batch(ops) => batch_prefix(&before, ops),
                    _ => usize::from(apply_outcome(&before, &step, &Outcome::Ok).is_ok()),
                };
                let mut applied = None;
                let mut state = before.clone();
                if actual == state {
                    applied = Some(0);
                }
                let all_ops: Vec<Op> = match &step {
                    Step::Op(op) => vec![op.clone()],
                    Step::Batch(ops) => ops.clone(),
                    _ => Vec::new(),
                };
                for (k, op) in all_ops[..prefix].iter().enumerate() {
                    op.apply(&mut state);
                    if state == actual && (!self.atomic_batches() || k + 1 == prefix) {
                        applied = Some(k + 1);
                    }
                }
                let Some(applied) = applied else {
                    return Err(format!(
                        "{} failed ({e}) and left the index in a state that is neither before nor after it",
                        step.encode()
                    ));
                };
                self.tainted = true;
                if self.crashed() {
                    // In flight when the crash hit: all of its prefix may
                    // be in the log, in memory or not.
                    self.push_units(&before, &step, prefix);
                } else if applied > 0 {
                    self.push_units(&before, &step, applied);
                }
            }
        }
        Ok(())
    }

    fn checkpoint(&mut self, save: bool) -> Result<(), String> {
        let Some(db) = self.db.as_mut() else {
            return Ok(());
        };
        let name = if save { "save" } else { "checkpoint" };
        Stats::count(&mut self.stats.calls, name);
        let result = if save { db.save() } else { db.checkpoint() };
        self.note_fired();
        self.event(format!("{name} -> {result:?}"));
        let current = self.current().clone();
        match result {
            Ok(()) => {
                self.acknowledge_sync();
                self.snapshot_at = Some(self.history.len() - 1);
                self.snapshot_states = vec![current];
            }
            Err(_) => {
                self.tainted = true;
                self.snapshot_at = None;
                if !self.snapshot_states.contains(&current) {
                    self.snapshot_states.push(current);
                }
            }
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), String> {
        let Some(db) = self.db.as_ref() else {
            return Ok(());
        };
        Stats::count(&mut self.stats.calls, "sync");
        let result = db.sync();
        self.note_fired();
        self.event(format!("sync -> {result:?}"));
        match result {
            Ok(()) => self.acknowledge_sync(),
            Err(_) => self.tainted = true,
        }
        Ok(())
    }

    fn acknowledge_sync(&mut self) {
        if self.config.policy != FsyncPolicy::Always {
            // Everything written so far is now acknowledged.
            let new = self.history.len() - 1 - self.floor;
            self.unchecked += new as u64;
        }
        self.acknowledge();
    }

    /// A snapshot-only handle: a reader of the snapshot, which must not be
    /// able to write it while a writer is live.
    fn snapshot_reader(&mut self) -> Result<(), String> {
        Stats::count(&mut self.stats.calls, "snapshot-only load");
        let fired = self.fs.fired_faults().len();
        let reader = Db::load_with_options(self.persist_config(false), self.options());
        self.note_fired();
        let reader = match reader {
            Ok(r) => r,
            Err(e) if self.fs.fired_faults().len() > fired || self.crashed() => {
                self.event(format!("snapshot-only load failed under a fault: {e}"));
                return Ok(());
            }
            Err(e) => return Err(format!("a snapshot-only load failed: {e}")),
        };
        let found = self.config.shape.model(reader.index())?;
        if !self.snapshot_states.contains(&found) {
            return Err(format!(
                "a snapshot-only load found {} records, which no snapshot written holds",
                found.len()
            ));
        }
        self.event(format!("snapshot-only load: {} records", found.len()));
        if self.db.is_some() && self.below(2) == 0 {
            Stats::count(&mut self.stats.calls, "snapshot-only save beside a writer");
            let result = reader.save();
            self.note_fired();
            self.event(format!(
                "snapshot-only save beside a live writer -> {result:?}"
            ));
            // The writer lock comes first: nothing but `Locked` (a save that
            // failed later may already have replaced the snapshot).
            if !matches!(result, Err(PersistError::Locked { .. })) {
                return Err(format!(
                    "a snapshot-only save() beside a live WAL-mode handle was not refused with \
                     Locked but returned {result:?} (issue 9 item 6)"
                ));
            }
        }
        Ok(())
    }

    /// Drops the handle and calls `open_with` on the existing database: it
    /// must refuse while the log holds operations.
    fn open_with(&mut self) -> Result<(), String> {
        self.drop_db("before open_with");
        if self.crashed() || self.fs.has_crashed() {
            return self.after_crash();
        }
        Stats::count(&mut self.stats.calls, "open_with on an existing database");
        let first = self.workload.next_record() + 500_000 + self.below(1000) * 10;
        let n = self.below(4);
        let store = self.config.shape.base(first, n)?;
        let new_state = self.config.shape.model(&store)?;
        let epoch = self.fs.epoch();
        let result = Db::open_with_options(store, self.persist_config(true), self.options());
        self.note_fired();
        match result {
            Ok(db) => {
                self.event(format!("open_with -> Ok ({n} records)"));
                let pending = match self.snapshot_at {
                    Some(at) => self.history[at] != *self.current(),
                    None => false,
                };
                if pending && !self.tainted {
                    return Err(format!(
                        "open_with replaced a database whose log held operations ({} records \
                         in the log's state, {} in the snapshot's)",
                        self.current().len(),
                        self.snapshot_at.map_or(0, |at| self.history[at].len())
                    ));
                }
                self.db = Some(db);
                self.db_epoch = epoch;
                self.reset_history(new_state);
                Stats::count(&mut self.stats.calls, "open_with replaced");
            }
            Err(PersistError::WouldOverwrite {
                pending_operations, ..
            }) => {
                self.event(format!(
                    "open_with -> WouldOverwrite ({pending_operations} pending)"
                ));
                Stats::count(&mut self.stats.calls, "open_with refused");
            }
            Err(e) => {
                self.event(format!("open_with -> {e}"));
                self.tainted = true;
                self.open_with_alternative = Some(new_state);
                if self.crashed() || self.fs.has_crashed() {
                    return self.after_crash();
                }
            }
        }
        Ok(())
    }

    /// Damage a crash cannot cause: one bit of a synced byte of the log
    /// flips. `open_with` must still refuse to replace the log's operations
    /// (issue 9 item 5), and a load must report the damage or, if the bit
    /// did not matter, find the newest state: never load with synced
    /// records silently dropped (item 4). Then the bit is flipped back.
    fn bit_rot(&mut self) -> Result<(), String> {
        if self.db.is_none()
            || self.tainted
            || self.fs.crash_pending()
            || self.fs.pending_faults() > 0
        {
            return Ok(());
        }
        self.drop_db("before bit rot");
        let wal = PathBuf::from("/db/vectors.iqdb.wal");
        let (Some(live), Some(durable)) = (self.fs.read_live(&wal), self.fs.read_durable(&wal))
        else {
            return self.recover_clean();
        };
        let header = if live.starts_with(b"IQDBWAL\0") && live.get(8) == Some(&1) {
            12
        } else {
            40
        };
        let end = live.len().min(durable.len());
        if end <= header {
            return self.recover_clean();
        }
        let offset = header as u64 + self.below((end - header) as u64);
        let bit = self.below(8) as u8;
        if !self.fs.flip_bit(&wal, offset, bit) {
            return self.recover_clean();
        }
        Stats::count(&mut self.stats.faults, "bit rot in a synced log byte");
        self.event(format!("bit rot: byte {offset} bit {bit} of {end}"));
        let pending = self
            .snapshot_at
            .is_some_and(|at| self.history[at] != *self.current());
        let base = self
            .config
            .shape
            .base(self.workload.next_record() + 900_000, 1)?;
        let new_state = self.config.shape.model(&base)?;
        Stats::count(&mut self.stats.calls, "open_with on a damaged log");
        match Db::open_with_options(base, self.persist_config(true), self.options()) {
            Ok(db) => {
                if pending {
                    return Err(format!(
                        "open_with replaced a log whose byte {offset} took a flipped bit, discarding its operations (issue 9 item 5)"
                    ));
                }
                self.event("open_with replaced a log that held no operations".into());
                self.db_epoch = self.fs.epoch();
                self.db = Some(db);
                self.reset_history(new_state);
                return Ok(());
            }
            Err(e) => self.event(format!("open_with on the damaged log -> {e}")),
        }
        Stats::count(&mut self.stats.calls, "load of a damaged log");
        match Db::load_with_options(self.persist_config(true), self.options()) {
            Ok(db) => {
                let found = self.config.shape.model(db.index())?;
                drop(db);
                if found != *self.current() {
                    return Err(format!(
                        "a flipped bit at byte {offset} of a synced log was taken for a torn write: the load dropped synced records ({} found, {} written; issue 9 item 4)",
                        found.len(),
                        self.current().len()
                    ));
                }
                self.event("the damaged log loaded whole (the bit did not matter)".into());
            }
            Err(e) => {
                Stats::count(&mut self.stats.calls, "damaged log refused");
                self.event(format!("load of the damaged log -> {e}"));
            }
        }
        // Repair: flip the bit back (if the load did not cut it off).
        self.fs.flip_bit(&wal, offset, bit);
        self.recover_clean()
    }

    fn reset_history(&mut self, state: Model) {
        self.history = vec![state.clone()];
        self.floor = 0;
        self.snapshot_at = Some(0);
        self.snapshot_states = vec![state];
        self.open_with_alternative = None;
        self.tainted = false;
        self.unchecked = 0;
    }

    /// A reload with no fault since the last load: must find the newest state.
    fn recover_clean(&mut self) -> Result<(), String> {
        let exact = !self.tainted && !self.fs.crash_pending() && self.fs.pending_faults() == 0;
        self.recover_with(if exact { "clean reload" } else { "reload" }, exact)
    }

    fn recover(&mut self, why: &str) -> Result<(), String> {
        self.recover_with(why, false)
    }

    fn recover_with(&mut self, why: &str, exact: bool) -> Result<(), String> {
        let mut exact = exact;
        let mut attempts = 0;
        let db = loop {
            attempts += 1;
            if attempts > 20 {
                return Err("the database did not load in 20 attempts under faults".into());
            }
            if self.fs.has_crashed() {
                // A power loss hit the last attempt: the machine reboots.
                let seed = self.rng.next_u64();
                let report = self.fs.power_loss(seed, PowerLossModel::default());
                Stats::count(&mut self.stats.faults, "power loss (during recovery)");
                self.event(format!("power loss during recovery, image: {report:?}"));
                exact = false;
            }
            let epoch = self.fs.epoch();
            let fired = self.fs.fired_faults().len();
            let result = Db::load_with_options(self.persist_config(true), self.options());
            self.note_fired();
            match result {
                Ok(db) if self.fs.epoch() == epoch && !self.fs.has_crashed() => {
                    self.db_epoch = epoch;
                    break db;
                }
                Ok(db) => {
                    // A crash hit the load after it had done its work.
                    drop(db);
                    exact = false;
                    self.event("a crash hit the recovery".into());
                    if !self.fs.has_crashed() {
                        Stats::count(&mut self.stats.faults, "process crash (during recovery)");
                    }
                }
                Err(e) => {
                    if self.fs.has_crashed() || self.fs.epoch() != epoch {
                        exact = false;
                        self.event(format!("a crash hit the recovery: {e}"));
                        if !self.fs.has_crashed() {
                            Stats::count(&mut self.stats.faults, "process crash (during recovery)");
                        }
                    } else if self.fs.fired_faults().len() > fired {
                        exact = false;
                        self.event(format!("recovery failed under an injected fault: {e}"));
                    } else {
                        self.dump_files();
                        return Err(format!("the database does not load ({why}): {e}"));
                    }
                }
            }
        };
        let found = self
            .config
            .shape
            .model(db.index())
            .map_err(|e| format!("recovered ({why}): {e}"))?;
        self.db = Some(db);
        self.stats.recoveries += 1;
        self.event(format!(
            "recovered ({why}): {} records; history {} states, floor {}",
            found.len(),
            self.history.len(),
            self.floor
        ));
        if let Some(alt) = self.open_with_alternative.take()
            && alt == found
            && found != *self.current()
        {
            // The failed open_with's snapshot was installed.
            self.reset_history(found);
            return Ok(());
        }
        let last = self.history.len() - 1;
        if exact && found != self.history[last] {
            return Err(format!(
                "a reload after a clean drop found {} records, not the {} the handle held \
                 (missing e.g. {:?}, extra e.g. {:?})",
                found.len(),
                self.history[last].len(),
                self.history[last]
                    .difference(&found)
                    .take(5)
                    .collect::<Vec<_>>(),
                found
                    .difference(&self.history[last])
                    .take(5)
                    .collect::<Vec<_>>(),
            ));
        }
        let Some(j) = (self.floor..=last)
            .rev()
            .find(|&j| self.history[j] == found)
        else {
            let required = &self.history[self.floor];
            let earlier = self.history[..self.floor].iter().rposition(|s| *s == found);
            return Err(format!(
                "recovered state ({why}) is none the acknowledged history allows: {} records; \
                 the acknowledged state has {} (missing e.g. {:?}, never acknowledged e.g. \
                 {:?}); {}",
                found.len(),
                required.len(),
                required.difference(&found).take(5).collect::<Vec<_>>(),
                found.difference(required).take(5).collect::<Vec<_>>(),
                match earlier {
                    Some(k) => format!(
                        "it is the state of {} units before the floor (acknowledged writes lost)",
                        self.floor - k
                    ),
                    None => "it is no state of the history at all".into(),
                }
            ));
        };
        self.history.truncate(j + 1);
        if self.snapshot_at.is_some_and(|at| at > j) {
            self.snapshot_at = None;
        }
        self.stats.acknowledged_checked += self.unchecked;
        self.unchecked = 0;
        self.tainted = false;
        Ok(())
    }

    /// With `IQDB_SIM_DUMP=<dir>`, writes every file of the simulated disk
    /// there (for looking at a log that does not load).
    fn dump_files(&self) {
        let Some(dir) = std::env::var_os("IQDB_SIM_DUMP") else {
            return;
        };
        let dir = PathBuf::from(dir);
        for name in self.fs.live_names() {
            let (Some(bytes), Some(file)) = (self.fs.read_live(&name), name.file_name()) else {
                continue;
            };
            if let Err(e) =
                std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(dir.join(file), bytes))
            {
                eprintln!("IQDB_SIM_DUMP: {e}");
            }
        }
    }

    /// Drives the database until every scheduled fault and crash has fired.
    fn drain_faults(&mut self) -> Result<(), String> {
        let mut rounds = 0;
        while self.fs.pending_faults() > 0 || self.fs.crash_pending() {
            rounds += 1;
            if rounds > 300 {
                return Err(format!(
                    "scheduled faults never fired: {:?} (and a crash pending: {}) at op #{}",
                    self.fs.describe_pending_faults(),
                    self.fs.crash_pending(),
                    self.fs.operation_count()
                ));
            }
            if self.db.is_none() {
                self.recover("reload while draining faults")?;
            }
            if rounds % 4 == 0 {
                self.checkpoint(false)?;
            } else if rounds % 7 == 0 {
                self.drop_db("drop while draining faults");
                self.recover("reload while draining faults")?;
            } else {
                self.write()?;
            }
            self.note_fired();
            if self.crashed() {
                self.after_crash()?;
            } else if self.tainted && rounds % 2 == 0 {
                self.drop_db("drop a handle that failed");
            }
        }
        Ok(())
    }
}
