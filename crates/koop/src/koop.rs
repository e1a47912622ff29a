//! `Koop`: a connection, a cache and an exporter, and the one operation they exist for.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use koop_api::{ConnectionBuilder, KoordinatesConnection, LayerDetails, LayerKind};
use koop_cache::{Cache, CacheEntry, EntryKey, EntryLock, LayerInfo, StagedFile, StagedLayer};
use koop_export::{
    DEFAULT_CRS, ExportOptions, ExportSpec, Exporter, ExtractedLayer, FetchOutcome, LayerEvent,
    Observer, Quiet,
};
use koop_types::{Domain, Epsg};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// How many times a fetch starts over when the layer's data changes during its export.
const VERSION_ATTEMPTS: u32 = 3;

/// A layer on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchedLayer {
    /// The file to open: a `.gpkg`, a `.tif`, or the `.vrt` of a mosaic of tiles.
    pub path: PathBuf,
    /// How it was obtained.
    pub outcome: FetchOutcome,
    /// Its cache entry (manifest: versions, size, BLAKE3, export id, the changeset it was built
    /// from, …).
    pub entry: CacheEntry,
    /// For a layer exported in full ([`FetchOutcome::Downloaded`]): why no changeset was used
    /// instead (no cached previous version, no changeset service, the schema changed, the
    /// changeset failed or disagreed with the version's feature count, …).
    pub full_export_reason: Option<String>,
    /// With a shared cache: why a version exported (or built) here is not in it (the store
    /// failed or held a truncated upload, another machine took the lease over); `None` once
    /// shared, and without a shared cache. The local entry is valid either way.
    pub not_shared: Option<String>,
}

/// Gets Koordinates layers onto disk exactly once.
///
/// A `Koop` holds a [`KoordinatesConnection`] (one pooled HTTP client), a [`Cache`] and an
/// [`Exporter`]; build one with [`Koop::builder`] and share it (it is cheap to clone).
#[derive(Debug, Clone)]
pub struct Koop {
    pub(crate) connection: Option<KoordinatesConnection>,
    pub(crate) domain: Domain,
    pub(crate) cache: Cache,
    exporter: Option<Exporter>,
    pub(crate) crs: Epsg,
    pub(crate) extent: Option<serde_json::Value>,
    offline: bool,
    pub(crate) cancel: CancellationToken,
    pub(crate) changesets: bool,
    pub(crate) shared: Option<crate::shared::Shared>,
}

/// Builds a [`Koop`].
#[derive(Debug, Default)]
#[must_use]
pub struct KoopBuilder {
    connection: Option<KoordinatesConnection>,
    connection_builder: ConnectionBuilder,
    cache: Option<Cache>,
    cache_dir: Option<PathBuf>,
    export_options: ExportOptions,
    crs: Option<Epsg>,
    extent: Option<serde_json::Value>,
    offline: bool,
    cancel: CancellationToken,
    no_changesets: bool,
    shared: Option<koop_store::SharedStore>,
    lease_ttl: Option<Duration>,
}

impl KoopBuilder {
    /// Uses this connection (domain, key, retries) instead of building one.
    pub fn connection(mut self, connection: KoordinatesConnection) -> Self {
        self.connection = Some(connection);
        self
    }

    /// The API key; `None` reads `KOORDINATES_API_KEY` (or the variable set with
    /// [`KoopBuilder::api_key_env`]).
    pub fn api_key(mut self, api_key: Option<String>) -> Self {
        self.connection_builder = self.connection_builder.api_key(api_key);
        self
    }

    /// The environment variable the key falls back to.
    pub fn api_key_env(mut self, variable: impl Into<String>) -> Self {
        self.connection_builder = self.connection_builder.api_key_env(variable);
        self
    }

    /// The Koordinates site (default `ttgroup.koordinates.com`), as a host name or URL (see
    /// [`koop_api::ConnectionBuilder::domain`]).
    pub fn domain(mut self, domain: impl AsRef<str>) -> Self {
        self.connection_builder = self.connection_builder.domain(domain);
        self
    }

