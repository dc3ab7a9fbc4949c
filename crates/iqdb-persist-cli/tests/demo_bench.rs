//! `demo` end to end (small) and `bench` in a tiny mode.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{cli, json, stdout};

#[test]
fn demo_end_to_end_passes_every_check() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    let out = cli()
        .args([
            "demo",
            "--vectors",
            "2000",
            "--dim",
            "32",
            "--seed",
            "7",
            "--dir",
        ])
        .arg(&demo_dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    for want in [
        "1. built a VectorStore: 2000 vectors",
        "[ok  ] reload is bitwise identical: 2000 of 2000",
        "[ok  ] writer was killed mid-stream: killed by SIGKILL",
        "5. recovered in",
        "[ok  ] every acknowledged write survived",
        "[ok  ] acknowledged deletes stay deleted",
        "[ok  ] no phantom ids",
        "[ok  ] k-NN results identical before and after the crash: 16 of 16",
        "[ok  ] checkpoint folds the log into the snapshot",
        "Result: PASSED (7 of 7 checks passed)",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(!text.contains("FAIL"), "{text}");
    // The database is kept, with a copy of the crash state that the other
    // subcommands read.
    let db = demo_dir.join("vectors.iqdb");
    assert!(db.exists());
    let crash = demo_dir.join("after-crash").join("vectors.iqdb");
    let out = cli().args(["verify"]).arg(&crash).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = cli().args(["verify"]).arg(&db).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    // A second run into the same directory is refused.
    let out = cli()
        .args(["demo", "--vectors", "100", "--dir"])
        .arg(&demo_dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    common::assert_one_line_error(&out);
}

#[test]
fn demo_json_and_cleanup() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo-json");
    let out = cli()
        .args([
            "demo",
            "--vectors",
            "2000",
            "--dim",
            "16",
            "--kill-after",
            "150",
            "--compression",
            "lz4",
            "--cleanup",
            "--json",
            "--dir",
        ])
        .arg(&demo_dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v = json(&out.stdout);
    assert_eq!(v["passed"], true);
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["kill_after"], 150);
    assert!(v["acknowledged_steps"].as_u64().unwrap() >= 150);
    assert_eq!(v["checks"].as_array().unwrap().len(), 7);
    assert!(v["timings_seconds"]["total"].as_f64().unwrap() > 0.0);
    assert!(v["recovery"]["frames_replayed"].as_u64().unwrap() >= 150);
    assert!(!demo_dir.exists(), "--cleanup left the directory");
}

#[test]
fn bench_tiny_reports_a_table_beside_the_raw_disk() {
    let dir = tempfile::tempdir().unwrap();
    let out = cli()
        .args([
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
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    for want in [
        "iqdb-persist",
        "raw disk",
        "save snapshot",
        "load snapshot",
        "durable insert (Always)",
        "batch of 1000 (apply)",
        "log replay (load)",
        "MB/s",
        "ops/s",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    // Its temporary directory is gone.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn bench_json_has_every_row() {
    let out = cli()
        .args([
            "bench",
            "--vectors",
            "300",
            "--dim",
            "8",
            "--runs",
            "2",
            "--wal-ops",
            "10",
            "--batches",
            "1",
            "--compression",
            "zstd:1",
            "--format",
            "v2",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v = json(&out.stdout);
    let rows = v["results"].as_array().unwrap();
    assert_eq!(rows.len(), 5);
    for row in rows {
        assert_eq!(row["iqdb_persist"]["seconds"].as_array().unwrap().len(), 2);
        assert!(row["raw_disk"]["median_seconds"].as_f64().unwrap() > 0.0);
        assert!(row["ratio_to_raw"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(v["config"]["compression"], "zstd:1");
    assert_eq!(v["config"]["format"], "v2");
    assert_eq!(v["replay_operations"], 1010);
}
