//! The payload codec: round trips, the documented layout, truncation,
//! hostile input, odd readers and writers, and bulk I/O.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{self, Read, Write};
use std::sync::Arc;

use iqdb_index::{Index, IndexCore};
use iqdb_persist::{PersistError, Persistable};
use iqdb_persist_testkit::codec::{FORMAT_VERSION, HEADER_LEN, MAGIC};
use iqdb_persist_testkit::{DecodeError, VectorStore, VectorStoreConfig, generate};
use iqdb_types::{DistanceMetric, Metadata, Value, VectorId};
use proptest::prelude::*;

const METRICS: [DistanceMetric; 5] = [
    DistanceMetric::Cosine,
    DistanceMetric::DotProduct,
    DistanceMetric::Euclidean,
    DistanceMetric::Manhattan,
    DistanceMetric::Hamming,
];

fn new_store(dim: usize, metric: DistanceMetric) -> VectorStore {
    VectorStore::new(dim, metric, VectorStoreConfig::default()).unwrap()
}

fn save(store: &VectorStore) -> Vec<u8> {
    let mut payload = Vec::new();
    store.save_to(&mut payload).unwrap();
    payload
}

fn load(bytes: &[u8]) -> iqdb_persist::Result<VectorStore> {
    VectorStore::load_from(&mut &bytes[..])
}

/// The fixed header, as documented.
fn header(dim: u64, tag: u8, count: u64, ids_len: u64) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&dim.to_le_bytes());
    out.push(tag);
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&ids_len.to_le_bytes());
    assert_eq!(out.len(), HEADER_LEN);
    out
}

fn invalid_reason(bytes: &[u8]) -> &'static str {
    match VectorStore::decode(&mut &bytes[..]) {
        Err(DecodeError::Invalid { reason }) => reason,
        other => panic!("expected DecodeError::Invalid, got {other:?}"),
    }
}

// ------------------------------------------------------------ round trips

#[test]
fn empty_stores_round_trip_for_every_metric() {
    for (tag, metric) in METRICS.into_iter().enumerate() {
        let store = new_store(5, metric);
        let payload = save(&store);
        // Header, empty id section, no vectors, empty metadata section.
        let mut expected = header(5, tag as u8, 0, 0);
        expected.extend_from_slice(&0u64.to_le_bytes());
        assert_eq!(payload, expected, "{metric:?}");
        let loaded = load(&payload).unwrap();
        assert_eq!(loaded, store);
        assert_eq!(loaded.metric(), metric);
        assert_eq!(loaded.dim(), 5);
    }
}

#[test]
fn layout_matches_the_documented_byte_table() {
    let mut store = new_store(2, DistanceMetric::Manhattan);
    store
        .insert(VectorId::U64(0x0102), Arc::from(&[1.0_f32, -2.5][..]), None)
        .unwrap();
    let m: Metadata = [
        ("b".to_string(), Value::Int(-3)),
        ("a".to_string(), Value::String("hé".to_string())),
        ("c".to_string(), Value::Float(0.5)),
        ("d".to_string(), Value::Bool(true)),
        ("e".to_string(), Value::Null),
    ]
    .into_iter()
    .collect();
    store
        .insert(
            VectorId::Bytes(b"xy".to_vec().into()),
            Arc::from(&[0.0_f32, 3.0][..]),
            Some(m),
        )
        .unwrap();

    let mut expected = header(2, 3, 2, (1 + 8) + (1 + 4 + 2));
    // Ids.
    expected.push(0);
    expected.extend_from_slice(&0x0102u64.to_le_bytes());
    expected.push(1);
    expected.extend_from_slice(&2u32.to_le_bytes());
    expected.extend_from_slice(b"xy");
    // Vectors.
    for x in [1.0_f32, -2.5, 0.0, 3.0] {
        expected.extend_from_slice(&x.to_le_bytes());
    }
    // Metadata.
    let mut meta = vec![0u8, 1];
    meta.extend_from_slice(&5u32.to_le_bytes());
    let key = |meta: &mut Vec<u8>, k: &str| {
        meta.extend_from_slice(&(k.len() as u32).to_le_bytes());
        meta.extend_from_slice(k.as_bytes());
    };
    key(&mut meta, "a");
    meta.push(0);
    meta.extend_from_slice(&3u32.to_le_bytes());
    meta.extend_from_slice("hé".as_bytes());
    key(&mut meta, "b");
    meta.push(1);
    meta.extend_from_slice(&(-3i64).to_le_bytes());
    key(&mut meta, "c");
    meta.push(2);
    meta.extend_from_slice(&0.5f64.to_bits().to_le_bytes());
    key(&mut meta, "d");
    meta.extend_from_slice(&[3, 1]);
    key(&mut meta, "e");
    meta.push(4);
    expected.extend_from_slice(&(meta.len() as u64).to_le_bytes());
    expected.extend_from_slice(&meta);

    let payload = save(&store);
    assert_eq!(payload, expected);
    assert_eq!(store.encoded_len().unwrap(), payload.len() as u64);
    assert_eq!(store.to_bytes().unwrap(), payload);
    assert_eq!(load(&payload).unwrap(), store);
}

