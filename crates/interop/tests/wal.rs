//! Write-ahead-log databases both ways between iqdb-persist 1.0.0 and ours.
//!
//! * 1.0 in WAL mode (`open_with`, inserts, deletes, updates, dropped without
//!   a checkpoint); ours `load` replays its WAL v1.
//! * Ours in WAL mode with `Options::compat_1_0()` (snapshot v2, WAL v1),
//!   single writes and batches (`apply`, `batch()`), dropped; 1.0 `load`
//!   replays.
//! * Mixed histories: ours appends to a 1.0 database, 1.0 appends to ours,
//!   checkpoints in compat mode, rejected writes.
//! * What 1.0 cannot read (our default v2 log) it refuses cleanly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use iqdb_persist::{Compression, Options, PersistError, PersistedIndex, WalFormat};
use iqdb_persist_interop::{
    SHAPES, Shape, Step, V1Store, assert_same_store, config, expected_after, v1_config, v1_frames,
    workload,
};
use iqdb_persist_testkit::{VectorStore, generate};
use iqdb_types::IqdbError;

/// Runs a per-scheme check as four tests: none, zstd 1, zstd 19, lz4 (the
/// compression of the snapshots the database writes).
macro_rules! for_each_scheme {
    ($($check:ident),* $(,)?) => {$(
        mod $check {
            use iqdb_persist::Compression;

            #[test]
            fn none() {
                super::$check(Compression::None);
            }

            #[test]
            fn zstd_1() {
                super::$check(Compression::Zstd { level: 1 });
            }

            #[test]
            fn zstd_19() {
                super::$check(Compression::Zstd { level: 19 });
            }

            #[test]
            fn lz4() {
                super::$check(Compression::Lz4);
            }
        }
    )*};
}

for_each_scheme!(
    v1_wal_database_loads_in_ours,
    ours_compat_wal_database_loads_in_v1,
    ours_appends_to_a_v1_database_and_v1_reloads_it,
    ours_compat_checkpoint_loads_in_v1,
);

/// The shapes used for WAL databases: the sample shapes, smaller where
/// they are large (every write is fsynced under `Always`), keeping the
/// empty and one-record bases.
fn wal_shapes() -> Vec<Shape> {
    SHAPES
        .iter()
        .map(|shape| Shape {
            n: shape.n.min(120),
            ..*shape
        })
        .collect()
}

fn context(shape: &Shape, compression: Compression, what: &str) -> String {
    format!(
        "{what} (base {} records, dim {}, {:?}, {compression:?})",
        shape.n, shape.dim, shape.metric
    )
}

fn wal_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".wal");
    name.into()
}

fn load_v1(path: &Path, compression: Compression, context: &str) -> VectorStore {
    iqdb_persist_v1::PersistedIndex::<V1Store>::load(v1_config(path, true, compression))
        .unwrap_or_else(|e| panic!("{context}: 1.0 cannot load the database: {e}"))
        .index()
        .store()
        .clone()
}

/// Applies `steps` through ours: the first third one call each, the second
/// third as one `apply`, the rest through the `batch()` builder.
fn apply_ours_mixed(db: &mut PersistedIndex<VectorStore>, steps: &[Step], context: &str) {
    let dim = db.index().dim();
    let third = steps.len() / 3;
    for step in &steps[..third] {
        step.apply_ours(db)
            .unwrap_or_else(|e| panic!("{context}: {step:?}: {e}"));
    }
    let ops = steps[third..2 * third]
        .iter()
        .map(|step| step.operation(dim))
        .collect();
    db.apply(ops)
        .unwrap_or_else(|e| panic!("{context}: apply: {e}"));
    let mut batch = db.batch();
    for step in &steps[2 * third..] {
        match step.operation(dim) {
            iqdb_persist::Operation::Insert {
                id,
                vector,
                metadata,
            } => batch.insert(id, vector, metadata),
            iqdb_persist::Operation::Delete { id } => batch.delete(id),
        };
    }
    assert_eq!(
        batch.len(),
        steps.len() - 2 * third,
        "{context}: batch size"
    );
    batch
        .commit()
        .unwrap_or_else(|e| panic!("{context}: batch commit: {e}"));
}

