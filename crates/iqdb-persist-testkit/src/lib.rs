//! # iqdb-persist-testkit
//!
//! A reference index and payload-level checks for
//! [`iqdb-persist`](iqdb_persist).
//!
//! The persistence layer is generic over any index that implements
//! [`iqdb_persist::Persistable`], so its tests, benchmarks, command-line
//! tool and interop tests need a concrete index, and index authors need a
//! way to check their own implementation. This crate provides both:
//!
//! * [`VectorStore`] ([`store`]): an exact, brute-force index that is real
//!   rather than a mock. It enforces the `iqdb_index` contracts strictly,
//!   searches exactly under all five metrics with metadata filters, and
//!   compares exactly after a round trip.
//! * [`codec`]: its payload format, documented byte by byte, decoded in
//!   bounded memory and without panics on hostile input, and usable without
//!   `iqdb-persist`'s error type ([`VectorStore::encode`],
//!   [`VectorStore::decode`], [`DecodeError`]).
//! * [`generate`]: deterministic sample records whose values never change
//!   across releases, for golden files and benchmarks.
//! * [`check`]: round-trip, truncation and bit-flip checks for any
//!   `Persistable` implementation.
//! * [`simfs`]: a simulated file system that loses unsynced writes the way
//!   a power cut does, for crash-testing the persistence layer.
//!
//! ## Example
//!
//! ```
//! use std::sync::Arc;
//! use iqdb_index::{Index, IndexCore};
//! use iqdb_persist::Persistable;
//! use iqdb_persist_testkit::VectorStore;
//! use iqdb_types::{DistanceMetric, VectorId};
//!
//! # fn main() -> iqdb_persist::Result<()> {
//! let mut store = VectorStore::new(3, DistanceMetric::Cosine, Default::default())?;
//! store.insert(VectorId::from(1u64), Arc::from(vec![1.0, 0.0, 0.0]), None)?;
//!
//! let mut payload = Vec::new();
//! store.save_to(&mut payload)?;
//! let loaded = VectorStore::load_from(&mut payload.as_slice())?;
//! assert_eq!(loaded, store);
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod check;
pub mod codec;
mod filter;
pub mod generate;
pub mod simfs;
pub mod store;

pub use crate::codec::DecodeError;
pub use crate::store::{INDEX_TYPE, VectorStore, VectorStoreConfig};

/// This crate's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
