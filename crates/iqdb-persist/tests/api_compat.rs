//! Source compatibility with iqdb-persist 1.0.0: every item of 1.0's public
//! API exists here with the same name, shape and signature.
//!
//! Most of the checking is done by the compiler: functions are coerced to
//! explicitly typed fn pointers (a changed parameter, return type or
//! receiver fails to compile), structs and variants are built with struct
//! literals and destructured without `..` (an added, removed, renamed or
//! retyped field fails, and so does `#[non_exhaustive]` on a type 1.0 left
//! open), enums 1.0 left exhaustive are matched without a wildcard, derives
//! and trait impls are required through bounds, and a local index type with
//! no `Debug`/`Clone` implements `Persistable` with exactly 1.0's three
//! items. The tests then run the API so the values are checked too.
//!
//! The list of items is 1.0.0's public surface (see
//! `shared/reference/upstream-1.0.md`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Debug;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use iqdb_index::{Index, IndexCore, IndexStats};
use iqdb_persist::format::{self, FileHeader};
use iqdb_persist::{
    CURRENT_VERSION, Compression, FsyncPolicy, MAGIC, PersistConfig, PersistError, Persistable,
    PersistedIndex, Result, VERSION, checksum,
};
use iqdb_persist_testkit::{VectorStore, VectorStoreConfig};
use iqdb_types::{DistanceMetric, Hit, IqdbError, Metadata, SearchParams, Value, VectorId};

// ---------------------------------------------------------------------------
// Persistable, implemented the way a 1.0 user does, on a type that is
// neither Debug nor Clone (1.0 requires neither of `I`).
// ---------------------------------------------------------------------------

/// A user index: the testkit store behind a newtype with no derives.
struct UserIndex(VectorStore);

impl IndexCore for UserIndex {
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
        IndexCore::len(&self.0)
    }

    fn dim(&self) -> usize {
        IndexCore::dim(&self.0)
    }

    fn metric(&self) -> DistanceMetric {
        IndexCore::metric(&self.0)
    }

    fn flush(&mut self) -> iqdb_types::Result<()> {
        self.0.flush()
    }

    fn stats(&self) -> IndexStats {
        self.0.stats()
    }
}

impl Index for UserIndex {
    type Config = VectorStoreConfig;

    fn new(dim: usize, metric: DistanceMetric, config: Self::Config) -> iqdb_types::Result<Self> {
        VectorStore::new(dim, metric, config).map(Self)
    }
}

// Exactly 1.0's items: a new required item would fail to compile here.
impl Persistable for UserIndex {
    const INDEX_TYPE: &'static str = "api-compat-user-index";

    fn save_to(&self, writer: &mut dyn Write) -> Result<()> {
        self.0.save_to(writer)
    }

    fn load_from(reader: &mut dyn Read) -> Result<Self>
    where
        Self: Sized,
    {
        VectorStore::load_from(reader).map(Self)
    }
}

/// `Persistable: Index`: with only a `Persistable` bound, `Index` and
/// `IndexCore` methods are available.
fn uses_supertraits<P: Persistable>(index: &P) -> (usize, usize, &'static str) {
    let fresh = P::new(index.dim(), index.metric(), P::Config::default());
    assert!(fresh.is_ok(), "Index::new through a Persistable bound");
    (index.len(), index.dim(), P::INDEX_TYPE)
}

/// The trait's items as typed values, for any implementor.
fn persistable_items<P: Persistable>() {
    let _tag: &'static str = P::INDEX_TYPE;
    let _save: fn(&P, &mut dyn Write) -> Result<()> = P::save_to;
    let _load: fn(&mut dyn Read) -> Result<P> = P::load_from;
}

// ---------------------------------------------------------------------------
// PersistedIndex: every 1.0 method with its exact signature, for any
// `I: Index + Persistable` (so no new bounds on `I`).
// ---------------------------------------------------------------------------

