//! koop's cache shared on object storage (S3, Google Cloud Storage, Azure Blob, an S3-compatible
//! server, or a local folder), through the `object_store` crate.
//!
//! A [`SharedStore`] holds cache entries under a prefix with the local cache's layout: the data
//! objects under their entry names (`{stem}.gpkg`, `{stem}/{tile}.tif`, `{stem}.xml`) and the
//! manifest `{stem}.json`, uploaded last, so that an entry exists exactly when its manifest
//! does. Data streams both ways in bounded memory (multipart uploads of 8 MiB parts; downloads
//! hashed with BLAKE3 as they are written and checked against the manifest).
//!
//! Exactly one machine exports a layer version: before exporting it takes a [`Lease`] on the
//! entry's data name, a small object created with a create-if-absent put (`PutMode::Create`,
//! `If-None-Match: *` on S3) holding its owner and expiry. It renews the lease while it works
//! (a conditional update on the lease's ETag, which fails once another machine has taken it
//! over); others wait for the manifest, or take over a lease whose expiry has passed. Expiry is
//! an absolute time written by the holder's clock: machines sharing a store keep their clocks
//! in sync to well within the lease time.
//!
//! A version that changed only metadata is shared as a manifest that points at the objects of
//! the entry with the same data ([`SharedStore::put_link`], found by [`SharedStore::same_data`]).
//! An upload checks that the store holds every object's full size before writing the manifest.
//! [`SharedStore::inventory`], [`SharedStore::verify`] and [`SharedStore::gc`] serve
//! `koop cache ls|verify|gc` on a bucket. Requests are retried 6 times within 60 s.
//!
//! Credentials, region and endpoint come from `object_store`'s standard environment variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`,
//! `GOOGLE_SERVICE_ACCOUNT`, `AZURE_STORAGE_ACCOUNT_NAME`, …) or explicit options; they never
//! appear in a manifest, an error or a log line.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use koop_store::{LeaseState, SharedStore};
//!
//! # async fn run(entry: koop_cache::CacheEntry, cache_root: &std::path::Path) -> koop_store::Result<()> {
//! let store = SharedStore::from_url("s3://team-bucket/koop")?;
//! // Leases are on the data name (`{layer}_{fingerprint}`, koop_cache::EntryKey::data_name).
//! match store.lease("1474_9f14ab3c", "analyst-laptop/812", Duration::from_secs(60)).await? {
//!     LeaseState::Acquired(lease) => {
//!         // … export the layer into the local cache, then share it:
//!         store.upload(cache_root, &entry.manifest).await?;
//!         lease.release().await?;
//!     }
//!     LeaseState::Held { owner, .. } => println!("{owner} is exporting it; wait for its manifest"),
//! }
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;

pub use entry::Downloaded;
pub use error::{Error, Result};
pub use lease::{Lease, LeaseState};
pub use maintenance::{Inventory, StoreGcReport, StoreVerifyReport, StoredObject};

mod entry;
mod error;
mod lease;
mod maintenance;

/// A cache shared on object storage: a store and the prefix under which entries live.
#[derive(Clone)]
pub struct SharedStore {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    /// The location as given, without credentials, for messages.
    location: String,
}

impl std::fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// `true` when `text` names a store URL rather than a local path: `s3://`, `gs://`, `az://`,
/// `abfs://`, `file://`, `http(s)://`.
pub fn is_store_url(text: &str) -> bool {
    [
        "s3://", "s3a://", "gs://", "az://", "abfs://", "abfss://", "adl://", "file://", "http://",
        "https://",
    ]
    .iter()
    .any(|scheme| text.starts_with(scheme))
}

impl SharedStore {
    /// The store at `url` (`s3://bucket/prefix`, `gs://…`, `az://…`, `file:///path`), configured
    /// from `object_store`'s environment variables.
    ///
    /// # Errors
    ///
    /// [`Error::Location`] when the URL is not a store URL or the store cannot be configured.
    pub fn from_url(url: &str) -> Result<Self> {
        Self::from_url_with(url, std::env::vars())
    }

