//! The `check` module passes a correct implementation (`VectorStore`) and
//! fails deliberately broken ones, with messages that name the case.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::sync::Arc;

use iqdb_index::{Index, IndexCore, IndexStats};
use iqdb_persist::{PersistError, Persistable};
use iqdb_persist_testkit::check::{
    self, EXHAUSTIVE_BIT_FLIP_LIMIT, EXHAUSTIVE_TRUNCATION_LIMIT, bit_flip_positions,
    truncation_points,
};
use iqdb_persist_testkit::codec::MAGIC;
use iqdb_persist_testkit::{VectorStore, VectorStoreConfig, generate};
use iqdb_types::{DistanceMetric, Hit, Metadata, SearchParams, VectorId};

// ---------------------------------------------------------- correct impl

#[test]
fn vector_store_passes_every_check_on_a_small_payload() {
    let store = generate::store(1, 6, 2, DistanceMetric::Manhattan);
    let len = store.to_bytes().unwrap().len();
    assert!(len <= EXHAUSTIVE_BIT_FLIP_LIMIT, "{len}");

    let reports = check::check_all(&store, |a, b| a == b).unwrap();
    let [round_trip, truncations, flips] = &reports[..] else {
        panic!("{reports:?}")
    };
    assert_eq!(round_trip.check, "round_trip");
    assert_eq!(round_trip.payload_len, len);
    assert_eq!(truncations.check, "truncations");
    assert_eq!(truncations.cases, len, "every prefix");
    assert_eq!(truncations.rejected, len);
    assert_eq!(flips.check, "bit_flips");
    assert_eq!(flips.cases, len * 8, "every bit");
    assert_eq!(flips.loaded + flips.rejected, flips.cases);
    // Flipped float bits still decode; flipped magic bytes do not.
    assert!(flips.loaded > 0 && flips.rejected > 0, "{flips}");
}

#[test]
fn vector_store_passes_every_check_on_a_big_payload() {
    let store = generate::store(2, 300, 8, DistanceMetric::Cosine);
    let len = store.to_bytes().unwrap().len();
    assert!(len > EXHAUSTIVE_TRUNCATION_LIMIT, "{len}");
    let reports = check::check_all(&store, |a, b| a == b).unwrap();
    assert_eq!(reports[1].cases, truncation_points(len).len());
    assert!(reports[1].cases < len / 10, "sampled, not exhaustive");
    assert_eq!(reports[2].cases, bit_flip_positions(len).len());
    assert!(reports[2].to_string().starts_with("bit_flips: "));
}

#[test]
fn empty_store_passes() {
    let store = VectorStore::new(3, DistanceMetric::Hamming, VectorStoreConfig::default()).unwrap();
    check::check_all(&store, |a, b| a == b).unwrap();
}

