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
//!
//! # Chained faults
//!
//! For long histories with many faults (the crash tests' simulator), the
//! same `SimFs` lives through them all:
//!
//! * **Process crash** ([`SimFs::crash_process`], or
//!   [`SimFs::crash_process_after`] operation `k`): the page cache survives
//!   (the live image stays as it is, unsynced data stays unsynced), but the
//!   process is gone. The file system has a per-process *epoch*: every
//!   handle opened before the crash, every lock taken before it, and every
//!   process view ([`SimFs::process`]) bound to the old epoch fails from then
//!   on, and the locks are released, so the database can be loaded again
//!   from the live state through a new [`SimFs::process`] view.
//! * **Power loss** ([`SimFs::power_loss`], in place; or
//!   [`SimFs::crash_after`] followed by `power_loss` to reboot): the machine
//!   comes back with one disk image the model allows, chosen by a seed:
//!   - namespace operations (create, rename, unlink) not made durable by a
//!     directory fsync survive as a prefix (ext4's ordered journal) or as any
//!     subset (all POSIX promises);
//!   - each 512-byte sector (or 4 KiB page, chosen per file) that unsynced
//!     writes touched holds *any one version* it had since the last
//!     successful fsync: the durable one, the newest one, or an
//!     intermediate one when the sector was written more than once without
//!     a sync in between (a frame cut off again and overwritten, a
//!     truncation followed by new data); sectors are independent of each
//!     other (the disk reorders writes);
//!   - the file's length is the length after any prefix of its unsynced
//!     operations (so a file extended but not written reads zeros);
//!   - with [`PowerLossModel::torn_tail`], a write is torn *inside* a
//!     sector where the model allows it: at the tail of an append, when the
//!     file's last sector holds unsynced data past the durable end, the file
//!     may end anywhere inside that sector (the write was cut short there).
//!     Everywhere else sectors are atomic, which is what docs/FORMAT.md
//!     assumes of the storage (a torn sector in the middle of a file cannot
//!     be told from bit rot by any format, and is out of the model).
//!
//!   Every handle and lock dies with the machine, as with a process crash.
//! * **Failed fsync**: the written pages are marked clean without reaching
//!   the disk (Linux's behaviour after a failed writeback): the data stays
//!   visible to reads (and so to a process crash, which keeps the cache) but
//!   no later fsync writes it, and no power-loss image holds it, unless it
//!   is written again. This is the pessimistic reading: pages written back
//!   before the failure are also taken as lost, and a later write to the
//!   same page carries only its own bytes to the disk.
//! * **Several scheduled I/O faults** ([`SimFs::fail_operation`] at an
//!   operation number, [`SimFs::fail_next`] at the next operation of a
//!   kind): any number may be pending; each fires once, and
//!   [`SimFs::fired_faults`] records where, so a test can check that every
//!   fault it injected fired.

use std::collections::{BTreeMap, HashMap};
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

/// When a scheduled fault fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// At mutating operation number `k`.
    At(u64),
    /// At the next operation of `kind`, after skipping `skip` of them.
    Next { kind: OpKind, skip: u64 },
}

/// A scheduled fault that fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiredFault {
    /// The number of the mutating operation it failed.
    pub operation: u64,
    /// That operation's kind.
    pub kind: OpKind,
    /// The path it was on.
    pub path: PathBuf,
    /// The error injected.
    pub fault: Fault,
}

/// What a crash scheduled with `crash_after` takes down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CrashKind {
    /// The machine: nothing works until [`SimFs::power_loss`] reboots it.
    Machine,
    /// The process: the page cache survives.
    Process,
}

