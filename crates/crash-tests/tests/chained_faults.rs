//! Regression tests for chained faults: a crash or a failed fsync, a reload
//! from state that never reached the disk, new acknowledged writes, then a
//! power loss — and damage a crash cannot cause that looks like one it can.
//! Each test first checks that the fault it injects fired, then that no
//! acknowledged write is lost and the database loads.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iqdb_index::Index;
use iqdb_persist::storage::{FileHandle, FileSystem, LockGuard};
use iqdb_persist::{
    FsyncPolicy, Options, PersistConfig, PersistError, PersistedIndex, RecoveryMode,
    SnapshotFormat, WalFormat,
};
use iqdb_persist_crash_tests::{DIM, Model, check_store, record};
use iqdb_persist_testkit::VectorStore;
use iqdb_persist_testkit::simfs::{Fault, OpKind, SimFs};
use iqdb_types::{DistanceMetric, VectorId};

type TestResult = Result<(), String>;

fn config(policy: FsyncPolicy) -> PersistConfig {
    PersistConfig {
        path: PathBuf::from("/db/vectors.iqdb"),
        wal_enabled: true,
        fsync_policy: policy,
        compression: iqdb_persist::Compression::None,
    }
}

fn options(fs: Arc<dyn FileSystem>, wal: WalFormat) -> Options {
    let snapshot = if wal == WalFormat::V1 {
        SnapshotFormat::V2
    } else {
        SnapshotFormat::V3
    };
    Options::new()
        .file_system(fs)
        .wal_format(wal)
        .snapshot_format(snapshot)
        .chunk_size(4096)
}

fn sim_options(fs: &SimFs, wal: WalFormat) -> Options {
    options(Arc::new(fs.clone()), wal)
}

fn empty() -> Result<VectorStore, String> {
    VectorStore::new(DIM, DistanceMetric::Cosine, Default::default()).map_err(|e| e.to_string())
}

fn insert(db: &mut PersistedIndex<VectorStore>, i: u64) -> Result<(), PersistError> {
    let (id, vector, metadata) = record(i);
    db.insert(id, vector, metadata)
}

fn models(sets: &[&[u64]]) -> Vec<Model> {
    sets.iter().map(|s| s.iter().copied().collect()).collect()
}

fn open(
    fs: &SimFs,
    wal: WalFormat,
    policy: FsyncPolicy,
) -> Result<PersistedIndex<VectorStore>, String> {
    PersistedIndex::open_with_options(empty()?, config(policy), sim_options(fs, wal))
        .map_err(|e| format!("open_with: {e}"))
}

fn load(fs: &SimFs, wal: WalFormat) -> Result<PersistedIndex<VectorStore>, String> {
    PersistedIndex::load_with_options(config(FsyncPolicy::Always), sim_options(fs, wal))
        .map_err(|e| format!("load: {e}"))
}

/// Every power-loss image of `fs` loads and holds one of `allowed`.
fn every_power_loss_keeps(fs: &SimFs, wal: WalFormat, allowed: &[Model]) -> TestResult {
    for (n, image) in fs.crash_images(0x5EED, 40).iter().enumerate() {
        let db = load(image, wal).map_err(|e| format!("image {n}: {e}"))?;
        check_store(db.index(), allowed).map_err(|e| format!("image {n}: {e}"))?;
    }
    Ok(())
}

/// The operation number of the first `kind` at or after `from` on a path
/// ending in `suffix`.
fn find_op(fs: &SimFs, from: u64, kind: OpKind, suffix: &str) -> Option<u64> {
    fs.trace()
        .into_iter()
        .find(|(n, k, p)| *n >= from && *k == kind && p.to_string_lossy().ends_with(suffix))
        .map(|(n, _, _)| n)
}

