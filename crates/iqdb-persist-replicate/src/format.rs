//! Byte formats of the replica's objects: log segments and the manifest's
//! checksummed envelope (docs/REPLICATION.md has the tables).

use iqdb_persist::inspect::RawFrame;

use crate::error::{ReplicateError, Result};

/// Magic bytes opening a segment object.
pub const SEGMENT_MAGIC: [u8; 8] = *b"IQDBRSEG";
/// Segment format version.
pub const SEGMENT_VERSION: u32 = 1;
/// Bytes of a segment's header.
pub const SEGMENT_HEADER_LEN: usize = 64;

/// What a segment's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Sequence number of the first operation.
    pub first_seq: u64,
    /// Sequence number after the last operation.
    pub end_seq: u64,
    /// Number of frames.
    pub frames: u64,
    /// Bytes of frames after the header.
    pub body_len: u64,
    /// CRC-32 of those bytes.
    pub body_crc: u32,
}

/// Encodes a segment holding `frames` (consecutive, non-empty).
pub(crate) fn encode_segment(frames: &[RawFrame]) -> (Vec<u8>, SegmentHeader) {
    let body_len: usize = frames.iter().map(|f| f.bytes.len()).sum();
    let mut out = Vec::with_capacity(SEGMENT_HEADER_LEN + body_len);
    out.resize(SEGMENT_HEADER_LEN, 0);
    let mut crc = crc32fast::Hasher::new();
    for f in frames {
        crc.update(&f.bytes);
        out.extend_from_slice(&f.bytes);
    }
    let header = SegmentHeader {
        first_seq: frames.first().map_or(0, |f| f.first_seq),
        end_seq: frames.last().map_or(0, RawFrame::end_seq),
        frames: frames.len() as u64,
        body_len: body_len as u64,
        body_crc: crc.finalize(),
    };
    out[0..8].copy_from_slice(&SEGMENT_MAGIC);
    out[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    out[16..24].copy_from_slice(&header.first_seq.to_le_bytes());
    out[24..32].copy_from_slice(&header.end_seq.to_le_bytes());
    out[32..40].copy_from_slice(&header.frames.to_le_bytes());
    out[40..48].copy_from_slice(&header.body_len.to_le_bytes());
    out[48..52].copy_from_slice(&header.body_crc.to_le_bytes());
    let hcrc = crc32fast::hash(&out[..60]);
    out[60..64].copy_from_slice(&hcrc.to_le_bytes());
    (out, header)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// Parses and verifies a segment's header.
pub(crate) fn decode_segment_header(key: &str, bytes: &[u8]) -> Result<SegmentHeader> {
    let bad = |reason: &str| ReplicateError::corrupt(key, reason);
    if bytes.len() < SEGMENT_HEADER_LEN {
        return Err(bad("shorter than a segment header"));
    }
    if bytes[0..8] != SEGMENT_MAGIC {
        return Err(bad("not a segment (bad magic)"));
    }
    if crc32fast::hash(&bytes[..60]) != u32_at(bytes, 60) {
        return Err(bad("segment header checksum mismatch"));
    }
    let version = u32_at(bytes, 8);
    if version != SEGMENT_VERSION {
        return Err(bad(&format!("unsupported segment version {version}")));
    }
    Ok(SegmentHeader {
        first_seq: u64_at(bytes, 16),
        end_seq: u64_at(bytes, 24),
        frames: u64_at(bytes, 32),
        body_len: u64_at(bytes, 40),
        body_crc: u32_at(bytes, 48),
    })
}

/// Verifies a whole segment object and splits it into frames: the header,
/// the body's length and checksum, every frame's checksum and numbering.
pub(crate) fn decode_segment(key: &str, bytes: &[u8]) -> Result<(SegmentHeader, Vec<RawFrame>)> {
    let header = decode_segment_header(key, bytes)?;
    let bad = |reason: String| ReplicateError::corrupt(key, reason);
    let body = &bytes[SEGMENT_HEADER_LEN..];
    if body.len() as u64 != header.body_len {
        return Err(bad(format!(
            "holds {} bytes of frames, its header says {}",
            body.len(),
            header.body_len
        )));
    }
    let crc = crc32fast::hash(body);
    if crc != header.body_crc {
        return Err(bad(format!(
            "frames checksum mismatch (stored {:08x}, computed {crc:08x})",
            header.body_crc
        )));
    }
    let mut frames = Vec::new();
    let mut at = 0usize;
    let mut next = header.first_seq;
    while at < body.len() {
        if body.len() - at < 8 {
            return Err(bad("ends inside a frame head".into()));
        }
        let len = u32_at(body, at) as usize;
        let end = at
            .checked_add(8 + len)
            .filter(|&e| e <= body.len())
            .ok_or_else(|| bad("ends inside a frame".into()))?;
        let frame = RawFrame::from_bytes(body[at..end].to_vec())
            .map_err(|e| bad(format!("frame at byte {at}: {e}")))?;
        if frame.first_seq != next {
            return Err(bad(format!(
                "frame at byte {at} starts at sequence {}, expected {next}",
                frame.first_seq
            )));
        }
        next = frame.end_seq();
        frames.push(frame);
        at = end;
    }
    if frames.len() as u64 != header.frames || next != header.end_seq {
        return Err(bad(format!(
            "holds {} frames ending before sequence {next}; its header says {} frames ending before {}",
            frames.len(),
            header.frames,
            header.end_seq
        )));
    }
    Ok((header, frames))
}

/// The first line of a manifest object.
const MANIFEST_TAG: &str = "iqdb-persist-replica-manifest";

/// Wraps a manifest's JSON in its envelope: one line
/// `iqdb-persist-replica-manifest 1 <crc32 hex> <len>` and the JSON.
pub(crate) fn seal_manifest(json: &[u8]) -> Vec<u8> {
    let crc = crc32fast::hash(json);
    let mut out = format!("{MANIFEST_TAG} 1 {crc:08x} {}\n", json.len()).into_bytes();
    out.extend_from_slice(json);
    out
}

/// Checks a manifest's envelope and returns its JSON.
pub(crate) fn open_manifest<'a>(key: &str, bytes: &'a [u8]) -> Result<&'a [u8]> {
    let bad = |reason: &str| ReplicateError::corrupt(key, reason);
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .filter(|&p| p <= 200)
        .ok_or_else(|| bad("no manifest header line"))?;
    let line = std::str::from_utf8(&bytes[..nl]).map_err(|_| bad("manifest header is not text"))?;
    let fields: Vec<&str> = line.split(' ').collect();
    if fields.len() != 4 || fields[0] != MANIFEST_TAG {
        return Err(bad("not a replica manifest"));
    }
    if fields[1] != "1" {
        return Err(bad(&format!("unsupported manifest version {}", fields[1])));
    }
    let crc = u32::from_str_radix(fields[2], 16).map_err(|_| bad("bad manifest checksum field"))?;
    let len: usize = fields[3]
        .parse()
        .map_err(|_| bad("bad manifest length field"))?;
    let json = &bytes[nl + 1..];
    if json.len() != len {
        return Err(bad("manifest length mismatch (truncated or extended)"));
    }
    if crc32fast::hash(json) != crc {
        return Err(bad("manifest checksum mismatch"));
    }
    Ok(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_envelope_round_trips_and_catches_damage() {
        let sealed = seal_manifest(br#"{"a":1}"#);
        assert_eq!(open_manifest("m", &sealed).ok(), Some(&br#"{"a":1}"#[..]));
        for i in 0..sealed.len() {
            let mut d = sealed.clone();
            d[i] ^= 0x10;
            assert!(open_manifest("m", &d).is_err(), "flip at {i}");
        }
        assert!(open_manifest("m", &sealed[..sealed.len() - 1]).is_err());
    }

    #[test]
    fn empty_segment_header_is_checked() {
        let (bytes, header) = encode_segment(&[]);
        assert_eq!(header.frames, 0);
        assert!(decode_segment("s", &bytes).is_ok());
        let mut d = bytes.clone();
        d[20] ^= 1;
        assert!(decode_segment("s", &d).is_err());
    }
}