    /// As [`SharedStore::from_url`], with configuration `options` (`object_store`'s keys, such as
    /// `aws_endpoint`, `aws_allow_http`, `aws_access_key_id`) instead of the environment. For S3,
    /// conditional puts use ETags (`If-None-Match`/`If-Match`) unless `aws_conditional_put` says
    /// otherwise.
    ///
    /// # Errors
    ///
    /// [`Error::Location`].
    pub fn from_url_with(
        url: &str,
        options: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self> {
        let location = |reason: String| Error::Location {
            location: redacted(url),
            reason,
        };
        let parsed = url::Url::parse(url).map_err(|error| location(error.to_string()))?;
        let mut options: Vec<(String, String)> = options
            .into_iter()
            .map(|(key, value)| (key.to_ascii_lowercase(), value))
            .collect();
        if matches!(parsed.scheme(), "s3" | "s3a")
            && !options.iter().any(|(key, _)| key == "aws_conditional_put")
        {
            options.push(("aws_conditional_put".to_owned(), "etag".to_owned()));
        }
        let (store, prefix) =
            open_store(&parsed, options).map_err(|error| location(error.to_string()))?;
        Ok(Self {
            store,
            prefix,
            location: redacted(url),
        })
    }

    /// A shared store on `store` under `prefix`.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str, location: &str) -> Self {
        Self {
            store,
            prefix: ObjectPath::from(prefix),
            location: redacted(location),
        }
    }

    /// Where the store is, for messages (`s3://bucket/prefix`; no credentials).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The object path of `relative` (a `/`-separated path of the cache layout).
    pub(crate) fn path(&self, relative: &str) -> ObjectPath {
        let mut path = self.prefix.clone();
        for part in relative.split('/').filter(|part| !part.is_empty()) {
            path = path.join(part);
        }
        path
    }
}

/// How a request to the store is retried: `object_store`'s backoff (100 ms doubling to 15 s), at
/// most [`RETRIES`] times within [`RETRY_WINDOW`]. A store that keeps failing past that is
/// reported as failed (the local entry stays valid) instead of holding a run for minutes.
const RETRIES: usize = 6;
/// See [`RETRIES`].
const RETRY_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

fn retry() -> object_store::RetryConfig {
    object_store::RetryConfig {
        max_retries: RETRIES,
        retry_timeout: RETRY_WINDOW,
        ..object_store::RetryConfig::default()
    }
}

/// As `object_store::parse_url_opts` (keys it does not know are ignored), with koop's retries.
fn open_store(
    url: &url::Url,
    options: Vec<(String, String)>,
) -> std::result::Result<(Arc<dyn ObjectStore>, ObjectPath), object_store::Error> {
    use object_store::ObjectStoreScheme;
    macro_rules! configured {
        ($builder:ty) => {{
            let builder = options.into_iter().fold(
                <$builder>::new()
                    .with_url(url.to_string())
                    .with_retry(retry()),
                |builder, (key, value)| match key.parse() {
                    Ok(key) => builder.with_config(key, value),
                    Err(_) => builder,
                },
            );
            Arc::new(builder.build()?) as Arc<dyn ObjectStore>
        }};
    }
    let (scheme, path) = ObjectStoreScheme::parse(url)?;
    let store = match scheme {
        ObjectStoreScheme::AmazonS3 => configured!(object_store::aws::AmazonS3Builder),
        ObjectStoreScheme::GoogleCloudStorage => {
            configured!(object_store::gcp::GoogleCloudStorageBuilder)
        }
        ObjectStoreScheme::MicrosoftAzure => {
            configured!(object_store::azure::MicrosoftAzureBuilder)
        }
        _ => {
            let (store, path) = object_store::parse_url_opts(url, options)?;
            return Ok((Arc::from(store), path));
        }
    };
    Ok((store, path))
}

/// `url` without user information or query (which may hold credentials).
fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.to_string()
        }
        Err(_) => url.split(['?', '#']).next().unwrap_or_default().to_owned(),
    }
}
