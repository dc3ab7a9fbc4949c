//! The manifest: the replica's commit point, and the restore points it
//! describes.

use serde::{Deserialize, Serialize};

use crate::error::{ReplicateError, Result};
use crate::format;

/// Key of the manifest, relative to the replica's prefix.
pub const MANIFEST_KEY: &str = "manifest";
/// Key of the lease object.
pub const LEASE_KEY: &str = "lease";
/// Key prefix of the generations' objects.
pub const GENERATIONS_DIR: &str = "generations";
/// The manifest's `format` field.
pub const MANIFEST_FORMAT: &str = "iqdb-persist-replica";

/// The replica's manifest: every generation a restore can use. Objects not
/// listed here do not exist as far as a restore is concerned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    /// The lease epoch of the writer that wrote this manifest.
    pub epoch: u64,
    /// Who wrote it (host, process, random tag).
    pub writer: String,
    /// When it was written (Unix milliseconds).
    pub updated_at_ms: u64,
    /// The replicated database's snapshot file name (restore's default).
    pub database: String,
    /// The ordinal the next generation gets.
    pub next_ordinal: u64,
    /// Generations, oldest first.
    pub generations: Vec<Generation>,
}

/// One snapshot and the log shipped after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    /// Its name: `<ordinal>-<base seq>-e<epoch>` (also its key directory).
    pub id: String,
    /// Position in the replica's history (grows by one per generation).
    pub ordinal: u64,
    /// Lease epoch of the writer that started it.
    pub epoch: u64,
    /// Sequence number of the first operation after the snapshot.
    pub base_seq: u64,
    /// When its snapshot was committed (Unix milliseconds).
    pub created_at_ms: u64,
    /// The snapshot.
    pub snapshot: SnapshotObject,
    /// Log segments, in sequence order, contiguous from `base_seq`.
    pub segments: Vec<SegmentObject>,
}

/// A generation's snapshot object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotObject {
    /// Key relative to the replica's prefix.
    pub key: String,
    /// Bytes.
    pub len: u64,
    /// CRC-32 of the whole object.
    pub crc32: u32,
    /// The snapshot header's CRC field (with `len`, its fingerprint, which
    /// the restored log must name).
    pub header_crc32: u32,
    /// Snapshot format version.
    pub version: u32,
}

/// A log segment object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentObject {
    /// Key relative to the replica's prefix.
    pub key: String,
    /// Sequence number of its first operation.
    pub first_seq: u64,
    /// Sequence number after its last operation.
    pub end_seq: u64,
    /// Frames in it.
    pub frames: u64,
    /// Object bytes (header included).
    pub len: u64,
    /// CRC-32 of its frames (as in its header).
    pub crc32: u32,
    /// When the manifest that first listed it was written (Unix ms).
    pub shipped_at_ms: u64,
}

impl Generation {
    /// The generation's key directory.
    #[must_use]
    pub fn dir(id: &str) -> String {
        format!("{GENERATIONS_DIR}/{id}")
    }

    /// A generation's name.
    #[must_use]
    pub fn make_id(ordinal: u64, base_seq: u64, epoch: u64) -> String {
        format!("{ordinal:08}-{base_seq:020}-e{epoch:08}")
    }

    /// The key of a segment of this generation written in `epoch`.
    #[must_use]
    pub fn segment_key(&self, first_seq: u64, end_seq: u64, epoch: u64) -> String {
        format!(
            "{}/wal/{first_seq:020}-{:020}-e{epoch:08}.seg",
            Self::dir(&self.id),
            end_seq.saturating_sub(1)
        )
    }

    /// Sequence number after the last shipped operation.
    #[must_use]
    pub fn end_seq(&self) -> u64 {
        self.segments.last().map_or(self.base_seq, |s| s.end_seq)
    }

    /// When its last restore point was committed.
    #[must_use]
    pub fn last_shipped_ms(&self) -> u64 {
        self.segments
            .last()
            .map_or(self.created_at_ms, |s| s.shipped_at_ms)
    }

    /// Bytes of its objects.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.snapshot.len + self.segments.iter().map(|s| s.len).sum::<u64>()
    }
}

/// Where a restore should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestoreTarget {
    /// The newest shipped point.
    #[default]
    Latest,
    /// The state after the operation with this sequence number (a batch
    /// that spans it is left out whole: batches are atomic).
    Sequence(u64),
    /// The newest point committed at or before this time (Unix ms).
    Time(u64),
}

/// A point a restore can reach: a generation and how many of its segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestorePoint {
    /// Index into [`Manifest::generations`].
    pub generation: usize,
    /// Segments to apply (a prefix of the generation's).
    pub segments: usize,
    /// Operations to keep: those with a sequence number below this.
    pub end_seq: u64,
}

