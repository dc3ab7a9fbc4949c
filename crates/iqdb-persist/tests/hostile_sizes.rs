//! Small files whose length fields claim huge payloads must fail fast, with
//! little memory: no allocation is sized from a field the file's bytes
//! cannot back. A counting global allocator measures the peak of every load.
//!
//! One test function, so nothing else allocates while a load is measured.

use std::path::Path;

use iqdb_index::Index;
use iqdb_persist::format::{FileHeader, MAGIC, write_header};
use iqdb_persist::{Options, PersistConfig, PersistedIndex, checksum};
use iqdb_persist_testkit::{VectorStore, generate};
use iqdb_types::DistanceMetric;
use peak_alloc::PeakAlloc;

#[global_allocator]
static ALLOCATOR: PeakAlloc = PeakAlloc;

const TERABYTE: u64 = 1 << 40;
/// Most a hostile load may allocate at its peak (a few chunk buffers).
const LIMIT: usize = 40 << 20;

fn header(version: u32, crc32: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let header = FileHeader {
        magic: MAGIC,
        version,
        index_type: iqdb_persist_testkit::INDEX_TYPE.into(),
        dim: 16,
        metric: DistanceMetric::Cosine,
        n_vectors: 1 << 30,
        crc32,
    };
    write_header(&mut out, &header).unwrap_or_else(|e| panic!("{e}"));
    out
}

/// A v2 file: header + [scheme][raw_len][data], CRC over the region.
fn v2_file(scheme: u8, raw_len: u64, data: &[u8]) -> Vec<u8> {
    let mut region = vec![scheme];
    region.extend_from_slice(&raw_len.to_le_bytes());
    region.extend_from_slice(data);
    let mut file = header(2, checksum::compute(&region));
    file.extend_from_slice(&region);
    file
}

/// A v3 file with a valid header checksum whose extension claims `raw_len`
/// bytes in `chunks` chunks of up to `chunk_size`, followed by `region`.
fn v3_file(scheme: u8, chunk_size: u32, raw_len: u64, chunks: u64, region: &[u8]) -> Vec<u8> {
    let mut ext = [0u8; 64];
    ext[0..4].copy_from_slice(&64u32.to_le_bytes());
    ext[4] = scheme;
    ext[8..12].copy_from_slice(&chunk_size.to_le_bytes());
    ext[16..24].copy_from_slice(&raw_len.to_le_bytes());
    ext[24..32].copy_from_slice(&(region.len() as u64).to_le_bytes());
    ext[32..40].copy_from_slice(&chunks.to_le_bytes());
    let mut head = header(3, 0);
    head.truncate(head.len() - 4);
    let mut for_crc = head.clone();
    for_crc.extend_from_slice(&ext);
    head.extend_from_slice(&checksum::compute(&for_crc).to_le_bytes());
    head.extend_from_slice(&ext);
    head.extend_from_slice(region);
    head
}

/// A v3 chunk with a correct checksum.
fn chunk(raw_len: u32, stored: &[u8]) -> Vec<u8> {
    let mut out = raw_len.to_le_bytes().to_vec();
    out.extend_from_slice(&(stored.len() as u32).to_le_bytes());
    let crc = checksum::compute(&out.iter().chain(stored).copied().collect::<Vec<u8>>());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(stored);
    out
}

/// A real reference-index payload whose vector count is then made to lie.
fn lying_payload() -> Vec<u8> {
    let mut bytes = Vec::new();
    generate::store(1, 20, 16, DistanceMetric::Cosine)
        .encode(&mut bytes)
        .unwrap_or_else(|e| panic!("{e}"));
    // magic 8, version 4, dim 8, metric 1, then the count.
    bytes[21..29].copy_from_slice(&TERABYTE.to_le_bytes());
    bytes
}

