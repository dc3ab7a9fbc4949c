//! [`VectorStore`]: an exact, brute-force vector index.
//!
//! The persistence layer needs a real index to exercise: one whose behaviour
//! is obvious from its source, that enforces the [`IndexCore`] contract
//! strictly (so a test that passes against it means something), and whose
//! state compares exactly after a save/load round trip. A mock would hide
//! bugs; a production index (HNSW, IVF) would make results approximate and
//! equality fuzzy. `VectorStore` is neither: it keeps every vector and scans
//! them all.
//!
//! # Storage
//!
//! Slot `s` holds `ids[s]`, the `dim` floats `data[s * dim .. (s + 1) * dim]`
//! and `metadata[s]`; `slots` maps each id to its slot. Slots are dense:
//! delete moves the last record into the freed slot (swap-remove). One
//! contiguous `Vec<f32>` keeps the search loop cache-friendly and lets the
//! [codec](crate::codec) write and read every vector with one bulk copy. (So
//! `insert` copies the caller's `Arc<[f32]>` into the block rather than
//! keeping the `Arc`: the shared-allocation suggestion in
//! [`IndexCore::insert`] is traded for that layout.)
//!
//! # Search
//!
//! Distances are accumulated in `f64` (so finite inputs never overflow into
//! NaN) and reported as `f32`, smaller is nearer:
//!
//! | metric | `Hit::distance` |
//! | --- | --- |
//! | Cosine | `1 - cos(q, v)`; `1` when either vector has zero norm |
//! | DotProduct | `-(q · v)` |
//! | Euclidean | `‖q - v‖₂` |
//! | Manhattan | `‖q - v‖₁` |
//! | Hamming | number of components whose bits differ |
//!
//! Ties on distance are broken by id (every `U64` id before every `Bytes`
//! id, `U64` ids numerically, `Bytes` ids lexicographically), so results
//! depend only on the store's contents, never on insertion or deletion
//! history. Two stores that compare equal return identical hits.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// Whether every component is finite. Checked in blocks without an early
/// exit inside a block, so the compiler vectorizes it (a decode checks every
/// float of the payload).
pub(crate) fn all_finite(values: &[f32]) -> bool {
    values
        .chunks(256)
        .all(|block| block.iter().fold(true, |ok, x| ok & x.is_finite()))
}

/// The id table's map: ids are hashed on every insert, delete and lookup, and
/// SipHash (std's default) costs more than the rest of an insert; foldhash is
/// what hashbrown uses by default.
pub(crate) type SlotMap = HashMap<VectorId, usize, foldhash::fast::RandomState>;
use std::fmt;
use std::mem::size_of;
use std::sync::Arc;

use iqdb_index::{Index, IndexCore, IndexStats};
use iqdb_types::{DistanceMetric, Hit, IqdbError, Metadata, SearchParams, Value, VectorId};

use crate::filter;

pub use crate::filter::MAX_FILTER_DEPTH;

/// The [`IndexStats::index_type`] and `Persistable::INDEX_TYPE` of
/// [`VectorStore`].
pub const INDEX_TYPE: &str = "iqdb-testkit-vector-store";

/// Configuration for [`VectorStore::new`](Index::new).
///
/// `#[non_exhaustive]` so knobs can be added; build one with
/// [`VectorStoreConfig::default`] and the `with_*` methods.
///
/// ```
/// use iqdb_persist_testkit::VectorStoreConfig;
///
/// let config = VectorStoreConfig::default().with_initial_capacity(1_000);
/// assert_eq!(config.initial_capacity, 1_000);
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VectorStoreConfig {
    /// Records to reserve room for up front (default 0). A capacity that
    /// cannot be allocated makes `new` fail with
    /// [`IqdbError::InvalidConfig`] instead of aborting.
    pub initial_capacity: usize,
}

impl VectorStoreConfig {
    /// Returns the configuration with `initial_capacity` set.
    #[must_use]
    pub fn with_initial_capacity(mut self, initial_capacity: usize) -> Self {
        self.initial_capacity = initial_capacity;
        self
    }
}

