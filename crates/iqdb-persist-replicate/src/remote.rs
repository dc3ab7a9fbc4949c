//! Blocking access to the replica's objects: every call runs on the
//! replica's own tokio runtime.

use std::io::{Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    PutResult, UpdateVersion, WriteMultipart,
};

use crate::error::{ReplicateError, Result};
use crate::progress::Progress;

/// Objects up to this size are uploaded with one PUT; larger ones in parts.
pub(crate) const SINGLE_PUT_LIMIT: u64 = 16 << 20;
/// Part size of multipart uploads.
const PART_SIZE: usize = 8 << 20;
/// Bytes per ranged GET of a download.
pub(crate) const RANGE_SIZE: u64 = 8 << 20;
/// Retries of one ranged GET (beyond the client's own).
const RANGE_RETRIES: u32 = 4;

/// The replica's store, key prefix and runtime.
pub(crate) struct Remote {
    pub(crate) store: Arc<dyn ObjectStore>,
    prefix: String,
    rt: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("store", &self.store.to_string())
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// An object's bytes and version.
pub(crate) struct Fetched {
    pub bytes: Bytes,
    pub e_tag: Option<String>,
    pub version: Option<String>,
}

impl Remote {
    pub(crate) fn new(store: Arc<dyn ObjectStore>, prefix: &str) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("iqdb-replica")
            .enable_all()
            .build()
            .map_err(|e| ReplicateError::io("<tokio runtime>", e))?;
        Ok(Self {
            store,
            prefix: prefix.trim_matches('/').to_string(),
            rt,
        })
    }