fn finite_f32() -> impl Strategy<Value = f32> {
    prop::num::f32::POSITIVE
        | prop::num::f32::NEGATIVE
        | prop::num::f32::NORMAL
        | prop::num::f32::SUBNORMAL
        | prop::num::f32::ZERO
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        ".{0,8}".prop_map(Value::String),
        any::<i64>().prop_map(Value::Int),
        any::<f64>().prop_map(Value::Float),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
    ]
}

fn id() -> impl Strategy<Value = VectorId> {
    prop_oneof![
        any::<u64>().prop_map(VectorId::U64),
        (0u64..8).prop_map(VectorId::U64),
        prop::collection::vec(any::<u8>(), 0..12).prop_map(|b| VectorId::Bytes(b.into())),
    ]
}

fn metadata() -> impl Strategy<Value = Option<Metadata>> {
    prop::option::of(prop::collection::btree_map(".{0,6}", value(), 0..6).prop_map(Metadata::from))
}

fn store_strategy() -> impl Strategy<Value = VectorStore> {
    (1usize..6, 0usize..5).prop_flat_map(|(dim, metric)| {
        prop::collection::vec(
            (id(), prop::collection::vec(finite_f32(), dim), metadata()),
            0..24,
        )
        .prop_map(move |records| {
            let mut store = new_store(dim, METRICS[metric]);
            for (id, vector, m) in records {
                // Colliding ids are simply skipped.
                let _ = store.insert(id, Arc::from(vector), m);
            }
            store
        })
    })
}

proptest! {
    #[test]
    fn random_stores_round_trip_exactly(store in store_strategy()) {
        let payload = save(&store);
        prop_assert_eq!(store.encoded_len().unwrap(), payload.len() as u64);
        let loaded = load(&payload).unwrap();
        prop_assert_eq!(&loaded, &store);
        // Slot order survives, and the encoding is canonical.
        prop_assert_eq!(loaded.ids(), store.ids());
        prop_assert_eq!(save(&loaded), payload.clone());
        prop_assert_eq!(VectorStore::from_bytes(&payload).unwrap(), store);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = VectorStore::decode(&mut &bytes[..]);
        // And with a valid header in front, so the sections get parsed.
        let mut framed = header(2, 0, 3, bytes.len() as u64);
        framed.extend_from_slice(&bytes);
        let _ = VectorStore::decode(&mut &framed[..]);
    }
}

#[test]
fn mid_sized_store_round_trips_across_read_steps() {
    // 5.1 MB of vectors: more than one 4 MiB read step.
    let store = generate::store(3, 20_000, 64, DistanceMetric::Euclidean);
    let payload = save(&store);
    assert!(payload.len() > 5_000_000);
    assert_eq!(load(&payload).unwrap(), store);
}

