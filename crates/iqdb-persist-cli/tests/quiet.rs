//! `-q/--quiet`: nothing on stdout, for every command, with and without
//! `--json`; errors still reach stderr, and the exit code is unchanged.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::cli;
use iqdb_persist::Options;

#[test]
fn quiet_prints_nothing_on_stdout_for_every_command() {
    let db = common::wal_db(Options::default());
    let work = tempfile::tempdir().unwrap();
    let cases = common::every_command(db.path_str(), work.path());
    for args in &cases {
        let loud = cli().args(args).output().unwrap();
        assert_eq!(loud.status.code(), Some(0), "{args:?}: {loud:?}");
        assert!(
            !loud.stdout.is_empty(),
            "{args:?} prints a report without -q"
        );
        for flags in [&["-q"][..], &["--quiet", "--json"][..]] {
            let out = cli().args(flags).args(args).output().unwrap();
            assert_eq!(out.status.code(), Some(0), "{flags:?} {args:?}: {out:?}");
            assert!(
                out.stdout.is_empty(),
                "{flags:?} {args:?}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
            assert!(out.stderr.is_empty(), "{flags:?} {args:?}: {out:?}");
        }
    }
}

#[test]
fn quiet_errors_go_to_stderr_only() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.iqdb");
    for flags in [&["-q"][..], &["-q", "--json"][..]] {
        let out = cli()
            .args(flags)
            .args(["verify", missing.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3), "{out:?}");
        assert!(out.stdout.is_empty(), "{flags:?}: {out:?}");
        common::assert_one_line_error(&out);
        assert!(common::stderr(&out).contains("nope.iqdb"));
    }
}
