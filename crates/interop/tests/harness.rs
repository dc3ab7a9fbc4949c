//! The harness's own oracle: the store comparison catches every kind of
//! difference, the workload is valid and does what its docs say, the WAL
//! frame reader rejects what is not a clean v1 log, and the 1.0 adapter is
//! the testkit's store under the same tag and bytes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use iqdb_index::{Index, IndexCore};
use iqdb_persist_interop::{
    SHAPES, Step, V1Store, difference, expected_after, v1_frames, workload,
};
use iqdb_persist_testkit::{VectorStore, generate};
use iqdb_types::{DistanceMetric, Metadata, Value, VectorId};

fn sample() -> VectorStore {
    generate::store(5, 20, 4, DistanceMetric::Euclidean)
}

/// A copy of `store` with record `id` replaced.
fn with_record(
    store: &VectorStore,
    id: &VectorId,
    vector: Arc<[f32]>,
    metadata: Option<Metadata>,
) -> VectorStore {
    let mut copy = store.clone();
    copy.delete(id).unwrap();
    copy.insert(id.clone(), vector, metadata).unwrap();
    copy
}

#[test]
fn difference_is_none_for_equal_stores_in_any_slot_order() {
    let a = sample();
    let mut b = VectorStore::new(4, DistanceMetric::Euclidean, Default::default()).unwrap();
    for (id, vector, metadata) in generate::records(5, 0..20, 4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        b.insert(id, vector, metadata).unwrap();
    }
    assert_eq!(difference(&a, &b), None);
}

#[test]
fn difference_reports_every_kind_of_change() {
    let a = sample();
    let (id, vector, metadata) = a
        .iter()
        .find(|(_, _, m)| m.is_some())
        .map(|(id, v, m)| (id.clone(), v.to_vec(), m.cloned()))
        .unwrap();

    let mut flipped = vector.clone();
    flipped[0] = f32::from_bits(flipped[0].to_bits() ^ 1);
    let b = with_record(&a, &id, Arc::from(flipped), metadata.clone());
    assert!(
        difference(&a, &b).unwrap().contains("vector"),
        "one-bit vector change"
    );

    let mut negzero = vector.clone();
    negzero[1] = if negzero[1] == 0.0 { -0.0 } else { 0.0 };
    let b = with_record(&a, &id, Arc::from(negzero), metadata.clone());
    assert!(
        difference(&a, &b).is_some(),
        "0.0 vs -0.0 or a changed value"
    );

    let changed: Metadata = metadata
        .clone()
        .unwrap()
        .iter()
        .map(|(k, v)| match k.as_str() {
            "score" => (k.clone(), Value::Float(-1.5)),
            _ => (k.clone(), v.clone()),
        })
        .collect();
    let b = with_record(&a, &id, Arc::from(vector.clone()), Some(changed));
    assert!(
        difference(&a, &b).unwrap().contains("metadata"),
        "metadata value"
    );

    let b = with_record(&a, &id, Arc::from(vector.clone()), None);
    assert!(
        difference(&a, &b).unwrap().contains("metadata"),
        "metadata dropped"
    );

    let mut b = a.clone();
    b.delete(&id).unwrap();
    assert!(
        difference(&a, &b).unwrap().contains("missing"),
        "missing record"
    );
    assert!(
        difference(&b, &a).unwrap().contains("unexpected"),
        "extra record"
    );

    let b = generate::store(5, 20, 4, DistanceMetric::Manhattan);
    assert!(difference(&a, &b).unwrap().contains("metric"));
    let b = generate::store(5, 20, 5, DistanceMetric::Euclidean);
    assert!(difference(&a, &b).unwrap().contains("dim"));
}

#[test]
#[should_panic(expected = "the context: loaded store differs")]
fn assert_same_store_panics_with_its_context() {
    let a = sample();
    let b = generate::store(6, 20, 4, DistanceMetric::Euclidean);
    iqdb_persist_interop::assert_same_store(&a, &b, "the context");
}