#[test]
fn sample_points_are_deterministic_and_in_range() {
    assert_eq!(truncation_points(5), vec![0, 1, 2, 3, 4]);
    assert_eq!(bit_flip_positions(2), (0..16).collect::<Vec<_>>());
    let len = 1_000_000;
    let cuts = truncation_points(len);
    assert_eq!(cuts, truncation_points(len));
    assert!(cuts.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(cuts.first(), Some(&0));
    assert_eq!(cuts.last(), Some(&(len - 1)));
    assert!(cuts.iter().any(|&c| c > 400_000 && c < 600_000));
    let flips = bit_flip_positions(len);
    assert_eq!(flips, bit_flip_positions(len));
    assert!(flips.iter().all(|&b| b < len as u64 * 8));
    assert!(flips.iter().any(|&b| b > len as u64 * 4));
}

// ---------------------------------------------------------- broken impls

/// A newtype over `VectorStore` whose `Persistable` impl is broken in a
/// way chosen per type.
macro_rules! toy {
    ($name:ident) => {
        #[derive(Debug, Clone, PartialEq)]
        struct $name(VectorStore);

        impl IndexCore for $name {
            fn insert(
                &mut self,
                id: VectorId,
                vector: Arc<[f32]>,
                metadata: Option<Metadata>,
            ) -> iqdb_types::Result<()> {
                self.0.insert(id, vector, metadata)
            }
            fn delete(&mut self, id: &VectorId) -> iqdb_types::Result<()> {
                self.0.delete(id)
            }
            fn search(&self, query: &[f32], params: &SearchParams) -> iqdb_types::Result<Vec<Hit>> {
                self.0.search(query, params)
            }
            fn len(&self) -> usize {
                self.0.len()
            }
            fn dim(&self) -> usize {
                self.0.dim()
            }
            fn metric(&self) -> DistanceMetric {
                self.0.metric()
            }
            fn flush(&mut self) -> iqdb_types::Result<()> {
                Ok(())
            }
            fn stats(&self) -> IndexStats {
                self.0.stats()
            }
        }

        impl Index for $name {
            type Config = VectorStoreConfig;
            fn new(
                dim: usize,
                metric: DistanceMetric,
                config: VectorStoreConfig,
            ) -> iqdb_types::Result<Self> {
                VectorStore::new(dim, metric, config).map($name)
            }
        }
    };
}

fn read_all(reader: &mut dyn Read) -> iqdb_persist::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader
        .read_to_end(&mut bytes)
        .map_err(|source| PersistError::Io {
            path: Default::default(),
            source,
        })?;
    Ok(bytes)
}

fn small() -> VectorStore {
    generate::store(3, 5, 2, DistanceMetric::Euclidean)
}

toy!(PanicsWhenShort);
impl Persistable for PanicsWhenShort {
    const INDEX_TYPE: &'static str = "toy-panics-when-short";
    fn save_to(&self, writer: &mut dyn Write) -> iqdb_persist::Result<()> {
        self.0.save_to(writer)
    }
    fn load_from(reader: &mut dyn Read) -> iqdb_persist::Result<Self> {
        let bytes = read_all(reader)?;
        // Trusts the input to hold a full header: slicing panics otherwise.
        let count = u64::from_le_bytes(bytes[21..29].try_into().unwrap());
        let store = VectorStore::from_bytes(&bytes)?;
        assert_eq!(store.len() as u64, count);
        Ok(Self(store))
    }
}

#[test]
fn truncation_check_reports_a_panicking_loader() {
    let toy = PanicsWhenShort(small());
    // It round-trips fine...
    check::check_round_trip(&toy, |a, b| a == b).unwrap();
    // ...but panics on a short input.
    let failure = check::check_truncations(&toy).unwrap_err();
    assert_eq!(failure.check, "truncations");
    assert!(
        failure
            .message
            .starts_with("load_from panicked on the first 0 of "),
        "{failure}"
    );
    assert!(failure.message.contains("out of range"), "{failure}");
    assert!(check::check_all(&toy, |a, b| a == b).is_err());
}

toy!(LosesLastRecord);
impl Persistable for LosesLastRecord {
    const INDEX_TYPE: &'static str = "toy-loses-last-record";
    fn save_to(&self, writer: &mut dyn Write) -> iqdb_persist::Result<()> {
        self.0.save_to(writer)
    }
    fn load_from(reader: &mut dyn Read) -> iqdb_persist::Result<Self> {
        let mut store = VectorStore::load_from(reader)?;
        if let Some(last) = store.ids().last().cloned() {
            store.delete(&last)?;
        }
        Ok(Self(store))
    }
}

#[test]
fn round_trip_check_reports_wrong_data() {
    let toy = LosesLastRecord(small());
    let failure = check::check_round_trip(&toy, |a, b| a == b).unwrap_err();
    assert_eq!(failure.check, "round_trip");
    assert!(failure.message.contains("not equal"), "{failure}");
    assert!(failure.to_string().starts_with("round_trip check failed: "));
    // The other checks cannot see this bug.
    check::check_truncations(&toy).unwrap();
    check::check_bit_flips(&toy).unwrap();
    // An equality that only compares dimensions would not either.
    check::check_round_trip(&toy, |a, b| a.0.dim() == b.0.dim()).unwrap();
}

