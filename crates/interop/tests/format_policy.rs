//! The format policy and `convert`, checked against the published 1.0.0:
//!
//! * a database 1.0 wrote stays readable by 1.0 after ours opens it, writes
//!   to it and checkpoints it with the default settings (no rollback trap),
//!   in WAL mode and in snapshot mode, for every compression scheme;
//! * a new database (the latest formats) becomes readable by 1.0 after
//!   `convert` to compat, with every acknowledged write, and a 1.0 database
//!   is upgraded by `convert` to latest (and back);
//! * `convert` holds the writer lock, and its dry run changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use iqdb_persist::format_policy::{convert, convert_files};
use iqdb_persist::{Compression, FormatPolicy, Options, PersistError, PersistedIndex};
use iqdb_persist_interop::{
    SCHEMES, SHAPES, Step, V1Store, assert_same_store, config, expected_after, v1_config, workload,
};
use iqdb_persist_testkit::VectorStore;

fn load_v1(path: &Path, wal: bool, compression: Compression, context: &str) -> VectorStore {
    iqdb_persist_v1::PersistedIndex::<V1Store>::load(v1_config(path, wal, compression))
        .unwrap_or_else(|e| panic!("{context}: 1.0 cannot load the database: {e:?}"))
        .index()
        .store()
        .clone()
}

