//! Streaming snapshot writer.
//!
//! The index serializes into a [`ChunkingWriter`], which cuts the raw payload
//! into chunks and hands each full chunk to a sink while the index keeps
//! writing. The v3 sink compresses chunks on worker threads and a writer
//! thread appends them in order, so serialization, compression and I/O
//! overlap, and memory stays at a few chunks. Header fields known only at the
//! end (CRCs, lengths) are patched in place: the file is a private temporary
//! until the caller renames it.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use crc32fast::Hasher;

use crate::compression::{self, ChunkCodec};
use crate::config::Compression;
use crate::error::{PersistError, Result};
use crate::format::{self, FileHeader, MAGIC, V3Extension};
use crate::options::SnapshotFormat;
use crate::storage::{FileHandle, FileWriter};
use crate::{Persistable, snapshot::SnapshotFingerprint};

use super::{CHUNK_HEAD_LEN, IO_BUFFER};

/// How to write one snapshot.
#[derive(Debug, Clone)]
pub(crate) struct WriteSettings {
    pub format: SnapshotFormat,
    pub compression: Compression,
    /// Raw bytes per chunk (v3).
    pub chunk_size: usize,
    /// Compression worker threads (v3).
    pub threads: usize,
    /// WAL sequence number the snapshot includes (recorded in v3).
    pub last_seq: u64,
}

/// What a finished write produced.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WrittenSnapshot {
    pub fingerprint: SnapshotFingerprint,
}

/// Writes a complete snapshot of `index` into `file` (an empty temporary
/// file) from offset 0. Does not sync; the caller does.
pub(crate) fn write_snapshot<I: Persistable + ?Sized>(
    file: &Arc<dyn FileHandle>,
    path: &Path,
    index: &I,
    settings: &WriteSettings,
) -> Result<WrittenSnapshot> {
    let facts = HeaderFacts {
        index_type: I::INDEX_TYPE.to_owned(),
        dim: index.dim(),
        metric: index.metric(),
        n_vectors: index.len(),
    };
    write_payload(
        file,
        path,
        facts,
        &mut |writer| index.save_to(writer),
        settings,
    )
}

/// The header fields that describe a snapshot's contents.
#[derive(Debug, Clone)]
pub(crate) struct HeaderFacts {
    pub index_type: String,
    pub dim: usize,
    pub metric: iqdb_types::DistanceMetric,
    pub n_vectors: usize,
}

/// Writes a complete snapshot whose payload `save` produces (the
/// `Persistable` bytes) into `file` from offset 0. Does not sync.
pub(crate) fn write_payload(
    file: &Arc<dyn FileHandle>,
    path: &Path,
    facts: HeaderFacts,
    save: Save<'_>,
    settings: &WriteSettings,
) -> Result<WrittenSnapshot> {
    settings.compression.validate()?;
    let mut header = FileHeader {
        magic: MAGIC,
        version: settings.format.version(),
        index_type: facts.index_type,
        dim: facts.dim,
        metric: facts.metric,
        n_vectors: facts.n_vectors,
        crc32: 0,
    };
    let header_len = header.encoded_len() as u64;
    match settings.format {
        SnapshotFormat::V2 => write_v2(file, path, save, settings, &mut header, header_len),
        SnapshotFormat::V3 => write_v3(file, path, save, settings, &mut header, header_len),
    }
}

/// Writes a snapshot's payload bytes.
pub(crate) type Save<'a> = &'a mut dyn FnMut(&mut dyn Write) -> Result<()>;

fn io_err(path: &Path) -> impl Fn(io::Error) -> PersistError + '_ {
    move |e| PersistError::io(path, e)
}

/// Runs `save_to` into `writer`, preferring the sink's own error (which names
/// the file) over whatever the index made of it.
fn serialize(save: Save<'_>, writer: &mut ChunkingWriter<'_>) -> Result<()> {
    let saved = save(writer).and_then(|()| {
        let path = writer.path;
        writer.finish_chunk().map_err(|e| PersistError::io(path, e))
    });
    match (saved, writer.sink_error.take()) {
        (_, Some(sink_error)) => Err(sink_error),
        (result, None) => result,
    }
}

