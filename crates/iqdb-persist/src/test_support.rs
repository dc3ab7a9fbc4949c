//! A small strict index for the crate's own unit tests (the full reference
//! index lives in `iqdb-persist-testkit`, which depends on this crate).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;

use iqdb_index::{Index, IndexCore, IndexStats};
use iqdb_types::{DistanceMetric, Hit, IqdbError, Metadata, SearchParams, VectorId};

use crate::wal::record::{self, Cursor, Operation};
use crate::{PersistError, Persistable, Result};

/// One stored vector.
pub(crate) type Entry = (VectorId, Arc<[f32]>, Option<Metadata>);

/// Keyed by the id's encoding so ordering is total.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MiniIndex {
    pub dim: usize,
    pub metric: DistanceMetric,
    pub entries: BTreeMap<Vec<u8>, Entry>,
}

fn key(id: &VectorId) -> Vec<u8> {
    let mut out = Vec::new();
    record::encode_delete(&mut out, id);
    out
}

impl IndexCore for MiniIndex {
    fn insert(
        &mut self,
        id: VectorId,
        vector: Arc<[f32]>,
        metadata: Option<Metadata>,
    ) -> iqdb_types::Result<()> {
        if vector.len() != self.dim {
            return Err(IqdbError::DimensionMismatch {
                expected: self.dim,
                found: vector.len(),
            });
        }
        let k = key(&id);
        if self.entries.contains_key(&k) {
            return Err(IqdbError::Duplicate);
        }
        self.entries.insert(k, (id, vector, metadata));
        Ok(())
    }

    fn delete(&mut self, id: &VectorId) -> iqdb_types::Result<()> {
        self.entries
            .remove(&key(id))
            .map(drop)
            .ok_or(IqdbError::NotFound)
    }

    fn search(&self, _query: &[f32], _params: &SearchParams) -> iqdb_types::Result<Vec<Hit>> {
        Ok(Vec::new())
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn metric(&self) -> DistanceMetric {
        self.metric
    }

    fn flush(&mut self) -> iqdb_types::Result<()> {
        Ok(())
    }

    fn stats(&self) -> IndexStats {
        IndexStats {
            n_vectors: self.entries.len(),
            index_type: "mini",
            ..IndexStats::default()
        }
    }
}

impl Index for MiniIndex {
    type Config = ();

    fn new(dim: usize, metric: DistanceMetric, _config: ()) -> iqdb_types::Result<Self> {
        if dim == 0 {
            return Err(IqdbError::InvalidConfig {
                reason: "dim must be > 0",
            });
        }
        Ok(Self {
            dim,
            metric,
            entries: BTreeMap::new(),
        })
    }
}

impl Persistable for MiniIndex {
    const INDEX_TYPE: &'static str = "mini";

    fn save_to(&self, writer: &mut dyn Write) -> Result<()> {
        let io = |e| PersistError::Io {
            path: Default::default(),
            source: e,
        };
        writer
            .write_all(&(self.dim as u64).to_le_bytes())
            .map_err(io)?;
        writer
            .write_all(&[crate::format::metric_to_tag(self.metric)?])
            .map_err(io)?;
        writer
            .write_all(&(self.entries.len() as u64).to_le_bytes())
            .map_err(io)?;
        let mut buf = Vec::new();
        for (id, vector, meta) in self.entries.values() {
            buf.clear();
            record::encode_insert(&mut buf, id, vector, meta.as_ref())?;
            writer
                .write_all(&(buf.len() as u32).to_le_bytes())
                .map_err(io)?;
            // Write in small pieces, like real indexes do.
            for piece in buf.chunks(7) {
                writer.write_all(piece).map_err(io)?;
            }
        }
        Ok(())
    }

    fn load_from(reader: &mut dyn Read) -> Result<Self> {
        let io = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                PersistError::TruncatedPayload {
                    needed: 1,
                    found: 0,
                }
            } else {
                PersistError::Io {
                    path: Default::default(),
                    source: e,
                }
            }
        };
        let mut b8 = [0u8; 8];
        reader.read_exact(&mut b8).map_err(io)?;
        let dim = u64::from_le_bytes(b8) as usize;
        let mut tag = [0u8; 1];
        reader.read_exact(&mut tag).map_err(io)?;
        let metric = crate::format::tag_to_metric(tag[0])?;
        reader.read_exact(&mut b8).map_err(io)?;
        let n = u64::from_le_bytes(b8);
        let mut index = Self::new(dim, metric, ()).map_err(PersistError::from)?;
        let mut buf = Vec::new();
        for _ in 0..n {
            let mut b4 = [0u8; 4];
            reader.read_exact(&mut b4).map_err(io)?;
            let len = u32::from_le_bytes(b4) as u64;
            buf.clear();
            reader.take(len).read_to_end(&mut buf).map_err(io)?;
            if buf.len() as u64 != len {
                return Err(PersistError::TruncatedPayload {
                    needed: len,
                    found: buf.len() as u64,
                });
            }
            match record::decode_op(&mut Cursor::new(&buf))? {
                Operation::Insert {
                    id,
                    vector,
                    metadata,
                } => index.insert(id, vector, metadata)?,
                Operation::Delete { .. } => {
                    return Err(PersistError::InvalidPayload {
                        reason: "delete in a snapshot",
                    });
                }
            }
        }
        Ok(index)
    }
}

/// A deterministic vector for id `i`.
pub(crate) fn vector(i: u64, dim: usize) -> Arc<[f32]> {
    (0..dim).map(|j| (i as f32) * 0.5 + j as f32).collect()
}

/// A store of `n` vectors.
pub(crate) fn mini(n: u64, dim: usize) -> MiniIndex {
    let mut index =
        MiniIndex::new(dim, DistanceMetric::Euclidean, ()).unwrap_or_else(|_| unreachable!());
    for i in 0..n {
        let meta = (i % 3 == 0).then(|| {
            [("i".to_owned(), iqdb_types::Value::Int(i as i64))]
                .into_iter()
                .collect()
        });
        let _ = index.insert(VectorId::U64(i), vector(i, dim), meta);
    }
    index
}