impl CrashKind {
    fn error(self) -> io::Error {
        match self {
            Self::Machine => crashed_error(),
            Self::Process => process_gone_error(),
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
    /// Held locks, with the epoch of the process holding each.
    locks: BTreeMap<PathBuf, u64>,
    ops: u64,
    crash_after: Option<(u64, CrashKind)>,
    crashed: bool,
    /// The current process's number; bumped by every crash.
    epoch: u64,
    process_crashes: u64,
    power_losses: u64,
    faults: Vec<(Trigger, Fault)>,
    fired: Vec<FiredFault>,
    trace: Vec<(u64, OpKind, PathBuf)>,
}

/// A simulated, crashable file system (see the module docs).
///
/// Clones share one file system. A clone made by [`process`](Self::process)
/// is bound to the current process: once that process crashes, every call
/// through it fails.
#[derive(Debug, Clone, Default)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
    /// The process this view belongs to (`None`: whichever is current).
    epoch: Option<u64>,
}

/// Choices for [`SimFs::power_loss`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PowerLossModel {
    /// Let a file whose last sector holds unsynced data past its durable end
    /// end anywhere inside that sector (see the module docs).
    pub torn_tail: bool,
    /// Let a sector written several times since the last sync come back in
    /// an intermediate version.
    pub intermediate_versions: bool,
}

impl Default for PowerLossModel {
    fn default() -> Self {
        Self {
            torn_tail: true,
            intermediate_versions: true,
        }
    }
}

/// What a [`SimFs::power_loss`] chose, for the record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PowerLossReport {
    /// Namespace operations that were not durable.
    pub names_pending: usize,
    /// How many of them the image kept.
    pub names_kept: usize,
    /// Files with unsynced data.
    pub files_pending: usize,
    /// Sectors with unsynced data that came back in their durable version.
    pub sectors_old: usize,
    /// ... in their newest version.
    pub sectors_new: usize,
    /// ... in an intermediate version.
    pub sectors_intermediate: usize,
    /// ... torn inside the sector.
    pub sectors_torn: usize,
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
        let mut fired = None;
        for (i, (trigger, _)) in self.faults.iter_mut().enumerate() {
            let fires = match trigger {
                Trigger::At(at) => *at == n,
                Trigger::Next { kind: k, skip } if *k == kind => {
                    if *skip == 0 {
                        true
                    } else {
                        *skip -= 1;
                        false
                    }
                }
                Trigger::Next { .. } => false,
            };
            if fires && fired.is_none() {
                fired = Some(i);
            }
        }
        if let Some(i) = fired {
            let (_, fault) = self.faults.remove(i);
            // Another fault due at this operation waits for the next one.
            for (trigger, _) in &mut self.faults {
                if *trigger == Trigger::At(n) {
                    *trigger = Trigger::At(n + 1);
                }
            }
            self.fired.push(FiredFault {
                operation: n,
                kind,
                path: path.to_path_buf(),
                fault,
            });
            if let Some((at, crash)) = self.crash_after
                && at == n
            {
                // Both fire: the operation fails (its partial effect, if
                // any, still lands), and the crash comes with it.
                self.crash_after = None;
                self.crash(crash);
            }
            return Ok(StepOutcome::Fault(fault));
        }
        if let Some((at, kind)) = self.crash_after
            && at == n
        {
            self.crash_after = None;
            return Ok(StepOutcome::CrashAfter(kind));
        }
        Ok(StepOutcome::Proceed)
    }

    /// Takes the crash a `crash_after` scheduled.
    fn crash(&mut self, kind: CrashKind) {
        match kind {
            CrashKind::Machine => self.crashed = true,
            CrashKind::Process => self.kill_process(),
        }
    }

    fn kill_process(&mut self) {
        self.epoch += 1;
        self.process_crashes += 1;
        self.locks.clear();
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

    /// Fails if the machine is down or `epoch` is a crashed process's.
    fn check_process(&self, epoch: Option<u64>) -> io::Result<()> {
        self.check_alive()?;
        match epoch {
            Some(e) if e != self.epoch => Err(process_gone_error()),
            _ => Ok(()),
        }
    }
}

fn process_gone_error() -> io::Error {
    io::Error::other("simulated process crash: this process is gone")
}

#[derive(Debug, Clone, Copy)]
enum StepOutcome {
    Proceed,
    /// Do the operation, then crash.
    CrashAfter(CrashKind),
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
    /// later call fails (until [`power_loss`](Self::power_loss) reboots).
    pub fn crash_after(&self, k: u64) {
        self.lock().crash_after = Some((k, CrashKind::Machine));
    }

