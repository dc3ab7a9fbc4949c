//! # iqdb-persist-cli
//!
//! The `iqdb-persist` command line: the operator's tool beside the
//! [`iqdb_persist`] library, in the spirit of SQLite's `integrity_check`,
//! RocksDB's `ldb`, `redis-check-aof --fix` and `pg_waldump`.
//!
//! | subcommand | what it does | changes files |
//! |---|---|---|
//! | `inspect PATH` | snapshot header, the log beside it, a pending checkpoint, leftover temporaries | no |
//! | `verify PATH` | every checksum, every log frame; decodes and replays registered index types | no |
//! | `wal dump PATH` | every logged operation, as text or JSON lines | no |
//! | `repair PATH` | cuts a torn log tail (or, with `--salvage`, a corrupt one), keeping a backup | yes, explicitly |
//! | `convert PATH --to compat\|latest` | rewrites the database in 1.0's formats or the latest (a checkpoint, under the writer lock) | yes, explicitly |
//! | `bench` | save/load/log throughput beside the raw disk's | only in its own directory |
//! | `demo` | builds, saves, crashes a writer with SIGKILL, recovers and checks everything | only in its own directory |
//! | `replicate PATH --to URL` | ships the snapshot and log to object storage continuously (S3, `file://`) | no (the replica only) |
//! | `restore URL --to DIR` | rebuilds a database from its replica, to the latest point, a sequence number or a time | only DIR (absent or empty) |
//! | `generations URL` | lists a replica's generations, sequence ranges, times, sizes and lease | no |
//!
//! `replicate`, `restore` and `generations` need the `replication` cargo
//! feature (on by default). Without it (`cargo install iqdb-persist-cli
//! --no-default-features`) the tool has no network stack (tokio, object_store,
//! reqwest, TLS) and no C toolchain is needed for a crypto library.
//!
//! `PATH` is always the snapshot; its log is `PATH.wal`. A path ending in
//! `.wal` is taken as the log, with the snapshot beside it.
//!
//! All file access goes through the library ([`iqdb_persist::inspect`],
//! [`iqdb_persist::PersistedIndex`]); this crate never parses the formats
//! itself.
//!
//! ## Exit codes
//!
//! | code | meaning |
//! |---|---|
//! | 0 | healthy / success (a torn log tail is a warning, not a failure) |
//! | 1 | corruption found: damage a crash cannot explain, or not an iqdb-persist file |
//! | 2 | usage error (bad arguments) |
//! | 3 | I/O error: not found, permission denied, disk failure |
//! | 4 | the database is locked by another writer (or the replica's lease is held by another replicator) |
//! | 5 | a check failed or the operation failed for another reason (for example a `demo` check) |
//! | 6 | `replicate`: fenced, another replicator took the replica over while this one ran |
//! | 7 | `restore`: restored an earlier point, because the latest one is damaged |
//! | 8 | `restore`: restored nothing (an empty replica, or no point matches `--at`) |
//!
//! The same table is in `iqdb-persist --help`; [`Status`] holds it in code.
//! An error that ends a command is printed as one line on stderr (with
//! `--json`, also as `{"error": ..., "exit_code": ...}` on stdout).
//! `-q/--quiet` prints nothing on stdout: only errors, on stderr.
//!
//! ## Using it as a library: the index registry
//!
//! `verify` and `repair` decode snapshots and replay logs for the index
//! types in a [`Registry`]. The reference type
//! [`iqdb_persist_testkit::VectorStore`] is registered by default; register
//! your own and call [`run_with`] from your own `main`. That, [`run`],
//! [`Status`] (the exit codes) and [`init_logging`] are the library's whole
//! public surface; the subcommands' code is private.
//!
//! Register your own index types and call [`run_with`] from your own `main`:
//!
//! ```no_run
//! use iqdb_persist_cli::{Registry, run_with};
//! # use iqdb_persist_testkit::VectorStore as MyIndex;
//!
//! fn main() -> std::process::ExitCode {
//!     let mut registry = Registry::with_defaults();
//!     registry.register::<MyIndex>();
//!     run_with(&registry, std::env::args_os())
//! }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::ffi::OsString;
use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use iqdb_persist::PersistError;

