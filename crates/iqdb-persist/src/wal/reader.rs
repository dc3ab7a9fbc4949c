//! Streaming log reader, and the classification of damage it finds.
//!
//! Frames are read sequentially through a bounded buffer; one frame body at
//! a time is held (at most the frame cap, and never more than the bytes
//! left in the file). When a frame fails its checks, [`classify`] decides
//! whether the damage is what a crash leaves (a *torn* tail, safe to
//! truncate) or real *corruption* (reported, never silently dropped):
//!
//! * a crash can only leave the last, unsynced writes incomplete: a frame
//!   cut short by the end of the file, or sectors of it (512 bytes,
//!   aligned) still zero because they never reached the disk, or a
//!   zero-filled tail;
//! * a length field that is wrong while the stored checksum matches the rest
//!   of the file, or a frame that one flipped bit would make valid, is
//!   corruption (checked before the signs of a torn write: a frame of
//!   zero-padded vectors holds zero sectors of its own);
//! * when valid frames follow the bad one, it is corruption if a later v2
//!   frame saw the bad one already synced (each v2 frame records the synced
//!   length of the log when it was written), or if the bad frame shows no
//!   sign of a torn write; only a frame with those signs, followed by frames
//!   that never saw it synced, is a torn (in-flight) write.

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{PersistError, Result};
use crate::storage::{FileHandle, FileReader, FileSystem, read_exact_at};
use crate::wal::format::{
    self, FRAME_HEAD_LEN, FrameBody, HeaderState, MAX_FRAME_BODY, V2_BODY_PREFIX, WalHeader,
};

/// The sector size below which a crash does not split a write.
const SECTOR: u64 = 512;
/// A zeroed piece of a sector shorter than this is not taken as a lost
/// sector (short zero runs occur naturally in ids and floats).
const MIN_ZERO_PIECE: u64 = 16;
/// How far past a damaged frame to look for valid frames.
const SCAN_WINDOW: u64 = 8 << 20;
/// Most bytes checksummed while looking for valid frames.
const SCAN_CRC_BUDGET: u64 = 256 << 20;

/// What kind of damage was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DamageKind {
    /// What a crash leaves: the last, unsynced writes incomplete.
    Torn,
    /// Damage a crash cannot explain.
    Corrupt,
}

/// A damaged frame and what it means.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Offset of the damaged frame.
    pub offset: u64,
    /// Torn or corrupt.
    pub kind: DamageKind,
    /// What is wrong with the frame (for example "frame checksum mismatch").
    pub reason: &'static str,
    /// Why it was judged torn or corrupt.
    pub verdict: &'static str,
    /// Valid frames found after the damaged one (lost if the log is cut).
    pub valid_frames_after: u64,
}

impl Damage {
    /// Damage at `offset` that holds a log's first bytes short of a header.
    pub(crate) fn incomplete_header(len: u64) -> Option<Self> {
        (len > 0).then_some(Self {
            offset: 0,
            kind: DamageKind::Torn,
            reason: "log ends inside its header",
            verdict: "what a crash while creating the log leaves",
            valid_frames_after: 0,
        })
    }

    /// The error that reports this damage in the log at `path`.
    pub(crate) fn to_error(&self, path: &Path) -> PersistError {
        PersistError::CorruptFrame {
            reason: self.reason,
            verdict: self.verdict,
            torn: self.kind == DamageKind::Torn,
            valid_frames_after: self.valid_frames_after,
        }
        .in_file(path, self.offset)
    }
}

/// One intact frame.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Frame {
    pub offset: u64,
    /// Head plus body.
    pub len: u64,
    pub body: FrameBody,
}

/// The next thing in the log.
#[derive(Debug)]
pub(crate) enum Next {
    Frame(Frame),
    /// The log ends cleanly here.
    End,
    /// The log is damaged from here on.
    Damaged(Damage),
}

