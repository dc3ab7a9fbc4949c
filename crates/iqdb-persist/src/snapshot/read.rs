//! Verifying snapshot reader.
//!
//! Every byte is checked before the index decodes it: v1 and v2 files carry
//! one CRC over the whole payload region, so the reader makes a checksum pass
//! over the file first (from the page cache, at memory speed) and streams the
//! payload to the index in a second pass; v3 files carry a CRC per chunk, so
//! one pass suffices: a fetch thread reads and verifies chunks, workers
//! decompress them, and the index parses in parallel. Nothing is allocated
//! from a length field beyond what the file's remaining bytes can back.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex};

use crc32fast::Hasher;

use super::{CHUNK_HEAD_LEN, IO_BUFFER, SnapshotFingerprint};
use crate::compression::{self, ChunkCodec, SCHEME_LZ4, SCHEME_NONE, SCHEME_ZSTD};
use crate::config::Compression;
use crate::error::{PersistError, Result};
use crate::format::{self, FileHeader, V3Extension};
use crate::storage::{FileHandle, FileReader, FileSystem, read_exact_at};
use crate::{Persistable, checksum};

/// What a snapshot's header says, plus where its payload lies.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotMeta {
    pub header: FileHeader,
    pub file_len: u64,
    /// Offset of the first byte after the header (and v3 extension).
    pub payload_start: u64,
    pub scheme: u8,
    /// Raw payload length (v1: the region's length).
    pub raw_len: u64,
    /// v3 only.
    pub v3: Option<V3Extension>,
}

impl SnapshotMeta {
    pub(crate) fn fingerprint(&self) -> SnapshotFingerprint {
        SnapshotFingerprint {
            crc32: self.header.crc32,
            len: self.file_len,
        }
    }

    /// The log sequence number recorded in a v3 snapshot.
    pub(crate) fn last_seq(&self) -> Option<u64> {
        self.v3.map(|ext| ext.last_seq)
    }

    fn data_start_v2(&self) -> u64 {
        self.payload_start + 9
    }
}

/// Reads, verifies and decodes the snapshot at `path`.
pub(crate) fn read_snapshot<I: Persistable>(
    fs: &dyn FileSystem,
    path: &Path,
    threads: usize,
) -> Result<(I, SnapshotMeta)> {
    let (file, meta) = open_snapshot(fs, path)?;
    if meta.header.index_type != I::INDEX_TYPE {
        return Err(PersistError::InvalidIndexType {
            found: meta.header.index_type.clone(),
            expected: I::INDEX_TYPE,
        }
        .in_file(path, 20));
    }
    let index = stream_payload(&file, path, &meta, threads, |reader| I::load_from(reader))?;
    let mismatch = if index.dim() != meta.header.dim {
        Some("header dim disagrees with the payload")
    } else if index.metric() != meta.header.metric {
        Some("header metric disagrees with the payload")
    } else if index.len() != meta.header.n_vectors {
        Some("header n_vectors disagrees with the payload")
    } else {
        None
    };
    if let Some(reason) = mismatch {
        return Err(PersistError::InvalidPayload { reason }.in_file(path, 0));
    }
    Ok((index, meta))
}

/// Opens the snapshot at `path` and hands `consume` its header and a reader
/// of its raw payload, every byte verified (v1/v2: a checksum pass first;
/// v3: chunk by chunk) before it is read. For re-framing a snapshot in
/// another format without decoding it.
pub(crate) fn copy_payload<T>(
    fs: &dyn FileSystem,
    path: &Path,
    threads: usize,
    consume: impl FnOnce(&SnapshotMeta, &mut dyn Read) -> Result<T>,
) -> Result<T> {
    let (file, meta) = open_snapshot(fs, path)?;
    stream_payload(&file, path, &meta, threads, |reader| consume(&meta, reader))
}

