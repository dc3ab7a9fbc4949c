//! Which on-disk formats a database is written in, and converting it.
//!
//! The rule (see the README, "File formats and rolling back"):
//!
//! 1. A format set explicitly in [`Options`] ([`Options::snapshot_format`],
//!    [`Options::wal_format`], [`Options::format_policy`],
//!    [`Options::compat_1_0`]) is used.
//! 2. Otherwise the [`FORMAT_ENV`] environment variable
//!    (`IQDB_PERSIST_FORMAT=compat|latest|keep`), for programs that cannot
//!    pass `Options` (such as the `iqdb` crate). It is read once per process;
//!    an unknown value makes every open and load fail with
//!    [`PersistError::InvalidSetting`], whatever else is set, so a typo is
//!    never silently ignored.
//! 3. Otherwise [`FormatPolicy::Keep`]: each file is written back in the
//!    format it was found in (a snapshot v1 as v2, the other format 1.0
//!    reads), so a database 1.0 wrote stays readable by 1.0, checkpoints
//!    included; a new database gets the latest formats (snapshot v3, WAL v2).
//!
//! [`convert`] rewrites a database in the chosen formats, both ways.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use crate::config::PersistConfig;
use crate::error::{PersistError, Result};
use crate::options::{Options, SnapshotFormat, WalFormat};
use crate::persisted::PersistedIndex;
use crate::snapshot::{HeaderFacts, WriteSettings, WrittenSnapshot};
use crate::storage::{FileHandle, FileSystem};
use crate::{Persistable, replace, snapshot};

/// The environment variable that chooses the formats when the program does
/// not: `compat` (1.0's formats), `latest` (snapshot v3, WAL v2) or `keep`
/// (the default: keep what is on disk, the latest for a new database).
pub const FORMAT_ENV: &str = "IQDB_PERSIST_FORMAT";

/// Which formats a database's files are written in.
///
/// ```
/// use iqdb_persist::{FormatPolicy, Options, SnapshotFormat, WalFormat};
///
/// assert_eq!(FormatPolicy::parse("compat").unwrap(), FormatPolicy::Compat);
/// assert!(FormatPolicy::parse("v3").is_err());
///
/// let options = Options::new().format_policy(FormatPolicy::Compat);
/// assert_eq!(options.get_snapshot_format(), SnapshotFormat::V2);
/// assert_eq!(options.get_wal_format(), WalFormat::V1);
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum FormatPolicy {
    /// Write each file back in the format it was found in: a database in
    /// 1.0's formats (snapshot v1/v2, WAL v1) stays in them, checkpoints
    /// included, so 1.0 can still open it. A new database gets the latest
    /// formats. The default.
    #[default]
    Keep,
    /// 1.0's formats, snapshot v2 and WAL v1, for every database: a database
    /// in the newer formats is written back in 1.0's at its next checkpoint
    /// (and an empty log at once).
    Compat,
    /// The latest formats, snapshot v3 and WAL v2, for every database: a 1.0
    /// database is upgraded at its next checkpoint (and an empty log at
    /// once), after which 1.0 cannot open it.
    Latest,
}

impl FormatPolicy {
    /// Parses a setting: `compat`, `latest` or `keep` (ASCII case and
    /// surrounding blanks ignored).
    ///
    /// # Errors
    ///
    /// [`PersistError::InvalidSetting`] for anything else.
    pub fn parse(value: &str) -> Result<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "compat" => Ok(Self::Compat),
            "latest" => Ok(Self::Latest),
            "keep" => Ok(Self::Keep),
            _ => Err(PersistError::InvalidSetting {
                name: FORMAT_ENV,
                value: value.to_string(),
                expected: "compat, latest or keep",
            }),
        }
    }

    /// The setting's name: `compat`, `latest` or `keep`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Keep => "keep",
            Self::Compat => "compat",
            Self::Latest => "latest",
        }
    }

    /// The policy [`FORMAT_ENV`] sets in this process, if it is set. The
    /// variable is read once, the first time it is needed; later changes to
    /// the environment are not seen.
    ///
    /// # Errors
    ///
    /// [`PersistError::InvalidSetting`] if its value is not one of
    /// [`parse`](Self::parse)'s (or not UTF-8).
    pub fn from_env() -> Result<Option<Self>> {
        match env_value() {
            None => Ok(None),
            Some(raw) => match raw.to_str() {
                Some(text) => Self::parse(text).map(Some),
                None => Err(PersistError::InvalidSetting {
                    name: FORMAT_ENV,
                    value: raw.to_string_lossy().into_owned(),
                    expected: "compat, latest or keep",
                }),
            },
        }
    }
}