fn v1_wal_database_loads_in_ours(compression: Compression) {
    for shape in wal_shapes() {
        let context = context(&shape, compression, "1.0 WAL database loaded by ours");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.iqdb");
        let steps = workload(shape.seed + 100, shape.n, 30);

        let mut theirs = iqdb_persist_v1::PersistedIndex::open_with(
            V1Store(shape.store()),
            v1_config(&path, true, compression),
        )
        .unwrap_or_else(|e| panic!("{context}: 1.0 open_with: {e}"));
        for step in &steps {
            step.apply_v1(&mut theirs)
                .unwrap_or_else(|e| panic!("{context}: 1.0 {step:?}: {e}"));
        }
        drop(theirs); // no checkpoint: the writes are only in the log

        let log = std::fs::read(wal_path(&path)).unwrap();
        let frames = v1_frames(&log).unwrap_or_else(|e| panic!("{context}: 1.0's log: {e}"));
        assert_eq!(frames.len(), steps.len(), "{context}: one frame per write");

        let ours = PersistedIndex::<VectorStore>::load(config(&path, true, compression))
            .unwrap_or_else(|e| panic!("{context}: {e}"));
        let report = ours.recovery_report();
        assert_eq!(report.snapshot_version, 2, "{context}: snapshot version");
        assert_eq!(report.wal_version, Some(1), "{context}: the log stays v1");
        assert_eq!(
            report.operations_applied,
            steps.len() as u64,
            "{context}: operations replayed"
        );
        assert_eq!(report.operations_rejected, 0, "{context}: none rejected");
        assert_eq!(report.truncated, None, "{context}: nothing cut");
        assert_same_store(&expected_after(&shape, &steps), ours.index(), &context);
    }
}

fn ours_compat_wal_database_loads_in_v1(compression: Compression) {
    for shape in wal_shapes() {
        let context = context(&shape, compression, "our compat WAL database loaded by 1.0");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.iqdb");
        let steps = workload(shape.seed + 200, shape.n, 30);

        let mut ours = PersistedIndex::open_with_options(
            shape.store(),
            config(&path, true, compression),
            Options::compat_1_0(),
        )
        .unwrap_or_else(|e| panic!("{context}: ours open_with_options: {e}"));
        apply_ours_mixed(&mut ours, &steps, &context);
        drop(ours); // no checkpoint

        // A batch in a v1 log is one frame per operation.
        let log = std::fs::read(wal_path(&path)).unwrap();
        let frames = v1_frames(&log).unwrap_or_else(|e| panic!("{context}: our log: {e}"));
        assert_eq!(
            frames.len(),
            steps.len(),
            "{context}: a v1 log holds one frame per operation, batches included"
        );

        let loaded = load_v1(&path, compression, &context);
        assert_same_store(&expected_after(&shape, &steps), &loaded, &context);
    }
}