fn write_v2(
    file: &Arc<dyn FileHandle>,
    path: &Path,
    index: Save<'_>,
    settings: &WriteSettings,
    header: &mut FileHeader,
    header_len: u64,
) -> Result<WrittenSnapshot> {
    let data_start = header_len + 9;
    let tag = compression::scheme_tag(settings.compression);
    let mut data = HashingWriter::new(FileWriter::new(file.clone(), data_start, IO_BUFFER));
    let raw_len = match settings.compression {
        Compression::None => {
            let mut sink = |chunk: &mut Vec<u8>| data.write_all(chunk);
            let mut writer = ChunkingWriter::new(path, IO_BUFFER, &mut sink);
            serialize(index, &mut writer).map_err(|e| e.in_file(path, data_start))?;
            writer.raw_len
        }
        Compression::Zstd { level } => write_v2_zstd(path, index, level, &mut data, data_start)?,
        Compression::Lz4 => {
            let mut raw = Vec::new();
            let mut sink = |chunk: &mut Vec<u8>| {
                raw.extend_from_slice(chunk);
                Ok(())
            };
            let mut writer = ChunkingWriter::new(path, IO_BUFFER, &mut sink);
            serialize(index, &mut writer)?;
            let raw_len = writer.raw_len;
            let mut stored = Vec::new();
            ChunkCodec::new(Compression::Lz4).compress(&raw, &mut stored)?;
            drop(raw);
            data.write_all(&stored).map_err(io_err(path))?;
            raw_len
        }
    };
    let (data_writer, data_crc, data_len) = data.into_parts();
    data_writer.finish().map_err(io_err(path))?;

    let mut preamble = [0u8; 9];
    preamble[0] = tag;
    preamble[1..9].copy_from_slice(&raw_len.to_le_bytes());
    let mut region = Hasher::new();
    region.update(&preamble);
    region.combine(&data_crc);
    header.crc32 = region.finalize();
    let mut head = format::encode_header(header)?;
    head.extend_from_slice(&preamble);
    file.write_all_at(&head, 0).map_err(io_err(path))?;
    Ok(WrittenSnapshot {
        fingerprint: SnapshotFingerprint {
            crc32: header.crc32,
            len: data_start + data_len,
        },
    })
}

#[cfg(feature = "zstd")]
fn write_v2_zstd(
    path: &Path,
    index: Save<'_>,
    level: i32,
    data: &mut HashingWriter<FileWriter>,
    data_start: u64,
) -> Result<u64> {
    let mut encoder =
        zstd::stream::write::Encoder::new(data, level).map_err(|_| PersistError::Compression {
            reason: "zstd encoder could not be created",
        })?;
    let mut sink = |chunk: &mut Vec<u8>| encoder.write_all(chunk);
    let mut writer = ChunkingWriter::new(path, IO_BUFFER, &mut sink);
    serialize(index, &mut writer).map_err(|e| e.in_file(path, data_start))?;
    let raw_len = writer.raw_len;
    encoder.finish().map_err(io_err(path))?;
    Ok(raw_len)
}

#[cfg(not(feature = "zstd"))]
fn write_v2_zstd(
    _path: &Path,
    _index: Save<'_>,
    _level: i32,
    _data: &mut HashingWriter<FileWriter>,
    _data_start: u64,
) -> Result<u64> {
    Compression::Zstd { level: 1 }.validate().map(|()| 0)
}

fn write_v3(
    file: &Arc<dyn FileHandle>,
    path: &Path,
    index: Save<'_>,
    settings: &WriteSettings,
    header: &mut FileHeader,
    header_len: u64,
) -> Result<WrittenSnapshot> {
    let data_start = header_len + u64::from(format::V3_EXTENSION_LEN);
    let chunk_size = settings.chunk_size.clamp(
        format::V3_MIN_CHUNK_SIZE as usize,
        format::V3_MAX_CHUNK_SIZE as usize,
    );
    let workers = match settings.compression {
        Compression::None => 0,
        _ => settings.threads.max(1),
    };
    let (raw_len, payload_crc, written) = std::thread::scope(|scope| {
        let mut pipeline =
            Pipeline::start(scope, file, path, settings.compression, workers, data_start);
        let mut sink = |chunk: &mut Vec<u8>| pipeline.submit(chunk);
        let mut writer = ChunkingWriter::new(path, chunk_size, &mut sink);
        let serialized = serialize(index, &mut writer);
        let raw_len = writer.raw_len;
        let payload_crc = writer.raw_crc.clone().finalize();
        drop(writer);
        let written = pipeline.finish();
        // An error of the pipeline explains a serialization failure better.
        let written = written?;
        serialized.map_err(|e| e.in_file(path, data_start))?;
        Ok::<_, PersistError>((raw_len, payload_crc, written))
    })?;
    let ext = V3Extension {
        scheme: compression::scheme_tag(settings.compression),
        chunk_size: chunk_size as u32,
        payload_crc,
        raw_len,
        stored_len: written.stored_len,
        chunk_count: written.chunk_count,
        last_seq: settings.last_seq,
    };
    let ext_bytes = ext.encode();
    let mut head = Vec::with_capacity(header_len as usize + ext_bytes.len());
    format::encode_header_without_crc(header, &mut head)?;
    let mut crc = Hasher::new();
    crc.update(&head);
    crc.update(&ext_bytes);
    header.crc32 = crc.finalize();
    head.extend_from_slice(&header.crc32.to_le_bytes());
    head.extend_from_slice(&ext_bytes);
    file.write_all_at(&head, 0).map_err(io_err(path))?;
    Ok(WrittenSnapshot {
        fingerprint: SnapshotFingerprint {
            crc32: header.crc32,
            len: data_start + written.stored_len,
        },
    })
}

