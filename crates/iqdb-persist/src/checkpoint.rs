//! The checkpoint intent file, `<snapshot>.checkpoint`.
//!
//! A checkpoint replaces two files, the snapshot and the log, and two
//! renames cannot be one atomic step. The intent makes the pair atomic:
//!
//! 1. the new snapshot is written to a temporary and fsynced;
//! 2. the intent, naming that snapshot's fingerprint, is made durable
//!    (temporary, fsync, rename, directory fsync);
//! 3. the snapshot is renamed into place (directory fsynced);
//! 4. a fresh log is created (temporary, fsync, rename, directory fsync);
//! 5. the intent is removed (directory fsynced) before any new write is
//!    acknowledged.
//!
//! On load, an intent whose fingerprint matches the snapshot in place means
//! the crash hit between steps 3 and 5: every logged operation is already
//! in the snapshot, so the log is replaced by a fresh one instead of being
//! replayed (1.0 replayed it and failed on duplicate ids). An intent that
//! does not match means the snapshot was never installed: the log is still
//! the live one. This works for both log formats, so 1.0-readable (v1) logs
//! get crash-safe checkpoints too; 1.0 itself ignores the file.
//!
//! ```text
//! "IQDBCKPT", version u32 = 1, snapshot_len u64, snapshot_crc u32,
//! next_seq u64, wal_version u32, crc32 of the preceding 36 bytes u32
//! ```

use std::path::Path;
use std::sync::Arc;

use crate::error::{PersistError, Result};
use crate::replace;
use crate::snapshot::SnapshotFingerprint;
use crate::storage::{FileSystem, read_exact_at};

const MAGIC: [u8; 8] = *b"IQDBCKPT";
const VERSION: u32 = 1;
const LEN: usize = 40;

/// A checkpoint in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Intent {
    /// The snapshot being installed.
    pub snapshot: SnapshotFingerprint,
    /// Sequence number of the first operation of the new log.
    pub next_seq: u64,
    /// Format version of the new log.
    pub wal_version: u32,
}

impl Intent {
    fn encode(&self) -> [u8; LEN] {
        let mut out = [0u8; LEN];
        out[0..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&VERSION.to_le_bytes());
        out[12..20].copy_from_slice(&self.snapshot.len.to_le_bytes());
        out[20..24].copy_from_slice(&self.snapshot.crc32.to_le_bytes());
        out[24..32].copy_from_slice(&self.next_seq.to_le_bytes());
        out[32..36].copy_from_slice(&self.wal_version.to_le_bytes());
        let crc = crc32fast::hash(&out[..36]);
        out[36..40].copy_from_slice(&crc.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8; LEN]) -> Result<Self> {
        if bytes[0..8] != MAGIC {
            let mut found = [0u8; 8];
            found.copy_from_slice(&bytes[0..8]);
            return Err(PersistError::BadMagic { found });
        }
        let stored = u32::from_le_bytes([bytes[36], bytes[37], bytes[38], bytes[39]]);
        let computed = crc32fast::hash(&bytes[..36]);
        if stored != computed {
            return Err(PersistError::ChecksumMismatch {
                expected: stored,
                computed,
            });
        }
        let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if version != VERSION {
            return Err(PersistError::UnsupportedVersion {
                found: version,
                supported: VERSION,
            });
        }
        let u64_at = |at: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(a)
        };
        Ok(Self {
            snapshot: SnapshotFingerprint {
                len: u64_at(12),
                crc32: u32::from_le_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]),
            },
            next_seq: u64_at(24),
            wal_version: u32::from_le_bytes([bytes[32], bytes[33], bytes[34], bytes[35]]),
        })
    }
}

/// Makes the intent durable at `path`.
pub(crate) fn write(fs: &Arc<dyn FileSystem>, path: &Path, intent: &Intent) -> Result<()> {
    let bytes = intent.encode();
    replace::write_atomically(fs, path, |file, temp| {
        file.write_all_at(&bytes, 0)
            .map_err(|e| PersistError::io(temp, e))
    })
}

/// Reads the intent at `path`, if there is one.
pub(crate) fn read(fs: &dyn FileSystem, path: &Path) -> Result<Option<Intent>> {
    let file = match fs.open_read(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(PersistError::io(path, e)),
    };
    let len = file.len().map_err(|e| PersistError::io(path, e))?;
    if len != LEN as u64 {
        return Err(PersistError::InvalidPayload {
            reason: "checkpoint intent file has the wrong length",
        }
        .in_file(path, 0));
    }
    let mut bytes = [0u8; LEN];
    read_exact_at(file.as_ref(), &mut bytes, 0).map_err(|e| PersistError::io(path, e))?;
    Intent::decode(&bytes)
        .map(Some)
        .map_err(|e| e.in_file(path, 0))
}

/// Removes the intent durably.
pub(crate) fn remove(fs: &dyn FileSystem, path: &Path) -> Result<()> {
    match fs.remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(PersistError::io(path, e)),
    }
    let dir = replace::parent_dir(path);
    fs.sync_dir(dir).map_err(|e| PersistError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intent_round_trips_and_rejects_every_flip() -> Result<()> {
        let intent = Intent {
            snapshot: SnapshotFingerprint {
                crc32: 0x1234_5678,
                len: 4096,
            },
            next_seq: 99,
            wal_version: 2,
        };
        let bytes = intent.encode();
        assert_eq!(Intent::decode(&bytes)?, intent);
        for bit in 0..LEN * 8 {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(Intent::decode(&flipped).is_err(), "bit {bit}");
        }
        Ok(())
    }
}
