//! `wal dump`: text, JSON lines, --limit/--from, damage at the end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{cli, flip_byte, stdout, truncate, wal_db};
use iqdb_persist::Options;

fn json_lines(out: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

#[test]
fn dump_text_lists_every_operation() {
    let db = wal_db(Options::default());
    let out = cli().args(["wal", "dump", db.path_str()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    let ops: Vec<&str> = text.lines().filter(|l| l.starts_with('@')).collect();
    assert_eq!(ops.len() as u64, db.inserts + db.deletes, "{text}");
    assert!(
        ops[0].contains("seq 1 ") && ops[0].contains("insert"),
        "{}",
        ops[0]
    );
    assert!(
        ops[0].contains("dim=8") && ops[0].contains("meta={"),
        "{}",
        ops[0]
    );
    // Record 200 is a U64 id, 201 a printable byte id, 203 a binary one.
    assert!(ops[0].contains("id=200 "), "{}", ops[0]);
    assert!(
        ops[1].contains("id=hex:69642d6339 (\"id-c9\")"),
        "{}",
        ops[1]
    );
    assert!(ops[3].contains("id=hex:ffcb00000000000000"), "{}", ops[3]);
    assert!(
        ops[10].contains("delete") && ops[10].contains("id=0"),
        "{}",
        ops[10]
    );
    let batch: Vec<&&str> = ops
        .iter()
        .filter(|l| l.contains("[batch seq 14..19"))
        .collect();
    assert_eq!(batch.len(), 6, "{text}");
    assert!(batch[5].contains("op 6/6") && batch[5].contains("delete"));
    assert!(
        text.contains("-- end of log v2: 14 frame(s), 19 operation(s) printed"),
        "{text}"
    );
}

#[test]
fn dump_json_lines_parse_and_carry_ids_metadata_and_batches() {
    let db = wal_db(Options::default());
    let out = cli()
        .args([
            "wal",
            "dump",
            db.wal.to_str().unwrap(),
            "--json",
            "--vectors",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 20);
    let first = &lines[0];
    assert_eq!(first["record"], "op");
    assert_eq!(first["seq"], 1);
    assert_eq!(first["op"], "insert");
    assert_eq!(first["id"], 200);
    assert_eq!(first["id_kind"], "u64");
    assert_eq!(first["dim"], 8);
    assert_eq!(first["vector"].as_array().unwrap().len(), 8);
    assert_eq!(first["metadata"]["i"], 200);
    assert_eq!(first["metadata"]["group"], "g4");
    assert_eq!(first["batch"], serde_json::Value::Null);
    assert_eq!(lines[1]["id"], "69642d6339");
    assert_eq!(lines[1]["id_kind"], "bytes");
    assert_eq!(lines[13]["batch"]["first_seq"], 14);
    assert_eq!(lines[13]["batch"]["count"], 6);
    assert_eq!(lines[13]["batch"]["index"], 0);
    assert_eq!(lines[18]["op"], "delete");
    assert!(lines[18].get("dim").is_none());
    let end = &lines[19];
    assert_eq!(end["record"], "end");
    assert_eq!(end["frames"], 14);
    assert_eq!(end["operations_printed"], 19);
    assert_eq!(end["damage"], serde_json::Value::Null);
    assert_eq!(end["exit_code"], 0);
}

#[test]
fn dump_limit_and_from() {
    let db = wal_db(Options::default());
    let out = cli()
        .args([
            "wal",
            "dump",
            db.path_str(),
            "--from",
            "12",
            "--limit",
            "3",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let lines = json_lines(&out.stdout);
    let seqs: Vec<u64> = lines
        .iter()
        .filter(|l| l["record"] == "op")
        .map(|l| l["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [12, 13, 14]);
    assert_eq!(lines.last().unwrap()["stopped_early"], true);

    let out = cli()
        .args(["wal", "dump", db.path_str(), "--limit", "2"])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert_eq!(text.lines().filter(|l| l.starts_with('@')).count(), 2);
    assert!(text.contains("stopped after 2 operation(s)"), "{text}");

    let out = cli()
        .args(["wal", "dump", db.path_str(), "--limit", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    common::assert_one_line_error(&out);
}

#[test]
fn dump_compat_v1_log() {
    let db = wal_db(Options::compat_1_0());
    let out = cli()
        .args(["wal", "dump", db.path_str(), "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 20);
    assert!(lines.iter().all(|l| l["batch"].is_null()));
    assert_eq!(lines[19]["format_version"], 1);
    assert_eq!(lines[19]["frames"], db.frames);
}

#[test]
fn dump_prints_a_torn_tail_at_the_end() {
    let db = wal_db(Options::default());
    let (frames, _) = db.frames();
    let last = frames.last().unwrap();
    truncate(&db.wal, last.offset + 7);
    let out = cli().args(["wal", "dump", db.path_str()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    assert_eq!(text.lines().filter(|l| l.starts_with('@')).count(), 13);
    assert!(text.contains("-- torn tail:"), "{text}");
    assert!(text.contains(&format!("at byte {}", last.offset)), "{text}");
}

#[test]
fn dump_prints_corruption_at_the_end_and_exits_1() {
    let db = wal_db(Options::default());
    let (frames, _) = db.frames();
    flip_byte(&db.wal, frames[4].offset + 30);
    let out = cli()
        .args(["wal", "dump", db.path_str(), "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 5);
    let end = lines.last().unwrap();
    assert_eq!(end["damage"]["kind"], "corrupt");
    assert_eq!(end["damage"]["offset"], frames[4].offset);
    assert_eq!(end["damage"]["valid_frames_after"], 9);

    let out = cli().args(["wal", "dump", db.path_str()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("-- DAMAGE:"));
}

#[test]
fn dump_of_a_log_with_a_damaged_header() {
    let db = wal_db(Options::default());
    flip_byte(&db.wal, 2);
    let out = cli().args(["wal", "dump", db.path_str()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stdout(&out).contains("The log cannot be read"));
    let out = cli()
        .args(["wal", "dump", db.path_str(), "--json"])
        .output()
        .unwrap();
    let lines = json_lines(&out.stdout);
    assert_eq!(lines[0]["record"], "end");
    assert_eq!(lines[0]["error"]["offset"], 0);
}

#[test]
fn dump_without_a_log_is_an_io_error() {
    let db = common::snapshot_db();
    let out = cli().args(["wal", "dump", db.path_str()]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    common::assert_one_line_error(&out);
}

#[test]
fn dump_into_a_closed_pipe_is_quiet() {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let db = wal_db(Options::default());
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("iqdb-persist"))
        .args(["wal", "dump", db.path_str(), "--vectors"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(status.code(), Some(0), "{err}");
}