mod bench;
mod convert;
mod demo;
mod examine;
#[cfg(feature = "replication")]
mod generations;
mod inspect;
mod output;
mod registry;
mod repair;
#[cfg(feature = "replication")]
mod replicate;
#[cfg(feature = "replication")]
mod restore;
mod verify;
mod wal;

pub use crate::registry::{IndexSummary, LoadOutcome, Registry};

/// The exit status of a command (see the [crate docs](crate) for the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Status {
    /// 0: healthy, or the operation succeeded.
    Healthy,
    /// 1: corruption found.
    Corrupt,
    /// 2: bad arguments.
    Usage,
    /// 3: an I/O error (not found, permission denied, ...).
    Io,
    /// 4: the database is locked by another writer.
    Locked,
    /// 5: a check failed, or the operation failed for another reason.
    Failed,
    /// 6: another replicator took the replica over (this one is fenced).
    Fenced,
    /// 7: `restore` restored an earlier point because the latest one is
    /// damaged (the report says what was damaged).
    RestoredEarlier,
    /// 8: `restore` restored nothing: the replica is empty (no manifest, no
    /// generation) or holds no point matching `--at`.
    NothingToRestore,
}

impl Status {
    /// The process exit code.
    #[must_use]
    pub fn code(self) -> u8 {
        match self {
            Self::Healthy => 0,
            Self::Corrupt => 1,
            Self::Usage => 2,
            Self::Io => 3,
            Self::Locked => 4,
            Self::Failed => 5,
            Self::Fenced => 6,
            Self::RestoredEarlier => 7,
            Self::NothingToRestore => 8,
        }
    }

    /// The status for an error from the library.
    #[must_use]
    pub fn of_error(error: &PersistError) -> Self {
        match error.root_cause() {
            PersistError::Locked { .. } => Self::Locked,
            PersistError::Io { .. } => Self::Io,
            e if e.is_corruption() => Self::Corrupt,
            _ => Self::Failed,
        }
    }

    /// The more severe of two statuses (for combining problems): I/O and
    /// lock failures over other failures over corruption over an earlier
    /// restore point over healthy.
    #[must_use]
    pub fn worst(self, other: Self) -> Self {
        fn rank(s: Status) -> u8 {
            match s {
                Status::Healthy => 0,
                Status::RestoredEarlier => 1,
                Status::Corrupt => 2,
                Status::NothingToRestore => 3,
                Status::Failed => 4,
                Status::Usage => 5,
                Status::Io => 6,
                Status::Locked => 7,
                Status::Fenced => 8,
            }
        }
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}

impl From<Status> for ExitCode {
    fn from(status: Status) -> Self {
        ExitCode::from(status.code())
    }
}

/// An error that ends a command: a one-line message and an exit status.
#[derive(Debug)]
pub(crate) struct CliError {
    /// The exit status it maps to.
    pub status: Status,
    /// The message (one line, without the program-name prefix).
    pub message: String,
    /// Writing to standard output failed because the reader went away (for
    /// example `| head`); not reported.
    pub broken_pipe: bool,
}

impl CliError {
    /// An error with `status` and `message`.
    #[must_use]
    pub fn new(status: Status, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            broken_pipe: false,
        }
    }