/// Parses the header of the snapshot at `path` and, if `verify_payload`,
/// checks and decodes its whole payload (every checksum and the compressed
/// stream) without needing the index type.
pub(crate) fn inspect_snapshot_file(
    fs: &dyn FileSystem,
    path: &Path,
    verify_payload: bool,
    threads: usize,
) -> Result<SnapshotMeta> {
    let (file, meta) = open_snapshot(fs, path)?;
    if verify_payload {
        stream_payload(&file, path, &meta, threads, |reader| {
            io::copy(reader, &mut io::sink())
                .map(drop)
                .map_err(|e| PersistError::io(path, e))
        })?;
    }
    Ok(meta)
}

/// Opens the file and parses and checks everything before the payload.
fn open_snapshot(fs: &dyn FileSystem, path: &Path) -> Result<(Arc<dyn FileHandle>, SnapshotMeta)> {
    let file = fs.open_read(path).map_err(|e| PersistError::io(path, e))?;
    let file_len = file.len().map_err(|e| PersistError::io(path, e))?;
    let mut reader = FileReader::new(file.clone(), 0, file_len, 8 << 10);
    let header = format::read_any_header(&mut reader).map_err(|e| match e {
        PersistError::Io { source, .. } => PersistError::io(path, source),
        PersistError::TruncatedHeader { needed, .. } => PersistError::TruncatedHeader {
            needed,
            found: file_len as usize,
        }
        .in_file(path, file_len),
        PersistError::BadMagic { .. } | PersistError::UnsupportedVersion { .. } => {
            e.in_file(path, 0)
        }
        other => other.in_file(path, reader.position()),
    })?;
    let header_end = reader.position();
    let mut meta = SnapshotMeta {
        header,
        file_len,
        payload_start: header_end,
        scheme: SCHEME_NONE,
        raw_len: file_len - header_end,
        v3: None,
    };
    match meta.header.version {
        1 => {}
        2 => {
            let mut preamble = [0u8; 9];
            read_exact_at(file.as_ref(), &mut preamble, header_end)
                .map_err(|e| truncated_or_io(path, e, 9, file_len - header_end, header_end))?;
            meta.scheme = preamble[0];
            let mut len = [0u8; 8];
            len.copy_from_slice(&preamble[1..9]);
            meta.raw_len = u64::from_le_bytes(len);
        }
        _ => {
            let mut len4 = [0u8; 4];
            read_exact_at(file.as_ref(), &mut len4, header_end)
                .map_err(|e| truncated_or_io(path, e, 4, file_len - header_end, header_end))?;
            let ext_len = u32::from_le_bytes(len4);
            if !(format::V3_EXTENSION_LEN..=format::V3_MAX_EXTENSION_LEN).contains(&ext_len) {
                return Err(PersistError::InvalidPayload {
                    reason: "v3 header extension length is out of range",
                }
                .in_file(path, header_end));
            }
            let mut ext_bytes = vec![0u8; ext_len as usize];
            read_exact_at(file.as_ref(), &mut ext_bytes, header_end).map_err(|e| {
                truncated_or_io(
                    path,
                    e,
                    u64::from(ext_len),
                    file_len - header_end,
                    header_end,
                )
            })?;
            // The header CRC covers every header byte but itself.
            let mut head = vec![0u8; (header_end - 4) as usize];
            read_exact_at(file.as_ref(), &mut head, 0).map_err(|e| PersistError::io(path, e))?;
            let mut crc = Hasher::new();
            crc.update(&head);
            crc.update(&ext_bytes);
            checksum::check(meta.header.crc32, crc.finalize()).map_err(|e| e.in_file(path, 0))?;
            let ext = V3Extension::decode(&ext_bytes).map_err(|e| e.in_file(path, header_end))?;
            meta.payload_start = header_end + u64::from(ext_len);
            meta.scheme = ext.scheme;
            meta.raw_len = ext.raw_len;
            let actual = file_len - meta.payload_start.min(file_len);
            if actual < ext.stored_len {
                return Err(PersistError::TruncatedPayload {
                    needed: ext.stored_len,
                    found: actual,
                }
                .in_file(path, file_len));
            }
            if actual > ext.stored_len {
                return Err(PersistError::InvalidPayload {
                    reason: "bytes follow the last chunk",
                }
                .in_file(path, meta.payload_start + ext.stored_len));
            }
            meta.v3 = Some(ext);
        }
    }
    compression::check_decodable(meta.scheme).map_err(|e| match e {
        PersistError::Unsupported { .. } => e,
        other => other.in_file(path, header_end),
    })?;
    Ok((file, meta))
}