fn ours_appends_to_a_v1_database_and_v1_reloads_it(compression: Compression) {
    let shape = wal_shapes()[2];
    let context = context(&shape, compression, "alternating writers");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.iqdb");
    // Round 0 is the sample workload. Rounds 1 and 2 insert new records,
    // delete and update some of them, and delete base records no earlier
    // round touched (`i % 3 == 1`, then `i % 3 == 2`).
    let later_round = |round: u64| -> Vec<Step> {
        let seed = shape.seed + 310 + 2 * round;
        let from = shape.n + 20 * round;
        let new = from..from + 20;
        let inserts = new.clone().map(|i| Step::Insert { seed, i });
        let deletes = new
            .clone()
            .filter(|i| i % 4 == 0)
            .map(|i| Step::Delete { i });
        let updates = new
            .filter(|i| i % 8 == 0)
            .map(|i| Step::Insert { seed: seed + 1, i });
        let old = (0..shape.n)
            .filter(|i| i % 3 == round % 3 && i % 2 == 0)
            .map(|i| Step::Delete { i });
        inserts.chain(deletes).chain(updates).chain(old).collect()
    };
    let rounds = [
        workload(shape.seed + 300, shape.n, 20),
        later_round(1),
        later_round(2),
    ];
    let mut done: Vec<Step> = Vec::new();

    // Round 0: 1.0 creates the database and writes.
    let mut theirs = iqdb_persist_v1::PersistedIndex::open_with(
        V1Store(shape.store()),
        v1_config(&path, true, compression),
    )
    .unwrap();
    for step in &rounds[0] {
        step.apply_v1(&mut theirs).unwrap();
    }
    drop(theirs);
    done.extend(&rounds[0]);

    // Round 1: ours loads it (compat options) and appends, batches included.
    let mut ours = PersistedIndex::<VectorStore>::load_with_options(
        config(&path, true, compression),
        Options::compat_1_0(),
    )
    .unwrap_or_else(|e| panic!("{context}: ours load: {e}"));
    assert_same_store(
        &expected_after(&shape, &done),
        ours.index(),
        &format!("{context}: ours after 1.0's writes"),
    );
    apply_ours_mixed(&mut ours, &rounds[1], &context);
    drop(ours);
    done.extend(&rounds[1]);
    let log = std::fs::read(wal_path(&path)).unwrap();
    let frames = v1_frames(&log).unwrap_or_else(|e| panic!("{context}: log after ours: {e}"));
    assert_eq!(frames.len(), done.len(), "{context}: both writers' frames");

    // 1.0 loads both writers' records, then appends round 2.
    let mut theirs =
        iqdb_persist_v1::PersistedIndex::<V1Store>::load(v1_config(&path, true, compression))
            .unwrap_or_else(|e| panic!("{context}: 1.0 cannot load after ours appended: {e}"));
    assert_same_store(
        &expected_after(&shape, &done),
        theirs.index().store(),
        &format!("{context}: 1.0 after ours appended"),
    );
    for step in &rounds[2] {
        step.apply_v1(&mut theirs).unwrap();
    }
    drop(theirs);
    done.extend(&rounds[2]);

    // And ours again sees all three rounds.
    let ours = PersistedIndex::<VectorStore>::load_with_options(
        config(&path, true, compression),
        Options::compat_1_0(),
    )
    .unwrap();
    assert_eq!(
        ours.recovery_report().operations_applied,
        done.len() as u64,
        "{context}: every round replayed"
    );
    assert_same_store(
        &expected_after(&shape, &done),
        ours.index(),
        &format!("{context}: ours after three rounds"),
    );
}

fn ours_compat_checkpoint_loads_in_v1(compression: Compression) {
    for shape in wal_shapes() {
        let context = context(&shape, compression, "our compat checkpoint loaded by 1.0");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.iqdb");
        let steps = workload(shape.seed + 400, shape.n, 30);
        let (before, after) = steps.split_at(steps.len() / 2);

        let mut ours = PersistedIndex::open_with_options(
            shape.store(),
            config(&path, true, compression),
            Options::compat_1_0(),
        )
        .unwrap();
        apply_ours_mixed(&mut ours, before, &context);
        ours.checkpoint()
            .unwrap_or_else(|e| panic!("{context}: checkpoint: {e}"));

        // The checkpoint folded `before` into a v2 snapshot and left an
        // empty v1 log, and no intent file.
        assert!(
            !dir.path().join("db.iqdb.checkpoint").exists(),
            "{context}: checkpoint intent left behind"
        );
        let log = std::fs::read(wal_path(&path)).unwrap();
        assert_eq!(
            v1_frames(&log)
                .unwrap_or_else(|e| panic!("{context}: {e}"))
                .len(),
            0,
            "{context}: log after checkpoint"
        );
        let snapshot_only =
            iqdb_persist_v1::PersistedIndex::<V1Store>::load(v1_config(&path, false, compression))
                .unwrap_or_else(|e| {
                    panic!("{context}: 1.0 cannot load the checkpoint snapshot: {e}")
                });
        assert_same_store(
            &expected_after(&shape, before),
            snapshot_only.index().store(),
            &format!("{context}: the checkpoint snapshot alone"),
        );

        // Writes after the checkpoint go to the fresh v1 log.
        for step in after {
            step.apply_ours(&mut ours).unwrap();
        }
        drop(ours);
        let log = std::fs::read(wal_path(&path)).unwrap();
        assert_eq!(
            v1_frames(&log)
                .unwrap_or_else(|e| panic!("{context}: {e}"))
                .len(),
            after.len(),
            "{context}: log after the checkpoint holds only later writes"
        );
        let loaded = load_v1(&path, compression, &context);
        assert_same_store(&expected_after(&shape, &steps), &loaded, &context);
    }
}

