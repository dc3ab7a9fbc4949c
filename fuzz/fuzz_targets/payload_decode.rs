//! Any bytes as the reference index's payload: decoding returns Ok or an
//! error, never panics; what decodes re-encodes to an equal store.
#![no_main]

use iqdb_persist_testkit::VectorStore;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(store) = VectorStore::decode(&mut &data[..]) {
        let mut bytes = Vec::new();
        assert!(store.encode(&mut bytes).is_ok());
        let again = VectorStore::decode(&mut bytes.as_slice());
        assert!(again.is_ok_and(|a| a == store), "re-encoded store differs");
    }
});