    /// Crash the *process* right after mutating operation number `k`: it
    /// takes effect in the page cache, then every handle, lock and process
    /// view of the process fails (see [`crash_process`](Self::crash_process)).
    pub fn crash_process_after(&self, k: u64) {
        self.lock().crash_after = Some((k, CrashKind::Process));
    }

    /// Whether a crash scheduled by `crash_after` or `crash_process_after`
    /// is still to come.
    #[must_use]
    pub fn crash_pending(&self) -> bool {
        self.lock().crash_after.is_some()
    }

    /// Cancels a scheduled crash that has not happened.
    pub fn cancel_crash(&self) {
        self.lock().crash_after = None;
    }

    /// Fail mutating operation number `k` with `fault`, once. Any number of
    /// faults may be scheduled; when two are due at one operation, the
    /// second waits for the next operation.
    pub fn fail_operation(&self, k: u64, fault: Fault) {
        self.lock().faults.push((Trigger::At(k), fault));
    }

    /// Fail the next operation of `kind`, after `skip` more of that kind
    /// have succeeded, with `fault`, once.
    pub fn fail_next(&self, kind: OpKind, skip: u64, fault: Fault) {
        self.lock()
            .faults
            .push((Trigger::Next { kind, skip }, fault));
    }

    /// The scheduled faults that have not fired yet.
    #[must_use]
    pub fn pending_faults(&self) -> usize {
        self.lock().faults.len()
    }

    /// The scheduled faults that have not fired yet, described.
    #[must_use]
    pub fn describe_pending_faults(&self) -> Vec<String> {
        self.lock()
            .faults
            .iter()
            .map(|(trigger, fault)| format!("{fault:?} {trigger:?}"))
            .collect()
    }

    /// Drops every scheduled fault that has not fired.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Every scheduled fault that fired, in order.
    #[must_use]
    pub fn fired_faults(&self) -> Vec<FiredFault> {
        self.lock().fired.clone()
    }

    /// A view of this file system bound to the current process: once the
    /// process crashes ([`crash_process`](Self::crash_process), a power
    /// loss), every call through the view fails, as every handle does.
    /// Give each incarnation of a database its own view.
    #[must_use]
    pub fn process(&self) -> SimFs {
        let epoch = self.lock().epoch;
        SimFs {
            state: self.state.clone(),
            epoch: Some(epoch),
        }
    }

    /// The current process's number (bumped by every crash).
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// Kills the process now, keeping the page cache: every handle, lock and
    /// process view opened before fails from then on; the locks are free.
    pub fn crash_process(&self) {
        self.lock().kill_process();
    }

    /// How many process crashes happened (scheduled or not).
    #[must_use]
    pub fn process_crashes(&self) -> u64 {
        self.lock().process_crashes
    }