toy!(AcceptsAnything);
impl Persistable for AcceptsAnything {
    const INDEX_TYPE: &'static str = "toy-accepts-anything";
    fn save_to(&self, writer: &mut dyn Write) -> iqdb_persist::Result<()> {
        self.0.save_to(writer)
    }
    fn load_from(reader: &mut dyn Read) -> iqdb_persist::Result<Self> {
        // Falls back to an empty index instead of reporting damage.
        match VectorStore::load_from(reader) {
            Ok(store) => Ok(Self(store)),
            Err(_) => Ok(Self(VectorStore::new(
                1,
                DistanceMetric::Cosine,
                VectorStoreConfig::default(),
            )?)),
        }
    }
}

#[test]
fn truncation_check_reports_a_loader_that_accepts_prefixes() {
    let toy = AcceptsAnything(small());
    check::check_round_trip(&toy, |a, b| a == b).unwrap();
    let failure = check::check_truncations(&toy).unwrap_err();
    assert!(
        failure
            .message
            .starts_with("load_from returned Ok for the first 0 of "),
        "{failure}"
    );
    // Bit flips may load: this is not a bit-flip failure.
    let report = check::check_bit_flips(&toy).unwrap();
    assert_eq!(report.rejected, 0);
}

toy!(PanicsOnBadMagic);
impl Persistable for PanicsOnBadMagic {
    const INDEX_TYPE: &'static str = "toy-panics-on-bad-magic";
    fn save_to(&self, writer: &mut dyn Write) -> iqdb_persist::Result<()> {
        self.0.save_to(writer)
    }
    fn load_from(reader: &mut dyn Read) -> iqdb_persist::Result<Self> {
        let bytes = read_all(reader)?;
        if bytes.len() >= 8 {
            assert_eq!(bytes[..8], MAGIC, "magic mismatch");
        }
        Ok(Self(VectorStore::from_bytes(&bytes)?))
    }
}

#[test]
fn bit_flip_check_reports_a_panicking_loader() {
    let toy = PanicsOnBadMagic(small());
    check::check_round_trip(&toy, |a, b| a == b).unwrap();
    check::check_truncations(&toy).unwrap();
    let failure = check::check_bit_flips(&toy).unwrap_err();
    assert_eq!(failure.check, "bit_flips");
    assert!(
        failure.message.contains("bit 0 of byte 0 flipped"),
        "{failure}"
    );
    assert!(failure.message.contains("magic mismatch"), "{failure}");
}

toy!(CannotSave);
impl Persistable for CannotSave {
    const INDEX_TYPE: &'static str = "toy-cannot-save";
    fn save_to(&self, _writer: &mut dyn Write) -> iqdb_persist::Result<()> {
        Err(PersistError::InvalidPayload {
            reason: "not today",
        })
    }
    fn load_from(reader: &mut dyn Read) -> iqdb_persist::Result<Self> {
        Ok(Self(VectorStore::load_from(reader)?))
    }
}

#[test]
fn save_errors_fail_every_check() {
    let toy = CannotSave(small());
    for failure in [
        check::check_round_trip(&toy, |a, b| a == b).unwrap_err(),
        check::check_truncations(&toy).unwrap_err(),
        check::check_bit_flips(&toy).unwrap_err(),
    ] {
        assert!(
            failure
                .message
                .starts_with("save_to returned an error: invalid payload: not today"),
            "{failure}"
        );
    }
}

toy!(PanicsOnSave);
impl Persistable for PanicsOnSave {
    const INDEX_TYPE: &'static str = "toy-panics-on-save";
    fn save_to(&self, _writer: &mut dyn Write) -> iqdb_persist::Result<()> {
        panic!("save exploded")
    }
    fn load_from(reader: &mut dyn Read) -> iqdb_persist::Result<Self> {
        Ok(Self(VectorStore::load_from(reader)?))
    }
}

#[test]
fn save_panics_are_caught_and_reported() {
    let toy = PanicsOnSave(small());
    let failure = check::check_round_trip(&toy, |a, b| a == b).unwrap_err();
    assert_eq!(failure.message, "save_to panicked: save exploded");
}
