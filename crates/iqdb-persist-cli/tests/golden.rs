//! The tool on files written by the published iqdb-persist 1.0.0 (the golden
//! files of `crates/interop/golden`), copied to a temp dir so nothing touches
//! the committed files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::{cli, stdout};

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../interop/golden")
        .join(name)
}

/// Copies golden files into a fresh directory.
fn copy(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in names {
        std::fs::copy(golden(name), dir.path().join(name)).unwrap();
    }
    dir
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(out)))
}

#[test]
fn every_golden_snapshot_inspects_and_verifies_healthy() {
    for (name, version, compression) in [
        ("snapshot-v1.iqdb", 1, "none"),
        ("snapshot-v2-none.iqdb", 2, "none"),
        ("snapshot-v2-zstd.iqdb", 2, "zstd"),
        ("snapshot-v2-lz4.iqdb", 2, "lz4"),
    ] {
        let dir = copy(&[name]);
        let path = dir.path().join(name);
        let out = cli()
            .args(["inspect", "--json"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{name}: {out:?}");
        let doc = json(&out);
        let snapshot = &doc["snapshot"];
        assert_eq!(
            snapshot["index_type"], "iqdb-testkit-vector-store",
            "{name}: {doc}"
        );
        assert_eq!(snapshot["compression"], compression, "{name}: {doc}");
        assert_eq!(snapshot["format_version"], version, "{name}: {doc}");
        assert_eq!(doc["status"], "healthy", "{name}: {doc}");
        let out = cli().args(["verify"]).arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stdout(&out));
        let _ = json(
            &cli()
                .args(["verify", "--json"])
                .arg(&path)
                .output()
                .unwrap(),
        );
    }
}

#[test]
fn the_golden_wal_database_dumps_verifies_and_repairs_as_healthy() {
    let dir = copy(&["wal-v1.iqdb", "wal-v1.iqdb.wal"]);
    let path = dir.path().join("wal-v1.iqdb");
    let out = cli()
        .args(["wal", "dump", "--json"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let records = stdout(&out)
        .lines()
        .filter(|l| l.contains("\"op\""))
        .count();
    assert_eq!(records, 50, "1.0 logged 50 writes: {}", stdout(&out));
    let out = cli().args(["verify"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let before = std::fs::read(dir.path().join("wal-v1.iqdb.wal")).unwrap();
    let out = cli().args(["repair"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(
        std::fs::read(dir.path().join("wal-v1.iqdb.wal")).unwrap(),
        before,
        "repair changed a healthy log"
    );
}
