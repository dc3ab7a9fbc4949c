//! A simulated file system that crashes: it drops every write not yet
//! fsynced, in all the ways a real disk may.
//!
//! [`SimFs`] implements [`iqdb_persist::storage::FileSystem`] in memory,
//! keeping for each file a *live* image (what reads see) and a *durable*
//! image (what survives power loss), and for the namespace a live and a
//! durable set of names. Like ext4 in its default mode:
//!
//! * file data becomes durable only at `sync_data`/`sync_all` of that file;
//! * creating, renaming and removing names becomes durable only at
//!   `sync_dir` of the directory (a file fsync does not make its name
//!   durable); a crash keeps a prefix of the unsynced ones (ext4's ordered
//!   journal) or, in half the images, any subset (all POSIX promises);
//! * unsynced data reaches the disk in whole 512-byte sectors (or 4 KiB
//!   pages), each written or not, in any order; a file's new length may or
//!   may not reach the disk, and a file extended but not written reads back
//!   zeros.
//!
//! A test runs a workload with [`SimFs::crash_after`] set to operation `k`:
//! that operation happens (possibly partly), then every later operation
//! fails as if the machine lost power. [`SimFs::crash_images`] then builds
//! the disk states the crash could have left, each a fresh `SimFs` to load
//! from. [`SimFs::fail_operation`] instead injects one I/O error (ENOSPC,
//! EIO) at operation `k` and lets the workload go on; a failed fsync drops
//! the file's unsynced writes from the durable path, as Linux does.
//!
//! Every randomized choice comes from a seed, so a failing case replays.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use iqdb_persist::storage::{FileHandle, FileSystem, LockGuard};

use crate::generate::SplitMix64;

/// A number in `0..n` (`n > 0`).
fn below(rng: &mut SplitMix64, n: u64) -> u64 {
    rng.next_u64() % n.max(1)
}

/// An I/O error to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// "No space left on device" (a write may land partly first).
    NoSpace,
    /// A generic I/O error.
    Io,
}

impl Fault {
    fn error(self) -> io::Error {
        match self {
            Self::NoSpace => io::Error::new(io::ErrorKind::StorageFull, "simulated ENOSPC"),
            Self::Io => io::Error::other("simulated EIO"),
        }
    }
}

/// What kind of operation a counted step was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// Creating a file.
    Create,
    /// Writing file data.
    Write,
    /// Truncating or extending a file.
    SetLen,
    /// Syncing a file.
    Sync,
    /// Renaming.
    Rename,
    /// Removing a name.
    Remove,
    /// Syncing a directory.
    SyncDir,
}

#[derive(Debug, Clone)]
enum Pending {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Clone, Default)]
struct Inode {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// Data operations since the last sync, in order.
    pending: Vec<Pending>,
}

#[derive(Debug, Clone)]
enum NameOp {
    Link { name: PathBuf, ino: u64 },
    Rename { from: PathBuf, to: PathBuf },
    Unlink { name: PathBuf },
}

impl NameOp {
    fn dir(&self) -> &Path {
        let name = match self {
            Self::Link { name, .. } | Self::Unlink { name } => name,
            Self::Rename { to, .. } => to,
        };
        name.parent().unwrap_or(Path::new(""))
    }

    fn apply(&self, names: &mut BTreeMap<PathBuf, u64>) {
        match self {
            Self::Link { name, ino } => {
                names.insert(name.clone(), *ino);
            }
            Self::Rename { from, to } => {
                if let Some(ino) = names.remove(from) {
                    names.insert(to.clone(), ino);
                }
            }
            Self::Unlink { name } => {
                names.remove(name);
            }
        }
    }
}

#[derive(Debug, Default)]
struct State {
    inodes: BTreeMap<u64, Inode>,
    next_ino: u64,
    live: BTreeMap<PathBuf, u64>,
    durable: BTreeMap<PathBuf, u64>,
    /// Namespace operations not yet durable, in order.
    pending_names: Vec<NameOp>,
    locks: BTreeSet<PathBuf>,
    ops: u64,
    crash_after: Option<u64>,
    crashed: bool,
    fault: Option<(u64, Fault)>,
    trace: Vec<(u64, OpKind, PathBuf)>,
}

