//! Credentials from object_store's own chain, not only `AWS_*` keys: a
//! replicator with no key configured anywhere gets temporary credentials
//! from the EC2 instance-metadata service (IMDSv2) or from an EKS Pod
//! Identity / container credentials endpoint — both played by a small HTTP
//! server in this test — and replicates to the moto server with them.
//!
//! The replicator runs in a child process (this test binary again, running
//! only [`child_replicates_with_the_environment_chain`]) so that its
//! environment holds exactly the variables under test and no AWS keys.

#![cfg(feature = "aws")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};

use common::{TestDb, check_restored, new_bucket, s3_endpoint, s3_options};
use iqdb_persist_replicate::{Replica, ReplicateError, Replicator, ReplicatorConfig, StoreOptions};

const KEY_ID: &str = "ASIAIQDBTEMPORARY";
const IMDS_TOKEN: &str = "imds-session-token-1";
const POD_TOKEN: &str = "eks-pod-identity-token";

/// One request the fake credentials server answered: method, path and
/// the headers that matter.
#[derive(Debug, Clone)]
struct Hit {
    method: String,
    path: String,
    imds_token: Option<String>,
    authorization: Option<String>,
}

/// A credentials endpoint on loopback: IMDSv2
/// (`PUT /latest/api/token`, `GET /latest/meta-data/iam/security-credentials/[ROLE]`)
/// and a container-credentials URL (`GET /pod-credentials`, bearer token
/// in `Authorization`). With `refuse`, every request gets a 500.
struct FakeCredentials {
    endpoint: String,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl FakeCredentials {
    fn start(refuse: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let seen = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let method = parts.next().unwrap_or("").to_string();
                let path = parts.next().unwrap_or("").to_string();
                let (mut imds_token, mut authorization) = (None, None);
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = header.trim_end().split_once(':') {
                        let value = Some(value.trim().to_string());
                        match name.to_ascii_lowercase().as_str() {
                            "x-aws-ec2-metadata-token" => imds_token = value,
                            "authorization" => authorization = value,
                            _ => {}
                        }
                    }
                }
                let credentials = format!(
                    r#"{{"Code":"Success","Type":"AWS-HMAC","AccessKeyId":"{KEY_ID}","SecretAccessKey":"temporary-secret","Token":"temporary-session-token","Expiration":"2099-01-01T00:00:00Z"}}"#
                );
                let body = match (refuse, method.as_str(), path.as_str()) {
                    (true, _, _) => None,
                    (_, "PUT", "/latest/api/token") => Some(IMDS_TOKEN.to_string()),
                    (_, "GET", "/latest/meta-data/iam/security-credentials/") => {
                        Some("iqdb-role".to_string())
                    }
                    (_, "GET", "/latest/meta-data/iam/security-credentials/iqdb-role")
                    | (_, "GET", "/pod-credentials") => Some(credentials),
                    _ => None,
                };
                seen.lock().unwrap().push(Hit {
                    method,
                    path,
                    imds_token,
                    authorization,
                });
                let response = match body {
                    Some(body) => format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    ),
                    None => "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
                };
                let _ = stream.write_all(response.as_bytes());
            }
        });
        Self { endpoint, hits }
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
}

/// Runs [`child_replicates_with_the_environment_chain`] in a child process
/// with no AWS variable but `env`; returns its exit status and output.
fn run_child(
    moto: &str,
    bucket: &str,
    db: &std::path::Path,
    env: &[(&str, String)],
) -> (bool, String) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child_replicates_with_the_environment_chain",
        "--nocapture",
        "--test-threads=1",
    ]);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(key);
        }
    }
    // No ~/.aws files either (object_store does not read them; belt and
    // braces for the future).
    cmd.env("HOME", db.parent().unwrap());
    cmd.env("IQDB_CRED_CHILD_MOTO", moto)
        .env("IQDB_CRED_CHILD_BUCKET", bucket)
        .env("IQDB_CRED_CHILD_DB", db);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The child's part: replicate with store options that name no