    /// An error about `what`, from the library, prefixed with `context`.
    #[must_use]
    pub fn persist(context: &str, error: &PersistError) -> Self {
        let message = if context.is_empty() {
            error.to_string()
        } else {
            format!("{context}: {error}")
        };
        Self::new(Status::of_error(error), message)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

impl From<PersistError> for CliError {
    fn from(error: PersistError) -> Self {
        Self::persist("", &error)
    }
}

impl From<io::Error> for CliError {
    /// Errors writing the report to standard output.
    fn from(error: io::Error) -> Self {
        let broken_pipe = error.kind() == io::ErrorKind::BrokenPipe;
        Self {
            status: Status::Io,
            message: format!("writing output: {error}"),
            broken_pipe,
        }
    }
}

/// The result of a command: its exit status, or an error.
pub(crate) type CliResult = Result<Status, CliError>;

/// The exit-code table, as shown in every `--help`.
macro_rules! exit_codes {
    () => {
        "Exit codes:
  0  healthy / success (a torn log tail is only a warning)
  1  corruption found (damage a crash cannot explain, or not an iqdb-persist file)
  2  usage error (bad arguments)
  3  I/O error (not found, permission denied, ...)
  4  locked by another writer (or the replica's lease is held by another replicator)
  5  a check failed, or another failure
  6  fenced: another replicator took the replica over while this one ran
  7  restore: restored an earlier point, because the latest one is damaged
  8  restore: restored nothing (empty replica, or no point matches --at)"
    };
}
pub(crate) use exit_codes;

/// The exit-code table shown in `--help`.
#[cfg(test)]
pub(crate) const EXIT_CODES: &str = exit_codes!();

const TOP_EXAMPLES: &str = concat!(
    "Examples:
  iqdb-persist inspect data/vectors.iqdb
  iqdb-persist verify data/vectors.iqdb --json
  iqdb-persist wal dump data/vectors.iqdb --limit 20
  iqdb-persist repair data/vectors.iqdb --dry-run
  iqdb-persist convert data/vectors.iqdb --to compat
  iqdb-persist demo
  iqdb-persist replicate data/vectors.iqdb --to s3://backups/vectors   # replication feature (default)
  iqdb-persist restore s3://backups/vectors --to /srv/restored --at 120000
  iqdb-persist generations s3://backups/vectors

",
    exit_codes!()
);

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "iqdb-persist",
    version,
    about = "Inspect, verify, dump, repair, benchmark and replicate iqdb-persist databases",
    long_about = "Inspect, verify, dump, repair, benchmark and replicate iqdb-persist databases.\n\n\
        PATH is a database's snapshot file; its write-ahead log is PATH.wal. Only \
        `repair` and `convert` change a database, and only when asked. Human-readable output by \
        default; --json for scripts.",
    after_help = TOP_EXAMPLES,
    propagate_version = true
)]
pub(crate) struct Cli {
    /// Print one JSON document (JSON lines for `wal dump`) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Nothing on stdout (no report, no JSON) and no progress bars: only
    /// errors, on stderr, and the exit code. (Progress bars are also hidden
    /// when stderr is not a terminal.)
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Show a database's snapshot header, its log, pending checkpoint and temporaries.
    Inspect(inspect::InspectArgs),
    /// Check every checksum and log frame; decode and replay registered index types.
    Verify(verify::VerifyArgs),
    /// Write-ahead-log tools.
    #[command(subcommand)]
    Wal(wal::WalCommand),
    /// Cut a torn (or, with --salvage, corrupt) log tail, keeping a backup.
    Repair(repair::RepairArgs),
    /// Rewrite a database in 1.0's formats (compat) or the latest ones.
    Convert(convert::ConvertArgs),
    /// Measure save/load/log throughput beside the raw disk.
    Bench(bench::BenchArgs),
    /// Build, save, crash a writer with SIGKILL, recover, and check every write.
    Demo(demo::DemoArgs),
    /// Ship the snapshot and log to object storage continuously (S3, file://).
    #[cfg(feature = "replication")]
    Replicate(replicate::ReplicateArgs),
    /// Rebuild a database from its replica (latest, --at SEQ or --at TIME).
    #[cfg(feature = "replication")]
    Restore(restore::RestoreArgs),
    /// List a replica's generations, sequence ranges, times, sizes and lease.
    #[cfg(feature = "replication")]
    Generations(generations::GenerationsArgs),
    /// The writer process of `demo` (internal).
    #[command(name = "__demo-writer", hide = true)]
    DemoWriter(demo::WriterArgs),
    /// Panics (internal: tests the panic hook's output).
    #[command(name = "__panic", hide = true)]
    Panic,
}

/// What a command needs besides its arguments.
pub(crate) struct Context<'a> {
    /// Where the report goes (standard output).
    pub out: &'a mut dyn Write,
    /// `--json`.
    pub json: bool,
    /// Whether to draw progress bars.
    pub progress: bool,
    /// The index types that can be decoded.
    pub registry: &'a Registry,
}