/// A frame whose bytes are checked but whose operations are not decoded.
#[derive(Debug, Clone)]
pub(crate) struct CheckedFrame {
    pub offset: u64,
    /// Head plus body.
    pub len: u64,
    /// Where the body is in the caller's buffer.
    pub body: std::ops::Range<usize>,
}

/// The next thing in the log, checked but not decoded.
#[derive(Debug)]
pub(crate) enum Checked {
    Frame(CheckedFrame),
    End,
    Damaged(Damage),
}

/// An open log.
#[derive(Debug)]
pub(crate) enum Opened {
    /// No log file.
    Missing,
    /// A log too short for its header, or all zero: it holds no operations.
    Incomplete { len: u64 },
    /// A log with a valid header (boxed: the reader is large).
    Log(Box<WalReader>),
}

/// Reads frames from a log file.
pub(crate) struct WalReader {
    file: Arc<dyn FileHandle>,
    path: PathBuf,
    pub(crate) file_len: u64,
    pub(crate) header: WalHeader,
    reader: FileReader,
    pos: u64,
    body: Vec<u8>,
    pub(crate) next_seq: u64,
    /// v2: the synced length the last frame read records (the header's
    /// length before any frame): what its writer knew durable.
    pub(crate) last_synced_len: u64,
    /// Where the last frame read starts (the header's length before any).
    pub(crate) last_frame_offset: u64,
}

impl std::fmt::Debug for WalReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalReader")
            .field("path", &self.path)
            .field("file_len", &self.file_len)
            .field("header", &self.header)
            .field("pos", &self.pos)
            .finish()
    }
}

/// Opens the log at `path` and parses its header.
pub(crate) fn open(fs: &dyn FileSystem, path: &Path, write: bool) -> Result<Opened> {
    let opened = if write {
        fs.open_write(path)
    } else {
        fs.open_read(path)
    };
    let file = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Opened::Missing),
        Err(e) => return Err(PersistError::io(path, e)),
    };
    let file_len = file.len().map_err(|e| PersistError::io(path, e))?;
    let mut first = vec![0u8; file_len.min(format::V2_HEADER_LEN) as usize];
    read_exact_at(file.as_ref(), &mut first, 0).map_err(|e| PersistError::io(path, e))?;
    let header = match format::parse_header(&first) {
        Ok(HeaderState::Valid(h)) => h,
        Ok(HeaderState::Incomplete) => return Ok(Opened::Incomplete { len: file_len }),
        Err(PersistError::BadMagic { .. }) if all_zero(file.as_ref(), 0, file_len)? => {
            return Ok(Opened::Incomplete { len: file_len });
        }
        Err(e) => return Err(e.in_file(path, 0)),
    };
    let start = header.len();
    Ok(Opened::Log(Box::new(WalReader {
        reader: FileReader::new(file.clone(), start, file_len, 1 << 20),
        file,
        path: path.to_path_buf(),
        file_len,
        header,
        pos: start,
        body: Vec::new(),
        next_seq: header.base_seq,
        last_synced_len: start,
        last_frame_offset: start,
    })))
}

impl WalReader {
    /// The open file (for appending after the last valid frame).
    pub(crate) fn file(&self) -> &Arc<dyn FileHandle> {
        &self.file
    }

