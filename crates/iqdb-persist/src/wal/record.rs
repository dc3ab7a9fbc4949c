//! Encoding of logged operations (shared by WAL v1 and v2).
//!
//! ```text
//! insert:    1, vector_id, vec_len u32, vec_len × f32, has_meta u8,
//!            [n u32, n × (key_len u32, key UTF-8, value)]
//! delete:    2, vector_id
//! vector_id: 0, u64            (U64)
//!            1, len u64, bytes (Bytes)
//! value:     0, len u32, UTF-8 (String) | 1, i64 (Int) | 2, f64 (Float)
//!            | 3, u8 (Bool) | 4 (Null)
//! ```
//!
//! Decoding never allocates more than the bytes at hand can back: every
//! count is checked against the remaining body before anything is reserved.

use std::sync::Arc;

use iqdb_types::{Metadata, Value, VectorId};

use crate::error::{PersistError, Result};

/// One logged write.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    /// Insert `vector` under `id`, with optional metadata.
    Insert {
        /// The vector's id.
        id: VectorId,
        /// The vector.
        vector: Arc<[f32]>,
        /// Its metadata.
        metadata: Option<Metadata>,
    },
    /// Delete the vector under `id`.
    Delete {
        /// The id to delete.
        id: VectorId,
    },
}

impl Operation {
    /// Applies the operation to `index` (an insert or a delete, with the
    /// index's own rules).
    pub fn apply_to<I: iqdb_index::IndexCore + ?Sized>(
        self,
        index: &mut I,
    ) -> iqdb_types::Result<()> {
        match self {
            Self::Insert {
                id,
                vector,
                metadata,
            } => index.insert(id, vector, metadata),
            Self::Delete { id } => index.delete(&id),
        }
    }

    /// The id the operation is about.
    #[must_use]
    pub fn id(&self) -> &VectorId {
        match self {
            Self::Insert { id, .. } | Self::Delete { id } => id,
        }
    }
}

pub(crate) const OP_INSERT: u8 = 1;
pub(crate) const OP_DELETE: u8 = 2;

/// Appends the encoding of an insert to `out`.
pub(crate) fn encode_insert(
    out: &mut Vec<u8>,
    id: &VectorId,
    vector: &[f32],
    metadata: Option<&Metadata>,
) -> Result<()> {
    out.push(OP_INSERT);
    encode_id(out, id);
    let n = u32::try_from(vector.len()).map_err(|_| PersistError::InvalidPayload {
        reason: "vector has more than 2^32 components",
    })?;
    out.extend_from_slice(&n.to_le_bytes());
    out.reserve(vector.len() * 4);
    for x in vector {
        out.extend_from_slice(&x.to_le_bytes());
    }
    match metadata {
        None => out.push(0),
        Some(meta) => {
            out.push(1);
            let n = u32::try_from(meta.len()).map_err(|_| PersistError::InvalidPayload {
                reason: "metadata has more than 2^32 entries",
            })?;
            out.extend_from_slice(&n.to_le_bytes());
            for (key, value) in meta.iter() {
                encode_str(out, key)?;
                encode_value(out, value)?;
            }
        }
    }
    Ok(())
}

/// Appends the encoding of a delete to `out`.
pub(crate) fn encode_delete(out: &mut Vec<u8>, id: &VectorId) {
    out.push(OP_DELETE);
    encode_id(out, id);
}

/// Appends the encoding of `op` to `out`.
pub(crate) fn encode_op(out: &mut Vec<u8>, op: &Operation) -> Result<()> {
    match op {
        Operation::Insert {
            id,
            vector,
            metadata,
        } => encode_insert(out, id, vector, metadata.as_ref()),
        Operation::Delete { id } => {
            encode_delete(out, id);
            Ok(())
        }
    }
}

fn encode_id(out: &mut Vec<u8>, id: &VectorId) {
    match id {
        VectorId::U64(n) => {
            out.push(0);
            out.extend_from_slice(&n.to_le_bytes());
        }
        VectorId::Bytes(bytes) => {
            out.push(1);
            out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            out.extend_from_slice(bytes);
        }
    }
}

fn encode_str(out: &mut Vec<u8>, s: &str) -> Result<()> {
    let n = u32::try_from(s.len()).map_err(|_| PersistError::InvalidPayload {
        reason: "metadata string is longer than 4 GiB",
    })?;
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn encode_value(out: &mut Vec<u8>, value: &Value) -> Result<()> {
    match value {
        Value::String(s) => {
            out.push(0);
            encode_str(out, s)?;
        }
        Value::Int(i) => {
            out.push(1);
            out.extend_from_slice(&i.to_le_bytes());
        }
        Value::Float(f) => {
            out.push(2);
            out.extend_from_slice(&f.to_le_bytes());
        }
        Value::Bool(b) => {
            out.push(3);
            out.push(u8::from(*b));
        }
        Value::Null => out.push(4),
    }
    Ok(())
}

/// A cursor over a record body.
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

fn bad(reason: &'static str) -> PersistError {
    PersistError::InvalidPayload { reason }
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(bad("record ends early"));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }

    fn string(&mut self) -> Result<String> {
        let n = self.u32()? as usize;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| bad("metadata string is not UTF-8"))
    }
}