/// Issue 9, item 1: the directory fsync after a checkpoint removed its
/// intent fails; the reload sees no intent; an insert is acknowledged; power
/// loss brings the intent back. The acknowledged insert must survive.
#[test]
fn failed_directory_fsync_after_intent_removal_never_resurrects_the_intent() -> TestResult {
    for wal in [WalFormat::V1, WalFormat::V2] {
        // A dry run finds the operation numbers (the runs are deterministic).
        let probe = SimFs::new();
        let mut db = open(&probe, wal, FsyncPolicy::Always)?;
        for i in 0..3 {
            insert(&mut db, i).map_err(|e| e.to_string())?;
        }
        let before = probe.operation_count();
        db.checkpoint().map_err(|e| e.to_string())?;
        drop(db);
        let remove = find_op(&probe, before, OpKind::Remove, ".checkpoint")
            .ok_or("the checkpoint removes no intent")?;
        let dir_sync =
            find_op(&probe, remove, OpKind::SyncDir, "/db").ok_or("no directory fsync")?;

        let fs = SimFs::new();
        fs.fail_operation(dir_sync, Fault::Io);
        let mut db = open(&fs, wal, FsyncPolicy::Always)?;
        for i in 0..3 {
            insert(&mut db, i).map_err(|e| e.to_string())?;
        }
        let failed = db.checkpoint();
        assert!(failed.is_err(), "{wal:?}: the injected fault did not fire");
        assert!(
            fs.trace()
                .iter()
                .any(|(n, k, _)| *n == dir_sync && *k == OpKind::SyncDir)
        );
        drop(db);

        let mut db = load(&fs, wal)?;
        insert(&mut db, 10).map_err(|e| format!("{wal:?}: insert after reload: {e}"))?;
        drop(db);
        every_power_loss_keeps(&fs, wal, &models(&[&[0, 1, 2, 10]]))
            .map_err(|e| format!("{wal:?}: {e}"))?;
    }
    Ok(())
}

/// Issue 9, item 2: an insert's fsync fails (Linux marks the pages clean
/// without writing them); the reload replays it from the page cache; a new
/// insert is acknowledged; power loss must not cut a hole before it.
#[test]
fn reload_after_a_failed_fsync_makes_the_replayed_log_durable() -> TestResult {
    for wal in [WalFormat::V1, WalFormat::V2] {
        let fs = SimFs::new();
        let mut db = open(&fs, wal, FsyncPolicy::Always)?;
        for i in 0..4 {
            insert(&mut db, i).map_err(|e| e.to_string())?;
        }
        // The next insert is one write and one fsync: fail the fsync.
        let sync_at = fs.operation_count() + 1;
        fs.fail_operation(sync_at, Fault::Io);
        assert!(
            insert(&mut db, 4).is_err(),
            "{wal:?}: the fsync did not fail"
        );
        assert_eq!(
            fs.trace().get(sync_at as usize).map(|t| t.1),
            Some(OpKind::Sync)
        );
        drop(db);

        let mut db = load(&fs, wal)?;
        check_store(db.index(), &models(&[&[0, 1, 2, 3], &[0, 1, 2, 3, 4]]))?;
        insert(&mut db, 5).map_err(|e| format!("{wal:?}: insert after reload: {e}"))?;
        drop(db);
        every_power_loss_keeps(&fs, wal, &models(&[&[0, 1, 2, 3, 4, 5]]))
            .map_err(|e| format!("{wal:?}: {e}"))?;
    }
    Ok(())
}

/// Frame boundaries `(offset, end)` of the log bytes `log` (header length
/// `header`).
fn frames(log: &[u8], header: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = header;
    while at + 8 <= log.len() {
        let len = u32::from_le_bytes([log[at], log[at + 1], log[at + 2], log[at + 3]]) as usize;
        if len == 0 || at + 8 + len > log.len() {
            break;
        }
        out.push((at, at + 8 + len));
        at += 8 + len;
    }
    out
}

