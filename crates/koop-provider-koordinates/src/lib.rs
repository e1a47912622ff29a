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
//! `where`, ordering, paging and counts, the GeoPackage R-tree for geometry filters (see the
//! `query` module). These answers are not cached (no `ttl`): they cost milliseconds.
//!
//! Errors name the upstream cause for the client (a 401 from Koordinates, a failed export) and
//! keep the whole chain, local paths included, for the server's log only.
//!
//! # Example
//!
//! ```no_run
//! use koop_provider_koordinates::{KoordinatesConfig, KoordinatesProvider};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let provider = KoordinatesProvider::new(KoordinatesConfig {
//!     domains: vec![koop::Domain::parse("data.linz.govt.nz")?],
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

pub(crate) mod gpkg;
mod query;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use koop::{Domain, Epsg, FetchedLayer, Koop, LayerDetails, Quiet};
use koop_geoservices::Reprojector;
use koop_provider::{
    Field, FieldType, FiltersApplied, GeometryType, Metadata, Provider, ProviderData,
    ProviderError, ProviderRequest, ProviderStream, Registration,
};

use gpkg::Table;

/// Features buffered between the SQLite reader and the response.
const STREAM_BUFFER: usize = 512;

/// Settings of the Koordinates provider. `Debug` never shows the API key.
#[derive(Clone)]
pub struct KoordinatesConfig {
    /// The Koordinates sites served, e.g. `data.linz.govt.nz`; a domain read from
    /// `http://host:port` (a loopback test server) is reached over plain HTTP.
    pub domains: Vec<Domain>,
    /// The API key; when `None`, read from `api_key_env` (as for `koop get`).
    pub api_key: Option<String>,
    /// The environment variable holding the API key when `api_key` is `None`.
    pub api_key_env: String,
    /// The cache directory (default `KOOPCACHE_DIR`, then the platform cache directory).
    pub cache_dir: Option<PathBuf>,
    /// Serve only what is cached; never fetch.
    pub offline: bool,
    /// The CRS new exports are made in (features are reprojected to EPSG:4326 on the fly).
    pub export_crs: Epsg,
    /// How long a layer's version is trusted before Koordinates is asked again.
    pub refresh: Duration,
    /// Longest time an export may stay processing before it is cancelled (default 1 hour).
    pub export_timeout: Duration,
    /// `maxRecordCount` of the metadata.
    pub max_record_count: u32,
}

impl Default for KoordinatesConfig {
    fn default() -> Self {
        Self {
            domains: Domain::parse(koop::koop_api::DEFAULT_DOMAIN)
                .into_iter()
                .collect(),
            api_key: None,
            api_key_env: koop::koop_api::API_KEY_ENV.to_owned(),
            cache_dir: None,
            offline: false,
            export_crs: koop::DEFAULT_CRS,
            refresh: Duration::from_secs(60),
            export_timeout: Duration::from_secs(3600),
            max_record_count: 2000,
        }
    }
}

impl std::fmt::Debug for KoordinatesConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KoordinatesConfig")
            .field("domains", &self.domains)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("api_key_env", &self.api_key_env)
            .field("cache_dir", &self.cache_dir)
            .field("offline", &self.offline)
            .field("export_crs", &self.export_crs)
            .field("refresh", &self.refresh)
            .field("export_timeout", &self.export_timeout)
            .field("max_record_count", &self.max_record_count)
            .finish()
    }
}

/// A layer as served: its table, metadata and when its version was last checked.
#[derive(Debug, Clone)]
pub(crate) struct LayerState {
    pub(crate) table: Arc<Table>,
    /// Connections to the table's GeoPackage, for queries.
    pub(crate) connections: Arc<gpkg::ConnectionPool>,
    pub(crate) metadata: Metadata,
    pub(crate) checked: Instant,
}

/// The Koordinates provider (name `koordinates`, with `:host` and `:id`).
pub struct KoordinatesProvider {
    config: KoordinatesConfig,
    koops: Mutex<HashMap<Domain, Koop>>,
    layers: Mutex<HashMap<(Domain, u64), LayerState>>,
}

impl std::fmt::Debug for KoordinatesProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KoordinatesProvider")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn geometry_type(details: &LayerDetails) -> Option<GeometryType> {
    use koop::koop_api::GeometryType as Koordinates;
    match details.data.as_ref()?.geometry_type.as_ref()? {
        Koordinates::Point => Some(GeometryType::Point),
        Koordinates::MultiPoint => Some(GeometryType::MultiPoint),
        Koordinates::LineString => Some(GeometryType::LineString),
        Koordinates::MultiLineString => Some(GeometryType::MultiLineString),
        Koordinates::Polygon => Some(GeometryType::Polygon),
        Koordinates::MultiPolygon => Some(GeometryType::MultiPolygon),
        _ => None,
    }
}

