//! The snapshot file header (see docs/FORMAT.md for every byte).
//!
//! All three snapshot versions start with the same fields: magic, version,
//! index type, dim, metric, vector count and a CRC-32. What the CRC covers
//! and what follows the header depends on the version:
//!
//! * v1 (1.0): the CRC covers the payload, which follows verbatim.
//! * v2 (1.0): the CRC covers a region `[scheme u8][raw_len u64][data]`.
//! * v3 (1.1): the CRC covers the header itself (with a 64-byte extension
//!   that records the compression scheme, sizes, a payload CRC and the WAL
//!   sequence number); the payload follows as independently checksummed
//!   chunks, so a loader verifies every byte before it decodes it.

use std::io::{Read, Write};

use iqdb_types::DistanceMetric;

use crate::error::{PersistError, Result};

/// The eight bytes every snapshot file starts with.
pub const MAGIC: [u8; 8] = *b"IQDBPRST";

/// The snapshot version 1.0 writes, and the newest it reads (2). Files of this
/// version are readable by every 1.x release; see [`LATEST_VERSION`] for the
/// newest this build reads and writes.
pub const CURRENT_VERSION: u32 = 2;

/// The newest snapshot version this build reads and can write (3: chunked,
/// streaming, header checksum).
pub const LATEST_VERSION: u32 = 3;

/// The oldest snapshot version this build reads.
pub const MIN_SUPPORTED_VERSION: u32 = 1;

/// Longest accepted index-type tag; a longer one is corruption, not a tag.
pub const MAX_INDEX_TYPE_LEN: usize = 4096;

/// The common snapshot header.
///
/// `crc32` is the payload-region checksum for v1 and v2 files and the header
/// checksum for v3 files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHeader {
    /// Always [`MAGIC`].
    pub magic: [u8; 8],
    /// Format version, 1 to [`LATEST_VERSION`].
    pub version: u32,
    /// The `Persistable::INDEX_TYPE` of the index that wrote the file.
    pub index_type: String,
    /// Vector dimension.
    pub dim: usize,
    /// Distance metric.
    pub metric: DistanceMetric,
    /// Number of vectors in the index.
    pub n_vectors: usize,
    /// CRC-32 (see the type's docs for what it covers).
    pub crc32: u32,
}

impl FileHeader {
    /// The number of bytes [`write_header`] writes for this header.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        FIXED_HEADER_LEN + self.index_type.len()
    }
}

/// Header bytes besides the index-type tag.
pub(crate) const FIXED_HEADER_LEN: usize = 8 + 4 + 8 + 8 + 1 + 8 + 4;

/// The on-disk tag of a metric.
pub(crate) fn metric_to_tag(metric: DistanceMetric) -> Result<u8> {
    Ok(match metric {
        DistanceMetric::Cosine => 0,
        DistanceMetric::DotProduct => 1,
        DistanceMetric::Euclidean => 2,
        DistanceMetric::Manhattan => 3,
        DistanceMetric::Hamming => 4,
        other => return Err(PersistError::UnsupportedMetric { metric: other }),
    })
}

/// The metric of an on-disk tag.
pub(crate) fn tag_to_metric(tag: u8) -> Result<DistanceMetric> {
    Ok(match tag {
        0 => DistanceMetric::Cosine,
        1 => DistanceMetric::DotProduct,
        2 => DistanceMetric::Euclidean,
        3 => DistanceMetric::Manhattan,
        4 => DistanceMetric::Hamming,
        tag => return Err(PersistError::InvalidMetric { tag }),
    })
}

/// Encodes the header into bytes (the inverse of [`read_header`]).
pub(crate) fn encode_header(header: &FileHeader) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(header.encoded_len());
    encode_header_without_crc(header, &mut out)?;
    out.extend_from_slice(&header.crc32.to_le_bytes());
    Ok(out)
}