fn truncated_or_io(path: &Path, e: io::Error, needed: u64, found: u64, at: u64) -> PersistError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        PersistError::TruncatedPayload { needed, found }.in_file(path, at + found)
    } else {
        PersistError::io(path, e)
    }
}

/// Verifies the payload, hands the verified raw stream to `consume`, then
/// checks that the stream was complete and consistent. If anything fails,
/// whatever `consume` built is dropped.
fn stream_payload<T>(
    file: &Arc<dyn FileHandle>,
    path: &Path,
    meta: &SnapshotMeta,
    threads: usize,
    consume: impl FnOnce(&mut dyn Read) -> Result<T>,
) -> Result<T> {
    match meta.header.version {
        1 => {
            verify_region_crc(file, path, meta)?;
            let mut reader =
                FileReader::new(file.clone(), meta.payload_start, meta.file_len, IO_BUFFER);
            consume(&mut reader).map_err(|e| e.in_file(path, meta.payload_start))
        }
        2 => {
            verify_region_crc(file, path, meta)?;
            stream_v2(file, path, meta, consume)
        }
        _ => stream_v3(file, path, meta, threads, consume),
    }
}

/// Pass one for v1/v2: the CRC of the whole payload region.
fn verify_region_crc(file: &Arc<dyn FileHandle>, path: &Path, meta: &SnapshotMeta) -> Result<()> {
    let mut reader = FileReader::new(file.clone(), meta.payload_start, meta.file_len, 16);
    let mut buf = vec![0u8; IO_BUFFER];
    let mut crc = Hasher::new();
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| PersistError::io(path, e))?;
        if n == 0 {
            break;
        }
        crc.update(&buf[..n]);
    }
    checksum::check(meta.header.crc32, crc.finalize())
        .map_err(|e| e.in_file(path, meta.payload_start))
}

fn stream_v2<T>(
    file: &Arc<dyn FileHandle>,
    path: &Path,
    meta: &SnapshotMeta,
    consume: impl FnOnce(&mut dyn Read) -> Result<T>,
) -> Result<T> {
    let data_start = meta.data_start_v2();
    let data_len = meta.file_len - data_start;
    match meta.scheme {
        SCHEME_NONE => {
            if data_len != meta.raw_len {
                return Err(PersistError::InvalidPayload {
                    reason: "uncompressed payload length disagrees with its length field",
                }
                .in_file(path, meta.payload_start + 1));
            }
            let mut reader = FileReader::new(file.clone(), data_start, meta.file_len, IO_BUFFER);
            consume(&mut reader).map_err(|e| e.in_file(path, data_start))
        }
        SCHEME_ZSTD => stream_v2_zstd(file, path, meta, consume),
        SCHEME_LZ4 => {
            if meta.raw_len > compression::lz4_max_raw_len(data_len) {
                return Err(PersistError::Compression {
                    reason: "LZ4 length field claims more than the block can hold",
                }
                .in_file(path, meta.payload_start + 1));
            }
            let mut stored = vec![0u8; data_len as usize];
            read_exact_at(file.as_ref(), &mut stored, data_start)
                .map_err(|e| PersistError::io(path, e))?;
            let mut raw = Vec::new();
            compression::decompress_lz4(&stored, meta.raw_len as usize, &mut raw)
                .map_err(|e| e.in_file(path, data_start))?;
            drop(stored);
            consume(&mut raw.as_slice()).map_err(|e| e.in_file(path, data_start))
        }
        _ => compression::check_decodable(meta.scheme).and_then(|()| {
            Err(PersistError::Compression {
                reason: "unknown compression scheme tag",
            })
        }),
    }
}