    /// Settings of the connection that is built (ignored with [`KoopBuilder::connection`]).
    pub fn configure_connection(
        mut self,
        configure: impl FnOnce(ConnectionBuilder) -> ConnectionBuilder,
    ) -> Self {
        self.connection_builder = configure(self.connection_builder);
        self
    }

    /// Uses this cache.
    pub fn cache(mut self, cache: Cache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The cache root (default `KOOPCACHE_DIR`, then the platform cache directory).
    pub fn cache_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.cache_dir = dir;
        self
    }

    /// Deadline, polling and download settings of exports.
    pub fn export_options(mut self, options: ExportOptions) -> Self {
        self.export_options = options;
        self
    }

    /// The CRS to export in (default EPSG:2193, NZTM2000).
    pub fn crs(mut self, crs: Epsg) -> Self {
        self.crs = Some(crs);
        self
    }

    /// Crops exports to `extent`, a GeoJSON geometry in EPSG:4326.
    pub fn extent(mut self, extent: Option<serde_json::Value>) -> Self {
        self.extent = extent;
        self
    }

    /// Whether a new version of a cached vector layer or table may be built from the cached
    /// previous version plus Koordinates' WFS changeset between the two, instead of a full
    /// export (default `true`; see [`Koop::fetch_layer`]).
    pub fn changesets(mut self, enabled: bool) -> Self {
        self.no_changesets = !enabled;
        self
    }

    /// Shares the cache with other machines through `store` (object storage): a version the
    /// local cache lacks is downloaded from the store when another machine put it there, else
    /// exported here under a lease (so one machine exports it) and uploaded. The local cache
    /// stays the one files are read from.
    pub fn shared_cache(mut self, store: Option<koop_store::SharedStore>) -> Self {
        self.shared = store;
        self
    }

    /// How long a lease on the shared cache lasts without renewal (default
    /// [`crate::DEFAULT_LEASE_TTL`]): how long a crashed machine delays the others.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = Some(ttl);
        self
    }

    /// Answers from the cache alone, making no request (no API key needed).
    pub fn offline(mut self, offline: bool) -> Self {
        self.offline = offline;
        self
    }

    /// Stops every fetch of the `Koop` when `cancel` is cancelled (on Ctrl-C, say): each ends with
    /// [`koop_export::Error::Interrupted`]; exports it created that are still processing are
    /// cancelled on the server; a download in progress is kept on disk, and the next fetch of
    /// the same layer version resumes it with a Range request; locks are released and no staging
    /// directory stays behind. Entries already published stay valid.
    pub fn cancellation(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// Builds the `Koop`. Offline, a missing API key is not an error.
    ///
    /// # Errors
    ///
    /// [`Error::Api`] when the connection cannot be built (no key, bad domain);
    /// [`Error::Cache`] when the cache root cannot be created or written.
    pub fn build(self) -> Result<Koop> {
        let cache = match self.cache {
            Some(cache) => cache,
            None => Cache::open(self.cache_dir)?,
        };
        let (connection, domain) = match self.connection {
            Some(connection) => {
                let domain = connection.domain().to_owned();
                (Some(connection), domain)
            }
            None => match self.connection_builder.clone().build() {
                Ok(connection) => {
                    let domain = connection.domain().to_owned();
                    (Some(connection), domain)
                }
                Err(koop_api::Error::MissingApiKey { .. }) if self.offline => {
                    // Offline needs only the domain, normalised as a connection would.
                    let probe = self
                        .connection_builder
                        .api_key(Some("offline".to_owned()))
                        .build()?;
                    (None, probe.domain().to_owned())
                }
                Err(error) => return Err(error.into()),
            },
        };
        let exporter = connection.clone().map(|connection| {
            Exporter::new(connection, self.export_options).with_cancellation(self.cancel.clone())
        });
        Ok(Koop {
            connection,
            domain,
            cache,
            exporter,
            crs: self.crs.unwrap_or(DEFAULT_CRS),
            extent: self.extent,
            offline: self.offline,
            cancel: self.cancel,
            changesets: !self.no_changesets,
            shared: self.shared.map(|store| crate::shared::Shared {
                store,
                owner: crate::shared::owner(),
                ttl: self
                    .lease_ttl
                    .unwrap_or(crate::shared::DEFAULT_LEASE_TTL)
                    .max(Duration::from_millis(300)),
            }),
        })
    }
}