/// Issue 9, item 3: unsynced frames torn by power loss so that one lost
/// sector held the last 1–15 bytes of one frame and the start of the next,
/// while a later frame reached the disk. That is a torn write: the database
/// loads, with the frames before the torn one.
#[test]
fn a_lost_sector_spanning_two_unsynced_frames_is_a_torn_write() -> TestResult {
    for wal in [WalFormat::V1, WalFormat::V2] {
        let fs = SimFs::new();
        let mut db = open(&fs, wal, FsyncPolicy::Never)?;
        for i in 0..300 {
            insert(&mut db, i).map_err(|e| e.to_string())?;
        }
        let wal_path = Path::new("/db/vectors.iqdb.wal");
        let log = fs.read_live(wal_path).ok_or("no log")?;
        let snapshot = fs
            .read_live(Path::new("/db/vectors.iqdb"))
            .ok_or("no snapshot")?;
        std::mem::forget(db); // the power fails before anything is synced
        let header = if wal == WalFormat::V1 { 12 } else { 40 };
        let frames = frames(&log, header);
        assert_eq!(frames.len(), 300);
        // A frame whose last 1–15 bytes open a sector that also holds the
        // next frame's start, with more than one set bit among them (so no
        // single flipped bit explains the loss), and a frame after that
        // sector.
        let pick = frames.iter().enumerate().find(|(k, (_, end))| {
            let into = end % 512;
            let sector = end - into;
            (1..=15).contains(&into)
                && log[sector..*end]
                    .iter()
                    .map(|b| b.count_ones())
                    .sum::<u32>()
                    >= 2
                && frames
                    .get(k + 1..)
                    .is_some_and(|later| later.iter().any(|(s, _)| *s >= sector + 512))
        });
        let (k, &(_, end)) = pick.ok_or("no frame ends just past a sector boundary")?;
        let sector = end - end % 512;
        let mut torn = log.clone();
        torn[sector..sector + 512].fill(0);
        let image = SimFs::new();
        image.put_durable(Path::new("/db/vectors.iqdb"), &snapshot);
        image.put_durable(wal_path, &torn);
        let db = load(&image, wal).map_err(|e| format!("{wal:?}: frame {k}: {e}"))?;
        let kept: Vec<u64> = (0..k as u64).collect();
        check_store(db.index(), &models(&[&kept])).map_err(|e| format!("{wal:?}: {e}"))?;
        let cut = db
            .recovery_report()
            .truncated
            .clone()
            .ok_or("nothing was cut")?;
        assert_eq!(cut.kind, iqdb_persist::DamageKind::Torn);
        assert_eq!(cut.offset, frames[k].0 as u64);
    }
    Ok(())
}

/// Records of 512 dimensions whose first 256 components are zero (a
/// zero-padded embedding), as `VectorStore` inserts.
fn padded_vector(i: u64) -> Arc<[f32]> {
    let mut v = vec![0.0f32; 512];
    for (k, slot) in v.iter_mut().enumerate().skip(256) {
        *slot = ((i * 7919 + k as u64) % 1000) as f32 / 1000.0 + 0.5;
    }
    Arc::from(v)
}

/// Issue 9, item 4: one flipped bit in an fsynced frame full of zeros is
/// corruption, reported with file and offset, never cut off as a torn tail
/// (in the zero run, in the data, in the length and checksum fields; mid-log
/// and in the last frame).
#[test]
fn a_flipped_bit_in_a_frame_full_of_zeros_is_never_a_torn_tail() -> TestResult {
    for wal in [WalFormat::V1, WalFormat::V2] {
        let fs = SimFs::new();
        let mut config = config(FsyncPolicy::Always);
        config.path = PathBuf::from("/db/vectors.iqdb");
        let store = VectorStore::new(512, DistanceMetric::Euclidean, Default::default())
            .map_err(|e| e.to_string())?;
        let mut db =
            PersistedIndex::open_with_options(store, config.clone(), sim_options(&fs, wal))
                .map_err(|e| e.to_string())?;
        for i in 0..20u64 {
            db.insert(VectorId::from(i), padded_vector(i), None)
                .map_err(|e| e.to_string())?;
        }
        drop(db);
        let wal_path = Path::new("/db/vectors.iqdb.wal");
        let log = fs.read_live(wal_path).ok_or("no log")?;
        let snapshot = fs
            .read_live(Path::new("/db/vectors.iqdb"))
            .ok_or("no snapshot")?;
        let header = if wal == WalFormat::V1 { 12 } else { 40 };
        let frames = frames(&log, header);
        assert_eq!(frames.len(), 20);
        for frame in [5usize, 19] {
            let (start, end) = frames[frame];
            let len = end - start;
            // Bits in: the length field, the checksum field, the zero run,
            // the data after it.
            for bit in [
                start * 8 + 3,
                (start + 5) * 8 + 1,
                (start + len / 3) * 8 + 6,
                (end - 9) * 8 + 2,
            ] {
                let mut damaged = log.clone();
                damaged[bit / 8] ^= 1 << (bit % 8);
                assert_ne!(damaged, log);
                let image = SimFs::new();
                image.put_durable(Path::new("/db/vectors.iqdb"), &snapshot);
                image.put_durable(wal_path, &damaged);
                let loaded = PersistedIndex::<VectorStore>::load_with_options(
                    config.clone(),
                    sim_options(&image, wal),
                );
                match loaded {
                    Err(e) => {
                        assert_eq!(e.path(), Some(wal_path), "{e}");
                        assert_eq!(e.offset(), Some(start as u64), "{e}");
                        let torn = matches!(
                            e.root_cause(),
                            PersistError::CorruptFrame { torn: true, .. }
                        );
                        assert!(!torn, "{wal:?} frame {frame} bit {bit}: {e}");
                    }
                    Ok(db) => {
                        return Err(format!(
                            "{wal:?} frame {frame} bit {bit}: a flip loaded with {} of 20 \
                             acknowledged records ({:?})",
                            db.index().len(),
                            db.recovery_report().truncated
                        ));
                    }
                }
                // Salvage keeps the valid prefix and says what it dropped.
                let salvaged = PersistedIndex::<VectorStore>::load_with_options(
                    config.clone(),
                    sim_options(&image, wal).recovery_mode(RecoveryMode::Salvage),
                )
                .map_err(|e| format!("salvage: {e}"))?;
                assert_eq!(salvaged.index().len(), frame);
            }
        }
    }
    Ok(())
}

