//! Checks that the published `iqdb` 1.x crate, the real consumer of
//! iqdb-persist, works unchanged over this repository's iqdb-persist.
//!
//! This library is empty on purpose: the checks are the integration tests
//! in `tests/`. `Cargo.toml` patches the registry's `iqdb-persist` with the
//! path crate `../../crates/iqdb-persist`, so `iqdb` compiles against ours;
//! `tests/resolution.rs` proves that it did.

#![forbid(unsafe_code)]
