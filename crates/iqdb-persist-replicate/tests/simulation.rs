//! A seeded simulation of replication in a hostile world: a writer, a
//! replicator that is killed (dropped without releasing its lease), taken
//! over by another, stalled past its lease, and a store that fails, times
//! out, loses answers to writes that landed, returns bodies of the wrong
//! size and freezes — while a second thread restores over and over through
//! a faulty store of its own.
//!
//! The oracle:
//! * every restore loads and holds exactly the first `end_seq - 1`
//!   acknowledged writes (a prefix), with `end_seq` at least the last
//!   manifest known committed when it started, and never falls back or
//!   fails for damage while a complete point exists;
//! * a replicator is never told it lost its lease unless another took it;
//!   one that was taken over never commits again;
//! * once the faults stop, the replicator catches up with every
//!   acknowledged write.
//!
//! CI runs a few seeds of a few dozen steps; `IQDB_REPL_SIM_SEEDS=N` runs
//! N seeds, `IQDB_REPL_SIM_STEPS=N` sets the steps, and
//! `IQDB_REPL_SIM_SEED=S` replays one seed (the main thread's faults
//! replay exactly; the restorer's interleaving does not).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{TestDb, check_restored};
use iqdb_persist_replicate::faults::{FaultyStore, RandomFaults};
use iqdb_persist_replicate::{
    ManualClock, Replica, ReplicateError, Replicator, ReplicatorConfig, RestoreOptions,
};
use object_store::ObjectStore;
use object_store::memory::InMemory;

const TTL: Duration = Duration::from_secs(30);

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn config(db: &TestDb, clock: &Arc<ManualClock>) -> ReplicatorConfig {
    let mut c = ReplicatorConfig::new(&db.path);
    c.lease_ttl = TTL;
    c.clock = clock.clone();
    c.max_segment_bytes = 1024;
    c.commit_every = 2;
    c.max_segments = 8;
    c.retain_generations = Some(2);
    c.delete_grace = Duration::from_secs(20);
    c
}

/// Takes the lease, retrying transient errors (`tries` times); a lease
/// still held by a killed replicator of ours is waited out (the clock
/// moved past it).
fn try_start(
    store: &Arc<FaultyStore>,
    db: &TestDb,
    clock: &Arc<ManualClock>,
    seed: u64,
    tries: usize,
) -> Option<Replicator> {
    for _ in 0..tries {
        let replica = Replica::with_store(store.clone(), "db").unwrap();
        match Replicator::new(replica, config(db, clock)) {
            Ok(r) => return Some(r),
            Err(ReplicateError::LeaseHeld { .. }) => clock.advance(TTL + Duration::from_secs(1)),
            Err(e) if e.is_lease_loss() => {
                // Another start of ours (whose answer was lost) raced this one.
                clock.advance(TTL + Duration::from_secs(1));
            }
            Err(ReplicateError::Store { .. }) => {}
            Err(e) => panic!("seed {seed}: starting a replicator: {e}"),
        }
    }
    None
}

fn start(store: &Arc<FaultyStore>, db: &TestDb, clock: &Arc<ManualClock>, seed: u64) -> Replicator {
    try_start(store, db, clock, seed, 200)
        .unwrap_or_else(|| panic!("seed {seed}: no replicator could start"))
}

/// The restorer thread's loop; returns the number of restores checked.
fn restorer(
    store: Arc<FaultyStore>,
    committed: Arc<AtomicU64>,
    acked: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> u64 {
    let mut checked = 0;
    while !stop.load(Ordering::SeqCst) {
        let lo = committed.load(Ordering::SeqCst);
        let out = tempfile::tempdir().unwrap();
        let dir = out.path().join("r");
        let replica = Replica::with_store(store.clone(), "db").unwrap();
        let mut result = replica.restore(&dir, &RestoreOptions::default());
        for _ in 0..20 {
            match &result {
                Err(ReplicateError::Store { .. } | ReplicateError::Io { .. }) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    result = replica.restore(&dir, &RestoreOptions::default());
                }
                _ => break,
            }
        }
        match result {
            Ok(report) => {
                let hi = acked.load(Ordering::SeqCst);
                assert!(
                    report.fell_back.is_none(),
                    "seed {seed}: a restore fell back: {:?}",
                    report.fell_back
                );
                assert!(
                    report.end_seq >= lo && report.end_seq <= hi,
                    "seed {seed}: restored up to {} but {lo} was committed and {hi} acknowledged",
                    report.end_seq
                );
                check_restored(&report.path, report.end_seq);
                checked += 1;
            }
            Err(ReplicateError::NotFound { .. }) if lo == 0 => {}
            Err(ReplicateError::Store { .. }) => {} // the store kept failing
            Err(e) => panic!("seed {seed}: restore failed with {lo} committed: {e}"),
        }
    }
    checked
}

