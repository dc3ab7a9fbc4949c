//! Shared pieces of the crash tests: a seeded workload of inserts, deletes,
//! batches, checkpoints, syncs and reopens; a model of what it should leave;
//! and the oracle that checks a recovered database against it.
//!
//! Records are `iqdb_persist_testkit::generate::record(SEED, i, DIM)`, so a
//! database state is fully described by the set of record numbers in it, and
//! every vector and metadata value of a recovered store can be checked bit
//! for bit against what was written.

pub mod sim;

use std::collections::BTreeSet;
use std::sync::Arc;

use iqdb_index::Index as _;
use iqdb_persist::{
    FsyncPolicy, Operation, Options, PersistConfig, PersistError, PersistedIndex, SnapshotFormat,
    WalFormat,
};
use iqdb_persist_testkit::VectorStore;
use iqdb_persist_testkit::generate::{self, SplitMix64};
use iqdb_persist_testkit::store::{metadata_bitwise_eq, vectors_bitwise_eq};
use iqdb_types::{Metadata, VectorId};

/// Vector dimension of every record.
pub const DIM: usize = 8;
/// Seed of the record stream.
pub const SEED: u64 = 0x00C0_FFEE;

/// Opens (or creates, with vectors of `dim`) the database `DIR/db.iqdb` of
/// the kill -9 writers: WAL mode, `FsyncPolicy::Always`, and explicit
/// formats (`"v1"`: 1.0's, else the latest), because a database keeps the
/// formats it has unless told otherwise and the loops alternate them on one
/// database.
///
/// # Errors
/// Whatever opening or loading the database returns.
pub fn open_kill9_db(
    dir: &std::path::Path,
    format: &str,
    dim: usize,
) -> Result<PersistedIndex<VectorStore>, PersistError> {
    let config = PersistConfig {
        path: dir.join("db.iqdb"),
        wal_enabled: true,
        fsync_policy: FsyncPolicy::Always,
        compression: iqdb_persist::Compression::None,
    };
    let options = kill9_options(format);
    if config.path.exists() {
        PersistedIndex::<VectorStore>::load_with_options(config, options)
    } else {
        VectorStore::new(
            dim,
            iqdb_types::DistanceMetric::Euclidean,
            Default::default(),
        )
        .map_err(PersistError::from)
        .and_then(|store| PersistedIndex::open_with_options(store, config, options))
    }
}

/// The explicit formats of the kill -9 loops: `"v1"` 1.0's (snapshot v2,
/// WAL v1), anything else the latest (snapshot v3, WAL v2).
#[must_use]
pub fn kill9_options(format: &str) -> Options {
    if format == "v1" {
        Options::compat_1_0()
    } else {
        Options::new()
            .snapshot_format(SnapshotFormat::V3)
            .wal_format(WalFormat::V2)
    }
}

/// The vector writer thread `thread` of `shared-writer` inserts under `id`
/// (dim 4); the concurrent kill -9 test recomputes it to check bit for bit.
#[must_use]
pub fn shared_vector(id: u64, thread: u64) -> Arc<[f32]> {
    Arc::from(vec![
        id as f32,
        thread as f32 + 0.25,
        (id % 97) as f32,
        -1.0,
    ])
}

/// The database state: the record numbers present.
pub type Model = BTreeSet<u64>;

/// Record `i`.
#[must_use]
pub fn record(i: u64) -> (VectorId, Arc<[f32]>, Option<Metadata>) {
    generate::record(SEED, i, DIM)
}

/// The record number of an id made by [`generate::id`].
#[must_use]
pub fn number_of(id: &VectorId) -> Option<u64> {
    let i = match id {
        VectorId::U64(i) => *i,
        VectorId::Bytes(bytes) => match bytes.first() {
            Some(0xFF) if bytes.len() == 9 => {
                let mut a = [0u8; 8];
                a.copy_from_slice(&bytes[1..]);
                u64::from_le_bytes(a)
            }
            _ => {
                let text = std::str::from_utf8(bytes).ok()?;
                u64::from_str_radix(text.strip_prefix("id-")?, 16).ok()?
            }
        },
    };
    (generate::id(i) == *id).then_some(i)
}

