//! Help, version, bad arguments and unreadable paths.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{assert_one_line_error, cli, stdout};

const SUBCOMMANDS: &[&[&str]] = &[
    &[],
    &["inspect"],
    &["verify"],
    &["wal"],
    &["wal", "dump"],
    &["repair"],
    &["bench"],
    &["demo"],
    &["__demo-writer"],
];

#[test]
fn help_of_every_subcommand_has_an_example_and_the_exit_codes() {
    for sub in SUBCOMMANDS {
        let out = cli().args(*sub).arg("--help").output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{sub:?}");
        let text = stdout(&out);
        assert!(
            text.contains("Example"),
            "{sub:?} help has no example:\n{text}"
        );
        if !sub.contains(&"__demo-writer") {
            assert!(
                text.contains("Exit codes:") && text.contains("4  locked by another writer"),
                "{sub:?} help has no exit codes:\n{text}"
            );
        }
    }
}

#[test]
fn the_hidden_writer_is_not_listed() {
    let out = cli().arg("--help").output().unwrap();
    assert!(!stdout(&out).contains("__demo-writer"));
}

#[test]
fn version_is_the_crate_version() {
    let out = cli().arg("--version").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("1.1.0"));
}

#[test]
fn bad_arguments_give_one_line_and_exit_code_2() {
    let cases: &[&[&str]] = &[
        &["frobnicate"],
        &["inspect"],
        &["inspect", "a", "b"],
        &["verify", "--no-such-flag", "x"],
        &["wal", "dump", "x", "--limit", "many"],
        &["bench", "--vectors", "0"],
        &["bench", "--compression", "gzip"],
        &["bench", "--compression", "zstd:99"],
        &["bench", "--format", "v9"],
        &["demo", "--dim", "0"],
        &["repair", "--salvage"],
    ];
    for args in cases {
        let out = cli().args(*args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert_one_line_error(&out);
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn no_subcommand_is_a_usage_error() {
    let out = cli().output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!common::stderr(&out).contains("panicked"));
}

#[test]
fn missing_paths_give_one_line_and_exit_code_3() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.iqdb");
    let m = missing.to_str().unwrap();
    let cases: Vec<Vec<&str>> = vec![
        vec!["inspect", m],
        vec!["verify", m],
        vec!["verify", m, "--json"],
        vec!["wal", "dump", m],
        vec!["repair", m],
        vec!["inspect", m, "--wal-only"],
    ];
    for args in cases {
        let out = cli().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(3), "{args:?}: {out:?}");
        assert_one_line_error(&out);
        assert!(common::stderr(&out).contains("nope.iqdb"), "{args:?}");
        if args.contains(&"--json") {
            let v = common::json(&out.stdout);
            assert_eq!(v["exit_code"], 3);
            assert!(v["error"].as_str().unwrap().contains("nope.iqdb"));
        } else {
            assert!(out.stdout.is_empty(), "{args:?}");
        }
    }
}

#[test]
fn a_directory_as_path_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    for sub in ["inspect", "verify"] {
        let out = cli().args([sub, d]).output().unwrap();
        assert_eq!(out.status.code(), Some(3), "{sub}: {out:?}");
        assert_one_line_error(&out);
    }
}

#[cfg(unix)]
#[test]
fn unreadable_files_give_one_line_and_exit_code_3() {
    use std::os::unix::fs::PermissionsExt;
    let db = common::snapshot_db();
    std::fs::set_permissions(&db.path, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::read(&db.path).is_ok() {
        // Running as root: permissions do not apply. Nothing to test.
        return;
    }
    for sub in ["inspect", "verify"] {
        let out = cli().args([sub, db.path_str()]).output().unwrap();
        assert_eq!(out.status.code(), Some(3), "{sub}: {out:?}");
        assert_one_line_error(&out);
        assert!(common::stderr(&out).contains("ermission"));
    }
}

/// A bug gives one line on stderr, unless `RUST_BACKTRACE` asks for the
/// backtrace: then the standard hook's message and backtrace are shown.
#[test]
fn panics_are_one_line_unless_rust_backtrace_is_set() {
    for value in [None, Some("0")] {
        let mut cmd = cli();
        cmd.env_remove("RUST_BACKTRACE").arg("__panic");
        if let Some(v) = value {
            cmd.env("RUST_BACKTRACE", v);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(5), "{value:?}: {out:?}");
        let err = common::stderr(&out);
        assert!(
            err.starts_with("iqdb-persist: internal error at ") && err.contains("deliberate panic"),
            "{value:?}: {err}"
        );
        assert!(!err.contains("stack backtrace"), "{value:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{value:?}: {err}");
        assert!(out.stdout.is_empty());
    }
    for value in ["1", "full"] {
        let out = cli()
            .env("RUST_BACKTRACE", value)
            .arg("__panic")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(5), "{value}: {out:?}");
        let err = common::stderr(&out);
        assert!(err.contains("deliberate panic"), "{value}: {err}");
        assert!(err.contains("stack backtrace"), "{value}: {err}");
        assert!(!err.contains("internal error"), "{value}: {err}");
    }
}