/// Our default options keep a database 1.0 wrote in 1.0's formats (the
/// format policy `Keep`): it stays 1.0-readable through ours' appends and
/// through a checkpoint; only an explicit upgrade (`FormatPolicy::Latest`)
/// moves it to v3 / WAL v2, which 1.0 then refuses.
#[test]
fn default_options_keep_1_0_formats_until_an_explicit_upgrade() {
    let shape = wal_shapes()[5];
    let context = "default options on a 1.0 database";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.iqdb");
    let first = workload(shape.seed + 500, shape.n, 10);
    let mut theirs = iqdb_persist_v1::PersistedIndex::open_with(
        V1Store(shape.store()),
        v1_config(&path, true, Compression::None),
    )
    .unwrap();
    for step in &first {
        step.apply_v1(&mut theirs).unwrap();
    }
    drop(theirs);

    let mut ours = PersistedIndex::<VectorStore>::load(config(&path, true, Compression::None))
        .unwrap_or_else(|e| panic!("{context}: {e}"));
    let more: Vec<Step> = (shape.n + 10..shape.n + 25)
        .map(|i| Step::Insert {
            seed: shape.seed + 501,
            i,
        })
        .collect();
    for step in &more {
        step.apply_ours(&mut ours).unwrap();
    }
    drop(ours);
    let all: Vec<Step> = first.iter().chain(&more).copied().collect();
    let loaded = load_v1(&path, Compression::None, context);
    assert_same_store(&expected_after(&shape, &all), &loaded, context);

    let mut ours =
        PersistedIndex::<VectorStore>::load(config(&path, true, Compression::None)).unwrap();
    ours.checkpoint().unwrap();
    drop(ours);
    let loaded = load_v1(&path, Compression::None, context);
    assert_same_store(&expected_after(&shape, &all), &loaded, context);

    let mut ours = PersistedIndex::<VectorStore>::load_with_options(
        config(&path, true, Compression::None),
        Options::new().format_policy(iqdb_persist::FormatPolicy::Latest),
    )
    .unwrap();
    ours.checkpoint().unwrap();
    drop(ours);
    let err =
        iqdb_persist_v1::PersistedIndex::<V1Store>::load(v1_config(&path, true, Compression::None))
            .expect_err("1.0 must refuse the upgraded database");
    assert!(
        matches!(
            err,
            iqdb_persist_v1::PersistError::UnsupportedVersion {
                found: 3,
                supported: 2
            }
        ),
        "{context}: after an upgrading checkpoint 1.0 should see snapshot v3, got {err:?}"
    );
    let reloaded =
        PersistedIndex::<VectorStore>::load(config(&path, true, Compression::None)).unwrap();
    assert_eq!(reloaded.recovery_report().wal_version, Some(2), "{context}");
    assert_same_store(&expected_after(&shape, &all), reloaded.index(), context);
}

