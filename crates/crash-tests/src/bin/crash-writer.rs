//! The process the kill -9 test kills: it opens (or creates) a database in
//! WAL mode with `FsyncPolicy::Always` and runs a seeded workload forever,
//! printing each step before it starts (`B <step>`) and how it ended once the
//! call returned (`A` acknowledged, `J` rejected by the index, `S <n>` batch
//! stopped after `n`). Whatever it printed `A` for must survive the kill.
//!
//! Usage: `crash-writer DIR SEED FIRST_RECORD v1|v2`

use std::io::Write;
use std::process::ExitCode;

use iqdb_persist_crash_tests::{
    DIM, Outcome, Workload, apply_outcome, execute, open_kill9_db, store_model,
};

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
    let opened = open_kill9_db(std::path::Path::new(&args[1]), &args[4], DIM);
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