// Spelling out each signature in full is the point of this function.
#[allow(clippy::type_complexity)]
fn persisted_index_methods<I: Index + Persistable>() {
    let _open_with: fn(I, PersistConfig) -> Result<PersistedIndex<I>> = PersistedIndex::open_with;
    let _load: fn(PersistConfig) -> Result<PersistedIndex<I>> = PersistedIndex::load;
    let _index: for<'a> fn(&'a PersistedIndex<I>) -> &'a I = PersistedIndex::index;
    let _index_mut: for<'a> fn(&'a mut PersistedIndex<I>) -> &'a mut I = PersistedIndex::index_mut;
    let _config: for<'a> fn(&'a PersistedIndex<I>) -> &'a PersistConfig = PersistedIndex::config;
    let _insert: fn(&mut PersistedIndex<I>, VectorId, Arc<[f32]>, Option<Metadata>) -> Result<()> =
        PersistedIndex::insert;
    let _delete: fn(&mut PersistedIndex<I>, &VectorId) -> Result<()> = PersistedIndex::delete;
    let _save: fn(&PersistedIndex<I>) -> Result<()> = PersistedIndex::save;
    let _checkpoint: fn(&mut PersistedIndex<I>) -> Result<()> = PersistedIndex::checkpoint;
}

fn assert_send_sync<T: Send + Sync>() {}

/// `PersistedIndex<I>` is `Send + Sync` whenever `I` is (iqdb moves its
/// `PersistedIndex<IqdbCore>` across threads).
fn send_sync_when_inner_is<I: Index + Persistable + Send + Sync>() {
    assert_send_sync::<PersistedIndex<I>>();
}

fn assert_debug<T: Debug>() {}

#[test]
fn persistable_and_persisted_index_signatures() {
    persistable_items::<UserIndex>();
    persistable_items::<VectorStore>();
    persisted_index_methods::<UserIndex>();
    persisted_index_methods::<VectorStore>();
    send_sync_when_inner_is::<UserIndex>();
    send_sync_when_inner_is::<VectorStore>();
    assert_debug::<PersistedIndex<VectorStore>>();

    let store = VectorStore::new(2, DistanceMetric::Cosine, VectorStoreConfig::default()).unwrap();
    assert_eq!(
        uses_supertraits(&UserIndex(store)),
        (0, 2, "api-compat-user-index")
    );
}

/// 1.0's lifecycle, run through the API above on an index with no `Debug`
/// or `Clone`: WAL mode, insert, delete, checkpoint, crash (drop), load.
#[test]
fn persisted_index_lifecycle_on_a_user_index() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = PersistConfig::new(dir.path().join("user.iqdb"));
    config.wal_enabled = true;
    let index = UserIndex::new(3, DistanceMetric::Euclidean, VectorStoreConfig::default()).unwrap();
    let mut db = PersistedIndex::open_with(index, config.clone()).unwrap();
    assert_eq!(db.config().path, config.path);
    db.insert(VectorId::from(1u64), Arc::from(vec![1.0, 0.0, 0.0]), None)
        .unwrap();
    db.insert(
        VectorId::from(2u64),
        Arc::from(vec![0.0, 1.0, 0.0]),
        Some(
            [("k".to_string(), Value::Int(7))]
                .into_iter()
                .collect::<Metadata>(),
        ),
    )
    .unwrap();
    db.checkpoint().unwrap();
    db.delete(&VectorId::from(1u64)).unwrap();
    db.insert(VectorId::from(3u64), Arc::from(vec![0.0, 0.0, 1.0]), None)
        .unwrap();
    assert!(db.index_mut().flush().is_ok());
    drop(db);

    let db = PersistedIndex::<UserIndex>::load(config.clone()).unwrap();
    assert_eq!(db.index().len(), 2);
    assert!(db.index().0.contains(&VectorId::from(2u64)));
    assert!(db.index().0.contains(&VectorId::from(3u64)));
    assert!(!db.index().0.contains(&VectorId::from(1u64)));
    db.save().unwrap();
    drop(db); // releases the writer lock

    // The type tag is checked on load, as in 1.0.
    let err = PersistedIndex::<VectorStore>::load(config).expect_err("wrong index type");
    assert!(
        matches!(
            err.root_cause(),
            PersistError::InvalidIndexType { found, expected }
                if found == "api-compat-user-index" && *expected == iqdb_persist_testkit::INDEX_TYPE
        ),
        "loading a UserIndex file as a VectorStore: {err:?}"
    );
}

// ---------------------------------------------------------------------------
// Configuration types.
// ---------------------------------------------------------------------------

fn assert_config_derives<T: Clone + Debug + Default>() {}
fn assert_copy_eq<T: Copy + Clone + Debug + PartialEq + Eq>() {}

