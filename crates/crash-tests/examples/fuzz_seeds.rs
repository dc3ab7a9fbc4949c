//! Writes seed inputs for the fuzz targets in `fuzz/`: valid snapshots of
//! every format and scheme, logs of both formats (beside the same small
//! database the `wal_replay` target builds), and reference-index payloads.
//!
//! Usage: `cargo run -p iqdb-persist-crash-tests --example fuzz_seeds -- fuzz/corpus`

use std::path::{Path, PathBuf};
use std::sync::Arc;

use iqdb_persist::{
    Compression, Operation, Options, PersistConfig, PersistedIndex, SnapshotFormat,
};
use iqdb_persist_testkit::generate;
use iqdb_persist_testkit::simfs::SimFs;
use iqdb_types::DistanceMetric;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(name), bytes)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus".into()),
    );
    // Snapshots.
    for format in [SnapshotFormat::V2, SnapshotFormat::V3] {
        for (scheme, name) in [
            (Compression::None, "none"),
            (Compression::Zstd { level: 3 }, "zstd"),
            (Compression::Lz4, "lz4"),
        ] {
            let fs = SimFs::new();
            let mut config = PersistConfig::new("/db/seed.iqdb");
            config.compression = scheme;
            let options = Options::new()
                .file_system(Arc::new(fs.clone()))
                .snapshot_format(format)
                .chunk_size(4096);
            let store = generate::store(3, 40, 5, DistanceMetric::Euclidean);
            PersistedIndex::open_with_options(store, config.clone(), options)?.save()?;
            let bytes = fs.read_live(&config.path).unwrap_or_default();
            write(
                &root.join("snapshot_load"),
                &format!("{format:?}-{name}"),
                &bytes,
            )?;
        }
    }
    // Logs beside the wal_replay target's database.
    for (options, name) in [(Options::new(), "v2"), (Options::compat_1_0(), "v1")] {
        let fs = SimFs::new();
        let mut config = PersistConfig::new("/db/fuzz.iqdb");
        config.wal_enabled = true;
        let store = generate::store(1, 4, 3, DistanceMetric::Cosine);
        let mut db = PersistedIndex::open_with_options(
            store,
            config.clone(),
            options.file_system(Arc::new(fs.clone())),
        )?;
        for (id, vector, metadata) in generate::records(2, 100..104, 3) {
            db.insert(id, vector, metadata)?;
        }
        db.delete(&generate::id(0))?;
        let batch = generate::records(2, 200..203, 3)
            .map(|(id, vector, metadata)| Operation::Insert {
                id,
                vector,
                metadata,
            })
            .collect();
        db.apply(batch)?;
        drop(db);
        let bytes = fs.read_live(&config.wal_path()).unwrap_or_default();
        write(&root.join("wal_replay"), &format!("log-{name}"), &bytes)?;
    }
    // Payloads.
    for (n, dim) in [(0, 1), (3, 4), (20, 16)] {
        let mut bytes = Vec::new();
        generate::store(5, n, dim, DistanceMetric::DotProduct).encode(&mut bytes)?;
        write(
            &root.join("payload_decode"),
            &format!("store-{n}x{dim}"),
            &bytes,
        )?;
    }
    println!("fuzz seeds written under {}", root.display());
    Ok(())
}