#[cfg(feature = "zstd")]
fn stream_v2_zstd<T>(
    file: &Arc<dyn FileHandle>,
    path: &Path,
    meta: &SnapshotMeta,
    consume: impl FnOnce(&mut dyn Read) -> Result<T>,
) -> Result<T> {
    let data_start = meta.data_start_v2();
    let source = FileReader::new(file.clone(), data_start, meta.file_len, IO_BUFFER);
    let decoder = zstd::stream::read::Decoder::with_buffer(source).map_err(|_| {
        PersistError::Compression {
            reason: "zstd decoder could not be created",
        }
    })?;
    let mut reader = CheckedReader {
        inner: decoder,
        count: 0,
        limit: meta.raw_len,
        failure: None,
    };
    let result = consume(&mut reader);
    let drained = io::copy(&mut reader, &mut io::sink());
    if let Some(failure) = reader.failure.take() {
        return Err(failure.in_file(path, data_start));
    }
    let value = result.map_err(|e| e.in_file(path, data_start))?;
    drained.map_err(|e| PersistError::io(path, e))?;
    if reader.count != meta.raw_len {
        return Err(PersistError::TruncatedPayload {
            needed: meta.raw_len,
            found: reader.count,
        }
        .in_file(path, data_start));
    }
    Ok(value)
}

#[cfg(not(feature = "zstd"))]
fn stream_v2_zstd<T>(
    _file: &Arc<dyn FileHandle>,
    _path: &Path,
    _meta: &SnapshotMeta,
    _consume: impl FnOnce(&mut dyn Read) -> Result<T>,
) -> Result<T> {
    compression::check_decodable(SCHEME_ZSTD).and_then(|()| {
        Err(PersistError::Compression {
            reason: "zstd support is not compiled in",
        })
    })
}

/// Counts decoded bytes, refuses to produce more than the length field
/// promised, and remembers a decoding failure so it is reported as such.
#[cfg_attr(not(feature = "zstd"), allow(dead_code))]
struct CheckedReader<R> {
    inner: R,
    count: u64,
    limit: u64,
    failure: Option<PersistError>,
}

impl<R: Read> Read for CheckedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.failure.is_some() {
            return Err(io::Error::other("payload stream failed"));
        }
        match self.inner.read(buf) {
            Ok(n) => {
                self.count += n as u64;
                if self.count > self.limit {
                    self.failure = Some(PersistError::Compression {
                        reason: "compressed stream decodes to more bytes than its length field",
                    });
                    return Err(io::Error::other("payload longer than declared"));
                }
                Ok(n)
            }
            Err(e) => {
                self.failure = Some(PersistError::Compression {
                    reason: "compressed stream does not decode",
                });
                Err(e)
            }
        }
    }
}

/// One verified chunk on its way to the index, with the CRC-32 of its raw
/// bytes (computed where the bytes were produced, off the index's thread).
struct Chunk {
    seq: u64,
    raw: Vec<u8>,
    raw_crc: u32,
}

/// A chunk to decompress.
struct Job {
    seq: u64,
    offset: u64,
    stored: Vec<u8>,
    /// CRC-32 of `stored` alone (the raw bytes' when uncompressed).
    stored_crc: u32,
    raw: Vec<u8>,
    raw_len: usize,
}

