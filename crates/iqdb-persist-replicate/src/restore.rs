//! Restore: rebuilding a database from the replica.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iqdb_persist::SnapshotFingerprint;
use iqdb_persist::inspect::{self, RawFrame};
use iqdb_persist::storage::{FileSystem, StdFileSystem};

use crate::error::{ReplicateError, Result};
use crate::format;
use crate::manifest::{Generation, Manifest, RestorePoint, RestoreTarget};
use crate::progress::Progress;
use crate::remote::Remote;

/// Settings of a restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Where to stop.
    pub target: RestoreTarget,
    /// The snapshot's file name in the directory (default: the replicated
    /// database's).
    pub name: Option<String>,
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestoreReport {
    /// The restored snapshot (`PersistedIndex::load` it with the WAL on).
    pub path: PathBuf,
    /// The restored log.
    pub wal: PathBuf,
    /// The generation restored from.
    pub generation: String,
    /// The snapshot's base: operations from here on come from the log.
    pub base_seq: u64,
    /// Operations below this sequence number are restored.
    pub end_seq: u64,
    /// Segments applied.
    pub segments: usize,
    /// Log frames restored.
    pub frames: u64,
    /// Bytes downloaded.
    pub bytes: u64,
    /// Set when the requested point could not be restored because an
    /// object was damaged, and an earlier complete point was restored
    /// instead: what was wrong.
    pub fell_back: Option<String>,
    /// How long it took.
    pub elapsed: Duration,
}

/// Largest segment object a restore accepts (a segment holds up to
/// `max_segment_bytes` of frames, 16 MiB by default, or one larger frame).
pub const MAX_SEGMENT_OBJECT_BYTES: u64 = 1 << 30;

/// How often a restore reads the manifest again when an object it lists
/// disappeared (a replicator merged or pruned meanwhile).
const MISSING_RETRIES: usize = 5;

/// Restores the point for `options.target` of the manifest into `dir`,
/// reading the manifest again when an object it listed is gone (a
/// concurrent merge or prune committed a newer one).
pub(crate) fn restore(
    remote: &Remote,
    manifest: &Manifest,
    dir: &Path,
    options: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let mut manifest = manifest.clone();
    let mut attempt = 0;
    loop {
        match restore_once(remote, &manifest, dir, options, progress) {
            Err(ReplicateError::Missing { key }) if attempt < MISSING_RETRIES => {
                attempt += 1;
                tracing::info!(
                    key,
                    "an object the manifest listed is gone; reading the manifest again"
                );
                let newer = crate::replicator::read_manifest(remote)?.map(|(m, _)| m);
                match newer {
                    Some(m) if m != manifest => manifest = m,
                    // The same manifest still lists it: it is lost.
                    _ => {
                        return Err(ReplicateError::corrupt(
                            key,
                            "the manifest lists it, but it is missing",
                        ));
                    }
                }
            }
            Err(ReplicateError::Missing { key }) => {
                return Err(ReplicateError::corrupt(
                    key,
                    "the manifest lists it, but it is missing",
                ));
            }
            other => return other,
        }
    }
}

fn restore_once(
    remote: &Remote,
    manifest: &Manifest,
    dir: &Path,
    options: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let started = Instant::now();
    prepare_dir(dir)?;
    let name = options
        .name
        .clone()
        .unwrap_or_else(|| manifest.database.clone());
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(ReplicateError::invalid(format!(
            "{name:?} is not a file name"
        )));
    }
    let path = dir.join(&name);
    let wal = iqdb_persist::PersistConfig::new(&path).wal_path();
    let Some(mut point) = manifest.restore_point(options.target) else {
        return Err(ReplicateError::NotFound {
            what: match options.target {
                RestoreTarget::Latest => "the replica holds no generation yet".to_string(),
                RestoreTarget::Sequence(s) => format!(
                    "no generation of the replica holds sequence number {s} (see `generations`)"
                ),
                RestoreTarget::Time(ms) => format!(
                    "the replica holds nothing committed at or before {}",
                    crate::format_time(ms)
                ),
            },
        });
    };
    let may_fall_back = options.target == RestoreTarget::Latest;
    let mut fell_back: Option<String> = None;
    loop {
        match restore_point(remote, manifest, point, &path, &wal, progress) {
            Ok(mut report) => {
                report.fell_back = fell_back;
                report.elapsed = started.elapsed();
                return Ok(report);
            }
            Err(Failure { error, segments_ok }) => {
                cleanup(&path, &wal);
                if matches!(error, ReplicateError::Missing { .. }) {
                    return Err(error);
                }
                if !may_fall_back || !error.is_corruption() {
                    return Err(error);
                }
                let why = error.to_string();
                tracing::warn!(error = %why, "restore falls back to an earlier point");
                fell_back.get_or_insert(why);
                point = match segments_ok {
                    // A damaged segment: stop before it.
                    Some(k) => {
                        let g = &manifest.generations[point.generation];
                        RestorePoint {
                            generation: point.generation,
                            segments: k,
                            end_seq: if k == 0 {
                                g.base_seq
                            } else {
                                g.segments[k - 1].end_seq
                            },
                        }
                    }
                    // A damaged snapshot: the previous generation.
                    None if point.generation > 0 => {
                        let i = point.generation - 1;
                        let g = &manifest.generations[i];
                        RestorePoint {
                            generation: i,
                            segments: g.segments.len(),
                            end_seq: g.end_seq(),
                        }
                    }
                    None => return Err(error),
                };
            }
        }
    }
}

