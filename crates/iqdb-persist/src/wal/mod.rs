//! The write-ahead log: `<snapshot>.wal`.
//!
//! Split by concern: [`record`] encodes operations, [`format`] headers and
//! frames, [`reader`] streams frames and classifies damage, [`writer`]
//! appends and syncs. A new log is always created whole (header written,
//! fsynced, renamed into place, directory fsynced), never by truncating the
//! old one in place, so a crash cannot leave a log without its header.

pub(crate) mod format;
pub(crate) mod reader;
pub(crate) mod record;
pub(crate) mod writer;

use std::path::Path;
use std::sync::Arc;

use crate::error::{PersistError, Result};
use crate::replace;
use crate::snapshot::SnapshotFingerprint;
use crate::storage::{FileHandle, FileSystem};

pub use reader::{Damage, DamageKind};
pub use record::Operation;

/// Creates a fresh, empty log at `path` (atomically replacing any old one)
/// and returns it opened for appending, with its header.
pub(crate) fn create_log(
    fs: &Arc<dyn FileSystem>,
    path: &Path,
    version: u32,
    base_seq: u64,
    snapshot: SnapshotFingerprint,
) -> Result<(Arc<dyn FileHandle>, format::WalHeader)> {
    let header = format::WalHeader {
        version,
        base_seq: if version >= 2 { base_seq } else { 1 },
        snapshot: (version >= 2).then_some(snapshot),
    };
    let bytes = header.encode();
    replace::write_atomically(fs, path, |file, temp| {
        file.write_all_at(&bytes, 0)
            .map_err(|e| PersistError::io(temp, e))
    })?;
    let file = fs.open_write(path).map_err(|e| PersistError::io(path, e))?;
    Ok((file, header))
}