/// An exact (brute-force) vector index over `f32` vectors, with optional
/// metadata per record.
///
/// It implements [`IndexCore`], [`Index`] (with [`VectorStoreConfig`]) and
/// [`iqdb_persist::Persistable`] (tag [`INDEX_TYPE`], payload format in
/// [`crate::codec`]). It is strict: inserting an existing id is
/// [`IqdbError::Duplicate`], deleting an absent one is
/// [`IqdbError::NotFound`], a vector of the wrong length is
/// [`IqdbError::DimensionMismatch`], and an empty or non-finite vector is
/// [`IqdbError::InvalidVector`]. See the [module docs](self) for the
/// distances and the tie-break order.
///
/// Equality ignores slot order: two stores are equal when they have the
/// same dimension, metric and set of records, vectors compared bit for bit
/// and metadata compared with floats bit for bit (so a NaN value equals
/// itself). `Debug` prints only the dimension, metric and length.
///
/// ```
/// use std::sync::Arc;
/// use iqdb_index::{Index, IndexCore};
/// use iqdb_persist_testkit::VectorStore;
/// use iqdb_types::{DistanceMetric, SearchParams, VectorId};
///
/// # fn main() -> iqdb_types::Result<()> {
/// let mut store = VectorStore::new(2, DistanceMetric::Euclidean, Default::default())?;
/// store.insert(VectorId::from(1u64), Arc::from(vec![0.0, 0.0]), None)?;
/// store.insert(VectorId::from(2u64), Arc::from(vec![3.0, 4.0]), None)?;
///
/// let hits = store.search(&[3.0, 3.0], &SearchParams::new(1, DistanceMetric::Euclidean))?;
/// assert_eq!(hits[0].id, VectorId::U64(2));
/// assert_eq!(hits[0].distance, 1.0);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct VectorStore {
    dim: usize,
    metric: DistanceMetric,
    ids: Vec<VectorId>,
    data: Vec<f32>,
    metadata: Vec<Option<Metadata>>,
    slots: SlotMap,
    /// Heap bytes owned by `Bytes` ids (each also held once more as a map
    /// key), kept up to date on insert and delete so `stats` is O(1).
    id_heap_bytes: usize,
    /// Approximate heap bytes owned by metadata, maintained the same way.
    metadata_heap_bytes: usize,
}

impl VectorStore {
    /// The number of records.
    #[must_use]
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when the store holds no records.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The vector dimension.
    #[must_use]
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The distance metric.
    #[must_use]
    pub fn metric(&self) -> DistanceMetric {
        self.metric
    }

    /// The vector and metadata stored under `id`.
    #[must_use]
    pub fn get(&self, id: &VectorId) -> Option<(&[f32], Option<&Metadata>)> {
        let slot = *self.slots.get(id)?;
        Some((self.vector_at(slot), self.metadata[slot].as_ref()))
    }

    /// True when a record with `id` is stored.
    #[must_use]
    pub fn contains(&self, id: &VectorId) -> bool {
        self.slots.contains_key(id)
    }

