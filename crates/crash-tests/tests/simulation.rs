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

/// Seeds that found bugs, with what they found (against 70b569e); always
/// run.
const FROZEN: &[(u64, &str)] = &[
    (
        1,
        "item 2, WAL v1: a record replayed from the page cache after a failed fsync never reached the disk; the acknowledged insert after it was cut off with it at the next power loss",
    ),
    (
        3,
        "item 6: a snapshot-only save() succeeded beside a live WAL-mode handle",
    ),
    (
        23,
        "item 2, WAL v2: reload after a failed fsync trusted the cache; after the next acknowledged insert and a power loss the log did not load ('a later frame saw this one already synced')",
    ),
    (
        35,
        "item 2, Never: process crash between write and fsync, reload, sync() returned Ok without an fsync; power loss lost the synced records",
    ),
    (
        46,
        "item 4: one flipped bit in a zero-padded v1 frame taken for a torn write; 25 synced records dropped with a warning",
    ),
    (
        53,
        "item 5: open_with replaced a log whose first frame took a flipped bit",
    ),
    (
        70,
        "new: open_with overwrote the intent of a checkpoint that failed after installing its snapshot, then failed; WalMismatch on load (found with the item 1-8 fixes applied)",
    ),
    (
        95,
        "item 6: a snapshot-only save() beside a live writer replaced the snapshot, then failed on its directory fsync; WalMismatch on the next load",
    ),
    (
        222,
        "new: as seed 70, open_with crashed after writing its intent",
    ),
];

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

/// Found by the simulator (seeds 70 and 222 with the issue-9 recovery fixes
/// applied): a checkpoint fails after renaming its snapshot into place (its
/// directory fsync fails), so its intent is left for the next load to
/// complete; `open_with` then writes its own intent over that one and fails
/// before installing its snapshot. The snapshot in place is the failed
/// checkpoint's, the log is the old one, and the intent names a snapshot
/// that was never installed: the database does not load (`WalMismatch`).
#[test]
#[ignore = "open-core bug (not an issue-9 item): open_with overwrites a pending checkpoint intent; \
            fails on 70b569e with WalMismatch; un-ignore once persisted.rs completes the intent first"]
fn open_with_after_a_checkpoint_failed_after_installing_keeps_the_database() -> Result<(), String> {
    use std::sync::Arc;

    use iqdb_index::Index;
    use iqdb_persist::{FsyncPolicy, Options, PersistConfig, PersistedIndex};
    use iqdb_persist_crash_tests::{DIM, Model, record, store_model};
    use iqdb_persist_testkit::VectorStore;
    use iqdb_persist_testkit::simfs::{Fault, OpKind, SimFs};
    use iqdb_types::DistanceMetric;

    let config = PersistConfig {
        path: "/db/vectors.iqdb".into(),
        wal_enabled: true,
        fsync_policy: FsyncPolicy::Always,
        compression: iqdb_persist::Compression::None,
    };
    let empty = || {
        VectorStore::new(DIM, DistanceMetric::Euclidean, Default::default())
            .map_err(|e| e.to_string())
    };
    let fs = SimFs::new();
    let options = |fs: &SimFs| Options::new().file_system(Arc::new(fs.process()));
    let mut db = PersistedIndex::open_with_options(empty()?, config.clone(), options(&fs))
        .map_err(|e| e.to_string())?;
    let mut model = Model::new();
    for i in 0..3 {
        let (id, vector, metadata) = record(i);
        db.insert(id, vector, metadata).map_err(|e| e.to_string())?;
        model.insert(i);
    }
    // Checkpoint: the intent's directory fsync passes, the one after the
    // snapshot's rename fails.
    fs.fail_next(OpKind::SyncDir, 1, Fault::Io);
    assert!(db.checkpoint().is_err(), "the checkpoint did not fail");
    assert_eq!(fs.pending_faults(), 0, "the fault did not fire");
    drop(db);
    // open_with fails making its own intent durable.
    fs.fail_next(OpKind::SyncDir, 0, Fault::Io);
    let (id, vector, metadata) = record(100);
    let mut other = empty()?;
    iqdb_index::IndexCore::insert(&mut other, id, vector, metadata).map_err(|e| e.to_string())?;
    let replaced = PersistedIndex::open_with_options(other, config.clone(), options(&fs));
    assert_eq!(fs.pending_faults(), 0, "the fault did not fire");
    let expected = match replaced {
        Ok(db) => {
            drop(db);
            [100].into_iter().collect()
        }
        Err(_) => model,
    };
    let db = PersistedIndex::<VectorStore>::load_with_options(config, options(&fs))
        .map_err(|e| format!("the database does not load: {e}"))?;
    assert_eq!(store_model(db.index())?, expected);
    Ok(())
}
