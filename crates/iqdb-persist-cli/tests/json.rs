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
    let bench_dir = work.path().join("bench");
    std::fs::create_dir(&bench_dir).unwrap();
    let demo = work.path().join("demo");
    let p = db.path_str();
    let missing = work.path().join("nope.iqdb");
    let cases: Vec<(Vec<&str>, i32)> = vec![
        (vec!["inspect", p], 0),
        (vec!["verify", p], 0),
        (vec!["repair", p, "--dry-run"], 0),
        (vec!["convert", p, "--to", "latest"], 0),
        (
            vec![
                "bench",
                "--vectors",
                "300",
                "--dim",
                "8",
                "--runs",
                "1",
                "--wal-ops",
                "20",
                "--batches",
                "1",
                "--dir",
                bench_dir.to_str().unwrap(),
            ],
            0,
        ),
        (
            vec![
                "demo",
                "--vectors",
                "200",
                "--dim",
                "8",
                "--kill-after",
                "20",
                "--cleanup",
                "--dir",
                demo.to_str().unwrap(),
            ],
            0,
        ),
        (vec!["verify", missing.to_str().unwrap()], 3),
    ];
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
