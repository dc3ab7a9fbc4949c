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
use std::process::ExitCode;

use iqdb_persist_crash_tests::{open_kill9_db, shared_vector};
use iqdb_types::VectorId;

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
    let opened = open_kill9_db(std::path::Path::new(dir), format, 4);
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
                    let tag = match db.insert(VectorId::from(id), shared_vector(id, t), None) {
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
