//! WAL headers and frames (byte layouts in docs/FORMAT.md).
//!
//! ```text
//! v1 header (12 B):  "IQDBWAL\0", version u32 = 1
//! v2 header (40 B):  "IQDBWAL\0", version u32 = 2, flags u32 = 0,
//!                    base_seq u64, snapshot_len u64, snapshot_crc u32,
//!                    header_crc u32 (of bytes 0..36)
//! frame:             len u32, crc32(body) u32, body (len bytes)
//! v1 body:           one operation
//! v2 body:           kind u8 (1 one op, 2 batch, 3 sync mark), first_seq u64,
//!                    synced_len u64, then the op, or count u32 and ops, or
//!                    (sync mark) one zero byte
//! ```

use crate::error::{PersistError, Result};
use crate::snapshot::SnapshotFingerprint;
use crate::wal::record::{self, Cursor, Operation};

/// The eight bytes every log starts with.
pub(crate) const WAL_MAGIC: [u8; 8] = *b"IQDBWAL\0";
pub(crate) const V1_HEADER_LEN: u64 = 12;
pub(crate) const V2_HEADER_LEN: u64 = 40;
pub(crate) const FRAME_HEAD_LEN: u64 = 8;
/// Largest frame body accepted (1.0's cap).
pub(crate) const MAX_FRAME_BODY: u32 = 256 << 20;
pub(crate) const KIND_SINGLE: u8 = 1;
pub(crate) const KIND_BATCH: u8 = 2;
/// A frame with no operations whose synced length is its own offset: a load
/// wrote it after making everything before it durable, so later loads need
/// not write that part back again (see `recovery::make_durable`).
pub(crate) const KIND_SYNC_MARK: u8 = 3;

/// Whether `kind` is a v2 frame kind.
pub(crate) fn is_frame_kind(kind: u8) -> bool {
    matches!(kind, KIND_SINGLE | KIND_BATCH | KIND_SYNC_MARK)
}

/// A v2 sync mark frame (head and body) at log offset `at`, before the
/// operation numbered `next_seq`.
pub(crate) fn sync_mark(next_seq: u64, at: u64) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(FRAME_HEAD_LEN as usize + V2_BODY_PREFIX + 1);
    begin_frame(&mut buf, 2, KIND_SYNC_MARK, next_seq, at);
    buf.push(0);
    finish_frame(&mut buf)?;
    Ok(buf)
}
/// kind + first_seq + synced_len.
pub(crate) const V2_BODY_PREFIX: usize = 17;
/// The smallest operation encoding: a delete of a U64 id.
const MIN_OP_LEN: usize = 10;

/// A parsed log header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WalHeader {
    pub version: u32,
    /// Sequence number of the first operation in this log (v2; 1 for v1,
    /// which does not record it).
    pub base_seq: u64,
    /// The snapshot this log follows (v2).
    pub snapshot: Option<SnapshotFingerprint>,
}

impl WalHeader {
    pub(crate) fn len(&self) -> u64 {
        if self.version == 1 {
            V1_HEADER_LEN
        } else {
            V2_HEADER_LEN
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len() as usize);
        out.extend_from_slice(&WAL_MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        if self.version >= 2 {
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&self.base_seq.to_le_bytes());
            let fp = self
                .snapshot
                .unwrap_or(SnapshotFingerprint { crc32: 0, len: 0 });
            out.extend_from_slice(&fp.len.to_le_bytes());
            out.extend_from_slice(&fp.crc32.to_le_bytes());
            let crc = crc32fast::hash(&out);
            out.extend_from_slice(&crc.to_le_bytes());
        }
        out
    }
}

/// What the first bytes of a log file say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderState {
    /// A complete, valid header.
    Valid(WalHeader),
    /// Too short for a header, but every byte present is zero or what a
    /// header would start with: a log whose creation was cut short (1.0
    /// truncated in place). It holds no operations.
    Incomplete,
}