fn load_peak(dir: &Path, name: &str, file: &[u8], wal: Option<&[u8]>) -> (bool, usize) {
    let path = dir.join(name);
    std::fs::write(&path, file).unwrap_or_else(|e| panic!("{e}"));
    let mut config = PersistConfig::new(&path);
    if let Some(log) = wal {
        config.wal_enabled = true;
        std::fs::write(config.wal_path(), log).unwrap_or_else(|e| panic!("{e}"));
    }
    let before = ALLOCATOR.current_usage();
    ALLOCATOR.reset_peak_usage();
    let result = PersistedIndex::<VectorStore>::load_with_options(
        config,
        Options::new().compression_threads(2),
    );
    let peak = ALLOCATOR.peak_usage().saturating_sub(before);
    (result.is_ok(), peak)
}

#[test]
fn tiny_files_claiming_a_terabyte_fail_fast_in_little_memory() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let garbage: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("v2 none, 1 TB length", v2_file(0, TERABYTE, &garbage)),
        ("v2 lz4, 1 TB length", v2_file(2, TERABYTE, &garbage)),
        ("v2 none, lying payload count", {
            let payload = lying_payload();
            v2_file(0, payload.len() as u64, &payload)
        }),
        (
            "v3, 1 TB in 2^30 chunks over 10 KB",
            v3_file(0, 16 << 20, TERABYTE, 1 << 30, &garbage),
        ),
        (
            "v3, one 16 MiB chunk of 10 KB",
            v3_file(0, 16 << 20, 16 << 20, 1, &chunk(16 << 20, &garbage)),
        ),
        ("v3, lying payload count", {
            let payload = lying_payload();
            v3_file(
                0,
                1 << 20,
                payload.len() as u64,
                1,
                &chunk(payload.len() as u32, &payload),
            )
        }),
        (
            "v3 lz4, a 16 MiB chunk claim over 10 KB",
            v3_file(2, 16 << 20, 16 << 20, 1, &chunk(16 << 20, &garbage)),
        ),
    ];
    if cfg!(feature = "zstd") {
        // A real zstd frame of 10 KB of zeros, claimed to decode to 1 TB.
        let frame = zstd_frame(&[0u8; 10_000]);
        cases.push(("v2 zstd, 1 TB length", v2_file(1, TERABYTE, &frame)));
        cases.push((
            "v3 zstd, 16 MiB claim",
            v3_file(1, 16 << 20, 16 << 20, 1, &chunk(16 << 20, &frame)),
        ));
    }
    for (name, file) in &cases {
        assert!(
            file.len() < 64 << 10,
            "{name}: the hostile file should be small"
        );
        let (loaded, peak) = load_peak(dir.path(), "hostile.iqdb", file, None);
        assert!(!loaded, "{name}: a lying file loaded");
        assert!(peak < LIMIT, "{name}: peak allocation {peak} bytes");
    }
    // A log frame claiming 256 MiB in a small log, beside a valid snapshot.
    let snapshot = {
        let path = dir.path().join("valid.iqdb");
        let mut config = PersistConfig::new(&path);
        config.wal_enabled = true;
        let store = VectorStore::new(16, DistanceMetric::Cosine, Default::default())
            .unwrap_or_else(|e| panic!("{e}"));
        drop(
            PersistedIndex::open_with_options(store, config.clone(), Options::compat_1_0())
                .unwrap_or_else(|e| panic!("{e}")),
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{e}"))
    };
    let mut log = b"IQDBWAL\0".to_vec();
    log.extend_from_slice(&1u32.to_le_bytes());
    log.extend_from_slice(&(256u32 << 20).to_le_bytes());
    log.extend_from_slice(&0u32.to_le_bytes());
    log.extend_from_slice(&garbage);
    let (_, peak) = load_peak(dir.path(), "wal.iqdb", &snapshot, Some(&log));
    assert!(
        peak < LIMIT,
        "256 MiB frame claim: peak allocation {peak} bytes"
    );
}

#[cfg(feature = "zstd")]
fn zstd_frame(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap_or_else(|e| panic!("{e}"))
}

#[cfg(not(feature = "zstd"))]
fn zstd_frame(_data: &[u8]) -> Vec<u8> {
    Vec::new()
}
