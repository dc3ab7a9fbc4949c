//! Opens a new WAL-mode database under `FsyncPolicy::Periodic` in `DIR` and
//! inserts one record, then exits 0; prints the error and exits 3 if that
//! fails. The chained-fault tests run it with `RUST_MIN_STACK` so large that
//! no thread can start, to check that a flusher that cannot be started is an
//! error rather than a policy silently degraded to sync-on-drop.
//!
//! Usage: `periodic-open DIR`

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use iqdb_index::Index;
use iqdb_persist::{FsyncPolicy, Options, PersistConfig, PersistedIndex, SnapshotFormat};
use iqdb_persist_crash_tests::{DIM, record};
use iqdb_persist_testkit::VectorStore;
use iqdb_types::DistanceMetric;

fn main() -> ExitCode {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: periodic-open DIR");
        return ExitCode::from(2);
    };
    let config = PersistConfig {
        path: PathBuf::from(dir).join("db.iqdb"),
        wal_enabled: true,
        fsync_policy: FsyncPolicy::Periodic(Duration::from_millis(50)),
        compression: iqdb_persist::Compression::None,
    };
    // One thread for everything else, so the flusher is the first to start.
    let options = Options::new()
        .snapshot_format(SnapshotFormat::V2)
        .compression_threads(1);
    let opened = VectorStore::new(DIM, DistanceMetric::Euclidean, Default::default())
        .map_err(iqdb_persist::PersistError::from)
        .and_then(|store| PersistedIndex::open_with_options(store, config, options));
    let result = opened.and_then(|mut db| {
        let (id, vector, metadata) = record(0);
        db.insert(id, vector, metadata)?;
        db.close()
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("periodic-open: {e}");
            ExitCode::from(3)
        }
    }
}