    /// How many power losses happened.
    #[must_use]
    pub fn power_losses(&self) -> u64 {
        self.lock().power_losses
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

    /// The durable contents of a file (what the most pessimistic power loss
    /// now would leave under its durable name).
    #[must_use]
    pub fn read_durable(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.lock();
        let ino = state.durable.get(path)?;
        state.inodes.get(ino).map(|i| i.durable.clone())
    }

    /// Bit rot: flips bit `bit` (0..8) of byte `offset` of a file, in the
    /// live and the durable image alike (damage a crash cannot cause).
    /// Returns false, changing nothing, unless the byte exists in both and
    /// is the same in both (it was synced), or the name is not durable.
    pub fn flip_bit(&self, path: &Path, offset: u64, bit: u8) -> bool {
        let mut state = self.lock();
        let (Some(&ino), Some(&durable_ino)) = (state.live.get(path), state.durable.get(path))
        else {
            return false;
        };
        let Some(inode) = state.inodes.get_mut(&ino) else {
            return false;
        };
        let at = offset as usize;
        let same = ino == durable_ino
            && inode.live.get(at).is_some()
            && inode.live.get(at) == inode.durable.get(at)
            && !inode.pending.iter().any(|op| touches(op, at, at + 1));
        if same {
            inode.live[at] ^= 1 << (bit % 8);
            inode.durable[at] ^= 1 << (bit % 8);
        }
        same
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

impl SimFs {
    /// Power loss now: the machine comes back with one disk image the model
    /// allows (see the module docs), chosen by `seed`, in this same file
    /// system, everything in it durable. Every handle, lock and process view
    /// from before fails from then on; a pending `crash_after` is cancelled,
    /// and a machine that `crash_after` took down is up again. Scheduled
    /// faults stay scheduled.
    pub fn power_loss(&self, seed: u64, model: PowerLossModel) -> PowerLossReport {
        let mut state = self.lock();
        let mut rng = SplitMix64::new(seed);
        let mut report = PowerLossReport {
            names_pending: state.pending_names.len(),
            ..PowerLossReport::default()
        };
        let mut names = state.durable.clone();
        if below(&mut rng, 2) == 0 {
            // Metadata reached the disk in order (ext4's journal).
            let keep = below(&mut rng, state.pending_names.len() as u64 + 1) as usize;
            for op in &state.pending_names[..keep] {
                op.apply(&mut names);
            }
            report.names_kept = keep;
        } else {
            // Any subset: POSIX orders nothing without a directory fsync.
            for op in &state.pending_names {
                if below(&mut rng, 2) == 0 {
                    op.apply(&mut names);
                    report.names_kept += 1;
                }
            }
        }
        // Choices and renumbering go by inode number, never by name, so an
        // image does not depend on names that differ between runs (the
        // temporaries carry the process id).
        let inos: std::collections::BTreeSet<u64> = names.values().copied().collect();
        let mut contents: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        for ino in inos {
            if let Some(inode) = state.inodes.get(&ino) {
                let bytes = power_loss_contents(inode, &mut rng, model, &mut report);
                contents.insert(ino, bytes);
            }
        }
        state.inodes.clear();
        state.live.clear();
        state.durable.clear();
        state.pending_names.clear();
        let mut by_inode: Vec<(u64, PathBuf)> =
            names.into_iter().map(|(name, ino)| (ino, name)).collect();
        by_inode.sort();
        let mut renumbered: HashMap<u64, u64> = HashMap::new();
        for (ino, name) in by_inode {
            let Some(bytes) = contents.get(&ino) else {
                continue;
            };
            let new_ino = match renumbered.get(&ino) {
                Some(&n) => n,
                None => {
                    let n = state.next_ino;
                    state.next_ino += 1;
                    state.inodes.insert(
                        n,
                        Inode {
                            live: bytes.clone(),
                            durable: bytes.clone(),
                            pending: Vec::new(),
                        },
                    );
                    renumbered.insert(ino, n);
                    n
                }
            };
            state.live.insert(name.clone(), new_ino);
            state.durable.insert(name, new_ino);
        }
        state.crashed = false;
        state.crash_after = None;
        state.epoch += 1;
        state.locks.clear();
        state.power_losses += 1;
        report
    }
}

/// Whether pending operation `op` changes bytes in `start..end`.
fn touches(op: &Pending, start: usize, end: usize) -> bool {
    match op {
        Pending::Write { offset, data } => {
            let (a, b) = (*offset as usize, *offset as usize + data.len());
            a < end && b > start && !data.is_empty()
        }
        Pending::SetLen(len) => (*len as usize) < end,
    }
}

/// The content a power loss leaves in a file (see the module docs): a length
/// after some prefix of the unsynced operations, and per sector one of the
/// versions it had since the last sync, possibly torn at the tail.
fn power_loss_contents(
    inode: &Inode,
    rng: &mut SplitMix64,
    model: PowerLossModel,
    report: &mut PowerLossReport,
) -> Vec<u8> {
    let pending = &inode.pending;
    let n = pending.len();
    if n == 0 {
        return inode.durable.clone();
    }
    report.files_pending += 1;
    let durable = &inode.durable;
    let mut lens = Vec::with_capacity(n + 1);
    let mut l = durable.len();
    lens.push(l);
    for op in pending {
        l = match op {
            Pending::Write { offset, data } => l.max(*offset as usize + data.len()),
            Pending::SetLen(len) => *len as usize,
        };
        lens.push(l);
    }
    let len = lens[below(rng, n as u64 + 1) as usize];
    let unit: usize = if below(rng, 2) == 0 { 512 } else { 4096 };
    let mut data = vec![0u8; len];
    let mut tail: Option<usize> = None;
    for start in (0..len).step_by(unit) {
        let end = (start + unit).min(len);
        let touched = pending.iter().any(|op| touches(op, start, start + unit));
        let version = if !touched {
            0
        } else {
            match below(rng, 3) {
                0 => 0,
                1 => n,
                _ if model.intermediate_versions => below(rng, n as u64 + 1) as usize,
                _ => n,
            }
        };
        let sector = &mut data[start..end];
        for (at, slot) in sector.iter_mut().enumerate() {
            *slot = durable.get(start + at).copied().unwrap_or(0);
        }
        let mut cur_len = durable.len();
        for op in &pending[..version] {
            match op {
                Pending::Write {
                    offset,
                    data: bytes,
                } => {
                    let off = *offset as usize;
                    cur_len = cur_len.max(off + bytes.len());
                    let a = off.max(start);
                    let b = (off + bytes.len()).min(end);
                    if a < b {
                        sector[a - start..b - start].copy_from_slice(&bytes[a - off..b - off]);
                    }
                }
                Pending::SetLen(new_len) => {
                    cur_len = *new_len as usize;
                }
            }
            // Bytes past the version's length read back as zeros.
            for at in cur_len.max(start)..end {
                sector[at - start] = 0;
            }
        }
        if touched {
            if version == 0 {
                report.sectors_old += 1;
            } else if version == n {
                report.sectors_new += 1;
            } else {
                report.sectors_intermediate += 1;
            }
            if version > 0 && end > durable.len() {
                tail = Some(start);
            }
        }
    }
    let lo = tail.map_or(len, |start| start.max(durable.len()));
    if model.torn_tail
        && let Some(start) = tail
        && start + unit >= len
        && len > lo + 1
        && below(rng, 3) == 0
    {
        // The last write was cut short inside its last sector: the file
        // ends there (never inside durable data).
        let cut = lo + 1 + below(rng, (len - lo - 1) as u64) as usize;
        data.truncate(cut);
        report.sectors_torn += 1;
    }
    data
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
    /// The process that opened it.
    epoch: u64,
}

#[derive(Debug)]
struct SimLock {
    fs: SimFs,
    path: PathBuf,
    epoch: u64,
}

impl LockGuard for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut state = self.fs.lock();
        // A crash released it already (and someone may hold it again).
        if state.locks.get(&self.path) == Some(&self.epoch) {
            state.locks.remove(&self.path);
        }
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
        state.check_process(self.epoch)?;
        check(&state)?;
        let outcome = state.step(kind, path)?;
        if let StepOutcome::Fault(f) = outcome {
            return Err(f.error());
        }
        let value = apply(&mut state);
        if let StepOutcome::CrashAfter(kind) = outcome {
            state.crash(kind);
            return Err(kind.error());
        }
        Ok(value)
    }
}

impl FileSystem for SimFs {
    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>> {
        let state = self.lock();
        state.check_process(self.epoch)?;
        let ino = state.inode_of(path)?;
        Ok(Arc::new(SimFile {
            fs: self.clone(),
            ino,
            path: path.to_path_buf(),
            writable: false,
            epoch: state.epoch,
        }))
    }

