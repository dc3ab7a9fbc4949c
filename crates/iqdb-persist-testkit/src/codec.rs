//! The payload format [`VectorStore`] writes through
//! [`Persistable::save_to`] and reads through [`Persistable::load_from`].
//!
//! The format is this crate's own and is frozen for the `IQTKVS01` magic:
//! golden files and interop tests depend on it. It is a bare payload: the
//! snapshot framing, checksums and compression are `iqdb-persist`'s job.
//!
//! The encoding functions do not depend on `iqdb-persist`'s error type
//! ([`VectorStore::encode`] returns [`std::io::Result`],
//! [`VectorStore::decode`] returns [`DecodeError`]), so another crate can
//! wrap them to implement a different `Persistable` trait, such as the one
//! in the published iqdb-persist 1.0.
//!
//! # Layout
//!
//! All integers are little-endian. `n` is the record count, `d` the
//! dimension. Records appear in slot order in every section.
//!
//! | bytes | field | notes |
//! | --- | --- | --- |
//! | 8 | magic | `IQTKVS01` ([`MAGIC`]) |
//! | 4 | version | u32, [`FORMAT_VERSION`] (1) |
//! | 8 | dim `d` | u64, at least 1 |
//! | 1 | metric tag | 0 Cosine, 1 DotProduct, 2 Euclidean, 3 Manhattan, 4 Hamming |
//! | 8 | count `n` | u64 |
//! | 8 | id section length `L` | u64, bytes in the next field |
//! | `L` | id section | `n` ids: kind u8 `0` then the u64; or kind u8 `1`, byte length u32, the bytes |
//! | `4·n·d` | vectors | f32, one contiguous block; record `i` is floats `i·d .. (i+1)·d`; all finite |
//! | 8 | metadata section length `M` | u64, bytes in the next field |
//! | `M` | metadata section | `n` entries, below |
//!
//! A metadata entry is a presence byte: `0` for `None`, or `1` followed by
//! the entry count (u32) and the entries in strictly increasing key order
//! (byte-wise), each a key (byte length u32, UTF-8) and a value:
//!
//! | value tag | value | payload |
//! | --- | --- | --- |
//! | 0 | `String` | byte length u32, UTF-8 |
//! | 1 | `Int` | i64 |
//! | 2 | `Float` | f64 bits as u64 (any bits, NaN included) |
//! | 3 | `Bool` | u8, 0 or 1 |
//! | 4 | `Null` | nothing |
//!
//! The encoding is canonical: a store encodes to exactly one byte string
//! for its slot order, and a decoder that accepts the bytes gets a store
//! equal to the one encoded.
//!
//! # Decoding hostile input
//!
//! [`VectorStore::decode`] never panics and never allocates on the strength
//! of a count or length field alone. The id and metadata sections and the
//! vector block are read into buffers whose capacity starts at 64 KiB and
//! doubles only when the data read so far fills it (capped at the claimed
//! size), and at most 4 MiB is zero-filled and read per step. So the memory
//! held is at most twice the bytes actually read plus 64 KiB: a 100-byte
//! input claiming 2^40 vectors of dimension 768 fails after reading its 100
//! bytes with 64 KiB allocated. Everything inside a section
//! (id and string lengths, entry counts) is checked against the section's
//! bytes, which are already in memory, before anything is sized from it.
//! Duplicate ids, non-finite vector components, unknown tags, invalid UTF-8
//! and out-of-order metadata keys are rejected as [`DecodeError::Invalid`].
//!
//! The payload is self-delimiting and the decoder reads exactly its bytes
//! and no more, so a caller can read further data after it from the same
//! stream. For the same reason it cannot tell a payload followed by garbage
//! from a payload alone ([`VectorStore::from_bytes`], which knows where the
//! input ends, does reject trailing bytes).
//!
//! # Speed
//!
//! The vector block is written with a single `write_all` of the store's
//! float buffer viewed as bytes (on little-endian targets; big-endian
//! targets convert through a bounded buffer) and read with bulk
//! `read_exact`-style calls of up to 4 MiB straight into the `Vec<f32>`, never float by
//! float. Ids and metadata are staged through a 64 KiB buffer so the stream
//! sees large writes, and are read as whole sections, so neither direction
//! relies on small reads or writes being cheap.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::mem::size_of;
use std::path::PathBuf;