/// The field type of a Koordinates attribute type: integer/bigint → Integer,
/// double/float/numeric → Double, date/datetime → Date, string/boolean (and others) → String.
pub fn field_type(koordinates: &koop::koop_api::FieldType) -> FieldType {
    use koop::koop_api::FieldType as Koordinates;
    match koordinates {
        Koordinates::Integer | Koordinates::BigInteger => FieldType::Integer,
        Koordinates::Double | Koordinates::Float | Koordinates::Numeric => FieldType::Double,
        Koordinates::Date | Koordinates::DateTime => FieldType::Date,
        _ => FieldType::String,
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
        Error::Offline { .. } => ProviderError::unavailable(error.to_string(), None),
        _ => ProviderError::internal(
            format!("layer {layer_id}: this server's cache failed (the server's log says more)"),
            Some(Arc::new(error)),
        ),
    }
}

/// A blocking task that panicked or was cancelled.
fn task_failed(error: tokio::task::JoinError) -> ProviderError {
    ProviderError::internal(
        "a background task of this server failed",
        Some(Arc::new(error)),
    )
}

/// A CRS that proj4rs cannot transform.
fn reproject_failed(error: koop_geoservices::ReprojectError) -> ProviderError {
    ProviderError::internal(error.to_string(), Some(Arc::new(error)))
}

impl KoordinatesProvider {
    /// A provider with `config`. Nothing is fetched until a request arrives.
    pub fn new(config: KoordinatesConfig) -> Self {
        Self {
            config,
            koops: Mutex::new(HashMap::new()),
            layers: Mutex::new(HashMap::new()),
        }
    }

    /// The settings.
    pub fn config(&self) -> &KoordinatesConfig {
        &self.config
    }

    /// The `Koop` for a requested domain, if the domain is served.
    fn koop_for(&self, domain: &Domain) -> Result<Koop, ProviderError> {
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
        let mut koops = self
            .koops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(koop) = koops.get(domain) {
            return Ok(koop.clone());
        }
        let koop = Koop::builder()
            .api_key(self.config.api_key.clone())
            .api_key_env(&self.config.api_key_env)
            .configure_connection(|connection| connection.site(configured))
            .cache_dir(self.config.cache_dir.clone())
            .crs(self.config.export_crs)
            .offline(self.config.offline)
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
        koops.insert(domain.clone(), koop.clone());
        Ok(koop)
    }

    /// The domain and layer id a request names, normalised (`DATA.linz.govt.nz` and
    /// `data.linz.govt.nz`, `01006` and `1006` are the same layer).
    fn layer_of(request: &ProviderRequest) -> Result<(Domain, u64), ProviderError> {
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

    /// The layer's state: cached for `refresh`, then its version is checked again (one API
    /// request; two when the version changed, for the new details).
    pub(crate) async fn state(
        &self,
        request: &ProviderRequest,
    ) -> Result<LayerState, ProviderError> {
        let (domain, layer_id) = Self::layer_of(request)?;
        let previous = self
            .layers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(domain.clone(), layer_id))
            .cloned();
        if let Some(state) = &previous
            && state.checked.elapsed() < self.config.refresh
        {
            return Ok(state.clone());
        }
        let koop = self.koop_for(&domain)?;
        let fetched = koop
            .fetch_layer(layer_id, &Quiet)
            .await
            .map_err(|error| provider_error(layer_id, error))?;
        let state = match previous {
            Some(state) if state.table.path == fetched.path => LayerState {
                checked: Instant::now(),
                ..state
            },
            _ => {
                let details = if koop.is_offline() {
                    None
                } else {
                    Some(
                        koop.layer_details(layer_id)
                            .await
                            .map_err(|error| provider_error(layer_id, error))?,
                    )
                };
                self.load(&fetched, details.as_ref()).await?
            }
        };
        self.layers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert((domain, layer_id), state.clone());
        Ok(state)
    }

