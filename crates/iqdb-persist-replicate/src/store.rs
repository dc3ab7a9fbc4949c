//! Opening a replica's object store from a URL: `s3://bucket/prefix` (with
//! the `aws` feature), `file:///dir/prefix` and `memory://name/prefix`.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use crate::error::{ReplicateError, Result};

/// How to reach an S3-compatible server. Every field left `None` falls back
/// to the usual AWS environment variables (`AWS_ENDPOINT_URL`,
/// `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_ALLOW_HTTP`, ...).
#[derive(Clone, Default)]
pub struct StoreOptions {
    /// The endpoint, for example `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    /// The region (`us-east-1` when neither this nor `AWS_REGION` is set).
    pub region: Option<String>,
    /// Allow plain-HTTP endpoints.
    pub allow_http: Option<bool>,
    /// Retries of a failed request (default 2).
    pub max_retries: Option<usize>,
    /// How long one request may take, retries included (default 30 s).
    pub timeout: Option<Duration>,
    /// The access key (else `AWS_ACCESS_KEY_ID`).
    pub access_key_id: Option<String>,
    /// The secret key (else `AWS_SECRET_ACCESS_KEY`).
    pub secret_access_key: Option<String>,
    /// Send unsigned requests (public buckets, local test servers). By
    /// default credentials come from these options, then `object_store`'s
    /// chain: the `AWS_*` variables, web identity (`AWS_WEB_IDENTITY_TOKEN_FILE`),
    /// container credentials, and the instance-metadata service.
    pub unsigned: Option<bool>,
}

impl fmt::Debug for StoreOptions {
    /// Never shows the secret key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreOptions")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("allow_http", &self.allow_http)
            .field("max_retries", &self.max_retries)
            .field("timeout", &self.timeout)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("unsigned", &self.unsigned)
            .finish()
    }
}

/// A parsed replica URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaUrl {
    /// `s3://bucket/prefix`.
    S3 {
        /// The bucket.
        bucket: String,
        /// The key prefix (may be empty).
        prefix: String,
    },
    /// `file:///dir`: the objects are files under `dir`.
    File {
        /// The directory.
        dir: PathBuf,
    },
    /// `memory://name/prefix`: an in-process store shared by name (tests).
    Memory {
        /// The store's name.
        name: String,
        /// The key prefix.
        prefix: String,
    },
}

impl ReplicaUrl {
    /// Parses `s3://bucket/prefix`, `file:///dir` or `memory://name/prefix`.
    ///
    /// ```
    /// use iqdb_persist_replicate::ReplicaUrl;
    ///
    /// let url = ReplicaUrl::parse("s3://backups/db/main").unwrap();
    /// assert_eq!(url, ReplicaUrl::S3 { bucket: "backups".into(), prefix: "db/main".into() });
    /// assert!(ReplicaUrl::parse("ftp://x").is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// [`ReplicateError::Invalid`] for anything else.
    pub fn parse(url: &str) -> Result<Self> {
        let split = |rest: &str| -> (String, String) {
            let rest = rest.trim_matches('/');
            match rest.split_once('/') {
                Some((a, b)) => (a.to_string(), b.trim_matches('/').to_string()),
                None => (rest.to_string(), String::new()),
            }
        };
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = split(rest);
            if bucket.is_empty() {
                return Err(ReplicateError::invalid(format!(
                    "{url}: an s3:// URL needs a bucket (s3://BUCKET/PREFIX)"
                )));
            }
            return Ok(Self::S3 { bucket, prefix });
        }
        if let Some(rest) = url.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(ReplicateError::invalid(format!(
                    "{url}: a file:// URL needs an absolute path (file:///DIR)"
                )));
            }
            return Ok(Self::File {
                dir: PathBuf::from(rest),
            });
        }
        if let Some(rest) = url.strip_prefix("memory://") {
            let (name, prefix) = split(rest);
            return Ok(Self::Memory { name, prefix });
        }
        Err(ReplicateError::invalid(format!(
            "{url}: not a replica URL (expected s3://BUCKET/PREFIX, file:///DIR or memory://NAME)"
        )))
    }
}

impl fmt::Display for ReplicaUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            Self::File { dir } => write!(f, "file://{}", dir.display()),
            Self::Memory { name, prefix } => write!(f, "memory://{name}/{prefix}"),
        }
    }
}

/// The in-process store behind `memory://NAME` (created on first use).
#[must_use]
pub fn memory_store(name: &str) -> Arc<InMemory> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
    let stores = STORES.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = stores
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    map.entry(name.to_string())
        .or_insert_with(|| Arc::new(InMemory::new()))
        .clone()
}

/// Opens the store a URL names and returns it with the key prefix.
pub(crate) fn open(
    url: &ReplicaUrl,
    options: &StoreOptions,
) -> Result<(Arc<dyn ObjectStore>, String)> {
    match url {
        ReplicaUrl::Memory { name, prefix } => Ok((memory_store(name), prefix.clone())),
        ReplicaUrl::File { dir } => {
            std::fs::create_dir_all(dir).map_err(|e| ReplicateError::io(dir, e))?;
            Ok((Arc::new(LocalStore::new(dir)?), String::new()))
        }
        ReplicaUrl::S3 { bucket, prefix } => open_s3(bucket, options).map(|s| (s, prefix.clone())),
    }
}