/// A simulated, crashable file system (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

fn crashed_error() -> io::Error {
    io::Error::other("simulated crash: the machine is down")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

impl State {
    /// Counts a mutating operation; decides whether it fails.
    fn step(&mut self, kind: OpKind, path: &Path) -> io::Result<StepOutcome> {
        if self.crashed {
            return Err(crashed_error());
        }
        let n = self.ops;
        self.ops += 1;
        self.trace.push((n, kind, path.to_path_buf()));
        if let Some((at, fault)) = self.fault
            && at == n
        {
            return Ok(StepOutcome::Fault(fault));
        }
        if self.crash_after == Some(n) {
            return Ok(StepOutcome::CrashAfter);
        }
        Ok(StepOutcome::Proceed)
    }

    fn inode_of(&self, path: &Path) -> io::Result<u64> {
        self.live.get(path).copied().ok_or_else(|| not_found(path))
    }

    fn check_alive(&self) -> io::Result<()> {
        if self.crashed {
            Err(crashed_error())
        } else {
            Ok(())
        }
    }
}

enum StepOutcome {
    Proceed,
    /// Do the operation, then crash.
    CrashAfter,
    /// Fail with this error (after a partial effect for writes).
    Fault(Fault),
}

impl SimFs {
    /// An empty file system.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Crash right after mutating operation number `k` (0-based): it takes
    /// effect (a write possibly only partly, in the crash images), then every
    /// later call fails.
    pub fn crash_after(&self, k: u64) {
        self.lock().crash_after = Some(k);
    }

    /// Fail mutating operation number `k` with `fault`, once.
    pub fn fail_operation(&self, k: u64, fault: Fault) {
        self.lock().fault = Some((k, fault));
    }

    /// Crash now.
    pub fn crash_now(&self) {
        self.lock().crashed = true;
    }

    /// Whether the simulated machine has crashed.
    #[must_use]
    pub fn has_crashed(&self) -> bool {
        self.lock().crashed
    }

    /// The number of mutating operations performed so far.
    #[must_use]
    pub fn operation_count(&self) -> u64 {
        self.lock().ops
    }

    /// The kind of every mutating operation so far, in order.
    #[must_use]
    pub fn trace(&self) -> Vec<(u64, OpKind, PathBuf)> {
        self.lock().trace.clone()
    }

    /// The live contents of a file (what a read sees now).
    #[must_use]
    pub fn read_live(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.lock();
        let ino = state.live.get(path)?;
        state.inodes.get(ino).map(|i| i.live.clone())
    }

    /// Replaces the live and durable contents of a file (creating it), as if
    /// written and synced long ago. For setting up tests.
    pub fn put_durable(&self, path: &Path, bytes: &[u8]) {
        let mut state = self.lock();
        let ino = match state.live.get(path) {
            Some(&ino) => ino,
            None => {
                let ino = state.next_ino;
                state.next_ino += 1;
                state.live.insert(path.to_path_buf(), ino);
                state.durable.insert(path.to_path_buf(), ino);
                ino
            }
        };
        state.inodes.insert(
            ino,
            Inode {
                live: bytes.to_vec(),
                durable: bytes.to_vec(),
                pending: Vec::new(),
            },
        );
    }

    /// The names that exist now, sorted.
    #[must_use]
    pub fn live_names(&self) -> Vec<PathBuf> {
        self.lock().live.keys().cloned().collect()
    }

    /// The disk image with everything durable and nothing else: what power
    /// loss right now would leave in the most pessimistic case.
    #[must_use]
    pub fn durable_image(&self) -> SimFs {
        let state = self.lock();
        image(&state, &state.durable, |_, inode| inode.durable.clone())
    }

    /// The disk image as it is live (as if everything had been synced): what
    /// kill -9 of the process leaves (the page cache survives).
    #[must_use]
    pub fn live_image(&self) -> SimFs {
        let state = self.lock();
        image(&state, &state.live, |_, inode| inode.live.clone())
    }

    /// Disk images a power loss now could leave: the pessimistic one, the
    /// optimistic one, and `random` more that keep a seeded random prefix of
    /// the namespace operations and, per file, a random subset of the
    /// sectors its unsynced writes changed (or only its new length, the
    /// data zero-filled).
    #[must_use]
    pub fn crash_images(&self, seed: u64, random: usize) -> Vec<SimFs> {
        let mut out = vec![self.durable_image(), self.live_image()];
        let state = self.lock();
        let mut rng = SplitMix64::new(seed);
        for _ in 0..random {
            let mut names = state.durable.clone();
            if below(&mut rng, 2) == 0 {
                // Metadata reached the disk in order (ext4's journal).
                let keep = below(&mut rng, state.pending_names.len() as u64 + 1) as usize;
                for op in &state.pending_names[..keep] {
                    op.apply(&mut names);
                }
            } else {
                // Any subset: POSIX orders nothing without a directory fsync.
                for op in &state.pending_names {
                    if below(&mut rng, 2) == 0 {
                        op.apply(&mut names);
                    }
                }
            }
            let zero_fill = below(&mut rng, 4) == 0;
            let mut choices: HashMap<u64, Vec<u8>> = HashMap::new();
            for (&ino, inode) in &state.inodes {
                choices.insert(ino, crash_contents(inode, &mut rng, zero_fill));
            }
            out.push(image(&state, &names, |ino, _| {
                choices.get(&ino).cloned().unwrap_or_default()
            }));
        }
        out
    }
}

/// One possible post-crash content of a file. The disk writes whole
/// sectors (512 bytes, or 4 KiB pages) atomically but in any order: each
/// unit the unsynced writes changed holds either its old or its new bytes,
/// and the file's length is its old or its new one. With `zero_fill`, the
/// new length reached the disk and none of the new data did.
fn crash_contents(inode: &Inode, rng: &mut SplitMix64, zero_fill: bool) -> Vec<u8> {
    if inode.pending.is_empty() {
        return inode.durable.clone();
    }
    if zero_fill {
        let mut data = inode.durable.clone();
        data.resize(inode.live.len(), 0);
        return data;
    }
    let unit: usize = if below(rng, 2) == 0 { 512 } else { 4096 };
    let len = if below(rng, 2) == 0 {
        inode.durable.len()
    } else {
        inode.live.len()
    };
    let byte = |src: &Vec<u8>, at: usize| src.get(at).copied().unwrap_or(0);
    let mut data = vec![0u8; len];
    for start in (0..len).step_by(unit) {
        let end = (start + unit).min(len);
        let take_new = below(rng, 2) == 0;
        let src = if take_new {
            &inode.live
        } else {
            &inode.durable
        };
        for (at, slot) in data[start..end].iter_mut().enumerate() {
            *slot = byte(src, start + at);
        }
    }
    data
}

fn write_into(data: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let end = offset as usize + bytes.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    data[offset as usize..end].copy_from_slice(bytes);
}

/// A fresh file system holding `names`, each file's content chosen by
/// `content`, everything durable.
fn image(
    state: &State,
    names: &BTreeMap<PathBuf, u64>,
    content: impl Fn(u64, &Inode) -> Vec<u8>,
) -> SimFs {
    let fs = SimFs::new();
    {
        let mut new = fs.lock();
        let mut map: HashMap<u64, u64> = HashMap::new();
        for (name, ino) in names {
            let Some(inode) = state.inodes.get(ino) else {
                continue;
            };
            let new_ino = *map.entry(*ino).or_insert_with(|| {
                let n = new.next_ino;
                new.next_ino += 1;
                let bytes = content(*ino, inode);
                new.inodes.insert(
                    n,
                    Inode {
                        live: bytes.clone(),
                        durable: bytes,
                        pending: Vec::new(),
                    },
                );
                n
            });
            new.live.insert(name.clone(), new_ino);
            new.durable.insert(name.clone(), new_ino);
        }
    }
    fs
}

#[derive(Debug)]
struct SimFile {
    fs: SimFs,
    ino: u64,
    path: PathBuf,
    writable: bool,
}

#[derive(Debug)]
struct SimLock {
    fs: SimFs,
    path: PathBuf,
}

impl LockGuard for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        self.fs.lock().locks.remove(&self.path);
    }
}

