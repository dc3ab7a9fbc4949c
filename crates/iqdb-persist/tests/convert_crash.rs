//! `convert` and `convert_files` under simulated power loss: a crash at
//! every mutating file operation of a conversion, and every disk image that
//! crash could leave, must load with every acknowledged write, and leave the
//! database in either the old formats or the new ones (the load finishes or
//! abandons the conversion's checkpoint), and a conversion run again
//! afterwards must finish.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use iqdb_persist::format_policy::{convert, convert_files};
use iqdb_persist::{FormatPolicy, Options, PersistConfig, PersistedIndex};
use iqdb_persist_testkit::simfs::SimFs;
use iqdb_persist_testkit::{VectorStore, generate};
use iqdb_types::DistanceMetric;

const DIM: usize = 4;

fn config() -> PersistConfig {
    let mut config = PersistConfig::new(PathBuf::from("/db/vectors.iqdb"));
    config.wal_enabled = true;
    config
}

fn options(fs: &SimFs) -> Options {
    Options::new()
        .file_system(Arc::new(fs.clone()))
        .chunk_size(4096)
        .compression_threads(1)
}

/// A database in the latest formats: 30 records in its snapshot, and 10
/// more in its log unless `checkpointed`. Returns its durable image and the
/// expected store.
fn database(checkpointed: bool) -> (SimFs, VectorStore) {
    let fs = SimFs::new();
    let store = generate::store(1, 30, DIM, DistanceMetric::Euclidean);
    let mut expected = store.clone();
    let mut db = PersistedIndex::open_with_options(store, config(), options(&fs)).unwrap();
    for (id, v, m) in generate::records(2, 30..40, DIM) {
        iqdb_index::IndexCore::insert(&mut expected, id.clone(), v.clone(), m.clone()).unwrap();
        db.insert(id, v, m).unwrap();
    }
    if checkpointed {
        db.checkpoint().unwrap();
    }
    drop(db);
    (fs.durable_image(), expected)
}

fn versions(fs: &SimFs) -> (u32, Option<u32>) {
    let config = config();
    let snapshot = iqdb_persist::inspect::snapshot_info(fs, &config.path, false)
        .unwrap()
        .header
        .version;
    let log = iqdb_persist::inspect::scan_log(fs, &config.wal_path(), |_| {
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    (snapshot, log.and_then(|l| l.version))
}

fn check_every_crash_point(
    checkpointed: bool,
    run: impl Fn(&SimFs) -> iqdb_persist::Result<()>,
    what: &str,
) {
    let (base, expected) = database(checkpointed);
    let clean = base.durable_image();
    let start = clean.operation_count();
    run(&clean).unwrap_or_else(|e| panic!("{what} without a crash: {e}"));
    let ops = clean.operation_count() - start;
    assert!(ops > 3, "{what}: only {ops} operations");
    assert_eq!(versions(&clean.durable_image()), (2, Some(1)), "{what}");
    for k in 0..ops {
        let fs = base.durable_image();
        fs.crash_after(fs.operation_count() + k);
        let result = run(&fs);
        assert!(
            fs.has_crashed(),
            "{what}: no crash at {k} ({:?})",
            result.err()
        );
        for (i, image) in fs.crash_images(k, 4).into_iter().enumerate() {
            let context = format!("{what}: crash after operation {k}, image {i}");
            let db = PersistedIndex::<VectorStore>::load_with_options(config(), options(&image))
                .unwrap_or_else(|e| panic!("{context}: load: {e}"));
            assert_eq!(db.index(), &expected, "{context}: records");
            drop(db);
            // The load finished or abandoned the conversion's checkpoint.
            let formats = versions(&image);
            assert!(
                formats == (3, Some(2)) || formats == (2, Some(1)),
                "{context}: formats after the load {formats:?}"
            );
            // Converting again finishes the job.
            run(&image).unwrap_or_else(|e| panic!("{context}: second run: {e}"));
            assert_eq!(versions(&image), (2, Some(1)), "{context}: second run");
            let db = PersistedIndex::<VectorStore>::load_with_options(config(), options(&image))
                .unwrap_or_else(|e| panic!("{context}: load after the second run: {e}"));
            assert_eq!(
                db.index(),
                &expected,
                "{context}: records after the second run"
            );
        }
    }
}

#[test]
fn convert_survives_a_crash_at_every_operation() {
    check_every_crash_point(
        false,
        |fs| convert::<VectorStore>(&config(), FormatPolicy::Compat, options(fs), false).map(drop),
        "convert (log folded)",
    );
}

#[test]
fn convert_files_survives_a_crash_at_every_operation() {
    check_every_crash_point(
        true,
        |fs| convert_files(&config(), FormatPolicy::Compat, options(fs), false).map(drop),
        "convert_files",
    );
}