#[test]
fn workload_is_valid_and_inserts_deletes_and_updates() {
    let shape = SHAPES[3];
    let steps = workload(7, shape.n, 30);
    let after = expected_after(&shape, &steps); // panics on an invalid step
    let total = shape.n + 30;
    let deleted = (0..total).filter(|i| i % 3 == 0).count() as u64;
    let updated = deleted.div_ceil(2);
    assert_eq!(steps.len() as u64, 30 + deleted + updated);
    assert_eq!(after.len() as u64, total - deleted + updated);
    // An updated record carries the second stream's values.
    let (id, vector, _) = generate::record(8, 0, shape.dim);
    assert_eq!(
        after.get(&id).map(|(v, _)| v.to_vec()),
        Some(vector.to_vec())
    );
    // A deleted, not re-inserted record is gone; an untouched one is as
    // generated.
    assert!(!after.contains(&generate::id(3)));
    let (id, vector, _) = generate::record(shape.seed, 1, shape.dim);
    assert_eq!(
        after.get(&id).map(|(v, _)| v.to_vec()),
        Some(vector.to_vec())
    );
    assert!(steps.contains(&Step::Delete { i: 0 }));
}

#[test]
fn v1_frames_checks_header_crc_and_length() {
    let mut log = b"IQDBWAL\0".to_vec();
    log.extend_from_slice(&1u32.to_le_bytes());
    assert_eq!(v1_frames(&log).unwrap().len(), 0);
    for body in [
        &b"\x02\x00\x07\x00\x00\x00\x00\x00\x00\x00"[..],
        b"\x02\x00\x08\x00\x00\x00\x00\x00\x00\x00",
    ] {
        log.extend_from_slice(&u32::try_from(body.len()).unwrap().to_le_bytes());
        log.extend_from_slice(&iqdb_persist_v1::checksum::compute(body).to_le_bytes());
        log.extend_from_slice(body);
    }
    assert_eq!(v1_frames(&log).unwrap().len(), 2);

    let mut bad_crc = log.clone();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 1;
    assert!(v1_frames(&bad_crc).unwrap_err().contains("CRC"));
    assert!(
        v1_frames(&log[..log.len() - 1])
            .unwrap_err()
            .contains("cut short")
    );
    assert!(
        v1_frames(&log[..log.len() - 12])
            .unwrap_err()
            .contains("cut short")
    );
    let mut v2 = log.clone();
    v2[8] = 2;
    assert!(v1_frames(&v2).unwrap_err().contains("version 2"));
    assert!(v1_frames(&log[..11]).is_err());
}

#[test]
fn v1_adapter_is_the_store_with_the_same_tag_and_payload() {
    use iqdb_persist_v1::Persistable as _;

    assert_eq!(
        <V1Store as iqdb_persist_v1::Persistable>::INDEX_TYPE,
        <VectorStore as iqdb_persist::Persistable>::INDEX_TYPE
    );
    let store = sample();
    let adapter = V1Store::from(store.clone());
    let mut theirs = Vec::new();
    adapter.save_to(&mut theirs).unwrap();
    assert_eq!(theirs, store.to_bytes().unwrap(), "same payload bytes");
    let back = V1Store::load_from(&mut theirs.as_slice()).unwrap();
    assert_eq!(difference(&store, back.store()), None);

    let err = V1Store::load_from(&mut &theirs[..theirs.len() / 2]).unwrap_err();
    assert!(
        matches!(err, iqdb_persist_v1::PersistError::TruncatedPayload { .. }),
        "a truncated payload maps to 1.0's TruncatedPayload: {err:?}"
    );
    let fresh = V1Store::new(3, DistanceMetric::Cosine, Default::default()).unwrap();
    assert_eq!((fresh.dim(), fresh.len()), (3, 0));
}