    /// The store's path of a key relative to the prefix.
    pub(crate) fn path(&self, key: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{}/{key}", self.prefix))
        }
    }

    /// The key relative to the prefix of a store path.
    pub(crate) fn key_of(&self, path: &Path) -> String {
        let s = path.as_ref();
        if self.prefix.is_empty() {
            s.to_string()
        } else {
            s.strip_prefix(&self.prefix)
                .map_or(s, |r| r.trim_start_matches('/'))
                .to_string()
        }
    }

    /// The prefix as the user named it.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// An object of at most `max` bytes, or `None` when it does not
    /// exist. A larger one is [`ReplicateError::Corrupt`], found out
    /// before it is read (from its size) or while it is read (a server
    /// that sends more than it announced).
    pub(crate) fn get_capped(&self, key: &str, max: u64) -> Result<Option<Fetched>> {
        let path = self.path(key);
        let too_large = |n: u64| {
            ReplicateError::corrupt(
                path.to_string(),
                format!("{n} bytes, more than the {max} bytes such an object may have"),
            )
        };
        self.rt.block_on(async {
            match self.store.get(&path).await {
                Ok(got) => {
                    if got.meta.size > max {
                        return Err(too_large(got.meta.size));
                    }
                    let size = got.meta.size;
                    let e_tag = got.meta.e_tag.clone();
                    let version = got.meta.version.clone();
                    let mut stream = got.into_stream();
                    let mut bytes = Vec::new();
                    while let Some(chunk) = stream.next().await {
                        let chunk = chunk
                            .map_err(|e| ReplicateError::store(format!("reading {path}"), e))?;
                        let n = bytes.len() as u64 + chunk.len() as u64;
                        if n > max {
                            return Err(too_large(n));
                        }
                        bytes.extend_from_slice(&chunk);
                    }
                    if bytes.len() as u64 != size {
                        // A body cut short (or padded) in transit: worth
                        // asking again, not damage.
                        return Err(ReplicateError::store(
                            format!("reading {path}"),
                            object_store::Error::Generic {
                                store: "replica",
                                source: format!(
                                    "the body has {} bytes, the server announced {size}",
                                    bytes.len()
                                )
                                .into(),
                            },
                        ));
                    }
                    Ok(Some(Fetched {
                        bytes: Bytes::from(bytes),
                        e_tag,
                        version,
                    }))
                }
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(ReplicateError::store(format!("reading {path}"), e)),
            }
        })
    }

    /// Writes an object; the store's own error is returned so that callers
    /// can tell failed preconditions apart.
    pub(crate) fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        mode: PutMode,
    ) -> std::result::Result<PutResult, object_store::Error> {
        let path = self.path(key);
        let opts = PutOptions {
            mode,
            ..PutOptions::default()
        };
        self.rt
            .block_on(self.store.put_opts(&path, PutPayload::from(bytes), opts))
    }

    /// Writes an immutable data object (overwriting a leftover of the same
    /// writer).
    pub(crate) fn put_data(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        self.put(key, bytes, PutMode::Overwrite)
            .map(drop)
            .map_err(|e| ReplicateError::store(format!("uploading {}", self.path(key)), e))
    }

    /// Uploads `len` bytes read from `reader` as one object (in parts when
    /// large), returning the CRC-32 of what was sent. `tick` runs between
    /// parts (outside the runtime, so it may make requests of its own: the
    /// replicator renews its lease there).
    pub(crate) fn put_stream(
        &self,
        key: &str,
        reader: &mut dyn Read,
        len: u64,
        progress: &dyn Progress,
        tick: &mut dyn FnMut() -> Result<()>,
    ) -> Result<u32> {
        let path = self.path(key);
        let io = |e| ReplicateError::store(format!("uploading {path}"), e);
        let read_err = |e| ReplicateError::io(format!("<source of {path}>"), e);
        let mut crc = crc32fast::Hasher::new();
        if len <= SINGLE_PUT_LIMIT {
            let mut buf = Vec::with_capacity(len as usize);
            reader.take(len).read_to_end(&mut buf).map_err(read_err)?;
            if buf.len() as u64 != len {
                return Err(ReplicateError::invalid(format!(
                    "{path}: the source ended after {} of {len} bytes",
                    buf.len()
                )));
            }
            crc.update(&buf);
            self.put_data(key, buf)?;
            progress.advance(len);
            return Ok(crc.finalize());
        }
        let upload = self
            .rt
            .block_on(self.store.put_multipart(&path))
            .map_err(io)?;
        // Parts are uploaded by tasks spawned on the runtime.
        let _runtime = self.rt.enter();
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut left = len;
        let mut buf = vec![0u8; 1 << 20];
        let mut since_tick = 0usize;
        let result: Result<()> = (|| {
            while left > 0 {
                let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                reader.read_exact(&mut buf[..n]).map_err(read_err)?;
                crc.update(&buf[..n]);
                self.rt.block_on(writer.wait_for_capacity(4)).map_err(io)?;
                writer.write(&buf[..n]);
                left -= n as u64;
                progress.advance(n as u64);
                since_tick += n;
                if since_tick >= PART_SIZE {
                    since_tick = 0;
                    tick()?;
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                self.rt.block_on(writer.finish()).map_err(io)?;
                Ok(crc.finalize())
            }
            Err(e) => {
                let _ = self.rt.block_on(writer.abort());
                Err(e)
            }
        }
    }

    /// Streams an object of `expected` bytes (as the manifest says) into
    /// `out` with ranged GETs of [`RANGE_SIZE`] bytes, each retried on its
    /// own, so that no single request has to carry a large object within
    /// the client's timeout. Returns the CRC-32 of what was written.
    ///
    /// An object of another size is [`ReplicateError::Corrupt`] (told by
    /// the first answer, before its bytes are read); a missing one is
    /// [`ReplicateError::Missing`]. Never more than `expected` bytes are
    /// accepted, and at most one range is held in memory.
    pub(crate) fn get_stream(
        &self,
        key: &str,
        expected: u64,
        out: &mut dyn Write,
        progress: &dyn Progress,
    ) -> Result<u32> {
        let path = self.path(key);
        let mut crc = crc32fast::Hasher::new();
        let mut offset = 0u64;
        let mut first = true;
        while first || offset < expected {
            let end = offset.saturating_add(RANGE_SIZE).min(expected);
            let mut attempt = 0u32;
            let chunk = loop {
                match self.get_range(&path, offset..end, expected, first) {
                    Ok(chunk) => break chunk,
                    Err(e @ ReplicateError::Missing { .. }) => return Err(e),
                    // A wrong size may be a proxy's or a connection's
                    // doing: asked again, it must persist to count.
                    Err(e) if attempt < RANGE_RETRIES => {
                        attempt += 1;
                        tracing::debug!(error = %e, attempt, "ranged GET failed; retrying");
                        std::thread::sleep(std::time::Duration::from_millis(
                            100u64 << attempt.min(6),
                        ));
                    }
                    Err(e) => return Err(e),
                }
            };
            first = false;
            crc.update(&chunk);
            out.write_all(&chunk)
                .map_err(|e| ReplicateError::io(format!("<copy of {path}>"), e))?;
            offset = end;
            progress.advance(chunk.len() as u64);
        }
        Ok(crc.finalize())
    }

    /// One ranged GET (the whole `range`, or an error).
    fn get_range(
        &self,
        path: &Path,
        range: std::ops::Range<u64>,
        expected: u64,
        check_size: bool,
    ) -> Result<Vec<u8>> {
        let io = |e| ReplicateError::store(format!("downloading {path}"), e);
        let wrong_size = |size: u64| {
            ReplicateError::corrupt(
                path.to_string(),
                format!("{size} bytes; the manifest says {expected}"),
            )
        };
        self.rt.block_on(async {
            let options = GetOptions {
                range: (range.end > range.start).then(|| GetRange::Bounded(range.clone())),
                head: range.end == range.start,
                ..GetOptions::default()
            };
            let got = self
                .store
                .get_opts(path, options)
                .await
                .map_err(|e| match e {
                    object_store::Error::NotFound { .. } => ReplicateError::Missing {
                        key: path.to_string(),
                    },
                    e => io(e),
                })?;
            if check_size && got.meta.size != expected {
                return Err(wrong_size(got.meta.size));
            }
            let want = range.end - range.start;
            let mut buf = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
            if want == 0 {
                return Ok(buf);
            }
            let mut stream = got.into_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(io)?;
                if buf.len() as u64 + chunk.len() as u64 > want {
                    return Err(ReplicateError::corrupt(
                        path.to_string(),
                        format!(
                            "the server sent more than the {want} bytes asked for at offset {}",
                            range.start
                        ),
                    ));
                }
                buf.extend_from_slice(&chunk);
            }
            if (buf.len() as u64) < want {
                // The body ended early (a dropped connection): retried.
                return Err(io(object_store::Error::Generic {
                    store: "replica",
                    source: format!(
                        "the body ended after {} of {want} bytes at offset {}",
                        buf.len(),
                        range.start
                    )
                    .into(),
                }));
            }
            Ok(buf)
        })
    }

    /// Calls `each` for every object under `key_prefix` as the listing
    /// streams in (no list of every key is built); `each` may make
    /// requests of its own only through other runtimes, so it is called
    /// with batches of at most `batch` objects outside the runtime.
    pub(crate) fn for_each_listed(
        &self,
        key_prefix: &str,
        batch: usize,
        each: &mut dyn FnMut(Vec<ObjectMeta>) -> Result<()>,
    ) -> Result<()> {
        let path = self.path(key_prefix);
        let mut stream = self.store.list(Some(&path));
        let mut ended = false;
        while !ended {
            let chunk = self.rt.block_on(async {
                let mut chunk = Vec::new();
                while chunk.len() < batch.max(1) {
                    match stream.next().await {
                        Some(meta) => chunk.push(
                            meta.map_err(|e| ReplicateError::store(format!("listing {path}"), e))?,
                        ),
                        // A finished stream must not be polled again.
                        None => {
                            ended = true;
                            break;
                        }
                    }
                }
                Ok::<_, ReplicateError>(chunk)
            })?;
            if !chunk.is_empty() {
                each(chunk)?;
            }
        }
        Ok(())
    }

    /// Deletes objects (a missing one is not an error).
    pub(crate) fn delete(&self, paths: Vec<Path>) -> Result<u64> {
        self.rt.block_on(async {
            let mut deleted = 0;
            for path in paths {
                match self.store.delete(&path).await {
                    Ok(()) => deleted += 1,
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(ReplicateError::store(format!("deleting {path}"), e)),
                }
            }
            Ok(deleted)
        })
    }
}

