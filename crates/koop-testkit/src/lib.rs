//! An in-process fake Koordinates server for tests, benchmarks and `koop demo`.
//!
//! [`TestServer`] listens on `127.0.0.1:0` (a free port) and serves, under
//! `/services/api/v1.x/` (any version segment is accepted):
//!
//! - layer and table details shaped like the real v1.x responses (or v1, per layer), versions
//!   (paged with `Link: rel="page-next"` and `X-Resource-Range`), and Dublin Core documents whose
//!   values need escaping (`&`, `<`, quotes, macrons, emoji, a repeated `dc:title` with `xml:lang`);
//! - the export lifecycle: validate (200 even when invalid), create (201), `processing` with a
//!   rising `progress` for the layer's latency, then `complete` with a `download_url`; cancel
//!   (202, or 409 `Can't cancel`); list; and the download, a ZIP with
//!   `Content-Disposition: attachment; filename*=UTF-8''…` holding the layer file(s), an ISO
//!   metadata XML and a text file, with HTTP Range support;
//! - real content: the bundled Natural Earth GeoPackages and GeoTIFFs (a 2 × 2 tile raster among
//!   them), and GeoPackages generated on demand at any size ([`GeneratedContent`]);
//! - the API key check (401 with a JSON error), request counters ([`Counters`]), a log of every
//!   request with its `Authorization` header, version bumps ([`TestServer::bump_version`]), and
//!   opt-in faults ([`RequestFaults`], [`ExportFaults`]): 429 with `Retry-After`, 5xx on the k-th
//!   request, 401 for exports (a key that expired), exports ending `error` or `cancelled` or never completing, a connection dropped after
//!   N bytes, truncated, path-traversal, empty or corrupted ZIPs, and a redirect of the download to
//!   a second listener on another origin (standing in for presigned object storage).
//!
//! Limitations: an export holds one layer; the content is served in its own CRS whatever CRS the
//! request asks for; a data version bump of a GeoTIFF layer keeps the same pixels.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), koop_testkit::TestkitError> {
//! let server = koop_testkit::TestServer::start().await?;
//! let response = reqwest::Client::new()
//!     .get(format!("{}layers/1001/", server.api_url()))
//!     .header("Authorization", format!("key {}", server.api_key()))
//!     .send()
//!     .await
//!     .unwrap();
//! assert_eq!(response.status(), 200);
//! assert_eq!(server.counters().layer_details, 1);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub use catalog::{
    ApiGeneration, DEMO_LAYER_IDS, GEOPACKAGE_MIME, GEOTIFF_MIME, Kind, LayerContent, TestLayer,
    demo_layers,
};
pub use faults::{
    CatalogFilter, ChangesetFaults, DEFAULT_CHANGESET_PAGE_CAP, DropDownloadFault, ExportFaults,
    ExportOutcome, RateLimitFault, RequestFaults, ServerErrorFault, ZipFault,
};
pub use geopackage::{GeneratedContent, GeneratedInfo, LayerSchema, inspect as inspect_geopackage};
pub use state::{BumpKind, Counters, Listener, RecordedRequest};

pub mod arcgis_pbf;
pub mod data;
pub mod fixtures;
pub mod hostile;
pub mod http;
pub mod logs;
pub mod moto;

mod artifacts;
mod bodies;
mod catalog;
mod edits;
mod faults;
mod geopackage;
mod routes;
mod state;

/// The API key a [`TestServer`] accepts unless configured otherwise.
pub const DEFAULT_API_KEY: &str = "koop-testkit-0123456789abcdef";