/// One logged operation of the workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Insert record `i` (rejected if present).
    Insert(u64),
    /// Delete record `i` (rejected if absent).
    Delete(u64),
}

impl Op {
    /// Applies the operation to the model; false if the index rejects it.
    pub fn apply(&self, model: &mut Model) -> bool {
        match self {
            Self::Insert(i) => model.insert(*i),
            Self::Delete(i) => model.remove(i),
        }
    }

    /// The operation as the library takes it.
    #[must_use]
    pub fn to_operation(&self) -> Operation {
        match self {
            Self::Insert(i) => {
                let (id, vector, metadata) = record(*i);
                Operation::Insert {
                    id,
                    vector,
                    metadata,
                }
            }
            Self::Delete(i) => Operation::Delete {
                id: generate::id(*i),
            },
        }
    }

    /// A compact text form (`I 12`, `D 7`), used on the crash writer's stdout.
    #[must_use]
    pub fn encode(&self) -> String {
        match self {
            Self::Insert(i) => format!("I{i}"),
            Self::Delete(i) => format!("D{i}"),
        }
    }

    /// Parses [`encode`](Self::encode)'s form.
    #[must_use]
    pub fn decode(text: &str) -> Option<Self> {
        let (kind, number) = text.split_at_checked(1)?;
        let i = number.parse().ok()?;
        match kind {
            "I" => Some(Self::Insert(i)),
            "D" => Some(Self::Delete(i)),
            _ => None,
        }
    }
}

/// One step of a workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A single insert or delete.
    Op(Op),
    /// A batch, applied with one log write and one fsync.
    Batch(Vec<Op>),
    /// Fold the log into a new snapshot.
    Checkpoint,
    /// Fsync the log.
    Sync,
    /// Drop the handle and load the database again.
    Reopen,
}

impl Step {
    /// A one-line text form for the crash writer's stdout.
    #[must_use]
    pub fn encode(&self) -> String {
        match self {
            Self::Op(op) => op.encode(),
            Self::Batch(ops) => {
                let parts: Vec<String> = ops.iter().map(Op::encode).collect();
                format!("B{}", parts.join(","))
            }
            Self::Checkpoint => "C".into(),
            Self::Sync => "S".into(),
            Self::Reopen => "R".into(),
        }
    }

    /// Parses [`encode`](Self::encode)'s form.
    #[must_use]
    pub fn decode(text: &str) -> Option<Self> {
        match text {
            "C" => Some(Self::Checkpoint),
            "S" => Some(Self::Sync),
            "R" => Some(Self::Reopen),
            _ => match text.strip_prefix('B') {
                Some(ops) => ops
                    .split(',')
                    .map(Op::decode)
                    .collect::<Option<Vec<_>>>()
                    .map(Self::Batch),
                None => Op::decode(text).map(Self::Op),
            },
        }
    }
}

/// A seeded stream of steps that mostly succeed, with some the index must
/// reject (duplicate inserts, deletes of absent records).
#[derive(Debug, Clone)]
pub struct Workload {
    rng: SplitMix64,
    next: u64,
    /// Whether to emit reopen steps (the kill -9 writer does not reopen).
    pub reopens: bool,
}

impl Workload {
    /// A workload whose fresh records are numbered from `first`.
    #[must_use]
    pub fn new(seed: u64, first: u64) -> Self {
        Self {
            rng: SplitMix64::new(seed),
            next: first,
            reopens: true,
        }
    }

    fn below(&mut self, n: u64) -> u64 {
        self.rng.next_u64() % n.max(1)
    }

    fn pick(&mut self, model: &Model) -> Option<u64> {
        if model.is_empty() {
            return None;
        }
        let k = self.below(model.len() as u64) as usize;
        model.iter().nth(k).copied()
    }

