//! The `[patch.crates-io]` took effect: `iqdb` and this crate both link
//! this repository's iqdb-persist, not the registry's 1.0.0.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use iqdb::{DistanceMetric, Iqdb, Vector, VectorId};

/// The `version` of `[package]` in a Cargo manifest.
fn package_version(manifest: &str) -> Option<&str> {
    let package = manifest.split("[package]").nth(1)?;
    let section = package.split("\n[").next()?;
    section.lines().find_map(|line| {
        let value = line.trim().strip_prefix("version")?.trim_start();
        Some(value.strip_prefix('=')?.trim().trim_matches('"'))
    })
}

fn our_crate_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../crates/iqdb-persist")
        .canonicalize()
        .unwrap()
}

/// Compile-time proof: iqdb's re-exported config types are the very types
/// of the iqdb-persist this crate names, and that crate has items only ours
/// has. Run-time: its `VERSION` is the version in our manifest.
#[test]
fn iqdb_and_this_crate_link_our_iqdb_persist() {
    let compression: iqdb_persist::Compression = iqdb::Compression::Lz4;
    let policy: iqdb_persist::FsyncPolicy = iqdb::FsyncPolicy::Always;
    assert_eq!(compression, iqdb_persist::Compression::Lz4);
    assert_eq!(policy, iqdb_persist::FsyncPolicy::Always);
    let _only_in_ours = iqdb_persist::Options::compat_1_0();
    const { assert!(iqdb_persist::LATEST_VERSION > iqdb_persist::CURRENT_VERSION) };

    let manifest = std::fs::read_to_string(our_crate_dir().join("Cargo.toml")).unwrap();
    let version = package_version(&manifest).expect("version in our Cargo.toml");
    assert_eq!(
        iqdb_persist::VERSION,
        version,
        "linked iqdb-persist version"
    );
    assert_ne!(
        iqdb_persist::VERSION,
        "1.0.0",
        "the registry's 1.0.0 was linked"
    );
}

/// `cargo tree` resolves every `iqdb-persist` in this workspace's graph to
/// the path crate.
#[test]
fn cargo_tree_resolves_iqdb_persist_to_the_path_crate() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let output = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "tree",
            "--locked",
            "--offline",
            "--edges",
            "normal,build,dev",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8(output.stdout).unwrap();
    let persist: Vec<&str> = tree
        .lines()
        .filter(|line| line.starts_with("iqdb-persist v"))
        .collect();
    assert!(!persist.is_empty(), "iqdb-persist not in the tree:\n{tree}");
    let ours = our_crate_dir();
    for line in &persist {
        assert!(
            line.contains(&format!("({})", ours.display())),
            "iqdb-persist resolved to something other than {}: {line}",
            ours.display()
        );
    }
    assert!(
        tree.lines().any(|line| line.starts_with("iqdb v1.")),
        "iqdb 1.x not in the tree"
    );
}

/// The files iqdb writes for a new database are in our default formats
/// (snapshot v3, WAL v2), which 1.0 cannot write: ours did the writing.
#[test]
fn iqdb_writes_through_our_crate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.iqdb");
    let db = Iqdb::open(&path, 2, DistanceMetric::Euclidean).unwrap();
    db.upsert(
        VectorId::from(1u64),
        Vector::new(vec![1.0, 2.0]).unwrap(),
        None,
    )
    .unwrap();
    db.close().unwrap();

    let bytes = std::fs::read(&path).unwrap();
    let header = iqdb_persist::format::read_any_header(&mut bytes.as_slice()).unwrap();
    assert_eq!(
        header.version,
        iqdb_persist::LATEST_VERSION,
        "snapshot version"
    );
    let log = std::fs::read(dir.path().join("db.iqdb.wal")).unwrap();
    assert_eq!(&log[..8], b"IQDBWAL\0", "log magic");
    assert_eq!(
        u32::from_le_bytes([log[8], log[9], log[10], log[11]]),
        2,
        "log version"
    );
}