fn simulate(seed: u64, steps: u64) {
    let mut rng = Rng(seed);
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let faults = RandomFaults::default();
    let store = Arc::new(FaultyStore::with_random(inner.clone(), seed, faults));
    let restore_store = Arc::new(FaultyStore::with_random(
        inner.clone(),
        seed ^ 0xdead_beef,
        faults,
    ));
    let clock = Arc::new(ManualClock::new());
    let mut db = TestDb::new();
    let committed = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(db.next_seq()));
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let (s, c, a, st) = (
            restore_store.clone(),
            committed.clone(),
            acked.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || restorer(s, c, a, st, seed))
    };
    let mut rep = Some(start(&store, &db, &clock, seed));
    let mut frozen_for = 0u64;
    let (mut syncs_ok, mut syncs_failed, mut takeovers, mut kills) = (0u64, 0u64, 0u64, 0u64);
    for step in 0..steps {
        if frozen_for > 0 {
            frozen_for -= 1;
            if frozen_for == 0 {
                store.thaw();
            }
        }
        match rng.below(100) {
            0..=29 => {
                let n = 1 + rng.below(6);
                if rng.below(2) == 0 {
                    db.insert(n);
                } else {
                    db.batch(n);
                }
                acked.store(db.next_seq(), Ordering::SeqCst);
            }
            30..=34 => db.checkpoint(),
            35..=74 => {
                if rep.is_none() {
                    // The store may be frozen: try again at the next step.
                    rep = try_start(&store, &db, &clock, seed, 5);
                }
                let Some(r) = rep.as_mut() else {
                    syncs_failed += 1;
                    continue;
                };
                match r.sync() {
                    Ok(report) => {
                        syncs_ok += 1;
                        committed.fetch_max(report.end_seq, Ordering::SeqCst);
                    }
                    Err(e) if e.is_lease_loss() => {
                        panic!("seed {seed} step {step}: lease lost with no takeover: {e}")
                    }
                    Err(e @ ReplicateError::Invalid { .. }) => {
                        panic!("seed {seed} step {step}: {e}")
                    }
                    Err(_) => syncs_failed += 1,
                }
            }
            75..=84 => clock.advance(Duration::from_millis(rng.below(2 * 30_000))),
            85..=89 => {
                if frozen_for == 0 {
                    store.freeze(Some(Duration::from_millis(5)));
                    frozen_for = 1 + rng.below(4);
                }
            }
            90..=94 => {
                // kill -9: the lease stays until it runs out.
                kills += 1;
                rep = None;
            }
            _ => {
                // Another replicator takes over from a stalled one.
                let Some(mut old) = rep.take() else {
                    continue;
                };
                takeovers += 1;
                store.thaw();
                frozen_for = 0;
                clock.advance(TTL * 2);
                let mut new = start(&store, &db, &clock, seed);
                db.insert(1);
                acked.store(db.next_seq(), Ordering::SeqCst);
                let mut stopped = false;
                for _ in 0..50 {
                    match old.sync() {
                        Ok(report) => assert!(
                            !report.committed,
                            "seed {seed} step {step}: a replicator that was taken over committed"
                        ),
                        Err(e) if e.is_lease_loss() => {
                            stopped = true;
                            break;
                        }
                        Err(_) => {}
                    }
                }
                assert!(
                    stopped,
                    "seed {seed} step {step}: the old replicator never stopped"
                );
                if let Ok(report) = new.sync() {
                    committed.fetch_max(report.end_seq, Ordering::SeqCst);
                }
                rep = Some(new);
            }
        }
    }
    // The faults stop; the replicator catches up.
    store.thaw();
    store.pause_random(true);
    let r = match rep.as_mut() {
        Some(r) => r,
        None => rep.insert(start(&store, &db, &clock, seed)),
    };
    let want = db.next_seq();
    let mut end = 0;
    for _ in 0..20 {
        match r.sync() {
            Ok(report) => {
                end = report.end_seq;
                committed.fetch_max(end, Ordering::SeqCst);
                if end == want {
                    break;
                }
            }
            Err(e) => panic!("seed {seed}: sync after the faults stopped: {e}"),
        }
    }
    assert_eq!(end, want, "seed {seed}: did not catch up");
    stop.store(true, Ordering::SeqCst);
    let restores = thread
        .join()
        .unwrap_or_else(|_| panic!("seed {seed}: the restorer failed"));
    restore_store.pause_random(true);
    let out = tempfile::tempdir().unwrap();
    let report = Replica::with_store(store.clone(), "db")
        .unwrap()
        .restore(&out.path().join("r"), &RestoreOptions::default())
        .unwrap();
    assert_eq!(report.end_seq, want, "seed {seed}");
    check_restored(&report.path, want);
    rep.take().unwrap().release().unwrap();
    assert!(store.fired_total() > 0, "seed {seed}: no fault fired");
    eprintln!(
        "seed {seed}: {steps} steps, {} faults fired in {} calls, syncs {syncs_ok} ok / {syncs_failed} failed, \
         {kills} kill(s), {takeovers} takeover(s), {restores} concurrent restore(s) checked, {want} operations",
        store.fired_total(),
        store.calls()
    );
}

#[test]
fn replication_survives_random_fault_schedules() {
    let steps = env_u64("IQDB_REPL_SIM_STEPS").unwrap_or(60);
    let seeds: Vec<u64> = match env_u64("IQDB_REPL_SIM_SEED") {
        Some(s) => vec![s],
        None => (0..env_u64("IQDB_REPL_SIM_SEEDS").unwrap_or(6))
            .map(|i| 0x5eed_0000 + i)
            .collect(),
    };
    for seed in seeds {
        simulate(seed, steps);
    }
}