    fn op(&mut self, model: &Model) -> Op {
        match self.below(20) {
            0..=13 => {
                self.next += 1;
                Op::Insert(self.next - 1)
            }
            14..=17 => self
                .pick(model)
                .map_or_else(|| self.op(&Model::new()), Op::Delete),
            18 => self
                .pick(model)
                .map_or(Op::Delete(u64::MAX >> 1), Op::Insert),
            _ => Op::Delete(self.next + 1_000_000),
        }
    }

    /// The next step, given the current state.
    pub fn next_step(&mut self, model: &Model) -> Step {
        match self.below(100) {
            0..=69 => Step::Op(self.op(model)),
            70..=84 => {
                let n = 1 + self.below(8);
                let mut scratch = model.clone();
                let ops: Vec<Op> = (0..n)
                    .map(|_| {
                        let op = self.op(&scratch);
                        op.apply(&mut scratch);
                        op
                    })
                    .collect();
                Step::Batch(ops)
            }
            85..=89 => Step::Checkpoint,
            90..=94 => Step::Sync,
            _ if self.reopens => Step::Reopen,
            _ => Step::Sync,
        }
    }

    /// The number the next fresh record gets.
    #[must_use]
    pub fn next_record(&self) -> u64 {
        self.next
    }
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Applied and acknowledged.
    Ok,
    /// The index rejected the operation (no effect).
    Rejected,
    /// A batch stopped after this many applied operations.
    Stopped(usize),
    /// An I/O failure (or a poisoned handle): the effect is unknown.
    Failed(String),
}

/// Executes a step other than [`Step::Reopen`] (which replaces the handle
/// and is the caller's).
pub fn execute(db: &mut PersistedIndex<VectorStore>, step: &Step) -> Outcome {
    let result = match step {
        Step::Op(Op::Insert(i)) => {
            let (id, vector, metadata) = record(*i);
            db.insert(id, vector, metadata)
        }
        Step::Op(Op::Delete(i)) => db.delete(&generate::id(*i)),
        Step::Batch(ops) => db.apply(ops.iter().map(Op::to_operation).collect()),
        Step::Checkpoint => db.checkpoint(),
        Step::Sync => db.sync(),
        Step::Reopen => return Outcome::Failed("reopen is the caller's".into()),
    };
    classify(result)
}