/// 1.0's replay fails on an operation the index rejects, so ours must not
/// leave a rejected write in a v1 log: a duplicate insert, a delete of an
/// absent id and a batch that stops part-way all leave a log 1.0 replays.
#[test]
fn rejected_writes_leave_a_v1_log_that_v1_replays() {
    let shape = wal_shapes()[4];
    let context = "rejected writes in compat mode";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.iqdb");
    let mut ours = PersistedIndex::open_with_options(
        shape.store(),
        config(&path, true, Compression::None),
        Options::compat_1_0(),
    )
    .unwrap();
    let dim = shape.dim;
    let mut accepted: Vec<Step> = Vec::new();

    let new = Step::Insert {
        seed: 900,
        i: shape.n,
    };
    new.apply_ours(&mut ours).unwrap();
    accepted.push(new);

    let duplicate = Step::Insert { seed: 901, i: 0 };
    let err = duplicate.apply_ours(&mut ours).expect_err("duplicate id");
    assert!(
        matches!(err, PersistError::IndexBuild(IqdbError::Duplicate)),
        "{context}: duplicate insert: {err:?}"
    );
    let absent = Step::Delete { i: shape.n + 50 };
    let err = absent.apply_ours(&mut ours).expect_err("absent id");
    assert!(
        matches!(err, PersistError::IndexBuild(IqdbError::NotFound)),
        "{context}: delete of an absent id: {err:?}"
    );

    // A batch whose third operation is rejected: the first two stay.
    let batch = [
        Step::Insert {
            seed: 902,
            i: shape.n + 1,
        },
        Step::Delete { i: 1 },
        Step::Delete { i: shape.n + 60 },
        Step::Insert {
            seed: 902,
            i: shape.n + 2,
        },
    ];
    let err = ours
        .apply(batch.iter().map(|step| step.operation(dim)).collect())
        .expect_err("the batch hits an absent id");
    assert!(
        matches!(err, PersistError::Batch { applied: 2, .. }),
        "{context}: batch error: {err:?}"
    );
    accepted.extend(&batch[..2]);
    let after = Step::Delete { i: 2 };
    after.apply_ours(&mut ours).unwrap();
    accepted.push(after);
    drop(ours);

    let log = std::fs::read(wal_path(&path)).unwrap();
    let frames = v1_frames(&log).unwrap_or_else(|e| panic!("{context}: {e}"));
    assert_eq!(
        frames.len(),
        accepted.len(),
        "{context}: only accepted writes are logged"
    );
    let loaded = load_v1(&path, Compression::None, context);
    assert_same_store(&expected_after(&shape, &accepted), &loaded, context);
}

/// Our default log format (v2) is refused by 1.0 with its version error,
/// never misread, even beside a v2 snapshot it could read.
#[test]
fn v1_refuses_our_wal_v2() {
    let shape = wal_shapes()[2];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.iqdb");
    let mut ours = PersistedIndex::open_with_options(
        shape.store(),
        config(&path, true, Compression::None),
        Options::compat_1_0().wal_format(WalFormat::V2),
    )
    .unwrap();
    let (id, vector, metadata) = generate::record(1, shape.n, shape.dim);
    ours.insert(id, vector, metadata).unwrap();
    drop(ours);

    let err =
        iqdb_persist_v1::PersistedIndex::<V1Store>::load(v1_config(&path, true, Compression::None))
            .expect_err("1.0 must refuse a v2 log");
    assert!(
        matches!(
            err,
            iqdb_persist_v1::PersistError::UnsupportedVersion {
                found: 2,
                supported: 1
            }
        ),
        "1.0 should report UnsupportedVersion {{ found: 2, supported: 1 }} for WAL v2, got {err:?}"
    );
}

/// Non-zero junk at the end of a 1.0 log, whose first four bytes read as an
/// out-of-range frame length (iqdb 1.0's own recovery test appends such a
/// tail): 1.0 drops it, and so does ours, as a torn tail (no single flipped
/// bit explains it), keeping every frame before it.
#[test]
fn junk_tail_on_a_v1_log_is_cut_as_1_0_does() {
    let shape = wal_shapes()[4];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.iqdb");
    let steps = workload(shape.seed + 600, shape.n, 5);
    v1_database(&path, &shape, &steps);
    let junk_at = std::fs::metadata(wal_path(&path)).unwrap().len();
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(wal_path(&path))
        .unwrap();
    std::io::Write::write_all(&mut log, &[0xAB; 13]).unwrap();
    drop(log);

    let expected = expected_after(&shape, &steps);
    let loaded = load_v1(&path, Compression::None, "1.0 with a junk tail");
    assert_same_store(&expected, &loaded, "1.0 drops the junk tail");
    let ours = PersistedIndex::<VectorStore>::load(config(&path, true, Compression::None))
        .unwrap_or_else(|e| panic!("ours refuses the log 1.0 loads: {e}"));
    let cut = ours
        .recovery_report()
        .truncated
        .clone()
        .expect("ours reports the cut");
    assert_eq!(
        (cut.offset, cut.bytes, cut.kind),
        (junk_at, 13, iqdb_persist::DamageKind::Torn),
        "the junk is cut as a torn tail: {cut:?}"
    );
    assert_same_store(&expected, ours.index(), "ours after cutting the junk tail");
}