/// Runs a blocking cache operation off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| Error::Task(error.to_string()))?
}

impl Koop {
    /// A builder with the defaults: `ttgroup.koordinates.com`, key from `KOORDINATES_API_KEY`,
    /// cache from `KOOPCACHE_DIR`, EPSG:2193.
    pub fn builder() -> KoopBuilder {
        KoopBuilder::default()
    }

    /// The Koordinates domain.
    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// The cache.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The connection (`None` when offline without a key).
    pub fn connection(&self) -> Option<&KoordinatesConnection> {
        self.connection.as_ref()
    }

    /// Whether this `Koop` answers from the cache alone.
    pub fn is_offline(&self) -> bool {
        self.offline
    }

    /// The token that interrupts this `Koop`'s fetches ([`KoopBuilder::cancellation`]).
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    pub(crate) fn interrupted(layer_id: u64, stage: &'static str) -> Error {
        Error::Export(koop_export::Error::Interrupted {
            layer_id,
            stage,
            export_id: None,
        })
    }

    fn online(&self, what: impl Into<String>) -> Result<(&KoordinatesConnection, &Exporter)> {
        match (&self.connection, &self.exporter, self.offline) {
            (Some(connection), Some(exporter), false) => Ok((connection, exporter)),
            _ => Err(Error::Offline { what: what.into() }),
        }
    }

    /// The current details of a layer or table: `GET layers/{id}/`, falling back to
    /// `GET tables/{id}/`. When the cache says the id is a table, tables are asked first.
    ///
    /// # Errors
    ///
    /// [`Error::Offline`]; [`Error::Api`] (not found, unauthorized, …).
    pub async fn layer_details(&self, layer_id: u64) -> Result<LayerDetails> {
        let (connection, _) = self.online(format!("the details of layer {layer_id}"))?;
        let cached_kind = self
            .cache
            .newest(&self.domain, layer_id)
            .ok()
            .flatten()
            .map(|entry| entry.manifest.kind);
        if cached_kind.as_deref() == Some(LayerKind::Table.as_str()) {
            match connection.table_details(layer_id).await {
                Err(error) if error.is_not_found() => {}
                other => return Ok(other?),
            }
        }
        Ok(connection.item_details(layer_id).await?)
    }

    /// The path of the layer's current version on disk, downloading it only if that version is
    /// not cached yet. See [`Koop::fetch_layer`].
    ///
    /// # Errors
    ///
    /// As [`Koop::fetch_layer`].
    pub async fn get_layer(&self, layer_id: u64) -> Result<PathBuf> {
        Ok(self.fetch_layer(layer_id, &Quiet).await?.path)
    }

    /// Gets a layer's current version onto disk, exactly once:
    ///
    /// 1. `GET layers/{id}/` (the only request of a cache hit);
    /// 2. the version in the cache → its path ([`FetchOutcome::Cached`]);
    /// 3. a version that changed only metadata → the cached data linked under its name
    ///    ([`FetchOutcome::Linked`]);
    /// 4. otherwise, holding the data's lock (another task or process fetching it makes this one
    ///    wait and then find it cached): export, wait, check the layer again (an export is of the
    ///    layer, not of a version: data that changed meanwhile starts the fetch over), download,
    ///    extract, publish ([`FetchOutcome::Downloaded`]).
    ///
    /// Offline, the newest cached version (in this CRS and extent) is answered without any
    /// request to Koordinates ([`FetchOutcome::Offline`]); with a shared cache and nothing
    /// local, the newest version the shared cache holds is downloaded ([`FetchOutcome::Shared`]). Nothing half-written is left behind by an error or by
    /// dropping the future, and earlier entries stay valid.
    ///
    /// # Errors
    ///
    /// [`Error::NotCached`] offline; [`Error::Api`]; [`Error::Export`] (unsupported kind, invalid
    /// or failed export, deadline, broken download, damaged or hostile ZIP); [`Error::Cache`];
    /// [`Error::NoVersion`]; [`Error::VersionKeptChanging`].
    pub async fn fetch_layer(
        &self,
        layer_id: u64,
        observer: &dyn Observer,
    ) -> Result<FetchedLayer> {
        match self.lookup(layer_id, observer).await? {
            Lookup::Found(fetched) => Ok(*fetched),
            Lookup::Missing(details) => {
                self.fetch_missing(layer_id, *details, observer, &Limits::default())
                    .await
            }
        }
    }