use iqdb_persist::{PersistError, Persistable};
use iqdb_types::{Metadata, Value, VectorId};

use crate::store::{INDEX_TYPE, VectorStore, metric_tag, tag_metric};

/// The eight bytes a vector-store payload starts with.
pub const MAGIC: [u8; 8] = *b"IQTKVS01";

/// The payload format version written after [`MAGIC`].
pub const FORMAT_VERSION: u32 = 1;

/// Bytes of the fixed header: magic, version, dim, metric, count and the id
/// section length.
pub const HEADER_LEN: usize = 8 + 4 + 8 + 1 + 8 + 8;

/// Initial capacity, in bytes, of a buffer for a section or the vector
/// block; it doubles from there as data arrives.
const FIRST_STEP: usize = 64 << 10;

/// Most bytes initialised and read in one step.
const MAX_STEP: usize = 4 << 20;

/// Size of the staging buffer small writes go through.
const STAGING: usize = 64 << 10;

/// Smallest encoding of one id (kind byte and an empty byte string's
/// length), used to bound the id table's capacity by the section's size.
const MIN_ID_LEN: usize = 1 + 4;

const KIND_U64: u8 = 0;
const KIND_BYTES: u8 = 1;

const VALUE_STRING: u8 = 0;
const VALUE_INT: u8 = 1;
const VALUE_FLOAT: u8 = 2;
const VALUE_BOOL: u8 = 3;
const VALUE_NULL: u8 = 4;

/// Why [`VectorStore::decode`] rejected its input.
///
/// Independent of `iqdb-persist`'s error type so that other crates can map
/// it to theirs; this crate's [`Persistable`] impl maps it with the
/// `From<DecodeError> for PersistError` impl.
#[non_exhaustive]
#[derive(Debug)]
pub enum DecodeError {
    /// The input ended inside the payload. Offsets count from the first
    /// payload byte.
    Truncated {
        /// Offset the field being read needed to reach.
        needed: u64,
        /// Bytes the input actually held.
        found: u64,
    },
    /// The bytes are not a well-formed vector-store payload.
    Invalid {
        /// What was wrong.
        reason: &'static str,
    },
    /// The metric tag maps to no metric.
    InvalidMetric {
        /// The tag found.
        tag: u8,
    },
    /// The reader failed (other than by ending early).
    Io(io::Error),
}

impl DecodeError {
    fn invalid(reason: &'static str) -> Self {
        Self::Invalid { reason }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { needed, found } => write!(
                f,
                "vector-store payload truncated: needed {needed} bytes, found {found}"
            ),
            Self::Invalid { reason } => write!(f, "invalid vector-store payload: {reason}"),
            Self::InvalidMetric { tag } => write!(f, "invalid distance-metric tag {tag}"),
            Self::Io(e) => write!(f, "I/O error reading vector-store payload: {e}"),
        }
    }
}

impl std::error::Error for DecodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// `Truncated` becomes [`PersistError::TruncatedPayload`], `Invalid`
/// becomes [`PersistError::InvalidPayload`], `InvalidMetric` becomes
/// [`PersistError::InvalidMetric`], and `Io` becomes [`PersistError::Io`]
/// with an empty path (the payload reader has no file name).
impl From<DecodeError> for PersistError {
    fn from(error: DecodeError) -> Self {
        match error {
            DecodeError::Truncated { needed, found } => {
                PersistError::TruncatedPayload { needed, found }
            }
            DecodeError::Invalid { reason } => PersistError::InvalidPayload { reason },
            DecodeError::InvalidMetric { tag } => PersistError::InvalidMetric { tag },
            DecodeError::Io(source) => PersistError::Io {
                path: PathBuf::new(),
                source,
            },
        }
    }
}

impl Persistable for VectorStore {
    const INDEX_TYPE: &'static str = INDEX_TYPE;

