//! Search correctness: every metric against a naive computation, ordering,
//! tie-breaks, filters, and search-time validation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cmp::Ordering;
use std::sync::Arc;

use iqdb_index::{Index, IndexCore};
use iqdb_persist_testkit::generate::{self, SplitMix64};
use iqdb_persist_testkit::store::{MAX_FILTER_DEPTH, id_order};
use iqdb_persist_testkit::{VectorStore, VectorStoreConfig};
use iqdb_types::{DistanceMetric, Filter, Hit, IqdbError, Metadata, SearchParams, Value, VectorId};

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

fn vec_of(values: &[f32]) -> Arc<[f32]> {
    Arc::from(values)
}

fn meta(pairs: &[(&str, Value)]) -> Metadata {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), v.clone()))
        .collect()
}

/// The textbook definition of each distance, computed sequentially in f64.
fn naive_distance(metric: DistanceMetric, q: &[f32], v: &[f32]) -> f64 {
    let pairs = q.iter().zip(v).map(|(a, b)| (f64::from(*a), f64::from(*b)));
    match metric {
        DistanceMetric::Cosine => {
            let dot: f64 = pairs.clone().map(|(a, b)| a * b).sum();
            let nq: f64 = q.iter().map(|a| f64::from(*a).powi(2)).sum::<f64>().sqrt();
            let nv: f64 = v.iter().map(|b| f64::from(*b).powi(2)).sum::<f64>().sqrt();
            if nq * nv == 0.0 {
                1.0
            } else {
                1.0 - dot / (nq * nv)
            }
        }
        DistanceMetric::DotProduct => -pairs.map(|(a, b)| a * b).sum::<f64>(),
        DistanceMetric::Euclidean => pairs.map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt(),
        DistanceMetric::Manhattan => pairs.map(|(a, b)| (a - b).abs()).sum(),
        DistanceMetric::Hamming => q
            .iter()
            .zip(v)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count() as f64,
        _ => unreachable!(),
    }
}

/// Naive exact search: distance of every record, sorted by (distance, id).
fn naive_search(store: &VectorStore, q: &[f32], k: usize) -> Vec<(VectorId, f64)> {
    let mut all: Vec<(VectorId, f64)> = store
        .iter()
        .map(|(id, v, _)| (id.clone(), naive_distance(store.metric(), q, v)))
        .collect();
    all.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| id_order(&a.0, &b.0)));
    all.truncate(k);
    all
}

fn assert_matches_naive(store: &VectorStore, q: &[f32], k: usize) {
    let hits = store
        .search(q, &SearchParams::new(k, store.metric()))
        .unwrap();
    let expected = naive_search(store, q, k);
    assert_eq!(hits.len(), expected.len());
    for (rank, (hit, (id, distance))) in hits.iter().zip(&expected).enumerate() {
        assert_eq!(&hit.id, id, "metric {:?}, rank {rank}", store.metric());
        let tolerance = 1e-5 * distance.abs().max(1.0);
        assert!(
            (f64::from(hit.distance) - distance).abs() <= tolerance,
            "metric {:?}, rank {rank}: got {}, expected {distance}",
            store.metric(),
            hit.distance
        );
        assert_eq!(hit.metadata.as_ref(), store.get(id).unwrap().1);
    }
}

#[test]
fn every_metric_matches_naive_exact_search() {
    for metric in METRICS {
        for dim in [1, 3, 8, 37] {
            let store = generate::store(11, 300, dim, metric);
            let mut rng = SplitMix64::new(dim as u64);
            for _ in 0..5 {
                let q: Vec<f32> = (0..dim).map(|_| rng.next_f32()).collect();
                assert_matches_naive(&store, &q, 10);
                assert_matches_naive(&store, &q, 300);
            }
            // A stored vector is at distance 0 from itself under the
            // geometric metrics, and at cosine distance ~0.
            let (id, v, _) = generate::record(11, 17, dim);
            let hits = store.search(&v, &SearchParams::new(300, metric)).unwrap();
            let own = hits.iter().find(|h| h.id == id).unwrap();
            match metric {
                DistanceMetric::Cosine => assert!(own.distance.abs() < 1e-6),
                DistanceMetric::DotProduct => {}
                _ => {
                    assert_eq!(own.distance, 0.0);
                    assert_eq!(hits[0].distance, 0.0);
                }
            }
        }
    }
}

