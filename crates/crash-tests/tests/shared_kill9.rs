//! The concurrent kill -9 loop: `shared-writer` runs four threads inserting
//! through one `SharedIndex` (pairs of threads racing for the same ids) and
//! prints each result; the test SIGKILLs it after a number of
//! acknowledgements, reloads, and checks every acknowledged insert is there
//! bit for bit and no rejected one is. The next round reloads the same
//! database, alternating WAL v2 and v1 (compat mode).
//!
//! 6 rounds by default; `IQDB_SHARED_KILL9_ITERATIONS=N` for a long run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use iqdb_persist::{PersistConfig, PersistedIndex};
use iqdb_persist_crash_tests::{kill9_options, shared_vector};
use iqdb_persist_testkit::VectorStore;
use iqdb_types::VectorId;

#[test]
fn concurrent_writers_survive_kill_9() {
    let rounds: u64 = std::env::var("IQDB_SHARED_KILL9_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(6);
    let dir = tempfile::tempdir().unwrap();
    // id -> the vector acknowledged under it, over all rounds.
    let mut acked: BTreeMap<u64, Arc<[f32]>> = BTreeMap::new();
    let mut rejected: Vec<(u64, Arc<[f32]>)> = Vec::new();
    for round in 0..rounds {
        let format = if round % 2 == 0 { "v2" } else { "v1" };
        let mut child = Command::new(env!("CARGO_BIN_EXE_shared-writer"))
            .arg(dir.path())
            .arg(round.to_string())
            .arg(format)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let wanted = 40 + (round * 37) % 200;
        let mut lines = BufReader::new(stdout).lines();
        let mut round_acks = 0;
        while round_acks < wanted {
            let Some(Ok(line)) = lines.next() else {
                panic!("shared-writer stopped early: {:?}", child.wait());
            };
            let parts: Vec<&str> = line.split(' ').collect();
            let (id, t): (u64, u64) = (parts[1].parse().unwrap(), parts[2].parse().unwrap());
            match parts[0] {
                "A" => {
                    assert!(
                        acked.insert(id, shared_vector(id, t)).is_none(),
                        "{id} acknowledged twice"
                    );
                    round_acks += 1;
                }
                _ => rejected.push((id, shared_vector(id, t))),
            }
        }
        child.kill().unwrap(); // SIGKILL
        // Lines printed before the kill landed still count.
        for line in lines.map_while(Result::ok) {
            let parts: Vec<&str> = line.split(' ').collect();
            if parts.len() == 3 {
                let (id, t): (u64, u64) = (parts[1].parse().unwrap(), parts[2].parse().unwrap());
                if parts[0] == "A" {
                    acked.insert(id, shared_vector(id, t));
                } else {
                    rejected.push((id, shared_vector(id, t)));
                }
            }
        }
        child.wait().unwrap();
        let options = kill9_options(format);
        let mut config = PersistConfig::new(dir.path().join("db.iqdb"));
        config.wal_enabled = true;
        let db = PersistedIndex::<VectorStore>::load_with_options(config, options)
            .unwrap_or_else(|e| panic!("round {round}: load: {e}"));
        for (id, v) in &acked {
            let got = db
                .index()
                .get(&VectorId::from(*id))
                .map(|(v, _)| v.to_vec());
            assert_eq!(
                got.as_deref(),
                Some(&v[..]),
                "round {round}: acknowledged {id}"
            );
        }
        for (id, v) in &rejected {
            let got = db
                .index()
                .get(&VectorId::from(*id))
                .map(|(v, _)| v.to_vec());
            assert_ne!(
                got.as_deref(),
                Some(&v[..]),
                "round {round}: rejected {id} present"
            );
        }
        db.close().unwrap();
    }
    assert!(!rejected.is_empty(), "the racing threads had rejections");
}
