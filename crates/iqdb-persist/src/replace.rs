//! Atomic file replacement and the sweeping of temporaries a crash left.
//!
//! A file is replaced by writing a temporary in the same directory, fsyncing
//! it, renaming it over the target and fsyncing the directory. The rename is
//! atomic, so a reader (or a crash) sees the old file or the new one, never a
//! mix. The steps are split ([`prepare`] then [`PreparedFile::install`]) so
//! the checkpoint protocol can make its intent durable in between.
//!
//! Temporaries are named `<target name>.iqdb-tmp.<pid>.<n>`. A crash leaves
//! one behind; the next save or load of the same target removes those whose
//! process is gone (and 1.0's `<target name>.tmp.<pid>.<nanos>` ones).

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{PersistError, Result};
use crate::storage::{FileHandle, FileSystem};

/// Temporaries of this process that are being written, by file name, so a
/// sweep never deletes a live one. The name alone is the key: it holds this
/// process's id and a number from a process-wide counter, so it is unique
/// among this process's temporaries whichever handle, file system object or
/// spelling of the directory made it (keying by the file system object let
/// a second handle on the same files sweep a first one's live temporary).
static IN_FLIGHT: Mutex<BTreeSet<OsString>> = Mutex::new(BTreeSet::new());

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn in_flight_key(temp: &Path) -> OsString {
    temp.file_name().map(OsStr::to_owned).unwrap_or_default()
}

/// The directory holding `path` (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn file_name(path: &Path) -> Result<&OsStr> {
    path.file_name().ok_or_else(|| {
        PersistError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name"),
        )
    })
}

/// A fully written and fsynced temporary, not yet renamed into place. Dropping
/// it without installing removes the temporary.
#[derive(Debug)]
pub(crate) struct PreparedFile {
    fs: Arc<dyn FileSystem>,
    temp: PathBuf,
    installed: bool,
}

/// Creates a temporary beside `target`, lets `write` fill it, and fsyncs it.
/// On failure the temporary is removed and `target` is untouched.
pub(crate) fn prepare<R>(
    fs: &Arc<dyn FileSystem>,
    target: &Path,
    write: impl FnOnce(&Arc<dyn FileHandle>, &Path) -> Result<R>,
) -> Result<(PreparedFile, R)> {
    let name = file_name(target)?;
    let dir = parent_dir(target);
    let pid = std::process::id();
    let (temp, handle) = loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut temp_name = name.to_owned();
        temp_name.push(format!(".iqdb-tmp.{pid}.{n}"));
        let temp = dir.join(temp_name);
        match fs.create_new(&temp) {
            Ok(handle) => break (temp, handle),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(PersistError::io(&temp, e)),
        }
    };
    if let Ok(mut set) = IN_FLIGHT.lock() {
        set.insert(in_flight_key(&temp));
    }
    let prepared = PreparedFile {
        fs: fs.clone(),
        temp,
        installed: false,
    };
    let value = write(&handle, &prepared.temp)?;
    handle
        .sync_all()
        .map_err(|e| PersistError::io(&prepared.temp, e))?;
    Ok((prepared, value))
}

impl PreparedFile {
    /// Renames the temporary over `target` and fsyncs the directory. After
    /// an error the rename may or may not have happened.
    pub(crate) fn install(mut self, target: &Path) -> Result<()> {
        self.fs
            .rename(&self.temp, target)
            .map_err(|e| PersistError::io(target, e))?;
        self.installed = true;
        let dir = parent_dir(target);
        self.fs.sync_dir(dir).map_err(|e| PersistError::io(dir, e))
    }
}

impl Drop for PreparedFile {
    fn drop(&mut self) {
        if !self.installed {
            // Best effort: a temporary that survives is swept later.
            let _ = self.fs.remove_file(&self.temp);
        }
        if let Ok(mut set) = IN_FLIGHT.lock() {
            set.remove(&in_flight_key(&self.temp));
        }
    }
}

/// Replaces `target` atomically with what `write` produces.
pub(crate) fn write_atomically<R>(
    fs: &Arc<dyn FileSystem>,
    target: &Path,
    write: impl FnOnce(&Arc<dyn FileHandle>, &Path) -> Result<R>,
) -> Result<R> {
    let (prepared, value) = prepare(fs, target, write)?;
    prepared.install(target)?;
    Ok(value)
}

