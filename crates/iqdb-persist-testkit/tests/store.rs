//! The store's write contract, accessors, equality, stats, and a model-based
//! property test of swap-remove consistency.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use iqdb_index::{Index, IndexCore};
use iqdb_persist_testkit::store::{metadata_bitwise_eq, vectors_bitwise_eq};
use iqdb_persist_testkit::{INDEX_TYPE, VectorStore, VectorStoreConfig, generate};
use iqdb_types::{DistanceMetric, IqdbError, Metadata, SearchParams, Value, VectorId};
use proptest::prelude::*;

fn new_store(dim: usize) -> VectorStore {
    VectorStore::new(dim, DistanceMetric::Euclidean, VectorStoreConfig::default()).unwrap()
}

fn v(values: &[f32]) -> Arc<[f32]> {
    Arc::from(values)
}

fn meta(pairs: &[(&str, Value)]) -> Metadata {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), v.clone()))
        .collect()
}

#[test]
fn new_rejects_zero_dim_and_unallocatable_capacity() {
    assert!(matches!(
        VectorStore::new(0, DistanceMetric::Cosine, VectorStoreConfig::default()),
        Err(IqdbError::InvalidConfig { .. })
    ));
    let huge = VectorStoreConfig::default().with_initial_capacity(usize::MAX / 2);
    assert!(matches!(
        VectorStore::new(4, DistanceMetric::Cosine, huge),
        Err(IqdbError::InvalidConfig { .. })
    ));
    let ok = VectorStoreConfig::default().with_initial_capacity(100);
    let store = VectorStore::new(4, DistanceMetric::Hamming, ok).unwrap();
    assert!(store.is_empty());
    assert_eq!(store.dim(), 4);
    assert_eq!(store.metric(), DistanceMetric::Hamming);
    assert!(store.stats().memory_bytes >= 100 * 4 * 4);
}

#[test]
fn insert_rejects_bad_vectors_and_duplicates_without_changing_the_store() {
    let mut store = new_store(3);
    store
        .insert(VectorId::U64(1), v(&[1.0, 2.0, 3.0]), None)
        .unwrap();
    let before = store.clone();

    assert_eq!(
        store.insert(VectorId::U64(1), v(&[4.0, 5.0, 6.0]), None),
        Err(IqdbError::Duplicate)
    );
    assert_eq!(
        store.insert(VectorId::U64(2), v(&[1.0, 2.0]), None),
        Err(IqdbError::DimensionMismatch {
            expected: 3,
            found: 2
        })
    );
    assert_eq!(
        store.insert(VectorId::U64(2), v(&[1.0, 2.0, 3.0, 4.0]), None),
        Err(IqdbError::DimensionMismatch {
            expected: 3,
            found: 4
        })
    );
    assert_eq!(
        store.insert(VectorId::U64(2), v(&[]), None),
        Err(IqdbError::InvalidVector)
    );
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        assert_eq!(
            store.insert(VectorId::U64(2), v(&[1.0, bad, 3.0]), None),
            Err(IqdbError::InvalidVector)
        );
    }
    assert_eq!(store, before);
    assert_eq!(store.len(), 1);
    assert!(!store.contains(&VectorId::U64(2)));
}

#[test]
fn delete_of_an_absent_id_is_not_found() {
    let mut store = new_store(2);
    assert_eq!(store.delete(&VectorId::U64(1)), Err(IqdbError::NotFound));
    store
        .insert(VectorId::U64(1), v(&[1.0, 1.0]), None)
        .unwrap();
    store.delete(&VectorId::U64(1)).unwrap();
    assert_eq!(store.delete(&VectorId::U64(1)), Err(IqdbError::NotFound));
    // A deleted id can be inserted again and is searchable again.
    store
        .insert(VectorId::U64(1), v(&[2.0, 2.0]), None)
        .unwrap();
    let hits = store
        .search(
            &[2.0, 2.0],
            &SearchParams::new(1, DistanceMetric::Euclidean),
        )
        .unwrap();
    assert_eq!(hits[0].id, VectorId::U64(1));
    assert_eq!(hits[0].distance, 0.0);
}

#[test]
fn deleted_records_are_never_returned() {
    let mut store = generate::store(4, 50, 4, DistanceMetric::Euclidean);
    for i in (0..50).step_by(3) {
        store.delete(&generate::id(i)).unwrap();
    }
    let hits = store
        .search(
            &[0.0; 4],
            &SearchParams::new(100, DistanceMetric::Euclidean),
        )
        .unwrap();
    assert_eq!(hits.len(), 50 - 17);
    for i in 0..50 {
        let present = hits.iter().any(|h| h.id == generate::id(i));
        assert_eq!(present, i % 3 != 0, "record {i}");
    }
}