#[test]
fn hamming_counts_bitwise_differences() {
    let mut store = new_store(4, DistanceMetric::Hamming);
    store
        .insert(VectorId::U64(1), vec_of(&[1.0, 0.0, 1.0, 0.0]), None)
        .unwrap();
    store
        .insert(VectorId::U64(2), vec_of(&[1.0, -0.0, 0.0, 0.0]), None)
        .unwrap();
    let hits = store
        .search(
            &[1.0, 0.0, 1.0, 1.0],
            &SearchParams::new(2, DistanceMetric::Hamming),
        )
        .unwrap();
    assert_eq!(hits[0].id, VectorId::U64(1));
    assert_eq!(hits[0].distance, 1.0);
    // -0.0 differs from 0.0 bit for bit.
    assert_eq!(hits[1].distance, 3.0);
}

#[test]
fn dot_product_reports_negated_dot_and_ranks_largest_first() {
    let mut store = new_store(2, DistanceMetric::DotProduct);
    store
        .insert(VectorId::U64(1), vec_of(&[1.0, 0.0]), None)
        .unwrap();
    store
        .insert(VectorId::U64(2), vec_of(&[10.0, 0.0]), None)
        .unwrap();
    store
        .insert(VectorId::U64(3), vec_of(&[-5.0, 0.0]), None)
        .unwrap();
    store
        .insert(VectorId::U64(4), vec_of(&[0.0, 3.0]), None)
        .unwrap();
    let hits = store
        .search(
            &[2.0, 1.0],
            &SearchParams::new(4, DistanceMetric::DotProduct),
        )
        .unwrap();
    let ids: Vec<VectorId> = hits.iter().map(|h| h.id.clone()).collect();
    assert_eq!(ids, [2, 4, 1, 3].map(VectorId::U64));
    let distances: Vec<f32> = hits.iter().map(|h| h.distance).collect();
    assert_eq!(distances, [-20.0, -3.0, -2.0, 10.0]);

    // An orthogonal record scores +0.0 (not -0.0), so ties at zero fall back
    // to the id order like any other tie.
    let mut zeros = new_store(2, DistanceMetric::DotProduct);
    zeros
        .insert(VectorId::U64(2), vec_of(&[0.0, 1.0]), None)
        .unwrap();
    zeros
        .insert(VectorId::U64(1), vec_of(&[-0.0, -1.0]), None)
        .unwrap();
    let hits = zeros
        .search(
            &[1.0, 0.0],
            &SearchParams::new(2, DistanceMetric::DotProduct),
        )
        .unwrap();
    assert_eq!(hits[0].id, VectorId::U64(1));
    assert_eq!(hits[1].id, VectorId::U64(2));
    assert!(hits.iter().all(|h| h.distance.to_bits() == 0));
}

#[test]
fn cosine_ignores_magnitude_and_treats_zero_vectors_as_orthogonal() {
    let mut store = new_store(2, DistanceMetric::Cosine);
    store
        .insert(VectorId::U64(1), vec_of(&[100.0, 0.0]), None)
        .unwrap();
    store
        .insert(VectorId::U64(2), vec_of(&[0.0, 0.5]), None)
        .unwrap();
    store
        .insert(VectorId::U64(3), vec_of(&[-1.0, 0.0]), None)
        .unwrap();
    store
        .insert(VectorId::U64(4), vec_of(&[0.0, 0.0]), None)
        .unwrap();
    let hits = store
        .search(&[0.25, 0.0], &SearchParams::new(4, DistanceMetric::Cosine))
        .unwrap();
    let got: Vec<(VectorId, f32)> = hits.iter().map(|h| (h.id.clone(), h.distance)).collect();
    assert_eq!(
        got,
        vec![
            (VectorId::U64(1), 0.0),
            (VectorId::U64(2), 1.0),
            (VectorId::U64(4), 1.0),
            (VectorId::U64(3), 2.0),
        ]
    );
}