    /// Writes the [payload](self). A metric without a tag is
    /// [`PersistError::UnsupportedMetric`]; a write failure is
    /// [`PersistError::Io`] with an empty path.
    fn save_to(&self, writer: &mut dyn Write) -> iqdb_persist::Result<()> {
        if metric_tag(self.metric()).is_none() {
            return Err(PersistError::UnsupportedMetric {
                metric: self.metric(),
            });
        }
        self.encode(writer).map_err(|source| PersistError::Io {
            path: PathBuf::new(),
            source,
        })
    }

    /// Reads a [payload](self); errors map as described on
    /// [`DecodeError`]'s `From` impl.
    fn load_from(reader: &mut dyn Read) -> iqdb_persist::Result<Self> {
        Ok(Self::decode(reader)?)
    }
}

impl VectorStore {
    /// Writes the store as a [payload](self) to `writer`.
    ///
    /// Fails with [`io::ErrorKind::InvalidInput`] when a length does not
    /// fit its field (an id, key or string longer than 4 GiB, more than
    /// 2^32 metadata entries) and with whatever `writer` returns.
    pub fn encode(&self, writer: &mut dyn Write) -> io::Result<()> {
        let tag = metric_tag(self.metric()).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "metric has no on-disk tag")
        })?;
        let mut out = Staged::new(writer);
        out.put(&MAGIC)?;
        out.put(&FORMAT_VERSION.to_le_bytes())?;
        out.put(&u64_of(self.dim()).to_le_bytes())?;
        out.put(&[tag])?;
        out.put(&u64_of(self.len()).to_le_bytes())?;

        out.put(&ids_section_len(self)?.to_le_bytes())?;
        for id in self.ids() {
            match id {
                VectorId::U64(value) => {
                    out.put(&[KIND_U64])?;
                    out.put(&value.to_le_bytes())?;
                }
                VectorId::Bytes(bytes) => {
                    out.put(&[KIND_BYTES])?;
                    out.put(&len_u32(bytes.len())?.to_le_bytes())?;
                    out.put(bytes)?;
                }
            }
        }

        out.put_floats(self.vectors())?;

        out.put(&metadata_section_len(self)?.to_le_bytes())?;
        for (_, _, metadata) in self.iter() {
            match metadata {
                None => out.put(&[0])?,
                Some(metadata) => {
                    out.put(&[1])?;
                    out.put(&len_u32(metadata.len())?.to_le_bytes())?;
                    for (key, value) in metadata.iter() {
                        out.put(&len_u32(key.len())?.to_le_bytes())?;
                        out.put(key.as_bytes())?;
                        put_value(&mut out, value)?;
                    }
                }
            }
        }
        out.finish()
    }

    /// The number of bytes [`encode`](Self::encode) writes.
    ///
    /// Fails like `encode` when a length does not fit its field.
    pub fn encoded_len(&self) -> io::Result<u64> {
        let floats = u64_of(self.vectors().len());
        Ok(u64_of(HEADER_LEN)
            + ids_section_len(self)?
            + 4 * floats
            + 8
            + metadata_section_len(self)?)
    }

    /// Encodes the store into a new `Vec`. Fails like
    /// [`encode`](Self::encode).
    pub fn to_bytes(&self) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.encode(&mut bytes)?;
        Ok(bytes)
    }

    /// Reads a store written by [`encode`](Self::encode) from `reader`,
    /// consuming exactly the payload's bytes.
    ///
    /// Never panics, and allocates in proportion to the bytes actually read
    /// (see the [module docs](self#decoding-hostile-input)). An input that
    /// ends early is [`DecodeError::Truncated`]; a reader error is
    /// [`DecodeError::Io`], except [`io::ErrorKind::UnexpectedEof`], which
    /// counts as truncation.
    pub fn decode(reader: &mut dyn Read) -> Result<VectorStore, DecodeError> {
        let mut input = Input {
            inner: reader,
            pos: 0,
        };

        let mut magic = [0u8; 8];
        input.fill(&mut magic, 8)?;
        if magic != MAGIC {
            return Err(DecodeError::invalid(
                "bad magic: not a vector-store payload",
            ));
        }
        let mut header = [0u8; HEADER_LEN - 8];
        input.fill(&mut header, u64_of(HEADER_LEN))?;
        let mut fields = Slice::new(&header);
        let version = fields.u32()?;
        let dim = fields.u64()?;
        let tag = fields.u8()?;
        let count = fields.u64()?;
        let ids_len = fields.u64()?;
        if version != FORMAT_VERSION {
            return Err(DecodeError::invalid(
                "unsupported vector-store format version",
            ));
        }
        if dim == 0 {
            return Err(DecodeError::invalid("dim is zero"));
        }
        let metric = tag_metric(tag).ok_or(DecodeError::InvalidMetric { tag })?;
        let dim = usize::try_from(dim).map_err(|_| DecodeError::invalid("dim too large"))?;
        let count = usize::try_from(count).map_err(|_| DecodeError::invalid("count too large"))?;
        let floats = count
            .checked_mul(dim)
            .filter(|floats| floats.checked_mul(4).is_some())
            .ok_or(DecodeError::invalid("count * dim too large"))?;

        let section = input.bytes(ids_len)?;
        let (ids, slots) = parse_ids(&section, count)?;
        drop(section);

        let data = input.floats(floats)?;
        if !crate::store::all_finite(&data) {
            return Err(DecodeError::invalid("non-finite vector component"));
        }

        let mut len = [0u8; 8];
        let end = input.pos + 8;
        input.fill(&mut len, end)?;
        let section = input.bytes(u64::from_le_bytes(len))?;
        let metadata = parse_metadata(&section, count)?;

        Ok(VectorStore::from_parts(
            dim, metric, ids, data, metadata, slots,
        ))
    }

    /// Decodes a store from exactly `bytes`: like [`decode`](Self::decode),
    /// and bytes left over after the payload are
    /// [`DecodeError::Invalid`].
    pub fn from_bytes(bytes: &[u8]) -> Result<VectorStore, DecodeError> {
        let mut rest = bytes;
        let store = Self::decode(&mut rest)?;
        if rest.is_empty() {
            Ok(store)
        } else {
            Err(DecodeError::invalid("trailing bytes after the payload"))
        }
    }
}