/// credentials, so only the environment's chain can supply them. A no-op
/// unless started by [`run_child`].
#[test]
fn child_replicates_with_the_environment_chain() {
    let (Ok(moto), Ok(bucket), Ok(db)) = (
        std::env::var("IQDB_CRED_CHILD_MOTO"),
        std::env::var("IQDB_CRED_CHILD_BUCKET"),
        std::env::var("IQDB_CRED_CHILD_DB"),
    ) else {
        return;
    };
    let options = StoreOptions {
        endpoint: Some(moto),
        region: Some("us-east-1".into()),
        allow_http: Some(true),
        max_retries: Some(1),
        ..StoreOptions::default()
    };
    let result = Replica::open(&format!("s3://{bucket}/db"), &options)
        .and_then(|replica| Replicator::new(replica, ReplicatorConfig::new(&db)))
        .and_then(|mut r| {
            let report = r.sync()?;
            r.release()?;
            Ok(report)
        });
    match result {
        Ok(report) => println!("CHILD-OK end_seq={}", report.end_seq),
        Err(e) => {
            println!("CHILD-ERR {e}");
            assert!(matches!(e, ReplicateError::Store { .. }), "{e}");
            std::process::exit(3);
        }
    }
}

fn shipped(moto: &str, bucket: &str) -> Option<u64> {
    Replica::open(&format!("s3://{bucket}/db"), &s3_options(moto))
        .unwrap()
        .manifest()
        .unwrap()
        .map(|m| m.generations.last().unwrap().end_seq())
}

#[test]
fn s3_credentials_from_the_instance_metadata_service() {
    let Some(moto) = s3_endpoint() else {
        return;
    };
    let bucket = new_bucket(&moto, "imds-credentials");
    let mut db = TestDb::new();
    db.insert(7);
    let end = db.next_seq();
    let fake = FakeCredentials::start(false);
    let (ok, out) = run_child(
        &moto,
        &bucket,
        &db.path,
        &[("AWS_METADATA_ENDPOINT", fake.endpoint.clone())],
    );
    assert!(ok, "{out}");
    assert!(out.contains(&format!("CHILD-OK end_seq={end}")), "{out}");
    let hits = fake.hits();
    // The IMDSv2 dance: a session token, the role, then its credentials
    // asked for with that token.
    assert!(
        hits.iter()
            .any(|h| h.method == "PUT" && h.path == "/latest/api/token"),
        "{hits:?}"
    );
    assert!(
        hits.iter().any(
            |h| h.path == "/latest/meta-data/iam/security-credentials/iqdb-role"
                && h.imds_token.as_deref() == Some(IMDS_TOKEN)
        ),
        "{hits:?}"
    );
    assert_eq!(shipped(&moto, &bucket), Some(end));
    let out_dir = tempfile::tempdir().unwrap();
    let report = Replica::open(&format!("s3://{bucket}/db"), &s3_options(&moto))
        .unwrap()
        .restore(&out_dir.path().join("r"), &Default::default())
        .unwrap();
    check_restored(&report.path, end);
}

#[test]
fn s3_credentials_from_a_container_credentials_endpoint() {
    let Some(moto) = s3_endpoint() else {
        return;
    };
    let bucket = new_bucket(&moto, "pod-credentials");
    let mut db = TestDb::new();
    db.insert(3);
    let end = db.next_seq();
    let fake = FakeCredentials::start(false);
    let token_file = db.path.parent().unwrap().join("pod-token");
    std::fs::write(&token_file, POD_TOKEN).unwrap();
    let (ok, out) = run_child(
        &moto,
        &bucket,
        &db.path,
        &[
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                format!("{}/pod-credentials", fake.endpoint),
            ),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                token_file.display().to_string(),
            ),
        ],
    );
    assert!(ok, "{out}");
    let hits = fake.hits();
    assert!(
        hits.iter()
            .any(|h| h.path == "/pod-credentials" && h.authorization.as_deref() == Some(POD_TOKEN)),
        "{hits:?}"
    );
    assert_eq!(shipped(&moto, &bucket), Some(end));
}

/// The control: the same setup with an endpoint that refuses to hand out
/// credentials fails — the requests to the S3 server depend on what the
/// endpoint serves, nothing else signs them.
#[test]
fn s3_without_credentials_from_the_chain_nothing_is_written() {
    let Some(moto) = s3_endpoint() else {
        return;
    };
    let bucket = new_bucket(&moto, "no-credentials");
    let mut db = TestDb::new();
    db.insert(2);
    let fake = FakeCredentials::start(true);
    let (ok, out) = run_child(
        &moto,
        &bucket,
        &db.path,
        &[("AWS_METADATA_ENDPOINT", fake.endpoint.clone())],
    );
    assert!(!ok, "{out}");
    assert!(out.contains("CHILD-ERR"), "{out}");
    assert!(
        fake.hits().iter().any(|h| h.path == "/latest/api/token"),
        "the endpoint was asked: {:?}",
        fake.hits()
    );
    assert_eq!(shipped(&moto, &bucket), None);
}
