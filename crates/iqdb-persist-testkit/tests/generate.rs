//! Sample data: determinism, pinned values (golden files depend on them),
//! id uniqueness, and coverage of every id and value kind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;

use iqdb_persist_testkit::generate::{self, SplitMix64};
use iqdb_types::{DistanceMetric, Value, VectorId};

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[test]
fn splitmix64_matches_the_reference_sequence() {
    // The first outputs of SplitMix64 seeded with 0, as published with the
    // algorithm (and reproduced by every faithful implementation).
    let mut rng = SplitMix64::new(0);
    assert_eq!(rng.next_u64(), 0xe220_a839_7b1d_cdaf);
    assert_eq!(rng.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    assert_eq!(rng.next_u64(), 0x06c4_5d18_8009_454f);
}

#[test]
fn values_are_pinned() {
    // These numbers are a contract: golden payload files and benchmark
    // baselines are generated from this module. If this test fails, the
    // generator changed; restore it rather than updating the numbers.
    let (id, vector, metadata) = generate::record(0, 0, 4);
    assert_eq!(id, VectorId::U64(0));
    let bits: Vec<u32> = vector.iter().map(|x| x.to_bits()).collect();
    assert_eq!(bits, PINNED_RECORD_0_BITS);
    let metadata = metadata.unwrap();
    assert_eq!(metadata.get("i"), Some(&Value::Int(0)));
    assert_eq!(metadata.get("note"), Some(&Value::Null));

    let store = generate::store(42, 50, 8, DistanceMetric::Cosine);
    assert_eq!(fnv1a(&store.to_bytes().unwrap()), PINNED_STORE_HASH);
}

const PINNED_RECORD_0_BITS: [u32; 4] = [3_209_653_898, 3_206_509_260, 1_049_101_052, 1_057_266_160];
const PINNED_STORE_HASH: u64 = 4_999_306_845_305_464_187;

#[test]
fn records_are_deterministic_and_independent_of_the_range() {
    let a: Vec<_> = generate::records(3, 0..100, 16).collect();
    let b: Vec<_> = generate::records(3, 0..100, 16).collect();
    assert_eq!(a, b);
    let tail: Vec<_> = generate::records(3, 40..60, 16).collect();
    assert_eq!(tail, a[40..60]);
    let other_seed: Vec<_> = generate::records(4, 0..100, 16).collect();
    // Same ids (they depend on i only), different vectors.
    for (x, y) in a.iter().zip(&other_seed) {
        assert_eq!(x.0, y.0);
        assert_ne!(x.1, y.1);
    }
    assert_eq!(
        generate::store(3, 100, 16, DistanceMetric::Hamming),
        generate::store(3, 100, 16, DistanceMetric::Hamming)
    );
}

#[test]
fn ids_are_unique_and_mix_both_kinds() {
    let mut seen = HashSet::new();
    let (mut u64s, mut utf8, mut binary) = (0, 0, 0);
    for i in 0..20_000 {
        let id = generate::id(i);
        match &id {
            VectorId::U64(_) => u64s += 1,
            VectorId::Bytes(b) if std::str::from_utf8(b).is_ok() => utf8 += 1,
            VectorId::Bytes(_) => binary += 1,
        }
        assert!(seen.insert(id), "id of record {i} repeats");
    }
    assert_eq!((u64s, utf8, binary), (10_000, 5_000, 5_000));
    assert!(seen.insert(generate::id(u64::MAX)));
}

#[test]
fn vectors_are_finite_and_in_range() {
    for (_, vector, _) in generate::records(9, 0..500, 33) {
        assert_eq!(vector.len(), 33);
        assert!(vector.iter().all(|x| (-1.0..1.0).contains(x)));
    }
}

#[test]
fn metadata_covers_every_value_kind_and_none() {
    let (mut none, mut string, mut int, mut negative, mut float, mut boolean, mut null) =
        (0, 0, 0, 0, 0, 0, 0);
    let mut non_ascii = false;
    for (_, _, metadata) in generate::records(1, 0..100, 2) {
        let Some(metadata) = metadata else {
            none += 1;
            continue;
        };
        for (_, value) in metadata.iter() {
            match value {
                Value::String(s) => {
                    string += 1;
                    non_ascii |= !s.is_ascii();
                }
                Value::Int(i) => {
                    int += 1;
                    negative += i32::from(*i < 0);
                }
                Value::Float(_) => float += 1,
                Value::Bool(_) => boolean += 1,
                Value::Null => null += 1,
            }
        }
    }
    assert_eq!(none, 20);
    assert!(string > 0 && int > 0 && float > 0 && boolean > 0 && null > 0);
    assert!(negative > 0, "some integers are negative");
    assert!(non_ascii, "some strings are not ASCII");
}

#[test]
#[should_panic(expected = "dim must be greater than zero")]
fn store_panics_on_zero_dim() {
    let _ = generate::store(1, 1, 0, DistanceMetric::Cosine);
}