struct Failure {
    error: ReplicateError,
    /// For a damaged segment: how many segments before it were fine.
    segments_ok: Option<usize>,
}

impl From<ReplicateError> for Failure {
    fn from(error: ReplicateError) -> Self {
        Self {
            error,
            segments_ok: None,
        }
    }
}

fn restore_point(
    remote: &Remote,
    manifest: &Manifest,
    point: RestorePoint,
    path: &Path,
    wal: &Path,
    progress: &dyn Progress,
) -> std::result::Result<RestoreReport, Failure> {
    let g = &manifest.generations[point.generation];
    let segments = &g.segments[..point.segments];
    let total = segments
        .iter()
        .fold(g.snapshot.len, |t, s| t.saturating_add(s.len));
    progress.begin(&format!("restore {}", g.id), total);
    let temp = temp_path(path);
    let result = (|| {
        // Nothing the manifest says is trusted before it is checked: keys
        // must lie under their generation, sizes within bounds.
        let under = format!("{}/", Generation::dir(&g.id));
        if !g.snapshot.key.starts_with(&under) {
            return Err(Failure::from(ReplicateError::corrupt(
                remote.path(&g.snapshot.key).to_string(),
                format!(
                    "the manifest lists it for generation {}, outside its directory",
                    g.id
                ),
            )));
        }
        for (k, entry) in segments.iter().enumerate() {
            let reason = if !entry.key.starts_with(&under) {
                Some(format!(
                    "listed for generation {}, outside its directory",
                    g.id
                ))
            } else if entry.len > MAX_SEGMENT_OBJECT_BYTES {
                Some(format!(
                    "the manifest says {} bytes, more than a segment may have ({MAX_SEGMENT_OBJECT_BYTES})",
                    entry.len
                ))
            } else if entry.first_seq >= entry.end_seq {
                Some("the manifest gives it an empty sequence range".to_string())
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(Failure {
                    error: ReplicateError::corrupt(remote.path(&entry.key).to_string(), reason),
                    segments_ok: Some(k),
                });
            }
        }
        // The snapshot: download under a temporary name, check its
        // checksum and every checksum inside it, then put it in place.
        let snapshot_key = remote.path(&g.snapshot.key).to_string();
        let mut file = std::fs::File::create(&temp).map_err(|e| ReplicateError::io(&temp, e))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, &mut file);
        let crc = remote.get_stream(&g.snapshot.key, g.snapshot.len, &mut out, progress)?;
        let len = g.snapshot.len;
        out.flush().map_err(|e| ReplicateError::io(&temp, e))?;
        drop(out);
        file.sync_all().map_err(|e| ReplicateError::io(&temp, e))?;
        drop(file);
        if len != g.snapshot.len || crc != g.snapshot.crc32 {
            let _ = std::fs::remove_file(&temp);
            return Err(Failure::from(ReplicateError::corrupt(
                snapshot_key,
                format!(
                    "{len} bytes with CRC-32 {crc:08x}; the manifest says {} bytes with {:08x}",
                    g.snapshot.len, g.snapshot.crc32
                ),
            )));
        }
        std::fs::rename(&temp, path).map_err(|e| ReplicateError::io(path, e))?;
        let fs: Arc<dyn FileSystem> = StdFileSystem::shared();
        let info = inspect::snapshot_info(fs.as_ref(), path, true).map_err(|e| {
            ReplicateError::corrupt(
                snapshot_key.clone(),
                format!("the snapshot does not verify: {e}"),
            )
        })?;
        let fingerprint = SnapshotFingerprint {
            crc32: g.snapshot.header_crc32,
            len: g.snapshot.len,
        };
        if let Some(last) = info.last_seq
            && last.checked_add(1) != Some(g.base_seq)
        {
            return Err(ReplicateError::corrupt(
                snapshot_key,
                format!(
                    "the snapshot holds operations up to sequence {last}, but the manifest says its generation's log starts at {}",
                    g.base_seq
                ),
            )
            .into());
        }
        if info.fingerprint != fingerprint {
            return Err(ReplicateError::corrupt(
                snapshot_key,
                "the snapshot is not the one the manifest names",
            )
            .into());
        }
        // The log: segment by segment, each downloaded and verified whole
        // before its frames are written, cut at the target. At most one
        // segment is in memory, whatever the length of the log.
        let mut pending: std::collections::VecDeque<RawFrame> = Default::default();
        let mut k = 0usize;
        let mut next = g.base_seq;
        let mut bytes = len;
        let mut frames = 0u64;
        let mut end_seq = g.base_seq;
        let mut failure: Option<Failure> = None;
        let mut done = false;
        let mut pull = || -> iqdb_persist::Result<Option<RawFrame>> {
            loop {
                if done {
                    return Ok(None);
                }
                if let Some(frame) = pending.pop_front() {
                    if frame.end_seq() > point.end_seq {
                        done = true;
                        return Ok(None);
                    }
                    frames += 1;
                    end_seq = frame.end_seq();
                    return Ok(Some(frame));
                }
                let Some(entry) = segments.get(k) else {
                    return Ok(None);
                };
                let fail = |error| Failure {
                    error,
                    segments_ok: Some(k),
                };
                let key = remote.path(&entry.key).to_string();
                // Bounded above: `entry.len` was checked against the maximum.
                let mut buf = Vec::with_capacity(usize::try_from(entry.len).unwrap_or(0));
                let checked = remote
                    .get_stream(&entry.key, entry.len, &mut buf, progress)
                    .and_then(|_| format::decode_segment(&key, &buf))
                    .and_then(|(header, seg_frames)| {
                        if header.first_seq != entry.first_seq
                            || header.end_seq != entry.end_seq
                            || header.body_crc != entry.crc32
                            || header.first_seq != next
                        {
                            return Err(ReplicateError::corrupt(
                                key.clone(),
                                "the segment is not the one the manifest names",
                            ));
                        }
                        Ok((header, seg_frames))
                    });
                match checked {
                    Ok((header, seg_frames)) => {
                        bytes = bytes.saturating_add(entry.len);
                        next = header.end_seq;
                        pending.extend(seg_frames);
                        k += 1;
                    }
                    Err(error) => {
                        failure = Some(fail(error));
                        return Err(iqdb_persist::PersistError::InvalidPayload {
                            reason: "a segment failed to download or verify",
                        });
                    }
                }
            }
        };
        let written = inspect::write_log_from(&fs, wal, fingerprint, g.base_seq, &mut pull);
        if let Some(failure) = failure {
            return Err(failure);
        }
        written.map_err(|e| ReplicateError::persist(format!("writing {}", wal.display()), e))?;
        sync_dir(path)?;
        Ok(RestoreReport {
            path: path.to_path_buf(),
            wal: wal.to_path_buf(),
            generation: g.id.clone(),
            base_seq: g.base_seq,
            end_seq,
            segments: k,
            frames,
            bytes,
            fell_back: None,
            elapsed: Duration::ZERO,
        })
    })();
    progress.end();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// Where the snapshot is downloaded before it is checked.
