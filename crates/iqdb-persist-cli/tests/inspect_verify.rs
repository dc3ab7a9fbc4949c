//! `inspect` and `verify` on healthy, compat, torn, bit-flipped, truncated
//! and foreign files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{cli, flip_byte, json, stdout, truncate, wal_db};
use iqdb_persist::Options;

#[test]
fn inspect_healthy_database() {
    let db = wal_db(Options::default());
    let out = cli().args(["inspect", db.path_str()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    for want in [
        "format               v3",
        "iqdb-testkit-vector-store",
        "dimension            8",
        "metric               Euclidean",
        &format!("vectors              {}", common::BASE),
        "compression          none",
        "chunks",
        "last sequence        0",
        "fingerprint",
        "format               v2",
        "base sequence        1",
        &format!("frames               {} (1 batch frame(s))", db.frames),
        "15 insert(s), 4 delete(s)",
        "damage               none",
        "belongs to snapshot  yes",
        "Checkpoint intent: none",
        "Temporary files: none",
        "Status: healthy (exit code 0)",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

#[test]
fn inspect_json_is_one_document_with_the_facts() {
    let db = common::wal_db_with(
        Options::default(),
        iqdb_persist::Compression::Zstd { level: 3 },
    );
    let out = cli()
        .args(["inspect", db.path_str(), "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v = json(&out.stdout);
    assert_eq!(v["snapshot"]["format_version"], 3);
    assert_eq!(v["snapshot"]["vectors"], common::BASE);
    assert_eq!(v["snapshot"]["dim"], 8);
    assert_eq!(v["snapshot"]["compression"], "zstd");
    assert!(v["snapshot"]["compression_ratio"].as_f64().unwrap() > 0.5);
    assert_eq!(v["snapshot"]["file_bytes"], common::file_len(&db.path));
    assert!(v["snapshot"]["chunks"].as_u64().unwrap() >= 1);
    assert_eq!(v["log"]["format_version"], 2);
    assert_eq!(v["log"]["frames"], db.frames);
    assert_eq!(v["log"]["batches"], 1);
    assert_eq!(v["log"]["inserts"], db.inserts);
    assert_eq!(v["log"]["deletes"], db.deletes);
    assert_eq!(v["log"]["valid_bytes"], common::file_len(&db.wal));
    assert_eq!(v["log"]["follows_snapshot"], true);
    assert_eq!(v["log"]["damage"], serde_json::Value::Null);
    assert_eq!(v["checkpoint_pending"], false);
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0);
}

#[test]
fn verify_healthy_database_decodes_and_replays() {
    let db = wal_db(Options::default());
    let out = cli().args(["verify", db.path_str()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("checksums            all verified"), "{text}");
    assert!(
        text.contains(&format!("vectors              {}", db.vectors)),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{} frame(s): 19 operation(s) applied, 0 rejected",
            db.frames
        )),
        "{text}"
    );
    assert!(text.contains("Status: healthy (exit code 0)"), "{text}");

    let out = cli()
        .args(["verify", db.path_str(), "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v = json(&out.stdout);
    assert_eq!(v["healthy"], true);
    assert_eq!(v["index"]["vectors"], db.vectors);
    assert_eq!(v["index"]["replay"]["frames_replayed"], db.frames);
    assert_eq!(v["index"]["replay"]["operations_applied"], 19);
    assert!(v["index"]["details"]["with metadata"].is_string());
}

#[test]
fn compat_1_0_files_inspect_and_verify() {
    let db = wal_db(Options::compat_1_0());
    let out = cli()
        .args(["verify", db.path_str(), "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v = json(&out.stdout);
    assert_eq!(v["snapshot"]["format_version"], 2);
    assert_eq!(v["snapshot"]["chunks"], serde_json::Value::Null);
    assert_eq!(v["log"]["format_version"], 1);
    assert_eq!(v["log"]["frames"], db.frames);
    assert_eq!(v["log"]["batches"], 0);
    assert_eq!(v["log"]["follows_snapshot"], serde_json::Value::Null);
    assert_eq!(v["index"]["vectors"], db.vectors);
    let codes: Vec<&str> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["log-v1"]);

    let out = cli().args(["inspect", db.path_str()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.contains("format               v2"), "{text}");
    assert!(text.contains("format               v1"), "{text}");
    assert!(
        text.contains("unknown (v1 logs record no fingerprint)"),
        "{text}"
    );
}

#[test]
fn a_torn_tail_is_a_warning_not_corruption() {
    let db = wal_db(Options::default());
    let (frames, info) = db.frames();
    let last = frames.last().unwrap();
    truncate(&db.wal, last.offset + last.len - 5);

    for sub in ["inspect", "verify"] {
        let out = cli().args([sub, db.path_str()]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{sub}: {out:?}");
        let text = stdout(&out);
        assert!(text.contains("WARNING"), "{text}");
        assert!(
            text.contains(&format!("at byte {}: torn tail", last.offset)),
            "{text}"
        );
        assert!(
            text.contains("Not corruption: the next open truncates it"),
            "{text}"
        );
        assert!(text.contains("healthy, with warnings"), "{text}");
    }
    let out = cli()
        .args(["verify", db.path_str(), "--json"])
        .output()
        .unwrap();
    let v = json(&out.stdout);
    assert_eq!(v["log"]["damage"]["kind"], "torn");
    assert_eq!(v["log"]["damage"]["offset"], last.offset);
    assert_eq!(v["log"]["frames"], info.frames - 1);
    assert_eq!(v["index"]["replay"]["frames_replayed"], info.frames - 1);
    assert_eq!(v["healthy"], true);

    let out = cli()
        .args(["verify", db.path_str(), "--strict"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // Nothing was changed by looking.
    assert_eq!(common::file_len(&db.wal), last.offset + last.len - 5);
}

#[test]
fn a_bit_flipped_log_frame_is_corruption_with_its_offset() {
    let db = wal_db(Options::default());
    let (frames, _) = db.frames();
    let victim = &frames[2];
    flip_byte(&db.wal, victim.offset + 20);
    for sub in ["inspect", "verify"] {
        let out = cli().args([sub, db.path_str()]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{sub}: {out:?}");
        let text = stdout(&out);
        assert!(text.contains("ERROR"), "{text}");
        assert!(
            text.contains(&format!("at byte {}: corrupt frame", victim.offset)),
            "{text}"
        );
        assert!(text.contains("repair --salvage"), "{text}");
        assert!(text.contains("Status: CORRUPT (exit code 1)"), "{text}");
    }
    let out = cli()
        .args(["verify", db.path_str(), "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out.stdout);
    assert_eq!(v["healthy"], false);
    let p = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["code"] == "corrupt-frame")
        .unwrap();
    assert_eq!(p["offset"], victim.offset);
    assert_eq!(p["file"], db.wal.to_str().unwrap());
    assert_eq!(p["severity"], "error");
    assert_eq!(v["log"]["damage"]["valid_frames_after"], db.frames - 3);
    // The read-only replay covers the intact prefix.
    assert_eq!(v["index"]["replay"]["frames_replayed"], 2);
}

#[test]
fn a_bit_flipped_snapshot_payload_fails_verify_with_file_and_offset() {
    let db = wal_db(Options::default());
    let len = common::file_len(&db.path);
    flip_byte(&db.path, len - 100);
    // The header is intact: inspect reads only the header.
    let out = cli().args(["inspect", db.path_str()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    let out = cli()
        .args(["verify", db.path_str(), "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let v = json(&out.stdout);
    assert_eq!(v["snapshot_verified"], false);
    let p = &v["problems"][0];
    assert_eq!(p["code"], "snapshot");
    assert_eq!(p["file"], db.path.to_str().unwrap());
    assert!(p["offset"].is_u64(), "{p}");
    assert!(p["message"].as_str().unwrap().contains("checksum"), "{p}");

    let out = cli().args(["verify", db.path_str()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("FAILED verification"));
}

#[test]
fn a_bit_flipped_snapshot_header_fails_inspect_too() {
    let db = wal_db(Options::default());
    flip_byte(&db.path, 30); // dim, inside the v3 header checksum
    for sub in ["inspect", "verify"] {
        let out = cli().args([sub, db.path_str()]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{sub}: {out:?}");
        assert!(
            stdout(&out).contains("checksum mismatch"),
            "{}",
            stdout(&out)
        );
    }
}

#[test]
fn a_bit_flipped_v2_snapshot_fails_verify() {
    let db = wal_db(Options::compat_1_0());
    let len = common::file_len(&db.path);
    flip_byte(&db.path, len - 10);
    let out = cli().args(["verify", db.path_str()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stdout(&out).contains("checksum mismatch"));
}

#[test]
fn a_truncated_snapshot_is_corruption() {
    let db = wal_db(Options::default());
    let len = common::file_len(&db.path);
    truncate(&db.path, len / 2);
    for sub in ["inspect", "verify"] {
        let out = cli().args([sub, db.path_str()]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{sub}: {out:?}");
        assert!(
            stdout(&out).contains("ends inside its payload"),
            "{}",
            stdout(&out)
        );
    }
    truncate(&db.path, 10);
    let out = cli().args(["inspect", db.path_str()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("ends inside its header"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_file_that_is_not_a_snapshot_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junk.iqdb");
    std::fs::write(&path, b"hello, this is not a database at all").unwrap();
    let out = cli()
        .args(["verify", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stdout(&out).contains("bad magic"));
}

#[test]
fn a_foreign_index_type_is_verified_but_not_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.iqdb");
    common::foreign_snapshot(
        &path,
        "acme-hnsw",
        b"some payload the CLI does not understand",
    );
    let out = cli()
        .args(["verify", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("index type           acme-hnsw"), "{text}");
    assert!(
        text.contains("no loader is registered for index type \"acme-hnsw\""),
        "{text}"
    );
    assert!(text.contains("iqdb-testkit-vector-store"), "{text}");

    let out = cli()
        .args(["verify", path.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    let v = json(&out.stdout);
    assert_eq!(v["index"], serde_json::Value::Null);
    assert_eq!(v["snapshot"]["index_type"], "acme-hnsw");
    assert_eq!(v["snapshot"]["format_version"], 1);

    // A foreign payload that claims to be a VectorStore does not decode.
    common::foreign_snapshot(
        &path,
        iqdb_persist_testkit::INDEX_TYPE,
        b"some payload the CLI does not understand",
    );
    let out = cli()
        .args(["verify", path.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let v = json(&out.stdout);
    let p = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["code"] == "decode")
        .unwrap();
    assert_eq!(p["file"], path.to_str().unwrap());
    assert_eq!(p["severity"], "error");
}

#[test]
fn a_log_that_follows_another_snapshot_is_reported() {
    let db = wal_db(Options::default());
    // Replace the snapshot with a different one; the log stays.
    let store = iqdb_persist_testkit::generate::store(
        99,
        5,
        common::DIM,
        iqdb_types::DistanceMetric::Euclidean,
    );
    iqdb_persist::PersistedIndex::open_with(store, iqdb_persist::PersistConfig::new(&db.path))
        .unwrap()
        .save()
        .unwrap();
    let out = cli().args(["verify", db.path_str()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("does not belong to the snapshot"), "{text}");
    assert!(
        text.contains("NO (it records a different snapshot)"),
        "{text}"
    );
    assert!(text.contains("not replayed"), "{text}");
}

#[test]
fn a_missing_snapshot_beside_a_log_and_wal_only() {
    let db = wal_db(Options::default());
    std::fs::remove_file(&db.path).unwrap();
    let out = cli().args(["inspect", db.path_str()]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(stdout(&out).contains("the snapshot is missing"));
    assert!(stdout(&out).contains(&format!("frames               {}", db.frames)));

    let out = cli()
        .args(["verify", db.wal.to_str().unwrap(), "--wal-only"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(!stdout(&out).contains("Snapshot"));
}

#[test]
fn a_wal_path_names_the_database() {
    let db = wal_db(Options::default());
    let out = cli()
        .args(["inspect", db.wal.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v = json(&out.stdout);
    assert_eq!(v["path"], db.path_str());
    assert_eq!(v["snapshot"]["vectors"], common::BASE);
}

#[test]
fn a_snapshot_only_database_has_no_log() {
    let db = common::snapshot_db();
    let out = cli().args(["verify", db.path_str()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("no write-ahead log"), "{text}");
    assert!(
        text.contains(&format!("vectors              {}", db.vectors)),
        "{text}"
    );
}

#[test]
fn a_damaged_log_header_is_corruption() {
    let db = wal_db(Options::default());
    flip_byte(&db.wal, 17); // base sequence, under the header CRC
    let out = cli()
        .args(["inspect", db.path_str(), "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let v = json(&out.stdout);
    assert_eq!(v["log"], serde_json::Value::Null);
    assert_eq!(v["problems"][0]["code"], "log-header");
    assert_eq!(v["problems"][0]["offset"], 0);
}

/// A checkpoint intent as docs/FORMAT.md lays it out.
fn intent_bytes(fingerprint: iqdb_persist::SnapshotFingerprint, next_seq: u64) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b"IQDBCKPT");
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&fingerprint.len.to_le_bytes());
    b.extend_from_slice(&fingerprint.crc32.to_le_bytes());
    b.extend_from_slice(&next_seq.to_le_bytes());
    b.extend_from_slice(&2u32.to_le_bytes());
    let crc = iqdb_persist::checksum::compute(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

fn fingerprint(path: &std::path::Path) -> iqdb_persist::SnapshotFingerprint {
    iqdb_persist::inspect::snapshot_info(&iqdb_persist::storage::StdFileSystem, path, false)
        .unwrap()
        .fingerprint
}

#[test]
fn a_pending_checkpoint_intent_is_shown_and_resolved_like_a_load() {
    let db = wal_db(Options::default());
    let intent = db.config().checkpoint_path();
    // An intent for the snapshot in place: the log is already in it.
    std::fs::write(&intent, intent_bytes(fingerprint(&db.path), 15)).unwrap();
    let out = cli().args(["inspect", db.path_str()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("Checkpoint intent: pending"), "{text}");
    assert!(text.contains("a checkpoint was interrupted"), "{text}");
    let out = cli()
        .args(["verify", db.path_str(), "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v = json(&out.stdout);
    assert_eq!(v["checkpoint_pending"], true);
    assert_eq!(v["index"]["replay"]["checkpoint_completed"], true);
    assert_eq!(v["index"]["vectors"], common::BASE);

    // A damaged intent makes a load fail: corruption.
    common::flip_byte(&intent, 14);
    let out = cli().args(["verify", db.path_str()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stdout(&out).contains("db.iqdb.checkpoint at byte 0: checksum mismatch"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn leftover_temporary_files_are_listed() {
    let db = wal_db(Options::default());
    let temp = db.dir.path().join("db.iqdb.iqdb-tmp.4000000.0");
    std::fs::write(&temp, b"half a snapshot").unwrap();
    let out = cli().args(["inspect", db.path_str()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("Temporary files:\n  "), "{text}");
    assert!(text.contains("db.iqdb.iqdb-tmp.4000000.0"), "{text}");
    assert!(text.contains("1 leftover temporary file(s)"), "{text}");
    let out = cli()
        .args(["inspect", db.path_str(), "--json"])
        .output()
        .unwrap();
    let v = json(&out.stdout);
    assert_eq!(v["temp_files"][0], temp.to_str().unwrap());
    // Looking removed nothing.
    assert!(temp.exists());
}

#[test]
fn a_salvaged_backup_can_be_checked_as_a_log() {
    let db = wal_db(Options::default());
    let backup = db.dir.path().join("db.iqdb.wal.salvaged-1-0");
    std::fs::copy(&db.wal, &backup).unwrap();
    let out = cli()
        .args(["verify", backup.to_str().unwrap(), "--wal-only", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v = json(&out.stdout);
    assert_eq!(v["log"]["frames"], db.frames);
    assert_eq!(v["snapshot"], serde_json::Value::Null);
    let out = cli()
        .args(["wal", "dump", backup.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        stdout(&out).lines().filter(|l| l.starts_with('@')).count() as u64,
        db.inserts + db.deletes
    );
}

#[test]
fn a_flipped_bit_mid_log_under_never_is_corruption_not_a_torn_tail() {
    // Under FsyncPolicy::Never no later frame records a sync, but a frame
    // followed by intact ones that shows no sign of a torn write (no zeroed
    // sector, not cut short) is corruption: the next open must not drop the
    // intact frames behind it.
    let db = common::wal_db_policy(
        Options::default(),
        iqdb_persist::Compression::None,
        iqdb_persist::FsyncPolicy::Never,
    );
    let (frames, _) = db.frames();
    flip_byte(&db.wal, frames[2].offset + 20);
    let out = cli().args(["verify", db.path_str()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("11"), "{text}");
}
