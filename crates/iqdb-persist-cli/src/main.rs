//! The `iqdb-persist` command: a thin wrapper around
//! [`iqdb_persist_cli::run`]. See that crate's docs for the subcommands and
//! exit codes.

#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    // A bug must still give one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".to_string());
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "iqdb-persist: internal error{place}: {}",
            message.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }));
    iqdb_persist_cli::init_logging();
    iqdb_persist_cli::run(std::env::args_os())
}