/// A `Write` that cuts the stream into chunks of `chunk_size` raw bytes and
/// passes each to `sink`, hashing and counting the raw bytes on the way. The
/// sink may take the chunk's buffer, swapping in an empty one (so a chunk is
/// copied once, from the index into its buffer).
pub(crate) struct ChunkingWriter<'a> {
    path: &'a Path,
    buf: Vec<u8>,
    chunk_size: usize,
    sink: &'a mut dyn FnMut(&mut Vec<u8>) -> io::Result<()>,
    raw_crc: Hasher,
    raw_len: u64,
    /// The first failure of the sink, kept so the caller reports it (with
    /// its path) rather than the index's rendering of it.
    sink_error: Option<PersistError>,
}

impl<'a> ChunkingWriter<'a> {
    fn new(
        path: &'a Path,
        chunk_size: usize,
        sink: &'a mut dyn FnMut(&mut Vec<u8>) -> io::Result<()>,
    ) -> Self {
        Self {
            path,
            buf: Vec::with_capacity(chunk_size),
            chunk_size,
            sink,
            raw_crc: Hasher::new(),
            raw_len: 0,
            sink_error: None,
        }
    }

    fn finish_chunk(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.raw_crc.update(&self.buf);
        self.raw_len += self.buf.len() as u64;
        let result = (self.sink)(&mut self.buf);
        self.buf.clear();
        if self.buf.capacity() < self.chunk_size {
            self.buf.reserve_exact(self.chunk_size);
        }
        if let (Err(e), None) = (&result, &self.sink_error) {
            self.sink_error = Some(PersistError::io(
                self.path,
                io::Error::new(e.kind(), e.to_string()),
            ));
        }
        result
    }
}