impl SimFs {
    /// Runs a counted namespace operation: it fails as an injected fault
    /// says, or takes effect through `apply` and then, at the crash point,
    /// crashes the machine.
    fn namespace_op<R>(
        &self,
        kind: OpKind,
        path: &Path,
        check: impl FnOnce(&State) -> io::Result<()>,
        apply: impl FnOnce(&mut State) -> R,
    ) -> io::Result<R> {
        let mut state = self.lock();
        state.check_alive()?;
        check(&state)?;
        let outcome = state.step(kind, path)?;
        if let StepOutcome::Fault(f) = outcome {
            return Err(f.error());
        }
        let value = apply(&mut state);
        if matches!(outcome, StepOutcome::CrashAfter) {
            state.crashed = true;
            return Err(crashed_error());
        }
        Ok(value)
    }
}

impl FileSystem for SimFs {
    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>> {
        let state = self.lock();
        state.check_alive()?;
        let ino = state.inode_of(path)?;
        Ok(Arc::new(SimFile {
            fs: self.clone(),
            ino,
            path: path.to_path_buf(),
            writable: false,
        }))
    }

    fn open_write(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>> {
        let state = self.lock();
        state.check_alive()?;
        let ino = state.inode_of(path)?;
        Ok(Arc::new(SimFile {
            fs: self.clone(),
            ino,
            path: path.to_path_buf(),
            writable: true,
        }))
    }

    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>> {
        let exists = |state: &State| {
            if state.live.contains_key(path) {
                Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists", path.display()),
                ))
            } else {
                Ok(())
            }
        };
        let ino = self.namespace_op(OpKind::Create, path, exists, |state| {
            let ino = state.next_ino;
            state.next_ino += 1;
            state.inodes.insert(ino, Inode::default());
            state.live.insert(path.to_path_buf(), ino);
            state.pending_names.push(NameOp::Link {
                name: path.to_path_buf(),
                ino,
            });
            ino
        })?;
        Ok(Arc::new(SimFile {
            fs: self.clone(),
            ino,
            path: path.to_path_buf(),
            writable: true,
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let found = |state: &State| state.inode_of(from).map(drop);
        self.namespace_op(OpKind::Rename, to, found, |state| {
            if let Some(ino) = state.live.remove(from) {
                state.live.insert(to.to_path_buf(), ino);
            }
            state.pending_names.push(NameOp::Rename {
                from: from.to_path_buf(),
                to: to.to_path_buf(),
            });
        })
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let found = |state: &State| state.inode_of(path).map(drop);
        self.namespace_op(OpKind::Remove, path, found, |state| {
            state.live.remove(path);
            state.pending_names.push(NameOp::Unlink {
                name: path.to_path_buf(),
            });
        })
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.namespace_op(
            OpKind::SyncDir,
            dir,
            |_| Ok(()),
            |state| {
                // Metadata reaches the disk in order: everything up to and
                // including the last operation on this directory.
                let last = state.pending_names.iter().rposition(|op| op.dir() == dir);
                if let Some(last) = last {
                    let done: Vec<NameOp> = state.pending_names.drain(..=last).collect();
                    let mut durable = std::mem::take(&mut state.durable);
                    for op in &done {
                        op.apply(&mut durable);
                    }
                    state.durable = durable;
                }
            },
        )
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        let state = self.lock();
        state.check_alive()?;
        Ok(state
            .live
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(ToOwned::to_owned))
            .collect())
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let state = self.lock();
        state.check_alive()?;
        Ok(state.live.contains_key(path))
    }

    fn try_lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        let mut state = self.lock();
        state.check_alive()?;
        if !state.locks.insert(path.to_path_buf()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(Box::new(SimLock {
            fs: self.clone(),
            path: path.to_path_buf(),
        }))
    }

    fn is_process_alive(&self, pid: u32) -> bool {
        // Every process that wrote to a crashed disk is gone; this one is
        // the only one running.
        pid == std::process::id()
    }
}

impl SimFile {
    fn with_inode<R>(
        &self,
        kind: Option<OpKind>,
        f: impl FnOnce(&mut State, &mut StepOutcome) -> io::Result<R>,
    ) -> io::Result<R> {
        let mut state = self.fs.lock();
        state.check_alive()?;
        let mut outcome = match kind {
            Some(kind) => state.step(kind, &self.path)?,
            None => StepOutcome::Proceed,
        };
        if !state.inodes.contains_key(&self.ino) {
            return Err(not_found(&self.path));
        }
        let result = f(&mut state, &mut outcome);
        if matches!(outcome, StepOutcome::CrashAfter) {
            state.crashed = true;
            return Err(crashed_error());
        }
        result
    }
}

impl FileHandle for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.with_inode(None, |state, _| {
            let inode = &state.inodes[&self.ino];
            let start = (offset as usize).min(inode.live.len());
            let n = buf.len().min(inode.live.len() - start);
            buf[..n].copy_from_slice(&inode.live[start..start + n]);
            Ok(n)
        })
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "file opened read-only",
            ));
        }
        self.with_inode(Some(OpKind::Write), |state, outcome| {
            let inode = state
                .inodes
                .get_mut(&self.ino)
                .ok_or_else(|| not_found(&self.path))?;
            let (bytes, error) = match outcome {
                StepOutcome::Fault(f) => (&buf[..buf.len() / 2], Some(f.error())),
                _ => (buf, None),
            };
            write_into(&mut inode.live, offset, bytes);
            inode.pending.push(Pending::Write {
                offset,
                data: bytes.to_vec(),
            });
            error.map_or(Ok(()), Err)
        })
    }

    fn len(&self) -> io::Result<u64> {
        self.with_inode(None, |state, _| {
            Ok(state.inodes[&self.ino].live.len() as u64)
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with_inode(Some(OpKind::SetLen), |state, outcome| {
            if let StepOutcome::Fault(f) = outcome {
                return Err(f.error());
            }
            let inode = state
                .inodes
                .get_mut(&self.ino)
                .ok_or_else(|| not_found(&self.path))?;
            inode.live.resize(len as usize, 0);
            inode.pending.push(Pending::SetLen(len));
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync_all()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.with_inode(Some(OpKind::Sync), |state, outcome| {
            let inode = state
                .inodes
                .get_mut(&self.ino)
                .ok_or_else(|| not_found(&self.path))?;
            if let StepOutcome::Fault(f) = outcome {
                // Linux marks the pages clean after a failed writeback: the
                // data never becomes durable, though reads still see it.
                inode.pending.clear();
                return Err(f.error());
            }
            // Exactly the writes made since the last sync reach the disk
            // (not the live image: writes dropped by a failed sync stay lost).
            let pending = std::mem::take(&mut inode.pending);
            for op in pending {
                match op {
                    Pending::Write { offset, data } => {
                        write_into(&mut inode.durable, offset, &data)
                    }
                    Pending::SetLen(len) => inode.durable.resize(len as usize, 0),
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(fs: &SimFs, path: &str, bytes: &[u8], sync: bool) -> io::Result<()> {
        let file = fs.create_new(Path::new(path))?;
        file.write_all_at(bytes, 0)?;
        if sync {
            file.sync_all()?;
        }
        Ok(())
    }

    #[test]
    fn unsynced_data_and_names_vanish_in_the_durable_image() -> io::Result<()> {
        let fs = SimFs::new();
        write(&fs, "/d/a", b"synced", true)?;
        fs.sync_dir(Path::new("/d"))?;
        write(&fs, "/d/b", b"not synced", false)?;
        let durable = fs.durable_image();
        assert_eq!(durable.live_names(), vec![PathBuf::from("/d/a")]);
        assert_eq!(
            durable.read_live(Path::new("/d/a")).as_deref(),
            Some(&b"synced"[..])
        );
        // A synced file whose name was never made durable vanishes too.
        let fs = SimFs::new();
        write(&fs, "/d/c", b"data", true)?;
        assert!(fs.durable_image().live_names().is_empty());
        assert_eq!(fs.live_image().live_names(), vec![PathBuf::from("/d/c")]);
        Ok(())
    }

    #[test]
    fn rename_is_atomic_and_durable_only_after_dir_sync() -> io::Result<()> {
        let fs = SimFs::new();
        fs.put_durable(Path::new("/d/t"), b"old");
        write(&fs, "/d/t.tmp", b"new", true)?;
        fs.rename(Path::new("/d/t.tmp"), Path::new("/d/t"))?;
        for image in fs.crash_images(7, 20) {
            let content = image.read_live(Path::new("/d/t"));
            assert!(
                matches!(content.as_deref(), Some(b"old") | Some(b"new")),
                "{content:?}"
            );
        }
        fs.sync_dir(Path::new("/d"))?;
        assert_eq!(
            fs.durable_image().read_live(Path::new("/d/t")).as_deref(),
            Some(&b"new"[..])
        );
        Ok(())
    }

    #[test]
    fn crash_after_k_fails_everything_later() -> io::Result<()> {
        let fs = SimFs::new();
        fs.crash_after(1);
        let file = fs.create_new(Path::new("/x"))?;
        assert!(file.write_all_at(b"abc", 0).is_err());
        assert!(fs.has_crashed());
        assert!(file.sync_all().is_err());
        assert!(fs.exists(Path::new("/x")).is_err());
        // The crashing write may or may not be in an image, never anything else.
        let images = fs.crash_images(1, 30);
        assert!(images.iter().all(|i| {
            i.read_live(Path::new("/x"))
                .is_none_or(|c| c.is_empty() || c == b"abc" || c == [0, 0, 0])
        }));
        Ok(())
    }

    #[test]
    fn failed_fsync_never_makes_the_data_durable() -> io::Result<()> {
        let fs = SimFs::new();
        fs.put_durable(Path::new("/f"), b"");
        let file = fs.open_write(Path::new("/f"))?;
        file.write_all_at(b"lost", 0)?;
        fs.fail_operation(fs.operation_count(), Fault::Io);
        assert!(file.sync_all().is_err());
        assert!(file.sync_all().is_ok());
        assert_eq!(fs.read_live(Path::new("/f")).as_deref(), Some(&b"lost"[..]));
        assert_eq!(
            fs.durable_image().read_live(Path::new("/f")).as_deref(),
            Some(&b""[..])
        );
        Ok(())
    }

    #[test]
    fn torn_and_zero_filled_images_occur() -> io::Result<()> {
        let fs = SimFs::new();
        fs.put_durable(Path::new("/log"), b"");
        let file = fs.open_write(Path::new("/log"))?;
        file.write_all_at(&[0xAB; 3000], 0)?;
        let images = fs.crash_images(3, 200);
        let contents: Vec<Vec<u8>> = images
            .iter()
            .filter_map(|i| i.read_live(Path::new("/log")))
            .collect();
        assert!(contents.iter().any(Vec::is_empty));
        assert!(
            contents
                .iter()
                .any(|c| c.len() == 3000 && c.iter().all(|&b| b == 0xAB))
        );
        assert!(
            contents
                .iter()
                .any(|c| c.len() == 3000 && c.iter().all(|&b| b == 0))
        );
        // Torn: some sectors written, some not, each whole.
        let whole_sectors = |c: &Vec<u8>| c.chunks(512).all(|s| s.iter().all(|&b| b == s[0]));
        assert!(
            contents
                .iter()
                .any(|c| c.len() == 3000 && c.contains(&0) && c.contains(&0xAB))
        );
        assert!(contents.iter().all(whole_sectors));
        Ok(())
    }

    #[test]
    fn second_lock_would_block_until_released() -> io::Result<()> {
        let fs = SimFs::new();
        let guard = fs.try_lock(Path::new("/db.lock"))?;
        assert_eq!(
            fs.try_lock(Path::new("/db.lock")).err().map(|e| e.kind()),
            Some(io::ErrorKind::WouldBlock)
        );
        drop(guard);
        assert!(fs.try_lock(Path::new("/db.lock")).is_ok());
        Ok(())
    }
}