    /// [`Koop::fetch_layer`] under a [`FetchPolicy`]: a layer of a kind the policy does not allow
    /// is refused from its details, before any export ([`Error::KindNotAllowed`]; a version
    /// already cached is still answered), and exports wait for one of the policy's export slots,
    /// shared by every fetch given the same policy.
    ///
    /// # Errors
    ///
    /// As [`Koop::fetch_layer`], and [`Error::KindNotAllowed`].
    pub async fn fetch_layer_with(
        &self,
        layer_id: u64,
        policy: &FetchPolicy,
        observer: &dyn Observer,
    ) -> Result<FetchedLayer> {
        match self.lookup(layer_id, observer).await? {
            Lookup::Found(fetched) => Ok(*fetched),
            Lookup::Missing(details) => {
                if let Some(kinds) = &policy.kinds {
                    let kind = details.kind.clone();
                    if !kind.as_ref().is_some_and(|kind| kinds.contains(kind)) {
                        return Err(Error::KindNotAllowed {
                            domain: self.domain.clone(),
                            layer_id,
                            kind: kind
                                .map_or_else(|| "unknown".to_owned(), |kind| kind.to_string()),
                        });
                    }
                }
                let limits = Limits {
                    exports: policy.exports.clone(),
                    downloads: None,
                };
                self.fetch_missing(layer_id, *details, observer, &limits)
                    .await
            }
        }
    }

    /// The first half of a fetch: the layer details (or, offline, the cache alone) and the cache
    /// lookup, including linking a metadata-only version to its data.
    pub(crate) async fn lookup(&self, layer_id: u64, observer: &dyn Observer) -> Result<Lookup> {
        if self.offline {
            return match self.fetch_offline(layer_id, observer) {
                Err(Error::NotCached { .. }) if self.shared.is_some() => {
                    match self.shared_newest(layer_id, observer).await? {
                        Some(fetched) => Ok(Lookup::Found(Box::new(fetched))),
                        None => self
                            .fetch_offline(layer_id, observer)
                            .map(|fetched| Lookup::Found(Box::new(fetched))),
                    }
                }
                answer => answer.map(|fetched| Lookup::Found(Box::new(fetched))),
            };
        }
        self.online(format!("layer {layer_id}"))?;
        let details = self.layer_details(layer_id).await?;
        let (key, _) = self.key_for(layer_id, &details)?;
        observe_details(observer, layer_id, &details, key.version_id);
        Ok(match self.cached(&key, None, observer).await? {
            Some(fetched) => Lookup::Found(Box::new(fetched)),
            None => Lookup::Missing(Box::new(details)),
        })
    }

