//! One test per durability point: every fsync, directory fsync, truncation
//! and `synced` bookkeeping step of the write path has a test here that
//! fails when that one step is deleted (scripts/sync-deletions.sh deletes
//! them one at a time; docs/TESTING.md, "Mutation testing", has the table).
//! The tests run on [`SimFs`], whose durable image is exactly what power
//! loss would leave, so a missing fsync shows as a missing write, a missing
//! directory fsync as a missing name, and a wrong `synced` length as a
//! damaged frame classified the wrong way.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use iqdb_index::Index;
use iqdb_persist::storage::{FileHandle, FileSystem, LockGuard};
use iqdb_persist::{
    Compression, DamageKind, FsyncPolicy, Operation, Options, PersistConfig, PersistError,
    PersistedIndex, RecoveryMode, SnapshotFormat, WalFormat,
};
use iqdb_persist_crash_tests::{DIM, Model, record, store_model};
use iqdb_persist_testkit::VectorStore;
use iqdb_persist_testkit::simfs::{Fault, OpKind, SimFs};
use iqdb_types::{DistanceMetric, VectorId};

type TestResult = Result<(), String>;

const DB: &str = "/db/vectors.iqdb";
const WAL: &str = "/db/vectors.iqdb.wal";

fn config(policy: FsyncPolicy) -> PersistConfig {
    PersistConfig {
        path: PathBuf::from(DB),
        wal_enabled: true,
        fsync_policy: policy,
        compression: Compression::None,
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

fn sim(fs: &SimFs, wal: WalFormat) -> Options {
    options(Arc::new(fs.clone()), wal)
}

// ---------------------------------------------------------------------------
// Small records (the crash tests' record stream).

fn open(
    fs: &SimFs,
    wal: WalFormat,
    policy: FsyncPolicy,
) -> Result<PersistedIndex<VectorStore>, String> {
    let store = VectorStore::new(DIM, DistanceMetric::Cosine, Default::default())
        .map_err(|e| e.to_string())?;
    PersistedIndex::open_with_options(store, config(policy), sim(fs, wal))
        .map_err(|e| format!("open_with: {e}"))
}

fn insert(db: &mut PersistedIndex<VectorStore>, i: u64) -> TestResult {
    let (id, vector, metadata) = record(i);
    db.insert(id, vector, metadata)
        .map_err(|e| format!("insert {i}: {e}"))
}

/// What power loss right now would leave, in the most pessimistic case
/// (nothing that was not fsynced): it must load and hold exactly `expected`.
fn pessimistic_image_holds(fs: &SimFs, wal: WalFormat, expected: &Model, when: &str) -> TestResult {
    let image = fs.durable_image();
    let db = PersistedIndex::<VectorStore>::load_with_options(
        config(FsyncPolicy::Always),
        sim(&image, wal),
    )
    .map_err(|e| format!("{wal:?}, power loss {when}: the disk does not load: {e}"))?;
    let found = store_model(db.index())?;
    if &found != expected {
        return Err(format!(
            "{wal:?}, power loss {when}: the disk holds {found:?}, acknowledged {expected:?}"
        ));
    }
    Ok(())
}

/// Every call that returns `Ok` has made its writes durable: the pessimistic
/// power-loss image right after it holds them. Kills a deleted fsync of a
/// temporary (replace::prepare), of the log under `Always` (commit, sync),
/// of the log on `sync()` and `close()`, a deleted directory fsync after an
/// intent's removal, and a `synced` length not reset when a checkpoint
/// installs a fresh log (its first writes would be taken as synced).
#[test]
fn every_acknowledged_call_leaves_its_writes_in_the_pessimistic_image() -> TestResult {
    for wal in [WalFormat::V1, WalFormat::V2] {
        let fs = SimFs::new();
        let mut model = Model::new();
        let mut db = open(&fs, wal, FsyncPolicy::Always)?;
        pessimistic_image_holds(&fs, wal, &model, "after open_with")?;
        for i in 0..6 {
            insert(&mut db, i)?;
            model.insert(i);
            pessimistic_image_holds(&fs, wal, &model, &format!("after insert {i}"))?;
        }
        db.checkpoint().map_err(|e| e.to_string())?;
        pessimistic_image_holds(&fs, wal, &model, "after a checkpoint")?;
        for i in 6..8 {
            insert(&mut db, i)?;
            model.insert(i);
            pessimistic_image_holds(
                &fs,
                wal,
                &model,
                &format!("after insert {i}, post-checkpoint"),
            )?;
        }
        let ops = (8..11)
            .map(|i| {
                let (id, vector, metadata) = record(i);
                Operation::Insert {
                    id,
                    vector,
                    metadata,
                }
            })
            .collect();
        db.apply(ops).map_err(|e| e.to_string())?;
        model.extend(8..11);
        pessimistic_image_holds(&fs, wal, &model, "after a batch")?;
        db.close().map_err(|e| e.to_string())?;

        // Never: only sync() and close() acknowledge.
        let fs = SimFs::new();
        let mut model = Model::new();
        let mut db = open(&fs, wal, FsyncPolicy::Never)?;
        for i in 0..3 {
            insert(&mut db, i)?;
            model.insert(i);
        }
        db.sync().map_err(|e| e.to_string())?;
        pessimistic_image_holds(&fs, wal, &model, "after sync() under Never")?;
        insert(&mut db, 3)?;
        model.insert(3);
        db.close().map_err(|e| e.to_string())?;
        pessimistic_image_holds(&fs, wal, &model, "after close() under Never")?;
    }
    Ok(())
}

/// Power loss at every operation of a checkpoint, in every image the crash
/// can leave (including the ones that keep any subset of the directory
/// changes not yet fsynced): the database loads and holds what it held.
/// Kills a deleted directory fsync after a rename (the intent must be
/// durable before the snapshot is renamed over the old one; without it an
/// image pairs the new snapshot with the old log and does not load).
#[test]
fn power_loss_at_any_step_of_a_checkpoint_keeps_the_database() -> TestResult {
    let wal = WalFormat::V2;
    let setup = |fs: &SimFs| -> Result<(PersistedIndex<VectorStore>, Model), String> {
        let mut db = open(fs, wal, FsyncPolicy::Always)?;
        for i in 0..4 {
            insert(&mut db, i)?;
        }
        Ok((db, (0..4).collect()))
    };
    let probe = SimFs::new();
    let (mut db, _) = setup(&probe)?;
    let first = probe.operation_count();
    db.checkpoint().map_err(|e| e.to_string())?;
    let last = probe.operation_count();
    drop(db);
    let mut images = 0;
    for k in first..last {
        let fs = SimFs::new();
        let (mut db, model) = setup(&fs)?;
        fs.crash_after(k);
        let _ = db.checkpoint();
        std::mem::forget(db);
        for (n, image) in fs.crash_images(k, 100).iter().enumerate() {
            let db = PersistedIndex::<VectorStore>::load_with_options(
                config(FsyncPolicy::Always),
                sim(image, wal),
            )
            .map_err(|e| format!("crash after operation {k}, image {n}: does not load: {e}"))?;
            let found = store_model(db.index())?;
            if found != model {
                return Err(format!(
                    "crash after operation {k}, image {n}: holds {found:?}"
                ));
            }
            images += 1;
        }
    }
    assert!(images > 0);
    Ok(())
}

// ---------------------------------------------------------------------------
// Large records: each frame spans whole 512-byte sectors, so a sector can be
// lost inside one frame (the sign of a torn write).

const BIG_DIM: usize = 256;

fn big_vector(i: u64) -> Arc<[f32]> {
    (0..BIG_DIM as u64)
        .map(|k| 1.0 + ((i * 31 + k) % 97) as f32 / 97.0)
        .collect()
}

fn open_big(
    fs: &SimFs,
    wal: WalFormat,
    policy: FsyncPolicy,
) -> Result<PersistedIndex<VectorStore>, String> {
    let store = VectorStore::new(BIG_DIM, DistanceMetric::Euclidean, Default::default())
        .map_err(|e| e.to_string())?;
    PersistedIndex::open_with_options(store, config(policy), sim(fs, wal))
        .map_err(|e| format!("open_with: {e}"))
}

fn load_big(
    fs: &SimFs,
    wal: WalFormat,
    policy: FsyncPolicy,
    mode: RecoveryMode,
) -> Result<PersistedIndex<VectorStore>, PersistError> {
    PersistedIndex::load_with_options(config(policy), sim(fs, wal).recovery_mode(mode))
}

fn insert_big(db: &mut PersistedIndex<VectorStore>, i: u64) -> TestResult {
    db.insert(VectorId::from(i), big_vector(i), None)
        .map_err(|e| format!("insert {i}: {e}"))
}

/// The records a store holds, each checked against its vector.
fn big_ids(store: &VectorStore) -> Result<BTreeSet<u64>, String> {
    let mut ids = BTreeSet::new();
    for (id, vector, _) in store.iter() {
        let VectorId::U64(i) = id else {
            return Err(format!("phantom id {id}"));
        };
        if vector != &big_vector(*i)[..] {
            return Err(format!("record {i} has the wrong vector"));
        }
        ids.insert(*i);
    }
    Ok(ids)
}

/// Frame boundaries `(offset, end)` of the log bytes `log`.
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

/// The synced length a v2 frame at `offset` records.
fn recorded_synced(log: &[u8], offset: usize) -> u64 {
    let at = offset + 8 + 1 + 8;
    let mut a = [0u8; 8];
    a.copy_from_slice(&log[at..at + 8]);
    u64::from_le_bytes(a)
}

/// A copy of the database's files as they are now, with the log's sector
/// holding byte `within` of frame `frame` zeroed (a sector lost), as a disk
/// after power loss.
fn with_lost_sector(fs: &SimFs, frame: usize) -> Result<SimFs, String> {
    let log = fs.read_live(Path::new(WAL)).ok_or("no log")?;
    let snapshot = fs.read_live(Path::new(DB)).ok_or("no snapshot")?;
    let (start, end) = *frames(&log, 40).get(frame).ok_or("no such frame")?;
    // The first whole sector inside the frame.
    let sector = start.div_ceil(512) * 512;
    if sector + 512 > end {
        return Err(format!("frame {frame} holds no whole sector"));
    }
    let mut damaged = log;
    damaged[sector..sector + 512].fill(0);
    let image = SimFs::new();
    image.put_durable(Path::new(DB), &snapshot);
    image.put_durable(Path::new(WAL), &damaged);
    Ok(image)
}

/// The lost sector in frame `frame` of `fs`'s log must be reported as
/// corruption: the frame had been fsynced (its writes were acknowledged)
/// and a later frame records that, so it cannot be a torn write.
fn lost_sector_is_corruption(fs: &SimFs, frame: usize, what: &str) -> TestResult {
    let image = with_lost_sector(fs, frame)?;
    match load_big(
        &image,
        WalFormat::V2,
        FsyncPolicy::Always,
        RecoveryMode::TolerateTornTail,
    ) {
        Err(e) if e.is_corruption() => Ok(()),
        Err(e) => Err(format!("{what}: loading failed for another reason: {e}")),
        Ok(db) => Err(format!(
            "{what}: a lost sector in fsynced frame {frame} was taken for a torn tail \
             (cut: {:?}); acknowledged records were dropped: {:?} remain",
            db.recovery_report().truncated,
            big_ids(db.index())?
        )),
    }
}

/// Each v2 frame records how much of the log was durable when it was
/// written; `sync` must advance that length. Otherwise a sector lost in
/// an fsynced frame followed by later frames looks like a torn write and
/// the acknowledged frames are cut off silently.
#[test]
fn frames_record_the_fsynced_length_so_a_lost_sector_in_a_synced_frame_is_corruption() -> TestResult
{
    let fs = SimFs::new();
    let mut db = open_big(&fs, WalFormat::V2, FsyncPolicy::Always)?;
    for i in 0..6 {
        insert_big(&mut db, i)?;
    }
    db.close().map_err(|e| e.to_string())?;
    lost_sector_is_corruption(&fs, 2, "one session")
}

/// A writer opened by a load starts with the whole replayed log as synced
/// (the load made it durable): the first frame it writes records that. A
/// writer starting at 0 would make a sector lost in the last frame of the
/// previous session look torn.
#[test]
fn a_reloaded_writer_records_the_replayed_log_as_synced() -> TestResult {
    let fs = SimFs::new();
    let mut db = open_big(&fs, WalFormat::V2, FsyncPolicy::Always)?;
    for i in 0..5 {
        insert_big(&mut db, i)?;
    }
    db.close().map_err(|e| e.to_string())?;
    let mut db = load_big(
        &fs,
        WalFormat::V2,
        FsyncPolicy::Always,
        RecoveryMode::TolerateTornTail,
    )
    .map_err(|e| format!("reload: {e}"))?;
    insert_big(&mut db, 5)?;
    db.close().map_err(|e| e.to_string())?;
    let log = fs.read_live(Path::new(WAL)).ok_or("no log")?;
    let all = frames(&log, 40);
    assert_eq!(all.len(), 6);
    assert_eq!(
        recorded_synced(&log, all[5].0),
        all[5].0 as u64,
        "the first frame after the reload records the replayed log as synced"
    );
    lost_sector_is_corruption(&fs, 4, "the last frame before a reload")
}

/// Under `Periodic`, the background flusher's fsync advances the synced
/// length too.
#[test]
fn the_flushers_fsync_is_recorded_in_later_frames() -> TestResult {
    let fs = SimFs::new();
    let mut db = open_big(
        &fs,
        WalFormat::V2,
        FsyncPolicy::Periodic(Duration::from_millis(4)),
    )?;
    for i in 0..3 {
        insert_big(&mut db, i)?;
    }
    let log = fs.read_live(Path::new(WAL)).ok_or("no log")?;
    let second_end = frames(&log, 40)[1].1 as u64;
    // Keep writing until a frame records the flusher's fsync of the first
    // frames (a guard ends the wait if it never happens; the assertion is on
    // the log, not on the time).
    let guard = Instant::now() + Duration::from_secs(10);
    let mut i = 3;
    loop {
        std::thread::sleep(Duration::from_millis(2));
        insert_big(&mut db, i)?;
        i += 1;
        let log = fs.read_live(Path::new(WAL)).ok_or("no log")?;
        let last = *frames(&log, 40).last().ok_or("no frame")?;
        if recorded_synced(&log, last.0) >= second_end || Instant::now() > guard {
            break;
        }
    }
    db.close().map_err(|e| e.to_string())?;
    lost_sector_is_corruption(&fs, 1, "a frame the flusher fsynced")
}

/// After a failed fsync (Linux drops the dirty pages), a load must write the
/// replayed log back and fsync it before anything new is written: a new
/// frame (even one not yet synced) that reaches the disk before the older
/// bytes records them as synced, and a disk holding it but not them does
/// not load.
#[test]
fn a_reload_after_a_failed_fsync_is_durable_before_the_next_frame() -> TestResult {
    let wal = WalFormat::V2;
    let fs = SimFs::new();
    let mut db = open_big(&fs, wal, FsyncPolicy::Always)?;
    for i in 0..3 {
        insert_big(&mut db, i)?;
    }
    let sync_at = fs.operation_count() + 1;
    fs.fail_operation(sync_at, Fault::Io);
    assert!(insert_big(&mut db, 3).is_err(), "the fsync did not fail");
    assert_eq!(
        fs.trace().get(sync_at as usize).map(|t| t.1),
        Some(OpKind::Sync)
    );
    drop(db);

    let mut db = load_big(&fs, wal, FsyncPolicy::Never, RecoveryMode::TolerateTornTail)
        .map_err(|e| format!("reload: {e}"))?;
    insert_big(&mut db, 4)?; // not synced, not acknowledged
    std::mem::forget(db); // power fails before any sync
    let allowed: [BTreeSet<u64>; 3] = [(0..3).collect(), (0..4).collect(), (0..5).collect()];
    for (n, image) in fs.crash_images(0xD0, 400).iter().enumerate() {
        let db = load_big(
            image,
            wal,
            FsyncPolicy::Always,
            RecoveryMode::TolerateTornTail,
        )
        .map_err(|e| format!("image {n}: does not load: {e}"))?;
        let found = big_ids(db.index())?;
        if !allowed.contains(&found) {
            return Err(format!("image {n}: holds {found:?}"));
        }
    }
    Ok(())
}

/// A load writes back only the part of a v2 log not known durable (from the
/// synced length its last frame records), not the whole log: one write for
/// the last frame of a cleanly closed log over 1 MiB long, where the whole
/// log takes two (make_durable writes at most 1 MiB at a time).
#[test]
fn a_reload_writes_back_only_what_is_not_known_durable() -> TestResult {
    let fs = SimFs::new();
    let mut db = open_big(&fs, WalFormat::V2, FsyncPolicy::Always)?;
    for batch in 0..12u64 {
        db.apply(big_batch(batch * 100..batch * 100 + 100))
            .map_err(|e| e.to_string())?;
    }
    db.close().map_err(|e| e.to_string())?;
    let log_len = fs.read_live(Path::new(WAL)).ok_or("no log")?.len();
    assert!(log_len > 1 << 20, "the log is {log_len} bytes");
    let before = fs.operation_count();
    let db = load_big(
        &fs,
        WalFormat::V2,
        FsyncPolicy::Always,
        RecoveryMode::TolerateTornTail,
    )
    .map_err(|e| format!("reload: {e}"))?;
    assert_eq!(big_ids(db.index())?.len(), 1200);
    let writes = fs
        .trace()
        .into_iter()
        .filter(|(n, kind, path)| *n >= before && *kind == OpKind::Write && path == Path::new(WAL))
        .count();
    assert_eq!(writes, 1, "the load wrote the log {writes} times");

    // A v1 log records no synced length: all of it is written back, in
    // 1 MiB pieces, the last one shorter.
    let fs = SimFs::new();
    let mut db = open_big(&fs, WalFormat::V1, FsyncPolicy::Always)?;
    for batch in 0..12u64 {
        db.apply(big_batch(batch * 100..batch * 100 + 100))
            .map_err(|e| e.to_string())?;
    }
    db.close().map_err(|e| e.to_string())?;
    let log_len = fs.read_live(Path::new(WAL)).ok_or("no log")?.len();
    assert!(log_len > 1 << 20 && log_len % (1 << 20) != 0);
    let before = fs.operation_count();
    let db = load_big(
        &fs,
        WalFormat::V1,
        FsyncPolicy::Always,
        RecoveryMode::TolerateTornTail,
    )
    .map_err(|e| format!("reload of a v1 log of {log_len} bytes: {e}"))?;
    assert_eq!(big_ids(db.index())?.len(), 1200);
    let writes = fs
        .trace()
        .into_iter()
        .filter(|(n, kind, path)| *n >= before && *kind == OpKind::Write && path == Path::new(WAL))
        .count();
    assert_eq!(writes, 2, "the load wrote the v1 log {writes} times");
    Ok(())
}

fn big_batch(ids: std::ops::Range<u64>) -> Vec<Operation> {
    ids.map(|i| Operation::Insert {
        id: VectorId::from(i),
        vector: big_vector(i),
        metadata: None,
    })
    .collect()
}

// ---------------------------------------------------------------------------
// Truncations of the writer.

/// A write that fails part-way (ENOSPC) is cut off the log again: the live
/// log is as it was, and the handle goes on.
#[test]
fn a_failed_append_is_cut_off_the_log() -> TestResult {
    for wal in [WalFormat::V1, WalFormat::V2] {
        let fs = SimFs::new();
        let mut db = open(&fs, wal, FsyncPolicy::Always)?;
        insert(&mut db, 0)?;
        let before = fs.read_live(Path::new(WAL)).ok_or("no log")?;
        let write_at = fs.operation_count();
        fs.fail_operation(write_at, Fault::NoSpace);
        assert!(
            insert(&mut db, 1).is_err(),
            "{wal:?}: the write did not fail"
        );
        assert_eq!(
            fs.trace().get(write_at as usize).map(|t| t.1),
            Some(OpKind::Write)
        );
        let after = fs.read_live(Path::new(WAL)).ok_or("no log")?;
        if after != before {
            return Err(format!(
                "{wal:?}: the failed write left {} bytes in the log",
                after.len() as i64 - before.len() as i64
            ));
        }
        insert(&mut db, 2)?;
        db.close().map_err(|e| e.to_string())?;
        pessimistic_image_holds(
            &fs,
            wal,
            &[0, 2].into_iter().collect(),
            "after a failed write",
        )?;
    }
    Ok(())
}

/// A v1 log drops the frame of an operation the index rejected (1.0's
/// replay fails on one): the live log is as it was before.
#[test]
fn a_rejected_operation_is_cut_off_a_v1_log() -> TestResult {
    let fs = SimFs::new();
    let mut db = open(&fs, WalFormat::V1, FsyncPolicy::Always)?;
    insert(&mut db, 0)?;
    let before = fs.read_live(Path::new(WAL)).ok_or("no log")?;
    assert!(
        insert(&mut db, 0).is_err(),
        "a duplicate insert was accepted"
    );
    let after = fs.read_live(Path::new(WAL)).ok_or("no log")?;
    if after != before {
        return Err(format!(
            "the rejected insert left {} bytes in the v1 log",
            after.len() as i64 - before.len() as i64
        ));
    }
    db.close().map_err(|e| e.to_string())?;
    Ok(())
}

/// What the hooked log file saw.
#[derive(Debug, Default)]
struct Events {
    /// Background fsyncs whose `sync_data` has returned from the disk.
    flushes_started: u64,
    /// Background fsyncs that returned to the flusher.
    flushes: u64,
    /// `set_len` calls (cuts).
    cuts: u64,
    /// Writes after the first cut.
    writes_after_cut: u64,
    /// All writes.
    writes: u64,
}

/// Hooks on the log that force one interleaving of the writer thread and
/// the background flusher.
#[derive(Debug, Default)]
struct Hooks {
    events: Mutex<Events>,
    changed: Condvar,
    /// The next cut waits until a background fsync has returned (and a
    /// moment more, for the flusher to record it).
    cut_after_flush: AtomicBool,
    /// The next cut waits until a background fsync has reached the disk,
    /// and that fsync returns to the flusher only after a write following
    /// the cut.
    flush_across_cut: AtomicBool,
    /// The next background fsync returns to the flusher only after the
    /// next write (to any log file).
    flush_until_next_write: AtomicBool,
}

impl Hooks {
    fn events(&self) -> std::sync::MutexGuard<'_, Events> {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn update(&self, f: impl FnOnce(&mut Events)) {
        f(&mut self.events());
        self.changed.notify_all();
    }

    /// Waits until `until` holds (a guard ends the wait after 20 s; the
    /// tests then assert that the event happened).
    fn wait(&self, until: impl Fn(&Events) -> bool) {
        let guard = Instant::now() + Duration::from_secs(20);
        let mut events = self.events();
        while !until(&events) && Instant::now() < guard {
            events = self
                .changed
                .wait_timeout(events, Duration::from_millis(50))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }
}

#[derive(Debug)]
struct HookedFs {
    inner: SimFs,
    hooks: Arc<Hooks>,
}

#[derive(Debug)]
struct HookedLog {
    inner: Arc<dyn FileHandle>,
    hooks: Arc<Hooks>,
}

fn on_flusher() -> bool {
    std::thread::current().name() == Some("iqdb-persist-flusher")
}

impl FileHandle for HookedLog {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        let result = self.inner.write_all_at(buf, offset);
        self.hooks.update(|e| {
            e.writes += 1;
            if e.cuts > 0 {
                e.writes_after_cut += 1;
            }
        });
        result
    }
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        let hooks = &self.hooks;
        if hooks.cut_after_flush.swap(false, Ordering::SeqCst) {
            let start = hooks.events().flushes;
            hooks.wait(|e| e.flushes > start);
            std::thread::sleep(Duration::from_millis(50));
        }
        if hooks.flush_across_cut.load(Ordering::SeqCst) {
            let start = hooks.events().flushes_started;
            hooks.wait(|e| e.flushes_started > start);
        }
        let result = self.inner.set_len(len);
        hooks.update(|e| e.cuts += 1);
        result
    }
    fn sync_data(&self) -> std::io::Result<()> {
        let result = self.inner.sync_data();
        if on_flusher() {
            let hooks = &self.hooks;
            hooks.update(|e| e.flushes_started += 1);
            if hooks.flush_across_cut.swap(false, Ordering::SeqCst) {
                hooks.wait(|e| e.writes_after_cut > 0);
            }
            if hooks.flush_until_next_write.swap(false, Ordering::SeqCst) {
                let writes = hooks.events().writes;
                hooks.wait(|e| e.writes > writes);
            }
            hooks.update(|e| e.flushes += 1);
        }
        result
    }
    fn sync_all(&self) -> std::io::Result<()> {
        self.inner.sync_all()
    }
}