    fn open_write(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>> {
        let state = self.lock();
        state.check_process(self.epoch)?;
        let ino = state.inode_of(path)?;
        Ok(Arc::new(SimFile {
            fs: self.clone(),
            ino,
            path: path.to_path_buf(),
            writable: true,
            epoch: state.epoch,
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
        let (ino, epoch) = self.namespace_op(OpKind::Create, path, exists, |state| {
            let ino = state.next_ino;
            state.next_ino += 1;
            state.inodes.insert(ino, Inode::default());
            state.live.insert(path.to_path_buf(), ino);
            state.pending_names.push(NameOp::Link {
                name: path.to_path_buf(),
                ino,
            });
            (ino, state.epoch)
        })?;
        Ok(Arc::new(SimFile {
            fs: self.clone(),
            ino,
            path: path.to_path_buf(),
            writable: true,
            epoch,
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
        state.check_process(self.epoch)?;
        Ok(state
            .live
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(ToOwned::to_owned))
            .collect())
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let state = self.lock();
        state.check_process(self.epoch)?;
        Ok(state.live.contains_key(path))
    }

    fn try_lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        let mut state = self.lock();
        state.check_process(self.epoch)?;
        if state.locks.contains_key(path) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let epoch = state.epoch;
        state.locks.insert(path.to_path_buf(), epoch);
        Ok(Box::new(SimLock {
            fs: self.clone(),
            path: path.to_path_buf(),
            epoch,
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
        state.check_process(Some(self.epoch))?;
        let mut outcome = match kind {
            Some(kind) => state.step(kind, &self.path)?,
            None => StepOutcome::Proceed,
        };
        if !state.inodes.contains_key(&self.ino) {
            return Err(not_found(&self.path));
        }
        let result = f(&mut state, &mut outcome);
        if let StepOutcome::CrashAfter(kind) = outcome {
            state.crash(kind);
            return Err(kind.error());
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
    fn process_crash_keeps_the_cache_and_kills_old_handles_and_locks() -> io::Result<()> {
        let fs = SimFs::new();
        let view = fs.process();
        let file = view.create_new(Path::new("/d/f"))?;
        file.write_all_at(b"cached", 0)?;
        let guard = view.try_lock(Path::new("/d/f.lock"))?;
        fs.crash_process();
        assert!(file.write_all_at(b"x", 0).is_err());
        assert!(file.sync_all().is_err());
        assert!(view.exists(Path::new("/d/f")).is_err());
        // The next process sees the page cache and can take the lock.
        let next = fs.process();
        assert_eq!(
            fs.read_live(Path::new("/d/f")).as_deref(),
            Some(&b"cached"[..])
        );
        let again = next.try_lock(Path::new("/d/f.lock"))?;
        drop(guard); // the dead process's guard must not release the new lock
        assert!(next.try_lock(Path::new("/d/f.lock")).is_err());
        drop(again);
        // Nothing was synced: power loss loses it.
        fs.power_loss(1, PowerLossModel::default());
        assert!(fs.live_names().is_empty());
        Ok(())
    }

    #[test]
    fn scheduled_process_crash_lets_the_operation_happen_first() -> io::Result<()> {
        let fs = SimFs::new();
        let view = fs.process();
        let file = view.create_new(Path::new("/f"))?;
        fs.crash_process_after(fs.operation_count());
        assert!(file.write_all_at(b"abc", 0).is_err());
        assert!(!fs.has_crashed());
        assert_eq!(fs.read_live(Path::new("/f")).as_deref(), Some(&b"abc"[..]));
        assert!(file.write_all_at(b"d", 3).is_err());
        assert_eq!(fs.process_crashes(), 1);
        Ok(())
    }

    #[test]
    fn several_faults_fire_each_once_and_are_recorded() -> io::Result<()> {
        let fs = SimFs::new();
        fs.put_durable(Path::new("/f"), b"");
        let file = fs.open_write(Path::new("/f"))?;
        fs.fail_next(OpKind::Sync, 1, Fault::Io);
        fs.fail_operation(fs.operation_count() + 1, Fault::NoSpace);
        fs.fail_next(OpKind::Rename, 0, Fault::Io);
        assert_eq!(fs.pending_faults(), 3);
        file.write_all_at(b"a", 0)?;
        assert!(file.write_all_at(b"b", 1).is_err()); // op + 1: ENOSPC
        file.sync_all()?; // the first sync is skipped
        assert!(file.sync_all().is_err()); // the second fails
        file.sync_all()?;
        assert_eq!(fs.pending_faults(), 1);
        let fired = fs.fired_faults();
        assert_eq!(fired.len(), 2);
        assert_eq!(
            (fired[0].kind, fired[0].fault),
            (OpKind::Write, Fault::NoSpace)
        );
        assert_eq!((fired[1].kind, fired[1].fault), (OpKind::Sync, Fault::Io));
        Ok(())
    }

    #[test]
    fn power_loss_keeps_old_new_and_intermediate_sector_versions() -> io::Result<()> {
        // One sector written three times without a sync: every version can
        // come back, and nothing else.
        let versions: [&[u8]; 4] = [&[0; 512], &[1; 512], &[2; 512], &[3; 512]];
        let mut seen = [false; 4];
        for seed in 0..200 {
            let fs = SimFs::new();
            fs.put_durable(Path::new("/f"), versions[0]);
            let file = fs.open_write(Path::new("/f"))?;
            for v in &versions[1..] {
                file.write_all_at(v, 0)?;
            }
            fs.power_loss(seed, PowerLossModel::default());
            let content = fs.read_live(Path::new("/f")).unwrap_or_default();
            let k = versions.iter().position(|v| *v == content.as_slice());
            assert!(k.is_some(), "seed {seed}: {:?}", &content[..4]);
            if let Some(k) = k {
                seen[k] = true;
            }
            // The handle died with the machine.
            assert!(file.sync_all().is_err());
        }
        assert_eq!(seen, [true; 4]);
        Ok(())
    }

    #[test]
    fn power_loss_tears_only_the_tail_sector_of_an_append() -> io::Result<()> {
        let mut torn = 0;
        for seed in 0..300 {
            let fs = SimFs::new();
            fs.put_durable(Path::new("/log"), &[7; 600]);
            let file = fs.open_write(Path::new("/log"))?;
            file.write_all_at(&[9; 1000], 600)?;
            let report = fs.power_loss(seed, PowerLossModel::default());
            let c = fs.read_live(Path::new("/log")).unwrap_or_default();
            // The durable bytes are never touched.
            assert!(
                c.len() >= 600 && c[..600].iter().all(|&b| b == 7),
                "seed {seed}"
            );
            // New bytes come back as whole sectors, but the file may end
            // inside its last one.
            if report.sectors_torn > 0 {
                torn += 1;
                assert!(c.len() > 600 && c.len() < 1600, "seed {seed}: {}", c.len());
            } else {
                assert!(
                    c.len() == 600 || c.len() == 1600,
                    "seed {seed}: {}",
                    c.len()
                );
                let whole = |unit: usize| {
                    (0..c.len()).step_by(unit).all(|start| {
                        let end = (start + unit).min(c.len());
                        let from = start.max(600);
                        from >= end || c[from..end].iter().all(|&b| b == c[from])
                    })
                };
                assert!(whole(512) || whole(4096), "seed {seed}");
            }
        }
        assert!(torn > 0);
        Ok(())
    }

    #[test]
    fn power_loss_keeps_a_durable_rename_and_may_drop_an_unsynced_one() -> io::Result<()> {
        let mut kept = [false; 2];
        for seed in 0..50 {
            let fs = SimFs::new();
            write(&fs, "/d/a", b"A", true)?;
            fs.sync_dir(Path::new("/d"))?;
            write(&fs, "/d/b.tmp", b"B", true)?;
            fs.rename(Path::new("/d/b.tmp"), Path::new("/d/b"))?;
            fs.power_loss(seed, PowerLossModel::default());
            assert_eq!(fs.read_live(Path::new("/d/a")).as_deref(), Some(&b"A"[..]));
            kept[usize::from(fs.read_live(Path::new("/d/b")).is_some())] = true;
        }
        assert_eq!(kept, [true, true]);
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