impl fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("json", &self.json)
            .field("progress", &self.progress)
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

/// Runs a parsed command line, writing the report to `ctx.out`.
///
/// # Errors
///
/// A [`CliError`] with the exit status and a one-line message.
pub(crate) fn execute(command: &Command, ctx: &mut Context<'_>) -> CliResult {
    match command {
        Command::Inspect(args) => inspect::run(args, ctx),
        Command::Verify(args) => verify::run(args, ctx),
        Command::Wal(wal::WalCommand::Dump(args)) => wal::run_dump(args, ctx),
        Command::Repair(args) => repair::run(args, ctx),
        Command::Convert(args) => convert::run(args, ctx),
        Command::Bench(args) => bench::run(args, ctx),
        Command::Demo(args) => demo::run(args, ctx),
        Command::DemoWriter(args) => demo::run_writer(args, ctx),
        Command::Panic => panic!("a deliberate panic (__panic)"),
        #[cfg(feature = "replication")]
        Command::Replicate(args) => replicate::run(args, ctx),
        #[cfg(feature = "replication")]
        Command::Restore(args) => restore::run(args, ctx),
        #[cfg(feature = "replication")]
        Command::Generations(args) => generations::run(args, ctx),
    }
}

/// Sends log output (`tracing` events: the replicator's retries and
/// warnings, for example) to standard error, filtered by `RUST_LOG`
/// (default: warnings and errors). Call it once, from `main`; a second
/// call does nothing.
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .try_init();
}

/// Runs the command line `args` (the program name first) with the default
/// [`Registry`], and returns the process exit code.
pub fn run<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    run_with(&Registry::with_defaults(), args)
}

/// Runs the command line `args` (the program name first) with `registry`,
/// and returns the process exit code. Errors are printed to stderr as one
/// line; usage errors exit with 2, `--help` and `--version` with 0.
pub fn run_with<I, T>(registry: &Registry, args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    let stdout = io::stdout();
    let mut locked;
    let mut sink;
    let out: &mut dyn Write = if cli.quiet {
        // By convention: nothing on stdout but errors (which go to stderr).
        sink = io::sink();
        &mut sink
    } else {
        locked = stdout.lock();
        &mut locked
    };
    let mut ctx = Context {
        out,
        json: cli.json,
        progress: !cli.quiet && io::stderr().is_terminal(),
        registry,
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        execute(&cli.command, &mut ctx)
    }));
    let status = match result {
        Ok(Ok(status)) => status,
        Ok(Err(e)) if e.broken_pipe => Status::Healthy,
        Ok(Err(e)) => {
            let message = one_line(&e.message);
            if ctx.json {
                // Scripts reading stdout still get one JSON document.
                let doc = serde_json::json!({"error": message, "exit_code": e.status.code()});
                let _ = output::write_json_line(ctx.out, &doc);
            }
            let _ = ctx.out.flush();
            eprintln!("iqdb-persist: error: {message}");
            e.status
        }
        Err(_) => {
            // The panic hook (see main.rs) already printed one line.
            Status::Failed
        }
    };
    if let Err(e) = ctx.out.flush()
        && e.kind() != io::ErrorKind::BrokenPipe
    {
        eprintln!("iqdb-persist: error: writing output: {e}");
        return Status::Io.into();
    }
    status.into()
}

/// Prints a clap error: help and version as clap renders them (exit 0),
/// anything else as one line (exit 2).
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let rendered = e.render().to_string();
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                eprint!("{rendered}");
                return Status::Usage.into();
            }
            let mut out = io::stdout().lock();
            let _ = out.write_all(rendered.as_bytes());
            let _ = out.flush();
            Status::Healthy.into()
        }
        _ => {
            let rendered = e.render().to_string();
            let first = rendered
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("iqdb-persist: error: {first} (see --help)");
            Status::Usage.into()
        }
    }
}