/// Whether `candidate` is a temporary of `target` (ours or 1.0's), and if so
/// the id of the process that made it.
pub(crate) fn temp_owner(target_name: &OsStr, candidate: &OsStr) -> Option<u32> {
    let target = target_name.to_str()?;
    let rest = candidate.to_str()?.strip_prefix(target)?;
    let rest = rest
        .strip_prefix(".iqdb-tmp.")
        .or_else(|| rest.strip_prefix(".tmp."))?;
    let (pid, n) = rest.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if digits(pid) && digits(n) {
        pid.parse().ok()
    } else {
        None
    }
}

/// Removes temporaries of `target` left by saves that can no longer finish:
/// those of dead processes, and this process's own ones not in flight.
/// Returns the paths removed.
pub(crate) fn sweep_stale_temps(fs: &dyn FileSystem, target: &Path) -> Result<Vec<PathBuf>> {
    let name = file_name(target)?;
    let dir = parent_dir(target);
    let entries = match fs.list_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(PersistError::io(dir, e)),
    };
    let own = std::process::id();
    let mut removed = Vec::new();
    for entry in entries {
        let Some(pid) = temp_owner(name, &entry) else {
            continue;
        };
        let path = dir.join(&entry);
        let stale = if pid == own {
            IN_FLIGHT
                .lock()
                .map(|set| !set.contains(&in_flight_key(&path)))
                .unwrap_or(false)
        } else {
            !fs.is_process_alive(pid)
        };
        if stale {
            match fs.remove_file(&path) {
                Ok(()) => removed.push(path),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(PersistError::io(&path, e)),
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StdFileSystem;

    #[test]
    fn recognises_only_exact_temp_patterns() {
        let t = OsStr::new("db.iqdb");
        assert_eq!(temp_owner(t, OsStr::new("db.iqdb.iqdb-tmp.42.7")), Some(42));
        assert_eq!(
            temp_owner(t, OsStr::new("db.iqdb.tmp.42.1700000000")),
            Some(42)
        );
        for other in [
            "db.iqdb",
            "db.iqdb.wal",
            "db.iqdb.tmp.42",
            "db.iqdb.tmp.x.1",
            "db.iqdb.iqdb-tmp.42.7.bak",
            "other.iqdb.tmp.42.7",
            "db.iqdb.wal.iqdb-tmp.42.7",
        ] {
            assert_eq!(temp_owner(t, OsStr::new(other)), None, "{other}");
        }
    }

    #[test]
    fn failed_write_leaves_target_and_no_temp() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| PersistError::io(Path::new("tmp"), e))?;
        let target = dir.path().join("db.iqdb");
        std::fs::write(&target, b"old").map_err(|e| PersistError::io(&target, e))?;
        let fs = StdFileSystem::shared();
        let err = write_atomically(&fs, &target, |file, _| {
            file.write_all_at(b"partial new", 0)
                .map_err(|e| PersistError::io(&target, e))?;
            Err::<(), _>(PersistError::InvalidPayload { reason: "boom" })
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read(&target).ok().as_deref(), Some(&b"old"[..]));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .map_err(|e| PersistError::io(dir.path(), e))?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("db.iqdb")]);
        Ok(())
    }

    #[test]
    fn sweep_removes_dead_and_own_stale_temps_but_not_in_flight() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| PersistError::io(Path::new("tmp"), e))?;
        let target = dir.path().join("db.iqdb");
        let own = std::process::id();
        // A pid that cannot be running (above Linux's pid_max limit).
        let dead = 4_194_399u32;
        for name in [
            format!("db.iqdb.iqdb-tmp.{dead}.1"),
            format!("db.iqdb.tmp.{dead}.123"),
            format!("db.iqdb.iqdb-tmp.{own}.999999"),
            "db.iqdb.wal".to_owned(),
            "unrelated.tmp.1.2".to_owned(),
        ] {
            std::fs::write(dir.path().join(&name), b"x")
                .map_err(|e| PersistError::io(&target, e))?;
        }
        let fs = StdFileSystem::shared();
        let mut swept_while_writing = Vec::new();
        write_atomically(&fs, &target, |file, temp| {
            file.write_all_at(b"new", 0)
                .map_err(|e| PersistError::io(temp, e))?;
            swept_while_writing = sweep_stale_temps(fs.as_ref(), &target)?;
            // The live temporary survived its own sweep.
            assert!(temp.exists());
            Ok(())
        })?;
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .map_err(|e| PersistError::io(dir.path(), e))?
            .filter_map(|e| e.ok().and_then(|e| e.file_name().into_string().ok()))
            .collect();
        names.sort();
        assert_eq!(names, vec!["db.iqdb", "db.iqdb.wal", "unrelated.tmp.1.2"]);
        if cfg!(target_os = "linux") {
            assert_eq!(swept_while_writing.len(), 3);
        }
        Ok(())
    }
}