/// The value of [`FORMAT_ENV`], read the first time it is asked for.
fn env_value() -> Option<&'static std::ffi::OsString> {
    static VALUE: OnceLock<Option<std::ffi::OsString>> = OnceLock::new();
    VALUE.get_or_init(|| std::env::var_os(FORMAT_ENV)).as_ref()
}

/// The format versions of a database's files as found on disk (`None`: the
/// file is absent or its header unreadable).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct OnDisk {
    /// The snapshot's version.
    pub snapshot: Option<u32>,
    /// The log's version.
    pub wal: Option<u32>,
}

impl OnDisk {
    /// Reads the headers of the database's files (only the headers). While
    /// an interrupted checkpoint's intent names the snapshot in place, the
    /// log is the one that checkpoint is about to create, in the version the
    /// intent records.
    pub(crate) fn read(fs: &dyn FileSystem, config: &PersistConfig) -> Self {
        let meta = snapshot::inspect_snapshot_file(fs, &config.path, false, 1).ok();
        let completing = meta.as_ref().and_then(|meta| {
            match crate::checkpoint::read(fs, &config.checkpoint_path()) {
                Ok(Some(intent)) if intent.snapshot == meta.fingerprint() => {
                    Some(intent.wal_version)
                }
                _ => None,
            }
        });
        Self {
            snapshot: meta.map(|meta| meta.header.version),
            wal: completing.or_else(|| wal_version(fs, &config.wal_path())),
        }
    }

    /// Whether every file present is in a format 1.0 reads (snapshot v1 or
    /// v2, WAL v1); `None` when there is no snapshot.
    pub(crate) fn readable_by_1_0(self) -> Option<bool> {
        let snapshot = self.snapshot?;
        Some(snapshot <= 2 && self.wal.is_none_or(|v| v == 1))
    }
}

/// The version in the header of the log at `path`, if it parses.
pub(crate) fn wal_version(fs: &dyn FileSystem, path: &Path) -> Option<u32> {
    match crate::wal::reader::open(fs, path, false) {
        Ok(crate::wal::reader::Opened::Log(log)) => Some(log.header.version),
        _ => None,
    }
}

/// The policy in force for `options`: its own, else the environment's,
/// else [`FormatPolicy::Keep`]. The environment is checked even when the
/// options set a policy, so an invalid value is always reported.
pub(crate) fn policy(options: &Options) -> Result<FormatPolicy> {
    let from_env = FormatPolicy::from_env()?;
    Ok(options.get_format_policy().or(from_env).unwrap_or_default())
}

/// `options` with both formats fixed for a database whose files are as
/// `on_disk` says (see the [module docs](self) for the rule).
pub(crate) fn resolve(options: Options, on_disk: OnDisk) -> Result<Options> {
    let policy = policy(&options)?;
    let (snapshot, wal) = formats(
        policy,
        options.explicit_snapshot_format(),
        options.explicit_wal_format(),
        on_disk,
    );
    Ok(options.snapshot_format(snapshot).wal_format(wal))
}

/// The formats `policy` gives, each explicit choice taking precedence.
pub(crate) fn formats(
    policy: FormatPolicy,
    snapshot: Option<SnapshotFormat>,
    wal: Option<WalFormat>,
    on_disk: OnDisk,
) -> (SnapshotFormat, WalFormat) {
    // A database is "in 1.0's formats" by its snapshot, or by its log when it
    // has no readable snapshot.
    let old = match (on_disk.snapshot, on_disk.wal) {
        (Some(version), _) => version <= 2,
        (None, Some(version)) => version == 1,
        (None, None) => false,
    };
    let keep_snapshot = match on_disk.snapshot {
        Some(version) if version <= 2 => SnapshotFormat::V2,
        Some(_) => SnapshotFormat::V3,
        None if old => SnapshotFormat::V2,
        None => SnapshotFormat::V3,
    };
    let keep_wal = match on_disk.wal {
        Some(1) => WalFormat::V1,
        Some(_) => WalFormat::V2,
        None if old => WalFormat::V1,
        None => WalFormat::V2,
    };
    let (policy_snapshot, policy_wal) = match policy {
        FormatPolicy::Keep => (keep_snapshot, keep_wal),
        FormatPolicy::Compat => (SnapshotFormat::V2, WalFormat::V1),
        FormatPolicy::Latest => (SnapshotFormat::V3, WalFormat::V2),
    };
    (
        snapshot.unwrap_or(policy_snapshot),
        wal.unwrap_or(policy_wal),
    )
}