fn temp_path(path: &Path) -> PathBuf {
    path.with_file_name(format!(
        ".{}{TEMP_SUFFIX}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ))
}

const TEMP_SUFFIX: &str = ".restore-tmp";

/// The directory must be empty or absent; it is created. Leftover
/// downloads of an interrupted restore (`.NAME.restore-tmp`) do not count:
/// they are removed.
fn prepare_dir(dir: &Path) -> Result<()> {
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            let mut others = false;
            for entry in entries {
                let entry = entry.map_err(|e| ReplicateError::io(dir, e))?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') && name.ends_with(TEMP_SUFFIX) {
                    std::fs::remove_file(entry.path())
                        .map_err(|e| ReplicateError::io(entry.path(), e))?;
                } else {
                    others = true;
                }
            }
            if others {
                return Err(ReplicateError::invalid(format!(
                    "{}: the restore directory is not empty",
                    dir.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| ReplicateError::io(dir, e))
        }
        Err(e) => Err(ReplicateError::io(dir, e)),
    }
}

fn cleanup(path: &Path, wal: &Path) {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(wal);
}

fn sync_dir(path: &Path) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    StdFileSystem
        .sync_dir(dir)
        .map_err(|e| ReplicateError::io(dir, e))
}

/// What [`Replica::verify`](crate::Replica::verify) found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Objects checked.
    pub objects: u64,
    /// Bytes downloaded.
    pub bytes: u64,
    /// Damaged or missing objects.
    pub problems: Vec<VerifyProblem>,
}

