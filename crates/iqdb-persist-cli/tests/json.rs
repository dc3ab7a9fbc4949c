//! Every `--json` document (and every JSON line of `wal dump`) carries
//! `"schema_version": 1`, errors included.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::cli;
use iqdb_persist::Options;

#[test]
fn every_json_document_has_schema_version_1() {
    let db = common::wal_db(Options::default());
    let work = tempfile::tempdir().unwrap();
    let missing = work.path().join("nope.iqdb");
    // `wal dump` prints JSON lines: checked below.
    let mut cases: Vec<(Vec<String>, i32)> = common::every_command(db.path_str(), work.path())
        .into_iter()
        .filter(|args| args[0] != "wal")
        .map(|args| (args, 0))
        .collect();
    cases.push((
        vec!["verify".to_string(), missing.to_str().unwrap().to_string()],
        3,
    ));
    for (args, code) in cases {
        let out = cli().arg("--json").args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(code), "{args:?}: {out:?}");
        let v = common::json(&out.stdout);
        assert_eq!(v["schema_version"], 1, "{args:?}: {v}");
    }
    // `convert` above checkpointed `db`: dump a fresh log.
    let db = common::wal_db(Options::default());
    let out = cli()
        .args(["--json", "wal", "dump", db.path_str()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.lines().count() > 2, "{text}");
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["schema_version"], 1, "{line}");
    }
}