/// What a database's files are written in, whether 1.0 can open them, and
/// what the next checkpoint will write. Returned by [`status`].
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatStatus {
    /// The snapshot's version (`None`: absent or unreadable header).
    pub snapshot_version: Option<u32>,
    /// The log's version (`None`: no log, or its header is incomplete).
    pub wal_version: Option<u32>,
    /// Whether iqdb-persist 1.0 can open the database as it is: snapshot v1
    /// or v2 and, if there is a log, a v1 log (`None`: no readable
    /// snapshot).
    pub readable_by_1_0: Option<bool>,
    /// The value of [`FORMAT_ENV`] in this process, if set.
    pub environment: Option<String>,
    /// The policy in force, or the error an open would fail with (an
    /// invalid [`FORMAT_ENV`]).
    pub policy: std::result::Result<FormatPolicy, String>,
    /// Where the policy comes from: `"options"`, `"environment"` or
    /// `"default"`.
    pub policy_source: &'static str,
    /// The formats the next checkpoint (or save) with these options writes.
    pub next: Option<(SnapshotFormat, WalFormat)>,
}

/// Reads the headers of the database at `config.path` (and its log) and
/// says what they are and what `options` would write next. Changes nothing.
#[must_use]
pub fn status(fs: &dyn FileSystem, config: &PersistConfig, options: &Options) -> FormatStatus {
    let on_disk = OnDisk::read(fs, config);
    let environment = env_value().map(|v| v.to_string_lossy().into_owned());
    let policy_source = if options.get_format_policy().is_some() {
        "options"
    } else if environment.is_some() {
        "environment"
    } else {
        "default"
    };
    let policy = policy(options).map_err(|e| e.to_string());
    let next = policy.as_ref().ok().map(|&policy| {
        formats(
            policy,
            options.explicit_snapshot_format(),
            options.explicit_wal_format(),
            on_disk,
        )
    });
    FormatStatus {
        snapshot_version: on_disk.snapshot,
        wal_version: on_disk.wal,
        readable_by_1_0: on_disk.readable_by_1_0(),
        environment,
        policy,
        policy_source,
        next,
    }
}

/// What [`convert`] found and did.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertReport {
    /// Snapshot version before.
    pub snapshot_before: u32,
    /// Log version before (`None`: no log, a snapshot-only database).
    pub wal_before: Option<u32>,
    /// Snapshot version after.
    pub snapshot_after: u32,
    /// Log version after.
    pub wal_after: Option<u32>,
    /// Logged operations replayed onto the snapshot and folded into the new
    /// one.
    pub operations_folded: u64,
    /// Vectors in the database.
    pub vectors: u64,
    /// Whether files were rewritten (false for a dry run).
    pub rewritten: bool,
}

impl ConvertReport {
    /// Whether iqdb-persist 1.0 can open the database as it is after the
    /// conversion (snapshot v1/v2 and, if there is one, a v1 log).
    #[must_use]
    pub fn readable_by_1_0(&self) -> bool {
        self.snapshot_after <= 2 && self.wal_after.is_none_or(|v| v == 1)
    }
}