    /// Reads the GeoPackage's table and builds the metadata: from the layer details when given
    /// (fields and their types, geometry type, primary key), else from the GeoPackage.
    async fn load(
        &self,
        fetched: &FetchedLayer,
        details: Option<&LayerDetails>,
    ) -> Result<LayerState, ProviderError> {
        let manifest = &fetched.entry.manifest;
        if fetched.path.extension().is_none_or(|ext| ext != "gpkg") {
            return Err(ProviderError::bad_request(format!(
                "layer {} is a {} layer; only vector layers and tables are served as features",
                manifest.key.layer_id, manifest.kind
            )));
        }
        let path = fetched.path.clone();
        let details = details.cloned();
        let title = manifest.title.clone();
        let max_record_count = self.config.max_record_count;
        tokio::task::spawn_blocking(move || {
            let table = gpkg::inspect(&path)?;
            let connection = gpkg::open(&path)?;
            let fields: Vec<Field> = match &details {
                Some(details) if !details.fields().is_empty() => details
                    .fields()
                    .iter()
                    .filter(|field| field.field_type != koop::koop_api::FieldType::Geometry)
                    .filter(|field| table.columns.iter().any(|column| column.name == field.name))
                    .map(|field| Field::new(&field.name, field_type(&field.field_type)))
                    .collect(),
                _ => table.fields(),
            };
            // idField: the primary key, when it is an integer whose values fit 0..=2^31-1.
            let id_field = details
                .as_ref()
                .and_then(|details| details.data.as_ref())
                .and_then(|data| data.primary_key_fields.first().cloned())
                .filter(|key| {
                    fields
                        .iter()
                        .any(|field| field.name == *key && field.field_type == FieldType::Integer)
                })
                .filter(|key| {
                    table
                        .integer_range(&connection, key)
                        .is_some_and(|(min, max)| min >= 0 && max <= i64::from(i32::MAX))
                });
            let extent = match (table.bounds, table.srs) {
                (Some(bounds), Some(srs)) => extent_4326(bounds, srs),
                _ => None,
            };
            let geometry_type = match &details {
                Some(details) => geometry_type(details),
                None => None,
            };
            let metadata = Metadata {
                name: Some(
                    details
                        .as_ref()
                        .map_or(title, |details| details.title.clone()),
                ),
                description: details
                    .as_ref()
                    .and_then(|details| details.description.clone()),
                extent,
                display_field: fields
                    .iter()
                    .find(|field| matches!(field.name.as_str(), "name" | "title"))
                    .map(|field| field.name.clone()),
                geometry_type,
                id_field,
                max_record_count: Some(max_record_count),
                exceeded_transfer_limit: false,
                time_info: None,
                fields,
            };
            Ok(LayerState {
                connections: Arc::new(gpkg::ConnectionPool::new(&table.path)),
                table: Arc::new(table),
                metadata,
                checked: Instant::now(),
            })
        })
        .await
        .map_err(task_failed)?
    }
}

impl KoordinatesProvider {
    /// A Geoservices query, pushed down into SQLite: counts and pages are answered whole;
    /// other queries stream their matching rows.
    async fn query(
        &self,
        state: LayerState,
        request: &ProviderRequest,
    ) -> Result<ProviderStream, ProviderError> {
        let plan = query::plan(&state, request, self.config.max_record_count)?;
        let mut metadata = state.metadata;
        let (applied, crs) = (plan.applied, plan.crs);
        let (table, connections) = (state.table.clone(), state.connections.clone());
        if plan.kind == query::Kind::Rows {
            let (sender, mut receiver) = tokio::sync::mpsc::channel(STREAM_BUFFER);
            tokio::task::spawn_blocking(move || {
                let failed = sender.clone();
                if let Err(error) = plan.run(&table, &connections, |feature| {
                    sender.blocking_send(Ok(feature)).is_ok()
                }) {
                    let _ = failed.blocking_send(Err(error));
                }
            });
            return Ok(ProviderStream {
                metadata,
                filters_applied: applied,
                crs,
                count: None,
                features: Box::pin(futures::stream::poll_fn(move |context| {
                    receiver.poll_recv(context)
                })),
            });
        }
        let kind = plan.kind;
        let (features, outcome) = tokio::task::spawn_blocking(move || {
            let mut features = Vec::new();
            let outcome = plan.run(&table, &connections, |feature| {
                features.push(feature);
                true
            })?;
            Ok::<_, ProviderError>((features, outcome))
        })
        .await
        .map_err(task_failed)??;
        metadata.exceeded_transfer_limit = outcome.exceeded;
        Ok(ProviderStream {
            metadata,
            filters_applied: applied,
            crs,
            // A count answers with it; a page's total is not known (only whether more exist).
            count: (kind == query::Kind::Count).then_some(outcome.count),
            features: Box::pin(futures::stream::iter(features.into_iter().map(Ok))),
        })
    }
}