/// Collapses a message to one line.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Where a database's files are, from a PATH argument.
#[derive(Debug, Clone)]
pub(crate) struct DbPaths {
    /// The snapshot.
    pub snapshot: PathBuf,
    /// The write-ahead log (`snapshot` + `.wal`).
    pub wal: PathBuf,
    /// Whether PATH named the log (it ended in `.wal`).
    pub given_log: bool,
}

impl DbPaths {
    /// Resolves PATH: a path ending in `.wal` names the log (the snapshot is
    /// the same path without the suffix); anything else names the snapshot.
    #[must_use]
    pub fn resolve(path: &std::path::Path) -> Self {
        if let Some(name) = path.file_name().and_then(|n| n.to_str())
            && let Some(stem) = name.strip_suffix(".wal")
            && !stem.is_empty()
        {
            let snapshot = path.with_file_name(stem);
            return Self {
                wal: iqdb_persist::PersistConfig::new(&snapshot).wal_path(),
                snapshot,
                given_log: true,
            };
        }
        Self {
            snapshot: path.to_path_buf(),
            wal: iqdb_persist::PersistConfig::new(path).wal_path(),
            given_log: false,
        }
    }

    /// Resolves PATH when it should name a log: as [`resolve`](Self::resolve),
    /// except that an existing file that is not a snapshot and has no
    /// `PATH.wal` beside it is taken as the log itself (for example a
    /// `.salvaged-…` backup). Only the snapshot header is read to decide.
    #[must_use]
    pub fn resolve_log(path: &std::path::Path) -> Self {
        let resolved = Self::resolve(path);
        if resolved.given_log {
            return resolved;
        }
        let options = iqdb_persist::Options::default();
        let fs = options.get_file_system();
        let has_log = fs.exists(&resolved.wal).unwrap_or(false);
        let exists = fs.exists(path).unwrap_or(false);
        if !has_log
            && exists
            && iqdb_persist::inspect::snapshot_info(fs.as_ref(), path, false).is_err()
        {
            return Self {
                snapshot: path.to_path_buf(),
                wal: path.to_path_buf(),
                given_log: true,
            };
        }
        resolved
    }

