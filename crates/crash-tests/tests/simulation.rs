//! The deterministic chained-fault simulator (issue 9): long seeded
//! histories of writes, checkpoints, syncs, reloads, snapshot-only readers
//! and `open_with`, interleaved with chained I/O errors, process crashes and
//! power losses on one `SimFs`, checked after every recovery by an exact
//! oracle (see `iqdb_persist_crash_tests::sim` for the fault model and the
//! oracle, and docs/TESTING.md).
//!
//! * `IQDB_SIM_SEED=N` replays one seed (what a failure prints);
//! * `IQDB_SIM_SEEDS=N` runs N seeds (default [`CI_SEEDS`]), from
//!   `IQDB_SIM_FIRST` (default 0);
//! * the frozen regression seeds ([`FROZEN`]) always run.

use iqdb_persist_crash_tests::sim::{self, Failure, Stats};

/// Seeds run by default (the CI budget: well under 3 minutes in a debug
/// build on the 2-core CI machine).
const CI_SEEDS: u64 = 40;

/// Seeds that found bugs, with what they found; always run.
const FROZEN: &[(u64, &str)] = &[];

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn seeds() -> Vec<u64> {
    if let Some(seed) = env_u64("IQDB_SIM_SEED") {
        return vec![seed];
    }
    let n = env_u64("IQDB_SIM_SEEDS").unwrap_or(CI_SEEDS);
    let first = env_u64("IQDB_SIM_FIRST").unwrap_or(0);
    let mut seeds: Vec<u64> = FROZEN.iter().map(|(s, _)| *s).collect();
    seeds.extend((first..first + n).filter(|s| !FROZEN.iter().any(|(f, _)| f == s)));
    seeds
}

#[test]
fn chained_faults_never_lose_an_acknowledged_write() {
    let started = std::time::Instant::now();
    let mut stats = Stats::default();
    let mut failures: Vec<Box<Failure>> = Vec::new();
    for seed in seeds() {
        match sim::run_history(seed) {
            Ok(s) => stats.merge(&s),
            Err(f) => {
                eprintln!("{f}");
                if let Some((_, what)) = FROZEN.iter().find(|(s, _)| *s == seed) {
                    eprintln!("  (frozen regression seed: {what})");
                }
                failures.push(f);
            }
        }
    }
    println!(
        "simulation: {stats}\n  {} failing seeds, {:.1} s",
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of the seeds failed: {:?}; replay one with IQDB_SIM_SEED=<seed> cargo test -p \
         iqdb-persist-crash-tests --test simulation -- --nocapture",
        failures.len(),
        failures.iter().map(|f| f.seed).collect::<Vec<_>>()
    );
    assert!(stats.histories == 0 || stats.recoveries > 0);
}
