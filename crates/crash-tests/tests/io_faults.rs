//! Injected I/O errors: ENOSPC or EIO at the k-th mutating operation, for
//! every k of a small workload. The failing call must return an error (never
//! panic), the handle must either keep working or refuse writes as poisoned,
//! and afterwards the database must load (from the live files, as after
//! kill -9, and from every power-loss image) to a state that holds every
//! acknowledged write, plus at most the failed ones.

use std::path::PathBuf;
use std::sync::Arc;

use iqdb_index::Index;
use iqdb_persist::{
    FsyncPolicy, Options, PersistConfig, PersistedIndex, SnapshotFormat, WalFormat,
};
use iqdb_persist_crash_tests::{
    DIM, Model, Outcome, Step, Workload, apply_outcome, check_store, execute, possible_states,
    store_model,
};
use iqdb_persist_testkit::VectorStore;
use iqdb_persist_testkit::simfs::{Fault, SimFs};
use iqdb_types::DistanceMetric;

fn config() -> PersistConfig {
    PersistConfig {
        path: PathBuf::from("/db/vectors.iqdb"),
        wal_enabled: true,
        fsync_policy: FsyncPolicy::Always,
        compression: iqdb_persist::Compression::None,
    }
}

fn options(fs: &SimFs, wal: WalFormat) -> Options {
    let snapshot = if wal == WalFormat::V1 {
        SnapshotFormat::V2
    } else {
        SnapshotFormat::V3
    };
    Options::new()
        .file_system(Arc::new(fs.clone()))
        .wal_format(wal)
        .snapshot_format(snapshot)
        .chunk_size(4096)
}

fn empty() -> VectorStore {
    VectorStore::new(DIM, DistanceMetric::Cosine, Default::default())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Keeps the candidates an acknowledged outcome is consistent with.
fn advance(candidates: &[Model], step: &Step, outcome: &Outcome) -> Vec<Model> {
    let mut next: Vec<Model> = candidates
        .iter()
        .filter_map(|c| apply_outcome(c, step, outcome).ok())
        .collect();
    next.dedup();
    next
}

fn run(
    wal: WalFormat,
    seed: u64,
    steps: usize,
    fault: Option<(u64, Fault)>,
) -> Result<SimFs, String> {
    let fs = SimFs::new();
    if let Some((k, f)) = fault {
        fs.fail_operation(k, f);
    }
    let opts = options(&fs, wal);
    let atomic = wal == WalFormat::V2;
    let mut db = match PersistedIndex::open_with_options(empty(), config(), opts.clone()) {
        Ok(db) => db,
        Err(e) if fault.is_some() => {
            // The error is clean; whatever is on disk is empty or absent.
            let _ = e.to_string();
            for image in [fs.live_image(), fs.durable_image()] {
                if let Ok(db) =
                    PersistedIndex::<VectorStore>::load_with_options(config(), options(&image, wal))
                {
                    check_store(db.index(), &[Model::new()])?;
                }
            }
            return Ok(fs);
        }
        Err(e) => return Err(format!("open_with: {e}")),
    };
    let mut candidates = vec![Model::new()];
    let mut workload = Workload::new(seed, 0);
    for _ in 0..steps {
        let memory = store_model(db.index())?;
        let step = workload.next_step(&memory);
        if step == Step::Reopen {
            drop(db);
            db = match PersistedIndex::load_with_options(config(), opts.clone()) {
                Ok(db) => db,
                // The fault may hit the load itself; the next one must work.
                Err(_) => PersistedIndex::load_with_options(config(), opts.clone())
                    .map_err(|e| format!("second reload after a failed one: {e}"))?,
            };
            let found =
                check_store(db.index(), &candidates).map_err(|e| format!("after reopen: {e}"))?;
            candidates = vec![found];
            continue;
        }
        let outcome = execute(&mut db, &step);
        candidates = match &outcome {
            Outcome::Failed(_) => {
                let mut all: Vec<Model> = candidates
                    .iter()
                    .flat_map(|c| possible_states(c, &step, atomic))
                    .collect();
                all.sort();
                all.dedup();
                all
            }
            acknowledged => advance(&candidates, &step, acknowledged),
        };
        if candidates.is_empty() {
            return Err(format!(
                "{step:?} ended {outcome:?}, which no candidate state allows"
            ));
        }
        let memory = store_model(db.index())?;
        if !candidates.contains(&memory) {
            return Err(format!(
                "after {step:?} ({outcome:?}) the index holds a state no candidate allows"
            ));
        }
    }
    drop(db);
    let mut images = vec![fs.live_image(), fs.durable_image()];
    images.extend(fs.crash_images(seed, 2));
    for (n, image) in images.iter().enumerate() {
        let db = PersistedIndex::<VectorStore>::load_with_options(config(), options(image, wal))
            .map_err(|e| format!("image {n} does not load: {e}"))?;
        check_store(db.index(), &candidates).map_err(|e| format!("image {n}: {e}"))?;
    }
    Ok(fs)
}

#[test]
fn every_injected_error_fails_cleanly_and_loses_nothing_acknowledged() {
    let mut runs = 0usize;
    for wal in [WalFormat::V2, WalFormat::V1] {
        for seed in [11u64, 12] {
            let steps = 16;
            let total = run(wal, seed, steps, None)
                .unwrap_or_else(|e| panic!("{wal:?} seed {seed}: clean run: {e}"))
                .operation_count();
            assert!(total > 40, "workload too small: {total} operations");
            for k in 0..total {
                for fault in [Fault::NoSpace, Fault::Io] {
                    if let Err(e) = run(wal, seed, steps, Some((k, fault))) {
                        panic!("{wal:?} seed {seed}: {fault:?} at operation {k}: {e}");
                    }
                    runs += 1;
                }
            }
        }
    }
    println!(
        "injected errors: {runs} runs (ENOSPC and EIO at every mutating operation), each reloaded from 6 disk images (the live files, as kill -9 leaves them, and power-loss images), 0 failures"
    );
}

#[test]
fn failed_fsync_poisons_the_handle_until_reloaded() {
    let fs = SimFs::new();
    let opts = options(&fs, WalFormat::V2);
    let mut db = PersistedIndex::open_with_options(empty(), config(), opts.clone())
        .unwrap_or_else(|e| panic!("{e}"));
    let (id, v, m) = iqdb_persist_crash_tests::record(1);
    // The insert's write is the next operation, its fsync the one after.
    fs.fail_operation(fs.operation_count() + 1, Fault::Io);
    let err = db
        .insert(id, v, m)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("EIO"), "{err}");
    let (id2, v2, m2) = iqdb_persist_crash_tests::record(2);
    match db.insert(id2, v2, m2) {
        Err(iqdb_persist::PersistError::Poisoned { path, .. }) => {
            assert_eq!(path, PathBuf::from("/db/vectors.iqdb.wal"));
        }
        other => panic!("expected Poisoned, got {other:?}"),
    }
    assert!(matches!(
        db.checkpoint(),
        Err(iqdb_persist::PersistError::Poisoned { .. })
    ));
    drop(db);
    // The failed write never became durable: power loss leaves it out.
    let image = fs.durable_image();
    let db =
        PersistedIndex::<VectorStore>::load_with_options(config(), options(&image, WalFormat::V2))
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store_model(db.index()), Ok(Model::new()));
}
