//! The kill -9 loop: a writer process (`crash-writer`) inserts, deletes,
//! batches and checkpoints under `FsyncPolicy::Always`, printing every step
//! it acknowledges; the test SIGKILLs it at a random moment (including
//! during its own recovery and mid-checkpoint), loads the database, and
//! checks that every acknowledged write is there with the right vector and
//! metadata, that nothing else is (at most the step in flight), that the
//! database always loads, and that no temporary file survives the load. The
//! next writer continues on the same database.
//!
//! 200 iterations by default; `IQDB_KILL9_ITERATIONS=N` for a long run.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use iqdb_persist::{FsyncPolicy, Options, PersistConfig, PersistedIndex};
use iqdb_persist_crash_tests::{Model, Outcome, Step, apply_outcome, check_store, possible_states};
use iqdb_persist_testkit::VectorStore;
use iqdb_persist_testkit::generate::SplitMix64;

fn config(dir: &Path) -> PersistConfig {
    PersistConfig {
        path: dir.join("db.iqdb"),
        wal_enabled: true,
        fsync_policy: FsyncPolicy::Always,
        compression: iqdb_persist::Compression::None,
    }
}

/// What one writer's stdout says happened.
struct Transcript {
    model: Model,
    in_flight: Option<Step>,
    acknowledged: u64,
}

fn replay_transcript(start: &Model, lines: &[String]) -> Result<Transcript, String> {
    let mut model = start.clone();
    let mut acknowledged = 0;
    let mut pending: Option<Step> = None;
    for line in lines {
        if let Some(step) = line.strip_prefix("B ") {
            if pending.is_some() {
                return Err(format!("step began before the previous one ended: {line}"));
            }
            pending = Some(Step::decode(step).ok_or_else(|| format!("bad step line {line:?}"))?);
            continue;
        }
        let step = pending
            .take()
            .ok_or_else(|| format!("outcome without a step: {line:?}"))?;
        let outcome = match line.as_str() {
            "A" => Outcome::Ok,
            "J" => Outcome::Rejected,
            s => match s.strip_prefix("S ").and_then(|n| n.parse().ok()) {
                Some(n) => Outcome::Stopped(n),
                None => return Err(format!("bad outcome line {line:?}")),
            },
        };
        if outcome == Outcome::Ok {
            acknowledged += match &step {
                Step::Op(_) => 1,
                Step::Batch(ops) => ops.len() as u64,
                _ => 0,
            };
        }
        model = apply_outcome(&model, &step, &outcome)?;
    }
    Ok(Transcript {
        model,
        in_flight: pending,
        acknowledged,
    })
}

fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The format version in the header of the database's log, if it has one.
fn log_version(dir: &Path) -> Option<u32> {
    let bytes = std::fs::read(dir.join("db.iqdb.wal")).ok()?;
    let version = bytes.get(8..12)?;
    Some(u32::from_le_bytes([
        version[0], version[1], version[2], version[3],
    ]))
}

#[test]
fn kill_9_at_random_moments_never_loses_an_acknowledged_write() {
    let iterations: u64 = std::env::var("IQDB_KILL9_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_crash-writer"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let mut rng = SplitMix64::new(0x9_1111);
    let mut model = Model::new();
    let (mut total_acked, mut in_flight_kills, mut checkpoint_kills) = (0u64, 0u64, 0u64);
    for iteration in 0..iterations {
        let format = if (iteration / 10) % 4 == 3 {
            "v1"
        } else {
            "v2"
        };
        let seed = 0xA5A5 ^ iteration;
        let first = iteration * 1_000_000;
        let context = format!("iteration {iteration} (seed {seed}, {format})");
        let mut child = Command::new(&exe)
            .args([
                dir.path().to_str().unwrap_or("."),
                &seed.to_string(),
                &first.to_string(),
                format,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{context}: spawn: {e}"));
        let stdout = child
            .stdout
            .take()
            .unwrap_or_else(|| panic!("{context}: no stdout"));
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Kill after a random number of lines (0: during its recovery), or
        // at a random moment a little after.
        let wait_lines = match rng.next_u64() % 10 {
            0 => 0,
            1..=5 => rng.next_u64() % 40,
            _ => rng.next_u64() % 160,
        };
        let mut lines = Vec::new();
        while (lines.len() as u64) < wait_lines {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(line) => lines.push(line),
                Err(_) => break,
            }
        }
        if rng.next_u64().is_multiple_of(2) {
            std::thread::sleep(Duration::from_micros(rng.next_u64() % 3000));
        }
        let _ = child.kill();
        let status = child
            .wait()
            .unwrap_or_else(|e| panic!("{context}: wait: {e}"));
        let _ = reader.join();
        lines.extend(rx.try_iter());
        if status.success() || status.code().is_some() {
            let mut err = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
            }
            panic!("{context}: the writer exited by itself ({status}): {err}");
        }
        let transcript =
            replay_transcript(&model, &lines).unwrap_or_else(|e| panic!("{context}: {e}"));
        if let Some(step) = &transcript.in_flight {
            in_flight_kills += 1;
            checkpoint_kills += u64::from(*step == Step::Checkpoint);
        }
        total_acked += transcript.acknowledged;
        // A batch is atomic in a v2 log; the log of a database that was in
        // v1 stays v1 until a checkpoint rewrites it, whatever the writer
        // asked for, so the log's own header decides.
        let atomic = log_version(dir.path()) == Some(2);
        let allowed = match &transcript.in_flight {
            Some(step) => possible_states(&transcript.model, step, atomic),
            None => vec![transcript.model.clone()],
        };
        let db =
            PersistedIndex::<VectorStore>::load_with_options(config(dir.path()), Options::new())
                .unwrap_or_else(|e| panic!("{context}: the database does not load: {e}"));
        model = check_store(db.index(), &allowed).unwrap_or_else(|e| panic!("{context}: {e}"));
        drop(db);
        let expected: BTreeSet<String> = ["db.iqdb", "db.iqdb.lock", "db.iqdb.wal"]
            .iter()
            .map(ToString::to_string)
            .collect();
        let found = names(dir.path());
        assert_eq!(found, expected, "{context}: files left after the load");
    }
    println!(
        "kill -9 loop: {iterations} iterations, {total_acked} acknowledged writes checked, \
         {in_flight_kills} kills with a step in flight ({checkpoint_kills} during a checkpoint), \
         0 failures; final state {} records",
        model.len()
    );
    assert!(
        total_acked > iterations,
        "too few writes to mean anything: {total_acked}"
    );
}