/// One damaged or missing object.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyProblem {
    /// The object's key (with the replica's prefix).
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

/// A writer that only counts (verification keeps nothing).
struct Discard;

impl Write for Discard {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub(crate) fn verify(
    remote: &Remote,
    manifest: &Manifest,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let problem = |report: &mut VerifyReport, key: &str, error: ReplicateError| -> Result<()> {
        match error {
            e @ (ReplicateError::Corrupt { .. } | ReplicateError::Missing { .. }) => {
                report.problems.push(VerifyProblem {
                    key: key.to_string(),
                    reason: match e {
                        ReplicateError::Corrupt { reason, .. } => reason,
                        other => other.to_string(),
                    },
                });
                Ok(())
            }
            e => Err(e),
        }
    };
    for g in &manifest.generations {
        let under = format!("{}/", Generation::dir(&g.id));
        let key = remote.path(&g.snapshot.key).to_string();
        report.objects += 1;
        progress.begin(&format!("verify {}", g.id), g.snapshot.len);
        let got = if g.snapshot.key.starts_with(&under) {
            remote.get_stream(&g.snapshot.key, g.snapshot.len, &mut Discard, progress)
        } else {
            Err(ReplicateError::corrupt(
                &key,
                "listed outside its generation's directory",
            ))
        };
        progress.end();
        match got {
            Ok(crc) if crc == g.snapshot.crc32 => report.bytes += g.snapshot.len,
            Ok(crc) => problem(
                &mut report,
                &key,
                ReplicateError::corrupt(
                    &key,
                    format!(
                        "CRC-32 {crc:08x}; the manifest says {:08x}",
                        g.snapshot.crc32
                    ),
                ),
            )?,
            Err(e) => problem(&mut report, &key, e)?,
        }
        let mut next = g.base_seq;
        for entry in &g.segments {
            let key = remote.path(&entry.key).to_string();
            report.objects += 1;
            let checked = (|| {
                if !entry.key.starts_with(&under) {
                    return Err(ReplicateError::corrupt(
                        &key,
                        "listed outside its generation's directory",
                    ));
                }
                if entry.len > MAX_SEGMENT_OBJECT_BYTES {
                    return Err(ReplicateError::corrupt(
                        &key,
                        format!(
                            "the manifest says {} bytes, more than a segment may have",
                            entry.len
                        ),
                    ));
                }
                let mut buf = Vec::with_capacity(usize::try_from(entry.len).unwrap_or(0));
                remote.get_stream(&entry.key, entry.len, &mut buf, progress)?;
                let (header, _) = format::decode_segment(&key, &buf)?;
                if header.first_seq != entry.first_seq
                    || header.end_seq != entry.end_seq
                    || header.body_crc != entry.crc32
                    || header.frames != entry.frames
                    || header.first_seq != next
                {
                    return Err(ReplicateError::corrupt(
                        &key,
                        "the segment is not the one the manifest names",
                    ));
                }
                Ok(())
            })();
            next = entry.end_seq;
            match checked {
                Ok(()) => report.bytes += entry.len,
                Err(e) => problem(&mut report, &key, e)?,
            }
        }
    }
    Ok(report)
}