    /// Moves to the frame at `offset` (a frame boundary a previous read
    /// returned) without reading the frames before it, taking the sequence
    /// number from that frame's own header (v2). Returns false, and stays
    /// put, when that cannot be done (v1 logs, or no readable frame start
    /// there): the caller then reads from where it is.
    pub(crate) fn skip_to(&mut self, offset: u64) -> Result<bool> {
        if self.header.version < 2 || offset <= self.pos || offset > self.file_len {
            return Ok(false);
        }
        let mut prefix = [0u8; FRAME_HEAD_LEN as usize + 9];
        if offset + prefix.len() as u64 > self.file_len {
            return Ok(false);
        }
        read_exact_at(self.file.as_ref(), &mut prefix, offset)
            .map_err(|e| PersistError::io(&self.path, e))?;
        let kind = prefix[FRAME_HEAD_LEN as usize];
        if !format::is_frame_kind(kind) {
            return Ok(false);
        }
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&prefix[FRAME_HEAD_LEN as usize + 1..]);
        self.next_seq = u64::from_le_bytes(seq);
        self.pos = offset;
        self.reader = FileReader::new(self.file.clone(), offset, self.file_len, 1 << 20);
        Ok(true)
    }

    /// The log file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Offset just past the last frame returned.
    pub(crate) fn position(&self) -> u64 {
        self.pos
    }

    /// Reads the next frame.
    pub(crate) fn next_frame(&mut self) -> Result<Next> {
        let mut body = std::mem::take(&mut self.body);
        body.clear();
        let next = self.next_checked(&mut body);
        let result = match next {
            Ok(Checked::Frame(frame)) => {
                match format::decode_body(self.header.version, &body[frame.body.clone()]) {
                    Ok(decoded) => Ok(Next::Frame(Frame {
                        offset: frame.offset,
                        len: frame.len,
                        body: decoded,
                    })),
                    Err(e) => Err(e.in_file(&self.path, frame.offset)),
                }
            }
            Ok(Checked::End) => Ok(Next::End),
            Ok(Checked::Damaged(damage)) => Ok(Next::Damaged(damage)),
            Err(e) => Err(e),
        };
        self.body = body;
        result
    }

    /// Reads the next frame and checks everything but its operations (its
    /// length, checksum and sequence number), appending its body to `out`.
    /// Decoding the body (allocation-heavy) is left to the caller, with
    /// [`format::decode_body`]; a body that then fails to decode is
    /// corruption at [`CheckedFrame::offset`].
    pub(crate) fn next_checked(&mut self, out: &mut Vec<u8>) -> Result<Checked> {
        let at = self.pos;
        if at == self.file_len {
            return Ok(Checked::End);
        }
        let left = self.file_len - at;
        if left < FRAME_HEAD_LEN {
            return self.damaged(at, None, "log ends inside a frame head");
        }
        let mut head = [0u8; FRAME_HEAD_LEN as usize];
        self.reader
            .read_exact(&mut head)
            .map_err(|e| PersistError::io(&self.path, e))?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let min_body = if self.header.version >= 2 {
            V2_BODY_PREFIX as u32 + 1
        } else {
            1
        };
        if len < min_body || len > MAX_FRAME_BODY {
            return self.damaged(at, Some((len, crc)), "frame length is out of range");
        }
        if u64::from(len) > left - FRAME_HEAD_LEN {
            return self.damaged(at, Some((len, crc)), "log ends inside a frame");
        }
        let start = out.len();
        self.read_body(out, len as usize)?;
        let body = &out[start..];
        if crc32fast::hash(body) != crc {
            out.truncate(start);
            return self.damaged(at, Some((len, crc)), "frame checksum mismatch");
        }
        let sequence = match format::sequence_of(self.header.version, body) {
            Ok(found) => found,
            Err(e) => return Err(e.in_file(&self.path, at)),
        };
        if let Some(first) = sequence.first_seq
            && first != self.next_seq
        {
            return Err(PersistError::InvalidPayload {
                reason: "log frame is out of sequence",
            }
            .in_file(&self.path, at));
        }
        self.next_seq += sequence.ops;
        if let Some(synced) = sequence.synced_len {
            self.last_synced_len = synced;
        }
        self.last_frame_offset = at;
        let frame_len = FRAME_HEAD_LEN + u64::from(len);
        self.pos = at + frame_len;
        Ok(Checked::Frame(CheckedFrame {
            offset: at,
            len: frame_len,
            body: start..out.len(),
        }))
    }

    /// Appends the next `len` bytes to `out`, straight from the read buffer
    /// (no zero-filling first).
    fn read_body(&mut self, out: &mut Vec<u8>, mut len: usize) -> Result<()> {
        out.reserve(len);
        while len > 0 {
            let available = self
                .reader
                .fill_buf()
                .map_err(|e| PersistError::io(&self.path, e))?;
            if available.is_empty() {
                return Err(PersistError::io(
                    &self.path,
                    std::io::ErrorKind::UnexpectedEof.into(),
                ));
            }
            let n = available.len().min(len);
            out.extend_from_slice(&available[..n]);
            self.reader.consume(n);
            len -= n;
        }
        Ok(())
    }

    fn damaged(
        &mut self,
        at: u64,
        head: Option<(u32, u32)>,
        reason: &'static str,
    ) -> Result<Checked> {
        let damage = classify(
            self.file.as_ref(),
            self.header.version,
            self.next_seq,
            self.file_len,
            at,
            head,
            reason,
        )
        .map_err(|e| PersistError::io(&self.path, e))?;
        // Leave the reader at the damage, so position() is the valid prefix.
        self.pos = at;
        Ok(Checked::Damaged(damage))
    }
}

