//! The Koordinates provider: Koordinates layers, fetched once into koop's cache, served from
//! the cached GeoPackage.
//!
//! Route parameters: `host` is the Koordinates domain, `id` the layer id
//! (`/koordinates/data.linz.govt.nz/50772/geojson`). Only the domains the provider was configured
//! with are served, so the API key is never sent to a site chosen by a request.
//!
//! Coordinates are reprojected to EPSG:4326 with proj4rs as RFC 7946 requires, rather than
//! exported in 4326: one cached export (in the layer's usual CRS, the same file `koop get`
//! returns) then serves both GIS users on disk and the server, with no second export.
//!
//! Outputs that say what they want in `RouteParams::method` get more than every feature:
//! `info` is answered with the metadata alone, and `query` (a Geoservices query from the
//! FeatureServer output) is answered by SQLite on the cached GeoPackage: bound-parameter SQL for
//! `where`, ordering, paging, counts, ids, extents, statistics and distinct values, the
//! GeoPackage R-tree for geometry filters (see the `query` module). The OBJECTID is the layer's
//! integer primary key, or the GeoPackage fid.
//!
//! # Safe in front of the operator's key
//!
//! - **What may cost money**: [`ServedLayers`] says which layers are fetched on demand (by
//!   default only those listed; layers already in the cache are always served, from the cache
//!   alone); only vector layers and tables are exported, checked from their details before any
//!   export; at most `max_exports` exports are in flight, and at most `max_fetches` fetches wait.
//! - **Time**: a fetch runs in the background, shared by every request for the layer; a request
//!   waits for it until its deadline ([`ProviderRequest::deadline`]) and is answered 503 if it is
//!   not done (the fetch goes on). SQLite statements are interrupted at the deadline.
//! - **Threads and memory**: SQLite work waits for one of `sqlite_threads` permits; streams read
//!   256 rows at a time as their reader asks, so a client that stops reading holds no thread;
//!   at most `max_layers` layers stay open (least recently used first out). An open layer may
//!   hold in-memory indexes built on first use: up to 4 equality indexes (8 bytes a row each) and,
//!   for a point layer of 10,000 to 5,000,000 rows, a k-d tree of its R-tree (20 bytes a row).
//!
//! Errors name the upstream cause for the client (a 401 from Koordinates, a failed export) and
//! keep the whole chain, local paths included, for the server's log only.
//!
//! # Example
//!
//! ```no_run
//! use koop_provider_koordinates::{KoordinatesConfig, KoordinatesProvider, ServedLayers};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let linz = koop::Domain::parse("data.linz.govt.nz")?;
//! let provider = KoordinatesProvider::new(KoordinatesConfig {
//!     domains: vec![linz.clone()],
//!     layers: ServedLayers::listed([(linz, 50772)]),
//!     ..KoordinatesConfig::default()
//! });
//! let router = koop_server::ServerBuilder::default().provider(provider).build()?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! // GET /koordinates/data.linz.govt.nz/50772/geojson
//! axum::serve(listener, router).await?;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod gpkg;
mod index;
mod layer;
mod outline;
mod query;
mod spatial;
mod stream;
mod work;

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use futures::future::{BoxFuture, FutureExt, Shared};
use koop::{Domain, Epsg, FetchPolicy, Koop, Quiet};
use koop_geoservices::Reprojector;
use koop_provider::{
    FiltersApplied, Provider, ProviderData, ProviderError, ProviderRequest, ProviderStream,
    Registration,
};

use layer::LayerState;
pub use layer::field_type;
use query::{Kind, Outcome};
use work::Work;

/// Which layers the provider fetches from Koordinates when a request names them. Layers already
/// in the cache are served whatever this says (from the cache alone, with no request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServedLayers {
    /// These layers (domain, layer id), and those already cached.
    Listed(HashSet<(Domain, u64)>),
    /// Any layer of the configured domains: anyone who can reach the server can make it export.
    Any,
}

