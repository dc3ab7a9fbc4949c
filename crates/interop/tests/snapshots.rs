//! Snapshot files both ways between iqdb-persist 1.0.0 and ours, for every
//! compression scheme and every sample shape.
//!
//! * 1.0 writes (snapshot mode: `open_with` + `save`), ours loads.
//! * Ours writes with `Options::compat_1_0()` (snapshot v2), 1.0 loads.
//! * A v1 snapshot (built with 1.0's header writer), ours loads.
//! * Ours with default options writes v3, which 1.0 refuses with its
//!   `UnsupportedVersion` error.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use iqdb_persist::{Compression, Options, PersistError, PersistedIndex};
use iqdb_persist_interop::{
    SCHEMES, SHAPES, Shape, V1Store, assert_same_store, config, scheme_tag, v1_config,
    write_v1_snapshot,
};
use iqdb_persist_testkit::VectorStore;

/// Runs a per-scheme check as four tests: none, zstd 1, zstd 19, lz4.
macro_rules! for_each_scheme {
    ($($check:ident),* $(,)?) => {$(
        mod $check {
            use iqdb_persist::Compression;

            #[test]
            fn none() {
                super::$check(Compression::None);
            }

            #[test]
            fn zstd_1() {
                super::$check(Compression::Zstd { level: 1 });
            }

            #[test]
            fn zstd_19() {
                super::$check(Compression::Zstd { level: 19 });
            }

            #[test]
            fn lz4() {
                super::$check(Compression::Lz4);
            }
        }
    )*};
}

for_each_scheme!(v1_snapshot_loads_in_ours, ours_compat_snapshot_loads_in_v1);

fn context(shape: &Shape, compression: Compression) -> String {
    format!(
        "{} records, dim {}, {:?}, {compression:?}",
        shape.n, shape.dim, shape.metric
    )
}

/// The header 1.0's reader sees at `path`, and the byte that follows it
/// (the v2 scheme tag).
fn v1_header_and_scheme(path: &Path) -> (iqdb_persist_v1::FileHeader, u8) {
    let bytes = std::fs::read(path).unwrap();
    let mut reader = bytes.as_slice();
    let header = iqdb_persist_v1::format::read_header(&mut reader)
        .unwrap_or_else(|e| panic!("1.0 cannot read the header of {}: {e}", path.display()));
    let scheme = *reader
        .first()
        .unwrap_or_else(|| panic!("{} ends right after its header", path.display()));
    (header, scheme)
}

fn v1_snapshot_loads_in_ours(compression: Compression) {
    for shape in &SHAPES {
        let context = context(shape, compression);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.iqdb");
        let expected = shape.store();

        let written = iqdb_persist_v1::PersistedIndex::open_with(
            V1Store(expected.clone()),
            v1_config(&path, false, compression),
        )
        .unwrap_or_else(|e| panic!("{context}: 1.0 open_with: {e}"));
        written
            .save()
            .unwrap_or_else(|e| panic!("{context}: 1.0 save: {e}"));
        drop(written);
        let (header, scheme) = v1_header_and_scheme(&path);
        assert_eq!(header.version, 2, "{context}: 1.0 writes snapshot v2");
        assert_eq!(scheme, scheme_tag(compression), "{context}: 1.0 scheme tag");

        let loaded = PersistedIndex::<VectorStore>::load(config(&path, false, compression))
            .unwrap_or_else(|e| panic!("{context}: ours cannot load 1.0's snapshot: {e}"));
        assert_eq!(
            loaded.recovery_report().snapshot_version,
            2,
            "{context}: ours reports the version it read"
        );
        assert_same_store(&expected, loaded.index(), &context);

        // The scheme is read from the file, not from the caller's config.
        let loaded = PersistedIndex::<VectorStore>::load(config(&path, false, Compression::None))
            .unwrap_or_else(|e| panic!("{context}: ours, loading with no compression set: {e}"));
        assert_same_store(&expected, loaded.index(), &context);
    }
}

fn ours_compat_snapshot_loads_in_v1(compression: Compression) {
    for shape in &SHAPES {
        let context = context(shape, compression);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.iqdb");
        let expected = shape.store();

        let written = PersistedIndex::open_with_options(
            expected.clone(),
            config(&path, false, compression),
            Options::compat_1_0(),
        )
        .unwrap_or_else(|e| panic!("{context}: ours open_with_options: {e}"));
        written
            .save()
            .unwrap_or_else(|e| panic!("{context}: ours save: {e}"));
        drop(written);

        let (header, scheme) = v1_header_and_scheme(&path);
        assert_eq!(header.version, 2, "{context}: compat writes snapshot v2");
        assert_eq!(header.index_type, iqdb_persist_testkit::INDEX_TYPE);
        assert_eq!(header.dim, shape.dim, "{context}: header dim");
        assert_eq!(header.metric, shape.metric, "{context}: header metric");
        assert_eq!(header.n_vectors, expected.len(), "{context}: header count");
        assert_eq!(scheme, scheme_tag(compression), "{context}: scheme tag");

        let loaded =
            iqdb_persist_v1::PersistedIndex::<V1Store>::load(v1_config(&path, false, compression))
                .unwrap_or_else(|e| panic!("{context}: 1.0 cannot load our compat snapshot: {e}"));
        assert_same_store(&expected, loaded.index().store(), &context);
    }
}