#[test]
fn decode_consumes_exactly_the_payload() {
    let store = generate::store(8, 30, 4, DistanceMetric::Cosine);
    let mut bytes = save(&store);
    let payload_len = bytes.len();
    bytes.extend_from_slice(b"NEXT RECORD");
    let mut reader = &bytes[..];
    assert_eq!(VectorStore::decode(&mut reader).unwrap(), store);
    assert_eq!(reader, b"NEXT RECORD");
    // from_bytes knows where the input ends and rejects the extra bytes.
    assert_eq!(
        invalid_reason_from_bytes(&bytes),
        "trailing bytes after the payload"
    );
    assert_eq!(
        VectorStore::from_bytes(&bytes[..payload_len]).unwrap(),
        store
    );
}

fn invalid_reason_from_bytes(bytes: &[u8]) -> &'static str {
    match VectorStore::from_bytes(bytes) {
        Err(DecodeError::Invalid { reason }) => reason,
        other => panic!("expected DecodeError::Invalid, got {other:?}"),
    }
}

// ------------------------------------------------------------- truncation

#[test]
fn every_truncation_of_a_small_payload_is_a_truncated_payload_error() {
    let store = generate::store(21, 12, 3, DistanceMetric::DotProduct);
    let payload = save(&store);
    assert!(payload.len() > 300, "{}", payload.len());
    for cut in 0..payload.len() {
        match load(&payload[..cut]) {
            Err(PersistError::TruncatedPayload { needed, found }) => {
                assert_eq!(found, cut as u64, "cut {cut}");
                assert!(needed > found, "cut {cut}: needed {needed}");
                assert!(needed <= payload.len() as u64, "cut {cut}: needed {needed}");
            }
            other => panic!("cut {cut}: expected TruncatedPayload, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------- hostile input

/// Runs `decode` on a tiny hostile input and returns the error.
fn hostile(bytes: &[u8]) -> DecodeError {
    assert!(bytes.len() <= 200, "hostile inputs stay tiny");
    match VectorStore::decode(&mut &bytes[..]) {
        Ok(store) => panic!("hostile input decoded to {store:?}"),
        Err(e) => e,
    }
}

#[test]
fn huge_count_with_a_tiny_input_fails_fast() {
    // 2^40 records of dim 768 claimed; the id section is claimed to be huge
    // too, and the input is 100 bytes.
    let mut bytes = header(768, 0, 1 << 40, 1 << 50);
    bytes.resize(100, 0);
    assert!(matches!(
        hostile(&bytes),
        DecodeError::Truncated { found: 100, .. }
    ));

    // An honest-looking id section (two ids), then the vector block of
    // 2^40 * 768 floats is missing.
    let mut bytes = header(768, 0, 1 << 40, 18);
    for i in 0..2u64 {
        bytes.push(0);
        bytes.extend_from_slice(&i.to_le_bytes());
    }
    assert!(matches!(hostile(&bytes), DecodeError::Invalid { .. }));

    // Count and id section agree (one id), huge dim, vector block missing.
    let mut bytes = header(1 << 40, 0, 1, 9);
    bytes.push(0);
    bytes.extend_from_slice(&7u64.to_le_bytes());
    bytes.extend_from_slice(&[0; 16]);
    assert!(matches!(hostile(&bytes), DecodeError::Truncated { .. }));
}

#[test]
fn count_times_dim_overflow_is_invalid() {
    let bytes = header(u64::MAX, 0, u64::MAX, 0);
    let e = hostile(&bytes);
    assert!(
        matches!(
            e,
            DecodeError::Invalid { .. } | DecodeError::Truncated { .. }
        ),
        "{e:?}"
    );
    let bytes = header(1 << 62, 0, 4, 0);
    assert!(matches!(hostile(&bytes), DecodeError::Invalid { .. }));
}

#[test]
fn huge_lengths_inside_sections_are_invalid() {
    // A Bytes id claiming 4 GiB inside a 5-byte id section.
    let mut bytes = header(1, 0, 1, 5);
    bytes.push(1);
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(invalid_reason(&bytes), "section shorter than its entries");
    assert!(bytes.len() < 100);

    // A metadata string claiming 4 GiB, and an entry count of 2^32 - 1.
    for (entries, key_len) in [(1u32, u32::MAX), (u32::MAX, 1)] {
        let mut bytes = header(1, 0, 1, 9);
        bytes.push(0);
        bytes.extend_from_slice(&1u64.to_le_bytes());
        bytes.extend_from_slice(&1.0f32.to_le_bytes());
        let mut meta = vec![1u8];
        meta.extend_from_slice(&entries.to_le_bytes());
        meta.extend_from_slice(&key_len.to_le_bytes());
        meta.push(b'k');
        bytes.extend_from_slice(&(meta.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&meta);
        assert!(bytes.len() < 100);
        assert!(matches!(hostile(&bytes), DecodeError::Invalid { .. }));
    }

    // A metadata section claiming 2^63 bytes in a tiny input.
    let mut bytes = header(1, 0, 0, 0);
    bytes.extend_from_slice(&(1u64 << 63).to_le_bytes());
    bytes.extend_from_slice(&[0; 10]);
    assert!(matches!(hostile(&bytes), DecodeError::Truncated { .. }));
}

#[test]
fn structural_damage_is_reported_with_a_reason() {
    let good = save(&generate::store(2, 3, 2, DistanceMetric::Euclidean));
    assert_eq!(load(&good).unwrap().len(), 3);

    let mut bad_magic = good.clone();
    bad_magic[0] = b'X';
    assert_eq!(
        invalid_reason(&bad_magic),
        "bad magic: not a vector-store payload"
    );
    assert!(matches!(
        load(&bad_magic),
        Err(PersistError::InvalidPayload { .. })
    ));

    let mut bad_version = good.clone();
    bad_version[8] = 2;
    assert_eq!(
        invalid_reason(&bad_version),
        "unsupported vector-store format version"
    );

    let mut zero_dim = good.clone();
    zero_dim[12..20].copy_from_slice(&0u64.to_le_bytes());
    assert_eq!(invalid_reason(&zero_dim), "dim is zero");

    let mut bad_metric = good.clone();
    bad_metric[20] = 9;
    assert!(matches!(
        VectorStore::decode(&mut &bad_metric[..]),
        Err(DecodeError::InvalidMetric { tag: 9 })
    ));
    assert!(matches!(
        load(&bad_metric),
        Err(PersistError::InvalidMetric { tag: 9 })
    ));

    let mut bad_kind = good.clone();
    bad_kind[HEADER_LEN] = 7;
    assert_eq!(invalid_reason(&bad_kind), "unknown id kind");
}

/// A hand-built payload with the given ids (as raw entries), vectors and
/// metadata section.
fn payload(dim: u64, ids: &[Vec<u8>], vectors: &[f32], meta: &[u8]) -> Vec<u8> {
    let ids_len: usize = ids.iter().map(Vec::len).sum();
    let mut out = header(dim, 2, ids.len() as u64, ids_len as u64);
    for id in ids {
        out.extend_from_slice(id);
    }
    for x in vectors {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.extend_from_slice(&(meta.len() as u64).to_le_bytes());
    out.extend_from_slice(meta);
    out
}

fn u64_id(n: u64) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&n.to_le_bytes());
    out
}

#[test]
fn semantic_damage_is_rejected() {
    // The baseline decodes.
    let ok = payload(1, &[u64_id(1), u64_id(2)], &[1.0, 2.0], &[0, 0]);
    assert_eq!(VectorStore::decode(&mut &ok[..]).unwrap().len(), 2);

    let dup = payload(1, &[u64_id(1), u64_id(1)], &[1.0, 2.0], &[0, 0]);
    assert_eq!(invalid_reason(&dup), "duplicate id");
    assert!(matches!(
        load(&dup),
        Err(PersistError::InvalidPayload {
            reason: "duplicate id"
        })
    ));

    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let non_finite = payload(1, &[u64_id(1), u64_id(2)], &[1.0, bad], &[0, 0]);
        assert_eq!(invalid_reason(&non_finite), "non-finite vector component");
    }

    let long_ids = {
        let mut p = payload(1, &[u64_id(1), u64_id(2)], &[1.0, 2.0], &[0, 0]);
        // Claim one more id-section byte than the two entries use.
        p[HEADER_LEN - 8..HEADER_LEN].copy_from_slice(&19u64.to_le_bytes());
        p.insert(HEADER_LEN + 18, 0);
        p
    };
    assert_eq!(invalid_reason(&long_ids), "section longer than its entries");

    let presence = payload(1, &[u64_id(1)], &[1.0], &[2]);
    assert_eq!(invalid_reason(&presence), "bad metadata presence byte");

    let extra_meta = payload(1, &[u64_id(1)], &[1.0], &[0, 0]);
    assert_eq!(
        invalid_reason(&extra_meta),
        "section longer than its entries"
    );

    let entry = |key: &[u8], tag: u8, value: &[u8]| {
        let mut out = (key.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(key);
        out.push(tag);
        out.extend_from_slice(value);
        out
    };
    let map = |entries: &[Vec<u8>]| {
        let mut out = vec![1u8];
        out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        for e in entries {
            out.extend_from_slice(e);
        }
        out
    };
    let with_meta = |meta: &[u8]| payload(1, &[u64_id(1)], &[1.0], meta);

    let good = with_meta(&map(&[entry(b"a", 4, &[]), entry(b"b", 3, &[1])]));
    let decoded = VectorStore::decode(&mut &good[..]).unwrap();
    let m = decoded.get(&VectorId::U64(1)).unwrap().1.unwrap();
    assert_eq!(m.get("b"), Some(&Value::Bool(true)));

    let unsorted = with_meta(&map(&[entry(b"b", 4, &[]), entry(b"a", 4, &[])]));
    assert_eq!(
        invalid_reason(&unsorted),
        "metadata keys not in strictly increasing order"
    );
    let repeated = with_meta(&map(&[entry(b"a", 4, &[]), entry(b"a", 4, &[])]));
    assert_eq!(
        invalid_reason(&repeated),
        "metadata keys not in strictly increasing order"
    );
    let bad_key = with_meta(&map(&[entry(&[0xFF], 4, &[])]));
    assert_eq!(invalid_reason(&bad_key), "string is not UTF-8");
    let mut bad_string_value = 1u32.to_le_bytes().to_vec();
    bad_string_value.push(0xC3);
    let bad_string = with_meta(&map(&[entry(b"s", 0, &bad_string_value)]));
    assert_eq!(invalid_reason(&bad_string), "string is not UTF-8");
    let bad_bool = with_meta(&map(&[entry(b"b", 3, &[2])]));
    assert_eq!(invalid_reason(&bad_bool), "bad bool byte");
    let bad_tag = with_meta(&map(&[entry(b"t", 5, &[])]));
    assert_eq!(invalid_reason(&bad_tag), "unknown metadata value tag");
}

// -------------------------------------------------- readers and writers

/// Serves its bytes in pieces of at most `step`, counting read calls, and
/// injecting an `Interrupted` error before every other read.
struct Trickle<'a> {
    bytes: &'a [u8],
    step: usize,
    reads: usize,
    interrupt: bool,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reads += 1;
        if self.interrupt && self.reads.is_multiple_of(2) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "signal"));
        }
        let n = buf.len().min(self.step).min(self.bytes.len());
        buf[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        Ok(n)
    }
}