/// Issue 9, item 5: `open_with` without `overwrite_existing` refuses to
/// replace a log whose first frame took a flipped bit (in every recovery
/// mode), and leaves it byte for byte.
#[test]
fn open_with_never_overwrites_a_damaged_log() -> TestResult {
    for wal in [WalFormat::V1, WalFormat::V2] {
        let fs = SimFs::new();
        let mut db = open(&fs, wal, FsyncPolicy::Always)?;
        for i in 0..10 {
            insert(&mut db, i).map_err(|e| e.to_string())?;
        }
        drop(db);
        let wal_path = Path::new("/db/vectors.iqdb.wal");
        let mut log = fs.read_live(wal_path).ok_or("no log")?;
        let header = if wal == WalFormat::V1 { 12 } else { 40 };
        let first = frames(&log, header)[0];
        log[first.0 + 20] ^= 0x10;
        fs.put_durable(wal_path, &log);
        for mode in [
            RecoveryMode::TolerateTornTail,
            RecoveryMode::Strict,
            RecoveryMode::Salvage,
        ] {
            let opened = PersistedIndex::open_with_options(
                empty()?,
                config(FsyncPolicy::Always),
                sim_options(&fs, wal).recovery_mode(mode),
            );
            match opened {
                Err(PersistError::WouldOverwrite {
                    pending_operations, ..
                }) => assert!(pending_operations >= 9, "{pending_operations}"),
                Err(e) => return Err(format!("{wal:?} {mode:?}: wrong error {e}")),
                Ok(_) => return Err(format!("{wal:?} {mode:?}: replaced a damaged log")),
            }
            assert_eq!(fs.read_live(wal_path).as_deref(), Some(&log[..]));
        }
    }
    Ok(())
}

/// Issue 9, item 6: a snapshot-only handle cannot `save()` over the
/// snapshot while a WAL-mode handle on the same database lives.
#[test]
fn snapshot_only_save_is_locked_out_while_a_wal_handle_lives() -> TestResult {
    let fs = SimFs::new();
    let mut db = open(&fs, WalFormat::V2, FsyncPolicy::Always)?;
    insert(&mut db, 0).map_err(|e| e.to_string())?;
    let mut snapshot_only = config(FsyncPolicy::Always);
    snapshot_only.wal_enabled = false;
    // Reading is allowed (a snapshot-only load is a reader).
    let mut reader = PersistedIndex::<VectorStore>::load_with_options(
        snapshot_only.clone(),
        sim_options(&fs, WalFormat::V2),
    )
    .map_err(|e| e.to_string())?;
    let (id, vector, metadata) = record(1);
    reader
        .insert(id, vector, metadata)
        .map_err(|e| e.to_string())?;
    match reader.save() {
        Err(PersistError::Locked { .. }) => {}
        other => {
            return Err(format!(
                "snapshot-only save under a live WAL handle: {other:?}"
            ));
        }
    }
    insert(&mut db, 2).map_err(|e| e.to_string())?;
    drop(db);
    let db = load(&fs, WalFormat::V2)?;
    check_store(db.index(), &models(&[&[0, 2]]))?;
    Ok(())
}

/// A file system over a `SimFs` with two test hooks: one run just before
/// the first rename of a temporary over the snapshot (while a checkpoint
/// has it prepared, in flight), and, once armed, a first fsync of the log
/// from the background flusher that fails slowly (as a disk error reported
/// after a while), dropping the unsynced pages as Linux does.
struct HookFs {
    inner: SimFs,
    before_rename: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    rename_hook_fired: AtomicBool,
    flush_armed: Arc<AtomicBool>,
    flush_entered: Mutex<Option<mpsc::Sender<()>>>,
}