impl ServedLayers {
    /// The layers `layers`, and those already cached.
    pub fn listed(layers: impl IntoIterator<Item = (Domain, u64)>) -> Self {
        Self::Listed(layers.into_iter().collect())
    }

    fn allows(&self, domain: &Domain, layer_id: u64) -> bool {
        match self {
            Self::Any => true,
            Self::Listed(layers) => layers.contains(&(domain.clone(), layer_id)),
        }
    }
}

impl Default for ServedLayers {
    /// Nothing is fetched on demand: only what the cache holds is served.
    fn default() -> Self {
        Self::Listed(HashSet::new())
    }
}

/// Settings of the Koordinates provider. `Debug` never shows the API key.
#[derive(Clone)]
pub struct KoordinatesConfig {
    /// The Koordinates sites served, e.g. `data.linz.govt.nz`; a domain read from
    /// `http://host:port` (a loopback test server) is reached over plain HTTP.
    pub domains: Vec<Domain>,
    /// Which layers may be fetched on demand (default: none; cached layers are served).
    pub layers: ServedLayers,
    /// The API key; when `None`, read from `api_key_env` (as for `koop get`).
    pub api_key: Option<String>,
    /// The environment variable holding the API key when `api_key` is `None`.
    pub api_key_env: String,
    /// The cache directory (default `KOOPCACHE_DIR`, then the platform cache directory).
    pub cache_dir: Option<PathBuf>,
    /// A team's cache on object storage in front of `cache_dir` (which then holds its local
    /// copy): a listed layer the local copy lacks is downloaded from it before any export, and
    /// what is exported here is shared. Stateless instances behind a load balancer share one.
    pub shared_cache: Option<koop::koop_store::SharedStore>,
    /// Serve only what is cached; never fetch.
    pub offline: bool,
    /// The CRS new exports are made in (features are reprojected to EPSG:4326 on the fly).
    pub export_crs: Epsg,
    /// How long a layer's version is trusted before Koordinates is asked again.
    pub refresh: Duration,
    /// Longest time an export may stay processing before it is cancelled (default 1 hour).
    pub export_timeout: Duration,
    /// `maxRecordCount` of the metadata (default 2000).
    pub max_record_count: u32,
    /// Exports in flight at once for the whole server (default 2).
    pub max_exports: usize,
    /// Fetches running or waiting at once (default 16); a request for another answers 503.
    pub max_fetches: usize,
    /// Layers kept open, least recently used out first (default 256).
    pub max_layers: usize,
    /// SQLite query calls at once (default 8): bounds the blocking threads queries take.
    pub sqlite_threads: usize,
    /// Chunks of feature streams (`/geojson`, whole-layer reads) read at once (default 2),
    /// apart from queries: many streaming clients share these and never delay a count.
    pub stream_threads: usize,
}

impl Default for KoordinatesConfig {
    fn default() -> Self {
        Self {
            domains: Domain::parse(koop::koop_api::DEFAULT_DOMAIN)
                .into_iter()
                .collect(),
            layers: ServedLayers::default(),
            api_key: None,
            api_key_env: koop::koop_api::API_KEY_ENV.to_owned(),
            cache_dir: None,
            shared_cache: None,
            offline: false,
            export_crs: koop::DEFAULT_CRS,
            refresh: Duration::from_secs(60),
            export_timeout: Duration::from_secs(3600),
            max_record_count: 2000,
            max_exports: 2,
            max_fetches: 16,
            max_layers: 256,
            sqlite_threads: 8,
            stream_threads: 2,
        }
    }
}

impl std::fmt::Debug for KoordinatesConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KoordinatesConfig")
            .field("domains", &self.domains)
            .field("layers", &self.layers)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("api_key_env", &self.api_key_env)
            .field("cache_dir", &self.cache_dir)
            .field("shared_cache", &self.shared_cache)
            .field("offline", &self.offline)
            .field("export_crs", &self.export_crs)
            .field("refresh", &self.refresh)
            .field("export_timeout", &self.export_timeout)
            .field("max_record_count", &self.max_record_count)
            .field("max_exports", &self.max_exports)
            .field("max_fetches", &self.max_fetches)
            .field("max_layers", &self.max_layers)
            .field("sqlite_threads", &self.sqlite_threads)
            .field("stream_threads", &self.stream_threads)
            .finish()
    }
}