fn u64_of(n: usize) -> u64 {
    // usize is at most 64 bits on every target Rust supports.
    n as u64
}

fn len_u32(n: usize) -> io::Result<u32> {
    u32::try_from(n).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "length does not fit the payload's u32 field",
        )
    })
}

fn ids_section_len(store: &VectorStore) -> io::Result<u64> {
    let mut total = 0u64;
    for id in store.ids() {
        total += match id {
            VectorId::U64(_) => 1 + 8,
            VectorId::Bytes(bytes) => 1 + 4 + u64::from(len_u32(bytes.len())?),
        };
    }
    Ok(total)
}

fn metadata_section_len(store: &VectorStore) -> io::Result<u64> {
    let mut total = 0u64;
    for (_, _, metadata) in store.iter() {
        total += 1;
        if let Some(metadata) = metadata {
            total += 4;
            let _entries = len_u32(metadata.len())?;
            for (key, value) in metadata.iter() {
                total += 4 + u64::from(len_u32(key.len())?) + 1;
                total += match value {
                    Value::String(s) => 4 + u64::from(len_u32(s.len())?),
                    Value::Int(_) | Value::Float(_) => 8,
                    Value::Bool(_) => 1,
                    Value::Null => 0,
                };
            }
        }
    }
    Ok(total)
}

fn put_value(out: &mut Staged<'_>, value: &Value) -> io::Result<()> {
    match value {
        Value::String(s) => {
            out.put(&[VALUE_STRING])?;
            out.put(&len_u32(s.len())?.to_le_bytes())?;
            out.put(s.as_bytes())
        }
        Value::Int(i) => {
            out.put(&[VALUE_INT])?;
            out.put(&i.to_le_bytes())
        }
        Value::Float(x) => {
            out.put(&[VALUE_FLOAT])?;
            out.put(&x.to_bits().to_le_bytes())
        }
        Value::Bool(b) => out.put(&[VALUE_BOOL, u8::from(*b)]),
        Value::Null => out.put(&[VALUE_NULL]),
    }
}

