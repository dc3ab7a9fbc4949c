//! Helpers shared by the replication examples (the bench and the soak):
//! a bucket on the local S3 server, store options for it, a WAL config and
//! percentiles.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;

use iqdb_persist::{FsyncPolicy, PersistConfig};
use iqdb_persist_replicate::StoreOptions;

/// Creates bucket `name` on the S3 server at `endpoint` (`http://host:port`).
pub fn bucket(endpoint: &str, name: &str) {
    let addr = endpoint.strip_prefix("http://").unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "PUT /{name} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
}

/// Store options for the local S3 server (plain HTTP, fixed keys).
pub fn options(endpoint: &str) -> StoreOptions {
    StoreOptions {
        endpoint: Some(endpoint.to_string()),
        allow_http: Some(true),
        access_key_id: Some("bench".into()),
        secret_access_key: Some("bench".into()),
        ..StoreOptions::default()
    }
}

/// A WAL-mode config at `path` with `policy`.
pub fn config(path: &Path, policy: FsyncPolicy) -> PersistConfig {
    let mut c = PersistConfig::new(path);
    c.wal_enabled = true;
    c.fsync_policy = policy;
    c
}

/// The `p` quantile of sorted values (NaN when there are none).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
