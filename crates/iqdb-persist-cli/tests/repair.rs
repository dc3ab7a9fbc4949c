//! `repair`: torn tails, corruption with and without --salvage, dry runs,
//! locks, logs that cannot be cut.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{backups, cli, file_len, flip_byte, json, stdout, truncate, wal_db};
use iqdb_persist::Options;
use iqdb_persist::storage::FileSystem;

#[test]
fn repair_of_a_healthy_log_does_nothing() {
    let db = wal_db(Options::default());
    let before = std::fs::read(&db.wal).unwrap();
    let out = cli().args(["repair", db.path_str()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stdout(&out).contains("Nothing to repair: the log is intact"));
    assert_eq!(std::fs::read(&db.wal).unwrap(), before);
    assert!(backups(&db).is_empty());
}

#[test]
fn repair_cuts_a_torn_tail_and_keeps_a_backup() {
    let db = wal_db(Options::default());
    let (frames, _) = db.frames();
    let last = frames.last().unwrap();
    truncate(&db.wal, last.offset + last.len - 3);
    let torn = std::fs::read(&db.wal).unwrap();

    let out = cli()
        .args(["repair", db.path_str(), "--dry-run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stdout(&out).contains("Dry run: repair would copy"));
    assert!(stdout(&out).contains(&format!("cut it at byte {}", last.offset)));
    assert_eq!(
        std::fs::read(&db.wal).unwrap(),
        torn,
        "dry run changed the log"
    );
    assert!(backups(&db).is_empty());

    let out = cli()
        .args(["repair", db.path_str(), "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v = json(&out.stdout);
    assert_eq!(v["action"], "cut");
    assert_eq!(v["truncated"]["offset"], last.offset);
    assert_eq!(v["truncated"]["bytes"], last.len - 3);
    assert_eq!(v["truncated"]["kind"], "torn");
    assert_eq!(v["truncated"]["frames_dropped"], 0);
    assert_eq!(v["frames_kept"], db.frames - 1);
    assert_eq!(v["after"]["log_clean"], true);
    assert_eq!(v["after"]["loads"], true);
    assert_eq!(file_len(&db.wal), last.offset);
    let backup = v["truncated"]["backup"].as_str().unwrap();
    assert_eq!(std::fs::read(backup).unwrap(), torn);
    assert_eq!(backups(&db).len(), 1);

    let out = cli().args(["verify", db.path_str()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("Status: healthy (exit code 0)"));
    // The batch was the torn frame: it is gone entirely.
    let loaded = db.load().unwrap();
    assert_eq!(loaded.index().len() as u64, common::BASE + 10 - 3);
}

#[test]
fn repair_refuses_corruption_without_salvage() {
    let db = wal_db(Options::default());
    let (frames, _) = db.frames();
    let victim = &frames[5];
    flip_byte(&db.wal, victim.offset + 25);
    let corrupt = std::fs::read(&db.wal).unwrap();

    let out = cli().args(["repair", db.path_str()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("Refusing to repair"), "{text}");
    assert!(text.contains("--salvage"), "{text}");
    assert!(
        text.contains(&format!("cut it at byte {}", victim.offset)),
        "{text}"
    );
    assert!(text.contains("8 intact frame(s) after it"), "{text}");
    assert_eq!(std::fs::read(&db.wal).unwrap(), corrupt);
    assert!(backups(&db).is_empty());

    let out = cli()
        .args(["repair", db.path_str(), "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out.stdout);
    assert_eq!(v["action"], "refused");
    assert_eq!(v["needs_salvage"], true);

    // A dry run with --salvage shows the cut and changes nothing.
    let out = cli()
        .args(["repair", db.path_str(), "--salvage", "--dry-run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(std::fs::read(&db.wal).unwrap(), corrupt);

    // The database does not load until salvaged.
    assert!(db.load().is_err());
}

#[test]
fn repair_with_salvage_cuts_at_the_corruption() {
    let db = wal_db(Options::default());
    let (frames, _) = db.frames();
    let victim = &frames[5];
    flip_byte(&db.wal, victim.offset + 25);
    let corrupt = std::fs::read(&db.wal).unwrap();

    let out = cli()
        .args(["repair", db.path_str(), "--salvage"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    assert!(
        text.contains(&format!("byte {} (corrupt damage", victim.offset)),
        "{text}"
    );
    assert!(
        text.contains("8 intact frame(s) after the damage"),
        "{text}"
    );
    assert!(text.contains("frames kept          5"), "{text}");
    assert!(
        text.contains("log now              intact, 5 frame(s)"),
        "{text}"
    );
    assert!(text.contains("database             loads"), "{text}");
    assert_eq!(file_len(&db.wal), victim.offset);
    let b = backups(&db);
    assert_eq!(b.len(), 1);
    assert_eq!(std::fs::read(&b[0]).unwrap(), corrupt);
    let loaded = db.load().unwrap();
    assert_eq!(loaded.index().len() as u64, common::BASE + 5);
    assert_eq!(loaded.recovery_report().frames_replayed, 5);
}

#[test]
fn repair_of_a_v1_log() {
    let db = wal_db(Options::compat_1_0());
    let (frames, _) = db.frames();
    let last = frames.last().unwrap();
    truncate(&db.wal, last.offset + 2);
    let out = cli().args(["repair", db.path_str()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(file_len(&db.wal), last.offset);
    assert_eq!(backups(&db).len(), 1);
    assert!(db.load().is_ok());
}

#[test]
fn repair_of_a_locked_database_exits_4() {
    let db = wal_db(Options::default());
    let (frames, _) = db.frames();
    let last = frames.last().unwrap();
    truncate(&db.wal, last.offset + 5);
    // Hold the writer lock as a running writer does (retrying: a lock just
    // released can look held while another test thread spawns a process).
    let fs = iqdb_persist::storage::StdFileSystem;
    let lock = (0..200)
        .find_map(|_| {
            let got = fs.try_lock(&db.config().lock_path()).ok();
            if got.is_none() {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            got
        })
        .expect("the lock never came free");
    let out = cli().args(["repair", db.path_str()]).output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    common::assert_one_line_error(&out);
    assert!(common::stderr(&out).contains("open for writing by another handle"));
    drop(lock);
    assert_eq!(file_len(&db.wal), last.offset + 5);
}

#[test]
fn repair_sets_aside_a_log_that_follows_another_snapshot() {
    let db = wal_db(Options::default());
    let store = iqdb_persist_testkit::generate::store(
        99,
        5,
        common::DIM,
        iqdb_types::DistanceMetric::Euclidean,
    );
    iqdb_persist::PersistedIndex::open_with(store, iqdb_persist::PersistConfig::new(&db.path))
        .unwrap()
        .save()
        .unwrap();
    let log = std::fs::read(&db.wal).unwrap();
    let out = cli().args(["repair", db.path_str()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stdout(&out).contains("follows a different snapshot"));
    assert!(db.load().is_err());

    let out = cli()
        .args(["repair", db.path_str(), "--salvage", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v = json(&out.stdout);
    assert_eq!(v["action"], "replaced");
    let backup = v["truncated"]["backup"].as_str().unwrap();
    assert_eq!(std::fs::read(backup).unwrap(), log);
    // A fresh log now follows the snapshot and holds nothing.
    let loaded = db.load().unwrap();
    assert_eq!(loaded.index().len(), 5);
    assert_eq!(loaded.recovery_report().frames_replayed, 0);
    assert!(!loaded.recovery_report().wal_created);
}

#[test]
fn repair_sets_aside_a_log_with_a_damaged_header() {
    let db = wal_db(Options::default());
    flip_byte(&db.wal, 20);
    let out = cli().args(["repair", db.path_str()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stdout(&out).contains("header is damaged"));
    let out = cli()
        .args(["repair", db.path_str(), "--salvage"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(backups(&db).len(), 1);
    let loaded = db.load().unwrap();
    assert_eq!(loaded.index().len() as u64, common::BASE);
    assert_eq!(loaded.recovery_report().frames_replayed, 0);
    assert_eq!(loaded.recovery_report().truncated, None);
}

#[test]
fn repair_of_a_snapshot_only_database() {
    let db = common::snapshot_db();
    let out = cli().args(["repair", db.path_str()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stdout(&out).contains("no write-ahead log"));
}
