//! Error parity with 1.0: each of 1.0's `PersistError` variants, built with
//! the same values in both versions, classifies the same way through
//! `error_forge::ForgeError` and `std::error::Error::source`, so code that
//! routes or reports errors by kind behaves the same after the upgrade.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use error_forge::ForgeError;
use iqdb_persist::PersistError as Ours;
use iqdb_persist_v1::PersistError as Theirs;
use iqdb_types::{DistanceMetric, IqdbError};

fn io() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied")
}

/// The same 13 errors in both versions.
fn pairs() -> Vec<(Ours, Theirs)> {
    let path = PathBuf::from("/data/db.iqdb");
    vec![
        (
            Ours::Io {
                path: path.clone(),
                source: io(),
            },
            Theirs::Io { path, source: io() },
        ),
        (
            Ours::BadMagic {
                found: *b"garbage!",
            },
            Theirs::BadMagic {
                found: *b"garbage!",
            },
        ),
        (
            Ours::UnsupportedVersion {
                found: 7,
                supported: 2,
            },
            Theirs::UnsupportedVersion {
                found: 7,
                supported: 2,
            },
        ),
        (
            Ours::ChecksumMismatch {
                expected: 1,
                computed: 2,
            },
            Theirs::ChecksumMismatch {
                expected: 1,
                computed: 2,
            },
        ),
        (
            Ours::TruncatedHeader {
                needed: 8,
                found: 3,
            },
            Theirs::TruncatedHeader {
                needed: 8,
                found: 3,
            },
        ),
        (
            Ours::TruncatedPayload {
                needed: 80,
                found: 30,
            },
            Theirs::TruncatedPayload {
                needed: 80,
                found: 30,
            },
        ),
        (
            Ours::InvalidMetric { tag: 9 },
            Theirs::InvalidMetric { tag: 9 },
        ),
        (
            Ours::UnsupportedMetric {
                metric: DistanceMetric::Cosine,
            },
            Theirs::UnsupportedMetric {
                metric: DistanceMetric::Cosine,
            },
        ),
        (
            Ours::InvalidIndexType {
                found: "hnsw".into(),
                expected: "flat",
            },
            Theirs::InvalidIndexType {
                found: "hnsw".into(),
                expected: "flat",
            },
        ),
        (
            Ours::InvalidPayload { reason: "bad" },
            Theirs::InvalidPayload { reason: "bad" },
        ),
        (
            Ours::Compression { reason: "bad" },
            Theirs::Compression { reason: "bad" },
        ),
        (
            Ours::from(IqdbError::Duplicate),
            Theirs::from(IqdbError::Duplicate),
        ),
        (
            Ours::Unsupported {
                feature: "zstd",
                available_in: "the zstd feature",
            },
            Theirs::Unsupported {
                feature: "zstd",
                available_in: "the zstd feature",
            },
        ),
    ]
}

#[test]
fn forge_error_classification_matches_v1() {
    for (ours, theirs) in pairs() {
        assert_eq!(ours.kind(), theirs.kind(), "kind of {ours:?}");
        assert_eq!(
            ours.is_retryable(),
            theirs.is_retryable(),
            "is_retryable of {ours:?}"
        );
        assert_eq!(ours.is_fatal(), theirs.is_fatal(), "is_fatal of {ours:?}");
        assert_eq!(
            ours.status_code(),
            theirs.status_code(),
            "status_code of {ours:?}"
        );
        assert_eq!(
            ours.exit_code(),
            theirs.exit_code(),
            "exit_code of {ours:?}"
        );
    }
}

#[test]
fn error_sources_match_v1() {
    for (ours, theirs) in pairs() {
        let ours_source = std::error::Error::source(&ours).map(ToString::to_string);
        let theirs_source = std::error::Error::source(&theirs).map(ToString::to_string);
        assert_eq!(ours_source, theirs_source, "source() of {ours:?}");
    }
}

/// `Debug` output is what `{:?}` logs and test assertions print; it is
/// derived in both, so it must agree variant for variant.
#[test]
fn debug_output_matches_v1() {
    for (ours, theirs) in pairs() {
        assert_eq!(format!("{ours:?}"), format!("{theirs:?}"));
    }
}
