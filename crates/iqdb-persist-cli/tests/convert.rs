//! `convert` and the formats section of `inspect`, through the binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{assert_one_line_error, cli, json, stdout, wal_db};
use iqdb_persist::Options;
use iqdb_persist::storage::StdFileSystem;

fn versions(db: &common::Db) -> (u32, Option<u32>) {
    let snapshot = iqdb_persist::inspect::snapshot_info(&StdFileSystem, &db.path, false)
        .unwrap()
        .header
        .version;
    (snapshot, db.frames().1.version)
}

#[test]
fn convert_both_ways_keeps_every_write() {
    let db = wal_db(Options::new());
    assert_eq!(versions(&db), (3, Some(2)));

    let out = cli()
        .args(["convert", db.path_str(), "--to", "compat"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("Converted"), "{text}");
    assert!(text.contains("v3 -> v2"), "{text}");
    assert!(text.contains("v2 -> v1"), "{text}");
    assert!(text.contains("1.0 can open it      yes"), "{text}");
    assert_eq!(versions(&db), (2, Some(1)));
    assert_eq!(
        db.frames().1.frames,
        0,
        "the log was folded into the snapshot"
    );
    let loaded = db.load().unwrap();
    assert_eq!(
        iqdb_index::IndexCore::len(loaded.index()) as u64,
        db.vectors
    );
    drop(loaded);

    let out = cli()
        .args(["convert", db.path_str(), "--to", "latest", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let doc = json(&out.stdout);
    assert_eq!(doc["snapshot_version_before"], 2);
    assert_eq!(doc["snapshot_version_after"], 3);
    assert_eq!(doc["wal_version_after"], 2);
    assert_eq!(doc["readable_by_1_0"], false);
    assert_eq!(doc["rewritten"], true);
    assert_eq!(doc["vectors"], db.vectors);
    assert_eq!(doc["exit_code"], 0);
    assert_eq!(versions(&db), (3, Some(2)));
}

#[test]
fn dry_run_changes_nothing() {
    let db = wal_db(Options::new());
    let snapshot = std::fs::read(&db.path).unwrap();
    let log = std::fs::read(&db.wal).unwrap();
    let out = cli()
        .args([
            "convert",
            db.path_str(),
            "--to",
            "compat",
            "--dry-run",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let doc = json(&out.stdout);
    assert_eq!(doc["dry_run"], true);
    assert_eq!(doc["rewritten"], false);
    assert_eq!(doc["readable_by_1_0"], true);
    assert_eq!(std::fs::read(&db.path).unwrap(), snapshot);
    assert_eq!(std::fs::read(&db.wal).unwrap(), log);
}

#[test]
fn convert_exit_codes() {
    // Locked: a handle holds the writer lock.
    let db = wal_db(Options::new());
    let handle = db.load().unwrap();
    let out = cli()
        .args(["convert", db.path_str(), "--to", "compat"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", common::stderr(&out));
    assert_one_line_error(&out);
    drop(handle);

    // Corrupt: a flipped byte in the snapshot, reported with file and offset.
    let db = wal_db(Options::new());
    let len = common::file_len(&db.path);
    common::flip_byte(&db.path, len - 1);
    let out = cli()
        .args(["convert", db.path_str(), "--to", "compat"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_one_line_error(&out);
    let err = common::stderr(&out);
    assert!(
        err.contains(db.path_str()) && err.contains("at byte"),
        "{err}"
    );

    // I/O: no database there.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.iqdb");
    let out = cli()
        .args(["convert", missing.to_str().unwrap(), "--to", "compat"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_one_line_error(&out);

    // Usage: an unknown target.
    let out = cli()
        .args(["convert", db.path_str(), "--to", "v9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// An index type the tool does not know: its snapshot is re-framed without
/// decoding; with operations in its log, exit 5 and nothing changes.
#[test]
fn convert_an_unknown_index_type() {
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("foreign.iqdb");
    common::foreign_snapshot(&foreign, "someone-elses-index", b"payload");
    let out = cli()
        .args(["convert", foreign.to_str().unwrap(), "--to", "latest"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    let header = iqdb_persist::inspect::snapshot_info(&StdFileSystem, &foreign, true).unwrap();
    assert_eq!(header.header.version, 3);
    assert_eq!(header.header.index_type, "someone-elses-index");
    assert_eq!(header.raw_len, 7, "the payload is carried over");

    // With operations in its log, such a database is refused (exit 5):
    // tested in-process, with an empty registry, by the library's unit test
    // `convert_without_a_loader_refuses_a_log_with_operations`.
}

#[test]
fn inspect_says_whether_1_0_can_open_the_database() {
    let db = wal_db(Options::new());
    let out = cli().args(["inspect", db.path_str()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(
        text.contains("1.0 can open it      no (snapshot v3, log v2"),
        "{text}"
    );
    assert!(text.contains("--to compat"), "{text}");
    assert!(
        text.contains("IQDB_PERSIST_FORMAT  unset (policy keep"),
        "{text}"
    );
    assert!(
        text.contains("next checkpoint      snapshot v3, log v2"),
        "{text}"
    );

    let compat = wal_db(Options::compat_1_0());
    let out = cli()
        .args(["inspect", compat.path_str(), "--json"])
        .output()
        .unwrap();
    let doc = json(&out.stdout);
    assert_eq!(doc["formats"]["readable_by_1_0"], true);
    assert_eq!(doc["formats"]["snapshot_version"], 2);
    assert_eq!(doc["formats"]["wal_version"], 1);
    assert_eq!(doc["formats"]["policy"], "keep");
    assert_eq!(doc["formats"]["next_snapshot_version"], 2);
    assert_eq!(doc["formats"]["next_wal_version"], 1);

    // The environment variable, as the tool sees it.
    let out = cli()
        .args(["inspect", db.path_str()])
        .env("IQDB_PERSIST_FORMAT", "compat")
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(text.contains("\"compat\" (policy compat)"), "{text}");
    assert!(
        text.contains("next checkpoint      snapshot v2, log v1"),
        "{text}"
    );

    let out = cli()
        .args(["inspect", db.path_str()])
        .env("IQDB_PERSIST_FORMAT", "bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    let text = stdout(&out);
    assert!(text.contains("INVALID"), "{text}");
    assert!(
        text.contains("format-setting") || text.contains("IQDB_PERSIST_FORMAT=\"bogus\""),
        "{text}"
    );
}
