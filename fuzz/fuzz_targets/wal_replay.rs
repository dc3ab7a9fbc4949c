//! Any bytes as the write-ahead log beside a valid snapshot: loading in
//! every recovery mode, the read-only replay and the log scan must return Ok
//! or a typed error, never panic or hang.
#![no_main]

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use iqdb_persist::{Options, PersistConfig, PersistedIndex, RecoveryMode, inspect};
use iqdb_persist_testkit::VectorStore;
use iqdb_persist_testkit::generate;
use iqdb_persist_testkit::simfs::SimFs;
use iqdb_types::DistanceMetric;
use libfuzzer_sys::fuzz_target;

/// A small valid database (snapshot v3 and v2), made once.
fn snapshots() -> &'static [(Vec<u8>, &'static str)] {
    static SNAPSHOTS: OnceLock<Vec<(Vec<u8>, &'static str)>> = OnceLock::new();
    SNAPSHOTS.get_or_init(|| {
        let mut out = Vec::new();
        for (options, name) in [(Options::new(), "v3"), (Options::compat_1_0(), "v2")] {
            let fs = SimFs::new();
            let mut config = PersistConfig::new("/db/fuzz.iqdb");
            config.wal_enabled = true;
            let store = generate::store(1, 4, 3, DistanceMetric::Cosine);
            let options = options.file_system(Arc::new(fs.clone()));
            if let Ok(db) = PersistedIndex::open_with_options(store, config.clone(), options) {
                drop(db);
            }
            out.push((fs.read_live(&config.path).unwrap_or_default(), name));
        }
        out
    })
}

fuzz_target!(|data: &[u8]| {
    for (snapshot, _) in snapshots() {
        for mode in [
            RecoveryMode::TolerateTornTail,
            RecoveryMode::Strict,
            RecoveryMode::Salvage,
        ] {
            let fs = SimFs::new();
            let mut config = PersistConfig::new("/db/fuzz.iqdb");
            config.wal_enabled = true;
            fs.put_durable(&config.path, snapshot);
            fs.put_durable(&config.wal_path(), data);
            let options = Options::new()
                .file_system(Arc::new(fs.clone()))
                .recovery_mode(mode);
            let _ = inspect::load_read_only::<VectorStore>(&config, &options);
            let _ = inspect::scan_log(&fs, Path::new("/db/fuzz.iqdb.wal"), |_| {
                ControlFlow::Continue(())
            });
            if let Ok(mut db) =
                PersistedIndex::<VectorStore>::load_with_options(config.clone(), options.clone())
            {
                // What recovery left must take writes and load again.
                let (id, vector, metadata) = generate::record(9, 1 << 40, 3);
                let _ = db.insert(id, vector, metadata);
                drop(db);
                let again = PersistedIndex::<VectorStore>::load_with_options(config, options);
                assert!(
                    again.is_ok(),
                    "a database recovered once failed to load again: {:?}",
                    again.err()
                );
            }
        }
    }
});