    /// Every record as `(id, vector, metadata)`, in slot order.
    ///
    /// Slot order is insertion order until the first delete, which moves the
    /// last record into the freed slot.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&VectorId, &[f32], Option<&Metadata>)> {
        self.ids
            .iter()
            .zip(self.data.chunks_exact(self.dim))
            .zip(self.metadata.iter())
            .map(|((id, vector), metadata)| (id, vector, metadata.as_ref()))
    }

    /// Every id, in slot order.
    #[must_use]
    pub fn ids(&self) -> &[VectorId] {
        &self.ids
    }

    /// All vectors as one contiguous block of `len() * dim()` floats, in slot
    /// order.
    #[must_use]
    pub fn vectors(&self) -> &[f32] {
        &self.data
    }

    fn vector_at(&self, slot: usize) -> &[f32] {
        &self.data[slot * self.dim..(slot + 1) * self.dim]
    }

    /// Builds a store from decoded parts. The codec has already checked the
    /// shapes, finiteness and id uniqueness.
    pub(crate) fn from_parts(
        dim: usize,
        metric: DistanceMetric,
        ids: Vec<VectorId>,
        data: Vec<f32>,
        metadata: Vec<Option<Metadata>>,
        slots: SlotMap,
    ) -> Self {
        debug_assert_eq!(ids.len() * dim, data.len());
        debug_assert_eq!(ids.len(), metadata.len());
        debug_assert_eq!(ids.len(), slots.len());
        let id_heap = ids.iter().map(id_heap_of).sum();
        let metadata_heap = metadata
            .iter()
            .map(|m| m.as_ref().map_or(0, metadata_heap_of))
            .sum();
        Self {
            dim,
            metric,
            ids,
            data,
            metadata,
            slots,
            id_heap_bytes: id_heap,
            metadata_heap_bytes: metadata_heap,
        }
    }

    fn check_query(&self, vector: &[f32]) -> Result<(), IqdbError> {
        if vector.is_empty() {
            return Err(IqdbError::InvalidVector);
        }
        if vector.len() != self.dim {
            return Err(IqdbError::DimensionMismatch {
                expected: self.dim,
                found: vector.len(),
            });
        }
        Ok(())
    }

    #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
    fn distance(&self, query: &Query<'_>, vector: &[f32]) -> f32 {
        match self.metric {
            DistanceMetric::Cosine => {
                let (dot, norm) = dot_and_norm(&query.values, vector);
                let denom = query.norm.sqrt() * norm.sqrt();
                if denom > 0.0 {
                    (1.0 - dot / denom) as f32
                } else {
                    // A zero vector has no direction: treat it as orthogonal
                    // to everything, like iqdb-distance does.
                    1.0
                }
            }
            // `0.0 - dot` rather than `-dot`: an orthogonal vector gets +0.0,
            // not -0.0, which `total_cmp` would rank ahead of other zeros.
            DistanceMetric::DotProduct => (0.0 - dot(&query.values, vector)) as f32,
            DistanceMetric::Euclidean => squared_l2(&query.values, vector).sqrt() as f32,
            DistanceMetric::Manhattan => l1(&query.values, vector) as f32,
            DistanceMetric::Hamming => hamming(query.raw, vector) as f32,
            // `new` and the codec admit only the five metrics above.
            _ => f32::NAN,
        }
    }
}

/// A validated query, with what every distance evaluation reuses.
struct Query<'q> {
    raw: &'q [f32],
    values: Vec<f64>,
    /// Squared L2 norm of the query (for Cosine).
    norm: f64,
}

const LANES: usize = 4;

fn dot(q: &[f64], v: &[f32]) -> f64 {
    let mut acc = [0.0_f64; LANES];
    let (qc, qr) = q.as_chunks::<LANES>();
    let (vc, vr) = v.as_chunks::<LANES>();
    for (a, b) in qc.iter().zip(vc) {
        for l in 0..LANES {
            acc[l] += a[l] * f64::from(b[l]);
        }
    }
    let mut sum = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (a, b) in qr.iter().zip(vr) {
        sum += a * f64::from(*b);
    }
    sum
}

fn dot_and_norm(q: &[f64], v: &[f32]) -> (f64, f64) {
    let mut dots = [0.0_f64; LANES];
    let mut norms = [0.0_f64; LANES];
    let (qc, qr) = q.as_chunks::<LANES>();
    let (vc, vr) = v.as_chunks::<LANES>();
    for (a, b) in qc.iter().zip(vc) {
        for l in 0..LANES {
            let y = f64::from(b[l]);
            dots[l] += a[l] * y;
            norms[l] += y * y;
        }
    }
    let mut dot = (dots[0] + dots[1]) + (dots[2] + dots[3]);
    let mut norm = (norms[0] + norms[1]) + (norms[2] + norms[3]);
    for (a, b) in qr.iter().zip(vr) {
        let y = f64::from(*b);
        dot += a * y;
        norm += y * y;
    }
    (dot, norm)
}

fn squared_l2(q: &[f64], v: &[f32]) -> f64 {
    let mut acc = [0.0_f64; LANES];
    let (qc, qr) = q.as_chunks::<LANES>();
    let (vc, vr) = v.as_chunks::<LANES>();
    for (a, b) in qc.iter().zip(vc) {
        for l in 0..LANES {
            let d = a[l] - f64::from(b[l]);
            acc[l] += d * d;
        }
    }
    let mut sum = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (a, b) in qr.iter().zip(vr) {
        let d = a - f64::from(*b);
        sum += d * d;
    }
    sum
}

