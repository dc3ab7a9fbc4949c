//! Snapshot files: streaming writers and verifying readers for formats v1,
//! v2 and v3 (byte layouts in docs/FORMAT.md).
//!
//! Neither direction holds the payload in memory (except legacy v2 LZ4,
//! whose single raw block cannot be streamed): the writer hands
//! `Persistable::save_to` a chunking writer whose chunks are checksummed,
//! compressed on worker threads and written as they fill; the reader checks
//! every byte before the index sees it (v3 per chunk; v1/v2 with a first
//! checksum pass over the file) and discards the index on any mismatch.

mod read;
mod write;

pub(crate) use read::{SnapshotMeta, copy_payload, inspect_snapshot_file, read_snapshot};
pub(crate) use write::{
    HeaderFacts, WriteSettings, WrittenSnapshot, write_payload, write_snapshot,
};

use std::path::Path;
use std::sync::Arc;

use crate::Persistable;
use crate::error::Result;
use crate::storage::FileHandle;

/// What a checkpoint writes as its snapshot: an index, or the verified
/// payload of an existing snapshot re-framed in another format.
pub(crate) trait Source {
    /// Writes a complete snapshot into `file` (an empty temporary at
    /// `path`).
    fn write_to(
        &self,
        file: &Arc<dyn FileHandle>,
        path: &Path,
        settings: &WriteSettings,
    ) -> Result<WrittenSnapshot>;
}

impl<I: Persistable> Source for I {
    fn write_to(
        &self,
        file: &Arc<dyn FileHandle>,
        path: &Path,
        settings: &WriteSettings,
    ) -> Result<WrittenSnapshot> {
        write_snapshot(file, path, self, settings)
    }
}

/// Identifies one snapshot file's contents: its header CRC field and its
/// length. The write-ahead log records the fingerprint of the snapshot it
/// follows, and a checkpoint intent the fingerprint of the snapshot being
/// installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SnapshotFingerprint {
    /// The snapshot header's `crc32` field.
    pub crc32: u32,
    /// The snapshot file's length in bytes.
    pub len: u64,
}

/// Size of the buffers used to stream file bytes.
pub(crate) const IO_BUFFER: usize = 1 << 20;

/// Bytes of a v3 chunk head: raw length, stored length, CRC-32.
pub(crate) const CHUNK_HEAD_LEN: usize = 12;
