//! Behaviour of `PersistedIndex` on the real file system, one test per
//! promise (each of 1.0's reproduced defects has one here).

use std::path::{Path, PathBuf};

use iqdb_index::IndexCore;
use iqdb_types::VectorId;

use crate::test_support::{MiniIndex, mini, vector};
use crate::{
    Compression, DamageKind, FsyncPolicy, Operation, Options, PersistConfig, PersistError,
    PersistedIndex, RecoveryMode, Result, SnapshotFormat, WalFormat,
};

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"))
}

fn wal_config(dir: &Path) -> PersistConfig {
    let mut config = PersistConfig::new(dir.join("db.iqdb"));
    config.wal_enabled = true;
    config
}

fn schemes() -> Vec<Compression> {
    let mut out = vec![Compression::None];
    if cfg!(feature = "zstd") {
        out.push(Compression::Zstd { level: 3 });
    }
    if cfg!(feature = "lz4") {
        out.push(Compression::Lz4);
    }
    out
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn snapshot_round_trips_in_every_format_and_scheme() -> Result<()> {
    let d = dir();
    let original = mini(3000, 7);
    for format in [SnapshotFormat::V2, SnapshotFormat::V3] {
        for scheme in schemes() {
            for chunk in [4096, 1 << 20] {
                let mut config = PersistConfig::new(d.path().join("snap.iqdb"));
                config.compression = scheme;
                let options = Options::new()
                    .snapshot_format(format)
                    .chunk_size(chunk)
                    .compression_threads(2);
                let db = PersistedIndex::open_with_options(
                    original.clone(),
                    config.clone(),
                    options.clone(),
                )?;
                db.save()?;
                let back = PersistedIndex::<MiniIndex>::load_with_options(config, options)?;
                assert_eq!(
                    back.index(),
                    &original,
                    "{format:?} {scheme:?} chunk {chunk}"
                );
                assert_eq!(back.recovery_report().snapshot_version, format.version());
            }
        }
    }
    // The lock file is the writer lock every save takes (a snapshot-only handle
    // included); nothing else is left behind.
    assert_eq!(names_in(d.path()), vec!["snap.iqdb", "snap.iqdb.lock"]);
    Ok(())
}

#[test]
fn every_truncation_and_bit_flip_of_a_small_snapshot_errors_or_loads_correctly() -> Result<()> {
    let d = dir();
    let original = mini(5, 3);
    for format in [SnapshotFormat::V2, SnapshotFormat::V3] {
        for scheme in schemes() {
            let path = d.path().join("s.iqdb");
            let mut config = PersistConfig::new(&path);
            config.compression = scheme;
            let options = Options::new().snapshot_format(format);
            PersistedIndex::open_with_options(original.clone(), config.clone(), options.clone())?
                .save()?;
            let bytes = std::fs::read(&path).map_err(|e| PersistError::io(&path, e))?;
            for cut in 0..bytes.len() {
                std::fs::write(&path, &bytes[..cut]).map_err(|e| PersistError::io(&path, e))?;
                let err =
                    PersistedIndex::<MiniIndex>::load_with_options(config.clone(), options.clone());
                assert!(
                    err.is_err(),
                    "{format:?} {scheme:?}: truncation at {cut} loaded"
                );
            }
            for bit in 0..bytes.len() * 8 {
                let mut flipped = bytes.clone();
                flipped[bit / 8] ^= 1 << (bit % 8);
                std::fs::write(&path, &flipped).map_err(|e| PersistError::io(&path, e))?;
                if let Ok(db) =
                    PersistedIndex::<MiniIndex>::load_with_options(config.clone(), options.clone())
                {
                    assert_eq!(
                        db.index(),
                        &original,
                        "{format:?} {scheme:?}: bit {bit} loaded wrong data"
                    );
                }
            }
        }
    }
    Ok(())
}

#[test]
fn wal_writes_survive_reload_and_checkpoint() -> Result<()> {
    for wal_format in [WalFormat::V1, WalFormat::V2] {
        let d = dir();
        let config = wal_config(d.path());
        let options = Options::new().wal_format(wal_format);
        let mut db =
            PersistedIndex::open_with_options(mini(10, 4), config.clone(), options.clone())?;
        for i in 10..20 {
            db.insert(VectorId::U64(i), vector(i, 4), None)?;
        }
        db.delete(&VectorId::U64(3))?;
        drop(db);
        let mut db =
            PersistedIndex::<MiniIndex>::load_with_options(config.clone(), options.clone())?;
        assert_eq!(db.index().len(), 19);
        assert_eq!(db.recovery_report().operations_applied, 11);
        db.checkpoint()?;
        db.insert(VectorId::U64(100), vector(100, 4), None)?;
        drop(db);
        let db = PersistedIndex::<MiniIndex>::load_with_options(config, options)?;
        assert_eq!(db.index().len(), 20);
        assert_eq!(db.recovery_report().operations_applied, 1);
        assert!(
            db.index()
                .entries
                .values()
                .any(|(id, _, _)| *id == VectorId::U64(100))
        );
    }
    Ok(())
}

/// 1.0 defect 1: writes acknowledged after a torn tail was skipped were
/// appended after the torn bytes and lost on the next load.
#[test]
fn torn_tail_is_truncated_so_later_writes_survive() -> Result<()> {
    for wal_format in [WalFormat::V1, WalFormat::V2] {
        let d = dir();
        let config = wal_config(d.path());
        let options = Options::new().wal_format(wal_format);
        let mut db =
            PersistedIndex::open_with_options(mini(0, 4), config.clone(), options.clone())?;
        for i in 0..5 {
            db.insert(VectorId::U64(i), vector(i, 4), None)?;
        }
        drop(db);
        // A torn frame: a head promising 100 bytes, and only 10 of them.
        let wal = config.wal_path();
        let mut bytes = std::fs::read(&wal).map_err(|e| PersistError::io(&wal, e))?;
        let valid_len = bytes.len() as u64;
        bytes.extend_from_slice(&100u32.to_le_bytes());
        bytes.extend_from_slice(&0xdead_beefu32.to_le_bytes());
        bytes.extend_from_slice(&[7u8; 10]);
        std::fs::write(&wal, &bytes).map_err(|e| PersistError::io(&wal, e))?;

        let mut db =
            PersistedIndex::<MiniIndex>::load_with_options(config.clone(), options.clone())?;
        let cut = db.recovery_report().truncated.clone();
        assert_eq!(
            cut.as_ref().map(|t| (t.offset, t.kind)),
            Some((valid_len, DamageKind::Torn))
        );
        db.insert(VectorId::U64(5), vector(5, 4), None)?;
        drop(db);
        let db = PersistedIndex::<MiniIndex>::load_with_options(config, options)?;
        assert_eq!(db.index().len(), 6, "{wal_format:?}");
        assert_eq!(db.recovery_report().truncated, None);
    }
    Ok(())
}

/// 1.0 defect 4: one flipped bit 10% into a log silently dropped the rest.
#[test]
fn mid_log_corruption_is_an_error_naming_file_and_offset() -> Result<()> {
    for wal_format in [WalFormat::V1, WalFormat::V2] {
        let d = dir();
        let config = wal_config(d.path());
        let options = Options::new().wal_format(wal_format);
        let mut db =
            PersistedIndex::open_with_options(mini(0, 4), config.clone(), options.clone())?;
        for i in 0..200 {
            db.insert(VectorId::U64(i), vector(i, 4), None)?;
        }
        drop(db);
        let wal = config.wal_path();
        let mut bytes = std::fs::read(&wal).map_err(|e| PersistError::io(&wal, e))?;
        let at = bytes.len() / 10;
        bytes[at] ^= 0x10;
        std::fs::write(&wal, &bytes).map_err(|e| PersistError::io(&wal, e))?;

        let err = PersistedIndex::<MiniIndex>::load_with_options(config.clone(), options.clone());
        let err = err
            .err()
            .unwrap_or_else(|| panic!("{wal_format:?}: corrupt log loaded"));
        assert_eq!(err.path(), Some(wal.as_path()));
        let offset = err.offset().unwrap_or(u64::MAX);
        assert!(
            offset <= at as u64 && offset + 64 > at as u64,
            "offset {offset} vs flip at {at}"
        );
        assert!(
            matches!(
                err.root_cause(),
                PersistError::CorruptFrame { torn: false, .. }
            ),
            "{err}"
        );

        // Salvage keeps the valid prefix, backs the log up and says so.
        let salvage = options.clone().recovery_mode(RecoveryMode::Salvage);
        let mut db = PersistedIndex::<MiniIndex>::load_with_options(config.clone(), salvage)?;
        let cut = db
            .recovery_report()
            .truncated
            .clone()
            .unwrap_or_else(|| panic!("no truncation"));
        assert_eq!(cut.offset, offset);
        assert!(cut.frames_dropped > 100);
        let backup = cut.backup.clone().unwrap_or_default();
        assert_eq!(std::fs::read(&backup).ok(), Some(bytes));
        let kept = db.index().len();
        assert!(kept < 200 && kept > 0);
        db.insert(VectorId::U64(1000), vector(1000, 4), None)?;
        drop(db);
        let db = PersistedIndex::<MiniIndex>::load_with_options(config, options)?;
        assert_eq!(db.index().len(), kept + 1);
    }
    Ok(())
}

#[test]
fn strict_mode_refuses_a_torn_tail_and_changes_nothing() -> Result<()> {
    let d = dir();
    let config = wal_config(d.path());
    let mut db = PersistedIndex::open_with(mini(0, 4), config.clone())?;
    db.insert(VectorId::U64(1), vector(1, 4), None)?;
    drop(db);
    let wal = config.wal_path();
    let mut bytes = std::fs::read(&wal).map_err(|e| PersistError::io(&wal, e))?;
    bytes.extend_from_slice(&[9, 0, 0]);
    std::fs::write(&wal, &bytes).map_err(|e| PersistError::io(&wal, e))?;
    let strict = Options::new().recovery_mode(RecoveryMode::Strict);
    let err = PersistedIndex::<MiniIndex>::load_with_options(config.clone(), strict);
    assert!(matches!(
        err.as_ref().map_err(PersistError::root_cause),
        Err(PersistError::CorruptFrame { torn: true, .. })
    ));
    assert_eq!(std::fs::read(&wal).ok(), Some(bytes));
    Ok(())
}

/// 1.0 defect 2: a crash between the checkpoint's snapshot rename and the
/// log reset made the next load replay operations the snapshot already
/// held ("duplicate id").
#[test]
fn crash_between_checkpoint_rename_and_log_reset_is_completed_on_load() -> Result<()> {
    for wal_format in [WalFormat::V1, WalFormat::V2] {
        let d = dir();
        let config = wal_config(d.path());
        let options = Options::new().wal_format(wal_format);
        let mut db =
            PersistedIndex::open_with_options(mini(3, 4), config.clone(), options.clone())?;
        for i in 3..8 {
            db.insert(VectorId::U64(i), vector(i, 4), None)?;
        }
        let wal = config.wal_path();
        let old_log = std::fs::read(&wal).map_err(|e| PersistError::io(&wal, e))?;
        db.checkpoint()?;
        drop(db);
        // Rebuild the crash state: new snapshot, old log, durable intent.
        let snapshot = crate::snapshot::inspect_snapshot_file(
            &crate::storage::StdFileSystem,
            &config.path,
            false,
            1,
        )?;
        let fs = crate::storage::StdFileSystem::shared();
        crate::checkpoint::write(
            &fs,
            &config.checkpoint_path(),
            &crate::checkpoint::Intent {
                snapshot: snapshot.fingerprint(),
                next_seq: 9,
                wal_version: wal_format.version(),
            },
        )?;
        std::fs::write(&wal, &old_log).map_err(|e| PersistError::io(&wal, e))?;

        let db = PersistedIndex::<MiniIndex>::load_with_options(config.clone(), options.clone())?;
        assert_eq!(db.index().len(), 8);
        assert!(db.recovery_report().checkpoint_completed);
        assert_eq!(db.recovery_report().operations_applied, 0);
        drop(db);
        assert!(!config.checkpoint_path().exists());
        let db = PersistedIndex::<MiniIndex>::load_with_options(config, options)?;
        assert_eq!(db.index().len(), 8);
    }
    Ok(())
}

/// An intent for a snapshot that never got installed is abandoned: the old
/// snapshot and log stand.
#[test]
fn intent_without_installed_snapshot_keeps_the_log() -> Result<()> {
    let d = dir();
    let config = wal_config(d.path());
    let mut db = PersistedIndex::open_with(mini(2, 4), config.clone())?;
    db.insert(VectorId::U64(50), vector(50, 4), None)?;
    drop(db);
    let fs = crate::storage::StdFileSystem::shared();
    crate::checkpoint::write(
        &fs,
        &config.checkpoint_path(),
        &crate::checkpoint::Intent {
            snapshot: crate::SnapshotFingerprint { crc32: 1, len: 2 },
            next_seq: 2,
            wal_version: 2,
        },
    )?;
    let db = PersistedIndex::<MiniIndex>::load(config.clone())?;
    assert_eq!(db.index().len(), 3);
    assert!(db.recovery_report().checkpoint_abandoned);
    assert!(!config.checkpoint_path().exists());
    Ok(())
}

/// 1.0 defect 3: a log cut to 0 bytes loaded once, then failed with
/// BadMagic because its header was never rewritten.
#[test]
fn log_cut_to_zero_or_mid_header_loads_and_stays_loadable() -> Result<()> {
    for cut in [0usize, 5, 11] {
        let d = dir();
        let config = wal_config(d.path());
        let mut db =
            PersistedIndex::open_with_options(mini(4, 4), config.clone(), Options::compat_1_0())?;
        db.insert(VectorId::U64(9), vector(9, 4), None)?;
        drop(db);
        let wal = config.wal_path();
        let bytes = std::fs::read(&wal).map_err(|e| PersistError::io(&wal, e))?;
        std::fs::write(&wal, &bytes[..cut]).map_err(|e| PersistError::io(&wal, e))?;
        let mut db = PersistedIndex::<MiniIndex>::load(config.clone())?;
        assert_eq!(db.index().len(), 4);
        assert!(db.recovery_report().wal_created);
        db.insert(VectorId::U64(10), vector(10, 4), None)?;
        drop(db);
        let db = PersistedIndex::<MiniIndex>::load(config)?;
        assert_eq!(db.index().len(), 5, "cut {cut}");
    }
    Ok(())
}

/// 1.0 defect 5: two writers appended to one log and lost writes.
#[test]
fn second_writer_is_refused_with_locked() -> Result<()> {
    let d = dir();
    let config = wal_config(d.path());
    let db = PersistedIndex::open_with(mini(1, 4), config.clone())?;
    let second = PersistedIndex::<MiniIndex>::load(config.clone());
    match second {
        Err(PersistError::Locked { path }) => assert_eq!(path, config.lock_path()),
        other => panic!("expected Locked, got {:?}", other.map(|_| ())),
    }
    let third = PersistedIndex::open_with(mini(1, 4), config.clone());
    assert!(matches!(third, Err(PersistError::Locked { .. })));
    drop(db);
    assert!(PersistedIndex::<MiniIndex>::load(config).is_ok());
    Ok(())
}

/// 1.0 defect 6: open_with silently replaced a database with pending writes.
#[test]
fn open_with_refuses_to_discard_logged_writes_unless_asked() -> Result<()> {
    let d = dir();
    let config = wal_config(d.path());
    let mut db = PersistedIndex::open_with(mini(0, 4), config.clone())?;
    for i in 0..100 {
        db.insert(VectorId::U64(i), vector(i, 4), None)?;
    }
    drop(db);
    match PersistedIndex::open_with(mini(0, 4), config.clone()) {
        Err(PersistError::WouldOverwrite {
            path,
            pending_operations,
        }) => {
            assert_eq!(path, config.wal_path());
            assert_eq!(pending_operations, 100);
        }
        other => panic!("expected WouldOverwrite, got {:?}", other.map(|_| ())),
    }
    assert_eq!(
        PersistedIndex::<MiniIndex>::load(config.clone())?
            .index()
            .len(),
        100
    );
    let db = PersistedIndex::open_with_options(
        mini(0, 4),
        config.clone(),
        Options::new().overwrite_existing(true),
    )?;
    drop(db);
    assert_eq!(PersistedIndex::<MiniIndex>::load(config)?.index().len(), 0);
    Ok(())
}

/// 1.0 defect 9: temporaries of crashed saves piled up.
#[test]
fn stale_temp_files_are_swept_on_load_and_save() -> Result<()> {
    let d = dir();
    let config = wal_config(d.path());
    drop(PersistedIndex::open_with(mini(1, 4), config.clone())?);
    let dead = 4_194_399u32;
    let own = std::process::id();
    let leftovers: Vec<PathBuf> = [
        format!("db.iqdb.tmp.{dead}.1700000000"),
        format!("db.iqdb.iqdb-tmp.{dead}.3"),
        format!("db.iqdb.wal.iqdb-tmp.{own}.123456"),
        format!("db.iqdb.checkpoint.iqdb-tmp.{dead}.0"),
    ]
    .iter()
    .map(|n| d.path().join(n))
    .collect();
    for p in &leftovers {
        std::fs::write(p, b"junk").map_err(|e| PersistError::io(p, e))?;
    }
    let db = PersistedIndex::<MiniIndex>::load(config)?;
    assert_eq!(db.recovery_report().stale_temp_files_removed.len(), 4);
    assert_eq!(
        names_in(d.path()),
        vec!["db.iqdb", "db.iqdb.lock", "db.iqdb.wal"]
    );
    Ok(())
}

#[test]
fn batches_apply_in_order_and_stop_at_first_rejection() -> Result<()> {
    for wal_format in [WalFormat::V1, WalFormat::V2] {
        let d = dir();
        let config = wal_config(d.path());
        let options = Options::new().wal_format(wal_format);
        let mut db =
            PersistedIndex::open_with_options(mini(2, 4), config.clone(), options.clone())?;
        let ops = vec![
            Operation::Insert {
                id: VectorId::U64(10),
                vector: vector(10, 4),
                metadata: None,
            },
            Operation::Delete {
                id: VectorId::U64(0),
            },
            Operation::Insert {
                id: VectorId::U64(1),
                vector: vector(1, 4),
                metadata: None,
            },
            Operation::Insert {
                id: VectorId::U64(11),
                vector: vector(11, 4),
                metadata: None,
            },
        ];
        match db.apply(ops) {
            Err(PersistError::Batch { applied: 2, source }) => {
                assert!(matches!(
                    *source,
                    PersistError::IndexBuild(iqdb_types::IqdbError::Duplicate)
                ));
            }
            other => panic!(
                "{wal_format:?}: expected Batch error, got {:?}",
                other.map(|_| ())
            ),
        }
        let mut b = db.batch();
        b.insert(VectorId::U64(12), vector(12, 4), None)
            .delete(VectorId::U64(10));
        b.commit()?;
        let expected = db.index().clone();
        drop(db);
        let db = PersistedIndex::<MiniIndex>::load_with_options(config, options)?;
        assert_eq!(db.index(), &expected, "{wal_format:?}");
        let ids: Vec<_> = db
            .index()
            .entries
            .values()
            .map(|(id, _, _)| id.clone())
            .collect();
        assert_eq!(ids, vec![VectorId::U64(1), VectorId::U64(12)]);
    }
    Ok(())
}

#[test]
fn rejected_single_operations_stay_rejected_after_replay() -> Result<()> {
    let d = dir();
    let config = wal_config(d.path());
    let mut db = PersistedIndex::open_with(mini(1, 4), config.clone())?;
    assert!(db.insert(VectorId::U64(0), vector(0, 4), None).is_err());
    assert!(db.delete(&VectorId::U64(77)).is_err());
    assert!(db.insert(VectorId::U64(5), vector(5, 3), None).is_err());
    db.insert(VectorId::U64(6), vector(6, 4), None)?;
    let expected = db.index().clone();
    drop(db);
    let db = PersistedIndex::<MiniIndex>::load(config)?;
    assert_eq!(db.index(), &expected);
    assert_eq!(db.recovery_report().operations_rejected, 3);
    Ok(())
}

#[test]
fn periodic_policy_and_explicit_sync_work() -> Result<()> {
    let d = dir();
    let mut config = wal_config(d.path());
    config.fsync_policy = FsyncPolicy::Periodic(std::time::Duration::from_millis(20));
    let mut db = PersistedIndex::open_with(mini(0, 4), config.clone())?;
    for i in 0..50 {
        db.insert(VectorId::U64(i), vector(i, 4), None)?;
    }
    db.sync()?;
    std::thread::sleep(std::time::Duration::from_millis(50));
    drop(db);
    let db = PersistedIndex::<MiniIndex>::load(config)?;
    assert_eq!(db.index().len(), 50);
    Ok(())
}

#[test]
fn unsupported_compression_is_refused_at_open_and_load() {
    let d = dir();
    let mut config = PersistConfig::new(d.path().join("x.iqdb"));
    config.compression = Compression::Zstd { level: 0 };
    assert!(PersistedIndex::open_with(mini(1, 2), config.clone()).is_err());
    assert!(PersistedIndex::<MiniIndex>::load(config).is_err());
}

#[test]
fn wrong_index_type_names_both_types() -> Result<()> {
    let d = dir();
    let path = d.path().join("x.iqdb");
    let mut bytes = Vec::new();
    crate::format::write_header(
        &mut bytes,
        &crate::FileHeader {
            magic: crate::MAGIC,
            version: 1,
            index_type: "hnsw".into(),
            dim: 3,
            metric: iqdb_types::DistanceMetric::Cosine,
            n_vectors: 0,
            crc32: crate::checksum::compute(&[]),
        },
    )?;
    std::fs::write(&path, &bytes).map_err(|e| PersistError::io(&path, e))?;
    let err = PersistedIndex::<MiniIndex>::load(PersistConfig::new(&path)).err();
    let err = err.unwrap_or_else(|| panic!("loaded a foreign index type"));
    // 1.0's variant, bare, as 1.0 returned it.
    assert!(matches!(
        &err,
        PersistError::InvalidIndexType { found, expected: "mini" } if found == "hnsw"
    ));
    // With locations asked for, the file too.
    let options = Options::new().error_locations(true);
    let err = PersistedIndex::<MiniIndex>::load_with_options(PersistConfig::new(&path), options)
        .err()
        .unwrap_or_else(|| panic!("loaded a foreign index type"));
    assert!(matches!(
        err.root_cause(),
        PersistError::InvalidIndexType { found, expected: "mini" } if found == "hnsw"
    ));
    assert!(err.to_string().contains("x.iqdb"));
    Ok(())
}

/// Every truncation of a small log loads a prefix of its operations; every
/// single-bit flip either loads all of them or is an error.
#[test]
fn every_truncation_and_bit_flip_of_a_small_log_is_a_prefix_or_an_error() -> Result<()> {
    for wal_format in [WalFormat::V1, WalFormat::V2] {
        let d = dir();
        let config = wal_config(d.path());
        let options = Options::new().wal_format(wal_format);
        let mut db =
            PersistedIndex::open_with_options(mini(0, 3), config.clone(), options.clone())?;
        let mut states = vec![db.index().clone()];
        for i in 0..4 {
            let meta = [("k".to_owned(), iqdb_types::Value::String(format!("v{i}")))]
                .into_iter()
                .collect();
            db.insert(VectorId::U64(i), vector(i, 3), Some(meta))?;
            states.push(db.index().clone());
        }
        db.delete(&VectorId::U64(1))?;
        states.push(db.index().clone());
        drop(db);
        let wal = config.wal_path();
        let snap = config.path.clone();
        let log = std::fs::read(&wal).map_err(|e| PersistError::io(&wal, e))?;
        let snapshot = std::fs::read(&snap).map_err(|e| PersistError::io(&snap, e))?;
        let restore = |log_bytes: &[u8]| -> Result<()> {
            std::fs::write(&wal, log_bytes).map_err(|e| PersistError::io(&wal, e))?;
            std::fs::write(&snap, &snapshot).map_err(|e| PersistError::io(&snap, e))
        };
        for cut in 0..log.len() {
            restore(&log[..cut])?;
            let db =
                PersistedIndex::<MiniIndex>::load_with_options(config.clone(), options.clone())
                    .unwrap_or_else(|e| panic!("{wal_format:?} cut {cut}: {e}"));
            assert!(
                states.contains(db.index()),
                "{wal_format:?} cut {cut}: not a prefix state"
            );
        }
        let full = states.last().cloned();
        for bit in 0..log.len() * 8 {
            let mut flipped = log.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            restore(&flipped)?;
            if let Ok(db) =
                PersistedIndex::<MiniIndex>::load_with_options(config.clone(), options.clone())
            {
                assert_eq!(
                    Some(db.index().clone()),
                    full,
                    "{wal_format:?} bit {bit} loaded wrong data"
                );
            }
        }
    }
    Ok(())
}

/// A log shipped frame by frame (as replication does) and rebuilt beside a
/// copy of its snapshot loads to the same state, up to any frame boundary.
#[test]
fn log_frames_rebuild_into_a_loadable_log() -> Result<()> {
    let d = dir();
    let config = wal_config(d.path());
    let mut db = PersistedIndex::open_with(mini(3, 4), config.clone())?;
    let mut states = vec![db.index().clone()];
    for i in 3..9 {
        db.insert(VectorId::U64(i), vector(i, 4), None)?;
        states.push(db.index().clone());
    }
    db.apply(vec![
        Operation::Delete {
            id: VectorId::U64(0),
        },
        Operation::Insert {
            id: VectorId::U64(20),
            vector: vector(20, 4),
            metadata: None,
        },
    ])?;
    states.push(db.index().clone());
    drop(db);
    let fs = crate::storage::StdFileSystem::shared();
    let (header, frames, end) =
        crate::inspect::read_log_frames(fs.as_ref(), &config.wal_path(), 0, u64::MAX)?
            .unwrap_or_else(|| panic!("no log"));
    assert_eq!(frames.len(), 7);
    assert_eq!(
        end,
        std::fs::metadata(config.wal_path())
            .map(|m| m.len())
            .unwrap_or(0)
    );
    // Reading on from the middle returns the rest.
    let (_, rest, _) = crate::inspect::read_log_frames(
        fs.as_ref(),
        &config.wal_path(),
        frames[4].offset,
        u64::MAX,
    )?
    .unwrap_or_else(|| panic!("no log"));
    assert_eq!(rest, frames[4..].to_vec());
    let snapshot = header.snapshot.unwrap_or_else(|| panic!("v2 header"));
    for keep in 0..=frames.len() {
        let other = dir();
        let copy = wal_config(other.path());
        std::fs::copy(&config.path, &copy.path).map_err(|e| PersistError::io(&copy.path, e))?;
        crate::inspect::write_log(
            &fs,
            &copy.wal_path(),
            snapshot,
            header.base_seq,
            &frames[..keep],
        )?;
        let db = PersistedIndex::<MiniIndex>::load(copy)?;
        assert_eq!(db.index(), &states[keep], "first {keep} frames");
    }
    // Frames rebuilt from their bytes (as downloaded) are the same frames,
    // but for the offset; damaged bytes are refused.
    for frame in &frames {
        let rebuilt = crate::inspect::RawFrame::from_bytes(frame.bytes.clone())?;
        assert_eq!(rebuilt.first_seq, frame.first_seq);
        assert_eq!(rebuilt.operations, frame.operations);
        assert_eq!(rebuilt.bytes, frame.bytes);
        assert_eq!(rebuilt.offset, 0);
        let mut damaged = frame.bytes.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(crate::inspect::RawFrame::from_bytes(damaged).is_err());
        assert!(crate::inspect::RawFrame::from_bytes(frame.bytes[..last].to_vec()).is_err());
    }
    // Frames out of order are refused.
    let other = dir();
    let refused = crate::inspect::write_log(
        &fs,
        &other.path().join("x.wal"),
        snapshot,
        header.base_seq,
        &frames[1..],
    );
    assert!(refused.is_err());
    Ok(())
}

/// Found by the CLI's tests: with `Never`, no later frame records that the
/// log was synced, yet a flipped bit mid-log must still be corruption (it
/// shows no sign of a torn write), not a torn tail that drops what follows.
#[test]
fn mid_log_bit_flip_under_never_after_sync_is_corruption() -> Result<()> {
    let d = dir();
    let mut config = wal_config(d.path());
    config.fsync_policy = FsyncPolicy::Never;
    let mut db = PersistedIndex::open_with(mini(0, 4), config.clone())?;
    for i in 0..14 {
        db.insert(VectorId::U64(i), vector(i, 4), None)?;
    }
    db.sync()?;
    drop(db);
    let fs = crate::storage::StdFileSystem;
    let mut offsets = Vec::new();
    crate::inspect::scan_log(&fs, &config.wal_path(), |entry| {
        offsets.push(entry.offset);
        std::ops::ControlFlow::Continue(())
    })?;
    let wal = config.wal_path();
    let mut bytes = std::fs::read(&wal).map_err(|e| PersistError::io(&wal, e))?;
    bytes[offsets[2] as usize + 20] ^= 0x04;
    std::fs::write(&wal, &bytes).map_err(|e| PersistError::io(&wal, e))?;
    let err = PersistedIndex::<MiniIndex>::load(config.clone()).err();
    assert!(
        matches!(
            err.as_ref().map(PersistError::root_cause),
            Some(PersistError::CorruptFrame {
                torn: false,
                valid_frames_after: 11,
                ..
            })
        ),
        "{err:?}"
    );
    // The read-only load agrees with the load.
    let read_only = crate::inspect::load_read_only::<MiniIndex>(&config, &Options::new());
    assert!(read_only.is_err());
    Ok(())
}

/// Found by the CLI's tests: `repair_log` with salvage sets aside a log that
/// follows another snapshot, or whose header is damaged, as a salvage load
/// does; without salvage it refuses.
#[test]
fn repair_sets_aside_unusable_logs_only_when_salvaging() -> Result<()> {
    for damage in ["mismatch", "header"] {
        let d = dir();
        let config = wal_config(d.path());
        let mut db = PersistedIndex::open_with(mini(2, 4), config.clone())?;
        db.insert(VectorId::U64(10), vector(10, 4), None)?;
        drop(db);
        let wal = config.wal_path();
        if damage == "mismatch" {
            // A different snapshot written over the database's.
            PersistedIndex::open_with(mini(5, 4), PersistConfig::new(&config.path))?.save()?;
        } else {
            let mut bytes = std::fs::read(&wal).map_err(|e| PersistError::io(&wal, e))?;
            bytes[20] ^= 1;
            std::fs::write(&wal, &bytes).map_err(|e| PersistError::io(&wal, e))?;
        }
        let before = std::fs::read(&wal).map_err(|e| PersistError::io(&wal, e))?;
        assert!(
            crate::inspect::repair_log(&config, &Options::new(), false).is_err(),
            "{damage}"
        );
        assert_eq!(
            std::fs::read(&wal).ok(),
            Some(before.clone()),
            "{damage}: refused repair changed the log"
        );
        let report = crate::inspect::repair_log(&config, &Options::new(), true)?;
        assert!(report.log_replaced, "{damage}");
        let backup = report.truncated.and_then(|t| t.backup).unwrap_or_default();
        assert_eq!(
            std::fs::read(&backup).ok(),
            Some(before),
            "{damage}: backup differs"
        );
        let db = PersistedIndex::<MiniIndex>::load(config)?;
        let expected = if damage == "mismatch" { 5 } else { 2 };
        assert_eq!(db.index().len(), expected, "{damage}");
    }
    Ok(())
}

#[test]
fn read_only_load_agrees_with_load_on_damaged_intent_and_short_header() -> Result<()> {
    let d = dir();
    let config = wal_config(d.path());
    drop(PersistedIndex::open_with(mini(2, 4), config.clone())?);
    let intent = config.checkpoint_path();
    std::fs::write(&intent, b"garbage").map_err(|e| PersistError::io(&intent, e))?;
    assert!(crate::inspect::load_read_only::<MiniIndex>(&config, &Options::new()).is_err());
    assert!(PersistedIndex::<MiniIndex>::load(config.clone()).is_err());
    std::fs::remove_file(&intent).map_err(|e| PersistError::io(&intent, e))?;
    let wal = config.wal_path();
    std::fs::write(&wal, [0u8, 0]).map_err(|e| PersistError::io(&wal, e))?;
    let strict = Options::new().recovery_mode(RecoveryMode::Strict);
    assert!(crate::inspect::load_read_only::<MiniIndex>(&config, &strict).is_err());
    assert!(PersistedIndex::<MiniIndex>::load_with_options(config, strict).is_err());
    Ok(())
}

/// The store after the inserts of the frames up to and including the one at
/// `frame` (the test's frames each insert `i * 977`, in order).
fn state_through(full: &MiniIndex, offsets: &[u64], frame: u64) -> MiniIndex {
    let kept = offsets.iter().filter(|&&o| o <= frame).count() as u64;
    let mut out = full.clone();
    out.entries
        .retain(|_, (id, _, _)| matches!(id, VectorId::U64(n) if *n / 977 < kept));
    out
}

/// Bit flips in frames whose head straddles a 512-byte sector boundary (where
/// a torn write and a flipped bit are easiest to confuse): every flip of the
/// head and of the first body bytes loads all the data or is an error.
#[test]
fn bit_flips_in_frames_straddling_sector_boundaries_are_never_silent() -> Result<()> {
    for wal_format in [WalFormat::V1, WalFormat::V2] {
        let d = dir();
        let config = wal_config(d.path());
        let options = Options::new().wal_format(wal_format);
        let mut db =
            PersistedIndex::open_with_options(mini(0, 5), config.clone(), options.clone())?;
        for i in 0..300 {
            db.insert(VectorId::U64(i * 977), vector(i, 5), None)?;
        }
        let full = db.index().clone();
        drop(db);
        let mut offsets = Vec::new();
        crate::inspect::scan_log(&crate::storage::StdFileSystem, &config.wal_path(), |e| {
            offsets.push(e.offset);
            std::ops::ControlFlow::Continue(())
        })?;
        let straddling: Vec<u64> = offsets
            .iter()
            .copied()
            .filter(|&o| o / 512 != (o + 7) / 512)
            .take(3)
            .collect();
        assert!(
            !straddling.is_empty(),
            "{wal_format:?}: no frame head straddles a sector"
        );
        let wal = config.wal_path();
        let snap = config.path.clone();
        let log = std::fs::read(&wal).map_err(|e| PersistError::io(&wal, e))?;
        let snapshot = std::fs::read(&snap).map_err(|e| PersistError::io(&snap, e))?;
        for &frame in &straddling {
            // The frame mid-log, and the frame as the log's last.
            let end = offsets
                .iter()
                .copied()
                .find(|&o| o > frame)
                .unwrap_or(log.len() as u64);
            for (cut, expected) in [
                (log.len(), full.clone()),
                (end as usize, state_through(&full, &offsets, frame)),
            ] {
                for byte in frame..(frame + 40).min(cut as u64) {
                    for bit in 0..8 {
                        let mut flipped = log[..cut].to_vec();
                        flipped[byte as usize] ^= 1 << bit;
                        std::fs::write(&wal, &flipped).map_err(|e| PersistError::io(&wal, e))?;
                        std::fs::write(&snap, &snapshot).map_err(|e| PersistError::io(&snap, e))?;
                        if let Ok(db) = PersistedIndex::<MiniIndex>::load_with_options(
                            config.clone(),
                            options.clone(),
                        ) {
                            assert_eq!(
                                db.index(),
                                &expected,
                                "{wal_format:?}: byte {byte} bit {bit} (frame at {frame}, log cut at {cut}) lost data silently"
                            );
                        }
                    }
                }
            }
        }
    }
    Ok(())
}