fn l1(q: &[f64], v: &[f32]) -> f64 {
    let mut acc = [0.0_f64; LANES];
    let (qc, qr) = q.as_chunks::<LANES>();
    let (vc, vr) = v.as_chunks::<LANES>();
    for (a, b) in qc.iter().zip(vc) {
        for l in 0..LANES {
            acc[l] += (a[l] - f64::from(b[l])).abs();
        }
    }
    let mut sum = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (a, b) in qr.iter().zip(vr) {
        sum += (a - f64::from(*b)).abs();
    }
    sum
}

/// Components that differ bit for bit (the iqdb-distance convention, so
/// `0.0` and `-0.0` differ).
fn hamming(q: &[f32], v: &[f32]) -> u64 {
    q.iter()
        .zip(v)
        .map(|(a, b)| u64::from(a.to_bits() != b.to_bits()))
        .sum()
}

/// The order used to break distance ties: `U64` ids first (numerically),
/// then `Bytes` ids (lexicographically).
#[must_use]
pub fn id_order(a: &VectorId, b: &VectorId) -> Ordering {
    match (a, b) {
        (VectorId::U64(x), VectorId::U64(y)) => x.cmp(y),
        (VectorId::U64(_), VectorId::Bytes(_)) => Ordering::Less,
        (VectorId::Bytes(_), VectorId::U64(_)) => Ordering::Greater,
        (VectorId::Bytes(x), VectorId::Bytes(y)) => x.cmp(y),
    }
}

/// A top-k candidate. The heap is a max-heap on (distance, id), so its root
/// is the worst of the current best k.
struct Candidate<'a> {
    distance: f32,
    id: &'a VectorId,
    slot: usize,
}

impl Candidate<'_> {
    fn key_cmp(&self, other: &Self) -> Ordering {
        self.distance
            .total_cmp(&other.distance)
            .then_with(|| id_order(self.id, other.id))
    }
}

impl PartialEq for Candidate<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.key_cmp(other) == Ordering::Equal
    }
}
impl Eq for Candidate<'_> {}
impl PartialOrd for Candidate<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key_cmp(other)
    }
}

/// Approximate heap bytes owned by an id (a `Bytes` id's key).
fn id_heap_of(id: &VectorId) -> usize {
    match id {
        VectorId::U64(_) => 0,
        VectorId::Bytes(bytes) => bytes.len(),
    }
}

/// Approximate heap bytes owned by a metadata map: its entries plus string
/// contents. Best effort, for [`IndexStats::memory_bytes`].
fn metadata_heap_of(metadata: &Metadata) -> usize {
    metadata
        .iter()
        .map(|(key, value)| {
            size_of::<(String, Value)>()
                + key.len()
                + match value {
                    Value::String(s) => s.len(),
                    _ => 0,
                }
        })
        .sum()
}

/// Returns the metric's on-disk tag, or `None` for a metric this crate does
/// not know (the enum is non-exhaustive).
pub(crate) fn metric_tag(metric: DistanceMetric) -> Option<u8> {
    match metric {
        DistanceMetric::Cosine => Some(0),
        DistanceMetric::DotProduct => Some(1),
        DistanceMetric::Euclidean => Some(2),
        DistanceMetric::Manhattan => Some(3),
        DistanceMetric::Hamming => Some(4),
        _ => None,
    }
}

/// The metric for an on-disk tag.
pub(crate) fn tag_metric(tag: u8) -> Option<DistanceMetric> {
    match tag {
        0 => Some(DistanceMetric::Cosine),
        1 => Some(DistanceMetric::DotProduct),
        2 => Some(DistanceMetric::Euclidean),
        3 => Some(DistanceMetric::Manhattan),
        4 => Some(DistanceMetric::Hamming),
        _ => None,
    }
}