fn stream_v3<T>(
    file: &Arc<dyn FileHandle>,
    path: &Path,
    meta: &SnapshotMeta,
    threads: usize,
    consume: impl FnOnce(&mut dyn Read) -> Result<T>,
) -> Result<T> {
    let Some(ext) = meta.v3 else {
        return Err(PersistError::InvalidPayload {
            reason: "v3 snapshot without its header extension",
        });
    };
    let workers = if meta.scheme == SCHEME_NONE {
        0
    } else {
        threads.max(1)
    };
    let depth = workers * 2 + 2;
    std::thread::scope(|scope| {
        let (out_tx, out_rx) = sync_channel::<Result<Chunk>>(depth);
        let (free_tx, free_rx) = channel::<Vec<u8>>();
        let stop = Arc::new(AtomicBool::new(false));
        let job_tx = if workers == 0 {
            None
        } else {
            let (job_tx, job_rx) = sync_channel::<Job>(depth);
            let job_rx = Arc::new(Mutex::new(job_rx));
            for _ in 0..workers {
                let job_rx = job_rx.clone();
                let out_tx = out_tx.clone();
                let free_tx = free_tx.clone();
                let scheme = meta.scheme;
                scope.spawn(move || decompress_worker(scheme, path, &job_rx, &out_tx, &free_tx));
            }
            Some(job_tx)
        };
        let fetch_stop = stop.clone();
        let fetch_out = out_tx.clone();
        drop(out_tx);
        scope.spawn(move || {
            let fetcher = Fetcher {
                file: file.as_ref(),
                path,
                ext,
                pos: meta.payload_start,
                end: meta.file_len,
                buffers: 0,
                max_buffers: depth * 2 + 4,
                free: free_rx,
                stop: fetch_stop,
            };
            fetcher.run(job_tx, fetch_out);
        });
        let mut reader = ChunkReader {
            rx: out_rx,
            pending: BTreeMap::new(),
            next_seq: 0,
            current: Vec::new(),
            pos: 0,
            free: free_tx,
            failure: None,
            raw_crc: Hasher::new(),
            raw_len: 0,
            finished: false,
        };
        let result = consume(&mut reader);
        let drained = if result.is_ok() {
            io::copy(&mut reader, &mut io::sink()).map(drop)
        } else {
            Ok(())
        };
        stop.store(true, Ordering::Release);
        if let Some(failure) = reader.failure.take() {
            return Err(failure);
        }
        let value = result.map_err(|e| e.in_file(path, meta.payload_start))?;
        drained.map_err(|e| PersistError::io(path, e))?;
        if reader.next_seq != ext.chunk_count || reader.raw_len != ext.raw_len {
            return Err(PersistError::InvalidPayload {
                reason: "chunk count or payload length disagrees with the header",
            }
            .in_file(path, meta.payload_start));
        }
        checksum::check(ext.payload_crc, reader.raw_crc.clone().finalize())
            .map_err(|e| e.in_file(path, meta.payload_start))?;
        Ok(value)
    })
}

fn decompress_worker(
    scheme: u8,
    path: &Path,
    jobs: &Mutex<Receiver<Job>>,
    out: &SyncSender<Result<Chunk>>,
    free: &Sender<Vec<u8>>,
) {
    let mut codec = ChunkCodec::new(Compression::None);
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(mut job) = job else { return };
        let result = codec
            .decompress(scheme, &job.stored, job.raw_len, &mut job.raw)
            .map(|()| Chunk {
                seq: job.seq,
                raw_crc: crc32fast::hash(&job.raw),
                raw: job.raw,
            })
            .map_err(|e| e.in_file(path, job.offset));
        let _ = free.send(job.stored);
        if out.send(result).is_err() {
            return;
        }
    }
}

/// Reads chunk heads and stored bytes in file order, verifying each.
struct Fetcher<'a> {
    file: &'a dyn FileHandle,
    path: &'a Path,
    ext: V3Extension,
    pos: u64,
    end: u64,
    buffers: usize,
    max_buffers: usize,
    free: Receiver<Vec<u8>>,
    stop: Arc<AtomicBool>,
}