#[test]
fn accessors_expose_every_record() {
    let mut store = new_store(2);
    let bytes_id = VectorId::Bytes(b"key".to_vec().into());
    let m = meta(&[("a", Value::Int(1))]);
    store
        .insert(VectorId::U64(7), v(&[1.0, 2.0]), None)
        .unwrap();
    store
        .insert(bytes_id.clone(), v(&[3.0, 4.0]), Some(m.clone()))
        .unwrap();

    assert_eq!(
        store.get(&VectorId::U64(7)),
        Some((&[1.0_f32, 2.0][..], None))
    );
    assert_eq!(store.get(&bytes_id), Some((&[3.0_f32, 4.0][..], Some(&m))));
    assert_eq!(store.get(&VectorId::U64(8)), None);
    assert!(store.contains(&bytes_id));
    assert!(!store.contains(&VectorId::Bytes(b"ke".to_vec().into())));
    assert_eq!(store.ids(), &[VectorId::U64(7), bytes_id.clone()]);
    assert_eq!(store.vectors(), &[1.0, 2.0, 3.0, 4.0]);
    let all: Vec<_> = store.iter().collect();
    assert_eq!(store.iter().len(), 2);
    assert_eq!(all[0], (&VectorId::U64(7), &[1.0_f32, 2.0][..], None));
    assert_eq!(all[1], (&bytes_id, &[3.0_f32, 4.0][..], Some(&m)));

    // Deleting the first record moves the last into its slot.
    store.delete(&VectorId::U64(7)).unwrap();
    assert_eq!(store.ids(), std::slice::from_ref(&bytes_id));
    assert_eq!(store.vectors(), &[3.0, 4.0]);
    assert_eq!(store.get(&bytes_id), Some((&[3.0_f32, 4.0][..], Some(&m))));
}

#[test]
fn equality_ignores_slot_order_but_not_bits_or_metadata() {
    let records = [
        (VectorId::U64(1), [1.0_f32, 0.0], None),
        (
            VectorId::Bytes(b"x".to_vec().into()),
            [0.0, 1.0],
            Some(meta(&[("f", Value::Float(f64::NAN))])),
        ),
        (VectorId::U64(3), [0.5, 0.5], Some(meta(&[]))),
    ];
    let mut forward = new_store(2);
    let mut backward = new_store(2);
    for (id, vector, m) in records.iter().cloned() {
        forward.insert(id, v(&vector), m).unwrap();
    }
    for (id, vector, m) in records.iter().rev().cloned() {
        backward.insert(id, v(&vector), m).unwrap();
    }
    assert_ne!(forward.ids(), backward.ids());
    // NaN metadata compares equal to itself (bitwise).
    assert_eq!(forward, backward);
    assert_eq!(forward, forward.clone());

    let mut signed_zero = backward.clone();
    signed_zero.delete(&VectorId::U64(1)).unwrap();
    signed_zero
        .insert(VectorId::U64(1), v(&[1.0, -0.0]), None)
        .unwrap();
    assert_ne!(forward, signed_zero, "-0.0 and 0.0 differ bitwise");

    let mut other_meta = backward.clone();
    other_meta.delete(&VectorId::U64(3)).unwrap();
    other_meta
        .insert(VectorId::U64(3), v(&[0.5, 0.5]), None)
        .unwrap();
    assert_ne!(forward, other_meta, "Some(empty) differs from None");

    let mut fewer = backward.clone();
    fewer.delete(&VectorId::U64(3)).unwrap();
    assert_ne!(forward, fewer);
    assert_ne!(fewer, forward);

    let other_metric =
        VectorStore::new(2, DistanceMetric::Cosine, VectorStoreConfig::default()).unwrap();
    assert_ne!(new_store(2), other_metric);
    assert_ne!(new_store(2), new_store(3));
    assert_eq!(new_store(2), new_store(2));
}

#[test]
fn bitwise_helpers() {
    assert!(vectors_bitwise_eq(&[1.0, f32::NAN], &[1.0, f32::NAN]));
    assert!(!vectors_bitwise_eq(&[0.0], &[-0.0]));
    assert!(!vectors_bitwise_eq(&[0.0], &[0.0, 0.0]));
    let a = meta(&[("x", Value::Float(f64::NAN)), ("y", Value::Null)]);
    assert!(metadata_bitwise_eq(&a, &a.clone()));
    let b = meta(&[("x", Value::Float(-f64::NAN)), ("y", Value::Null)]);
    assert!(!metadata_bitwise_eq(&a, &b));
    let c = meta(&[("x", Value::Float(f64::NAN))]);
    assert!(!metadata_bitwise_eq(&a, &c));
    let d = meta(&[("x", Value::Int(1)), ("y", Value::Null)]);
    assert!(!metadata_bitwise_eq(&a, &d));
}

#[test]
fn debug_is_concise() {
    let store = generate::store(1, 1000, 64, DistanceMetric::DotProduct);
    let text = format!("{store:?}");
    assert_eq!(
        text,
        "VectorStore { dim: 64, metric: DotProduct, len: 1000, .. }"
    );
}

