//! The one seam for all file I/O.
//!
//! Every file operation of the crate goes through [`FileSystem`] and
//! [`FileHandle`]. [`StdFileSystem`] is the real one; tests plug in a
//! simulating implementation (see `iqdb-persist-testkit`'s `simfs`) that keeps
//! a durable image per file and directory and can crash at any operation or
//! inject errors, which is how the crate proves its crash safety.
//!
//! The trait is deliberately small and positional (`read_at`/`write_all_at`
//! on `&self`), so one handle can be shared between a writer and the
//! background flusher without locking.

use std::ffi::OsString;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Read, Write};
use std::path::Path;
use std::sync::Arc;

/// A file system the crate performs all of its I/O through.
///
/// Semantics the crate relies on (those of POSIX local file systems):
/// `rename` atomically replaces `to`; a file's data is durable only after
/// [`FileHandle::sync_data`]/[`FileHandle::sync_all`]; creating, renaming or
/// removing a name is durable only after [`sync_dir`](Self::sync_dir) of its
/// directory.
pub trait FileSystem: Send + Sync + fmt::Debug {
    /// Opens an existing file for reading.
    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>>;
    /// Opens an existing file for reading and writing (no truncation).
    fn open_write(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>>;
    /// Creates a new, empty file for reading and writing; fails with
    /// `AlreadyExists` if the name is taken.
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>>;
    /// Atomically renames `from` to `to`, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creates, renames, removes) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// The names of the entries of a directory.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<OsString>>;
    /// Whether a file exists at `path`.
    fn exists(&self, path: &Path) -> io::Result<bool>;
    /// Takes an exclusive advisory lock on the file at `path` (creating it if
    /// needed), without blocking: a lock already held, by this process or
    /// another, gives `WouldBlock`. Dropping the guard releases it.
    fn try_lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>>;
    /// Whether a process with this id may still be running (used to tell a
    /// crashed save's temporary file from one still being written). When
    /// unsure, say `true`: a stale file is kept rather than a live one
    /// deleted.
    fn is_process_alive(&self, pid: u32) -> bool;
}

/// An open file, addressed by offset.
#[allow(clippy::len_without_is_empty)] // a file's emptiness is not a question the crate asks
pub trait FileHandle: Send + Sync + fmt::Debug {
    /// Reads up to `buf.len()` bytes at `offset`; returns 0 at end of file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset`, extending the file if needed.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// The file's current length.
    fn len(&self) -> io::Result<u64>;
    /// Truncates or extends the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes the file's data (and the size needed to read it) durable.
    fn sync_data(&self) -> io::Result<()>;
    /// Makes the file's data and all its metadata durable.
    fn sync_all(&self) -> io::Result<()>;
}

/// Holds an exclusive lock until dropped.
pub trait LockGuard: Send + Sync + fmt::Debug {}

/// The real file system, through `std::fs`.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdFileSystem;

impl StdFileSystem {
    /// The shared instance used when no other file system is configured.
    #[must_use]
    pub fn shared() -> Arc<dyn FileSystem> {
        Arc::new(StdFileSystem)
    }
}

#[derive(Debug)]
struct StdFile(File);

#[derive(Debug)]
struct StdLock(#[allow(dead_code)] File);

impl LockGuard for StdLock {}

impl FileSystem for StdFileSystem {
    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>> {
        Ok(Arc::new(StdFile(File::open(path)?)))
    }

    fn open_write(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Arc::new(StdFile(file)))
    }

    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(Arc::new(StdFile(file)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        #[cfg(unix)]
        {
            File::open(dir)?.sync_all()
        }
        #[cfg(not(unix))]
        {
            // Windows cannot open a directory as a file; NTFS journals
            // renames itself.
            let _ = dir;
            Ok(())
        }
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        std::fs::read_dir(dir)?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect()
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }

    fn try_lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Box::new(StdLock(file))),
            Err(std::fs::TryLockError::WouldBlock) => Err(io::ErrorKind::WouldBlock.into()),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    fn is_process_alive(&self, pid: u32) -> bool {
        if pid == std::process::id() {
            return true;
        }
        if cfg!(target_os = "linux") && Path::new("/proc/self").exists() {
            return Path::new("/proc").join(pid.to_string()).exists();
        }
        true
    }
}

impl FileHandle for StdFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        #[cfg(unix)]
        {
            std::os::unix::fs::FileExt::read_at(&self.0, buf, offset)
        }
        #[cfg(windows)]
        {
            std::os::windows::fs::FileExt::seek_read(&self.0, buf, offset)
        }
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        #[cfg(unix)]
        {
            std::os::unix::fs::FileExt::write_all_at(&self.0, buf, offset)
        }
        #[cfg(windows)]
        {
            let mut done = 0usize;
            while done < buf.len() {
                let n = std::os::windows::fs::FileExt::seek_write(
                    &self.0,
                    &buf[done..],
                    offset + done as u64,
                )?;
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                done += n;
            }
            Ok(())
        }
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }
}

