//! Durable writes with the write-ahead log, and recovery after a crash.
//!
//! 1. Create a WAL-mode database and insert and delete through it: each
//!    write is logged and fsynced before it is applied.
//! 2. "Crash": drop the handle without a checkpoint, then leave a torn,
//!    half-written frame at the end of the log, as a kill -9 during a write
//!    can.
//! 3. Reload: the snapshot plus the replayed log give back every
//!    acknowledged write; the torn tail is cut off and reported.
//! 4. Checkpoint: the log is folded into a new snapshot and starts empty;
//!    a reload replays nothing and has the same state.
//!
//! Every state is compared with a plain in-memory copy that received the
//! same writes; the example exits non-zero on any mismatch.
//!
//! ```sh
//! cargo run -p iqdb-persist --example wal_recovery
//! ```

use std::error::Error;
use std::io::Write;

use iqdb_index::{Index, IndexCore};
use iqdb_persist::{PersistConfig, PersistedIndex};
use iqdb_persist_testkit::{VectorStore, generate};
use iqdb_types::DistanceMetric;

const DIM: usize = 8;

fn check(what: &str, found: &VectorStore, expected: &VectorStore) -> Result<(), Box<dyn Error>> {
    if found == expected {
        println!("  {what}: {} vectors, as expected", found.len());
        Ok(())
    } else {
        Err(format!(
            "{what}: state differs from the expected one ({} vectors, expected {})",
            found.len(),
            expected.len()
        )
        .into())
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let mut config = PersistConfig::new(dir.path().join("vectors.iqdb"));
    config.wal_enabled = true;
    let wal_path = config.wal_path();

    // The expected state: a plain store that gets the same writes.
    let mut expected = VectorStore::new(DIM, DistanceMetric::Euclidean, Default::default())?;

    // 1. Create (writes an empty base snapshot and an empty log), then write.
    println!("session 1: create, insert 300, delete 100, no checkpoint");
    let index = VectorStore::new(DIM, DistanceMetric::Euclidean, Default::default())?;
    let mut db = PersistedIndex::open_with(index, config.clone())?;
    for (id, vector, metadata) in generate::records(1, 0..300, DIM) {
        db.insert(id.clone(), vector.clone(), metadata.clone())?;
        expected.insert(id, vector, metadata)?;
    }
    for i in (0..300).step_by(3) {
        db.delete(&generate::id(i))?;
        expected.delete(&generate::id(i))?;
    }
    check("in memory", db.index(), &expected)?;

    // 2. Crash: no checkpoint, and a torn frame at the end of the log (the
    //    first 6 bytes of a frame head, as a kill -9 mid-write can leave).
    drop(db);
    let log_len = std::fs::metadata(&wal_path)?.len();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&wal_path)?
        .write_all(&[0x40, 0, 0, 0, 0x9c, 0x1f])?;
    println!("crash: handle dropped; log is {log_len} bytes plus a 6-byte torn frame");

    // 3. Recover.
    println!("session 2: load");
    let mut db = PersistedIndex::<VectorStore>::load(config.clone())?;
    let report = db.recovery_report();
    println!(
        "  replayed {} operations from log v{}; torn tail cut: {}",
        report.operations_applied,
        report.wal_version.unwrap_or(0),
        report
            .truncated
            .as_ref()
            .map_or("none".to_string(), |t| format!(
                "{} bytes at offset {}",
                t.bytes, t.offset
            )),
    );
    if report.operations_applied != 400 || report.truncated.is_none() {
        return Err("expected 400 replayed operations and a cut torn tail".into());
    }
    check("recovered", db.index(), &expected)?;

    // Writes go on after recovery, appended after the last valid frame.
    for (id, vector, metadata) in generate::records(2, 300..320, DIM) {
        db.insert(id.clone(), vector.clone(), metadata.clone())?;
        expected.insert(id, vector, metadata)?;
    }

    // 4. Checkpoint: new snapshot, empty log.
    let before = std::fs::metadata(&wal_path)?.len();
    db.checkpoint()?;
    let after = std::fs::metadata(&wal_path)?.len();
    println!("checkpoint: log {before} -> {after} bytes");
    drop(db);

    println!("session 3: load after the checkpoint");
    let db = PersistedIndex::<VectorStore>::load(config)?;
    if db.recovery_report().operations_applied != 0 {
        return Err("the log should be empty after a checkpoint".into());
    }
    check("reloaded", db.index(), &expected)?;
    println!("ok: every acknowledged write survived the crash and the checkpoint");
    Ok(())
}