/// Writes `steps` through 1.0 onto a fresh WAL-mode database of `shape`.
fn v1_database(path: &Path, shape: &Shape, steps: &[Step]) {
    let mut theirs = iqdb_persist_v1::PersistedIndex::open_with(
        V1Store(shape.store()),
        v1_config(path, true, Compression::None),
    )
    .unwrap();
    for step in steps {
        step.apply_v1(&mut theirs).unwrap();
    }
}

/// 1.0's checkpoint window (its defect 2): the snapshot already holds the
/// logged writes and the log still has them, which 1.0 itself cannot load
/// (its replay fails on the duplicate insert). 1.0's `save` in WAL mode
/// writes the snapshot and leaves the log, the state a crash between
/// checkpoint's two steps leaves. Ours replays the log, skipping what the
/// index rejects, and arrives at the right state.
#[test]
fn v1_checkpoint_window_state_loads_in_ours() {
    let shape = wal_shapes()[2];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.iqdb");
    let steps = workload(shape.seed + 700, shape.n, 20);
    let mut theirs = iqdb_persist_v1::PersistedIndex::open_with(
        V1Store(shape.store()),
        v1_config(&path, true, Compression::None),
    )
    .unwrap();
    for step in &steps {
        step.apply_v1(&mut theirs).unwrap();
    }
    theirs.save().unwrap(); // snapshot with everything; the log is kept
    drop(theirs);

    let err =
        iqdb_persist_v1::PersistedIndex::<V1Store>::load(v1_config(&path, true, Compression::None))
            .expect_err("1.0 cannot load its own checkpoint-window state");
    assert!(
        matches!(err, iqdb_persist_v1::PersistError::IndexBuild(_)),
        "1.0's replay fails on a rejected operation: {err:?}"
    );

    let ours = PersistedIndex::<VectorStore>::load(config(&path, true, Compression::None))
        .unwrap_or_else(|e| panic!("ours on 1.0's checkpoint-window state: {e}"));
    assert!(
        ours.recovery_report().operations_rejected > 0,
        "the already-applied operations were rejected and skipped: {:?}",
        ours.recovery_report()
    );
    assert_same_store(
        &expected_after(&shape, &steps),
        ours.index(),
        "ours on 1.0's checkpoint-window state",
    );
}

/// A 1.0 log cut to 0 bytes (its defect 3, a crash inside its in-place
/// reset) holds no operations: ours loads the snapshot and writes a fresh
/// v1 log with its header, so 1.0 can load the database again after ours
/// has appended to it (1.0 itself would append headerless frames and fail
/// the next load with `BadMagic`).
#[test]
fn v1_log_cut_to_zero_bytes_is_repaired_for_v1() {
    let shape = wal_shapes()[5];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.iqdb");
    let steps = workload(shape.seed + 800, shape.n, 10);
    let mut theirs = iqdb_persist_v1::PersistedIndex::open_with(
        V1Store(shape.store()),
        v1_config(&path, true, Compression::None),
    )
    .unwrap();
    for step in &steps {
        step.apply_v1(&mut theirs).unwrap();
    }
    theirs.checkpoint().unwrap();
    drop(theirs);
    std::fs::write(wal_path(&path), b"").unwrap();

    let mut ours = PersistedIndex::<VectorStore>::load_with_options(
        config(&path, true, Compression::None),
        Options::compat_1_0(),
    )
    .unwrap_or_else(|e| panic!("ours on a 0-byte log: {e}"));
    assert_eq!(ours.recovery_report().wal_version, Some(1));
    let more: Vec<Step> = (shape.n + 10..shape.n + 15)
        .map(|i| Step::Insert {
            seed: shape.seed + 801,
            i,
        })
        .collect();
    for step in &more {
        step.apply_ours(&mut ours).unwrap();
    }
    drop(ours);

    let log = std::fs::read(wal_path(&path)).unwrap();
    let frames = v1_frames(&log).unwrap_or_else(|e| panic!("log after ours: {e}"));
    assert_eq!(frames.len(), more.len(), "a header, then ours' writes");
    let all: Vec<Step> = steps.iter().chain(&more).copied().collect();
    let loaded = load_v1(&path, Compression::None, "1.0 after ours repaired the log");
    assert_same_store(&expected_after(&shape, &all), &loaded, "1.0 after repair");
}