/// Rewrites the database at `config.path` in the formats of `to`
/// ([`FormatPolicy::Compat`]: snapshot v2 and WAL v1, which 1.0 opens;
/// [`FormatPolicy::Latest`]: snapshot v3 and WAL v2), keeping every
/// acknowledged write.
///
/// It loads the database (replaying its log, under the writer lock, which
/// it holds until it returns) and checkpoints it with the new formats: the
/// checkpoint protocol makes it crash-safe (a crash leaves the old files or
/// the new ones, and the next load finishes or abandons the conversion).
/// Whether the database has a log decides the mode: with `PATH.wal` present
/// it is loaded in WAL mode, otherwise as a snapshot-only database.
/// `config.wal_enabled` is ignored. With `dry_run`, nothing is loaded or
/// written: the report says what would change.
///
/// [`FormatPolicy::Keep`] rewrites each file in its own format (a v1
/// snapshot becomes v2); the log is folded into the snapshot either way.
///
/// # Errors
///
/// What loading and checkpointing return (for example
/// [`PersistError::Locked`] while another handle writes); the database is
/// unchanged unless the checkpoint got as far as installing its snapshot, in
/// which case the next load completes it.
pub fn convert<I: Persistable>(
    config: &PersistConfig,
    to: FormatPolicy,
    options: Options,
    dry_run: bool,
) -> Result<ConvertReport> {
    let fs = options.get_file_system().clone();
    let before = OnDisk::read(fs.as_ref(), config);
    let mut config = config.clone();
    config.wal_enabled = fs.exists(&config.wal_path()).unwrap_or(false);
    let options = options
        .error_locations(true)
        .format_policy(to)
        .clear_explicit_formats();
    let (snapshot_after, wal_after) = formats(to, None, None, before);
    let Some(snapshot_before) = before.snapshot else {
        // Let load say what is wrong with the snapshot.
        PersistedIndex::<I>::load_with_options(config, options)?;
        return Err(PersistError::InvalidPayload {
            reason: "the snapshot's header could not be read",
        });
    };
    let mut report = ConvertReport {
        snapshot_before,
        wal_before: before.wal,
        snapshot_after: snapshot_after.version(),
        wal_after: config.wal_enabled.then(|| wal_after.version()),
        operations_folded: 0,
        vectors: 0,
        rewritten: false,
    };
    if dry_run {
        return Ok(report);
    }
    let mut db = PersistedIndex::<I>::load_with_options(config, options)?;
    db.checkpoint()?;
    report.operations_folded = db.recovery_report().operations_applied;
    report.vectors = iqdb_index::IndexCore::len(db.index()) as u64;
    report.rewritten = true;
    Ok(report)
}

/// Rewrites the database at `config.path` in the formats of `to` without
/// knowing its index type: the snapshot's payload is copied, every byte
/// verified, into a snapshot of the new format (the index never decodes it),
/// and the log is replaced by an empty one of the new format, with the
/// checkpoint protocol under the writer lock (crash-safe as a checkpoint).
///
/// Because replaying a log needs the index's code, this works only when the
/// log holds no operations (as after a checkpoint, or after `iqdb`'s
/// `flush()` or `close()`); otherwise it fails with
/// [`PersistError::WouldOverwrite`] and changes nothing: checkpoint the
/// database first, or use [`convert`] with its type. A database without a
/// log is converted as a snapshot-only database. With `dry_run`, nothing is
/// locked or written.
///
/// # Errors
///
/// [`PersistError::WouldOverwrite`] as said; [`PersistError::Locked`] while
/// another handle writes; what reading the snapshot returns for a damaged
/// one (with its location); I/O errors.
pub fn convert_files(
    config: &PersistConfig,
    to: FormatPolicy,
    options: Options,
    dry_run: bool,
) -> Result<ConvertReport> {
    let fs = options.get_file_system().clone();
    let wal_mode = fs.exists(&config.wal_path()).unwrap_or(false);
    let before = OnDisk::read(fs.as_ref(), config);
    let (snapshot_format, wal_format) = formats(to, None, None, before);
    let meta = snapshot::inspect_snapshot_file(fs.as_ref(), &config.path, false, 1)?;
    let mut report = ConvertReport {
        snapshot_before: meta.header.version,
        wal_before: before.wal,
        snapshot_after: snapshot_format.version(),
        wal_after: wal_mode.then(|| wal_format.version()),
        operations_folded: 0,
        vectors: meta.header.n_vectors as u64,
        rewritten: false,
    };
    let lock = if dry_run {
        None
    } else {
        Some(crate::lock::acquire(fs.as_ref(), config)?)
    };
    let mut next_seq = meta.last_seq().map_or(1, |seq| seq + 1);
    if wal_mode {
        let pending =
            crate::recovery::pending_operations(fs.as_ref(), config, Some(meta.fingerprint()))?;
        if pending > 0 {
            return Err(PersistError::WouldOverwrite {
                path: config.wal_path(),
                pending_operations: pending,
            });
        }
        if let Some(info) = crate::inspect::scan_log(fs.as_ref(), &config.wal_path(), |_| {
            std::ops::ControlFlow::Continue(())
        })? {
            next_seq = next_seq.max(info.next_seq);
        }
    }
    if dry_run {
        return Ok(report);
    }
    let options = options
        .clear_explicit_formats()
        .snapshot_format(snapshot_format)
        .wal_format(wal_format);
    let raw = RawSnapshot {
        fs: fs.as_ref(),
        path: &config.path,
        threads: options.effective_threads(),
    };
    if wal_mode {
        crate::persisted::install(&raw, config, &options, next_seq)?;
    } else {
        let settings = WriteSettings {
            format: snapshot_format,
            compression: config.compression,
            chunk_size: options.get_chunk_size(),
            threads: options.effective_threads(),
            last_seq: next_seq.saturating_sub(1),
        };
        replace::sweep_stale_temps(fs.as_ref(), &config.path)?;
        replace::write_atomically(&fs, &config.path, |file, temp| {
            snapshot::Source::write_to(&raw, file, temp, &settings)
        })?;
    }
    drop(lock);
    report.rewritten = true;
    Ok(report)
}