#[cfg(feature = "aws")]
fn open_s3(bucket: &str, options: &StoreOptions) -> Result<Arc<dyn ObjectStore>> {
    use object_store::aws::AmazonS3Builder;
    use object_store::{BackoffConfig, ClientOptions, RetryConfig};
    let timeout = options.timeout.unwrap_or(Duration::from_secs(30));
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_retry(RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2),
                base: 2.0,
            },
            max_retries: options.max_retries.unwrap_or(2),
            retry_timeout: timeout,
        });
    let mut client = ClientOptions::new()
        .with_timeout(timeout)
        .with_connect_timeout(Duration::from_secs(5));
    let env_allow = std::env::var("AWS_ALLOW_HTTP")
        .map(|v| v.eq_ignore_ascii_case("true") || v == "1")
        .unwrap_or(false);
    if options.allow_http.unwrap_or(env_allow) {
        client = client.with_allow_http(true);
    }
    builder = builder.with_client_options(client);
    if let Some(endpoint) = &options.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    let region = options
        .region
        .clone()
        .or_else(|| std::env::var("AWS_REGION").ok())
        .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
        .unwrap_or_else(|| "us-east-1".to_string());
    builder = builder.with_region(region);
    if let Some(key) = &options.access_key_id {
        builder = builder.with_access_key_id(key);
    }
    if let Some(secret) = &options.secret_access_key {
        builder = builder.with_secret_access_key(secret);
    }
    if options.unsigned == Some(true) {
        builder = builder.with_skip_signature(true);
    }
    // Otherwise object_store's own credential chain: explicit keys, the
    // AWS_* variables, web identity, container credentials, instance
    // metadata.
    let store = builder
        .build()
        .map_err(|e| ReplicateError::store(format!("configuring s3://{bucket}"), e))?;
    Ok(Arc::new(store))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_secret_key() {
        let options = StoreOptions {
            access_key_id: Some("AKIDEXAMPLE".into()),
            secret_access_key: Some("wJalrXUtnFEMI-very-secret".into()),
            ..StoreOptions::default()
        };
        let shown = format!("{options:?}");
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(
            shown.contains("AKIDEXAMPLE") && shown.contains("<redacted>"),
            "{shown}"
        );
    }

    #[test]
    fn file_replicas_are_fsynced() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = LocalStore::new(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let shown = format!("{:?}", store.inner);
        assert!(shown.contains("fsync: true"), "{shown}");
    }
}

#[cfg(not(feature = "aws"))]
fn open_s3(bucket: &str, _options: &StoreOptions) -> Result<Arc<dyn ObjectStore>> {
    Err(ReplicateError::invalid(format!(
        "s3://{bucket}: this build has no S3 support (the `aws` cargo feature of iqdb-persist-replicate)"
    )))
}

/// The local-file-system store, with conditional updates.
///
/// `object_store`'s `LocalFileSystem` supports `PutMode::Create` but not
/// `PutMode::Update`. This wrapper adds it: under an exclusive `flock` on
/// `<dir>/.iqdb-replica.lock` (taken by every conditional put, in any
/// process), it compares the object's current ETag with the expected one and
/// only then replaces the object (atomically, by rename). Everything else is
/// `LocalFileSystem`'s.
#[derive(Debug)]
pub struct LocalStore {
    inner: LocalFileSystem,
    lock_path: PathBuf,
}

impl LocalStore {
    /// A store rooted at `dir` (which must exist).
    ///
    /// # Errors
    ///
    /// When `dir` cannot be used as a root.
    pub fn new(dir: &std::path::Path) -> Result<Self> {
        // Durable as an object store's writes are: each object fsynced
        // with its directory before the put returns.
        let inner = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| ReplicateError::store(format!("opening {}", dir.display()), e))?
            .with_fsync(true);
        Ok(Self {
            inner,
            lock_path: dir.join(".iqdb-replica.lock"),
        })
    }

    fn lock(&self) -> object_store::Result<File> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)
            .map_err(|e| object_store::Error::Generic {
                store: "LocalStore",
                source: Box::new(e),
            })?;
        file.lock().map_err(|e| object_store::Error::Generic {
            store: "LocalStore",
            source: Box::new(e),
        })?;
        Ok(file)
    }
}

impl fmt::Display for LocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocalStore({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for LocalStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        match &opts.mode {
            PutMode::Overwrite => self.inner.put_opts(location, payload, opts).await,
            PutMode::Create => {
                let _guard = self.lock()?;
                self.inner.put_opts(location, payload, opts).await
            }
            PutMode::Update(version) => {
                let _guard = self.lock()?;
                let current = match self.inner.head(location).await {
                    Ok(meta) => meta.e_tag,
                    Err(object_store::Error::NotFound { path, source }) => {
                        return Err(object_store::Error::Precondition { path, source });
                    }
                    Err(e) => return Err(e),
                };
                if current.is_none() || current != version.e_tag {
                    return Err(object_store::Error::Precondition {
                        path: location.to_string(),
                        source: "the object's ETag does not match".into(),
                    });
                }
                let opts = PutOptions {
                    mode: PutMode::Overwrite,
                    ..opts
                };
                self.inner.put_opts(location, payload, opts).await
            }
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