/// A writer front that gathers small writes into a bounded buffer.
struct Staged<'w> {
    inner: &'w mut dyn Write,
    buf: Vec<u8>,
}

impl<'w> Staged<'w> {
    fn new(inner: &'w mut dyn Write) -> Self {
        Self {
            inner,
            buf: Vec::with_capacity(STAGING),
        }
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.buf.len() + bytes.len() > STAGING {
            self.flush_buf()?;
            if bytes.len() >= STAGING {
                return self.inner.write_all(bytes);
            }
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// Writes `floats` little-endian: one `write_all` of the buffer itself
    /// on little-endian targets, a bounded converting loop elsewhere.
    fn put_floats(&mut self, floats: &[f32]) -> io::Result<()> {
        self.flush_buf()?;
        if cfg!(target_endian = "little") {
            self.inner.write_all(bytemuck::cast_slice(floats))
        } else {
            for chunk in floats.chunks(STAGING / 4) {
                for x in chunk {
                    self.buf.extend_from_slice(&x.to_le_bytes());
                }
                self.flush_buf()?;
            }
            Ok(())
        }
    }

    fn flush_buf(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.inner.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    fn finish(mut self) -> io::Result<()> {
        self.flush_buf()
    }
}

/// A reader front that counts the bytes consumed, reports early ends as
/// [`DecodeError::Truncated`], and never trusts a reader's return value
/// enough to panic on it.
struct Input<'r> {
    inner: &'r mut dyn Read,
    pos: u64,
}

impl Input<'_> {
    /// Fills `buf` completely. `field_end` is the payload offset the field
    /// being read ends at, for the truncation report.
    fn fill(&mut self, buf: &mut [u8], field_end: u64) -> Result<(), DecodeError> {
        let mut done = 0;
        while done < buf.len() {
            match self.inner.read(&mut buf[done..]) {
                Ok(0) => {
                    return Err(DecodeError::Truncated {
                        needed: field_end,
                        found: self.pos,
                    });
                }
                Ok(n) if n <= buf.len() - done => {
                    done += n;
                    self.pos += u64_of(n);
                }
                Ok(_) => {
                    return Err(DecodeError::Io(io::Error::other(
                        "reader reported more bytes than the buffer holds",
                    )));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(DecodeError::Truncated {
                        needed: field_end,
                        found: self.pos,
                    });
                }
                Err(e) => return Err(DecodeError::Io(e)),
            }
        }
        Ok(())
    }

    /// Reads a `len`-byte section.
    fn bytes(&mut self, len: u64) -> Result<Vec<u8>, DecodeError> {
        self.block(len)
    }

    /// Reads `count` little-endian floats straight into a `Vec<f32>`.
    fn floats(&mut self, count: usize) -> Result<Vec<f32>, DecodeError> {
        let mut data: Vec<f32> = self.block(u64_of(count))?;
        if cfg!(target_endian = "big") {
            for x in &mut data {
                *x = f32::from_bits(u32::from_le(x.to_bits()));
            }
        }
        Ok(data)
    }

    /// Reads `count` plain values in bulk, growing the buffer only as data
    /// arrives: capacity starts at [`FIRST_STEP`] bytes and doubles when
    /// full (never past `count`). Each step of at most [`MAX_STEP`] bytes is
    /// read into a reused staging buffer and appended from there, so fresh
    /// memory is written once (no zero-filling before the read). A lying
    /// `count` therefore costs at most the bytes actually read, plus
    /// [`FIRST_STEP`] of capacity and one staging buffer.
    fn block<T: bytemuck::Pod>(&mut self, count: u64) -> Result<Vec<T>, DecodeError> {
        let elem = size_of::<T>();
        let field_end = self.pos.saturating_add(count.saturating_mul(u64_of(elem)));
        let total = usize::try_from(count).unwrap_or(usize::MAX);
        let mut out: Vec<T> = Vec::new();
        let mut staging: Vec<T> = vec![T::zeroed(); (MAX_STEP / elem).min(total)];
        let mut remaining = count;
        while remaining > 0 {
            let remaining_elems = usize::try_from(remaining).unwrap_or(usize::MAX);
            if out.len() == out.capacity() {
                let grow = (FIRST_STEP / elem).max(out.len()).min(remaining_elems);
                out.try_reserve_exact(grow)
                    .map_err(|_| DecodeError::invalid("payload too large for memory"))?;
            }
            let step = (out.capacity() - out.len())
                .min(staging.len())
                .min(remaining_elems);
            self.fill(bytemuck::cast_slice_mut(&mut staging[..step]), field_end)?;
            out.extend_from_slice(&staging[..step]);
            remaining -= u64_of(step);
        }
        Ok(out)
    }
}

/// A cursor over a section already in memory.
struct Slice<'a> {
    bytes: &'a [u8],
}

