//! Save an index to an atomic snapshot and load it back.
//!
//! Builds a small index (the testkit's exact `VectorStore`), saves it with
//! every compression scheme this build has, loads each file, and checks that
//! the loaded index holds the same records and answers a search the same
//! way. Exits non-zero on any mismatch.
//!
//! ```sh
//! cargo run -p iqdb-persist --example save_and_load
//! cargo run -p iqdb-persist --example save_and_load --features zstd,lz4
//! ```

use std::error::Error;
use std::sync::Arc;

use iqdb_index::{Index, IndexCore};
use iqdb_persist::{Compression, PersistConfig, PersistedIndex};
use iqdb_persist_testkit::{VectorStore, generate};
use iqdb_types::{DistanceMetric, Metadata, SearchParams, Value, VectorId};

const DIM: usize = 16;

fn build_index() -> Result<VectorStore, Box<dyn Error>> {
    let mut index = VectorStore::new(DIM, DistanceMetric::Cosine, Default::default())?;
    // A record written by hand, with metadata ...
    let metadata: Metadata = [
        ("title".to_string(), Value::String("hand-made".into())),
        ("year".to_string(), Value::Int(2024)),
    ]
    .into_iter()
    .collect();
    let mut vector = vec![0.0_f32; DIM];
    vector[0] = 1.0;
    let id = VectorId::Bytes(b"doc-0".to_vec().into());
    index.insert(id, Arc::from(vector), Some(metadata))?;
    // ... and 999 deterministic sample records (U64 and byte-string ids,
    // metadata of every kind or none).
    for (id, vector, metadata) in generate::records(7, 1..1000, DIM) {
        index.insert(id, vector, metadata)?;
    }
    Ok(index)
}

fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let index = build_index()?;
    let query = generate::record(8, 0, DIM).1;
    let params = SearchParams::new(5, DistanceMetric::Cosine);
    let expected_hits = index.search(&query, &params)?;
    println!(
        "built an index of {} vectors (dim {DIM}, cosine)",
        index.len()
    );

    // Every scheme compiled into this build (zstd and LZ4 are cargo features).
    let schemes = [
        Compression::None,
        Compression::Zstd { level: 3 },
        Compression::Lz4,
    ];
    let mut index = Some(index);
    for compression in schemes
        .into_iter()
        .filter(|scheme| scheme.validate().is_ok())
    {
        let path = dir.path().join(format!("vectors-{compression:?}.iqdb"));
        let mut config = PersistConfig::new(&path);
        config.compression = compression;

        // Snapshot mode (the WAL is off): `save` writes an atomic snapshot.
        let inner = index.take().ok_or("index already moved")?;
        let db = PersistedIndex::open_with(inner, config.clone())?;
        db.save()?;
        let size = std::fs::metadata(&path)?.len();

        let loaded = PersistedIndex::<VectorStore>::load(config)?;
        if loaded.index() != db.index() {
            return Err(
                format!("{compression:?}: the loaded index differs from the saved one").into(),
            );
        }
        let hits = loaded.index().search(&query, &params)?;
        if hits != expected_hits {
            return Err(format!("{compression:?}: search results differ after loading").into());
        }
        let scheme = format!("{compression:?}");
        println!(
            "{scheme:>22}: {size:>7} bytes, snapshot v{}, {} vectors loaded, same top-5",
            loaded.recovery_report().snapshot_version,
            loaded.index().len(),
        );
        index = Some(db.index().clone());
    }
    println!("ok: every snapshot loaded back identical");
    Ok(())
}