/// Parses a log header from the file's first bytes (`bytes` may be longer
/// than the header). A file too short for a header whose bytes are all zero
/// or a prefix of a valid header is [`HeaderState::Incomplete`]; a longer
/// file with the wrong magic is `BadMagic` (the caller may still treat an
/// all-zero file as incomplete).
pub(crate) fn parse_header(bytes: &[u8]) -> Result<HeaderState> {
    if bytes.len() < V1_HEADER_LEN as usize {
        let zero = bytes.iter().all(|&b| b == 0);
        let magic_prefix = bytes.iter().zip(WAL_MAGIC.iter()).all(|(a, m)| a == m)
            && (bytes.len() <= 8 || matches!(bytes[8], 1 | 2));
        return if zero || magic_prefix {
            Ok(HeaderState::Incomplete)
        } else {
            Err(PersistError::BadMagic {
                found: first8(bytes),
            })
        };
    }
    if bytes[..8] != WAL_MAGIC {
        return Err(PersistError::BadMagic {
            found: first8(bytes),
        });
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    match version {
        1 => Ok(HeaderState::Valid(WalHeader {
            version: 1,
            base_seq: 1,
            snapshot: None,
        })),
        2 => {
            if bytes.len() < V2_HEADER_LEN as usize {
                return Ok(HeaderState::Incomplete);
            }
            let h = &bytes[..V2_HEADER_LEN as usize];
            let stored = u32::from_le_bytes([h[36], h[37], h[38], h[39]]);
            let computed = crc32fast::hash(&h[..36]);
            if stored != computed {
                return Err(PersistError::ChecksumMismatch {
                    expected: stored,
                    computed,
                });
            }
            let u64_at = |at: usize| {
                let mut a = [0u8; 8];
                a.copy_from_slice(&h[at..at + 8]);
                u64::from_le_bytes(a)
            };
            Ok(HeaderState::Valid(WalHeader {
                version: 2,
                base_seq: u64_at(16),
                snapshot: Some(SnapshotFingerprint {
                    len: u64_at(24),
                    crc32: u32::from_le_bytes([h[32], h[33], h[34], h[35]]),
                }),
            }))
        }
        found => Err(PersistError::UnsupportedVersion {
            found,
            supported: 2,
        }),
    }
}

fn first8(bytes: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    let n = bytes.len().min(8);
    out[..n].copy_from_slice(&bytes[..n]);
    out
}

/// Starts a frame in `buf` (cleared): the head placeholder and, for v2, the
/// body prefix.
pub(crate) fn begin_frame(
    buf: &mut Vec<u8>,
    version: u32,
    kind: u8,
    first_seq: u64,
    synced_len: u64,
) {
    buf.clear();
    append_frame_start(buf, version, kind, first_seq, synced_len);
}

/// Starts a frame at the end of `buf`, after the frames already in it (for
/// writing several frames with one write); finish it with
/// `finish_frame(&mut buf[start..])`, `start` being `buf.len()` before.
pub(crate) fn append_frame_start(
    buf: &mut Vec<u8>,
    version: u32,
    kind: u8,
    first_seq: u64,
    synced_len: u64,
) {
    buf.extend_from_slice(&[0u8; FRAME_HEAD_LEN as usize]);
    if version >= 2 {
        buf.push(kind);
        buf.extend_from_slice(&first_seq.to_le_bytes());
        buf.extend_from_slice(&synced_len.to_le_bytes());
    }
}

/// Fills in the frame head once the body is complete.
pub(crate) fn finish_frame(buf: &mut [u8]) -> Result<()> {
    let body_len = buf.len() - FRAME_HEAD_LEN as usize;
    let len = u32::try_from(body_len)
        .ok()
        .filter(|&n| n <= MAX_FRAME_BODY)
        .ok_or(PersistError::InvalidPayload {
            reason: "log record is larger than 256 MiB; split the batch",
        })?;
    let crc = crc32fast::hash(&buf[FRAME_HEAD_LEN as usize..]);
    buf[0..4].copy_from_slice(&len.to_le_bytes());
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// What a checked frame body's prefix says, read without decoding the
/// operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sequence {
    /// v2: sequence number of the first operation.
    pub first_seq: Option<u64>,
    /// Operations in the frame.
    pub ops: u64,
    /// v2: the log length known durable when the frame was written.
    pub synced_len: Option<u64>,
}

/// A checked frame body's first sequence number (v2), operation count and
/// recorded synced length (v2), read without decoding the operations.
pub(crate) fn sequence_of(version: u32, body: &[u8]) -> Result<Sequence> {
    if version < 2 {
        return Ok(Sequence {
            first_seq: None,
            ops: 1,
            synced_len: None,
        });
    }
    let mut cur = Cursor::new(body);
    let kind = cur.u8()?;
    let first_seq = cur.u64()?;
    let synced_len = cur.u64()?;
    let ops = match kind {
        KIND_SINGLE => 1,
        KIND_BATCH => u64::from(cur.u32()?),
        KIND_SYNC_MARK => 0,
        _ => {
            return Err(PersistError::InvalidPayload {
                reason: "unknown log frame kind",
            });
        }
    };
    Ok(Sequence {
        first_seq: Some(first_seq),
        ops,
        synced_len: Some(synced_len),
    })
}

/// A decoded frame body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FrameBody {
    /// v2: sequence number of the first operation.
    pub first_seq: Option<u64>,
    /// v2: the log length known to be durable when the frame was written.
    pub synced_len: Option<u64>,
    pub batch: bool,
    pub ops: Vec<Operation>,
}