    /// A WAL-mode configuration for the database.
    #[must_use]
    pub fn config(&self) -> iqdb_persist::PersistConfig {
        let mut config = iqdb_persist::PersistConfig::new(&self.snapshot);
        config.wal_enabled = true;
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn resolve_snapshot_and_log_paths() {
        let p = DbPaths::resolve(Path::new("/d/db.iqdb"));
        assert_eq!(p.snapshot, Path::new("/d/db.iqdb"));
        assert_eq!(p.wal, Path::new("/d/db.iqdb.wal"));
        assert!(!p.given_log);
        let p = DbPaths::resolve(Path::new("/d/db.iqdb.wal"));
        assert_eq!(p.snapshot, Path::new("/d/db.iqdb"));
        assert_eq!(p.wal, Path::new("/d/db.iqdb.wal"));
        assert!(p.given_log);
        let p = DbPaths::resolve(Path::new("rel.wal"));
        assert_eq!(p.snapshot, Path::new("rel"));
    }

    #[test]
    fn status_codes_are_distinct_and_documented() {
        let all = [
            Status::Healthy,
            Status::Corrupt,
            Status::Usage,
            Status::Io,
            Status::Locked,
            Status::Failed,
            Status::Fenced,
            Status::RestoredEarlier,
            Status::NothingToRestore,
        ];
        let mut codes: Vec<u8> = all.iter().map(|s| s.code()).collect();
        codes.dedup();
        assert_eq!(codes, vec![0, 1, 2, 3, 4, 5, 6, 7, 8]);
        for s in all {
            assert!(EXIT_CODES.contains(&format!("  {}  ", s.code())));
        }
        assert!(TOP_EXAMPLES.ends_with(EXIT_CODES));
    }

    #[test]
    fn worst_prefers_io_and_locks() {
        assert_eq!(Status::Healthy.worst(Status::Corrupt), Status::Corrupt);
        assert_eq!(Status::Io.worst(Status::Corrupt), Status::Io);
        assert_eq!(Status::Corrupt.worst(Status::Healthy), Status::Corrupt);
    }

    #[test]
    fn a_custom_registry_decides_what_verify_decodes() -> Result<(), Box<dyn std::error::Error>> {
        use iqdb_persist::{PersistConfig, PersistedIndex};
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("db.iqdb");
        let store =
            iqdb_persist_testkit::generate::store(1, 20, 4, iqdb_types::DistanceMetric::Cosine);
        PersistedIndex::open_with(store, PersistConfig::new(&path))?.save()?;
        let verify = |registry: &Registry| -> Result<(Status, String), Box<dyn std::error::Error>> {
            let cli =
                Cli::try_parse_from(["iqdb-persist", "verify", path.to_str().ok_or("path")?])?;
            let mut out = Vec::new();
            let mut ctx = Context {
                out: &mut out,
                json: false,
                progress: false,
                registry,
            };
            let status = execute(&cli.command, &mut ctx).map_err(|e| e.message)?;
            Ok((status, String::from_utf8(out)?))
        };
        let (status, text) = verify(&Registry::empty())?;
        assert_eq!(status, Status::Healthy);
        assert!(text.contains("no loader is registered"), "{text}");

        let mut registry = Registry::empty();
        registry.register_loader(iqdb_persist_testkit::INDEX_TYPE, |config, options| {
            let (index, report) = iqdb_persist::inspect::load_read_only::<
                iqdb_persist_testkit::VectorStore,
            >(config, options)?;
            let mut summary = IndexSummary::basic("custom", &index);
            summary
                .details
                .push(("answer".to_string(), "42".to_string()));
            Ok(LoadOutcome { summary, report })
        });
        let (status, text) = verify(&registry)?;
        assert_eq!(status, Status::Healthy);
        assert!(text.contains("answer               42"), "{text}");
        assert!(text.contains("vectors              20"), "{text}");
        Ok(())
    }

    /// An index type no loader is registered for: `convert` re-frames a
    /// snapshot without decoding it, but refuses (exit 5, nothing changed)
    /// while its log holds operations.
    #[test]
    fn convert_without_a_loader_refuses_a_log_with_operations()
    -> Result<(), Box<dyn std::error::Error>> {
        use iqdb_persist::{PersistConfig, PersistedIndex};
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("db.iqdb");
        let mut config = PersistConfig::new(&path);
        config.wal_enabled = true;
        let store =
            iqdb_persist_testkit::generate::store(1, 20, 4, iqdb_types::DistanceMetric::Cosine);
        let mut db = PersistedIndex::open_with(store, config)?;
        for (id, v, m) in iqdb_persist_testkit::generate::records(2, 20..23, 4) {
            db.insert(id, v, m)?;
        }
        db.sync()?;
        drop(db);
        let p = path.to_str().ok_or("path")?;
        let registry = Registry::empty();
        let run = |args: &[&str]| -> Result<CliResult, clap::Error> {
            let cli = Cli::try_parse_from(args)?;
            let mut out = Vec::new();
            let mut ctx = Context {
                out: &mut out,
                json: false,
                progress: false,
                registry: &registry,
            };
            Ok(execute(&cli.command, &mut ctx))
        };
        let before = std::fs::read(&path)?;
        let Err(err) = run(&["iqdb-persist", "convert", p, "--to", "compat"])? else {
            return Err("converted a log with operations".into());
        };
        assert_eq!(err.status, Status::Failed);
        assert!(err.message.contains("3 operation(s)"), "{}", err.message);
        assert!(err.message.contains("flush()"), "{}", err.message);
        assert_eq!(std::fs::read(&path)?, before);

        let mut config = PersistConfig::new(&path);
        config.wal_enabled = true;
        let mut handle = PersistedIndex::<iqdb_persist_testkit::VectorStore>::load(config)?;
        handle.checkpoint()?;
        drop(handle);
        let status =
            run(&["iqdb-persist", "convert", p, "--to", "compat"])?.map_err(|e| e.message)?;
        assert_eq!(status, Status::Healthy);
        Ok(())
    }

    #[test]
    fn clap_definition_is_valid() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
