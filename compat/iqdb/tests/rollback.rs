//! Rolling back (issue 14): the published `iqdb` 1.0.0 over the published
//! iqdb-persist 1.0.0 (the `iqdb-1-0-reader` binary of
//! `../iqdb-1-0-reader`, as a user who rolled the dependency back runs it)
//! must open what `iqdb` over ours left:
//!
//! * a database 1.0 created, then used through `iqdb` over ours with the
//!   default settings (writes, `flush()`, more writes, with and without
//!   `close()`): no action needed;
//! * a database created through `iqdb` over ours (the latest formats, which
//!   1.0 refuses) after `convert_files` to compat.
//!
//! The reader prints every record bit for bit; the test compares that with
//! what ours reads. `IQDB_1_0_READER` names the binary
//! (scripts/compat-iqdb.sh builds it); without it the test builds it into
//! its own target directory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use iqdb::{DistanceMetric, Iqdb, Vector, VectorId};
use iqdb_persist::format_policy::convert_files;
use iqdb_persist::{FormatPolicy, Options, PersistConfig};
use iqdb_persist_testkit::generate;

const DIM: usize = 12;

fn reader() -> &'static Path {
    static READER: OnceLock<PathBuf> = OnceLock::new();
    READER.get_or_init(|| {
        if let Some(path) = std::env::var_os("IQDB_1_0_READER") {
            return PathBuf::from(path);
        }
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../iqdb-1-0-reader/Cargo.toml");
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("iqdb-1-0-reader");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--locked", "--manifest-path"])
            .arg(&manifest)
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .unwrap();
        assert!(status.success(), "building the 1.0 reader failed");
        target.join("debug/iqdb-1-0-reader")
    })
}

fn id_token(id: &VectorId) -> String {
    match id {
        VectorId::U64(n) => format!("u:{n}"),
        VectorId::Bytes(b) => format!(
            "b:{}",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        ),
    }
}