impl FileSystem for HookedFs {
    fn open_read(&self, path: &Path) -> std::io::Result<Arc<dyn FileHandle>> {
        self.inner.open_read(path)
    }
    fn open_write(&self, path: &Path) -> std::io::Result<Arc<dyn FileHandle>> {
        let inner = self.inner.open_write(path)?;
        if path != Path::new(WAL) {
            return Ok(inner);
        }
        Ok(Arc::new(HookedLog {
            inner,
            hooks: self.hooks.clone(),
        }))
    }
    fn create_new(&self, path: &Path) -> std::io::Result<Arc<dyn FileHandle>> {
        self.inner.create_new(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
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

/// A v1 log under `Periodic`, its writer rolling back a rejected insert
/// while `arm` forces an interleaving with the flusher; then an insert of
/// the same size, where the rejected one was, and `sync()`. The disk must
/// hold that insert once `sync()` returned `Ok`.
fn rollback_then_sync(arm: impl FnOnce(&Hooks)) -> TestResult {
    let sim = SimFs::new();
    let hooks = Arc::new(Hooks::default());
    let fs = Arc::new(HookedFs {
        inner: sim.clone(),
        hooks: hooks.clone(),
    });
    let store = VectorStore::new(BIG_DIM, DistanceMetric::Euclidean, Default::default())
        .map_err(|e| e.to_string())?;
    let mut db = PersistedIndex::open_with_options(
        store,
        config(FsyncPolicy::Periodic(Duration::from_millis(20))),
        options(fs, WalFormat::V1),
    )
    .map_err(|e| format!("open_with: {e}"))?;
    insert_big(&mut db, 0)?;
    db.sync().map_err(|e| e.to_string())?;
    let flushes = hooks.events().flushes;
    arm(&hooks);
    // A duplicate: logged, rejected by the index, cut off again.
    assert!(
        insert_big(&mut db, 0).is_err(),
        "a duplicate insert was accepted"
    );
    assert_eq!(hooks.events().cuts, 1, "the rejected frame was not cut off");
    // The rollback fsyncs its cut itself, holding the fsync turn, so the
    // flusher's fsync can no longer straddle it; either way the interleaving
    // the test arms must have been decided before the next write.
    let cut_made_durable =
        sim.durable_image().read_live(Path::new(WAL)) == sim.read_live(Path::new(WAL));
    insert_big(&mut db, 1)?;
    db.sync().map_err(|e| e.to_string())?;
    assert!(
        hooks.events().flushes > flushes || cut_made_durable,
        "neither the flusher fsynced the rejected frame nor the rollback its cut"
    );
    let image = sim.durable_image();
    let reloaded = load_big(
        &image,
        WalFormat::V1,
        FsyncPolicy::Always,
        RecoveryMode::TolerateTornTail,
    )
    .map_err(|e| format!("the disk does not load: {e}"))?;
    let found = big_ids(reloaded.index())?;
    drop(db);
    if found != [0, 1].into_iter().collect() {
        return Err(format!(
            "sync() returned Ok but the disk holds {found:?}, not [0, 1]: the write in the \
             rejected frame's place was taken as already synced"
        ));
    }
    Ok(())
}

/// The flusher fsyncs a frame that is then rolled back (v1, a rejected
/// insert): the synced length must come back down to the cut, or the next
/// frame, written where the rejected one was, counts as synced.
#[test]
fn a_rollback_after_the_flushers_fsync_lowers_the_synced_length() -> TestResult {
    rollback_then_sync(|h| h.cut_after_flush.store(true, Ordering::SeqCst))
}

/// The flusher's fsync is in flight while the writer rolls a frame back and
/// writes another in its place: that fsync's result must not mark the new
/// frame synced (it may not have covered it).
#[test]
fn a_flushers_fsync_in_flight_across_a_rollback_is_not_recorded() -> TestResult {
    rollback_then_sync(|h| h.flush_across_cut.store(true, Ordering::SeqCst))
}

// ---------------------------------------------------------------------------
// Salvage and repair: the copy of the log must be durable before the log is
// cut, and the cut itself durable.

/// A database whose v2 log has a flipped bit in frame 2 of 6 (corruption).
fn corrupt_database() -> Result<(SimFs, Vec<u8>, usize), String> {
    let fs = SimFs::new();
    let mut db = open_big(&fs, WalFormat::V2, FsyncPolicy::Always)?;
    for i in 0..6 {
        insert_big(&mut db, i)?;
    }
    db.close().map_err(|e| e.to_string())?;
    let mut log = fs.read_live(Path::new(WAL)).ok_or("no log")?;
    let (start, _) = frames(&log, 40)[2];
    log[start + 100] ^= 0x10;
    let snapshot = fs.read_live(Path::new(DB)).ok_or("no snapshot")?;
    let image = SimFs::new();
    image.put_durable(Path::new(DB), &snapshot);
    image.put_durable(Path::new(WAL), &log);
    Ok((image, log, start))
}

/// The salvage copies `*.wal.salvaged-*` on the disk `image`, with contents.
fn backups(image: &SimFs) -> Vec<Vec<u8>> {
    image
        .live_names()
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".wal.salvaged-"))
        .filter_map(|p| image.read_live(&p))
        .collect()
}

/// Checks the disk after power loss right after a log was cut: either it
/// was not cut, or it was and a whole copy of it is there.
fn cut_only_with_a_backup(image: &SimFs, original: &[u8], cut_at: usize, when: &str) -> TestResult {
    let log = image.read_live(Path::new(WAL)).ok_or("no log")?;
    if log == original {
        return Ok(());
    }
    if log != original[..cut_at] {
        return Err(format!(
            "{when}: the log is neither whole nor cut at {cut_at}"
        ));
    }
    if !backups(image).iter().any(|b| b == original) {
        return Err(format!(
            "{when}: the log was cut but the disk has no whole copy of it (copies: {:?} bytes)",
            backups(image).iter().map(Vec::len).collect::<Vec<_>>()
        ));
    }
    Ok(())
}

/// Power loss right after a salvage load fsynced its cut of the log: the
/// cut part is in a durable copy (its data fsynced, its name too).
#[test]
fn a_salvage_load_makes_its_copy_durable_before_the_cut() -> TestResult {
    let (probe, original, cut_at) = corrupt_database()?;
    let before = probe.operation_count();
    let db = load_big(
        &probe,
        WalFormat::V2,
        FsyncPolicy::Always,
        RecoveryMode::Salvage,
    )
    .map_err(|e| format!("salvage load: {e}"))?;
    assert_eq!(big_ids(db.index())?, [0, 1].into_iter().collect());
    drop(db);
    let trace = probe.trace();
    let set_len = trace
        .iter()
        .find(|(n, k, p)| *n >= before && *k == OpKind::SetLen && p == Path::new(WAL))
        .map(|t| t.0)
        .ok_or("the salvage load did not cut the log")?;
    let synced = trace
        .iter()
        .find(|(n, k, p)| *n > set_len && *k == OpKind::Sync && p == Path::new(WAL))
        .map(|t| t.0)
        .ok_or("the cut was never fsynced")?;
    let (fs, _, _) = corrupt_database()?;
    fs.crash_after(synced);
    assert!(
        load_big(
            &fs,
            WalFormat::V2,
            FsyncPolicy::Always,
            RecoveryMode::Salvage
        )
        .is_err()
    );
    cut_only_with_a_backup(&fs.durable_image(), &original, cut_at, "salvage load")
}

/// An explicit salvage repair: when it returns, the log is cut durably
/// (the database loads in the default mode after power loss) and its copy
/// is durable.
#[test]
fn a_salvage_repair_is_durable_when_it_returns() -> TestResult {
    let (fs, original, cut_at) = corrupt_database()?;
    let report = iqdb_persist::inspect::repair_log(
        &config(FsyncPolicy::Always),
        &sim(&fs, WalFormat::V2),
        true,
    )
    .map_err(|e| format!("repair: {e}"))?;
    let cut = report.truncated.ok_or("the repair did not cut")?;
    assert_eq!(cut.kind, DamageKind::Corrupt);
    let image = fs.durable_image();
    let log = image.read_live(Path::new(WAL)).ok_or("no log")?;
    if log.len() != cut_at {
        return Err(format!(
            "power loss after the repair: the log is {} bytes, the repair cut it at {cut_at}",
            log.len()
        ));
    }
    cut_only_with_a_backup(&image, &original, cut_at, "repair")?;
    let db = load_big(
        &image,
        WalFormat::V2,
        FsyncPolicy::Always,
        RecoveryMode::TolerateTornTail,
    )
    .map_err(|e| format!("power loss after the repair: does not load: {e}"))?;
    assert_eq!(big_ids(db.index())?, [0, 1].into_iter().collect());
    Ok(())
}

// ---------------------------------------------------------------------------
// Sequence numbers across a fresh log.

/// A fresh log started by a load (here: the log is gone) numbers its first
/// operation right after the last one the snapshot holds, never reusing
/// one (replication keys objects by these numbers).
#[test]
fn a_fresh_log_continues_the_snapshots_sequence() -> TestResult {
    let fs = SimFs::new();
    let mut db = open(&fs, WalFormat::V2, FsyncPolicy::Always)?;
    for i in 0..3 {
        insert(&mut db, i)?;
    }
    db.checkpoint().map_err(|e| e.to_string())?;
    assert_eq!(db.next_sequence(), Some(4));
    db.close().map_err(|e| e.to_string())?;
    fs.remove_file(Path::new(WAL)).map_err(|e| e.to_string())?;
    fs.sync_dir(Path::new("/db")).map_err(|e| e.to_string())?;
    let mut db = PersistedIndex::<VectorStore>::load_with_options(
        config(FsyncPolicy::Always),
        sim(&fs, WalFormat::V2),
    )
    .map_err(|e| format!("load: {e}"))?;
    assert!(db.recovery_report().wal_created);
    assert_eq!(
        db.next_sequence(),
        Some(4),
        "the fresh log reuses or skips a sequence number"
    );
    insert(&mut db, 3)?;
    assert_eq!(db.next_sequence(), Some(5));
    Ok(())
}

/// A 1.0-format (v1) log loaded with the default options: one that holds
/// operations is kept (and appended to) in its own format, so they survive
/// the next load too; an empty one is switched to the current format.
#[test]
fn a_load_switches_only_an_empty_log_to_the_current_format() -> TestResult {
    let fs = SimFs::new();
    let mut db = open(&fs, WalFormat::V1, FsyncPolicy::Always)?;
    for i in 0..3 {
        insert(&mut db, i)?;
    }
    db.close().map_err(|e| e.to_string())?;
    let reload = |what: &str| {
        PersistedIndex::<VectorStore>::load_with_options(
            config(FsyncPolicy::Always),
            sim(&fs, WalFormat::V2),
        )
        .map_err(|e| format!("{what}: {e}"))
    };
    let mut db = reload("first load with the default options")?;
    let first_version = db.recovery_report().wal_version;
    insert(&mut db, 3)?;
    db.close().map_err(|e| e.to_string())?;
    let db = reload("second load")?;
    let found = store_model(db.index())?;
    if found != (0..4).collect::<Model>() {
        return Err(format!(
            "after two loads the database holds {found:?}, not 0..4 (the first load started \
             a log of format {first_version:?})"
        ));
    }
    assert_eq!(
        first_version,
        Some(1),
        "a log with operations changed format"
    );
    db.close().map_err(|e| e.to_string())?;

    // An empty v1 log (a fresh 1.0 database) is switched.
    let fs = SimFs::new();
    open(&fs, WalFormat::V1, FsyncPolicy::Always)?
        .close()
        .map_err(|e| e.to_string())?;
    let db = PersistedIndex::<VectorStore>::load_with_options(
        config(FsyncPolicy::Always),
        sim(&fs, WalFormat::V2),
    )
    .map_err(|e| format!("load of an empty v1 log: {e}"))?;
    assert_eq!(
        db.recovery_report().wal_version,
        Some(2),
        "an empty v1 log was not switched"
    );
    assert!(db.recovery_report().wal_created);
    Ok(())
}

/// The flusher's fsync of the old log is in flight while a checkpoint
/// installs a fresh log and a write lands in it: that fsync's result must
/// not mark the new log synced (`replace_file` bumps the generation).
#[test]
fn a_flushers_fsync_in_flight_across_a_checkpoint_is_not_recorded() -> TestResult {
    let sim = SimFs::new();
    let hooks = Arc::new(Hooks::default());
    let fs = Arc::new(HookedFs {
        inner: sim.clone(),
        hooks: hooks.clone(),
    });
    let store = VectorStore::new(BIG_DIM, DistanceMetric::Euclidean, Default::default())
        .map_err(|e| e.to_string())?;
    let mut db = PersistedIndex::open_with_options(
        store,
        config(FsyncPolicy::Periodic(Duration::from_millis(20))),
        options(fs, WalFormat::V2),
    )
    .map_err(|e| format!("open_with: {e}"))?;
    hooks.flush_until_next_write.store(true, Ordering::SeqCst);
    let started = hooks.events().flushes_started;
    insert_big(&mut db, 0)?;
    hooks.wait(|e| e.flushes_started > started);
    assert!(
        hooks.events().flushes_started > started,
        "the flusher never fsynced"
    );
    db.checkpoint().map_err(|e| format!("checkpoint: {e}"))?;
    // The same length as record 0's frame, in the fresh log.
    insert_big(&mut db, 1)?;
    db.sync().map_err(|e| e.to_string())?;
    let image = sim.durable_image();
    let reloaded = load_big(
        &image,
        WalFormat::V2,
        FsyncPolicy::Always,
        RecoveryMode::TolerateTornTail,
    )
    .map_err(|e| format!("the disk does not load: {e}"))?;
    let found = big_ids(reloaded.index())?;
    drop(db);
    if found != [0, 1].into_iter().collect() {
        return Err(format!(
            "sync() returned Ok but the disk holds {found:?}, not [0, 1]: the old log's fsync \
             was recorded for the new log"
        ));
    }
    Ok(())
}

/// A handle poisoned by a checkpoint that failed after installing its
/// snapshot, with every write synced: `close()` has nothing to sync and
/// returns `Ok` (an error means acknowledged writes may be lost).
#[test]
fn close_of_a_poisoned_handle_with_nothing_unsynced_is_ok() -> TestResult {
    let wal = WalFormat::V2;
    let run = |fs: &SimFs| -> Result<(PersistedIndex<VectorStore>, u64), String> {
        let mut db = open(fs, wal, FsyncPolicy::Always)?;
        for i in 0..3 {
            insert(&mut db, i)?;
        }
        Ok((db, fs.operation_count()))
    };
    let probe = SimFs::new();
    let (mut db, before) = run(&probe)?;
    db.checkpoint().map_err(|e| e.to_string())?;
    drop(db);
    let last_dir_sync = probe
        .trace()
        .into_iter()
        .filter(|(n, k, _)| *n >= before && *k == OpKind::SyncDir)
        .map(|t| t.0)
        .next_back()
        .ok_or("the checkpoint fsyncs no directory")?;
    let fs = SimFs::new();
    let (mut db, _) = run(&fs)?;
    fs.fail_operation(last_dir_sync, Fault::Io);
    assert!(db.checkpoint().is_err(), "the injected fault did not fire");
    let (id, vector, metadata) = record(9);
    assert!(
        matches!(
            db.insert(id, vector, metadata),
            Err(PersistError::Poisoned { .. })
        ),
        "the handle is not poisoned"
    );
    db.close()
        .map_err(|e| format!("close() of a handle with nothing unsynced failed: {e}"))
}