impl HookFs {
    fn new(inner: SimFs) -> Arc<Self> {
        Arc::new(Self {
            inner,
            before_rename: Mutex::new(None),
            rename_hook_fired: AtomicBool::new(false),
            flush_armed: Arc::new(AtomicBool::new(false)),
            flush_entered: Mutex::new(None),
        })
    }
}

impl std::fmt::Debug for HookFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookFs").finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct FlushFile {
    inner: Arc<dyn FileHandle>,
    fs: SimFs,
    armed: Arc<AtomicBool>,
    entered: Option<mpsc::Sender<()>>,
}

impl FileHandle for FlushFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.inner.write_all_at(buf, offset)
    }
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        let flusher = std::thread::current().name() == Some("iqdb-persist-flusher");
        if flusher && self.armed.swap(false, Ordering::SeqCst) {
            self.fs.fail_operation(self.fs.operation_count(), Fault::Io);
            let result = self.inner.sync_data();
            if let Some(entered) = &self.entered {
                let _ = entered.send(());
            }
            std::thread::sleep(Duration::from_millis(400));
            return result;
        }
        self.inner.sync_data()
    }
    fn sync_all(&self) -> std::io::Result<()> {
        self.inner.sync_all()
    }
}

impl FileSystem for HookFs {
    fn open_read(&self, path: &Path) -> std::io::Result<Arc<dyn FileHandle>> {
        self.inner.open_read(path)
    }
    fn open_write(&self, path: &Path) -> std::io::Result<Arc<dyn FileHandle>> {
        let inner = self.inner.open_write(path)?;
        if !path.to_string_lossy().ends_with(".wal") {
            return Ok(inner);
        }
        Ok(Arc::new(FlushFile {
            inner,
            fs: self.inner.clone(),
            armed: self.flush_armed.clone(),
            entered: self.flush_entered.lock().ok().and_then(|e| e.clone()),
        }))
    }
    fn create_new(&self, path: &Path) -> std::io::Result<Arc<dyn FileHandle>> {
        self.inner.create_new(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        if from.to_string_lossy().contains(".iqdb-tmp.") && to.ends_with("vectors.iqdb") {
            let hook = self.before_rename.lock().ok().and_then(|mut h| h.take());
            if let Some(hook) = hook {
                hook();
                self.rename_hook_fired.store(true, Ordering::SeqCst);
            }
        }
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        self.inner.remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn list_dir(&self, dir: &Path) -> std::io::Result<Vec<std::ffi::OsString>> {
        self.inner.list_dir(dir)
    }
    fn exists(&self, path: &Path) -> std::io::Result<bool> {
        self.inner.exists(path)
    }
    fn try_lock(&self, path: &Path) -> std::io::Result<Box<dyn LockGuard>> {
        self.inner.try_lock(path)
    }
    fn is_process_alive(&self, pid: u32) -> bool {
        self.inner.is_process_alive(pid)
    }
}

/// Issue 9, item 6: a second handle in the same process (another file
/// system object over the same files) sweeping temporaries never deletes a
/// live handle's checkpoint temporary.
#[test]
fn a_second_handles_sweep_spares_a_live_checkpoint_temporary() -> TestResult {
    let sim = SimFs::new();
    let hooked = HookFs::new(sim.clone());
    let mut db = PersistedIndex::open_with_options(
        empty()?,
        config(FsyncPolicy::Always),
        options(hooked.clone(), WalFormat::V2),
    )
    .map_err(|e| e.to_string())?;
    insert(&mut db, 0).map_err(|e| e.to_string())?;
    let second = sim.clone();
    let swept = Arc::new(Mutex::new(None));
    let swept_by_hook = swept.clone();
    *hooked.before_rename.lock().map_err(|e| e.to_string())? = Some(Box::new(move || {
        // A snapshot-only reader, through its own file system object.
        let mut reader_config = config(FsyncPolicy::Always);
        reader_config.wal_enabled = false;
        let reader = PersistedIndex::<VectorStore>::load_with_options(
            reader_config,
            sim_options(&second, WalFormat::V2),
        );
        if let (Ok(reader), Ok(mut slot)) = (reader, swept_by_hook.lock()) {
            *slot = Some(reader.recovery_report().stale_temp_files_removed.clone());
        }
    }));
    insert(&mut db, 1).map_err(|e| e.to_string())?;
    let checkpointed = db.checkpoint();
    assert!(
        hooked.rename_hook_fired.load(Ordering::SeqCst),
        "the hook never ran"
    );
    let removed = swept
        .lock()
        .map_err(|e| e.to_string())?
        .clone()
        .ok_or("the second handle did not load")?;
    assert!(removed.is_empty(), "the second handle swept {removed:?}");
    checkpointed.map_err(|e| format!("checkpoint: {e}"))?;
    insert(&mut db, 2).map_err(|e| e.to_string())?;
    drop(db);
    let db = load(&sim, WalFormat::V2)?;
    check_store(db.index(), &models(&[&[0, 1, 2]]))?;
    Ok(())
}

/// Issue 9, item 7: while the background flusher's fsync fails, a
/// concurrent `sync()` must not report the data durable.
#[test]
fn sync_never_returns_ok_when_the_flushers_fsync_failed() -> TestResult {
    let (tx, rx) = mpsc::channel();
    let sim = SimFs::new();
    let fs = HookFs::new(sim.clone());
    *fs.flush_entered.lock().map_err(|e| e.to_string())? = Some(tx);
    let mut db = PersistedIndex::open_with_options(
        empty()?,
        config(FsyncPolicy::Periodic(Duration::from_millis(20))),
        options(fs.clone(), WalFormat::V2),
    )
    .map_err(|e| e.to_string())?;
    fs.flush_armed.store(true, Ordering::SeqCst);
    insert(&mut db, 0).map_err(|e| e.to_string())?;
    rx.recv_timeout(Duration::from_secs(10))
        .map_err(|_| "the flusher's failing fsync never ran")?;
    let synced = db.sync();
    assert!(
        synced.is_err(),
        "sync() returned Ok though the data never reached the disk"
    );
    // And the data is indeed not durable.
    let durable = sim.durable_image();
    let back = load(&durable, WalFormat::V2)?;
    check_store(back.index(), &models(&[&[]]))?;
    Ok(())
}

/// Issue 9, item 8: `close()` returns the final sync's error that dropping
/// the handle could only log.
#[test]
fn close_reports_a_failed_final_sync() -> TestResult {
    let fs = SimFs::new();
    let mut db = open(&fs, WalFormat::V2, FsyncPolicy::Never)?;
    insert(&mut db, 0).map_err(|e| e.to_string())?;
    let sync_at = fs.operation_count();
    fs.fail_operation(sync_at, Fault::Io);
    let closed = db.close();
    assert_eq!(
        fs.trace().get(sync_at as usize).map(|t| t.1),
        Some(OpKind::Sync),
        "the injected fault did not hit the final sync"
    );
    assert!(closed.is_err(), "close() hid the failed final sync");
    // A clean close returns Ok and leaves everything durable.
    let mut db = load(&fs, WalFormat::V2)?;
    insert(&mut db, 1).map_err(|e| e.to_string())?;
    db.close().map_err(|e| e.to_string())?;
    let back = load(&fs.durable_image(), WalFormat::V2)?;
    check_store(back.index(), &models(&[&[0, 1], &[1]]))?;
    Ok(())
}

/// Issue 9, item 6: a `Periodic` flusher thread that cannot be started is
/// an error, not a policy silently become sync-on-drop. A child process
/// runs with a minimum thread stack no `mmap` can satisfy.
#[test]
fn a_flusher_that_cannot_start_is_an_error() -> TestResult {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let run = |min_stack: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_periodic-open"));
        command.arg(dir.path().join(min_stack.map_or("ok", |_| "starved")));
        match min_stack {
            Some(bytes) => command.env("RUST_MIN_STACK", bytes),
            None => command.env_remove("RUST_MIN_STACK"),
        };
        std::fs::create_dir_all(dir.path().join(min_stack.map_or("ok", |_| "starved")))
            .map_err(|e| e.to_string())?;
        command.output().map_err(|e| e.to_string())
    };
    // With threads available, the program works (so the failure below is
    // the flusher's).
    let fine = run(None)?;
    assert!(
        fine.status.success(),
        "{}",
        String::from_utf8_lossy(&fine.stderr)
    );
    let starved = run(Some("70368744177664"))?; // 64 TiB per thread
    let stderr = String::from_utf8_lossy(&starved.stderr);
    assert_eq!(starved.status.code(), Some(3), "stderr: {stderr}");
    assert!(stderr.contains("db.iqdb.wal"), "stderr: {stderr}");
    Ok(())
}

/// A v1 log cuts a rejected operation's frame off again (1.0's replay fails
/// on one). The cut is made durable at once: otherwise the rejected frame's
/// bytes, still pending, could reach the disk mixed sector by sector with
/// the frames written over them next, and power loss would leave a damaged
/// frame followed by valid ones (corruption, not a torn tail).
#[test]
fn a_rejected_v1_frame_is_cut_off_durably() -> TestResult {
    let fs = SimFs::new();
    let mut db = open(&fs, WalFormat::V1, FsyncPolicy::Never)?;
    for i in 0..4 {
        insert(&mut db, i).map_err(|e| e.to_string())?;
    }
    let rejected = insert(&mut db, 1);
    assert!(
        matches!(rejected, Err(PersistError::IndexBuild(_))),
        "{rejected:?}"
    );
    let wal_path = Path::new("/db/vectors.iqdb.wal");
    assert_eq!(
        fs.durable_image().read_live(wal_path),
        fs.read_live(wal_path),
        "the cut is not durable"
    );
    for i in 4..6 {
        insert(&mut db, i).map_err(|e| e.to_string())?;
    }
    std::mem::forget(db); // power fails before anything else is synced
    every_power_loss_keeps(
        &fs,
        WalFormat::V1,
        &models(&[&[0, 1, 2, 3], &[0, 1, 2, 3, 4], &[0, 1, 2, 3, 4, 5]]),
    )
}

/// A load writes back the part of a v2 log its frames do not record as
/// synced (all of it, for a log written under `Never`), then leaves a sync
/// mark: the next load writes back only that mark, and adds none.
#[test]
fn a_load_writes_an_unsynced_v2_log_back_once() -> TestResult {
    let fs = SimFs::new();
    let mut db = open(&fs, WalFormat::V2, FsyncPolicy::Never)?;
    for i in 0..50 {
        insert(&mut db, i).map_err(|e| e.to_string())?;
    }
    db.close().map_err(|e| e.to_string())?;
    let wal_path = Path::new("/db/vectors.iqdb.wal");
    let written = fs.read_live(wal_path).ok_or("no log")?;
    let writes = |fs: &SimFs, from: u64| {
        fs.trace()
            .iter()
            .filter(|(n, k, p)| *n >= from && *k == OpKind::Write && p == wal_path)
            .count()
    };
    let before = fs.operation_count();
    let db = load(&fs, WalFormat::V2)?;
    check_store(db.index(), &models(&[&(0..50).collect::<Vec<_>>()]))?;
    drop(db);
    let first = fs.read_live(wal_path).ok_or("no log")?;
    assert!(
        writes(&fs, before) >= 2,
        "the unsynced log was not written back"
    );
    assert_eq!(&first[..written.len()], &written[..]);
    assert_eq!(first.len(), written.len() + 8 + 18, "one sync mark");
    let before = fs.operation_count();
    let db = load(&fs, WalFormat::V2)?;
    check_store(db.index(), &models(&[&(0..50).collect::<Vec<_>>()]))?;
    drop(db);
    assert_eq!(
        fs.read_live(wal_path),
        Some(first),
        "a second mark was added"
    );
    assert_eq!(writes(&fs, before), 1, "only the mark is written back");
    Ok(())
}

/// The limit of the bit-rot rule: when the one bit that would make a frame
/// valid lies in a sector that is all zero now (a lost sector whose only
/// set bit was that one, as in a delete of id 1 or a sparse vector), a
/// crash explains it as well as bit rot, and a torn tail it is: power loss
/// zeroing the end of an unsynced v1 frame must never leave a database that
/// does not load. (Found by the chained-fault simulator, seed 1914.)
#[test]
fn a_torn_tail_one_bit_away_from_zeros_still_loads() -> TestResult {
    for wal in [WalFormat::V1, WalFormat::V2] {
        let fs = SimFs::new();
        let store = VectorStore::new(512, DistanceMetric::Euclidean, Default::default())
            .map_err(|e| e.to_string())?;
        let mut db = PersistedIndex::open_with_options(
            store,
            config(FsyncPolicy::Always),
            sim_options(&fs, wal),
        )
        .map_err(|e| e.to_string())?;
        for i in 0..4u64 {
            db.insert(VectorId::from(i), padded_vector(i), None)
                .map_err(|e| e.to_string())?;
        }
        // Zeros but for one bit in the last component.
        let mut sparse = vec![0.0f32; 512];
        sparse[511] = f32::from_bits(1);
        db.insert(VectorId::from(9u64), Arc::from(sparse), None)
            .map_err(|e| e.to_string())?;
        drop(db);
        let wal_path = Path::new("/db/vectors.iqdb.wal");
        let log = fs.read_live(wal_path).ok_or("no log")?;
        let header = if wal == WalFormat::V1 { 12 } else { 40 };
        let frames = frames(&log, header);
        let (start, end) = frames[4];
        assert_eq!(end, log.len());
        // The power fails while the last frame is in flight: its sectors
        // from one inside the (zero) vector to the end never reach the disk.
        let lost_from = (end - 5) / 512 * 512;
        assert!(
            lost_from > start + 22,
            "the lost sector must lie in the vector"
        );
        let mut torn = log.clone();
        torn[lost_from..].fill(0);
        assert_eq!(
            log[lost_from..].iter().map(|b| b.count_ones()).sum::<u32>(),
            1
        );
        let image = SimFs::new();
        let snapshot = fs
            .read_live(Path::new("/db/vectors.iqdb"))
            .ok_or("no snapshot")?;
        image.put_durable(Path::new("/db/vectors.iqdb"), &snapshot);
        image.put_durable(wal_path, &torn);
        let db = PersistedIndex::<VectorStore>::load_with_options(
            config(FsyncPolicy::Always),
            sim_options(&image, wal),
        )
        .map_err(|e| format!("{wal:?}: a torn tail did not load: {e}"))?;
        assert_eq!(db.index().len(), 4);
        let cut = db.recovery_report().truncated.clone().ok_or("no cut")?;
        assert_eq!(cut.offset, start as u64);
        assert_eq!(cut.kind, iqdb_persist::DamageKind::Torn);
    }
    Ok(())
}

/// A checkpoint fails after renaming its snapshot into place (the directory
/// fsync after the rename fails), leaving its intent for the next load;
/// then `open_with` runs and fails before installing its own snapshot. It
/// must not have written its intent over the pending one: the database
/// still loads, holding what the installed snapshot holds. (Found by the
/// chained-fault simulator, seeds 70 and 222.)
#[test]
fn open_with_settles_a_pending_checkpoint_before_writing_its_own() -> TestResult {
    let phase_one = |fs: &SimFs, fail: Option<u64>| -> Result<u64, String> {
        if let Some(k) = fail {
            fs.fail_operation(k, Fault::Io);
        }
        let mut db = open(fs, WalFormat::V2, FsyncPolicy::Always)?;
        for i in 0..3 {
            insert(&mut db, i).map_err(|e| e.to_string())?;
        }
        let before = fs.operation_count();
        let checkpointed = db.checkpoint();
        assert_eq!(checkpointed.is_err(), fail.is_some(), "{checkpointed:?}");
        Ok(before)
    };
    let probe = SimFs::new();
    let before = phase_one(&probe, None)?;
    let rename =
        find_op(&probe, before, OpKind::Rename, "/db/vectors.iqdb").ok_or("no snapshot rename")?;
    let dir_sync = find_op(&probe, rename, OpKind::SyncDir, "/db").ok_or("no dir fsync")?;

    let probe = SimFs::new();
    phase_one(&probe, Some(dir_sync))?;
    let second = probe.operation_count();
    drop(open(&probe, WalFormat::V2, FsyncPolicy::Always));
    let second_rename = find_op(&probe, second, OpKind::Rename, "/db/vectors.iqdb")
        .ok_or("open_with renames no snapshot")?;

    let fs = SimFs::new();
    phase_one(&fs, Some(dir_sync))?;
    fs.fail_operation(second_rename, Fault::Io);
    let opened = open(&fs, WalFormat::V2, FsyncPolicy::Always);
    assert!(opened.is_err(), "the fault in open_with did not fire");
    assert_eq!(
        fs.trace().get(second_rename as usize).map(|t| t.1),
        Some(OpKind::Rename)
    );
    drop(opened);
    let db = load(&fs, WalFormat::V2)?;
    check_store(db.index(), &models(&[&[0, 1, 2]]))?;
    drop(db);
    every_power_loss_keeps(&fs, WalFormat::V2, &models(&[&[0, 1, 2]]))
}