    /// The second half of a fetch, for a version the cache does not hold: under the data's lock,
    /// export (holding an export permit of `limits`), check the version, then download, extract
    /// and publish (holding a download permit).
    pub(crate) async fn fetch_missing(
        &self,
        layer_id: u64,
        mut details: LayerDetails,
        observer: &dyn Observer,
        limits: &Limits,
    ) -> Result<FetchedLayer> {
        let (_, exporter) = self.online(format!("layer {layer_id}"))?;
        for attempt in 0..VERSION_ATTEMPTS {
            let (key, mut spec) = self.key_for(layer_id, &details)?;
            // A name that finds this export again after a crash: the same layer, data version,
            // format, CRS and extent.
            spec.name = Some(format!(
                "koop-{layer_id}-{}-{}",
                key.data_version,
                key.fingerprint()
            ));
            if attempt > 0 {
                observe_details(observer, layer_id, &details, key.version_id);
            }
            let lock = self.lock(&key, observer).await?;
            if let Some(fetched) = self.cached(&key, Some(&lock), observer).await? {
                return Ok(fetched);
            }
            let lease = match self.shared_lookup(&key, &lock, observer).await? {
                crate::shared::SharedLookup::Found(fetched) => return Ok(*fetched),
                crate::shared::SharedLookup::Export(guard) => Some(guard),
                crate::shared::SharedLookup::NotShared => None,
            };
            let staging = self.cache.staging(&key)?;
            let full_export_reason = match self
                .changeset_or_reason(&key, &details, &staging, observer, limits)
                .await?
            {
                Ok((staged, info)) => {
                    let mut fetched = self
                        .publish_changeset(key, staging, staged, info, lock, observer)
                        .await?;
                    if let Some(guard) = lease {
                        fetched.not_shared = self.share(&fetched.entry, guard).await;
                    }
                    return Ok(fetched);
                }
                Err(reason) => Some(reason),
            };
            let export = {
                let _permit = self
                    .until_cancelled(
                        limits.export(layer_id, observer),
                        layer_id,
                        "queued for an export",
                    )
                    .await?;
                let (export, origin) = exporter.create(&details, &spec, observer).await?;
                exporter.wait(layer_id, export, origin, observer).await?
            };
            let _permit = self
                .until_cancelled(
                    limits.download(layer_id, observer),
                    layer_id,
                    "queued for a download",
                )
                .await?;
            let zip = staging.path().join("export.zip");
            // An export is of the layer, not of a version: file it only under the version whose
            // data it holds.
            let changed = self
                .download_checked(exporter, &key, &export, &zip, &lock, &details, observer)
                .await?;
            if let Some(now) = changed {
                tracing::info!(
                    layer_id,
                    "the layer's data changed during the export; starting over"
                );
                details = now;
                continue;
            }
            let extraction = exporter
                .extract(layer_id, &spec, &zip, staging.path(), &key.stem(), observer)
                .await?;
            tokio::fs::remove_file(&zip).await.ok();
            let info = LayerInfo {
                title: details.title.clone(),
                kind: kind_of(&details),
                export_id: Some(export.id),
                published_at: details.published_at.clone(),
                changeset: None,
            };
            let entry = self
                .publish_export(key, staging, extraction, info, lock)
                .await?;
            let mut fetched = finished(observer, layer_id, entry, FetchOutcome::Downloaded);
            fetched.full_export_reason = full_export_reason;
            if let Some(guard) = lease {
                fetched.not_shared = self.share(&fetched.entry, guard).await;
            }
            return Ok(fetched);
        }
        Err(Error::VersionKeptChanging {
            domain: self.domain.clone(),
            layer_id,
            attempts: VERSION_ATTEMPTS,
        })
    }

    /// Files an extracted export under `key` and drops its partial downloads, releasing the lock.
    async fn publish_export(
        &self,
        key: EntryKey,
        staging: koop_cache::Staging,
        extraction: koop_export::Extraction,
        info: LayerInfo,
        lock: EntryLock,
    ) -> Result<CacheEntry> {
        let cache = self.cache.clone();
        blocking(move || {
            let staged = staged_layer(&extraction.layer);
            let entry = cache.publish(
                &key,
                staging,
                &staged,
                extraction.metadata_xml.as_deref(),
                &info,
                &lock,
            )?;
            cache.discard_partial_downloads(&key, &lock)?;
            drop(lock);
            Ok(entry)
        })
        .await
    }

