//! The published `iqdb` 1.0.0 over the published iqdb-persist 1.0.0, for
//! compat/iqdb's rollback tests.
//!
//! ```text
//! iqdb-1-0-reader create PATH DIM [--close]   # records from stdin: `ID BITS`
//! iqdb-1-0-reader dump PATH DIM               # ids from stdin: `ID`
//! ```
//!
//! An `ID` is `u:<decimal>` or `b:<hex bytes>`; `BITS` are the vector's
//! `f32` bit patterns in hex, comma-separated. `create` upserts the records
//! into a new database (metric Euclidean) and then closes it (a checkpoint:
//! an empty log) with `--close`, or just drops it (the writes stay in the
//! log). `dump` opens a database and prints `len N`, then one line per id:
//! `ID absent`, or `ID BITS METADATA` with the metadata's `Debug` form. Any
//! error is printed on stderr with its `Debug` form, exit code 3.

#![forbid(unsafe_code)]

use std::io::{BufRead, Write};
use std::process::ExitCode;

use iqdb::{DistanceMetric, Iqdb, Vector, VectorId};

fn parse_id(token: &str) -> Result<VectorId, String> {
    if let Some(n) = token.strip_prefix("u:") {
        return n
            .parse::<u64>()
            .map(VectorId::U64)
            .map_err(|e| format!("{token}: {e}"));
    }
    let hex = token
        .strip_prefix("b:")
        .ok_or_else(|| format!("{token}: not an id"))?;
    if hex.len() % 2 != 0 {
        return Err(format!("{token}: odd hex length"));
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|e| format!("{token}: {e}")))
        .collect::<Result<Vec<u8>, String>>()?;
    Ok(VectorId::Bytes(bytes.into_boxed_slice()))
}

fn bits(values: &[f32]) -> String {
    values
        .iter()
        .map(|v| format!("{:08x}", v.to_bits()))
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_bits(token: &str) -> Result<Vec<f32>, String> {
    token
        .split(',')
        .map(|b| {
            u32::from_str_radix(b, 16)
                .map(f32::from_bits)
                .map_err(|e| format!("{b}: {e}"))
        })
        .collect()
}

fn run(args: &[String]) -> Result<(), String> {
    let (command, path, dim) = match args {
        [command, path, dim, ..] => (
            command.as_str(),
            path,
            dim.parse::<usize>().map_err(|e| format!("DIM: {e}"))?,
        ),
        _ => return Err("usage: iqdb-1-0-reader create|dump PATH DIM [--close]".into()),
    };
    let db =
        Iqdb::open(path, dim, DistanceMetric::Euclidean).map_err(|e| format!("open: {e:?}"))?;
    let stdin = std::io::stdin();
    match command {
        "create" => {
            for line in stdin.lock().lines() {
                let line = line.map_err(|e| e.to_string())?;
                let (id, values) = line
                    .split_once(' ')
                    .ok_or_else(|| format!("{line}: expected `ID BITS`"))?;
                let vector =
                    Vector::new(parse_bits(values)?).map_err(|e| format!("vector: {e:?}"))?;
                db.upsert(parse_id(id)?, vector, None)
                    .map_err(|e| format!("upsert: {e:?}"))?;
            }
            if args.iter().any(|a| a == "--close") {
                db.close().map_err(|e| format!("close: {e:?}"))?;
            }
            Ok(())
        }
        "dump" => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "len {}", db.len()).map_err(|e| e.to_string())?;
            for line in stdin.lock().lines() {
                let line = line.map_err(|e| e.to_string())?;
                let id = parse_id(line.trim())?;
                match db.get(&id).map_err(|e| format!("get: {e:?}"))? {
                    None => writeln!(out, "{} absent", line.trim()),
                    Some((vector, metadata)) => writeln!(
                        out,
                        "{} {} {metadata:?}",
                        line.trim(),
                        bits(vector.as_slice())
                    ),
                }
                .map_err(|e| e.to_string())?;
            }
            Ok(())
        }
        other => Err(format!("{other}: unknown command")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iqdb-1-0-reader: {e}");
            ExitCode::from(3)
        }
    }
}
