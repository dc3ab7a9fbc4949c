//! The process the kill -9 test kills: it opens (or creates) a database in
//! WAL mode with `FsyncPolicy::Always` and runs a seeded workload forever,
//! printing each step before it starts (`B <step>`) and how it ended once the
//! call returned (`A` acknowledged, `J` rejected by the index, `S <n>` batch
//! stopped after `n`). Whatever it printed `A` for must survive the kill.
//!
//! Usage: `crash-writer DIR SEED FIRST_RECORD v1|v2`

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use iqdb_index::Index;
use iqdb_persist::{
    FsyncPolicy, Options, PersistConfig, PersistedIndex, SnapshotFormat, WalFormat,
};
use iqdb_persist_crash_tests::{DIM, Outcome, Workload, apply_outcome, execute, store_model};
use iqdb_persist_testkit::VectorStore;
use iqdb_types::DistanceMetric;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: crash-writer DIR SEED FIRST_RECORD v1|v2");
        return ExitCode::from(2);
    }
    let (Ok(seed), Ok(first)) = (args[2].parse::<u64>(), args[3].parse::<u64>()) else {
        eprintln!("crash-writer: SEED and FIRST_RECORD must be numbers");
        return ExitCode::from(2);
    };
    let config = PersistConfig {
        path: PathBuf::from(&args[1]).join("db.iqdb"),
        wal_enabled: true,
        fsync_policy: FsyncPolicy::Always,
        compression: iqdb_persist::Compression::None,
    };
    // Explicit formats: a database keeps the formats it has unless told
    // otherwise, and the kill -9 loop alternates them on one database.
    let options = if args[4] == "v1" {
        Options::compat_1_0()
    } else {
        Options::new()
            .snapshot_format(SnapshotFormat::V3)
            .wal_format(WalFormat::V2)
    };
    let opened = if config.path.exists() {
        PersistedIndex::<VectorStore>::load_with_options(config, options)
    } else {
        VectorStore::new(DIM, DistanceMetric::Euclidean, Default::default())
            .map_err(iqdb_persist::PersistError::from)
            .and_then(|store| PersistedIndex::open_with_options(store, config, options))
    };
    let mut db = match opened {
        Ok(db) => db,
        Err(e) => {
            eprintln!("crash-writer: open: {e}");
            return ExitCode::from(3);
        }
    };
    let mut model = match store_model(db.index()) {
        Ok(model) => model,
        Err(e) => {
            eprintln!("crash-writer: loaded state is wrong: {e}");
            return ExitCode::from(4);
        }
    };
    let mut workload = Workload::new(seed, first);
    workload.reopens = false;
    let mut out = std::io::stdout().lock();
    loop {
        let step = workload.next_step(&model);
        if writeln!(out, "B {}", step.encode())
            .and_then(|()| out.flush())
            .is_err()
        {
            return ExitCode::from(5);
        }
        let outcome = execute(&mut db, &step);
        let line = match &outcome {
            Outcome::Ok => "A".to_owned(),
            Outcome::Rejected => "J".to_owned(),
            Outcome::Stopped(n) => format!("S {n}"),
            Outcome::Failed(e) => {
                eprintln!("crash-writer: {step:?} failed: {e}");
                return ExitCode::from(6);
            }
        };
        model = match apply_outcome(&model, &step, &outcome) {
            Ok(model) => model,
            Err(e) => {
                eprintln!("crash-writer: {e}");
                return ExitCode::from(4);
            }
        };
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return ExitCode::from(5);
        }
    }
}