#[test]
fn stats_report_counts_type_and_memory() {
    let mut store = new_store(16);
    let empty = store.stats();
    assert_eq!(empty.n_vectors, 0);
    assert_eq!(empty.index_type, INDEX_TYPE);
    assert_eq!(empty.disk_bytes, None);
    for (id, vector, m) in generate::records(2, 0..100, 16) {
        store.insert(id, vector, m).unwrap();
    }
    let stats = store.stats();
    assert_eq!(stats.n_vectors, 100);
    assert!(stats.memory_bytes >= 100 * 16 * 4, "{stats:?}");
    assert!(stats.memory_bytes > empty.memory_bytes);
    // Not absurd either: well under 1 KiB of overhead per record here.
    assert!(stats.memory_bytes < 100 * (16 * 4 + 1024), "{stats:?}");
    let capacity: usize = stats.extra.unwrap()["capacity"].parse().unwrap();
    assert!(capacity >= 100);
    let mut flushed = store.clone();
    flushed.flush().unwrap();
    assert_eq!(flushed, store);
}

#[test]
fn insert_batch_is_fail_fast() {
    let mut store = new_store(2);
    let items = vec![
        (VectorId::U64(1), v(&[1.0, 1.0]), None),
        (VectorId::U64(2), v(&[2.0, 2.0]), None),
        (VectorId::U64(1), v(&[3.0, 3.0]), None),
        (VectorId::U64(4), v(&[4.0, 4.0]), None),
    ];
    assert_eq!(store.insert_batch(items), Err(IqdbError::Duplicate));
    assert_eq!(store.len(), 2);
    assert_eq!(
        store.get(&VectorId::U64(1)).unwrap().0,
        &[1.0, 1.0],
        "the duplicate did not overwrite"
    );
    assert!(!store.contains(&VectorId::U64(4)));
}

#[test]
fn works_as_a_trait_object() {
    let mut boxed: Box<dyn IndexCore> = Box::new(new_store(2));
    boxed
        .insert(VectorId::U64(1), v(&[1.0, 0.0]), None)
        .unwrap();
    assert_eq!(boxed.len(), 1);
    assert_eq!(boxed.dim(), 2);
    assert_eq!(boxed.metric(), DistanceMetric::Euclidean);
    assert_eq!(boxed.stats().index_type, INDEX_TYPE);
}

// ------------------------------------------------------ model-based test

#[derive(Debug, Clone)]
enum Op {
    Insert(u8, bool, [i8; 3], bool),
    Delete(u8, bool),
}

/// A small id space (so inserts collide and deletes hit) over both kinds.
fn make_id(n: u8, bytes: bool) -> VectorId {
    if bytes {
        VectorId::Bytes(vec![n; usize::from(n % 4)].into())
    } else {
        VectorId::U64(u64::from(n))
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..24, any::<bool>(), any::<[i8; 3]>(), any::<bool>())
            .prop_map(|(n, b, v, m)| Op::Insert(n, b, v, m)),
        2 => (0u8..24, any::<bool>()).prop_map(|(n, b)| Op::Delete(n, b)),
    ]
}

type Model = HashMap<VectorId, (Vec<f32>, Option<Metadata>)>;

fn check_consistent(store: &VectorStore, model: &Model) {
    assert_eq!(store.len(), model.len());
    assert_eq!(store.ids().len(), model.len());
    assert_eq!(store.vectors().len(), model.len() * store.dim());
    for (slot, (id, vector, m)) in store.iter().enumerate() {
        let (expected_vector, expected_meta) = &model[id];
        assert_eq!(vector, expected_vector.as_slice(), "slot {slot}");
        assert_eq!(m, expected_meta.as_ref(), "slot {slot}");
        assert_eq!(&store.ids()[slot], id);
    }
    for (id, (vector, m)) in model {
        assert_eq!(store.get(id), Some((vector.as_slice(), m.as_ref())));
    }
    let hits = store
        .search(
            &[0.0, 0.0, 0.0],
            &SearchParams::new(usize::MAX, DistanceMetric::Euclidean),
        )
        .unwrap();
    assert_eq!(hits.len(), model.len());
    for hit in hits {
        assert!(model.contains_key(&hit.id));
    }
}

proptest! {
    #[test]
    fn swap_remove_matches_a_hash_map_model(ops in proptest::collection::vec(op(), 0..200)) {
        let mut store = new_store(3);
        let mut model = Model::new();
        for op in ops {
            match op {
                Op::Insert(n, bytes, values, with_meta) => {
                    let id = make_id(n, bytes);
                    let vector: Vec<f32> = values.iter().map(|&x| f32::from(x)).collect();
                    let m = with_meta.then(|| meta(&[("n", Value::Int(i64::from(n)))]));
                    let result = store.insert(id.clone(), Arc::from(vector.as_slice()), m.clone());
                    match model.entry(id) {
                        Entry::Occupied(_) => prop_assert_eq!(result, Err(IqdbError::Duplicate)),
                        Entry::Vacant(slot) => {
                            prop_assert_eq!(result, Ok(()));
                            slot.insert((vector, m));
                        }
                    }
                }
                Op::Delete(n, bytes) => {
                    let id = make_id(n, bytes);
                    let result = store.delete(&id);
                    if model.remove(&id).is_some() {
                        prop_assert_eq!(result, Ok(()));
                    } else {
                        prop_assert_eq!(result, Err(IqdbError::NotFound));
                    }
                }
            }
            check_consistent(&store, &model);
        }
    }
}