/// Every header byte that precedes the CRC field.
pub(crate) fn encode_header_without_crc(header: &FileHeader, out: &mut Vec<u8>) -> Result<()> {
    if header.index_type.len() > MAX_INDEX_TYPE_LEN {
        return Err(PersistError::InvalidPayload {
            reason: "index_type is longer than 4096 bytes",
        });
    }
    out.extend_from_slice(&header.magic);
    out.extend_from_slice(&header.version.to_le_bytes());
    out.extend_from_slice(&(header.index_type.len() as u64).to_le_bytes());
    out.extend_from_slice(header.index_type.as_bytes());
    out.extend_from_slice(&usize_to_u64(header.dim).to_le_bytes());
    out.push(metric_to_tag(header.metric)?);
    out.extend_from_slice(&usize_to_u64(header.n_vectors).to_le_bytes());
    Ok(())
}

fn usize_to_u64(value: usize) -> u64 {
    // usize is at most 64 bits on every supported target.
    value as u64
}

/// Writes `header` in the layout every version shares.
///
/// ```
/// use iqdb_persist::format::{read_header, write_header, FileHeader, MAGIC};
/// use iqdb_types::DistanceMetric;
///
/// let header = FileHeader {
///     magic: MAGIC,
///     version: 2,
///     index_type: "flat".into(),
///     dim: 3,
///     metric: DistanceMetric::Cosine,
///     n_vectors: 10,
///     crc32: 0xdead_beef,
/// };
/// let mut bytes = Vec::new();
/// write_header(&mut bytes, &header).unwrap();
/// assert_eq!(bytes.len(), header.encoded_len());
/// assert_eq!(read_header(&mut bytes.as_slice()).unwrap(), header);
///
/// // A v3 header: only `read_any_header` reads it, as 1.0's reader would not.
/// let v3 = FileHeader { version: 3, ..header };
/// bytes.clear();
/// write_header(&mut bytes, &v3).unwrap();
/// assert!(read_header(&mut bytes.as_slice()).is_err());
/// assert_eq!(iqdb_persist::format::read_any_header(&mut bytes.as_slice()).unwrap(), v3);
/// ```
pub fn write_header(writer: &mut dyn Write, header: &FileHeader) -> Result<()> {
    let bytes = encode_header(header)?;
    writer.write_all(&bytes).map_err(|source| PersistError::Io {
        path: std::path::PathBuf::new(),
        source,
    })
}

/// Reads the header of a snapshot in one of 1.0's formats (version 1 or 2,
/// up to [`CURRENT_VERSION`]), leaving `reader` just past it: 1.0's function,
/// with 1.0's contract.
///
/// A file of any other version, including this build's v3, fails with
/// `UnsupportedVersion { found, supported: CURRENT_VERSION }`, as in 1.0: code
/// that goes on to parse a v1/v2 payload itself never sees a v3 header. To
/// read the header of any version this build reads, use [`read_any_header`].
///
/// Also fails with `BadMagic`, `TruncatedHeader`, `InvalidMetric` or
/// `InvalidPayload` (an index-type tag longer than [`MAX_INDEX_TYPE_LEN`] or
/// not UTF-8); never allocates more than that cap.
pub fn read_header(reader: &mut dyn Read) -> Result<FileHeader> {
    read_header_up_to(reader, CURRENT_VERSION)
}

/// Reads a header written by [`write_header`] of any version this build
/// reads (1 to [`LATEST_VERSION`]), leaving `reader` just past it; other
/// versions fail with `UnsupportedVersion { found, supported: LATEST_VERSION }`.
/// Otherwise the same as [`read_header`].
pub fn read_any_header(reader: &mut dyn Read) -> Result<FileHeader> {
    read_header_up_to(reader, LATEST_VERSION)
}

