//! The reference index, persistable by the published iqdb-persist 1.0: a
//! newtype (1.0's trait is foreign) delegating to [`VectorStore`], writing
//! the same payload bytes under the same index type.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use iqdb_index::{Index, IndexCore, IndexStats};
use iqdb_persist_testkit::{VectorStore, VectorStoreConfig};
use iqdb_persist_v1::{PersistError as V1Error, Persistable as V1Persistable};
use iqdb_types::{DistanceMetric, Hit, Metadata, Result, SearchParams, VectorId};

/// [`VectorStore`] for iqdb-persist 1.0.
#[derive(Debug)]
pub struct V1Store(pub VectorStore);

impl IndexCore for V1Store {
    fn insert(
        &mut self,
        id: VectorId,
        vector: Arc<[f32]>,
        metadata: Option<Metadata>,
    ) -> Result<()> {
        self.0.insert(id, vector, metadata)
    }
    fn delete(&mut self, id: &VectorId) -> Result<()> {
        self.0.delete(id)
    }
    fn search(&self, query: &[f32], params: &SearchParams) -> Result<Vec<Hit>> {
        self.0.search(query, params)
    }
    fn len(&self) -> usize {
        IndexCore::len(&self.0)
    }
    fn dim(&self) -> usize {
        IndexCore::dim(&self.0)
    }
    fn metric(&self) -> DistanceMetric {
        IndexCore::metric(&self.0)
    }
    fn flush(&mut self) -> Result<()> {
        self.0.flush()
    }
    fn stats(&self) -> IndexStats {
        self.0.stats()
    }
}

impl Index for V1Store {
    type Config = VectorStoreConfig;
    fn new(dim: usize, metric: DistanceMetric, config: Self::Config) -> Result<Self> {
        VectorStore::new(dim, metric, config).map(Self)
    }
}

impl V1Persistable for V1Store {
    const INDEX_TYPE: &'static str = iqdb_persist_testkit::INDEX_TYPE;

    fn save_to(&self, writer: &mut dyn Write) -> iqdb_persist_v1::Result<()> {
        self.0.encode(writer).map_err(|source| V1Error::Io {
            path: PathBuf::new(),
            source,
        })
    }

    fn load_from(reader: &mut dyn Read) -> iqdb_persist_v1::Result<Self> {
        VectorStore::decode(reader)
            .map(Self)
            .map_err(|_| V1Error::InvalidPayload {
                reason: "reference index payload does not decode",
            })
    }
}