impl<'a> Slice<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.bytes.len() {
            return Err(DecodeError::invalid("section shorter than its entries"));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A u32 length followed by that many bytes.
    fn sized(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()?;
        let len = usize::try_from(len).map_err(|_| DecodeError::invalid("length too large"))?;
        self.take(len)
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let bytes = self.sized()?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| DecodeError::invalid("string is not UTF-8"))
    }

    fn finish(&self) -> Result<(), DecodeError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::invalid("section longer than its entries"))
        }
    }
}

type IdTable = (Vec<VectorId>, crate::store::SlotMap);

fn parse_ids(section: &[u8], count: usize) -> Result<IdTable, DecodeError> {
    let capacity = count.min(section.len() / MIN_ID_LEN);
    let mut ids = Vec::with_capacity(capacity);
    let mut slots = crate::store::SlotMap::with_capacity_and_hasher(capacity, Default::default());
    let mut cursor = Slice::new(section);
    for slot in 0..count {
        let id = match cursor.u8()? {
            KIND_U64 => VectorId::U64(cursor.u64()?),
            KIND_BYTES => VectorId::Bytes(cursor.sized()?.into()),
            _ => return Err(DecodeError::invalid("unknown id kind")),
        };
        if slots.insert(id.clone(), slot).is_some() {
            return Err(DecodeError::invalid("duplicate id"));
        }
        ids.push(id);
    }
    cursor.finish()?;
    Ok((ids, slots))
}

fn parse_metadata(section: &[u8], count: usize) -> Result<Vec<Option<Metadata>>, DecodeError> {
    // Each entry takes at least one byte.
    let mut out = Vec::with_capacity(count.min(section.len()));
    let mut cursor = Slice::new(section);
    for _ in 0..count {
        let entry = match cursor.u8()? {
            0 => None,
            1 => Some(parse_map(&mut cursor)?),
            _ => return Err(DecodeError::invalid("bad metadata presence byte")),
        };
        out.push(entry);
    }
    cursor.finish()?;
    Ok(out)
}

fn parse_map(cursor: &mut Slice<'_>) -> Result<Metadata, DecodeError> {
    let entries = cursor.u32()?;
    let mut map: BTreeMap<String, Value> = BTreeMap::new();
    for _ in 0..entries {
        let key = cursor.string()?;
        if map
            .last_key_value()
            .is_some_and(|(last, _)| last.as_bytes() >= key.as_bytes())
        {
            return Err(DecodeError::invalid(
                "metadata keys not in strictly increasing order",
            ));
        }
        let value = match cursor.u8()? {
            VALUE_STRING => Value::String(cursor.string()?),
            VALUE_INT => Value::Int(i64::from_le_bytes(cursor.array()?)),
            VALUE_FLOAT => Value::Float(f64::from_bits(cursor.u64()?)),
            VALUE_BOOL => match cursor.u8()? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                _ => return Err(DecodeError::invalid("bad bool byte")),
            },
            VALUE_NULL => Value::Null,
            _ => return Err(DecodeError::invalid("unknown metadata value tag")),
        };
        let _ = map.insert(key, value);
    }
    Ok(Metadata::from(map))
}
