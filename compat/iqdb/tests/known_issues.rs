//! Failing checks for known problems in our iqdb-persist, kept `#[ignore]`d
//! so the suite stays green; run them with
//! `CARGO_TARGET_DIR=../../target cargo test --locked -- --ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;

use iqdb::{DistanceMetric, Iqdb, Vector, VectorId};

/// iqdb 1.0's own test suite (tests/recovery.rs) appends 13 bytes of 0xAB
/// to the log after two acknowledged upserts, as a torn write, and expects
/// the reopen to drop them and keep both records. Over ours the reopen
/// fails: the junk's first four bytes read as a frame length above the
/// 256 MiB cap, and an out-of-range length in the last frame is classified
/// as corruption, although docs/FORMAT.md ("Damage") calls a frame the file
/// ends inside, whose CRC does not match the rest of the file, a torn tail.
#[test]
#[ignore = "bug in iqdb-persist: an out-of-range length in a tail frame is classified as corruption (wal/reader.rs classify)"]
fn junk_after_the_last_frame_is_dropped_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.iqdb");
    let db = Iqdb::open(&path, 2, DistanceMetric::Cosine).unwrap();
    db.upsert(
        VectorId::from(1u64),
        Vector::new(vec![0.1, 0.2]).unwrap(),
        None,
    )
    .unwrap();
    db.upsert(
        VectorId::from(2u64),
        Vector::new(vec![0.3, 0.4]).unwrap(),
        None,
    )
    .unwrap();
    drop(db);
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("db.iqdb.wal"))
        .unwrap();
    log.write_all(&[0xAB; 13]).unwrap();
    drop(log);

    let db = Iqdb::open(&path, 2, DistanceMetric::Cosine)
        .unwrap_or_else(|e| panic!("reopen after a junk tail: {e}"));
    assert_eq!(db.len(), 2, "both acknowledged upserts survive");
    db.upsert(
        VectorId::from(3u64),
        Vector::new(vec![0.5, 0.6]).unwrap(),
        None,
    )
    .unwrap();
    db.close().unwrap();
    assert_eq!(
        Iqdb::open(&path, 2, DistanceMetric::Cosine).unwrap().len(),
        3
    );
}