impl IndexCore for VectorStore {
    fn insert(
        &mut self,
        id: VectorId,
        vector: Arc<[f32]>,
        metadata: Option<Metadata>,
    ) -> iqdb_types::Result<()> {
        self.check_query(&vector)?;
        if !all_finite(&vector) {
            return Err(IqdbError::InvalidVector);
        }
        let slot = self.ids.len();
        let std::collections::hash_map::Entry::Vacant(entry) = self.slots.entry(id) else {
            return Err(IqdbError::Duplicate);
        };
        let id = entry.key().clone();
        entry.insert(slot);
        self.id_heap_bytes += id_heap_of(&id);
        self.metadata_heap_bytes += metadata.as_ref().map_or(0, metadata_heap_of);
        self.data.extend_from_slice(&vector);
        self.metadata.push(metadata);
        self.ids.push(id);
        Ok(())
    }

    /// Reserves room for every item, then inserts them in order. Fail-fast
    /// like the trait default: items before the first rejected one stay
    /// inserted.
    fn insert_batch(
        &mut self,
        items: Vec<(VectorId, Arc<[f32]>, Option<Metadata>)>,
    ) -> iqdb_types::Result<()> {
        let additional = items.len();
        self.ids.reserve(additional);
        self.metadata.reserve(additional);
        self.slots.reserve(additional);
        self.data.reserve(additional.saturating_mul(self.dim));
        for (id, vector, metadata) in items {
            self.insert(id, vector, metadata)?;
        }
        Ok(())
    }

    fn delete(&mut self, id: &VectorId) -> iqdb_types::Result<()> {
        let slot = self.slots.remove(id).ok_or(IqdbError::NotFound)?;
        let last = self.ids.len() - 1;
        let removed_id = self.ids.swap_remove(slot);
        let removed_metadata = self.metadata.swap_remove(slot);
        self.id_heap_bytes -= id_heap_of(&removed_id);
        self.metadata_heap_bytes -= removed_metadata.as_ref().map_or(0, metadata_heap_of);
        if slot != last {
            self.data
                .copy_within(last * self.dim..(last + 1) * self.dim, slot * self.dim);
            if let Some(moved) = self.slots.get_mut(&self.ids[slot]) {
                *moved = slot;
            }
        }
        self.data.truncate(last * self.dim);
        Ok(())
    }

    /// Exact top-`k` search. Errors: [`IqdbError::InvalidVector`] for an
    /// empty or non-finite query, [`IqdbError::DimensionMismatch`] for a
    /// query of the wrong length, [`IqdbError::InvalidMetric`] when
    /// `params.metric` is not the store's metric, and
    /// [`IqdbError::InvalidFilter`] for a filter nested deeper than
    /// [`MAX_FILTER_DEPTH`]. `params.ef` is ignored (the search is exact).
    fn search(&self, query: &[f32], params: &SearchParams) -> iqdb_types::Result<Vec<Hit>> {
        self.check_query(query)?;
        if params.metric != self.metric {
            return Err(IqdbError::InvalidMetric);
        }
        if !all_finite(query) {
            return Err(IqdbError::InvalidVector);
        }
        if let Some(filter) = &params.filter {
            filter::validate(filter)?;
        }
        let k = params.k.min(self.ids.len());
        if k == 0 {
            return Ok(Vec::new());
        }
        let values: Vec<f64> = query.iter().map(|&x| f64::from(x)).collect();
        let norm = values.iter().map(|x| x * x).sum();
        let query = Query {
            raw: query,
            values,
            norm,
        };

        let mut heap: BinaryHeap<Candidate<'_>> = BinaryHeap::with_capacity(k + 1);
        let records = self.ids.iter().zip(self.data.chunks_exact(self.dim));
        for (slot, ((id, vector), metadata)) in records.zip(&self.metadata).enumerate() {
            if let Some(filter) = &params.filter
                && !filter::matches(filter, metadata.as_ref())
            {
                continue;
            }
            let candidate = Candidate {
                distance: self.distance(&query, vector),
                id,
                slot,
            };
            if heap.len() < k {
                heap.push(candidate);
            } else if let Some(mut worst) = heap.peek_mut()
                && candidate < *worst
            {
                *worst = candidate;
            }
        }
        Ok(heap
            .into_sorted_vec()
            .into_iter()
            .map(|c| Hit {
                id: c.id.clone(),
                distance: c.distance,
                metadata: self.metadata[c.slot].clone(),
            })
            .collect())
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn metric(&self) -> DistanceMetric {
        self.metric
    }

    /// Nothing to flush: the store lives in memory.
    fn flush(&mut self) -> iqdb_types::Result<()> {
        Ok(())
    }

    /// `memory_bytes` counts the vector block's capacity, the id, metadata
    /// and slot-map tables, and the heap bytes of `Bytes` ids (held twice:
    /// in the table and as map keys) and of metadata. `extra` records the
    /// reserved record capacity.
    fn stats(&self) -> IndexStats {
        let ids = self.ids.capacity() * size_of::<VectorId>();
        let metadata = self.metadata.capacity() * size_of::<Option<Metadata>>();
        let slots = self.slots.capacity() * (size_of::<VectorId>() + size_of::<usize>() + 1);
        let memory_bytes = self.data.capacity() * size_of::<f32>()
            + ids
            + metadata
            + slots
            + 2 * self.id_heap_bytes
            + self.metadata_heap_bytes;
        IndexStats {
            n_vectors: self.ids.len(),
            memory_bytes,
            disk_bytes: None,
            index_type: INDEX_TYPE,
            extra: Some(HashMap::from([(
                "capacity".to_string(),
                self.ids.capacity().to_string(),
            )])),
        }
    }
}

impl Index for VectorStore {
    type Config = VectorStoreConfig;