/// Reads exactly `buf.len()` bytes at `offset`, or fails with
/// `UnexpectedEof`.
pub(crate) fn read_exact_at(
    file: &dyn FileHandle,
    mut buf: &mut [u8],
    mut offset: u64,
) -> io::Result<()> {
    while !buf.is_empty() {
        match file.read_at(buf, offset) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A sequential, buffered reader over a range of a [`FileHandle`].
///
/// Reads past `end` return end-of-file, so a caller handed this reader can
/// never run into the bytes that follow its region.
pub(crate) struct FileReader {
    file: Arc<dyn FileHandle>,
    /// Offset of the next byte to fetch from the file.
    fetch_pos: u64,
    /// End of the readable region.
    end: u64,
    buf: Vec<u8>,
    /// Consumed part of `buf`.
    start: usize,
    /// Filled part of `buf`.
    filled: usize,
}

impl FileReader {
    pub(crate) fn new(file: Arc<dyn FileHandle>, start: u64, end: u64, capacity: usize) -> Self {
        Self {
            file,
            fetch_pos: start,
            end,
            buf: vec![0; capacity.max(16)],
            start: 0,
            filled: 0,
        }
    }

    /// The file offset of the next byte `read` returns.
    pub(crate) fn position(&self) -> u64 {
        self.fetch_pos - (self.filled - self.start) as u64
    }

    fn fill(&mut self) -> io::Result<()> {
        let want = usize::try_from(self.end - self.fetch_pos)
            .unwrap_or(usize::MAX)
            .min(self.buf.len());
        if want == 0 {
            self.start = 0;
            self.filled = 0;
            return Ok(());
        }
        let n = loop {
            match self.file.read_at(&mut self.buf[..want], self.fetch_pos) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other?,
            }
        };
        self.fetch_pos += n as u64;
        self.start = 0;
        self.filled = n;
        Ok(())
    }
}

impl BufRead for FileReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.start == self.filled {
            self.fill()?;
        }
        Ok(&self.buf[self.start..self.filled])
    }

    fn consume(&mut self, amount: usize) {
        self.start = (self.start + amount).min(self.filled);
    }
}

impl Read for FileReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.start == self.filled {
            // Large reads bypass the buffer.
            if out.len() >= self.buf.len() {
                let want = usize::try_from(self.end - self.fetch_pos)
                    .unwrap_or(usize::MAX)
                    .min(out.len());
                if want == 0 {
                    return Ok(0);
                }
                let n = self.file.read_at(&mut out[..want], self.fetch_pos)?;
                self.fetch_pos += n as u64;
                return Ok(n);
            }
            self.fill()?;
        }
        let n = (self.filled - self.start).min(out.len());
        out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        Ok(n)
    }
}

/// A sequential, buffered writer appending to a [`FileHandle`] from a start
/// offset. Errors are reported as `io::Error`; the caller adds the path.
pub(crate) struct FileWriter {
    file: Arc<dyn FileHandle>,
    /// Offset where `buf[0]` goes.
    pos: u64,
    buf: Vec<u8>,
}

impl FileWriter {
    pub(crate) fn new(file: Arc<dyn FileHandle>, start: u64, capacity: usize) -> Self {
        Self {
            file,
            pos: start,
            buf: Vec::with_capacity(capacity.max(16)),
        }
    }

    /// Flushes the buffer and returns the file handle.
    pub(crate) fn finish(mut self) -> io::Result<Arc<dyn FileHandle>> {
        self.flush()?;
        Ok(self.file)
    }
}

impl Write for FileWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > self.buf.capacity() {
            self.flush()?;
            if data.len() >= self.buf.capacity() {
                self.file.write_all_at(data, self.pos)?;
                self.pos += data.len() as u64;
                return Ok(data.len());
            }
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.file.write_all_at(&self.buf, self.pos)?;
            self.pos += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_stops_at_region_end_and_tracks_position() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("f");
        std::fs::write(&path, (0u8..100).collect::<Vec<_>>())?;
        let file = StdFileSystem.open_read(&path)?;
        let mut r = FileReader::new(file, 10, 50, 16);
        let mut first = [0u8; 5];
        r.read_exact(&mut first)?;
        assert_eq!(first, [10, 11, 12, 13, 14]);
        assert_eq!(r.position(), 15);
        let mut rest = Vec::new();
        r.read_to_end(&mut rest)?;
        assert_eq!(rest, (15u8..50).collect::<Vec<_>>());
        assert_eq!(r.position(), 50);
        Ok(())
    }

    #[test]
    fn writer_buffers_and_bypasses_large_writes() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("f");
        let file = StdFileSystem.create_new(&path)?;
        let mut w = FileWriter::new(file, 3, 16);
        w.write_all(b"abc")?;
        w.write_all(&[b'x'; 40])?;
        w.write_all(b"z")?;
        w.finish()?;
        let bytes = std::fs::read(&path)?;
        assert_eq!(&bytes[..3], &[0, 0, 0]);
        assert_eq!(&bytes[3..6], b"abc");
        assert_eq!(bytes.len(), 47);
        Ok(())
    }

    #[test]
    fn second_lock_in_same_process_would_block() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("db.lock");
        let guard = StdFileSystem.try_lock(&path)?;
        let second = StdFileSystem.try_lock(&path);
        assert_eq!(
            second.map(|_| ()).map_err(|e| e.kind()),
            Err(io::ErrorKind::WouldBlock)
        );
        drop(guard);
        assert!(StdFileSystem.try_lock(&path).is_ok());
        Ok(())
    }

    #[test]
    fn own_process_is_alive() {
        assert!(StdFileSystem.is_process_alive(std::process::id()));
    }
}
