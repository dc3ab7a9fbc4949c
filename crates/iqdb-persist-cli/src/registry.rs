//! The registry of index types the tool can decode.
//!
//! A snapshot records its index type (`Persistable::INDEX_TYPE`). Checksums
//! and log frames can be verified without knowing the type, but decoding the
//! payload and replaying the log need the type's code. A [`Registry`] maps
//! each type tag to a loader that does that read-only (through
//! [`iqdb_persist::inspect::load_read_only`]) and summarizes the result.
//!
//! ```
//! use iqdb_persist_cli::Registry;
//! use iqdb_persist_testkit::VectorStore;
//!
//! let mut registry = Registry::empty();
//! registry.register::<VectorStore>();
//! assert!(registry.get(iqdb_persist_testkit::INDEX_TYPE).is_some());
//! assert_eq!(registry.index_types().count(), 1);
//! ```

use std::collections::BTreeMap;
use std::fmt;

use iqdb_index::IndexCore;
use iqdb_persist::format_policy::{ConvertReport, convert};
use iqdb_persist::inspect::load_read_only;
use iqdb_persist::{FormatPolicy, Options, PersistConfig, Persistable, RecoveryReport};
use iqdb_persist_testkit::VectorStore;
use iqdb_types::{DistanceMetric, VectorId};

/// What a loader found in a decoded and replayed index.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IndexSummary {
    /// The index type tag.
    pub index_type: String,
    /// Vectors in the index after replay.
    pub vectors: u64,
    /// Vector dimension.
    pub dim: usize,
    /// Distance metric.
    pub metric: String,
    /// Further facts, in display order, as `(name, value)`.
    pub details: Vec<(String, String)>,
}

impl IndexSummary {
    /// The summary every index type gets: length, dimension, metric, and
    /// the memory figure of [`IndexCore::stats`].
    #[must_use]
    pub fn basic<I: IndexCore + ?Sized>(index_type: &str, index: &I) -> Self {
        let stats = index.stats();
        Self {
            index_type: index_type.to_string(),
            vectors: index.len() as u64,
            dim: index.dim(),
            metric: metric_name(index.metric()),
            details: vec![(
                "memory (approx.)".to_string(),
                crate::output::bytes(stats.memory_bytes as u64),
            )],
        }
    }
}

/// The name of a metric, as the tool prints it.
#[must_use]
pub fn metric_name(metric: DistanceMetric) -> String {
    format!("{metric:?}")
}

/// The result of a registered loader: the summary, and what replaying the
/// log did.
#[derive(Debug, Clone)]
pub struct LoadOutcome {
    /// What the index holds.
    pub summary: IndexSummary,
    /// What the read-only replay found and did.
    pub report: RecoveryReport,
}

/// A loader: loads the database described by the configuration read-only,
/// with the options (recovery mode), and summarizes it.
pub type Loader =
    dyn Fn(&PersistConfig, &Options) -> iqdb_persist::Result<LoadOutcome> + Send + Sync;

/// A converter: rewrites the database described by the configuration in
/// the formats of the policy (`convert`), with the options; `true` for a dry
/// run.
pub type Converter = dyn Fn(&PersistConfig, FormatPolicy, &Options, bool) -> iqdb_persist::Result<ConvertReport>
    + Send
    + Sync;

/// Maps index type tags to loaders (and, for types registered with
/// [`register`](Registry::register) or [`register_with`](Registry::register_with),
/// converters).
#[derive(Default)]
pub struct Registry {
    loaders: BTreeMap<String, Box<Loader>>,
    converters: BTreeMap<String, Box<Converter>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.loaders.keys()).finish()
    }
}

impl Registry {
    /// A registry with no index types.
    #[must_use]
    pub fn empty() -> Self {
        Self::default()
    }

    /// A registry with the reference type
    /// [`VectorStore`] (tag
    /// [`iqdb_persist_testkit::INDEX_TYPE`]).
    #[must_use]
    pub fn with_defaults() -> Self {
        let mut registry = Self::empty();
        registry.register_with::<VectorStore>(summarize_vector_store);
        registry
    }