#[test]
fn one_byte_reads_and_interruptions_are_handled() {
    let store = generate::store(4, 40, 3, DistanceMetric::Hamming);
    let payload = save(&store);
    let mut reader = Trickle {
        bytes: &payload,
        step: 1,
        reads: 0,
        interrupt: true,
    };
    assert_eq!(VectorStore::decode(&mut reader).unwrap(), store);
    assert!(reader.bytes.is_empty());
}

#[test]
fn reads_are_bulk_not_per_float() {
    // 20k vectors of dim 64: 1.28M floats.
    let store = generate::store(5, 20_000, 64, DistanceMetric::Euclidean);
    let payload = save(&store);
    let mut reader = Trickle {
        bytes: &payload,
        step: usize::MAX,
        reads: 0,
        interrupt: false,
    };
    assert_eq!(VectorStore::decode(&mut reader).unwrap(), store);
    // Reading float by float would take over a million calls.
    assert!(reader.reads <= 32, "{} read calls", reader.reads);
}

/// Counts write calls and the largest one.
#[derive(Default)]
struct CountingWriter {
    bytes: Vec<u8>,
    writes: usize,
    largest: usize,
}

impl Write for CountingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writes += 1;
        self.largest = self.largest.max(buf.len());
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn writes_are_bulk() {
    let store = generate::store(6, 20_000, 64, DistanceMetric::Euclidean);
    let mut writer = CountingWriter::default();
    store.encode(&mut writer).unwrap();
    assert_eq!(writer.bytes, save(&store));
    // Ids and metadata go through a 64 KiB staging buffer, the vectors in
    // one piece on little-endian targets.
    let vector_bytes = 20_000 * 64 * 4;
    if cfg!(target_endian = "little") {
        assert_eq!(writer.largest, vector_bytes);
    }
    assert!(
        writer.writes <= writer.bytes.len() / (32 << 10) + 4,
        "{} write calls for {} bytes",
        writer.writes,
        writer.bytes.len()
    );
}