impl Write for ChunkingWriter<'_> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let total = data.len();
        while !data.is_empty() {
            let room = self.chunk_size - self.buf.len();
            let take = room.min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == self.chunk_size {
                self.finish_chunk()?;
            }
        }
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A writer that hashes and counts what passes through it.
pub(crate) struct HashingWriter<W> {
    inner: W,
    crc: Hasher,
    len: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        Self {
            inner,
            crc: Hasher::new(),
            len: 0,
        }
    }

    pub(crate) fn into_parts(self) -> (W, Hasher, u64) {
        (self.inner, self.crc, self.len)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        self.crc.update(&data[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Totals of the chunk region.
#[derive(Debug, Clone, Copy)]
struct Written {
    stored_len: u64,
    chunk_count: u64,
}

/// A chunk on its way to the file.
struct Done {
    seq: u64,
    raw: Vec<u8>,
    /// The stored bytes, or `None` when they are `raw` (no compression).
    stored: Option<Result<Vec<u8>>>,
}

/// The v3 write pipeline: the caller submits raw chunks; `workers` threads
/// compress them; one writer thread appends them to the file in order.
/// Buffers circulate through free lists, so memory stays at a few chunks.
struct Pipeline<'scope> {
    jobs: Option<SyncSender<(u64, Vec<u8>)>>,
    done: Option<SyncSender<Done>>,
    free_raw: Receiver<Vec<u8>>,
    raw_buffers: usize,
    max_raw_buffers: usize,
    next_seq: u64,
    failed: Arc<AtomicBool>,
    writer: std::thread::ScopedJoinHandle<'scope, Result<Written>>,
}

impl<'scope> Pipeline<'scope> {
    fn start<'env>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        file: &'env Arc<dyn FileHandle>,
        path: &'env Path,
        scheme: Compression,
        workers: usize,
        data_start: u64,
    ) -> Self {
        let depth = workers * 2 + 2;
        let (done_tx, done_rx) = sync_channel::<Done>(depth);
        let (free_raw_tx, free_raw_rx) = sync_channel::<Vec<u8>>(depth * 2 + 4);
        let (free_stored_tx, free_stored_rx) = sync_channel::<Vec<u8>>(depth * 2 + 4);
        let failed = Arc::new(AtomicBool::new(false));

        let jobs = if workers == 0 {
            None
        } else {
            let (job_tx, job_rx) = sync_channel::<(u64, Vec<u8>)>(depth);
            let job_rx = Arc::new(Mutex::new(job_rx));
            let free_stored_rx = Arc::new(Mutex::new(free_stored_rx));
            for _ in 0..workers {
                let job_rx = job_rx.clone();
                let done_tx = done_tx.clone();
                let free_stored_rx = free_stored_rx.clone();
                scope.spawn(move || {
                    let mut codec = ChunkCodec::new(scheme);
                    loop {
                        let job = match job_rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok((seq, raw)) = job else { return };
                        let mut stored = free_stored_rx
                            .lock()
                            .ok()
                            .and_then(|rx| rx.try_recv().ok())
                            .unwrap_or_default();
                        let result = codec.compress(&raw, &mut stored).map(|()| stored);
                        if done_tx
                            .send(Done {
                                seq,
                                raw,
                                stored: Some(result),
                            })
                            .is_err()
                        {
                            return;
                        }
                    }
                });
            }
            Some(job_tx)
        };

        let writer_failed = failed.clone();
        let writer = scope.spawn(move || {
            let mut pending: BTreeMap<u64, Done> = BTreeMap::new();
            let mut next = 0u64;
            let mut pos = data_start;
            let mut first_error: Option<PersistError> = None;
            let mut head = [0u8; CHUNK_HEAD_LEN];
            for done in done_rx {
                pending.insert(done.seq, done);
                while let Some(done) = pending.remove(&next) {
                    next += 1;
                    let Done { raw, stored, .. } = done;
                    let mut recycle_stored = None;
                    if first_error.is_none() {
                        let outcome = (|| -> Result<()> {
                            let stored_bytes: &[u8] = match &stored {
                                None => &raw,
                                Some(Ok(s)) => s,
                                Some(Err(_)) => {
                                    return Err(PersistError::Compression {
                                        reason: "chunk compression failed",
                                    });
                                }
                            };
                            head[0..4].copy_from_slice(&(raw.len() as u32).to_le_bytes());
                            head[4..8].copy_from_slice(&(stored_bytes.len() as u32).to_le_bytes());
                            let mut crc = Hasher::new();
                            crc.update(&head[0..8]);
                            crc.update(stored_bytes);
                            head[8..12].copy_from_slice(&crc.finalize().to_le_bytes());
                            file.write_all_at(&head, pos)
                                .map_err(|e| PersistError::io(path, e))?;
                            file.write_all_at(stored_bytes, pos + CHUNK_HEAD_LEN as u64)
                                .map_err(|e| PersistError::io(path, e))?;
                            pos += (CHUNK_HEAD_LEN + stored_bytes.len()) as u64;
                            Ok(())
                        })();
                        if let Err(e) = outcome {
                            writer_failed.store(true, Ordering::Release);
                            first_error = Some(e);
                        }
                    }
                    if let Some(Ok(s)) = stored {
                        recycle_stored = Some(s);
                    }
                    // Free lists are best effort: a full list drops the buffer.
                    let _ = free_raw_tx.try_send(raw);
                    if let Some(s) = recycle_stored {
                        let _ = free_stored_tx.try_send(s);
                    }
                }
            }
            match first_error {
                Some(e) => Err(e),
                None => Ok(Written {
                    stored_len: pos - data_start,
                    chunk_count: next,
                }),
            }
        });

        Self {
            jobs,
            done: Some(done_tx),
            free_raw: free_raw_rx,
            raw_buffers: 0,
            max_raw_buffers: depth * 2 + 2,
            next_seq: 0,
            failed,
            writer,
        }
    }

    /// Takes `chunk`'s bytes (leaving it an empty buffer) and queues them for
    /// compression and writing.
    fn submit(&mut self, chunk: &mut Vec<u8>) -> io::Result<()> {
        if self.failed.load(Ordering::Acquire) {
            return Err(io::Error::other("snapshot writer failed"));
        }
        let mut buf = match self.free_raw.try_recv() {
            Ok(buf) => buf,
            Err(_) if self.raw_buffers < self.max_raw_buffers => {
                self.raw_buffers += 1;
                Vec::with_capacity(chunk.capacity())
            }
            Err(_) => self
                .free_raw
                .recv()
                .map_err(|_| io::Error::other("snapshot writer stopped"))?,
        };
        buf.clear();
        std::mem::swap(chunk, &mut buf);
        let seq = self.next_seq;
        self.next_seq += 1;
        let sent = match (&self.jobs, &self.done) {
            (Some(jobs), _) => jobs.send((seq, buf)).is_ok(),
            (None, Some(done)) => done
                .send(Done {
                    seq,
                    raw: buf,
                    stored: None,
                })
                .is_ok(),
            (None, None) => false,
        };
        if sent {
            Ok(())
        } else {
            Err(io::Error::other("snapshot writer stopped"))
        }
    }

    /// Waits for every submitted chunk to be written.
    fn finish(mut self) -> Result<Written> {
        self.jobs = None;
        self.done = None;
        match self.writer.join() {
            Ok(result) => result,
            Err(_) => Err(PersistError::InvalidPayload {
                reason: "snapshot writer thread panicked",
            }),
        }
    }
}
