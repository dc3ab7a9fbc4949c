//! Writes the golden files with iqdb-persist 1.0.0.
//!
//! ```sh
//! cargo run -p iqdb-persist-interop --bin make-golden -- crates/interop/golden
//! ```
//!
//! The directory must exist; files of the same names are replaced. See
//! `crates/interop/golden/README.md` and [`iqdb_persist_interop::golden`].

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: make-golden <directory>");
        return ExitCode::from(2);
    };
    let dir = PathBuf::from(dir);
    match iqdb_persist_interop::golden::write_all(&dir) {
        Ok(paths) => {
            for path in paths {
                let len = std::fs::metadata(&path).map_or(0, |m| m.len());
                println!("{:>8} bytes  {}", len, path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("make-golden: {e}");
            ExitCode::FAILURE
        }
    }
}
