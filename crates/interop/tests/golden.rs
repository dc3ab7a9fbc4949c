//! The committed golden files (written by iqdb-persist 1.0.0, see
//! `golden/README.md`): ours loads each one as the state its deterministic
//! inputs describe, 1.0 does too (which checks the expectation itself), and
//! regenerating them with 1.0 gives the same bytes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use iqdb_persist::PersistedIndex;
use iqdb_persist_interop::golden::{self, FILES, GoldenFile, Layout};
use iqdb_persist_interop::{V1Store, assert_same_store, config, scheme_tag, v1_config, v1_frames};
use iqdb_persist_testkit::VectorStore;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden")
}

/// Copies `file`'s files into a fresh directory (loading in WAL mode
/// writes a lock file and may rewrite the log, so never load in place).
fn copy_out(file: &GoldenFile) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    for name in file.file_names() {
        let from = golden_dir().join(&name);
        std::fs::copy(&from, dir.path().join(&name))
            .unwrap_or_else(|e| panic!("golden file {} is missing: {e}", from.display()));
    }
    let path = dir.path().join(file.name);
    (dir, path)
}

#[test]
fn golden_files_load_in_ours() {
    for file in &FILES {
        let (_dir, path) = copy_out(file);
        let loaded = PersistedIndex::<VectorStore>::load(config(
            &path,
            file.wal_enabled(),
            file.compression(),
        ))
        .unwrap_or_else(|e| panic!("{}: ours cannot load it: {e}", file.name));
        let report = loaded.recovery_report();
        let expected_version = if file.layout == Layout::SnapshotV1 {
            1
        } else {
            2
        };
        assert_eq!(
            report.snapshot_version, expected_version,
            "{}: snapshot version",
            file.name
        );
        if file.wal_enabled() {
            assert_eq!(report.wal_version, Some(1), "{}: log version", file.name);
            assert_eq!(
                report.operations_applied,
                file.steps().len() as u64,
                "{}: logged operations replayed",
                file.name
            );
            assert_eq!(report.truncated, None, "{}: nothing cut", file.name);
        }
        assert_same_store(&file.expected(), loaded.index(), file.name);
    }
}

/// 1.0 loads each golden file as the same expected state, so a mistake in
/// how the expectation is rebuilt cannot hide behind a matching mistake in
/// ours.
#[test]
fn golden_files_load_in_v1() {
    for file in &FILES {
        let (_dir, path) = copy_out(file);
        let loaded = iqdb_persist_v1::PersistedIndex::<V1Store>::load(v1_config(
            &path,
            file.wal_enabled(),
            file.compression(),
        ))
        .unwrap_or_else(|e| panic!("{}: 1.0 cannot load it: {e}", file.name));
        assert_same_store(&file.expected(), loaded.index().store(), file.name);
    }
}

/// Each file has the layout the README describes.
#[test]
fn golden_files_have_the_documented_layout() {
    for file in &FILES {
        let bytes = std::fs::read(golden_dir().join(file.name)).unwrap();
        let mut rest = bytes.as_slice();
        let header = iqdb_persist::format::read_header(&mut rest)
            .unwrap_or_else(|e| panic!("{}: header: {e}", file.name));
        assert_eq!(header.index_type, iqdb_persist_testkit::INDEX_TYPE);
        assert_eq!(header.dim, file.shape.dim, "{}: dim", file.name);
        assert_eq!(header.metric, file.shape.metric, "{}: metric", file.name);
        assert_eq!(
            header.n_vectors,
            usize::try_from(file.shape.n).unwrap(),
            "{}: count (the base, for a WAL database)",
            file.name
        );
        match file.layout {
            Layout::SnapshotV1 => {
                assert_eq!(header.version, 1, "{}", file.name);
                assert_eq!(
                    iqdb_persist::checksum::compute(rest),
                    header.crc32,
                    "{}: a v1 CRC covers the payload",
                    file.name
                );
                let payload = VectorStore::from_bytes(rest)
                    .unwrap_or_else(|e| panic!("{}: payload is not verbatim: {e}", file.name));
                assert_same_store(&file.shape.store(), &payload, file.name);
            }
            Layout::SnapshotV2(compression) => {
                assert_eq!(header.version, 2, "{}", file.name);
                assert_eq!(rest[0], scheme_tag(compression), "{}: scheme", file.name);
            }
            Layout::WalDatabase { .. } => {
                assert_eq!(header.version, 2, "{}", file.name);
                let log = std::fs::read(golden_dir().join(format!("{}.wal", file.name))).unwrap();
                let frames = v1_frames(&log).unwrap_or_else(|e| panic!("{}.wal: {e}", file.name));
                assert_eq!(
                    frames.len(),
                    file.steps().len(),
                    "{}.wal: one frame per logged write",
                    file.name
                );
            }
        }
    }
}

/// 1.0's output is a function of the inputs (see the README's
/// "Determinism"), so the generator reproduces every committed byte; and
/// the directory holds exactly the generated files and the README.
#[test]
fn regenerating_with_v1_gives_identical_files() {
    let fresh = tempfile::tempdir().unwrap();
    let written = golden::write_all(fresh.path()).unwrap();
    let mut expected_names = BTreeSet::from(["README.md".to_string()]);
    for path in &written {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let regenerated = std::fs::read(path).unwrap();
        let committed = std::fs::read(golden_dir().join(&name))
            .unwrap_or_else(|e| panic!("{name} is not committed: {e}"));
        let first_difference = regenerated
            .iter()
            .zip(&committed)
            .position(|(a, b)| a != b)
            .or_else(|| (regenerated.len() != committed.len()).then_some(0));
        assert_eq!(
            first_difference,
            None,
            "{name}: regenerated file ({} bytes) differs from the committed one ({} bytes) \
             at this offset; see golden/README.md, \"Determinism\"",
            regenerated.len(),
            committed.len()
        );
        expected_names.insert(name);
    }
    let present: BTreeSet<String> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        present, expected_names,
        "golden/ should hold exactly the generated files and README.md"
    );
}

#[test]
fn golden_files_are_small() {
    for file in &FILES {
        for name in file.file_names() {
            let len = std::fs::metadata(golden_dir().join(&name)).unwrap().len();
            assert!(len < 64 * 1024, "{name} is {len} bytes, over 64 KiB");
        }
    }
}
