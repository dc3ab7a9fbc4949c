//! Deterministic sample records for tests, benchmarks and golden files.
//!
//! (The module is called `generate` rather than `gen` because `gen` is a
//! reserved keyword in edition 2024 and would have to be written `r#gen`.)
//!
//! Every value is a pure function of `(seed, i, dim)` computed with a small
//! SplitMix64 generator written out here. That is deliberate: golden files
//! and benchmark baselines are checked in, so the data must be identical
//! across releases, platforms and dependency upgrades, which a generator
//! from a random-number crate does not promise (its algorithms and value
//! streams may change between versions).
//!
//! Record `i` of any seed has the id [`id(i)`](id): a mix of
//! [`VectorId::U64`] ids and both text-like and non-UTF-8
//! [`VectorId::Bytes`] ids, distinct for distinct `i`. Because the id does
//! not depend on the seed, the same `i` under two seeds models an update of
//! one record. Vectors have components in `[-1, 1)`, all finite. Metadata is
//! `None` for every fifth record and otherwise exercises every [`Value`]
//! kind (strings with non-ASCII text, negative and positive integers,
//! floats, booleans and nulls).

use std::ops::Range;
use std::sync::Arc;

use iqdb_index::{Index, IndexCore};
use iqdb_types::{DistanceMetric, Metadata, Value, VectorId};

use crate::store::{VectorStore, VectorStoreConfig};

/// The SplitMix64 generator (Steele, Lea and Flood), hand-written so its
/// output never changes; see the [module docs](self) for why.
///
/// ```
/// use iqdb_persist_testkit::generate::SplitMix64;
///
/// let mut a = SplitMix64::new(42);
/// let mut b = SplitMix64::new(42);
/// assert_eq!(a.next_u64(), b.next_u64());
/// ```
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

    /// A generator starting from `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(Self::GAMMA);
        mix(self.state)
    }

    /// A float in `[-1, 1)` with 24 random bits (exactly representable).
    pub fn next_f32(&mut self) -> f32 {
        #[allow(clippy::cast_precision_loss)]
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        unit * 2.0 - 1.0
    }

    /// A float in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        unit
    }
}

/// The SplitMix64 output function.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The id of record `i` (for every seed): `U64(i)` when `i` is even,
/// `Bytes("id-<i in hex>")` when `i % 4 == 1`, and the 9 non-UTF-8 bytes
/// `0xFF` followed by `i` little-endian when `i % 4 == 3`.
///
/// ```
/// use iqdb_persist_testkit::generate::id;
/// use iqdb_types::VectorId;
///
/// assert_eq!(id(2), VectorId::U64(2));
/// assert_eq!(id(5), VectorId::Bytes(b"id-5".to_vec().into()));
/// ```
#[must_use]
pub fn id(i: u64) -> VectorId {
    match i % 4 {
        1 => VectorId::Bytes(format!("id-{i:x}").into_bytes().into()),
        3 => {
            let mut bytes = Vec::with_capacity(9);
            bytes.push(0xFF);
            bytes.extend_from_slice(&i.to_le_bytes());
            VectorId::Bytes(bytes.into())
        }
        _ => VectorId::U64(i),
    }
}

/// Record `i` of the sample stream `seed`: its [`id`], a `dim`-component
/// vector with components in `[-1, 1)`, and metadata (see the
/// [module docs](self)).
///
/// ```
/// use iqdb_persist_testkit::generate::record;
///
/// let (id, vector, metadata) = record(7, 3, 16);
/// assert_eq!(vector.len(), 16);
/// assert_eq!(record(7, 3, 16), (id, vector, metadata));
/// ```
#[must_use]
pub fn record(seed: u64, i: u64, dim: usize) -> (VectorId, Arc<[f32]>, Option<Metadata>) {
    let mut rng = SplitMix64::new(mix(seed ^ 0x005E_ED0F_7E57_C0DE) ^ i);
    let vector: Arc<[f32]> = (0..dim).map(|_| rng.next_f32()).collect();
    let metadata = (i % 5 != 4).then(|| {
        #[allow(clippy::cast_possible_wrap)]
        let rank = rng.next_u64() as i64;
        #[allow(clippy::cast_possible_wrap)]
        let index = i as i64;
        let mut entries = vec![
            ("i".to_string(), Value::Int(index)),
            ("group".to_string(), Value::String(format!("g{}", i % 7))),
            ("score".to_string(), Value::Float(rng.next_f64())),
            ("even".to_string(), Value::Bool(i.is_multiple_of(2))),
            ("rank".to_string(), Value::Int(rank)),
        ];
        if i.is_multiple_of(3) {
            entries.push(("note".to_string(), Value::Null));
        }
        if i % 4 == 1 {
            entries.push(("label".to_string(), Value::String(format!("récord-{i}"))));
        }
        entries.into_iter().collect::<Metadata>()
    });
    (id(i), vector, metadata)
}

/// Records `range` of the sample stream `seed`, in order.
///
/// ```
/// use iqdb_persist_testkit::generate::{record, records};
///
/// let all: Vec<_> = records(1, 0..4, 8).collect();
/// assert_eq!(all.len(), 4);
/// assert_eq!(all[2], record(1, 2, 8));
/// ```
pub fn records(
    seed: u64,
    range: Range<u64>,
    dim: usize,
) -> impl Iterator<Item = (VectorId, Arc<[f32]>, Option<Metadata>)> {
    range.map(move |i| record(seed, i, dim))
}

/// A store of records `0..n` of the sample stream `seed`.
///
/// # Panics
///
/// When `dim` is 0 or `metric` is one this crate does not know (both
/// rejected by [`VectorStore::new`](Index::new)), or when the store cannot
/// be allocated.
///
/// ```
/// use iqdb_persist_testkit::generate;
/// use iqdb_types::DistanceMetric;
///
/// let store = generate::store(9, 100, 32, DistanceMetric::Cosine);
/// assert_eq!(store.len(), 100);
/// assert_eq!(store, generate::store(9, 100, 32, DistanceMetric::Cosine));
/// ```
#[must_use]
pub fn store(seed: u64, n: u64, dim: usize, metric: DistanceMetric) -> VectorStore {
    let capacity = usize::try_from(n).unwrap_or(0);
    let config = VectorStoreConfig::default().with_initial_capacity(capacity);
    let mut store = match VectorStore::new(dim, metric, config) {
        Ok(store) => store,
        Err(e) => panic!("generate::store(dim = {dim}, metric = {metric:?}): {e}"),
    };
    for (id, vector, metadata) in records(seed, 0..n, dim) {
        if let Err(e) = store.insert(id, vector, metadata) {
            // Ids are distinct and vectors finite and of length `dim`.
            panic!("generate::store: sample record rejected: {e}");
        }
    }
    store
}
