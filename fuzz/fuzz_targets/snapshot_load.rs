//! Any bytes as a snapshot file: loading (as the reference index, in every
//! recovery mode) and full verification must return Ok or a typed error,
//! never panic, hang or allocate beyond what the input can back.
#![no_main]

use std::path::Path;
use std::sync::Arc;

use iqdb_persist::{Options, PersistConfig, PersistedIndex, inspect};
use iqdb_persist_testkit::VectorStore;
use iqdb_persist_testkit::simfs::SimFs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let fs = SimFs::new();
    let path = Path::new("/db/fuzz.iqdb");
    fs.put_durable(path, data);
    let options = Options::new()
        .file_system(Arc::new(fs.clone()))
        .compression_threads(2);
    let _ = PersistedIndex::<VectorStore>::load_with_options(PersistConfig::new(path), options);
    let _ = inspect::snapshot_info(&fs, path, true);
});
