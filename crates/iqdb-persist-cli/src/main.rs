//! The `iqdb-persist` command: a thin wrapper around
//! [`iqdb_persist_cli::run`]. See that crate's docs for the subcommands and
//! exit codes.

#![forbid(unsafe_code)]

use std::process::ExitCode;

/// Whether `RUST_BACKTRACE` asks for backtraces (set, and not `0`).
fn backtrace_wanted(var: Option<&std::ffi::OsStr>) -> bool {
    var.is_some_and(|v| v != "0")
}

fn main() -> ExitCode {
    // A bug gives one line, not a backtrace, unless RUST_BACKTRACE asks for
    // one: then the standard hook prints the message and the backtrace.
    if !backtrace_wanted(std::env::var_os("RUST_BACKTRACE").as_deref()) {
        install_one_line_hook();
    }
    iqdb_persist_cli::init_logging();
    iqdb_persist_cli::run(std::env::args_os())
}

fn install_one_line_hook() {
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
            "iqdb-persist: internal error{place}: {} (RUST_BACKTRACE=1 shows a backtrace)",
            message.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }));
}

#[cfg(test)]
mod tests {
    use super::backtrace_wanted;
    use std::ffi::OsStr;

    #[test]
    fn rust_backtrace_values() {
        assert!(!backtrace_wanted(None));
        assert!(!backtrace_wanted(Some(OsStr::new("0"))));
        assert!(backtrace_wanted(Some(OsStr::new("1"))));
        assert!(backtrace_wanted(Some(OsStr::new("full"))));
    }
}