#[test]
fn euclidean_and_manhattan_on_a_known_example() {
    for (metric, expected) in [
        (DistanceMetric::Euclidean, 5.0_f32),
        (DistanceMetric::Manhattan, 7.0_f32),
    ] {
        let mut store = new_store(2, metric);
        store
            .insert(VectorId::U64(9), vec_of(&[3.0, 4.0]), None)
            .unwrap();
        let hits = store
            .search(&[0.0, 0.0], &SearchParams::new(1, metric))
            .unwrap();
        assert_eq!(hits[0].distance, expected, "{metric:?}");
    }
}

#[test]
fn ties_are_broken_by_id_regardless_of_insertion_order() {
    let ids = [
        VectorId::Bytes(b"b".to_vec().into()),
        VectorId::U64(7),
        VectorId::Bytes(b"a".to_vec().into()),
        VectorId::U64(2),
        VectorId::Bytes(b"ab".to_vec().into()),
    ];
    let expected = vec![
        VectorId::U64(2),
        VectorId::U64(7),
        VectorId::Bytes(b"a".to_vec().into()),
        VectorId::Bytes(b"ab".to_vec().into()),
        VectorId::Bytes(b"b".to_vec().into()),
    ];
    for rotation in 0..ids.len() {
        let mut store = new_store(2, DistanceMetric::Euclidean);
        for i in 0..ids.len() {
            let id = ids[(i + rotation) % ids.len()].clone();
            store.insert(id, vec_of(&[1.0, 1.0]), None).unwrap();
        }
        // Deleting and re-inserting moves slots around; results must not care.
        store.delete(&VectorId::U64(7)).unwrap();
        store
            .insert(VectorId::U64(7), vec_of(&[1.0, 1.0]), None)
            .unwrap();
        let hits = store
            .search(
                &[0.0, 0.0],
                &SearchParams::new(5, DistanceMetric::Euclidean),
            )
            .unwrap();
        let got: Vec<VectorId> = hits.into_iter().map(|h| h.id).collect();
        assert_eq!(got, expected, "rotation {rotation}");
        // And top-2 is a prefix of the full ranking.
        let top2 = store
            .search(
                &[0.0, 0.0],
                &SearchParams::new(2, DistanceMetric::Euclidean),
            )
            .unwrap();
        assert_eq!(top2.len(), 2);
        assert_eq!(top2[0].id, expected[0]);
        assert_eq!(top2[1].id, expected[1]);
    }
}

#[test]
fn k_is_clamped_and_empty_cases_return_nothing() {
    let empty = new_store(3, DistanceMetric::Euclidean);
    let params = SearchParams::new(10, DistanceMetric::Euclidean);
    assert!(empty.search(&[1.0, 2.0, 3.0], &params).unwrap().is_empty());

    let store = generate::store(3, 5, 3, DistanceMetric::Euclidean);
    assert_eq!(store.search(&[1.0, 2.0, 3.0], &params).unwrap().len(), 5);
    let huge = SearchParams::new(usize::MAX, DistanceMetric::Euclidean);
    assert_eq!(store.search(&[1.0, 2.0, 3.0], &huge).unwrap().len(), 5);
    let zero = SearchParams::new(0, DistanceMetric::Euclidean);
    assert!(store.search(&[1.0, 2.0, 3.0], &zero).unwrap().is_empty());
}

#[test]
fn search_validates_its_inputs() {
    let store = generate::store(3, 5, 3, DistanceMetric::Euclidean);
    let params = SearchParams::new(3, DistanceMetric::Euclidean);
    assert_eq!(
        store.search(&[1.0, 2.0], &params),
        Err(IqdbError::DimensionMismatch {
            expected: 3,
            found: 2
        })
    );
    assert_eq!(store.search(&[], &params), Err(IqdbError::InvalidVector));
    assert_eq!(
        store.search(&[1.0, f32::NAN, 0.0], &params),
        Err(IqdbError::InvalidVector)
    );
    assert_eq!(
        store.search(&[1.0, f32::INFINITY, 0.0], &params),
        Err(IqdbError::InvalidVector)
    );
    assert_eq!(
        store.search(
            &[1.0, 2.0, 3.0],
            &SearchParams::new(3, DistanceMetric::Cosine)
        ),
        Err(IqdbError::InvalidMetric)
    );
    let mut deep = Filter::eq("i", Value::Int(1));
    for _ in 0..MAX_FILTER_DEPTH {
        deep = Filter::not(deep);
    }
    let deep_params = SearchParams {
        filter: Some(deep),
        ..params.clone()
    };
    assert_eq!(
        store.search(&[1.0, 2.0, 3.0], &deep_params),
        Err(IqdbError::InvalidFilter)
    );
    // `ef` is accepted and ignored by exact search.
    let with_ef = SearchParams {
        ef: Some(1),
        ..params.clone()
    };
    assert_eq!(
        store.search(&[1.0, 2.0, 3.0], &with_ef).unwrap(),
        store.search(&[1.0, 2.0, 3.0], &params).unwrap()
    );
}

