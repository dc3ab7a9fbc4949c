//! Batches, explicit syncs, `Options`, and the recovery report.
//!
//! * `apply` and the `batch()` builder log many writes as one frame with
//!   one fsync; with the default log format a batch is atomic across a
//!   crash. A batch stops at its first rejected operation and says how many
//!   were applied.
//! * Under `FsyncPolicy::Never` writes are acknowledged before they are
//!   durable; `sync()` makes everything so far durable at once.
//! * `Options` chooses formats and the recovery mode (`compat_1_0()` writes
//!   files iqdb-persist 1.0 reads).
//! * `recovery_report()` tells what a load found and did.
//!
//! The state after every reload is compared with a plain in-memory copy;
//! the example exits non-zero on any mismatch.
//!
//! ```sh
//! cargo run -p iqdb-persist --example batch_and_checkpoint
//! ```

use std::error::Error;
use std::sync::Arc;

use iqdb_index::{Index, IndexCore};
use iqdb_persist::{
    FsyncPolicy, Operation, Options, PersistConfig, PersistError, PersistedIndex, RecoveryMode,
};
use iqdb_persist_testkit::{VectorStore, generate};
use iqdb_types::{DistanceMetric, VectorId};

const DIM: usize = 4;

fn ensure(ok: bool, what: &str) -> Result<(), Box<dyn Error>> {
    if ok {
        println!("  ok: {what}");
        Ok(())
    } else {
        Err(format!("failed: {what}").into())
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let mut config = PersistConfig::new(dir.path().join("batched.iqdb"));
    config.wal_enabled = true;
    config.fsync_policy = FsyncPolicy::Never; // durability through sync()
    let options = Options::new().recovery_mode(RecoveryMode::TolerateTornTail);
    let mut expected = VectorStore::new(DIM, DistanceMetric::DotProduct, Default::default())?;

    let index = VectorStore::new(DIM, DistanceMetric::DotProduct, Default::default())?;
    let mut db = PersistedIndex::open_with_options(index, config.clone(), options.clone())?;
    println!(
        "created: snapshot format {:?}, log format {:?}, next sequence {:?}",
        options.get_snapshot_format(),
        options.get_wal_format(),
        db.next_sequence()
    );

    // One `apply` of 500 inserts: one frame, one write.
    let ops: Vec<Operation> = generate::records(1, 0..500, DIM)
        .map(|(id, vector, metadata)| Operation::Insert {
            id,
            vector,
            metadata,
        })
        .collect();
    for (id, vector, metadata) in generate::records(1, 0..500, DIM) {
        expected.insert(id, vector, metadata)?;
    }
    db.apply(ops)?;
    println!("apply: 500 inserts in one batch");

    // The builder: deletes and updates (delete + insert of the same id).
    let mut batch = db.batch();
    for i in (0..500).step_by(5) {
        batch.delete(generate::id(i));
        expected.delete(&generate::id(i))?;
    }
    for i in (0..500).step_by(10) {
        let (id, vector, metadata) = generate::record(2, i, DIM);
        batch.insert(id.clone(), vector.clone(), metadata.clone());
        expected.insert(id, vector, metadata)?;
    }
    let size = batch.len();
    batch.commit()?;
    println!("batch(): {size} operations committed");

    // A batch that hits a rejected operation stops there.
    let mut batch = db.batch();
    batch.insert(VectorId::from(10_000u64), Arc::from(vec![1.0; DIM]), None);
    batch.delete(VectorId::from(424_242u64)); // absent: rejected
    batch.insert(VectorId::from(10_001u64), Arc::from(vec![2.0; DIM]), None);
    match batch.commit() {
        Err(PersistError::Batch { applied, source }) => {
            println!("a batch with an absent delete: stopped after {applied} ({source})");
            ensure(
                applied == 1,
                "the operation before the rejected one is applied",
            )?;
            expected.insert(VectorId::from(10_000u64), Arc::from(vec![1.0; DIM]), None)?;
        }
        other => return Err(format!("expected a Batch error, got {other:?}").into()),
    }

    // Under FsyncPolicy::Never, sync() is the durability point.
    db.sync()?;
    println!("sync: everything written so far is durable");
    ensure(db.index() == &expected, "in-memory state")?;
    drop(db);

    let db = PersistedIndex::<VectorStore>::load_with_options(config.clone(), options.clone())?;
    let report = db.recovery_report().clone();
    println!("reload: {report:#?}");
    ensure(db.index() == &expected, "reloaded state matches")?;
    ensure(report.frames_replayed == 3, "one log frame per batch")?;
    ensure(
        report.operations_applied == 500 + 150 + 1,
        "every acknowledged operation replayed",
    )?;
    ensure(
        report.operations_rejected == 2,
        "the third batch stops at its rejected operation again, as it did live",
    )?;

    // A checkpoint folds the log into the snapshot.
    let mut db = db;
    db.checkpoint()?;
    drop(db);
    let db = PersistedIndex::<VectorStore>::load_with_options(config, options)?;
    let report = db.recovery_report();
    println!(
        "after checkpoint: snapshot v{}, {} operations replayed, next sequence {:?}",
        report.snapshot_version,
        report.operations_applied,
        db.next_sequence()
    );
    ensure(report.operations_applied == 0, "nothing left to replay")?;
    ensure(db.index() == &expected, "checkpointed state matches")?;
    println!("ok");
    Ok(())
}
