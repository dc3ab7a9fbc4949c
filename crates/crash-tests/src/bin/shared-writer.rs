//! The process the concurrent kill -9 test kills: it loads (or creates) a
//! database in WAL mode with `FsyncPolicy::Always`, shares it, and runs four
//! writer threads forever. Threads 0 and 2 (and 1 and 3) insert the same
//! ids, each with its own vector, so one of each pair is rejected. Each
//! thread prints `A <id> <thread>` once its insert returned Ok and
//! `E <id> <thread>` once it returned an error. Every `A` must survive the
//! kill bit for bit; no `E` may appear.
//!
//! Usage: `shared-writer DIR ROUND v1|v2`

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use iqdb_index::Index;
use iqdb_persist::{
    FsyncPolicy, Options, PersistConfig, PersistedIndex, SnapshotFormat, WalFormat,
};
use iqdb_persist_testkit::VectorStore;
use iqdb_types::{DistanceMetric, VectorId};

/// The vector thread `thread` inserts under `id` (the test recomputes it).
fn vector(id: u64, thread: u64) -> Arc<[f32]> {
    Arc::from(vec![
        id as f32,
        thread as f32 + 0.25,
        (id % 97) as f32,
        -1.0,
    ])
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(Ok(round)), Some(format)) = (
        args.get(1),
        args.get(2).map(|r| r.parse::<u64>()),
        args.get(3),
    ) else {
        eprintln!("usage: shared-writer DIR ROUND v1|v2");
        return ExitCode::from(2);
    };
    let config = PersistConfig {
        path: PathBuf::from(dir).join("db.iqdb"),
        wal_enabled: true,
        fsync_policy: FsyncPolicy::Always,
        compression: iqdb_persist::Compression::None,
    };
    let options = if format == "v1" {
        Options::compat_1_0()
    } else {
        Options::new()
            .snapshot_format(SnapshotFormat::V3)
            .wal_format(WalFormat::V2)
    };
    let opened = if config.path.exists() {
        PersistedIndex::<VectorStore>::load_with_options(config, options)
    } else {
        VectorStore::new(4, DistanceMetric::Euclidean, Default::default())
            .map_err(iqdb_persist::PersistError::from)
            .and_then(|store| PersistedIndex::open_with_options(store, config, options))
    };
    let db = match opened {
        Ok(db) => db.into_shared(),
        Err(e) => {
            eprintln!("shared-writer: open: {e}");
            return ExitCode::from(3);
        }
    };
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let db = db.clone();
            s.spawn(move || {
                for k in 0.. {
                    let id = round * 1_000_000 + k * 2 + t % 2;
                    let tag = match db.insert(VectorId::from(id), vector(id, t), None) {
                        Ok(()) => 'A',
                        Err(_) => 'E',
                    };
                    let mut out = std::io::stdout().lock();
                    if writeln!(out, "{tag} {id} {t}")
                        .and_then(|()| out.flush())
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    ExitCode::SUCCESS
}