/// Sorts a result into an [`Outcome`].
#[must_use]
pub fn classify(result: Result<(), PersistError>) -> Outcome {
    match result {
        Ok(()) => Outcome::Ok,
        Err(PersistError::IndexBuild(_)) => Outcome::Rejected,
        Err(PersistError::Batch { applied, source })
            if matches!(*source, PersistError::IndexBuild(_)) =>
        {
            Outcome::Stopped(applied)
        }
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// The model after `step` ended with `outcome` (an `Ok`, `Rejected` or
/// `Stopped` outcome has one known effect). Returns an error if the outcome
/// contradicts the model (for example an insert the model says must be
/// rejected was accepted).
pub fn apply_outcome(model: &Model, step: &Step, outcome: &Outcome) -> Result<Model, String> {
    let mut next = model.clone();
    match (step, outcome) {
        (Step::Op(op), Outcome::Ok) => {
            if !op.apply(&mut next) {
                return Err(format!("{op:?} was accepted but must be rejected"));
            }
        }
        (Step::Op(op), Outcome::Rejected) => {
            if op.apply(&mut next.clone()) {
                return Err(format!("{op:?} was rejected but is valid"));
            }
        }
        (Step::Batch(ops), Outcome::Ok) => {
            for op in ops {
                if !op.apply(&mut next) {
                    return Err(format!("batch op {op:?} accepted but must be rejected"));
                }
            }
        }
        (Step::Batch(ops), Outcome::Stopped(applied)) => {
            let expected = batch_prefix(model, ops);
            if expected != *applied {
                return Err(format!(
                    "batch stopped after {applied}, the model says {expected}"
                ));
            }
            for op in &ops[..*applied] {
                op.apply(&mut next);
            }
        }
        (Step::Checkpoint | Step::Sync | Step::Reopen, Outcome::Ok) => {}
        (_, Outcome::Failed(e)) => return Err(format!("step failed: {e}")),
        (step, outcome) => return Err(format!("unexpected outcome {outcome:?} of {step:?}")),
    }
    Ok(next)
}

/// How many operations of a batch apply before the first rejected one.
#[must_use]
pub fn batch_prefix(model: &Model, ops: &[Op]) -> usize {
    let mut scratch = model.clone();
    ops.iter().take_while(|op| op.apply(&mut scratch)).count()
}

/// The states a step may leave on disk when a crash or an I/O failure hits
/// it: the state before, and the states with its effect (a batch entirely,
/// or, when `atomic_batches` is false, any prefix of it).
#[must_use]
pub fn possible_states(model: &Model, step: &Step, atomic_batches: bool) -> Vec<Model> {
    let mut out = vec![model.clone()];
    match step {
        Step::Op(op) => {
            let mut next = model.clone();
            if op.apply(&mut next) {
                out.push(next);
            }
        }
        Step::Batch(ops) => {
            let applied = batch_prefix(model, ops);
            let mut next = model.clone();
            for (k, op) in ops[..applied].iter().enumerate() {
                op.apply(&mut next);
                if !atomic_batches || k + 1 == applied {
                    out.push(next.clone());
                }
            }
        }
        Step::Checkpoint | Step::Sync | Step::Reopen => {}
    }
    out
}

/// The model a store holds, after checking every vector and metadata value
/// against the record it claims to be.
pub fn store_model(store: &VectorStore) -> Result<Model, String> {
    let mut model = Model::new();
    for (id, vector, metadata) in store.iter() {
        let i = number_of(id).ok_or_else(|| format!("phantom id {id} is no record's"))?;
        let (_, expected_vector, expected_meta) = record(i);
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

/// Checks that `store` holds exactly one of the `allowed` states; returns
/// that state.
pub fn check_store(store: &VectorStore, allowed: &[Model]) -> Result<Model, String> {
    let found = store_model(store)?;
    if allowed.contains(&found) {
        return Ok(found);
    }
    let describe = |m: &Model| {
        let n = m.len();
        let last: Vec<_> = m.iter().rev().take(5).collect();
        format!("{n} records, last {last:?}")
    };
    let expected: Vec<String> = allowed.iter().map(describe).collect();
    let missing: Vec<u64> = allowed
        .iter()
        .flat_map(|m| m.difference(&found).copied())
        .take(10)
        .collect();
    Err(format!(
        "recovered state ({}) is none of the allowed states [{}]; missing e.g. {missing:?}",
        describe(&found),
        expected.join("; ")
    ))
}

/// Whether the database's index equals the model (the in-memory check after
/// each acknowledged step).
pub fn same_as_model(store: &VectorStore, model: &Model) -> Result<(), String> {
    check_store(store, std::slice::from_ref(model)).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_invert() {
        for i in [0, 1, 2, 3, 4, 5, 1234, 1 << 40] {
            assert_eq!(number_of(&generate::id(i)), Some(i));
        }
        assert_eq!(number_of(&VectorId::Bytes(b"nope".to_vec().into())), None);
    }

    #[test]
    fn steps_round_trip_as_text() {
        let mut w = Workload::new(5, 0);
        let mut model = Model::new();
        for _ in 0..500 {
            let step = w.next_step(&model);
            assert_eq!(Step::decode(&step.encode()), Some(step.clone()));
            if let Step::Op(op) = &step {
                op.apply(&mut model);
            }
        }
    }

    #[test]
    fn possible_states_cover_batches() {
        let model: Model = [1, 2].into_iter().collect();
        let batch = Step::Batch(vec![
            Op::Insert(3),
            Op::Delete(1),
            Op::Insert(2),
            Op::Insert(9),
        ]);
        let atomic = possible_states(&model, &batch, true);
        assert_eq!(atomic.len(), 2);
        assert_eq!(atomic[1], [2, 3].into_iter().collect());
        assert_eq!(possible_states(&model, &batch, false).len(), 3);
    }
}
