//! The `IQDB_PERSIST_FORMAT` environment variable. It is read once per
//! process, so each check runs in a child process (this test binary run
//! again with the variable set and only that test selected); the parent
//! then looks at the files the child wrote.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::Command;

use iqdb_persist::storage::StdFileSystem;
use iqdb_persist::{
    FORMAT_ENV, FormatPolicy, Options, PersistConfig, PersistError, PersistedIndex, SnapshotFormat,
    inspect,
};
use iqdb_persist_testkit::{VectorStore, generate};
use iqdb_types::DistanceMetric;

/// Set in the child: the directory to work in.
const CHILD_DIR: &str = "IQDB_FORMAT_ENV_TEST_DIR";

/// In the child: `Some(dir)`. In the parent: runs `test` in a child with
/// `FORMAT_ENV=value` and returns `None` after checking it passed.
fn child(test: &str, value: &str, dir: &Path) -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        return Some(PathBuf::from(dir));
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(FORMAT_ENV, value)
        .env(CHILD_DIR, dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "child {test} with {FORMAT_ENV}={value:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("1 passed"),
        "the child ran no test"
    );
    None
}

fn wal_config(dir: &Path) -> PersistConfig {
    let mut config = PersistConfig::new(dir.join("db.iqdb"));
    config.wal_enabled = true;
    config
}

fn versions(config: &PersistConfig) -> (u32, Option<u32>) {
    let snapshot = inspect::snapshot_info(&StdFileSystem, &config.path, false)
        .unwrap()
        .header
        .version;
    let log = inspect::scan_log(&StdFileSystem, &config.wal_path(), |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    (snapshot, log.and_then(|l| l.version))
}

fn write_some(config: PersistConfig, options: Options) {
    let store = generate::store(1, 20, 4, DistanceMetric::Euclidean);
    let mut db = PersistedIndex::open_with_options(store, config, options).unwrap();
    for (id, v, m) in generate::records(2, 20..30, 4) {
        db.insert(id, v, m).unwrap();
    }
}

/// `compat` makes a new database, created through 1.0's API alone, use
/// 1.0's formats, checkpoints included.
#[test]
fn compat_gives_a_new_database_1_0_formats() {
    let dir = tempfile::tempdir().unwrap();
    let Some(dir) = child(
        "compat_gives_a_new_database_1_0_formats",
        "compat",
        dir.path(),
    ) else {
        let config = wal_config(dir.path());
        assert_eq!(versions(&config), (2, Some(1)));
        let db = PersistedIndex::<VectorStore>::load(config).unwrap();
        assert_eq!(db.index().len(), 30);
        return;
    };
    assert_eq!(
        FormatPolicy::from_env().unwrap(),
        Some(FormatPolicy::Compat)
    );
    let config = wal_config(&dir);
    let store = generate::store(1, 20, 4, DistanceMetric::Euclidean);
    let mut db = PersistedIndex::open_with(store, config.clone()).unwrap();
    for (id, v, m) in generate::records(2, 20..30, 4) {
        db.insert(id, v, m).unwrap();
    }
    db.checkpoint().unwrap();
    assert_eq!(db.options().get_snapshot_format(), SnapshotFormat::V2);
}

/// `latest` upgrades a database in 1.0's formats at once (its empty log)
/// and at its next checkpoint (its snapshot).
#[test]
fn latest_upgrades_a_1_0_database() {
    let dir = tempfile::tempdir().unwrap();
    let Some(dir) = child("latest_upgrades_a_1_0_database", "latest", dir.path()) else {
        assert_eq!(versions(&wal_config(dir.path())), (3, Some(2)));
        return;
    };
    let config = wal_config(&dir);
    write_some(config.clone(), Options::compat_1_0());
    assert_eq!(versions(&config), (2, Some(1)));
    let mut db = PersistedIndex::<VectorStore>::load(config.clone()).unwrap();
    assert_eq!(
        db.recovery_report().wal_version,
        Some(1),
        "a log with writes stays"
    );
    db.checkpoint().unwrap();
    drop(db);
    assert_eq!(versions(&config), (3, Some(2)));
}

/// An explicit choice in `Options` beats the environment.
#[test]
fn options_beat_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let Some(dir) = child("options_beat_the_environment", "compat", dir.path()) else {
        assert_eq!(versions(&wal_config(dir.path())), (3, Some(2)));
        return;
    };
    write_some(
        wal_config(&dir),
        Options::new().format_policy(FormatPolicy::Latest),
    );
}

/// An unknown value is an error on every open and load, naming the
/// variable, the value and what is accepted; nothing is written.
#[test]
fn an_unknown_value_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let Some(dir) = child("an_unknown_value_is_a_clear_error", "v3", dir.path()) else {
        assert!(!wal_config(dir.path()).path.exists());
        return;
    };
    let store = generate::store(1, 5, 4, DistanceMetric::Euclidean);
    for options in [Options::new(), Options::compat_1_0()] {
        let err = PersistedIndex::open_with_options(store.clone(), wal_config(&dir), options)
            .expect_err("an invalid setting");
        assert!(
            matches!(err, PersistError::InvalidSetting { name: FORMAT_ENV, ref value, .. } if value == "v3"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "IQDB_PERSIST_FORMAT=\"v3\" is not a valid setting: expected compat, latest or keep"
        );
    }
    let err = PersistedIndex::<VectorStore>::load(wal_config(&dir)).expect_err("load too");
    assert!(
        matches!(err, PersistError::InvalidSetting { .. }),
        "{err:?}"
    );
}