fn bits(values: &[f32]) -> String {
    values
        .iter()
        .map(|v| format!("{:08x}", v.to_bits()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs the 1.0 reader; `Err(stderr)` if it fails.
fn run_reader(args: &[&str], path: &Path, stdin: &str) -> Result<String, String> {
    let mut child = Command::new(reader())
        .args(&args[..1])
        .arg(path)
        .arg(DIM.to_string())
        .args(&args[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader may fail (and exit) before it reads its input; its stderr
    // then says why.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The ids every check looks at (more than were ever written).
fn ids() -> Vec<VectorId> {
    (0..260).map(generate::id).collect()
}

/// What 1.0 reads, in the reader's format.
fn dump_v1(path: &Path) -> Result<String, String> {
    let stdin: String = ids()
        .iter()
        .map(|id| format!("{}\n", id_token(id)))
        .collect();
    run_reader(&["dump"], path, &stdin)
}

/// What ours reads (through iqdb over ours), in the reader's format.
fn dump_ours(path: &Path) -> String {
    let db = Iqdb::open(path, DIM, DistanceMetric::Euclidean).unwrap();
    let mut out = format!("len {}\n", db.len());
    for id in ids() {
        match db.get(&id).unwrap() {
            None => out.push_str(&format!("{} absent\n", id_token(&id))),
            Some((vector, metadata)) => out.push_str(&format!(
                "{} {} {metadata:?}\n",
                id_token(&id),
                bits(vector.as_slice())
            )),
        }
    }
    db.close().unwrap();
    out
}

/// Creates a database with 1.0: records 0..100 of stream 1, vectors only.
fn create_with_v1(path: &Path, close: bool) {
    let stdin: String = (0..100)
        .map(|i| {
            let (id, vector, _) = generate::record(1, i, DIM);
            format!("{} {}\n", id_token(&id), bits(&vector))
        })
        .collect();
    let args: &[&str] = if close {
        &["create", "--close"]
    } else {
        &["create"]
    };
    run_reader(args, path, &stdin).unwrap_or_else(|e| panic!("1.0 create: {e}"));
}

/// Writes through iqdb over ours: upserts with metadata (new ids and
/// replacements), deletes, a flush (checkpoint), more upserts; closes the
/// database at the end if `close`.
fn use_with_ours(path: &Path, close: bool) {
    let db = Iqdb::open(path, DIM, DistanceMetric::Euclidean).unwrap();
    for i in (0..150).step_by(3) {
        let (id, vector, metadata) = generate::record(2, i, DIM);
        db.upsert(id, Vector::new(vector.to_vec()).unwrap(), metadata)
            .unwrap();
    }
    for i in (1..100).step_by(7) {
        db.delete(&generate::id(i)).unwrap();
    }
    db.flush().unwrap();
    for i in 150..200 {
        let (id, vector, metadata) = generate::record(3, i, DIM);
        db.upsert(id, Vector::new(vector.to_vec()).unwrap(), metadata)
            .unwrap();
    }
    if close {
        db.close().unwrap();
    }
}

#[test]
fn a_1_0_database_used_through_iqdb_over_ours_stays_readable_by_1_0() {
    for (closed_by_v1, closed_by_ours) in [(true, true), (true, false), (false, true)] {
        let context = format!("closed by 1.0: {closed_by_v1}, closed by ours: {closed_by_ours}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.iqdb");
        create_with_v1(&path, closed_by_v1);
        use_with_ours(&path, closed_by_ours);
        let theirs =
            dump_v1(&path).unwrap_or_else(|e| panic!("{context}: 1.0 cannot open it: {e}"));
        let ours = dump_ours(&path);
        assert!(ours.starts_with("len 151\n"), "{context}: {ours:.12}");
        assert_eq!(
            theirs, ours,
            "{context}: 1.0 reads every record as ours does"
        );
        // Still readable after ours opened and closed it again.
        dump_v1(&path).unwrap_or_else(|e| panic!("{context}: after a second use: {e}"));
    }
}

#[test]
fn a_new_database_is_readable_by_1_0_after_convert_to_compat() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.iqdb");
    // Created by iqdb over ours: the latest formats.
    let db = Iqdb::open(&path, DIM, DistanceMetric::Euclidean).unwrap();
    for i in 0..100 {
        let (id, vector, metadata) = generate::record(1, i, DIM);
        db.upsert(id, Vector::new(vector.to_vec()).unwrap(), metadata)
            .unwrap();
    }
    drop(db);
    use_with_ours(&path, false);
    let err = dump_v1(&path).expect_err("1.0 cannot read the latest formats");
    assert!(err.contains("UnsupportedVersion"), "{err}");

    let mut config = PersistConfig::new(&path);
    config.wal_enabled = true;
    // The log holds the last writes: they cannot be folded without iqdb's code.
    let refused = convert_files(&config, FormatPolicy::Compat, Options::new(), false)
        .expect_err("operations in the log");
    assert!(
        matches!(refused, iqdb_persist::PersistError::WouldOverwrite { .. }),
        "{refused:?}"
    );
    // iqdb's flush() checkpoints; then the conversion goes through.
    let db = Iqdb::open(&path, DIM, DistanceMetric::Euclidean).unwrap();
    db.flush().unwrap();
    drop(db);
    let report = convert_files(&config, FormatPolicy::Compat, Options::new(), false).unwrap();
    assert!(report.readable_by_1_0(), "{report:?}");

    let theirs = dump_v1(&path).unwrap_or_else(|e| panic!("1.0 cannot open it: {e}"));
    let ours = dump_ours(&path);
    assert_eq!(theirs, ours, "1.0 reads every record as ours does");
    // And ours keeps it in 1.0's formats from now on.
    use_with_ours(&path, true);
    assert_eq!(dump_v1(&path).unwrap(), dump_ours(&path));
}