// ---------------------------------------------------------------- filters

/// Records 1..=6 on one line (distance = id under Euclidean from the
/// origin), with assorted metadata.
fn filter_store() -> VectorStore {
    let mut store = new_store(1, DistanceMetric::Euclidean);
    let records = [
        (
            1,
            Some(meta(&[
                ("author", Value::String("ada".into())),
                ("year", Value::Int(1843)),
                ("score", Value::Float(0.5)),
                ("ok", Value::Bool(true)),
            ])),
        ),
        (
            2,
            Some(meta(&[
                ("author", Value::String("alan".into())),
                ("year", Value::Int(1936)),
                ("score", Value::Float(2.5)),
                ("ok", Value::Bool(false)),
            ])),
        ),
        (
            3,
            Some(meta(&[
                ("author", Value::String("grace".into())),
                ("year", Value::Float(1952.0)),
                ("note", Value::Null),
            ])),
        ),
        (4, Some(meta(&[("year", Value::String("1970".into()))]))),
        (5, None),
        (6, Some(meta(&[("score", Value::Float(f64::NAN))]))),
    ];
    for (id, metadata) in records {
        store
            .insert(VectorId::U64(id), vec_of(&[id as f32]), metadata)
            .unwrap();
    }
    store
}

fn matching(store: &VectorStore, filter: Filter) -> Vec<u64> {
    let params = SearchParams {
        filter: Some(filter),
        ..SearchParams::new(100, DistanceMetric::Euclidean)
    };
    store
        .search(&[0.0], &params)
        .unwrap()
        .into_iter()
        .map(|hit| match hit.id {
            VectorId::U64(n) => n,
            VectorId::Bytes(_) => panic!("unexpected bytes id"),
        })
        .collect()
}

#[test]
fn filter_leaves() {
    let s = filter_store();
    let ada = || Value::String("ada".into());
    assert_eq!(matching(&s, Filter::eq("author", ada())), [1]);
    // Neq needs the key present and a comparable value.
    assert_eq!(matching(&s, Filter::neq("author", ada())), [2, 3]);
    // Strings compare lexicographically.
    assert_eq!(
        matching(&s, Filter::lt("author", Value::String("alan".into()))),
        [1]
    );
    assert_eq!(
        matching(&s, Filter::lte("author", Value::String("alan".into()))),
        [1, 2]
    );
    assert_eq!(
        matching(&s, Filter::gt("author", Value::String("alan".into()))),
        [3]
    );
    assert_eq!(
        matching(&s, Filter::gte("author", Value::String("alan".into()))),
        [2, 3]
    );
    // Ints and floats compare numerically with each other; the string
    // "1970" does not compare with a number.
    assert_eq!(matching(&s, Filter::gt("year", Value::Int(1900))), [2, 3]);
    assert_eq!(matching(&s, Filter::gte("year", Value::Float(1952.0))), [3]);
    assert_eq!(matching(&s, Filter::eq("year", Value::Int(1952))), [3]);
    assert_eq!(matching(&s, Filter::lt("year", Value::Float(1900.5))), [1]);
    assert_eq!(matching(&s, Filter::lte("year", Value::Int(1936))), [1, 2]);
    assert_eq!(matching(&s, Filter::neq("year", Value::Int(1843))), [2, 3]);
    // NaN compares with nothing.
    assert_eq!(
        matching(&s, Filter::lt("score", Value::Float(10.0))),
        [1, 2]
    );
    assert_eq!(matching(&s, Filter::neq("score", Value::Float(0.5))), [2]);
    // Bools and nulls.
    assert_eq!(matching(&s, Filter::eq("ok", Value::Bool(true))), [1]);
    assert_eq!(matching(&s, Filter::lt("ok", Value::Bool(true))), [2]);
    assert_eq!(matching(&s, Filter::eq("note", Value::Null)), [3]);
    // Type mismatch is false for every leaf.
    assert!(matching(&s, Filter::eq("author", Value::Int(1))).is_empty());
    assert!(matching(&s, Filter::neq("author", Value::Int(1))).is_empty());
    assert!(matching(&s, Filter::gt("ok", Value::Int(0))).is_empty());
    // In.
    assert_eq!(
        matching(
            &s,
            Filter::is_in(
                "author",
                vec![ada(), Value::String("grace".into()), Value::Int(3)]
            )
        ),
        [1, 3]
    );
    assert_eq!(
        matching(
            &s,
            Filter::is_in(
                "year",
                vec![Value::Float(1843.0), Value::String("1970".into())]
            )
        ),
        [1, 4]
    );
    assert!(matching(&s, Filter::is_in("author", vec![])).is_empty());
    // Absent key (record 4, 6) and absent metadata (record 5) are false.
    assert!(matching(&s, Filter::eq("missing", Value::Null)).is_empty());
}