    /// Downloads `export` to `zip`, resuming the bytes an interrupted run kept of this same
    /// export; interrupted, keeps what arrived for the next run.
    async fn download(
        &self,
        exporter: &Exporter,
        key: &EntryKey,
        export: &koop_api::Export,
        zip: &std::path::Path,
        lock: &EntryLock,
        observer: &dyn Observer,
    ) -> Result<()> {
        let layer_id = key.layer_id;
        self.cache
            .resume_partial_download(key, export.id, zip, lock)?;
        match exporter.download(layer_id, export, zip, observer).await {
            Ok(_) => Ok(()),
            Err(error @ koop_export::Error::Interrupted { .. }) => {
                if std::fs::metadata(zip).is_ok_and(|meta| meta.len() > 0) {
                    let kept = self
                        .cache
                        .keep_partial_download(key, export.id, zip, lock)?;
                    tracing::info!(
                        layer_id,
                        export_id = export.id,
                        "kept the partial download at {} for the next run",
                        kept.display()
                    );
                }
                Err(error.into())
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Downloads `export` while checking that the layer's data is still the version `details`
    /// names: the check runs while the download starts (it would cost a round trip on every cold
    /// get otherwise), and data that changed stops the download at once. Returns the new
    /// details when the data changed.
    #[allow(
        clippy::too_many_arguments,
        reason = "the pieces of one fetch, borrowed from its loop"
    )]
    async fn download_checked(
        &self,
        exporter: &Exporter,
        key: &EntryKey,
        export: &koop_api::Export,
        zip: &std::path::Path,
        lock: &EntryLock,
        details: &LayerDetails,
        observer: &dyn Observer,
    ) -> Result<Option<LayerDetails>> {
        let download = self.download(exporter, key, export, zip, lock, observer);
        tokio::pin!(download);
        let mut downloaded = None;
        let now = tokio::select! {
            now = self.layer_details(key.layer_id) => now?,
            result = &mut download => {
                downloaded = Some(result);
                self.layer_details(key.layer_id).await?
            }
        };
        if now.data_version_id() != details.data_version_id() {
            return Ok(Some(now));
        }
        match downloaded {
            Some(result) => result?,
            None => download.await?,
        }
        Ok(None)
    }

    /// `future`, unless this `Koop` is cancelled first.
    async fn until_cancelled<T>(
        &self,
        future: impl std::future::Future<Output = T>,
        layer_id: u64,
        stage: &'static str,
    ) -> Result<T> {
        tokio::select! {
            value = future => Ok(value),
            () = self.cancel.cancelled() => Err(Self::interrupted(layer_id, stage)),
        }
    }

    /// The cache key and export spec of a layer's current version.
    pub(crate) fn key_for(
        &self,
        layer_id: u64,
        details: &LayerDetails,
    ) -> Result<(EntryKey, ExportSpec)> {
        let spec = ExportSpec::for_layer(details, self.crs, self.extent.clone())?;
        let no_version = || Error::NoVersion {
            domain: self.domain.clone(),
            layer_id,
        };
        let version_id = details.version_id().ok_or_else(no_version)?;
        let data_version = details.data_version_id().ok_or_else(no_version)?;
        let key = EntryKey {
            domain: self.domain.clone(),
            layer_id,
            version_id,
            data_version,
            format: spec.format.to_string(),
            crs: spec.crs,
            extent: self.extent.as_ref().map(ToString::to_string),
        };
        Ok((key, spec))
    }

    /// The entry of `key`, or a link to the same data under another version; linking needs the
    /// lock, taken here when `lock` is `None`.
    async fn cached(
        &self,
        key: &EntryKey,
        lock: Option<&EntryLock>,
        observer: &dyn Observer,
    ) -> Result<Option<FetchedLayer>> {
        if let Some(entry) = self.cache.get(key)? {
            return Ok(Some(finished(
                observer,
                key.layer_id,
                entry,
                FetchOutcome::Cached,
            )));
        }
        let Some(source) = self.cache.find_same_data(key)? else {
            return Ok(None);
        };
        let entry = if let Some(lock) = lock {
            let entry = self.cache.link(&source, key, lock)?;
            self.share_link(&entry, &source).await;
            entry
        } else {
            let lock = self.lock(key, observer).await?;
            if let Some(entry) = self.cache.get(key)? {
                return Ok(Some(finished(
                    observer,
                    key.layer_id,
                    entry,
                    FetchOutcome::Cached,
                )));
            }
            let (cache, key, linked_from) = (self.cache.clone(), key.clone(), source.clone());
            let entry = blocking(move || Ok(cache.link(&source, &key, &lock)?)).await?;
            self.share_link(&entry, &linked_from).await;
            entry
        };
        Ok(Some(finished(
            observer,
            key.layer_id,
            entry,
            FetchOutcome::Linked,
        )))
    }

    /// Takes `key`'s lock, polling so no thread is parked while another fetch runs.
    pub(crate) async fn lock(&self, key: &EntryKey, observer: &dyn Observer) -> Result<EntryLock> {
        let mut delay = Duration::from_millis(25);
        let mut told = false;
        loop {
            if let Some(lock) = self.cache.try_lock(key)? {
                return Ok(lock);
            }
            if !told {
                observer.layer_event(key.layer_id, LayerEvent::WaitingForOtherFetch);
                told = true;
            }
            self.until_cancelled(
                tokio::time::sleep(delay),
                key.layer_id,
                "waiting for another fetch of the same data",
            )
            .await?;
            delay = (delay * 2).min(Duration::from_millis(500));
        }
    }

    /// The newest cached entry of a layer in this `Koop`'s CRS and extent, answered as
    /// [`FetchOutcome::Unchanged`] without a request; `None` when nothing is cached.
    pub(crate) fn fetch_unchanged(
        &self,
        layer_id: u64,
        observer: &dyn Observer,
    ) -> Result<Option<FetchedLayer>> {
        let extent = self.extent.as_ref().map(ToString::to_string);
        let crs = self.crs;
        Ok(self
            .cache
            .entries_of_layer(&self.domain, layer_id)?
            .into_iter()
            .find(|entry| entry.manifest.key.crs == crs && entry.manifest.key.extent == extent)
            .map(|entry| finished(observer, layer_id, entry, FetchOutcome::Unchanged)))
    }

    fn fetch_offline(&self, layer_id: u64, observer: &dyn Observer) -> Result<FetchedLayer> {
        let extent = self.extent.as_ref().map(ToString::to_string);
        let crs = self.crs;
        let entry = self
            .cache
            .entries_of_layer(&self.domain, layer_id)?
            .into_iter()
            .find(|entry| entry.manifest.key.crs == crs && entry.manifest.key.extent == extent)
            .ok_or_else(|| Error::NotCached {
                domain: self.domain.clone(),
                layer_id,
                cache: self.cache.root().display().to_string(),
            })?;
        Ok(finished(observer, layer_id, entry, FetchOutcome::Offline))
    }
}

pub(crate) fn kind_of(details: &LayerDetails) -> String {
    details
        .kind
        .as_ref()
        .map_or_else(String::new, ToString::to_string)
}

fn observe_details(
    observer: &dyn Observer,
    layer_id: u64,
    details: &LayerDetails,
    version_id: u64,
) {
    observer.layer_event(
        layer_id,
        LayerEvent::Details {
            title: details.title.clone(),
            kind: kind_of(details),
            version_id,
        },
    );
}

/// The result of the first half of a fetch.
pub(crate) enum Lookup {
    /// In the cache (or linked to the same data).
    Found(Box<FetchedLayer>),
    /// Not cached: the details to export from.
    Missing(Box<LayerDetails>),
}

/// What a fetch may do: which kinds of layer it may export, and how many exports may be in
/// flight at once across every fetch sharing the policy (a server in front of many users).
#[derive(Debug, Clone, Default)]
pub struct FetchPolicy {
    /// Kinds that may be exported; `None` for every kind koop exports.
    pub kinds: Option<Vec<LayerKind>>,
    /// Export slots, shared by the fetches given this policy; `None` for no bound.
    pub exports: Option<Arc<Semaphore>>,
}

impl FetchPolicy {
    /// Vector layers and tables only (what a feature server serves), with at most
    /// `max_exports` exports in flight.
    pub fn features(max_exports: usize) -> Self {
        Self {
            kinds: Some(vec![LayerKind::Vector, LayerKind::Table]),
            exports: Some(Arc::new(Semaphore::new(max_exports.max(1)))),
        }
    }
}

/// Bounds on the stages of concurrent fetches; unbounded by default.
#[derive(Debug, Clone, Default)]
pub(crate) struct Limits {
    pub(crate) exports: Option<Arc<Semaphore>>,
    pub(crate) downloads: Option<Arc<Semaphore>>,
}

impl Limits {
    async fn permit(
        semaphore: Option<&Arc<Semaphore>>,
        layer_id: u64,
        observer: &dyn Observer,
        event: LayerEvent,
    ) -> Option<OwnedSemaphorePermit> {
        let semaphore = semaphore?.clone();
        if let Ok(permit) = semaphore.clone().try_acquire_owned() {
            return Some(permit);
        }
        observer.layer_event(layer_id, event);
        semaphore.acquire_owned().await.ok()
    }