/// A layer's identity: its domain and id.
type LayerKey = (Domain, u64);

/// A fetch of a layer, shared by every request waiting for it.
type SharedFetch = Shared<BoxFuture<'static, Result<LayerState, ProviderError>>>;

struct Inner {
    config: KoordinatesConfig,
    policy: FetchPolicy,
    work: Work,
    /// One `Koop` per domain: online, and offline (for cached layers that are not listed).
    koops: Mutex<HashMap<(Domain, bool), Koop>>,
    states: Mutex<lru::LruCache<LayerKey, LayerState>>,
    fetches: Mutex<HashMap<LayerKey, SharedFetch>>,
}

/// The Koordinates provider (name `koordinates`, with `:host` and `:id`).
pub struct KoordinatesProvider {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for KoordinatesProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KoordinatesProvider")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// The client's error for a failed fetch of `layer_id`: one line naming the upstream cause (the
/// Koordinates API error, which never holds the key) or, for local failures (disk, cache), what
/// failed without its paths; the whole chain is kept as the source, for the server's log.
fn provider_error(layer_id: u64, error: koop::Error) -> ProviderError {
    use koop::Error;
    use koop::koop_api::Error as Api;
    use koop::koop_export::Error as Export;
    let api = match &error {
        Error::Api(api) => Some(api),
        Error::Export(Export::Api { source, .. } | Export::Download { source, .. }) => Some(source),
        _ => None,
    };
    if let Some(api) = api {
        let message = match &error {
            Error::Export(export) => format!("{export}: {api}"),
            _ => api.to_string(),
        };
        return match api {
            Api::NotFound { .. } => ProviderError::not_found(message),
            Api::MissingApiKey { .. } | Api::RateLimited { .. } => {
                ProviderError::unavailable(message, Some(Arc::new(error)))
            }
            _ => ProviderError::upstream(message, error),
        };
    }
    match &error {
        Error::Export(Export::UnsupportedKind { .. } | Export::FormatNotOffered { .. }) => {
            ProviderError::bad_request(error.to_string())
        }
        Error::Export(Export::Io {
            layer_id, action, ..
        }) => ProviderError::internal(
            format!(
                "exporting layer {layer_id} failed on this server: {action} a file failed (the server's log says more)"
            ),
            Some(Arc::new(error)),
        ),
        Error::Export(_) | Error::NoVersion { .. } | Error::VersionKeptChanging { .. } => {
            ProviderError::upstream(error.to_string(), error)
        }
        Error::NotCached { domain, .. } => ProviderError::not_found(format!(
            "layer {layer_id} of {domain} is not in this server's cache, and the server is offline"
        )),
        Error::KindNotAllowed { .. } => ProviderError::bad_request(format!(
            "{error}; only vector layers and tables are served as features"
        )),
        Error::Offline { .. } => ProviderError::unavailable(error.to_string(), None),
        _ => ProviderError::internal(
            format!("layer {layer_id}: this server's cache failed (the server's log says more)"),
            Some(Arc::new(error)),
        ),
    }
}

/// A CRS that proj4rs cannot transform.
fn reproject_failed(error: koop_geoservices::ReprojectError) -> ProviderError {
    ProviderError::internal(error.to_string(), Some(Arc::new(error)))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl KoordinatesProvider {
    /// A provider with `config`. Nothing is fetched until a request arrives.
    pub fn new(config: KoordinatesConfig) -> Self {
        let layers = NonZeroUsize::new(config.max_layers.max(1)).unwrap_or(NonZeroUsize::MIN);
        Self {
            inner: Arc::new(Inner {
                policy: FetchPolicy::features(config.max_exports),
                work: Work::new(config.sqlite_threads, config.stream_threads),
                koops: Mutex::new(HashMap::new()),
                states: Mutex::new(lru::LruCache::new(layers)),
                fetches: Mutex::new(HashMap::new()),
                config,
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &KoordinatesConfig {
        &self.inner.config
    }

    /// The domain and layer id a request names, normalised (`DATA.linz.govt.nz` and
    /// `data.linz.govt.nz`, `01006` and `1006` are the same layer).
    fn layer_of(request: &ProviderRequest) -> Result<LayerKey, ProviderError> {
        let host =
            request.params.host.as_deref().ok_or_else(|| {
                ProviderError::bad_request("the request names no Koordinates domain")
            })?;
        let domain =
            Domain::parse(host).map_err(|error| ProviderError::bad_request(error.to_string()))?;
        let id = request.params.id.as_deref().unwrap_or_default();
        let layer_id = id
            .parse::<u64>()
            .ok()
            .filter(|_| id.bytes().all(|byte| byte.is_ascii_digit()))
            .ok_or_else(|| {
                ProviderError::bad_request(format!(
                    "{id:?} is not a layer id; give a number such as 50772"
                ))
            })?;
        Ok((domain, layer_id))
    }

    /// The layer's state: open already and checked within `refresh`, or fetched (in the
    /// background, shared by every request for it) and waited for until the request's
    /// deadline. A state due for its check is served while the check runs.
    async fn state(&self, request: &ProviderRequest) -> Result<LayerState, ProviderError> {
        let key = Self::layer_of(request)?;
        let previous = lock(&self.inner.states).get(&key).cloned();
        if let Some(state) = &previous {
            if state.checked.elapsed() >= self.inner.config.refresh {
                // Stale: check again in the background; meanwhile serve what is open.
                let _ = Inner::fetch(&self.inner, &key, Some(state.clone()));
            }
            return Ok(state.clone());
        }
        let fetch = Inner::fetch(&self.inner, &key, None)?;
        let waited = match request.deadline {
            Some(deadline) => {
                tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), fetch).await
            }
            None => Ok(fetch.await),
        };
        waited.unwrap_or_else(|_| {
            Err(ProviderError::unavailable(
                format!(
                    "layer {} of {} is being fetched from Koordinates (an export can take minutes); try again shortly",
                    key.1, key.0
                ),
                None,
            ))
        })
    }

    /// The features of a page plan as they are read: a query permit and a blocking thread read
    /// them in chunks while the output writes the ones before (the page is bounded by
    /// `maxRecordCount`, so the chunks wait unbounded). The reading stops when the stream is
    /// dropped.
    fn page(
        &self,
        state: LayerState,
        plan: query::Plan,
        deadline: Option<std::time::Instant>,
    ) -> koop_provider::Rows {
        let names = plan.shape.names();
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        let work = self.inner.work.clone();
        let errors = sender.clone();
        let plan = Arc::new(plan);
        let reader = tokio::spawn(async move {
            let helpers = work.clone();
            let read = work
                .run(deadline, move || {
                    plan.stream_page(&state, &helpers, deadline, &mut |chunk| {
                        sender.send(Ok(chunk)).is_ok()
                    })
                })
                .await;
            if let Err(error) = read {
                let _ = errors.send(Err(error));
            }
        });
        let reader = tokio_util::task::AbortOnDropHandle::new(reader);
        let chunks =
            futures::stream::unfold((receiver, reader), |(mut receiver, reader)| async move {
                let chunk = receiver.recv().await?;
                Some((chunk, (receiver, reader)))
            });
        let rows = chunks.flat_map(|chunk| match chunk {
            Ok(rows) => futures::stream::iter(rows.into_iter().map(Ok)).left_stream(),
            Err(error) => futures::stream::once(std::future::ready(Err(error))).right_stream(),
        });
        koop_provider::Rows {
            names,
            rows: Box::pin(rows),
        }
    }

    /// A Geoservices query, pushed down into SQLite.
    async fn query(
        &self,
        state: LayerState,
        request: &ProviderRequest,
    ) -> Result<ProviderStream, ProviderError> {
        let plan = query::plan(&state, request, self.inner.config.max_record_count)?;
        let work = &self.inner.work;
        if plan.searches_rtree() && state.spatial.claim(&state.table) {
            // SQLite's R-tree answers meanwhile.
            let (table, spatial) = (state.table.clone(), state.spatial.clone());
            let name = table.name.clone();
            work.build_in_background(
                format!("the k-d tree of {name}'s points"),
                move || spatial::build(&table),
                move |built| {
                    if let Some(index) = &built {
                        tracing::debug!("{name}'s points are in memory ({} bytes)", index.bytes());
                    }
                    spatial.finish(built);
                },
            );
        }
        if let Some(column) = plan.index_column.clone()
            && state.indexes.claim(&column)
        {
            // This query scans meanwhile.
            let (table, indexes, built_for) =
                (state.table.clone(), state.indexes.clone(), column.clone());
            work.build_in_background(
                format!("an index of {column}"),
                move || index::build(&table, &built_for),
                move |built| indexes.finish(&column, built),
            );
        }
        let metadata = state.metadata.clone();
        let (applied, crs) = (plan.applied, plan.crs);
        let deadline = request.deadline;
        let version_tag = Some(state.entry.clone());
        if matches!(plan.kind, Kind::Rows | Kind::Page) {
            // A page comes as rows; every matching row (what the output finishes) as features.
            let (features, rows) = if plan.kind == Kind::Page {
                let rows = self.page(state, plan, deadline);
                let empty: futures::stream::BoxStream<'static, _> =
                    Box::pin(futures::stream::empty());
                (empty, Some(rows))
            } else {
                let rows = stream::Rows {
                    conditions: plan.conditions,
                    params: plan.params,
                    exact: plan.exact,
                    shape: plan.shape,
                    to_4326: plan.to_4326,
                    from_source: plan.from_source,
                    from_4326: plan.from_4326,
                };
                (stream::features(state, rows, self.inner.work.clone()), None)
            };
            return Ok(ProviderStream {
                metadata,
                filters_applied: applied,
                crs,
                count: None,
                answer: None,
                version_tag,
                features,
                rows,
            });
        }
        let outcome = self
            .inner
            .work
            .run(deadline, move || plan.run(&state, deadline))
            .await?;
        let (features, count, answer) = match outcome {
            Outcome::Count(count) => (Vec::new(), Some(count), None),
            Outcome::Answer(answer) => (Vec::new(), None, Some(answer)),
        };
        Ok(ProviderStream {
            metadata,
            filters_applied: applied,
            crs,
            count,
            answer,
            version_tag,
            features: Box::pin(futures::stream::iter(features.into_iter().map(Ok))),
            rows: None,
        })
    }
}

impl Inner {
    /// The `Koop` for a domain, if the domain is served: online, or offline (answering from the
    /// cache alone).
    fn koop_for(&self, domain: &Domain, offline: bool) -> Result<Koop, ProviderError> {
        let configured = self
            .config
            .domains
            .iter()
            .find(|served| *served == domain)
            .ok_or_else(|| {
                ProviderError::not_found(format!(
                    "this server serves layers of {}, not {domain}",
                    self.config
                        .domains
                        .iter()
                        .map(Domain::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        let offline = offline || self.config.offline;
        let mut koops = lock(&self.koops);
        if let Some(koop) = koops.get(&(domain.clone(), offline)) {
            return Ok(koop.clone());
        }
        let koop = Koop::builder()
            .api_key(self.config.api_key.clone())
            .api_key_env(&self.config.api_key_env)
            .configure_connection(|connection| connection.site(configured))
            .cache_dir(self.config.cache_dir.clone())
            .shared_cache(self.config.shared_cache.clone())
            .crs(self.config.export_crs)
            .offline(offline)
            .export_options(koop::ExportOptions {
                deadline: self.config.export_timeout,
                ..koop::ExportOptions::default()
            })
            .build()
            .map_err(|error| {
                ProviderError::unavailable(
                    format!("this server cannot reach {domain}: {error}"),
                    Some(Arc::new(error)),
                )
            })?;
        koops.insert((domain.clone(), offline), koop.clone());
        Ok(koop)
    }

    /// The running fetch of `key`, or a new one: refused for a layer that is neither allowed
    /// nor cached (no request is made for it), and when `max_fetches` are running already.
    fn fetch(
        inner: &Arc<Self>,
        key: &LayerKey,
        previous: Option<LayerState>,
    ) -> Result<SharedFetch, ProviderError> {
        let mut fetches = lock(&inner.fetches);
        if let Some(fetch) = fetches.get(key) {
            return Ok(fetch.clone());
        }
        let (domain, layer_id) = key;
        let allowed = !inner.config.offline && inner.config.layers.allows(domain, *layer_id);
        if !allowed {
            let cached = inner
                .koop_for(domain, true)?
                .cache()
                .newest(domain, *layer_id)
                .ok()
                .flatten()
                .is_some();
            if !cached && inner.config.offline {
                return Err(ProviderError::not_found(format!(
                    "layer {layer_id} of {domain} is not in this server's cache, and the server is offline"
                )));
            }
            if !cached {
                return Err(ProviderError::not_found(format!(
                    "layer {layer_id} of {domain} is not served here: it is neither cached nor among the layers this server fetches (koop serve --layers; --any-layer allows every layer)"
                )));
            }
        }
        if fetches.len() >= inner.config.max_fetches.max(1) {
            return Err(ProviderError::unavailable(
                format!(
                    "this server is fetching {} layers already; try again shortly",
                    fetches.len()
                ),
                None,
            ));
        }
        let task = tokio::spawn(Self::refresh(
            inner.clone(),
            key.clone(),
            previous,
            !allowed,
        ));
        let fetch: SharedFetch = async move {
            task.await.unwrap_or_else(|error| {
                Err(ProviderError::internal(
                    "a background fetch of this server failed",
                    Some(Arc::new(error)),
                ))
            })
        }
        .boxed()
        .shared();
        fetches.insert(key.clone(), fetch.clone());
        Ok(fetch)
    }

    /// Fetches (or checks) a layer and opens its state; runs in the background whether anyone
    /// still waits or not. A failed check of a layer already open keeps serving it.
    async fn refresh(
        inner: Arc<Self>,
        key: LayerKey,
        previous: Option<LayerState>,
        offline: bool,
    ) -> Result<LayerState, ProviderError> {
        let result = inner.load(&key, previous.as_ref(), offline).await;
        lock(&inner.fetches).remove(&key);
        match (result, previous) {
            (Ok(state), _) => {
                lock(&inner.states).put(key, state.clone());
                Ok(state)
            }
            (Err(error), Some(mut previous)) => {
                tracing::warn!(
                    layer_id = key.1,
                    domain = %key.0,
                    "checking the layer's version failed; serving the version open: {}",
                    error.chain()
                );
                previous.checked = Instant::now();
                lock(&inner.states).put(key, previous.clone());
                Ok(previous)
            }
            (Err(error), None) => Err(error),
        }
    }

    async fn load(
        &self,
        (domain, layer_id): &LayerKey,
        previous: Option<&LayerState>,
        offline: bool,
    ) -> Result<LayerState, ProviderError> {
        let layer_id = *layer_id;
        let koop = self.koop_for(domain, offline)?;
        let fetched = koop
            .fetch_layer_with(layer_id, &self.policy, &Quiet)
            .await
            .map_err(|error| provider_error(layer_id, error))?;
        if let Some(previous) = previous
            && previous.table.path == fetched.path
        {
            return Ok(LayerState {
                checked: Instant::now(),
                ..previous.clone()
            });
        }
        let manifest = &fetched.entry.manifest;
        if fetched.path.extension().is_none_or(|ext| ext != "gpkg") {
            return Err(ProviderError::bad_request(format!(
                "layer {layer_id} is a {} layer; only vector layers and tables are served as features",
                manifest.kind
            )));
        }
        let details = if koop.is_offline() {
            None
        } else {
            Some(
                koop.layer_details(layer_id)
                    .await
                    .map_err(|error| provider_error(layer_id, error))?,
            )
        };
        let (path, entry, title) = (
            fetched.path.clone(),
            manifest.entry.clone(),
            manifest.title.clone(),
        );
        let max_record_count = self.config.max_record_count;
        self.work
            .run(None, move || {
                layer::load(&layer::Source {
                    path: &path,
                    entry: &entry,
                    title: &title,
                    details: details.as_ref(),
                    max_record_count,
                })
            })
            .await
    }
}

#[async_trait]
impl Provider for KoordinatesProvider {
    fn name(&self) -> &'static str {
        "koordinates"
    }

    fn registration(&self) -> Registration {
        Registration {
            hosts: true,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ..Registration::new(self.name())
        }
    }

    /// Layers can hold millions of features: outputs stream them.
    fn prefers_stream(&self) -> bool {
        true
    }

    /// Every feature of the layer's current version, in EPSG:4326. For large layers prefer
    /// [`Provider::get_stream`], which holds a chunk of features at a time.
    async fn get_data(&self, request: &ProviderRequest) -> Result<ProviderData, ProviderError> {
        let mut stream = self.get_stream(request).await?;
        let features: Vec<geojson::Feature> = stream
            .take_features()
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        // The count of matching features: the provider's, or every feature when nothing was
        // filtered (a page's length is not the number of features that match).
        let count = stream
            .count
            .or_else(|| (!stream.filters_applied.any()).then_some(features.len() as u64));
        Ok(ProviderData {
            count,
            features,
            metadata: stream.metadata,
            filters_applied: stream.filters_applied,
            crs: stream.crs,
            answer: stream.answer,
            version_tag: stream.version_tag,
            ttl: None,
        })
    }

    /// The layer's features in EPSG:4326, read from the cached GeoPackage in chunks as the
    /// stream is polled. Outputs that set `method` get more: `info` answers the metadata alone
    /// (and the row count), `query` answers a Geoservices query in SQLite (see the module
    /// documentation).
    async fn get_stream(&self, request: &ProviderRequest) -> Result<ProviderStream, ProviderError> {
        let state = self.state(request).await?;
        match request.params.method.as_deref() {
            Some("info") => {
                return Ok(ProviderStream {
                    metadata: state.metadata.clone(),
                    filters_applied: FiltersApplied::default(),
                    crs: None,
                    count: Some(state.table.count),
                    answer: None,
                    version_tag: Some(state.entry.clone()),
                    features: Box::pin(futures::stream::empty()),
                    rows: None,
                });
            }
            Some("query") => return Box::pin(self.query(state, request)).await,
            _ => {}
        }
        let source = state.table.srs.unwrap_or(Epsg::WGS84);
        let reprojector =
            |from: Epsg| Reprojector::new(from, Epsg::WGS84).map_err(reproject_failed);
        let rows = stream::Rows {
            conditions: Vec::new(),
            params: Vec::new(),
            exact: None,
            shape: gpkg::RowShape::whole(&state.table, state.fid_property()),
            to_4326: reprojector(source)?,
            from_source: reprojector(source)?,
            from_4326: reprojector(Epsg::WGS84)?,
        };
        Ok(ProviderStream {
            metadata: state.metadata.clone(),
            filters_applied: FiltersApplied::default(),
            crs: None,
            count: None,
            answer: None,
            version_tag: Some(state.entry.clone()),
            features: stream::features(state, rows, self.inner.work.clone()),
            rows: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let config = KoordinatesConfig {
            api_key: Some("secret-key-123".into()),
            ..KoordinatesConfig::default()
        };
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("secret-key-123") && debug.contains("***"),
            "{debug}"
        );
    }
}