impl Manifest {
    /// An empty manifest.
    #[must_use]
    pub fn new(database: &str) -> Self {
        Self {
            format: MANIFEST_FORMAT.to_string(),
            epoch: 0,
            writer: String::new(),
            updated_at_ms: 0,
            database: database.to_string(),
            next_ordinal: 1,
            generations: Vec::new(),
        }
    }

    /// The manifest object's bytes: a checksummed envelope around the JSON.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let json = serde_json::to_vec_pretty(self).unwrap_or_default();
        format::seal_manifest(&json)
    }

    /// Parses and verifies a manifest object.
    ///
    /// # Errors
    ///
    /// [`ReplicateError::Corrupt`] when the envelope, checksum or JSON is
    /// wrong.
    pub fn from_bytes(key: &str, bytes: &[u8]) -> Result<Self> {
        let json = format::open_manifest(key, bytes)?;
        let manifest: Self = serde_json::from_slice(json)
            .map_err(|e| ReplicateError::corrupt(key, format!("manifest JSON: {e}")))?;
        if manifest.format != MANIFEST_FORMAT {
            return Err(ReplicateError::corrupt(
                key,
                "not an iqdb-persist replica manifest",
            ));
        }
        Ok(manifest)
    }

    /// The restore point for `target`, if the manifest has one.
    #[must_use]
    pub fn restore_point(&self, target: RestoreTarget) -> Option<RestorePoint> {
        let gens = &self.generations;
        match target {
            RestoreTarget::Latest => gens.last().map(|g| RestorePoint {
                generation: gens.len() - 1,
                segments: g.segments.len(),
                end_seq: g.end_seq(),
            }),
            RestoreTarget::Sequence(seq) => {
                let end = seq.checked_add(1)?;
                gens.iter().enumerate().rev().find_map(|(i, g)| {
                    if g.base_seq > end || g.end_seq() < end {
                        return None;
                    }
                    let segments = g.segments.iter().take_while(|s| s.first_seq < end).count();
                    Some(RestorePoint {
                        generation: i,
                        segments,
                        end_seq: end,
                    })
                })
            }
            RestoreTarget::Time(ms) => gens.iter().enumerate().rev().find_map(|(i, g)| {
                if g.created_at_ms > ms {
                    return None;
                }
                let segments = g
                    .segments
                    .iter()
                    .take_while(|s| s.shipped_at_ms <= ms)
                    .count();
                let end_seq = if segments == 0 {
                    g.base_seq
                } else {
                    g.segments[segments - 1].end_seq
                };
                Some(RestorePoint {
                    generation: i,
                    segments,
                    end_seq,
                })
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(first: u64, end: u64, at: u64) -> SegmentObject {
        SegmentObject {
            key: format!("s{first}"),
            first_seq: first,
            end_seq: end,
            frames: end - first,
            len: 100,
            crc32: 0,
            shipped_at_ms: at,
        }
    }

    fn generation(ordinal: u64, base: u64, at: u64, segments: Vec<SegmentObject>) -> Generation {
        Generation {
            id: Generation::make_id(ordinal, base, 1),
            ordinal,
            epoch: 1,
            base_seq: base,
            created_at_ms: at,
            snapshot: SnapshotObject {
                key: "x".into(),
                len: 10,
                crc32: 0,
                header_crc32: 0,
                version: 3,
            },
            segments,
        }
    }

    #[test]
    fn restore_points() {
        let mut m = Manifest::new("db");
        assert_eq!(m.restore_point(RestoreTarget::Latest), None);
        m.generations
            .push(generation(1, 1, 100, vec![seg(1, 5, 110), seg(5, 9, 120)]));
        m.generations
            .push(generation(2, 9, 200, vec![seg(9, 12, 210)]));
        let p = |t| {
            m.restore_point(t)
                .map(|p| (p.generation, p.segments, p.end_seq))
        };
        assert_eq!(p(RestoreTarget::Latest), Some((1, 1, 12)));
        assert_eq!(p(RestoreTarget::Sequence(11)), Some((1, 1, 12)));
        assert_eq!(p(RestoreTarget::Sequence(8)), Some((1, 0, 9)));
        assert_eq!(p(RestoreTarget::Sequence(6)), Some((0, 2, 7)));
        assert_eq!(p(RestoreTarget::Sequence(0)), Some((0, 0, 1)));
        assert_eq!(p(RestoreTarget::Sequence(12)), None);
        assert_eq!(p(RestoreTarget::Time(99)), None);
        assert_eq!(p(RestoreTarget::Time(115)), Some((0, 1, 5)));
        assert_eq!(p(RestoreTarget::Time(205)), Some((1, 0, 9)));
        assert_eq!(p(RestoreTarget::Time(1000)), Some((1, 1, 12)));
        let bytes = m.to_bytes();
        assert_eq!(Manifest::from_bytes("m", &bytes).ok(), Some(m));
    }
}