/// `PutMode::Update` for an object read with this version.
pub(crate) fn update_mode(e_tag: Option<String>, version: Option<String>) -> PutMode {
    PutMode::Update(UpdateVersion { e_tag, version })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::{Fault, FaultyStore, Op};
    use crate::progress::NoProgress;

    #[test]
    fn downloads_go_in_ranges_each_retried_on_its_own() {
        let faulty = Arc::new(FaultyStore::new(Arc::new(
            object_store::memory::InMemory::new(),
        )));
        let remote = Remote::new(faulty.clone(), "p").unwrap_or_else(|e| panic!("{e}"));
        let data: Vec<u8> = (0..(20u32 << 20)).map(|i| (i % 253) as u8).collect();
        remote
            .put_data("big", data.clone())
            .unwrap_or_else(|e| panic!("{e}"));
        let calls = faulty.calls();
        // The first range fails twice (a 503, then a body cut short), the
        // second once: each is asked again on its own.
        faulty.inject(Op::Get, "p/big", Fault::Error);
        faulty.inject(Op::Get, "p/big", Fault::Truncated);
        let mut back = Vec::new();
        let crc = remote
            .get_stream("big", data.len() as u64, &mut back, &NoProgress)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(faulty.fired(Fault::Error), 1);
        assert_eq!(faulty.fired(Fault::Truncated), 1);
        assert_eq!(crc, crc32fast::hash(&data));
        assert!(back == data);
        // 20 MiB in 8 MiB ranges: 3 GETs, plus the 2 that failed.
        assert_eq!(faulty.calls() - calls, 5);
    }

    #[test]
    fn long_uploads_tick_between_parts_and_round_trip() {
        let remote = Remote::new(Arc::new(object_store::memory::InMemory::new()), "p")
            .unwrap_or_else(|e| panic!("{e}"));
        let data: Vec<u8> = (0..(20u32 << 20)).map(|i| (i % 251) as u8).collect();
        let mut ticks = 0;
        let crc = remote
            .put_stream(
                "big",
                &mut data.as_slice(),
                data.len() as u64,
                &NoProgress,
                &mut || {
                    ticks += 1;
                    Ok(())
                },
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(crc, crc32fast::hash(&data));
        assert_eq!(ticks, 2, "one tick per 8 MiB part");
        let mut back = Vec::new();
        let crc2 = remote
            .get_stream("big", data.len() as u64, &mut back, &NoProgress)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(crc2, crc);
        assert!(back == data);
        // A failing tick aborts the upload: nothing is stored.
        let err = remote.put_stream(
            "aborted",
            &mut data.as_slice(),
            data.len() as u64,
            &NoProgress,
            &mut || {
                Err(ReplicateError::LeaseLost {
                    reason: "test".into(),
                })
            },
        );
        assert!(err.is_err());
        assert!(
            remote
                .get_capped("aborted", 1 << 30)
                .unwrap_or_else(|e| panic!("{e}"))
                .is_none()
        );
    }
}