/// The uncompressed v2 layout leaves no freedom (header, scheme 0, raw
/// length, payload), so both versions must write the same bytes.
#[test]
fn uncompressed_v2_snapshots_are_byte_identical_between_versions() {
    for shape in &SHAPES {
        let context = context(shape, Compression::None);
        let dir = tempfile::tempdir().unwrap();
        let ours_path = dir.path().join("ours.iqdb");
        let v1_path = dir.path().join("v1.iqdb");

        PersistedIndex::open_with_options(
            shape.store(),
            config(&ours_path, false, Compression::None),
            Options::compat_1_0(),
        )
        .unwrap()
        .save()
        .unwrap();
        iqdb_persist_v1::PersistedIndex::open_with(
            V1Store(shape.store()),
            v1_config(&v1_path, false, Compression::None),
        )
        .unwrap()
        .save()
        .unwrap();

        let ours = std::fs::read(&ours_path).unwrap();
        let theirs = std::fs::read(&v1_path).unwrap();
        assert_eq!(ours.len(), theirs.len(), "{context}: file lengths differ");
        let first_difference = ours.iter().zip(&theirs).position(|(a, b)| a != b);
        assert_eq!(
            first_difference, None,
            "{context}: our v2 snapshot differs from 1.0's at this byte offset"
        );
    }
}

#[test]
fn v1_format_snapshot_loads_in_ours() {
    for shape in &SHAPES {
        let context = context(shape, Compression::None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.iqdb");
        let expected = shape.store();
        write_v1_snapshot(&path, &expected).unwrap();

        // 1.0 itself reads it (so the file is what 1.0 calls v1) ...
        let (header, _) = v1_header_and_scheme(&path);
        assert_eq!(header.version, 1, "{context}");
        let theirs = iqdb_persist_v1::PersistedIndex::<V1Store>::load(v1_config(
            &path,
            false,
            Compression::None,
        ))
        .unwrap_or_else(|e| panic!("{context}: 1.0 cannot load its own v1 layout: {e}"));
        assert_same_store(&expected, theirs.index().store(), &context);

        // ... and so does ours.
        let ours = PersistedIndex::<VectorStore>::load(config(&path, false, Compression::None))
            .unwrap_or_else(|e| panic!("{context}: ours cannot load a v1 snapshot: {e}"));
        assert_eq!(ours.recovery_report().snapshot_version, 1, "{context}");
        assert_same_store(&expected, ours.index(), &context);
    }
}

/// A new database gets v3 by default (documented: 1.0 cannot read it;
/// `convert --to compat` or `IQDB_PERSIST_FORMAT=compat` gives v2), and 1.0
/// refuses it cleanly with its `UnsupportedVersion` error.
#[test]
fn ours_default_snapshot_is_v3_and_v1_refuses_it() {
    let shape = SHAPES[2];
    for compression in SCHEMES {
        let context = context(&shape, compression);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.iqdb");
        PersistedIndex::open_with(shape.store(), config(&path, false, compression))
            .unwrap()
            .save()
            .unwrap();

        let bytes = std::fs::read(&path).unwrap();
        let header = iqdb_persist::format::read_any_header(&mut bytes.as_slice()).unwrap();
        assert_eq!(header.version, 3, "{context}: default format");
        // 1.0's header reader, kept as 1.0 had it, refuses v3 as 1.0 does.
        assert!(
            matches!(
                iqdb_persist::format::read_header(&mut bytes.as_slice()),
                Err(PersistError::UnsupportedVersion {
                    found: 3,
                    supported: 2
                })
            ),
            "{context}"
        );
        assert_eq!(header.version, iqdb_persist::LATEST_VERSION, "{context}");

        let err =
            iqdb_persist_v1::PersistedIndex::<V1Store>::load(v1_config(&path, false, compression))
                .expect_err("1.0 must refuse a v3 snapshot");
        assert!(
            matches!(
                err,
                iqdb_persist_v1::PersistError::UnsupportedVersion {
                    found: 3,
                    supported: 2
                }
            ),
            "{context}: 1.0 should report UnsupportedVersion {{ found: 3, supported: 2 }}, got {err:?}"
        );

        // Ours reads its own default format back.
        let loaded =
            PersistedIndex::<VectorStore>::load(config(&path, false, compression)).unwrap();
        assert_eq!(loaded.recovery_report().snapshot_version, 3, "{context}");
        assert_same_store(&shape.store(), loaded.index(), &context);
    }
}