/// A frame body's description, as [`for_each_op`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameInfo {
    pub first_seq: Option<u64>,
    pub synced_len: Option<u64>,
    pub batch: bool,
}

/// Decodes a frame body whose CRC has been checked, handing its operations
/// to `each` one at a time (with whether the frame is a batch), so a caller
/// applying them keeps no intermediate list. Errors if the body does not
/// decode entirely; operations before the error have been handed out.
pub(crate) fn for_each_op(
    version: u32,
    body: &[u8],
    mut each: impl FnMut(Operation, bool),
) -> Result<FrameInfo> {
    let mut cur = Cursor::new(body);
    let info = if version >= 2 {
        let kind = cur.u8()?;
        let first_seq = cur.u64()?;
        let synced_len = cur.u64()?;
        let batch = match kind {
            KIND_SINGLE => false,
            KIND_BATCH => true,
            KIND_SYNC_MARK => {
                if cur.u8()? != 0 || !cur.is_empty() {
                    return Err(PersistError::InvalidPayload {
                        reason: "a sync mark frame holds bytes after its flags",
                    });
                }
                return Ok(FrameInfo {
                    first_seq: Some(first_seq),
                    synced_len: Some(synced_len),
                    batch: false,
                });
            }
            _ => {
                return Err(PersistError::InvalidPayload {
                    reason: "unknown log frame kind",
                });
            }
        };
        FrameInfo {
            first_seq: Some(first_seq),
            synced_len: Some(synced_len),
            batch,
        }
    } else {
        FrameInfo {
            first_seq: None,
            synced_len: None,
            batch: false,
        }
    };
    if info.batch {
        let count = cur.u32()? as usize;
        if count == 0 || count > cur.remaining() / MIN_OP_LEN {
            return Err(PersistError::InvalidPayload {
                reason: "batch operation count does not fit its frame",
            });
        }
        for _ in 0..count {
            each(record::decode_op(&mut cur)?, true);
        }
    } else {
        each(record::decode_op(&mut cur)?, false);
    }
    if !cur.is_empty() {
        return Err(PersistError::InvalidPayload {
            reason: "bytes follow the last operation of a log frame",
        });
    }
    Ok(info)
}

/// Decodes a frame body whose CRC has been checked.
pub(crate) fn decode_body(version: u32, body: &[u8]) -> Result<FrameBody> {
    let mut ops = Vec::new();
    let info = for_each_op(version, body, |op, _| ops.push(op))?;
    Ok(FrameBody {
        first_seq: info.first_seq,
        synced_len: info.synced_len,
        batch: info.batch,
        ops,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use iqdb_types::VectorId;

    #[test]
    fn v2_header_round_trips_and_detects_flips() -> Result<()> {
        let header = WalHeader {
            version: 2,
            base_seq: 1234,
            snapshot: Some(SnapshotFingerprint {
                crc32: 0xabcd,
                len: 999,
            }),
        };
        let bytes = header.encode();
        assert_eq!(bytes.len() as u64, V2_HEADER_LEN);
        assert_eq!(parse_header(&bytes)?, HeaderState::Valid(header));
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(parse_header(&flipped).is_err(), "bit {bit}");
        }
        Ok(())
    }

    #[test]
    fn short_and_zeroed_headers_are_incomplete_not_errors() -> Result<()> {
        let v1 = WalHeader {
            version: 1,
            base_seq: 1,
            snapshot: None,
        }
        .encode();
        for cut in 0..v1.len() {
            assert_eq!(
                parse_header(&v1[..cut])?,
                HeaderState::Incomplete,
                "cut {cut}"
            );
        }
        assert!(matches!(
            parse_header(&[0u8; 100]),
            Err(PersistError::BadMagic { .. })
        ));
        assert!(parse_header(b"NOTAWAL!\x01\0\0\0").is_err());
        assert!(parse_header(b"XY").is_err());
        Ok(())
    }

    #[test]
    fn frames_round_trip_in_both_versions() -> Result<()> {
        let op = Operation::Delete {
            id: VectorId::U64(5),
        };
        for version in [1, 2] {
            let mut buf = Vec::new();
            begin_frame(&mut buf, version, KIND_SINGLE, 77, 40);
            record::encode_op(&mut buf, &op)?;
            finish_frame(&mut buf)?;
            let body = &buf[FRAME_HEAD_LEN as usize..];
            let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            assert_eq!(len, body.len());
            let decoded = decode_body(version, body)?;
            assert_eq!(decoded.ops, vec![op.clone()]);
            if version == 2 {
                assert_eq!(decoded.first_seq, Some(77));
                assert_eq!(decoded.synced_len, Some(40));
            }
        }
        Ok(())
    }
}