#[test]
fn persist_config_fields_constructors_and_derives() {
    assert_config_derives::<PersistConfig>();

    // A struct literal with exactly 1.0's four fields and their types.
    let path: PathBuf = PathBuf::from("/data/a.iqdb");
    let wal_enabled: bool = true;
    let fsync_policy: FsyncPolicy = FsyncPolicy::Periodic(Duration::from_millis(5));
    let compression: Compression = Compression::Zstd { level: 3 };
    let literal = PersistConfig {
        path,
        wal_enabled,
        fsync_policy,
        compression,
    };
    let PersistConfig {
        path,
        wal_enabled,
        fsync_policy,
        compression,
    } = literal.clone();
    let _: (PathBuf, bool, FsyncPolicy, Compression) =
        (path, wal_enabled, fsync_policy, compression);
    assert!(format!("{literal:?}").contains("a.iqdb"));

    // `new(impl Into<PathBuf>)` for the argument types callers pass.
    let from_str: fn(&'static str) -> PersistConfig = PersistConfig::new;
    let from_string: fn(String) -> PersistConfig = PersistConfig::new;
    let from_path_buf: fn(PathBuf) -> PersistConfig = PersistConfig::new;
    let from_path: fn(&'static Path) -> PersistConfig = PersistConfig::new;
    let configs = [
        from_str("x.iqdb"),
        from_string("x.iqdb".to_string()),
        from_path_buf(PathBuf::from("x.iqdb")),
        from_path(Path::new("x.iqdb")),
    ];
    for config in configs {
        assert_eq!(config.path, Path::new("x.iqdb"));
        assert!(!config.wal_enabled, "new: WAL off");
        assert_eq!(config.fsync_policy, FsyncPolicy::Always, "new: Always");
        assert_eq!(config.compression, Compression::None, "new: no compression");
    }

    let default = PersistConfig::default();
    assert_eq!(default.path, PathBuf::new());
    assert!(!default.wal_enabled);
    assert_eq!(default.fsync_policy, FsyncPolicy::Always);
    assert_eq!(default.compression, Compression::None);

    // iqdb's pattern: `new`, then assign fields.
    let mut assigned = PersistConfig::new("db.iqdb");
    assigned.wal_enabled = true;
    assigned.fsync_policy = FsyncPolicy::Never;
    assigned.compression = Compression::Lz4;
    assert!(assigned.wal_enabled);
}

/// Matched without a wildcard: 1.0 left both enums exhaustive, so user code
/// may match them this way.
fn fsync_name(policy: FsyncPolicy) -> String {
    match policy {
        FsyncPolicy::Always => "always".to_string(),
        FsyncPolicy::Periodic(interval) => {
            let interval: Duration = interval;
            format!("periodic {}ms", interval.as_millis())
        }
        FsyncPolicy::Never => "never".to_string(),
    }
}

fn compression_name(compression: Compression) -> String {
    match compression {
        Compression::None => "none".to_string(),
        Compression::Zstd { level } => {
            let level: i32 = level;
            format!("zstd {level}")
        }
        Compression::Lz4 => "lz4".to_string(),
    }
}

#[test]
fn fsync_policy_and_compression_variants_and_derives() {
    assert_copy_eq::<FsyncPolicy>();
    assert_copy_eq::<Compression>();
    let periodic: fn(Duration) -> FsyncPolicy = FsyncPolicy::Periodic;
    assert_eq!(
        [
            FsyncPolicy::Always,
            periodic(Duration::from_millis(10)),
            FsyncPolicy::Never
        ]
        .map(fsync_name),
        [
            "always".to_string(),
            "periodic 10ms".to_string(),
            "never".to_string()
        ]
    );
    assert_eq!(
        [
            Compression::None,
            Compression::Zstd { level: 19 },
            Compression::Lz4
        ]
        .map(compression_name),
        ["none".to_string(), "zstd 19".to_string(), "lz4".to_string()]
    );
}

/// A scheme whose cargo feature is off fails in `open_with` and `load`
/// with `Unsupported`; a compiled-in one is accepted. (Run with and without
/// `--all-features` to see both sides.)
#[test]
fn compression_features_gate_open_with_and_load() {
    let dir = tempfile::tempdir().unwrap();
    for (compression, enabled) in [
        (Compression::Zstd { level: 3 }, cfg!(feature = "zstd")),
        (Compression::Lz4, cfg!(feature = "lz4")),
    ] {
        let mut config = PersistConfig::new(dir.path().join("gate.iqdb"));
        config.compression = compression;
        let store =
            VectorStore::new(2, DistanceMetric::Cosine, VectorStoreConfig::default()).unwrap();
        let opened = PersistedIndex::open_with(store, config.clone());
        if enabled {
            opened.unwrap().save().unwrap();
            PersistedIndex::<VectorStore>::load(config).unwrap();
        } else {
            assert!(
                matches!(opened, Err(PersistError::Unsupported { .. })),
                "{compression:?} without its feature: open_with"
            );
            assert!(
                matches!(
                    PersistedIndex::<VectorStore>::load(config),
                    Err(PersistError::Unsupported { .. })
                ),
                "{compression:?} without its feature: load"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// PersistError.
// ---------------------------------------------------------------------------

/// Every 1.0 variant, built with a struct literal from values of exactly
/// 1.0's field types.
fn every_v1_variant() -> Vec<PersistError> {
    let path: PathBuf = PathBuf::from("/data/db.iqdb");
    let source: std::io::Error = std::io::Error::other("disk on fire");
    let found_magic: [u8; 8] = *b"NOTIQDB!";
    let (found_version, supported): (u32, u32) = (9, 2);
    let (expected_crc, computed): (u32, u32) = (1, 2);
    let (needed_header, found_header): (usize, usize) = (41, 3);
    let (needed_payload, found_payload): (u64, u64) = (100, 7);
    let tag: u8 = 9;
    let metric: DistanceMetric = DistanceMetric::Hamming;
    let found_type: String = "hnsw".to_string();
    let expected_type: &'static str = "flat";
    let reason: &'static str = "bad bytes";
    let index_build: fn(IqdbError) -> PersistError = PersistError::IndexBuild;
    let (feature, available_in): (&'static str, &'static str) = ("zstd", "the zstd feature");
    vec![
        PersistError::Io { path, source },
        PersistError::BadMagic { found: found_magic },
        PersistError::UnsupportedVersion {
            found: found_version,
            supported,
        },
        PersistError::ChecksumMismatch {
            expected: expected_crc,
            computed,
        },
        PersistError::TruncatedHeader {
            needed: needed_header,
            found: found_header,
        },
        PersistError::TruncatedPayload {
            needed: needed_payload,
            found: found_payload,
        },
        PersistError::InvalidMetric { tag },
        PersistError::UnsupportedMetric { metric },
        PersistError::InvalidIndexType {
            found: found_type,
            expected: expected_type,
        },
        PersistError::InvalidPayload { reason },
        PersistError::Compression { reason },
        index_build(IqdbError::NotFound),
        PersistError::Unsupported {
            feature,
            available_in,
        },
    ]
}

/// Destructures each 1.0 variant's fields with their exact types.
fn field_types(error: &PersistError) {
    match error {
        PersistError::Io { path, source } => {
            let _: (&PathBuf, &std::io::Error) = (path, source);
        }
        PersistError::BadMagic { found } => {
            let _: &[u8; 8] = found;
        }
        PersistError::UnsupportedVersion { found, supported } => {
            let _: (&u32, &u32) = (found, supported);
        }
        PersistError::ChecksumMismatch { expected, computed } => {
            let _: (&u32, &u32) = (expected, computed);
        }
        PersistError::TruncatedHeader { needed, found } => {
            let _: (&usize, &usize) = (needed, found);
        }
        PersistError::TruncatedPayload { needed, found } => {
            let _: (&u64, &u64) = (needed, found);
        }
        PersistError::InvalidMetric { tag } => {
            let _: &u8 = tag;
        }
        PersistError::UnsupportedMetric { metric } => {
            let _: &DistanceMetric = metric;
        }
        PersistError::InvalidIndexType { found, expected } => {
            let _: (&String, &&'static str) = (found, expected);
        }
        PersistError::InvalidPayload { reason } | PersistError::Compression { reason } => {
            let _: &&'static str = reason;
        }
        PersistError::IndexBuild(inner) => {
            let _: &IqdbError = inner;
        }
        PersistError::Unsupported {
            feature,
            available_in,
        } => {
            let _: (&&'static str, &&'static str) = (feature, available_in);
        }
        // `#[non_exhaustive]` in 1.0 too: users match with a wildcard.
        _ => {}
    }
}

fn assert_error<E: std::error::Error + Send + Sync + 'static>() {}
fn assert_forge_error<E: error_forge::ForgeError>() {}

#[test]
fn persist_error_variants_conversions_and_traits() {
    assert_error::<PersistError>();
    assert_forge_error::<PersistError>();

    let errors = every_v1_variant();
    assert_eq!(errors.len(), 13, "1.0 has 13 variants");
    for error in &errors {
        field_types(error);
        assert!(!error.to_string().is_empty(), "Display of {error:?}");
        // The ForgeError kind names the variant, as 1.0's does.
        let kind = error_forge::ForgeError::kind(error);
        assert!(
            format!("{error:?}").starts_with(kind),
            "ForgeError::kind {kind:?} for {error:?}"
        );
        assert!(!error_forge::ForgeError::caption(error).is_empty());
        // `source()` exposes the wrapped error for the two variants that
        // wrap one, as in 1.0.
        let wraps = matches!(error, PersistError::Io { .. } | PersistError::IndexBuild(_));
        assert_eq!(
            std::error::Error::source(error).is_some(),
            wraps,
            "source() of {error:?}"
        );
    }
    let io_source = std::error::Error::source(&errors[0]).unwrap();
    assert_eq!(io_source.to_string(), "disk on fire");

    let converted: PersistError = PersistError::from(IqdbError::Duplicate);
    assert!(matches!(
        converted,
        PersistError::IndexBuild(IqdbError::Duplicate)
    ));
    let via_question_mark = || -> Result<()> { Err(IqdbError::NotFound)? };
    assert!(matches!(
        via_question_mark(),
        Err(PersistError::IndexBuild(IqdbError::NotFound))
    ));

    // `Result<T>` is `std::result::Result<T, PersistError>`.
    let std_result: std::result::Result<u8, PersistError> = Ok(1);
    let alias: Result<u8> = std_result;
    assert_eq!(alias.ok(), Some(1));
}

// ---------------------------------------------------------------------------
// format, checksum, VERSION.
// ---------------------------------------------------------------------------

fn assert_header_derives<T: Clone + Debug + PartialEq + Eq>() {}

#[test]
fn format_items_and_root_reexports() {
    let magic: [u8; 8] = format::MAGIC;
    let current: u32 = format::CURRENT_VERSION;
    assert_eq!(&magic, b"IQDBPRST");
    assert_eq!(current, 2, "CURRENT_VERSION stays 1.0's (= 2)");
    assert_eq!(MAGIC, format::MAGIC, "MAGIC re-exported at the root");
    assert_eq!(CURRENT_VERSION, format::CURRENT_VERSION);
    assert_header_derives::<FileHeader>();

    let read: fn(&mut dyn Read) -> Result<FileHeader> = format::read_header;
    let write: fn(&mut dyn Write, &FileHeader) -> Result<()> = format::write_header;

    // The root re-export is the same type as `format::FileHeader`.
    let header: iqdb_persist::FileHeader = format::FileHeader {
        magic: MAGIC,
        version: CURRENT_VERSION,
        index_type: String::from("flat"),
        dim: 3_usize,
        metric: DistanceMetric::Manhattan,
        n_vectors: 10_usize,
        crc32: 0xDEAD_BEEF_u32,
    };
    let FileHeader {
        magic,
        version,
        index_type,
        dim,
        metric,
        n_vectors,
        crc32,
    } = header.clone();
    let _: ([u8; 8], u32, String, usize, DistanceMetric, usize, u32) =
        (magic, version, index_type, dim, metric, n_vectors, crc32);

    let mut bytes = Vec::new();
    write(&mut bytes, &header).unwrap();
    assert_eq!(&bytes[..8], b"IQDBPRST");
    assert_eq!(read(&mut bytes.as_slice()).unwrap(), header);
    let err = read(&mut &bytes[..bytes.len() - 1]).expect_err("a cut header");
    assert!(
        matches!(err, PersistError::TruncatedHeader { .. }),
        "{err:?}"
    );
}

#[test]
fn checksum_items() {
    let compute: fn(&[u8]) -> u32 = checksum::compute;
    let verify: fn(&[u8], u32) -> Result<()> = checksum::verify;
    // CRC-32/IEEE check value.
    assert_eq!(compute(b"123456789"), 0xCBF4_3926);
    assert!(verify(b"123456789", 0xCBF4_3926).is_ok());
    assert!(matches!(
        verify(b"123456789", 7),
        Err(PersistError::ChecksumMismatch {
            expected: 7,
            computed: 0xCBF4_3926
        })
    ));
}

#[test]
fn version_constant() {
    let version: &'static str = VERSION;
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    assert!(version.starts_with("1."), "a 1.x release: {version}");
}

// ---------------------------------------------------------------------------
// The `serde` feature.
// ---------------------------------------------------------------------------

#[cfg(feature = "serde")]
fn assert_serde<T: serde::Serialize + serde::de::DeserializeOwned>() {}

#[cfg(feature = "serde")]
#[test]
fn serde_feature_derives_on_config_types() {
    assert_serde::<PersistConfig>();
    assert_serde::<FsyncPolicy>();
    assert_serde::<Compression>();
}