/// Decodes one operation at the cursor.
pub(crate) fn decode_op(cur: &mut Cursor<'_>) -> Result<Operation> {
    match cur.u8()? {
        OP_INSERT => {
            let id = decode_id(cur)?;
            let n = cur.u32()? as usize;
            let bytes = cur.take(
                n.checked_mul(4)
                    .ok_or_else(|| bad("vector length overflows"))?,
            )?;
            let vector: Arc<[f32]> = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let metadata = match cur.u8()? {
                0 => None,
                1 => Some(decode_metadata(cur)?),
                _ => return Err(bad("metadata presence flag is not 0 or 1")),
            };
            Ok(Operation::Insert {
                id,
                vector,
                metadata,
            })
        }
        OP_DELETE => Ok(Operation::Delete {
            id: decode_id(cur)?,
        }),
        _ => Err(bad("unknown operation tag")),
    }
}

fn decode_id(cur: &mut Cursor<'_>) -> Result<VectorId> {
    match cur.u8()? {
        0 => Ok(VectorId::U64(cur.u64()?)),
        1 => {
            let n = cur.u64()?;
            let n = usize::try_from(n).map_err(|_| bad("id length does not fit in memory"))?;
            if n == 0 {
                return Err(bad("empty byte id"));
            }
            Ok(VectorId::Bytes(cur.take(n)?.into()))
        }
        _ => Err(bad("unknown vector id tag")),
    }
}

fn decode_metadata(cur: &mut Cursor<'_>) -> Result<Metadata> {
    let n = cur.u32()? as usize;
    // Each entry takes at least 5 bytes (key length and value tag).
    if n > cur.remaining() / 5 {
        return Err(bad("metadata entry count exceeds the record"));
    }
    // Keys were written in order, so building the map directly is cheap.
    let mut entries = std::collections::BTreeMap::new();
    for _ in 0..n {
        let key = cur.string()?;
        let value = match cur.u8()? {
            0 => Value::String(cur.string()?),
            1 => Value::Int(cur.u64()? as i64),
            2 => Value::Float(f64::from_bits(cur.u64()?)),
            3 => match cur.u8()? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                _ => return Err(bad("bool value is not 0 or 1")),
            },
            4 => Value::Null,
            _ => return Err(bad("unknown metadata value tag")),
        };
        entries.insert(key, value);
    }
    Ok(Metadata::from(entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_ops() -> Vec<Operation> {
        let meta: Metadata = [
            ("s".to_owned(), Value::String("hé".into())),
            ("i".to_owned(), Value::Int(-7)),
            ("f".to_owned(), Value::Float(0.25)),
            ("b".to_owned(), Value::Bool(true)),
            ("n".to_owned(), Value::Null),
        ]
        .into_iter()
        .collect();
        vec![
            Operation::Insert {
                id: VectorId::U64(7),
                vector: Arc::from(vec![1.0f32, -2.5, 3.25]),
                metadata: Some(meta),
            },
            Operation::Insert {
                id: VectorId::Bytes(vec![1, 2, 3].into()),
                vector: Arc::from(vec![0.0f32; 5]),
                metadata: None,
            },
            Operation::Delete {
                id: VectorId::Bytes(vec![9].into()),
            },
        ]
    }

    #[test]
    fn operations_round_trip() -> Result<()> {
        for op in sample_ops() {
            let mut buf = Vec::new();
            encode_op(&mut buf, &op)?;
            let mut cur = Cursor::new(&buf);
            assert_eq!(decode_op(&mut cur)?, op);
            assert!(cur.is_empty());
        }
        Ok(())
    }

    #[test]
    fn every_truncation_fails_cleanly() -> Result<()> {
        for op in sample_ops() {
            let mut buf = Vec::new();
            encode_op(&mut buf, &op)?;
            for cut in 0..buf.len() {
                assert!(
                    decode_op(&mut Cursor::new(&buf[..cut])).is_err(),
                    "cut {cut}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn huge_counts_fail_without_allocating() {
        // An insert claiming 2^32-1 components in a tiny body.
        let mut buf = vec![OP_INSERT, 0];
        buf.extend_from_slice(&1u64.to_le_bytes());
        buf.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_op(&mut Cursor::new(&buf)).is_err());
        // Metadata claiming 2^32-1 entries.
        let mut buf = vec![OP_INSERT, 0];
        buf.extend_from_slice(&1u64.to_le_bytes());
        buf.extend_from_slice(&0u32.to_le_bytes());
        buf.push(1);
        buf.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_op(&mut Cursor::new(&buf)).is_err());
        // A byte id claiming 2^63 bytes.
        let mut buf = vec![OP_DELETE, 1];
        buf.extend_from_slice(&(1u64 << 63).to_le_bytes());
        assert!(decode_op(&mut Cursor::new(&buf)).is_err());
    }
}