/// The extent of `bounds` (in EPSG `srs`) in EPSG:4326: `[[xmin, ymin], [xmax, ymax]]`, from
/// the corners and edge midpoints.
fn extent_4326([min_x, min_y, max_x, max_y]: [f64; 4], srs: Epsg) -> Option<[[f64; 2]; 2]> {
    let reprojector = Reprojector::new(srs, Epsg::WGS84).ok()?;
    let (center_x, center_y) = (f64::midpoint(min_x, max_x), f64::midpoint(min_y, max_y));
    let mut extent = [
        [f64::INFINITY, f64::INFINITY],
        [f64::NEG_INFINITY, f64::NEG_INFINITY],
    ];
    for (x, y) in [
        (min_x, min_y),
        (min_x, max_y),
        (max_x, min_y),
        (max_x, max_y),
        (center_x, min_y),
        (center_x, max_y),
        (min_x, center_y),
        (max_x, center_y),
    ] {
        let (lon, lat) = reprojector.position(x, y).ok()?;
        extent[0] = [extent[0][0].min(lon), extent[0][1].min(lat)];
        extent[1] = [extent[1][0].max(lon), extent[1][1].max(lat)];
    }
    Some(extent)
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
    /// [`Provider::get_stream`], which holds a few hundred features at a time.
    async fn get_data(&self, request: &ProviderRequest) -> Result<ProviderData, ProviderError> {
        let stream = self.get_stream(request).await?;
        let features: Vec<geojson::Feature> = stream
            .features
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
            ttl: None,
        })
    }

    /// The layer's features in EPSG:4326, streamed from the cached GeoPackage. Outputs that
    /// set `method` get more: `info` answers the metadata alone (and the row count), `query`
    /// answers a Geoservices query in SQLite (see the module documentation).
    async fn get_stream(&self, request: &ProviderRequest) -> Result<ProviderStream, ProviderError> {
        let state = self.state(request).await?;
        match request.params.method.as_deref() {
            Some("info") => {
                return Ok(ProviderStream {
                    metadata: state.metadata,
                    filters_applied: FiltersApplied::default(),
                    crs: None,
                    count: Some(state.table.count),
                    features: Box::pin(futures::stream::empty()),
                });
            }
            Some("query") => return self.query(state, request).await,
            _ => {}
        }
        let reprojector = Reprojector::new(state.table.srs.unwrap_or(Epsg::WGS84), Epsg::WGS84)
            .map_err(reproject_failed)?;
        let (sender, mut receiver) = tokio::sync::mpsc::channel(STREAM_BUFFER);
        let table = state.table.clone();
        tokio::task::spawn_blocking(move || {
            gpkg::read_features(&table, &reprojector, |feature| {
                sender.blocking_send(feature).is_ok()
            });
        });
        let features = futures::stream::poll_fn(move |context| receiver.poll_recv(context));
        Ok(ProviderStream {
            metadata: state.metadata,
            filters_applied: FiltersApplied::default(),
            crs: None,
            count: None,
            features: Box::pin(features),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn koordinates_field_types_map_to_koop_types() {
        use koop::koop_api::FieldType as Koordinates;
        for (koordinates, koop) in [
            (Koordinates::Integer, FieldType::Integer),
            (Koordinates::BigInteger, FieldType::Integer),
            (Koordinates::Double, FieldType::Double),
            (Koordinates::Float, FieldType::Double),
            (Koordinates::Numeric, FieldType::Double),
            (Koordinates::Date, FieldType::Date),
            (Koordinates::DateTime, FieldType::Date),
            (Koordinates::String, FieldType::String),
            (Koordinates::Boolean, FieldType::String),
        ] {
            assert_eq!(field_type(&koordinates), koop, "{koordinates:?}");
        }
    }

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

    #[test]
    fn extents_are_reprojected_to_degrees() {
        let extent = extent_4326(
            [1_090_000.0, 4_750_000.0, 2_090_000.0, 6_190_000.0],
            Epsg::NZTM2000,
        )
        .expect("extent");
        assert!(extent[0][0] > 165.0 && extent[1][0] < 180.0, "{extent:?}");
        assert!(extent[0][1] > -48.0 && extent[1][1] < -33.0, "{extent:?}");
        assert_eq!(
            extent_4326([0.0, 0.0, 1.0, 1.0], Epsg::WGS84),
            Some([[0.0, 0.0], [1.0, 1.0]])
        );
    }
}