    async fn export(&self, layer_id: u64, observer: &dyn Observer) -> Option<OwnedSemaphorePermit> {
        Self::permit(
            self.exports.as_ref(),
            layer_id,
            observer,
            LayerEvent::QueuedForExport,
        )
        .await
    }

    pub(crate) async fn download(
        &self,
        layer_id: u64,
        observer: &dyn Observer,
    ) -> Option<OwnedSemaphorePermit> {
        Self::permit(
            self.downloads.as_ref(),
            layer_id,
            observer,
            LayerEvent::QueuedForDownload,
        )
        .await
    }
}

pub(crate) fn finished(
    observer: &dyn Observer,
    layer_id: u64,
    entry: CacheEntry,
    outcome: FetchOutcome,
) -> FetchedLayer {
    observer.layer_event(
        layer_id,
        LayerEvent::Finished {
            outcome,
            bytes: entry.manifest.size,
        },
    );
    FetchedLayer {
        path: entry.path.clone(),
        outcome,
        entry,
        full_export_reason: None,
        not_shared: None,
    }
}

/// The cache's view of what the exporter extracted.
fn staged_layer(layer: &ExtractedLayer) -> StagedLayer {
    match layer {
        ExtractedLayer::File {
            path,
            extension,
            size,
            blake3,
        } => StagedLayer::File {
            path: path.clone(),
            extension: extension.clone(),
            size: *size,
            blake3: blake3.clone(),
        },
        ExtractedLayer::Mosaic { dir, vrt, files } => StagedLayer::Mosaic {
            dir: dir.clone(),
            vrt: vrt.clone(),
            files: files
                .iter()
                .map(|file| StagedFile {
                    relative: file.relative.clone(),
                    size: file.size,
                    blake3: file.blake3.clone(),
                })
                .collect(),
        },
    }
}

/// Downloads and caches a layer from a Koordinates site, returning the path of its file: the
/// function of the original Python package. The key falls back to `KOORDINATES_API_KEY`, the
/// domain to `ttgroup.koordinates.com`, the cache to `KOOPCACHE_DIR` (then the platform cache
/// directory). Repeated calls for an unchanged layer cost one API request and no download.
///
/// # Errors
///
/// As [`KoopBuilder::build`] and [`Koop::fetch_layer`].
pub async fn get_layer_from_id(
    layer_id: u64,
    api_key: Option<String>,
    domain: Option<&str>,
) -> Result<PathBuf> {
    let mut builder = Koop::builder().api_key(api_key);
    if let Some(domain) = domain {
        builder = builder.domain(domain);
    }
    builder.build()?.get_layer(layer_id).await
}