    /// Registers `I` under `I::INDEX_TYPE` with the [basic
    /// summary](IndexSummary::basic). Replaces an earlier registration.
    pub fn register<I: Persistable + 'static>(&mut self) -> &mut Self {
        self.register_with::<I>(|index| IndexSummary::basic(I::INDEX_TYPE, index))
    }

    /// Registers `I` under `I::INDEX_TYPE`, summarized by `summarize`.
    pub fn register_with<I: Persistable + 'static>(
        &mut self,
        summarize: impl Fn(&I) -> IndexSummary + Send + Sync + 'static,
    ) -> &mut Self {
        self.converters.insert(
            I::INDEX_TYPE.to_string(),
            Box::new(|config, to, options, dry_run| {
                convert::<I>(config, to, options.clone(), dry_run)
            }),
        );
        self.register_loader(I::INDEX_TYPE, move |config, options| {
            let (index, report) = load_read_only::<I>(config, options)?;
            Ok(LoadOutcome {
                summary: summarize(&index),
                report,
            })
        })
    }

    /// Registers an arbitrary loader under `index_type`.
    pub fn register_loader(
        &mut self,
        index_type: impl Into<String>,
        loader: impl Fn(&PersistConfig, &Options) -> iqdb_persist::Result<LoadOutcome>
        + Send
        + Sync
        + 'static,
    ) -> &mut Self {
        self.loaders.insert(index_type.into(), Box::new(loader));
        self
    }

    /// The loader for `index_type`, if registered.
    #[must_use]
    pub fn get(&self, index_type: &str) -> Option<&Loader> {
        self.loaders.get(index_type).map(AsRef::as_ref)
    }

    /// The converter for `index_type`, if registered.
    #[must_use]
    pub fn converter(&self, index_type: &str) -> Option<&Converter> {
        self.converters.get(index_type).map(AsRef::as_ref)
    }

    /// The registered type tags, sorted.
    pub fn index_types(&self) -> impl Iterator<Item = &str> {
        self.loaders.keys().map(String::as_str)
    }
}

/// The summary of a [`VectorStore`]: the basic one plus how its ids and
/// metadata are made up.
#[must_use]
pub fn summarize_vector_store(store: &VectorStore) -> IndexSummary {
    let mut summary = IndexSummary::basic(iqdb_persist_testkit::INDEX_TYPE, store);
    let numeric = store
        .ids()
        .iter()
        .filter(|id| matches!(id, VectorId::U64(_)))
        .count();
    let with_metadata = store.iter().filter(|(_, _, m)| m.is_some()).count();
    summary.details.extend([
        ("u64 ids".to_string(), numeric.to_string()),
        ("byte ids".to_string(), (store.len() - numeric).to_string()),
        ("with metadata".to_string(), with_metadata.to_string()),
    ]);
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use iqdb_persist::PersistedIndex;

    #[test]
    fn defaults_load_a_vector_store() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let config = PersistConfig::new(dir.path().join("db.iqdb"));
        let store = iqdb_persist_testkit::generate::store(1, 10, 4, DistanceMetric::Euclidean);
        PersistedIndex::open_with(store, config.clone())?.save()?;
        let registry = Registry::with_defaults();
        let loader = registry
            .get(iqdb_persist_testkit::INDEX_TYPE)
            .ok_or("not registered")?;
        let outcome = loader(&config, &Options::default())?;
        assert_eq!(outcome.summary.vectors, 10);
        assert_eq!(outcome.summary.dim, 4);
        assert_eq!(outcome.summary.metric, "Euclidean");
        assert!(
            outcome
                .summary
                .details
                .iter()
                .any(|(k, v)| k == "u64 ids" && v == "5")
        );
        assert!(registry.get("something-else").is_none());
        Ok(())
    }
}