/// Whether bytes `[from, to)` of `file` are all zero.
fn all_zero(file: &dyn FileHandle, from: u64, to: u64) -> Result<bool> {
    all_zero_io(file, from, to).map_err(|e| PersistError::io(Path::new(""), e))
}

fn all_zero_io(file: &dyn FileHandle, from: u64, to: u64) -> std::io::Result<bool> {
    let mut buf = vec![0u8; (to - from).min(1 << 20) as usize];
    let mut at = from;
    while at < to {
        let n = ((to - at) as usize).min(buf.len());
        read_exact_at(file, &mut buf[..n], at)?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

/// Whether some 512-byte-aligned sector piece of `[from, to)` is all zero
/// and long enough to mean a lost sector (or ends the file). A piece too
/// short for that on its own (a frame's last few bytes at the start of a
/// sector) counts when the whole sector it lies in is zero: a lost sector
/// that held the end of one frame and the start of the next.
fn has_zeroed_sector(
    file: &dyn FileHandle,
    from: u64,
    to: u64,
    file_len: u64,
) -> std::io::Result<bool> {
    let mut start = from;
    while start < to {
        let sector_start = start / SECTOR * SECTOR;
        let sector_end = (sector_start + SECTOR).min(file_len);
        let end = sector_end.min(to);
        let piece = end - start;
        let (check_from, check_to) = if piece >= MIN_ZERO_PIECE || end == file_len {
            (start, end)
        } else {
            (sector_start, sector_end)
        };
        if all_zero_io(file, check_from, check_to)? {
            return Ok(true);
        }
        start = end;
    }
    Ok(false)
}

/// Whether the frame head at `at` straddles a sector boundary with every
/// head byte before the boundary zero.
fn head_start_is_zero(file: &dyn FileHandle, at: u64, file_len: u64) -> std::io::Result<bool> {
    let boundary = (at / SECTOR + 1) * SECTOR;
    let before = boundary - at;
    if before >= FRAME_HEAD_LEN || boundary > file_len {
        return Ok(false);
    }
    let mut bytes = [0u8; FRAME_HEAD_LEN as usize];
    read_exact_at(file, &mut bytes[..before as usize], at)?;
    Ok(bytes[..before as usize].iter().all(|&b| b == 0))
}

/// Decides whether the bad frame at `at` is a torn tail or corruption (see
/// the module docs and docs/FORMAT.md).
fn classify(
    file: &dyn FileHandle,
    version: u32,
    next_seq: u64,
    file_len: u64,
    at: u64,
    head: Option<(u32, u32)>,
    reason: &'static str,
) -> std::io::Result<Damage> {
    let damage = |kind, verdict, valid_frames_after| Damage {
        offset: at,
        kind,
        reason,
        verdict,
        valid_frames_after,
    };
    if all_zero_io(file, at, file_len)? {
        return Ok(damage(
            DamageKind::Torn,
            "zero-filled tail, as a crash leaves",
            0,
        ));
    }
    let body_start = at + FRAME_HEAD_LEN;
    // A head straddling a sector boundary whose bytes before the boundary
    // are zero: that sector never got written (this also explains a length
    // field that looks altered).
    let head_torn = head_start_is_zero(file, at, file_len)?;
    if let (Some((len, crc)), false) = (head, head_torn) {
        // The checksum of the rest of the file, and a length field one bit
        // away from the rest's length: the bytes are all there, a bit of the
        // length flipped. (A torn write can zero bytes of the length too, but
        // not flip exactly one of its bits.)
        let rest = file_len.saturating_sub(body_start);
        let one_bit_off = (u64::from(len) ^ rest).count_ones() == 1;
        if rest > 0 && one_bit_off && rest <= u64::from(MAX_FRAME_BODY) {
            let mut bytes = vec![0u8; rest as usize];
            read_exact_at(file, &mut bytes, body_start)?;
            if crc32fast::hash(&bytes) == crc {
                return Ok(damage(
                    DamageKind::Corrupt,
                    "frame length field is damaged",
                    0,
                ));
            }
        }
    }
    let plausible_len = head
        .map(|(len, _)| u64::from(len))
        .filter(|&len| len > 0 && len <= u64::from(MAX_FRAME_BODY));
    let cut_short = match plausible_len {
        Some(len) => body_start + len > file_len,
        None => head.is_none(),
    };
    let frame_end = plausible_len.map_or(file_len, |len| (body_start + len).min(file_len));
    let zero_head = head == Some((0, 0));
    let zeroed = zero_head || head_torn || has_zeroed_sector(file, at, frame_end, file_len)?;
    let (after, max_synced) = scan_valid_after(file, version, next_seq, file_len, at)?;
    // A frame "cut short" by the end of the file while valid frames follow
    // inside its claimed extent has a wrong length, not a torn tail.
    let torn_signs = zeroed || (cut_short && after == 0);
    // One flipped bit that makes the frame valid is the signature of bit
    // rot, and it is checked before the signs of a torn write: a frame of
    // zero-padded or sparse vectors holds whole zero sectors of its own,
    // which look like a lost sector. Only a fix that sets a bit inside a
    // sector that is all zero now (a lost sector whose one set bit was that
    // bit: a delete of id 1, say) is left to the signs of a crash.
    let rot = match single_bit_fix(file, at, head, file_len)? {
        Some(bit) => !fix_lies_in_lost_sector(file, bit, file_len)?,
        None => false,
    };
    let (kind, verdict) = if after > 0 {
        if version >= 2 && max_synced > at {
            (
                DamageKind::Corrupt,
                "a later frame saw this one already synced",
            )
        } else if rot {
            (
                DamageKind::Corrupt,
                "one flipped bit would make it valid: bit rot, not a torn write",
            )
        } else if torn_signs {
            (
                DamageKind::Torn,
                "a write torn by a crash, with unsynced frames after it",
            )
        } else {
            (
                DamageKind::Corrupt,
                "valid frames follow it and it shows no sign of a torn write",
            )
        }
    } else if rot {
        (
            DamageKind::Corrupt,
            "one flipped bit would make it valid: bit rot, not a torn write",
        )
    } else if torn_signs {
        (
            DamageKind::Torn,
            "a write torn by a crash at the end of the log",
        )
    } else {
        (
            DamageKind::Torn,
            "damage at the end of the log, as a crash leaves",
        )
    };
    Ok(damage(kind, verdict, after))
}

/// The CRC-32 polynomial, reflected.
const POLY: u32 = 0xEDB8_8320;

/// The bit of the file (as byte offset × 8 + bit, least significant first)
/// whose flip makes the frame at `at` valid (in its length field, checksum
/// field or body), if one does: the signature of bit rot, which a torn
/// write has only when the lost bytes held that one bit and nothing else.
fn single_bit_fix(
    file: &dyn FileHandle,
    at: u64,
    head: Option<(u32, u32)>,
    file_len: u64,
) -> std::io::Result<Option<u64>> {
    let Some((len, crc)) = head else {
        return Ok(None);
    };
    let body_start = at + FRAME_HEAD_LEN;
    let fits =
        |len: u32| len > 0 && len <= MAX_FRAME_BODY && body_start + u64::from(len) <= file_len;
    let mut body = Vec::new();
    if fits(len) {
        body.resize(len as usize, 0);
        read_exact_at(file, &mut body, body_start)?;
        let syndrome = crc32fast::hash(&body) ^ crc;
        if syndrome.count_ones() == 1 {
            // The stored checksum is one bit off.
            return Ok(Some((at + 4) * 8 + u64::from(syndrome.trailing_zeros())));
        }
        if let Some(p) = bit_with_syndrome(syndrome, body.len()) {
            return Ok(Some(body_start * 8 + p));
        }
    }
    for bit in 0..32u32 {
        let other = len ^ (1 << bit);
        if fits(other) {
            body.resize(other as usize, 0);
            read_exact_at(file, &mut body, body_start)?;
            if crc32fast::hash(&body) == crc {
                return Ok(Some(at * 8 + u64::from(bit)));
            }
        }
    }
    Ok(None)
}

/// Whether the one-bit fix at file bit `bit` is also what a lost sector
/// explains: the fix sets a bit (a lost write reads back zeros, and bit rot
/// that cleared a bit looks the same only here) inside an aligned sector
/// that is all zero now. Such a frame cannot be told from a torn write; the
/// signs of a crash decide (see docs/FORMAT.md).
fn fix_lies_in_lost_sector(
    file: &dyn FileHandle,
    bit: u64,
    file_len: u64,
) -> std::io::Result<bool> {
    let byte = bit / 8;
    let mut value = [0u8; 1];
    read_exact_at(file, &mut value, byte)?;
    if value[0] & (1 << (bit % 8)) != 0 {
        return Ok(false);
    }
    let sector = byte / SECTOR * SECTOR;
    all_zero_io(file, sector, (sector + SECTOR).min(file_len))
}

/// The bit position (in CRC processing order: byte × 8 + bit, least
/// significant first) whose flip changes the CRC-32 of an `n`-byte message
/// by `syndrome`, if one does. CRC-32 is affine, so flipping bit `p` changes
/// the checksum by the register that bit alone leaves after the rest of the
/// message: `POLY` shifted through the remaining bit steps.
fn bit_with_syndrome(syndrome: u32, n: usize) -> Option<u64> {
    let bits = n as u64 * 8;
    let mut delta = POLY;
    for p in (0..bits).rev() {
        if delta == syndrome {
            return Some(p);
        }
        delta = (delta >> 1) ^ if delta & 1 == 1 { POLY } else { 0 };
    }
    None
}

/// Looks for valid frames after the damaged one at `at`. Returns how many
/// consecutive valid frames follow the first one found, and the largest
/// `synced_len` they record (v2).
fn scan_valid_after(
    file: &dyn FileHandle,
    version: u32,
    next_seq: u64,
    file_len: u64,
    at: u64,
) -> std::io::Result<(u64, u64)> {
    let window_end = (at + SCAN_WINDOW).min(file_len);
    if window_end <= at + 1 {
        return Ok((0, 0));
    }
    let mut window = vec![0u8; (window_end - at) as usize];
    read_exact_at(file, &mut window, at)?;
    let mut budget = SCAN_CRC_BUDGET;
    let mut body = Vec::new();
    for offset in 1..window.len() as u64 {
        let candidate = at + offset;
        if let Some(first) = check_frame(
            file,
            version,
            next_seq,
            file_len,
            candidate,
            &window,
            at,
            &mut body,
            &mut budget,
        )? {
            // Walk the valid frames from here.
            let mut count = 1u64;
            let mut max_synced = first.0;
            let mut pos = candidate + first.1;
            while pos < file_len {
                let mut head = [0u8; FRAME_HEAD_LEN as usize];
                if pos + FRAME_HEAD_LEN > file_len {
                    break;
                }
                read_exact_at(file, &mut head, pos)?;
                match read_valid_frame(file, version, file_len, pos, &head, &mut body)? {
                    Some((synced, len)) => {
                        count += 1;
                        max_synced = max_synced.max(synced);
                        pos += len;
                    }
                    None => break,
                }
            }
            return Ok((count, max_synced));
        }
        if budget == 0 {
            break;
        }
    }
    Ok((0, 0))
}

/// If a valid frame starts at `candidate`, its `synced_len` and length.
#[allow(clippy::too_many_arguments)]
fn check_frame(
    file: &dyn FileHandle,
    version: u32,
    next_seq: u64,
    file_len: u64,
    candidate: u64,
    window: &[u8],
    window_start: u64,
    body: &mut Vec<u8>,
    budget: &mut u64,
) -> std::io::Result<Option<(u64, u64)>> {
    let rel = (candidate - window_start) as usize;
    if candidate + FRAME_HEAD_LEN > file_len || rel + FRAME_HEAD_LEN as usize > window.len() {
        return Ok(None);
    }
    let head: [u8; 8] = window[rel..rel + 8].try_into().unwrap_or([0; 8]);
    let len = u64::from(u32::from_le_bytes([head[0], head[1], head[2], head[3]]));
    if len == 0 || len > u64::from(MAX_FRAME_BODY) || candidate + FRAME_HEAD_LEN + len > file_len {
        return Ok(None);
    }
    // Cheap filters before checksumming: the first body bytes must look like
    // a frame of this version.
    let peek_at = rel + FRAME_HEAD_LEN as usize;
    if let Some(&kind) = window.get(peek_at) {
        if version >= 2 {
            if !format::is_frame_kind(kind) || len < V2_BODY_PREFIX as u64 + 1 {
                return Ok(None);
            }
            if let Some(seq_bytes) = window.get(peek_at + 1..peek_at + 9) {
                let mut a = [0u8; 8];
                a.copy_from_slice(seq_bytes);
                let seq = u64::from_le_bytes(a);
                if seq < next_seq || seq > next_seq + file_len {
                    return Ok(None);
                }
            }
        } else if !matches!(kind, 1 | 2) {
            return Ok(None);
        }
    }
    if *budget < len {
        *budget = 0;
        return Ok(None);
    }
    *budget -= len;
    read_valid_frame(file, version, file_len, candidate, &head, body)
}

/// Reads and checks the frame at `pos` whose head is `head`.
fn read_valid_frame(
    file: &dyn FileHandle,
    version: u32,
    file_len: u64,
    pos: u64,
    head: &[u8; 8],
    body: &mut Vec<u8>,
) -> std::io::Result<Option<(u64, u64)>> {
    let len = u64::from(u32::from_le_bytes([head[0], head[1], head[2], head[3]]));
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len == 0 || len > u64::from(MAX_FRAME_BODY) || pos + FRAME_HEAD_LEN + len > file_len {
        return Ok(None);
    }
    body.clear();
    body.resize(len as usize, 0);
    read_exact_at(file, body, pos + FRAME_HEAD_LEN)?;
    if crc32fast::hash(body) != crc {
        return Ok(None);
    }
    match format::decode_body(version, body) {
        Ok(decoded) => Ok(Some((
            decoded.synced_len.unwrap_or(0),
            FRAME_HEAD_LEN + len,
        ))),
        Err(_) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syndrome_locates_every_single_bit_flip() {
        let message: Vec<u8> = (0..300u32).map(|i| (i * 37 % 251) as u8).collect();
        let good = crc32fast::hash(&message);
        for p in 0..message.len() as u64 * 8 {
            let mut flipped = message.clone();
            flipped[(p / 8) as usize] ^= 1 << (p % 8);
            let syndrome = crc32fast::hash(&flipped) ^ good;
            assert_eq!(bit_with_syndrome(syndrome, message.len()), Some(p));
        }
        // A torn message (a zeroed sector) is not a single flip.
        let mut torn = message.clone();
        torn[100..200].fill(0);
        assert_eq!(
            bit_with_syndrome(crc32fast::hash(&torn) ^ good, message.len()),
            None
        );
    }
}