#[test]
fn filter_combinators() {
    let s = filter_store();
    let ada = || Value::String("ada".into());
    // Not is true where the key is absent or the metadata is.
    assert_eq!(
        matching(&s, Filter::not(Filter::eq("author", ada()))),
        [2, 3, 4, 5, 6]
    );
    assert_eq!(
        matching(
            &s,
            Filter::and(vec![
                Filter::gt("year", Value::Int(1800)),
                Filter::lt("year", Value::Int(1940))
            ])
        ),
        [1, 2]
    );
    assert_eq!(
        matching(
            &s,
            Filter::or(vec![
                Filter::eq("author", ada()),
                Filter::eq("year", Value::String("1970".into()))
            ])
        ),
        [1, 4]
    );
    // Nested: (ok == true OR year >= 1950) AND NOT (author == "grace" AND note == null)
    let nested = Filter::and(vec![
        Filter::or(vec![
            Filter::eq("ok", Value::Bool(true)),
            Filter::gte("year", Value::Int(1950)),
        ]),
        Filter::not(Filter::and(vec![
            Filter::eq("author", Value::String("grace".into())),
            Filter::eq("note", Value::Null),
        ])),
    ]);
    assert_eq!(matching(&s, nested), [1]);
    let nested_not = Filter::not(Filter::or(vec![
        Filter::not(Filter::eq("ok", Value::Bool(false))),
        Filter::eq("author", ada()),
    ]));
    assert_eq!(matching(&s, nested_not), [2]);
    // Empty And matches everything, empty Or nothing.
    assert_eq!(matching(&s, Filter::and(vec![])), [1, 2, 3, 4, 5, 6]);
    assert!(matching(&s, Filter::or(vec![])).is_empty());
}

#[test]
fn filtered_search_returns_top_k_of_the_matching_records_with_metadata() {
    let store = generate::store(5, 500, 8, DistanceMetric::Manhattan);
    let filter = Filter::and(vec![
        Filter::eq("even", Value::Bool(true)),
        Filter::is_in(
            "group",
            vec![Value::String("g1".into()), Value::String("g4".into())],
        ),
    ]);
    let q = [0.1_f32; 8];
    let params = SearchParams {
        filter: Some(filter),
        ..SearchParams::new(7, DistanceMetric::Manhattan)
    };
    let hits: Vec<Hit> = store.search(&q, &params).unwrap();
    assert_eq!(hits.len(), 7);
    let mut expected: Vec<(VectorId, f64)> = store
        .iter()
        .filter(|(_, _, m)| {
            m.is_some_and(|m| {
                m.get("even") == Some(&Value::Bool(true))
                    && matches!(m.get("group"), Some(Value::String(g)) if g == "g1" || g == "g4")
            })
        })
        .map(|(id, v, _)| (id.clone(), naive_distance(DistanceMetric::Manhattan, &q, v)))
        .collect();
    expected.sort_by(|a, b| a.1.partial_cmp(&b.1).unwrap_or(Ordering::Equal));
    for (hit, (id, _)) in hits.iter().zip(&expected) {
        assert_eq!(&hit.id, id);
        let m = hit.metadata.as_ref().unwrap();
        assert_eq!(m.get("even"), Some(&Value::Bool(true)));
    }
}