/// The payload of the snapshot at `path`, copied verified into a snapshot
/// of another format.
struct RawSnapshot<'a> {
    fs: &'a dyn FileSystem,
    path: &'a Path,
    threads: usize,
}

impl snapshot::Source for RawSnapshot<'_> {
    fn write_to(
        &self,
        file: &Arc<dyn FileHandle>,
        path: &Path,
        settings: &WriteSettings,
    ) -> Result<WrittenSnapshot> {
        snapshot::copy_payload(self.fs, self.path, self.threads, |meta, reader| {
            let facts = HeaderFacts {
                index_type: meta.header.index_type.clone(),
                dim: meta.header.dim,
                metric: meta.header.metric,
                n_vectors: meta.header.n_vectors,
            };
            let source = self.path;
            let mut save = |writer: &mut dyn std::io::Write| {
                std::io::copy(reader, writer)
                    .map(drop)
                    .map_err(|e| PersistError::io(source, e))
            };
            snapshot::write_payload(file, path, facts, &mut save, settings)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(snapshot: Option<u32>, wal: Option<u32>) -> OnDisk {
        OnDisk { snapshot, wal }
    }

    #[test]
    fn keep_writes_back_what_is_on_disk() {
        let keep = |d| formats(FormatPolicy::Keep, None, None, d);
        use SnapshotFormat::{V2, V3};
        use WalFormat::{V1, V2 as W2};
        assert_eq!(keep(disk(Some(1), Some(1))), (V2, V1));
        assert_eq!(keep(disk(Some(2), Some(1))), (V2, V1));
        assert_eq!(keep(disk(Some(2), None)), (V2, V1));
        assert_eq!(keep(disk(None, Some(1))), (V2, V1));
        assert_eq!(keep(disk(Some(3), Some(2))), (V3, W2));
        assert_eq!(keep(disk(Some(3), None)), (V3, W2));
        assert_eq!(keep(disk(Some(2), Some(2))), (V2, W2));
        assert_eq!(keep(disk(None, None)), (V3, W2), "a new database");
    }

    #[test]
    fn policies_and_explicit_choices() {
        use SnapshotFormat::{V2, V3};
        use WalFormat::{V1, V2 as W2};
        let old = disk(Some(2), Some(1));
        let new = disk(Some(3), Some(2));
        assert_eq!(formats(FormatPolicy::Latest, None, None, old), (V3, W2));
        assert_eq!(formats(FormatPolicy::Compat, None, None, new), (V2, V1));
        assert_eq!(formats(FormatPolicy::Keep, Some(V3), None, old), (V3, V1));
        assert_eq!(
            formats(FormatPolicy::Compat, None, Some(W2), disk(None, None)),
            (V2, W2)
        );
    }

    #[test]
    fn parse_accepts_the_documented_values_only() {
        assert_eq!(
            FormatPolicy::parse(" Latest ").ok(),
            Some(FormatPolicy::Latest)
        );
        assert_eq!(FormatPolicy::parse("keep").ok(), Some(FormatPolicy::Keep));
        let Err(err) = FormatPolicy::parse("v2") else {
            panic!("v2 is not a policy");
        };
        assert!(matches!(err, PersistError::InvalidSetting { .. }));
        assert_eq!(
            err.to_string(),
            "IQDB_PERSIST_FORMAT=\"v2\" is not a valid setting: expected compat, latest or keep"
        );
        for policy in [
            FormatPolicy::Keep,
            FormatPolicy::Compat,
            FormatPolicy::Latest,
        ] {
            assert_eq!(FormatPolicy::parse(policy.name()).ok(), Some(policy));
        }
    }

    #[test]
    fn readable_by_1_0() {
        assert_eq!(disk(None, Some(1)).readable_by_1_0(), None);
        assert_eq!(disk(Some(2), Some(1)).readable_by_1_0(), Some(true));
        assert_eq!(disk(Some(1), None).readable_by_1_0(), Some(true));
        assert_eq!(disk(Some(2), Some(2)).readable_by_1_0(), Some(false));
        assert_eq!(disk(Some(3), None).readable_by_1_0(), Some(false));
    }
}