fn versions(path: &Path) -> (u32, Option<u32>) {
    let fs = iqdb_persist::storage::StdFileSystem;
    let snapshot = iqdb_persist::inspect::snapshot_info(&fs, path, false)
        .unwrap()
        .header
        .version;
    let mut wal = path.as_os_str().to_owned();
    wal.push(".wal");
    let log = iqdb_persist::inspect::scan_log(&fs, Path::new(&wal), |_| {
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    (snapshot, log.and_then(|l| l.version))
}

fn inserts(from: u64, to: u64, seed: u64) -> Vec<Step> {
    (from..to).map(|i| Step::Insert { seed, i }).collect()
}

/// The rollback trap of issue 14, first half: a cleanly checkpointed 1.0
/// database (an empty v1 log) merely opened by ours used to get a v2 log,
/// which 1.0 then refused with `UnsupportedVersion { found: 2, supported: 1 }`.
#[test]
fn opening_a_clean_1_0_database_keeps_its_empty_v1_log() {
    let shape = SHAPES[2];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.iqdb");
    let steps = workload(shape.seed + 10, shape.n, 20);
    let mut theirs = iqdb_persist_v1::PersistedIndex::open_with(
        V1Store(shape.store()),
        v1_config(&path, true, Compression::None),
    )
    .unwrap();
    for step in &steps {
        step.apply_v1(&mut theirs).unwrap();
    }
    theirs.checkpoint().unwrap(); // the log is now only its header
    drop(theirs);

    let ours = PersistedIndex::<VectorStore>::load(config(&path, true, Compression::None)).unwrap();
    assert_eq!(ours.recovery_report().wal_version, Some(1));
    assert!(
        !ours.recovery_report().wal_created,
        "the empty v1 log stays"
    );
    drop(ours);
    assert_eq!(versions(&path), (2, Some(1)));
    let loaded = load_v1(&path, true, Compression::None, "after ours opened it");
    assert_same_store(&expected_after(&shape, &steps), &loaded, "reopened by 1.0");
}

/// The rollback trap, second half: a 1.0 database written and checkpointed
/// by ours (default settings, as `iqdb` uses it) stays in 1.0's formats, so
/// 1.0 opens it with every write, for every compression scheme.
#[test]
fn writes_and_checkpoints_by_ours_keep_a_1_0_database_in_1_0_formats() {
    for compression in SCHEMES {
        let shape = SHAPES[3];
        let context = format!("{compression:?}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.iqdb");
        let first = workload(shape.seed + 20, shape.n, 15);
        let mut theirs = iqdb_persist_v1::PersistedIndex::open_with(
            V1Store(shape.store()),
            v1_config(&path, true, compression),
        )
        .unwrap();
        for step in &first {
            step.apply_v1(&mut theirs).unwrap();
        }
        drop(theirs);

        let mut ours = PersistedIndex::<VectorStore>::load(config(&path, true, compression))
            .unwrap_or_else(|e| panic!("{context}: {e}"));
        let second = inserts(shape.n + 100, shape.n + 110, shape.seed + 21);
        for step in &second {
            step.apply_ours(&mut ours).unwrap();
        }
        ours.checkpoint().unwrap();
        let third = inserts(shape.n + 110, shape.n + 120, shape.seed + 22);
        for step in &third {
            step.apply_ours(&mut ours).unwrap();
        }
        assert_eq!(ours.options().get_wal_format().version(), 1, "{context}");
        drop(ours);

        assert_eq!(versions(&path), (2, Some(1)), "{context}");
        let all: Vec<Step> = first.iter().chain(&second).chain(&third).copied().collect();
        let loaded = load_v1(&path, true, compression, &context);
        assert_same_store(&expected_after(&shape, &all), &loaded, &context);
    }
}

/// Snapshot mode: a 1.0 snapshot loaded, changed and saved by ours stays v2.
#[test]
fn a_1_0_snapshot_saved_by_ours_stays_v2() {
    let shape = SHAPES[3];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.iqdb");
    iqdb_persist_v1::PersistedIndex::open_with(
        V1Store(shape.store()),
        v1_config(&path, false, Compression::Lz4),
    )
    .unwrap()
    .save()
    .unwrap();
    let mut ours =
        PersistedIndex::<VectorStore>::load(config(&path, false, Compression::Lz4)).unwrap();
    let more = inserts(shape.n + 100, shape.n + 105, 3);
    for step in &more {
        step.apply_ours(&mut ours).unwrap();
    }
    ours.save().unwrap();
    drop(ours);
    assert_eq!(versions(&path).0, 2);
    let loaded = load_v1(&path, false, Compression::Lz4, "snapshot mode");
    assert_same_store(&expected_after(&shape, &more), &loaded, "snapshot mode");
}

/// A new database gets the latest formats (1.0 refuses it); `convert` to
/// compat makes it readable by 1.0 with every acknowledged write, including
/// writes still only in the log; a dry run before changes nothing.
#[test]
fn convert_to_compat_makes_a_new_database_readable_by_1_0() {
    for compression in SCHEMES {
        let shape = SHAPES[4];
        let context = format!("{compression:?}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.iqdb");
        let cfg = config(&path, true, compression);
        let steps = workload(shape.seed + 30, shape.n, 25);
        let mut ours = PersistedIndex::open_with(shape.store(), cfg.clone()).unwrap();
        for step in &steps {
            step.apply_ours(&mut ours).unwrap();
        }
        drop(ours); // the writes are only in the log
        assert_eq!(versions(&path), (3, Some(2)), "{context}: a new database");
        assert!(
            iqdb_persist_v1::PersistedIndex::<V1Store>::load(v1_config(&path, true, compression))
                .is_err(),
            "{context}: 1.0 cannot read the latest formats"
        );

        let before = std::fs::read(&path).unwrap();
        let dry = convert::<VectorStore>(&cfg, FormatPolicy::Compat, Options::new(), true).unwrap();
        assert!(
            !dry.rewritten && dry.readable_by_1_0(),
            "{context}: {dry:?}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), before, "{context}: dry run");

        let report =
            convert::<VectorStore>(&cfg, FormatPolicy::Compat, Options::new(), false).unwrap();
        assert_eq!(
            (report.snapshot_before, report.wal_before),
            (3, Some(2)),
            "{context}"
        );
        assert_eq!(
            (report.snapshot_after, report.wal_after),
            (2, Some(1)),
            "{context}"
        );
        assert_eq!(report.operations_folded, steps.len() as u64, "{context}");
        assert_eq!(versions(&path), (2, Some(1)), "{context}");
        let loaded = load_v1(&path, true, compression, &context);
        assert_same_store(&expected_after(&shape, &steps), &loaded, &context);

        // And it stays in them when ours goes on using it.
        let mut ours = PersistedIndex::<VectorStore>::load(cfg.clone()).unwrap();
        let more = inserts(shape.n + 200, shape.n + 205, 5);
        for step in &more {
            step.apply_ours(&mut ours).unwrap();
        }
        ours.checkpoint().unwrap();
        drop(ours);
        let all: Vec<Step> = steps.iter().chain(&more).copied().collect();
        let loaded = load_v1(&path, true, compression, &context);
        assert_same_store(&expected_after(&shape, &all), &loaded, &context);
    }
}

/// `convert` to latest upgrades a 1.0 database (with writes in its log),
/// after which 1.0 refuses it and ours keeps the latest formats; converting
/// back to compat makes 1.0 read it again.
#[test]
fn convert_to_latest_and_back() {
    let shape = SHAPES[4];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.iqdb");
    let cfg = config(&path, true, Compression::Zstd { level: 3 });
    let steps = workload(shape.seed + 40, shape.n, 25);
    let mut theirs = iqdb_persist_v1::PersistedIndex::open_with(
        V1Store(shape.store()),
        v1_config(&path, true, Compression::Zstd { level: 3 }),
    )
    .unwrap();
    for step in &steps {
        step.apply_v1(&mut theirs).unwrap();
    }
    drop(theirs);

    let up = convert::<VectorStore>(&cfg, FormatPolicy::Latest, Options::new(), false).unwrap();
    assert_eq!((up.snapshot_after, up.wal_after), (3, Some(2)));
    assert!(!up.readable_by_1_0());
    assert_eq!(versions(&path), (3, Some(2)));
    let err = iqdb_persist_v1::PersistedIndex::<V1Store>::load(v1_config(
        &path,
        true,
        Compression::Zstd { level: 3 },
    ))
    .expect_err("1.0 refuses the upgraded database");
    assert!(
        matches!(
            err,
            iqdb_persist_v1::PersistError::UnsupportedVersion { found: 3, .. }
        ),
        "{err:?}"
    );
    let mut ours = PersistedIndex::<VectorStore>::load(cfg.clone()).unwrap();
    assert_same_store(&expected_after(&shape, &steps), ours.index(), "upgraded");
    let more = inserts(shape.n + 300, shape.n + 303, 6);
    for step in &more {
        step.apply_ours(&mut ours).unwrap();
    }
    ours.checkpoint().unwrap();
    drop(ours);
    assert_eq!(
        versions(&path),
        (3, Some(2)),
        "an upgraded database stays upgraded"
    );

    convert::<VectorStore>(&cfg, FormatPolicy::Compat, Options::new(), false).unwrap();
    let all: Vec<Step> = steps.iter().chain(&more).copied().collect();
    let loaded = load_v1(
        &path,
        true,
        Compression::Zstd { level: 3 },
        "back to compat",
    );
    assert_same_store(&expected_after(&shape, &all), &loaded, "back to compat");
}

/// A snapshot-only database (no log) is converted without creating one.
#[test]
fn convert_a_snapshot_only_database() {
    let shape = SHAPES[3];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.iqdb");
    let cfg = config(&path, false, Compression::None);
    PersistedIndex::open_with(shape.store(), cfg.clone())
        .unwrap()
        .save()
        .unwrap();
    assert_eq!(versions(&path), (3, None));
    let report = convert::<VectorStore>(&cfg, FormatPolicy::Compat, Options::new(), false).unwrap();
    assert_eq!((report.snapshot_after, report.wal_after), (2, None));
    assert_eq!(versions(&path), (2, None));
    let loaded = load_v1(&path, false, Compression::None, "snapshot only");
    assert_same_store(&shape.store(), &loaded, "snapshot only");
}

/// `convert` takes the writer lock: while a handle writes, it fails with
/// `Locked` and changes nothing.
#[test]
fn convert_refuses_a_database_open_for_writing() {
    let shape = SHAPES[2];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.iqdb");
    let cfg = config(&path, true, Compression::None);
    let db = PersistedIndex::open_with(shape.store(), cfg.clone()).unwrap();
    let err = convert::<VectorStore>(&cfg, FormatPolicy::Compat, Options::new(), false)
        .expect_err("locked");
    assert!(matches!(err, PersistError::Locked { .. }), "{err:?}");
    drop(db);
    assert_eq!(versions(&path), (3, Some(2)));
}

/// `convert_files` (no index type needed) converts a checkpointed database
/// both ways: 1.0 opens the compat result with every write; the latest
/// result loads in ours with the same records and a fresh log.
#[test]
fn convert_files_without_the_index_type() {
    for compression in SCHEMES {
        let shape = SHAPES[4];
        let context = format!("{compression:?}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.iqdb");
        let cfg = config(&path, true, compression);
        let steps = workload(shape.seed + 50, shape.n, 25);
        let mut ours = PersistedIndex::open_with(shape.store(), cfg.clone()).unwrap();
        for step in &steps {
            step.apply_ours(&mut ours).unwrap();
        }
        ours.checkpoint().unwrap();
        drop(ours);

        let report = convert_files(&cfg, FormatPolicy::Compat, Options::new(), false)
            .unwrap_or_else(|e| panic!("{context}: {e}"));
        assert_eq!(
            (report.snapshot_before, report.snapshot_after),
            (3, 2),
            "{context}"
        );
        assert_eq!((report.wal_before, report.wal_after), (Some(2), Some(1)));
        assert_eq!(versions(&path), (2, Some(1)), "{context}");
        let loaded = load_v1(&path, true, compression, &context);
        assert_same_store(&expected_after(&shape, &steps), &loaded, &context);

        convert_files(&cfg, FormatPolicy::Latest, Options::new(), false).unwrap();
        assert_eq!(versions(&path), (3, Some(2)), "{context}");
        let mut ours = PersistedIndex::<VectorStore>::load(cfg.clone()).unwrap();
        assert_same_store(&expected_after(&shape, &steps), ours.index(), &context);
        let more = inserts(shape.n + 400, shape.n + 403, 7);
        for step in &more {
            step.apply_ours(&mut ours).unwrap();
        }
        drop(ours);
        let all: Vec<Step> = steps.iter().chain(&more).copied().collect();
        let reloaded = PersistedIndex::<VectorStore>::load(cfg.clone()).unwrap();
        assert_same_store(&expected_after(&shape, &all), reloaded.index(), &context);
    }
}

/// Operations in the log cannot be folded without the index type:
/// `convert_files` refuses with `WouldOverwrite` and changes nothing.
#[test]
fn convert_files_refuses_a_log_with_operations() {
    let shape = SHAPES[3];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.iqdb");
    let cfg = config(&path, true, Compression::None);
    let mut ours = PersistedIndex::open_with(shape.store(), cfg.clone()).unwrap();
    for step in &inserts(shape.n, shape.n + 3, 8) {
        step.apply_ours(&mut ours).unwrap();
    }
    drop(ours);
    let snapshot = std::fs::read(&path).unwrap();
    let err = convert_files(&cfg, FormatPolicy::Compat, Options::new(), false)
        .expect_err("operations pending");
    assert!(
        matches!(
            err,
            PersistError::WouldOverwrite {
                pending_operations: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), snapshot);
    assert_eq!(versions(&path), (3, Some(2)));
}

/// A damaged snapshot is never re-framed into a valid-looking one: the copy
/// verifies every byte first and fails naming the file, leaving it as it was.
#[test]
fn convert_files_refuses_a_damaged_snapshot() {
    for (format, options) in [
        ("v3", Options::new()),
        ("v2", Options::new().format_policy(FormatPolicy::Compat)),
    ] {
        let shape = SHAPES[3];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.iqdb");
        let cfg = config(&path, false, Compression::None);
        PersistedIndex::open_with_options(shape.store(), cfg.clone(), options)
            .unwrap()
            .save()
            .unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 10;
        bytes[last] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        let to = if format == "v3" {
            FormatPolicy::Compat
        } else {
            FormatPolicy::Latest
        };
        let err = convert_files(&cfg, to, Options::new(), false).expect_err("damaged");
        assert!(err.is_corruption(), "{format}: {err:?}");
        assert_eq!(err.path(), Some(path.as_path()), "{format}: {err}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "{format}: unchanged");
    }
}