/// Temporaries 1.0 leaves when killed during a save
/// (`NAME.tmp.PID.NANOS`) are removed by ours' next load once their
/// process is gone; 1.0 never removes them (its defect 9).
#[test]
fn v1_temp_files_of_dead_processes_are_removed() {
    let shape = wal_shapes()[1];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.iqdb");
    v1_database(&path, &shape, &[]);
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();
    let leftover = dir
        .path()
        .join(format!("db.iqdb.tmp.{dead_pid}.1700000000123456789"));
    std::fs::write(&leftover, b"half a snapshot").unwrap();
    let unrelated = dir.path().join("notes.tmp.1.2");
    std::fs::write(&unrelated, b"not ours").unwrap();

    let ours = PersistedIndex::<VectorStore>::load(config(&path, true, Compression::None)).unwrap();
    assert_eq!(
        ours.recovery_report().stale_temp_files_removed,
        vec![leftover.clone()],
        "the dead process's temporary is reported removed"
    );
    assert!(!leftover.exists(), "1.0's leftover temporary is gone");
    assert!(unrelated.exists(), "other files are never touched");
    assert_same_store(&shape.store(), ours.index(), "the database itself");
}

/// A log damaged by 1.0's torn-tail defect (its defect 1): a torn frame
/// head from a crash, then frames 1.0 appended after it on the next run.
/// 1.0 silently loads only the writes before the damage; ours refuses with
/// the log's path and the damaged frame's offset, and `Salvage` loads what
/// 1.0 loads, keeping a copy of the dropped bytes.
#[test]
fn v1_log_with_frames_after_a_torn_frame_is_reported_not_dropped() {
    let shape = wal_shapes()[4];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.iqdb");
    let before = workload(shape.seed + 900, shape.n, 10);
    v1_database(&path, &shape, &before);
    let torn_at = std::fs::metadata(wal_path(&path)).unwrap().len();
    // The 8-byte head of a 200-byte frame whose body never reached the log.
    let mut head = 200u32.to_le_bytes().to_vec();
    head.extend_from_slice(&0x1234_5678u32.to_le_bytes());
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(wal_path(&path))
        .unwrap();
    std::io::Write::write_all(&mut log, &head).unwrap();
    drop(log);

    // 1.0 recovers (skipping the torn head) and appends after it.
    let mut theirs =
        iqdb_persist_v1::PersistedIndex::<V1Store>::load(v1_config(&path, true, Compression::None))
            .unwrap();
    let after: Vec<Step> = (shape.n + 10..shape.n + 30)
        .map(|i| Step::Insert {
            seed: shape.seed + 901,
            i,
        })
        .collect();
    for step in &after {
        step.apply_v1(&mut theirs).unwrap();
    }
    drop(theirs);
    let expected_prefix = expected_after(&shape, &before);
    let loaded = load_v1(&path, Compression::None, "1.0 after its torn-tail defect");
    assert_same_store(&expected_prefix, &loaded, "1.0 keeps only the prefix");

    let err = PersistedIndex::<VectorStore>::load(config(&path, true, Compression::None))
        .expect_err("ours reports the damage");
    assert_eq!(err.path(), Some(wal_path(&path).as_path()), "{err}");
    assert_eq!(err.offset(), Some(torn_at), "{err}");
    assert!(
        matches!(
            err.root_cause(),
            PersistError::CorruptFrame {
                torn: false,
                valid_frames_after,
                ..
            } if *valid_frames_after == after.len() as u64
        ),
        "a damaged frame followed by 1.0's later frames: {err:?}"
    );

    let salvaged = PersistedIndex::<VectorStore>::load_with_options(
        config(&path, true, Compression::None),
        Options::compat_1_0().recovery_mode(iqdb_persist::RecoveryMode::Salvage),
    )
    .unwrap();
    let truncation = salvaged
        .recovery_report()
        .truncated
        .clone()
        .expect("salvage reports the cut");
    assert_eq!(truncation.offset, torn_at);
    assert_eq!(truncation.frames_dropped, after.len() as u64);
    let backup = truncation.backup.expect("salvage keeps a copy");
    assert!(backup.exists(), "backup {} exists", backup.display());
    assert_same_store(&expected_prefix, salvaged.index(), "ours with Salvage");
}