/// A reader that misbehaves in a chosen way after `good` bytes.
struct Faulty<'a> {
    bytes: &'a [u8],
    fault: Fault,
}

#[derive(Clone, Copy)]
enum Fault {
    Eof,
    UnexpectedEof,
    Other,
    Overreport,
}

impl Read for Faulty<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.bytes.is_empty() {
            return match self.fault {
                Fault::Eof => Ok(0),
                Fault::UnexpectedEof => Err(io::ErrorKind::UnexpectedEof.into()),
                Fault::Other => Err(io::Error::other("disk on fire")),
                Fault::Overreport => Ok(buf.len() + 1),
            };
        }
        let n = buf.len().min(self.bytes.len());
        buf[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        Ok(n)
    }
}

#[test]
fn reader_failures_map_to_the_right_errors() {
    let payload = save(&generate::store(7, 5, 2, DistanceMetric::Cosine));
    let cut = &payload[..payload.len() / 2];
    let run = |fault| VectorStore::load_from(&mut Faulty { bytes: cut, fault });

    for fault in [Fault::Eof, Fault::UnexpectedEof] {
        match run(fault) {
            Err(PersistError::TruncatedPayload { found, .. }) => {
                assert_eq!(found, cut.len() as u64);
            }
            other => panic!("expected TruncatedPayload, got {other:?}"),
        }
    }
    match run(Fault::Other) {
        Err(PersistError::Io { path, source }) => {
            assert!(path.as_os_str().is_empty());
            assert_eq!(source.to_string(), "disk on fire");
        }
        other => panic!("expected Io, got {other:?}"),
    }
    // A reader claiming more bytes than the buffer holds is an error, not a
    // panic.
    assert!(matches!(
        run(Fault::Overreport),
        Err(PersistError::Io { .. })
    ));
}

struct FailingWriter;

impl Write for FailingWriter {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(io::ErrorKind::StorageFull, "no space"))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn writer_failures_are_io_errors() {
    let store = generate::store(7, 5, 2, DistanceMetric::Cosine);
    match store.save_to(&mut FailingWriter) {
        Err(PersistError::Io { path, source }) => {
            assert!(path.as_os_str().is_empty());
            assert_eq!(source.kind(), io::ErrorKind::StorageFull);
        }
        other => panic!("expected Io, got {other:?}"),
    }
}

#[test]
fn decode_errors_display_and_convert() {
    let e = DecodeError::Truncated {
        needed: 10,
        found: 3,
    };
    assert_eq!(
        e.to_string(),
        "vector-store payload truncated: needed 10 bytes, found 3"
    );
    assert!(matches!(
        PersistError::from(e),
        PersistError::TruncatedPayload {
            needed: 10,
            found: 3
        }
    ));
    let e = DecodeError::Io(io::Error::other("x"));
    assert!(std::error::Error::source(&e).is_some());
    assert_eq!(
        <VectorStore as Persistable>::INDEX_TYPE,
        "iqdb-testkit-vector-store"
    );
}