fn read_header_up_to(reader: &mut dyn Read, newest: u32) -> Result<FileHeader> {
    let mut consumed = 0usize;
    let mut magic = [0u8; 8];
    read_field(reader, &mut magic, &mut consumed)?;
    if magic != MAGIC {
        return Err(PersistError::BadMagic { found: magic });
    }
    let mut b4 = [0u8; 4];
    let mut b8 = [0u8; 8];
    read_field(reader, &mut b4, &mut consumed)?;
    let version = u32::from_le_bytes(b4);
    if !(MIN_SUPPORTED_VERSION..=newest).contains(&version) {
        return Err(PersistError::UnsupportedVersion {
            found: version,
            supported: newest,
        });
    }
    read_field(reader, &mut b8, &mut consumed)?;
    let type_len = u64::from_le_bytes(b8);
    if type_len > MAX_INDEX_TYPE_LEN as u64 {
        return Err(PersistError::InvalidPayload {
            reason: "index_type length exceeds the 4 KiB cap",
        });
    }
    let mut type_bytes = vec![0u8; type_len as usize];
    read_field(reader, &mut type_bytes, &mut consumed)?;
    let index_type = String::from_utf8(type_bytes).map_err(|_| PersistError::InvalidPayload {
        reason: "index_type is not valid UTF-8",
    })?;
    read_field(reader, &mut b8, &mut consumed)?;
    let dim =
        usize::try_from(u64::from_le_bytes(b8)).map_err(|_| PersistError::InvalidPayload {
            reason: "dim does not fit in usize on this host",
        })?;
    let mut tag = [0u8; 1];
    read_field(reader, &mut tag, &mut consumed)?;
    let metric = tag_to_metric(tag[0])?;
    read_field(reader, &mut b8, &mut consumed)?;
    let n_vectors =
        usize::try_from(u64::from_le_bytes(b8)).map_err(|_| PersistError::InvalidPayload {
            reason: "n_vectors does not fit in usize on this host",
        })?;
    read_field(reader, &mut b4, &mut consumed)?;
    Ok(FileHeader {
        magic,
        version,
        index_type,
        dim,
        metric,
        n_vectors,
        crc32: u32::from_le_bytes(b4),
    })
}

/// `read_exact` that reports a short read as `TruncatedHeader`, counting how
/// much of the header was there.
fn read_field(reader: &mut dyn Read, buf: &mut [u8], consumed: &mut usize) -> Result<()> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => {
                return Err(PersistError::TruncatedHeader {
                    needed: buf.len() - got,
                    found: 0,
                });
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(PersistError::Io {
                    path: std::path::PathBuf::new(),
                    source,
                });
            }
        }
    }
    *consumed += got;
    Ok(())
}

/// The v3 header extension that follows the common header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct V3Extension {
    /// Compression scheme tag of every chunk.
    pub scheme: u8,
    /// Largest raw (uncompressed) size of a chunk.
    pub chunk_size: u32,
    /// CRC-32 of the whole raw payload.
    pub payload_crc: u32,
    /// Raw payload length.
    pub raw_len: u64,
    /// Bytes of the chunk region (chunk heads and stored bytes).
    pub stored_len: u64,
    /// Number of chunks.
    pub chunk_count: u64,
    /// Last write-ahead-log sequence number the snapshot includes.
    pub last_seq: u64,
}

/// Bytes of the v3 extension this build writes.
pub(crate) const V3_EXTENSION_LEN: u32 = 64;
/// Largest extension a reader accepts (room for later fields).
pub(crate) const V3_MAX_EXTENSION_LEN: u32 = 4096;
/// Largest chunk a v3 reader accepts.
pub(crate) const V3_MAX_CHUNK_SIZE: u32 = 16 << 20;
/// Smallest chunk a v3 writer may use.
pub(crate) const V3_MIN_CHUNK_SIZE: u32 = 4 << 10;

impl V3Extension {
    pub(crate) fn encode(&self) -> [u8; V3_EXTENSION_LEN as usize] {
        let mut out = [0u8; V3_EXTENSION_LEN as usize];
        out[0..4].copy_from_slice(&V3_EXTENSION_LEN.to_le_bytes());
        out[4] = self.scheme;
        out[8..12].copy_from_slice(&self.chunk_size.to_le_bytes());
        out[12..16].copy_from_slice(&self.payload_crc.to_le_bytes());
        out[16..24].copy_from_slice(&self.raw_len.to_le_bytes());
        out[24..32].copy_from_slice(&self.stored_len.to_le_bytes());
        out[32..40].copy_from_slice(&self.chunk_count.to_le_bytes());
        out[40..48].copy_from_slice(&self.last_seq.to_le_bytes());
        out
    }