impl Fetcher<'_> {
    fn run(mut self, jobs: Option<SyncSender<Job>>, out: SyncSender<Result<Chunk>>) {
        for seq in 0..self.ext.chunk_count {
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            let result = self.fetch(seq, jobs.is_some());
            let sent = match (result, &jobs) {
                (Ok(job), Some(jobs)) => jobs.send(job).is_ok(),
                (Ok(job), None) => out
                    .send(Ok(Chunk {
                        seq,
                        raw: job.stored,
                        raw_crc: job.stored_crc,
                    }))
                    .is_ok(),
                (Err(e), _) => {
                    let _ = out.send(Err(e));
                    return;
                }
            };
            if !sent {
                return;
            }
        }
        if self.pos != self.end {
            let _ = out.send(Err(PersistError::InvalidPayload {
                reason: "chunk region is longer than its chunks",
            }
            .in_file(self.path, self.pos)));
        }
    }

    fn buffer(&mut self) -> Option<Vec<u8>> {
        if let Ok(buf) = self.free.try_recv() {
            return Some(buf);
        }
        if self.buffers < self.max_buffers {
            self.buffers += 1;
            return Some(Vec::new());
        }
        self.free.recv().ok()
    }

    fn fetch(&mut self, seq: u64, compressed: bool) -> Result<Job> {
        let at = self.pos;
        let remaining = self.end - at;
        let mut head = [0u8; CHUNK_HEAD_LEN];
        if remaining < CHUNK_HEAD_LEN as u64 {
            return Err(PersistError::TruncatedPayload {
                needed: CHUNK_HEAD_LEN as u64,
                found: remaining,
            }
            .in_file(self.path, at));
        }
        read_exact_at(self.file, &mut head, at).map_err(|e| PersistError::io(self.path, e))?;
        let raw_len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let stored_len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        let crc = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
        if raw_len == 0
            || raw_len > self.ext.chunk_size as usize
            || stored_len > compression::max_stored_len(self.ext.scheme, raw_len)
            || (self.ext.scheme == SCHEME_NONE && stored_len != raw_len)
        {
            return Err(PersistError::InvalidPayload {
                reason: "chunk head has impossible lengths",
            }
            .in_file(self.path, at));
        }
        let body_at = at + CHUNK_HEAD_LEN as u64;
        if stored_len as u64 > self.end - body_at {
            return Err(PersistError::TruncatedPayload {
                needed: stored_len as u64,
                found: self.end - body_at,
            }
            .in_file(self.path, body_at));
        }
        let Some(mut stored) = self.buffer() else {
            return Err(PersistError::InvalidPayload {
                reason: "snapshot reader stopped",
            });
        };
        stored.clear();
        stored.resize(stored_len, 0);
        read_exact_at(self.file, &mut stored, body_at)
            .map_err(|e| PersistError::io(self.path, e))?;
        // One pass over the bytes: their own CRC, combined with the head's
        // for the chunk check (and reused as the raw CRC when uncompressed).
        let stored_crc = crc32fast::hash(&stored);
        let mut hasher = Hasher::new();
        hasher.update(&head[0..8]);
        hasher.combine(&Hasher::new_with_initial_len(stored_crc, stored_len as u64));
        checksum::check(crc, hasher.finalize()).map_err(|e| e.in_file(self.path, at))?;
        let raw = if compressed {
            self.buffer().unwrap_or_default()
        } else {
            Vec::new()
        };
        self.pos = body_at + stored_len as u64;
        Ok(Job {
            seq,
            offset: at,
            stored,
            stored_crc,
            raw,
            raw_len,
        })
    }
}

/// The verified raw payload, chunk after chunk, in order.
struct ChunkReader {
    rx: Receiver<Result<Chunk>>,
    pending: BTreeMap<u64, (Vec<u8>, u32)>,
    next_seq: u64,
    current: Vec<u8>,
    pos: usize,
    free: Sender<Vec<u8>>,
    failure: Option<PersistError>,
    raw_crc: Hasher,
    raw_len: u64,
    finished: bool,
}

impl ChunkReader {
    /// Moves to the next chunk; false at the end of the stream.
    fn advance(&mut self) -> io::Result<bool> {
        loop {
            if let Some((raw, crc)) = self.pending.remove(&self.next_seq) {
                let old = std::mem::replace(&mut self.current, raw);
                let _ = self.free.send(old);
                self.pos = 0;
                self.next_seq += 1;
                let len = self.current.len() as u64;
                self.raw_crc
                    .combine(&Hasher::new_with_initial_len(crc, len));
                self.raw_len += len;
                return Ok(true);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.pending.insert(chunk.seq, (chunk.raw, chunk.raw_crc));
                }
                Ok(Err(e)) => {
                    self.failure = Some(e);
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "snapshot chunk failed verification",
                    ));
                }
                Err(_) => {
                    self.finished = true;
                    return Ok(false);
                }
            }
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.failure.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "snapshot chunk failed verification",
            ));
        }
        if buf.is_empty() {
            return Ok(0);
        }
        while self.pos == self.current.len() {
            if self.finished || !self.advance()? {
                return Ok(0);
            }
        }
        let n = (self.current.len() - self.pos).min(buf.len());
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