    /// Errors: [`IqdbError::InvalidConfig`] when `dim` is 0 or the initial
    /// capacity cannot be allocated; [`IqdbError::InvalidMetric`] for a
    /// metric this crate does not know (a variant added to the
    /// non-exhaustive [`DistanceMetric`] after this release).
    fn new(dim: usize, metric: DistanceMetric, config: Self::Config) -> iqdb_types::Result<Self> {
        if dim == 0 {
            return Err(IqdbError::InvalidConfig {
                reason: "dim must be greater than zero",
            });
        }
        if metric_tag(metric).is_none() {
            return Err(IqdbError::InvalidMetric);
        }
        let capacity = config.initial_capacity;
        let too_large = IqdbError::InvalidConfig {
            reason: "initial_capacity cannot be allocated",
        };
        let floats = capacity.checked_mul(dim).ok_or(too_large)?;
        let mut store = Self {
            dim,
            metric,
            ids: Vec::new(),
            data: Vec::new(),
            metadata: Vec::new(),
            slots: SlotMap::default(),
            id_heap_bytes: 0,
            metadata_heap_bytes: 0,
        };
        store
            .data
            .try_reserve_exact(floats)
            .map_err(|_| too_large)?;
        store
            .ids
            .try_reserve_exact(capacity)
            .map_err(|_| too_large)?;
        store
            .metadata
            .try_reserve_exact(capacity)
            .map_err(|_| too_large)?;
        store.slots.try_reserve(capacity).map_err(|_| too_large)?;
        Ok(store)
    }
}

impl PartialEq for VectorStore {
    fn eq(&self, other: &Self) -> bool {
        self.dim == other.dim
            && self.metric == other.metric
            && self.ids.len() == other.ids.len()
            && self.iter().all(|(id, vector, metadata)| {
                other.get(id).is_some_and(|(other_vector, other_metadata)| {
                    vectors_bitwise_eq(vector, other_vector)
                        && match (metadata, other_metadata) {
                            (None, None) => true,
                            (Some(a), Some(b)) => metadata_bitwise_eq(a, b),
                            _ => false,
                        }
                })
            })
    }
}

/// True when two vectors are identical bit for bit (so `0.0 != -0.0`).
#[must_use]
pub fn vectors_bitwise_eq(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// True when two metadata maps have the same keys and values, floats
/// compared bit for bit (so a NaN equals the same NaN, and `0.0 != -0.0`).
#[must_use]
pub fn metadata_bitwise_eq(a: &Metadata, b: &Metadata) -> bool {
    a.len() == b.len()
        && a.iter().zip(b.iter()).all(|((ka, va), (kb, vb))| {
            ka == kb
                && match (va, vb) {
                    (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
                    _ => va == vb,
                }
        })
}

impl fmt::Debug for VectorStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VectorStore")
            .field("dim", &self.dim)
            .field("metric", &self.metric)
            .field("len", &self.ids.len())
            .finish_non_exhaustive()
    }
}
