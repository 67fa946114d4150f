//! Blobs on S3-compatible object storage (AWS S3, MinIO, Ceph, R2, moto …) through `object_store`:
//! the same contract as the local store — content-addressed (`<prefix>/sha256/<2 hex>/<62 hex>`),
//! verified on read, deletable for subject erasure — so many machines share one blob store.
//!
//! Credentials are values handed in by the caller (the CLI reads them from the environment
//! variables the configuration names); nothing here reads the environment, and no credential
//! appears in an error or a `Debug` print.

use crate::blob::{BlobRef, BlobStore};
use crate::error::SpineError;
use async_trait::async_trait;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Where an S3 blob store lives and how to sign its requests.
#[derive(Clone)]
pub struct S3Options {
    /// The bucket.
    pub bucket: String,
    /// Key prefix inside the bucket (no leading or trailing `/`; empty for the bucket's root).
    pub prefix: String,
    /// The endpoint (`https://s3.eu-west-1.amazonaws.com`, `http://127.0.0.1:9000`); `None` for
    /// AWS's own endpoint of `region`.
    pub endpoint: Option<String>,
    /// The region (`us-east-1` for most S3-compatible servers).
    pub region: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Session token, for temporary credentials.
    pub session_token: Option<String>,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl fmt::Debug for S3Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Options")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &"[redacted]")
            .field("secret_access_key", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// Content-addressed blobs in an S3 bucket.
#[derive(Clone)]
pub struct S3BlobStore {
    store: std::sync::Arc<AmazonS3>,
    bucket: String,
    prefix: String,
}

impl fmt::Debug for S3BlobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S3BlobStore({})", self.url())
    }
}

impl S3BlobStore {
    /// A store with `options` (no request is made until the first put, get or [`Self::check`]).
    pub fn new(options: &S3Options) -> Result<Self, SpineError> {
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&options.bucket)
            .with_region(&options.region)
            .with_access_key_id(&options.access_key_id)
            .with_secret_access_key(&options.secret_access_key)
            // A bounded retry: an unreachable endpoint is an error in seconds, not minutes.
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: options.timeout,
                ..RetryConfig::default()
            })
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(options.timeout)
                    .with_connect_timeout(options.timeout),
            );
        if let Some(t) = &options.session_token {
            b = b.with_token(t);
        }
        if let Some(e) = &options.endpoint {
            // Self-hosted servers are addressed by path (`endpoint/bucket/key`), and may be plain
            // HTTP on a private network.
            b = b
                .with_endpoint(e)
                .with_allow_http(e.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        let store = b.build().map_err(|e| SpineError::Remote {
            context: "configuring the S3 blob store",
            location: format!("s3://{}", options.bucket),
            detail: e.to_string(),
        })?;
        Ok(Self {
            store: std::sync::Arc::new(store),
            bucket: options.bucket.clone(),
            prefix: options.prefix.trim_matches('/').to_owned(),
        })
    }

    /// `s3://bucket/prefix`.
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    /// The object key of a reference: `<prefix>/sha256/<2 hex>/<62 hex>`.
    pub fn key_of(&self, r: &BlobRef) -> String {
        let hex = r.hex();
        let (head, tail) = (hex.get(..2).unwrap_or(""), hex.get(2..).unwrap_or(""));
        if self.prefix.is_empty() {
            format!("sha256/{head}/{tail}")
        } else {
            format!("{}/sha256/{head}/{tail}", self.prefix)
        }
    }

    fn location(&self, r: &BlobRef) -> String {
        format!("s3://{}/{}", self.bucket, self.key_of(r))
    }

    fn err(
        &self,
        context: &'static str,
        r: Option<&BlobRef>,
    ) -> impl FnOnce(object_store::Error) -> SpineError {
        let location = r.map_or_else(|| self.url(), |r| self.location(r));
        move |e| SpineError::Remote {
            context,
            location,
            detail: e.to_string(),
        }
    }

    /// Reaches the bucket (lists at most one key under the prefix): a wrong endpoint, bucket or
    /// credential is an error here rather than at the first tool call.
    pub async fn check(&self) -> Result<(), SpineError> {
        let prefix = ObjectPath::from(self.prefix.as_str());
        self.store
            .list_with_delimiter(Some(&prefix))
            .await
            .map(drop)
            .map_err(self.err("reaching the bucket", None))
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn put(&self, bytes: Vec<u8>) -> Result<BlobRef, SpineError> {
        let reference = BlobRef::of(&bytes);
        let key = ObjectPath::from(self.key_of(&reference));
        // Same key, same bytes: a second put overwrites the object with itself. S3 acknowledges
        // a PUT only once the object is durably stored.
        self.store
            .put(&key, PutPayload::from(bytes))
            .await
            .map_err(self.err("writing a blob", Some(&reference)))?;
        Ok(reference)
    }

    async fn get(&self, reference: &BlobRef) -> Result<Vec<u8>, SpineError> {
        let key = ObjectPath::from(self.key_of(reference));
        let got = match self.store.get(&key).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(SpineError::BlobNotFound(reference.to_string()));
            }
            Err(e) => return Err(self.err("reading a blob", Some(reference))(e)),
        };
        let bytes = got
            .bytes()
            .await
            .map_err(self.err("reading a blob", Some(reference)))?
            .to_vec();
        let actual = BlobRef::of(&bytes);
        if actual != *reference {
            return Err(SpineError::BlobCorrupt {
                reference: reference.to_string(),
                actual: actual.hex().to_owned(),
                path: PathBuf::from(self.location(reference)),
            });
        }
        Ok(bytes)
    }

    async fn delete(&self, reference: &BlobRef) -> Result<bool, SpineError> {
        let key = ObjectPath::from(self.key_of(reference));
        // S3's DELETE succeeds whether or not the key exists; the HEAD tells which it was.
        match self.store.head(&key).await {
            Ok(_) => {}
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(self.err("deleting a blob", Some(reference))(e)),
        }
        self.store
            .delete(&key)
            .await
            .map_err(self.err("deleting a blob", Some(reference)))?;
        Ok(true)
    }
}