    /// Decodes an extension whose bytes (of the length its first field
    /// gives) are in `bytes`. The caller has verified the header CRC.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < V3_EXTENSION_LEN as usize {
            return Err(PersistError::TruncatedHeader {
                needed: V3_EXTENSION_LEN as usize,
                found: bytes.len(),
            });
        }
        let u32_at = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let ext = Self {
            scheme: bytes[4],
            chunk_size: u32_at(8),
            payload_crc: u32_at(12),
            raw_len: u64_at(16),
            stored_len: u64_at(24),
            chunk_count: u64_at(32),
            last_seq: u64_at(40),
        };
        if !(1..=V3_MAX_CHUNK_SIZE).contains(&ext.chunk_size) {
            return Err(PersistError::InvalidPayload {
                reason: "v3 chunk size is out of range",
            });
        }
        Ok(ext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(version: u32) -> FileHeader {
        FileHeader {
            magic: MAGIC,
            version,
            index_type: "testkit-flat".into(),
            dim: 768,
            metric: DistanceMetric::Euclidean,
            n_vectors: 12345,
            crc32: 0x0102_0304,
        }
    }

    #[test]
    fn every_truncation_of_a_header_is_truncated_header() {
        let bytes = encode_header(&header(2)).unwrap_or_default();
        for cut in 0..bytes.len() {
            let err = read_header(&mut &bytes[..cut]);
            assert!(
                matches!(err, Err(PersistError::TruncatedHeader { .. })),
                "cut at {cut}: {err:?}"
            );
        }
    }

    #[test]
    fn rejects_versions_outside_range() {
        for version in [0, 4, u32::MAX] {
            let bytes = encode_header(&header(version)).unwrap_or_default();
            assert!(matches!(
                read_any_header(&mut bytes.as_slice()),
                Err(PersistError::UnsupportedVersion { found, supported: LATEST_VERSION }) if found == version
            ));
        }
    }

    #[test]
    fn the_1_0_reader_keeps_1_0s_range_and_message() {
        for version in [0, 3, 4, 999] {
            let bytes = encode_header(&header(version)).unwrap_or_default();
            assert!(matches!(
                read_header(&mut bytes.as_slice()),
                Err(PersistError::UnsupportedVersion { found, supported: CURRENT_VERSION }) if found == version
            ));
        }
        for version in [1, 2] {
            let bytes = encode_header(&header(version)).unwrap_or_default();
            assert_eq!(
                read_header(&mut bytes.as_slice()).ok(),
                Some(header(version))
            );
        }
    }

    #[test]
    fn huge_index_type_length_fails_without_allocating() {
        let mut bytes = encode_header(&header(2)).unwrap_or_default();
        bytes[12..20].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(matches!(
            read_header(&mut bytes.as_slice()),
            Err(PersistError::InvalidPayload { .. })
        ));
    }

    #[test]
    fn metric_tags_round_trip_and_reject_unknown() {
        for tag in 0..=4u8 {
            let metric = tag_to_metric(tag).unwrap_or(DistanceMetric::Cosine);
            assert_eq!(metric_to_tag(metric).ok(), Some(tag));
        }
        assert!(matches!(
            tag_to_metric(5),
            Err(PersistError::InvalidMetric { tag: 5 })
        ));
    }

    #[test]
    fn extension_round_trips() {
        let ext = V3Extension {
            scheme: 1,
            chunk_size: 1 << 20,
            payload_crc: 7,
            raw_len: 1 << 33,
            stored_len: 99,
            chunk_count: 5,
            last_seq: 42,
        };
        assert_eq!(V3Extension::decode(&ext.encode()).ok(), Some(ext));
    }
}