/// Errors of the test server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestkitError {
    /// A file or socket operation failed.
    #[error("koop-testkit I/O failed")]
    Io(#[from] std::io::Error),
    /// A GeoPackage could not be read or written.
    #[error("koop-testkit could not read or write a GeoPackage")]
    Sqlite(#[from] rusqlite::Error),
    /// A geometry could not be converted.
    #[error("koop-testkit could not convert a geometry")]
    Geometry(#[from] geozero::error::GeozeroError),
    /// A ZIP could not be written.
    #[error("koop-testkit could not write an export ZIP")]
    Zip(#[from] async_zip::error::ZipError),
    /// The layer has no exportable content.
    #[error("layer {0} has no exportable content (a point cloud)")]
    NotExportable(u64),
    /// No such layer.
    #[error("koop-testkit has no layer {0}")]
    UnknownLayer(u64),
    /// An HTTP request of a test helper failed.
    #[error("koop-testkit's HTTP client failed")]
    Http(#[from] reqwest::Error),
    /// A test helper met an answer it did not expect.
    #[error("koop-testkit: {0}")]
    Unexpected(String),
}

/// Settings of a [`TestServer`].
#[derive(Debug, Clone)]
pub struct TestServerConfig {
    /// The API key the server accepts (default [`DEFAULT_API_KEY`]).
    pub api_key: String,
    /// The layers it serves (default [`demo_layers`]).
    pub layers: Vec<TestLayer>,
    /// Items per page of list endpoints (default 100).
    pub page_size: usize,
    /// Answer a new export identical to a complete recent one as complete at once, as
    /// Koordinates does (default `true`).
    pub reuse_identical_exports: bool,
}

impl Default for TestServerConfig {
    fn default() -> Self {
        Self {
            api_key: DEFAULT_API_KEY.to_owned(),
            layers: demo_layers(),
            page_size: 100,
            reuse_identical_exports: true,
        }
    }
}

/// A running fake Koordinates server. Stops when dropped.
pub struct TestServer {
    state: Arc<state::State>,
    api_addr: SocketAddr,
    storage_addr: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("api", &self.api_addr)
            .field("storage", &self.storage_addr)
            .finish_non_exhaustive()
    }
}

impl TestServer {
    /// Starts a server with the demo layers ([`demo_layers`]) and [`DEFAULT_API_KEY`].
    ///
    /// # Errors
    ///
    /// [`TestkitError::Io`] when a listener cannot be bound; [`TestkitError::Sqlite`] when a
    /// layer's GeoPackage cannot be inspected.
    pub async fn start() -> Result<Self, TestkitError> {
        Self::start_with(TestServerConfig::default()).await
    }

    /// Starts a server with `config`. Must be called inside a Tokio runtime, which then runs it.
    ///
    /// # Errors
    ///
    /// As [`TestServer::start`].
    pub async fn start_with(config: TestServerConfig) -> Result<Self, TestkitError> {
        let api_listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let storage_listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let api_addr = api_listener.local_addr()?;
        let storage_addr = storage_listener.local_addr()?;
        let state = state::State::new(
            config.api_key,
            config.page_size,
            config.reuse_identical_exports,
            format!("http://{api_addr}"),
            format!("http://{storage_addr}"),
            artifacts::Artifacts::new()?,
        );
        for layer in config.layers {
            state.add_layer(layer)?;
        }
        let state = state.shared();
        let api = routes::api_router(state.clone());
        let storage = routes::storage_router(state.clone());
        let tasks = vec![
            tokio::spawn(async move {
                let _ = axum::serve(api_listener, api).await;
            }),
            tokio::spawn(async move {
                let _ = axum::serve(storage_listener, storage).await;
            }),
        ];
        Ok(Self {
            state,
            api_addr,
            storage_addr,
            tasks,
        })
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    /// `http://127.0.0.1:PORT/services/api/v1.x/`
    pub fn api_url(&self) -> String {
        self.state.api_base()
    }

    /// The domain to give a client: `127.0.0.1:PORT` (plain HTTP).
    pub fn domain(&self) -> String {
        self.api_addr.to_string()
    }

    /// The site as a [`koop_types::Domain`]: `127.0.0.1:PORT`, reached over plain HTTP.
    pub fn site(&self) -> koop_types::Domain {
        // `http://` and a socket address always read as a domain.
        koop_types::Domain::parse(&self.base_url())
            .unwrap_or_else(|_| unreachable!("a loopback socket address is a domain"))
    }

    /// A client of this server that speaks raw HTTP with its key, for tests that check what the
    /// server answers without going through koop.
    pub fn raw_client(&self) -> http::RawClient {
        http::RawClient::new(self)
    }

    /// `http://127.0.0.1:PORT2`, the second listener ("object storage").
    pub fn storage_url(&self) -> String {
        format!("http://{}", self.storage_addr)
    }

    /// The API key the server accepts.
    pub fn api_key(&self) -> &str {
        &self.state.api_key
    }

    /// A snapshot of the request counters.
    pub fn counters(&self) -> Counters {
        self.state.counters.snapshot()
    }

    /// How many exports of `layer_id` were created.
    pub fn exports_created_for(&self, layer_id: u64) -> u64 {
        self.state
            .lock()
            .exports_per_layer
            .get(&layer_id)
            .copied()
            .unwrap_or(0)
    }

    /// Every request seen so far (the last 100,000 at most), on both listeners.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.lock().requests.clone()
    }

    /// Adds or replaces a layer.
    ///
    /// # Errors
    ///
    /// [`TestkitError::Sqlite`] or [`TestkitError::Io`] when its GeoPackage cannot be inspected.
    pub fn add_layer(&self, layer: TestLayer) -> Result<(), TestkitError> {
        self.state.add_layer(layer)
    }

    /// Publishes a new version of a layer; returns its id, or `None` for an unknown layer.
    pub fn bump_version(&self, layer_id: u64, kind: BumpKind) -> Option<u64> {
        self.state.bump_version(layer_id, kind)
    }

    /// Sets how long new exports of a layer stay `processing`; `false` for an unknown layer.
    pub fn set_export_latency(&self, layer_id: u64, latency: std::time::Duration) -> bool {
        match self.state.lock().layers.get_mut(&layer_id) {
            Some(entry) => {
                entry.layer.export_latency = latency;
                true
            }
            None => false,
        }
    }

    /// The current version id of a layer.
    pub fn current_version(&self, layer_id: u64) -> Option<u64> {
        self.state
            .lock()
            .layers
            .get(&layer_id)
            .map(|entry| entry.current().id)
    }

    /// Sets the request faults (replacing earlier ones) and restarts their request count.
    pub fn set_request_faults(&self, faults: RequestFaults) {
        let mut mutable = self.state.lock();
        mutable.request_faults = faults;
        mutable.requests_since_faults = 0;
    }

    /// Sets the export faults of one layer.
    pub fn set_export_faults(&self, layer_id: u64, faults: ExportFaults) {
        self.state.lock().export_faults.insert(layer_id, faults);
    }

    /// Sets the faults of one layer's WFS changeset service.
    pub fn set_changeset_faults(&self, layer_id: u64, faults: ChangesetFaults) {
        let mut mutable = self.state.lock();
        mutable.changeset_faults.insert(layer_id, faults);
        mutable.changeset_errors_served.remove(&layer_id);
    }

    /// Sets the export faults of every layer without faults of its own.
    pub fn set_default_export_faults(&self, faults: ExportFaults) {
        self.state.lock().default_export_faults = faults;
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        let mut mutable = self.state.lock();
        mutable.request_faults = RequestFaults::default();
        mutable.export_faults.clear();
        mutable.default_export_faults = ExportFaults::default();
        mutable.changeset_faults.clear();
        mutable.changeset_errors_served.clear();
    }

    /// Builds (once) and returns the path of the good export ZIP of a layer's current version,
    /// e.g. to compare a download against it or to time other tools on it.
    ///
    /// # Errors
    ///
    /// [`TestkitError::UnknownLayer`], or the error that building the ZIP met.
    pub async fn export_zip(&self, layer_id: u64) -> Result<PathBuf, TestkitError> {
        let (layer, history, revision) = {
            let mutable = self.state.lock();
            let entry = mutable
                .layers
                .get(&layer_id)
                .ok_or(TestkitError::UnknownLayer(layer_id))?;
            (
                entry.layer.clone(),
                entry.history.clone(),
                entry.current().revision,
            )
        };
        self.state
            .artifacts
            .zip(&layer, &history, revision, ZipFault::None)
            .await
            .map(|artifact| artifact.path)
            .map_err(|message| TestkitError::Io(std::io::Error::other(message)))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
