//! The fake server's state: layers and their versions, exports, faults and counters.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::TestkitError;
use crate::artifacts::Artifacts;
use crate::catalog::{Kind, LayerContent, TestLayer};
use crate::faults::{ExportFaults, ExportOutcome, RequestFaults};
use crate::geopackage::{self, LayerSchema};

/// One version of a layer.
#[derive(Debug, Clone)]
pub(crate) struct VersionRecord {
    pub(crate) id: u64,
    pub(crate) created_at: String,
    /// `false` for a metadata-only version.
    pub(crate) data_import: bool,
    /// The version whose data this one carries.
    pub(crate) data_version: u64,
    /// Content revision: 0 for the original data, +1 per data bump.
    pub(crate) revision: u32,
    /// When it was published, by the wall clock: what the catalog's `updated_at` says and its
    /// `updated_at.after` filter compares (a layer's first version a day before the server
    /// started; a bump at the moment it is made).
    pub(crate) updated: std::time::SystemTime,
}

pub(crate) struct LayerEntry {
    pub(crate) layer: TestLayer,
    pub(crate) schema: Option<LayerSchema>,
    /// Oldest first; the last one is current.
    pub(crate) versions: Vec<VersionRecord>,
    /// What each content revision was (index = revision): see [`crate::edits::History`].
    pub(crate) history: Vec<Option<u32>>,
}

impl LayerEntry {
    pub(crate) fn current(&self) -> &VersionRecord {
        // Every entry is created with one version and versions are only ever added.
        &self.versions[self.versions.len() - 1]
    }
}

#[derive(Debug, Clone)]
pub(crate) struct ExportRecord {
    pub(crate) id: u64,
    pub(crate) layer_id: u64,
    pub(crate) revision: u32,
    pub(crate) created: Instant,
    pub(crate) created_at: String,
    pub(crate) latency: Duration,
    pub(crate) outcome: ExportOutcome,
    pub(crate) cancelled: bool,
    pub(crate) crs: String,
    pub(crate) formats: serde_json::Value,
    pub(crate) extent: serde_json::Value,
    pub(crate) item_url: String,
    pub(crate) name: String,
    /// `progress` is `null` while processing.
    pub(crate) hide_progress: bool,
}

/// `(state, progress, complete)` of an export now.
pub(crate) fn export_state(record: &ExportRecord, now: Instant) -> (&'static str, Option<f64>) {
    if record.cancelled {
        return ("cancelled", None);
    }
    let elapsed = now.saturating_duration_since(record.created);
    let fraction = if record.latency.is_zero() {
        1.0
    } else {
        elapsed.as_secs_f64() / record.latency.as_secs_f64()
    };
    let rising = (fraction.min(0.99) * 100.0).floor() / 100.0;
    match record.outcome {
        _ if record.hide_progress
            && (fraction < 1.0 || record.outcome == ExportOutcome::NeverComplete) =>
        {
            ("processing", None)
        }
        ExportOutcome::NeverComplete => ("processing", Some(rising.min(0.95))),
        _ if fraction < 1.0 => ("processing", Some(rising)),
        ExportOutcome::Complete => ("complete", Some(1.0)),
        ExportOutcome::Error => ("error", Some(rising)),
        ExportOutcome::Cancelled => ("cancelled", None),
    }
}

/// Which listener saw a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The Koordinates API listener.
    Api,
    /// The second listener, standing in for presigned object storage on another host.
    Storage,
}

/// A request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// Which listener.
    pub listener: Listener,
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The `Authorization` header, verbatim.
    pub authorization: Option<String>,
    /// The `Range` header, verbatim.
    pub range: Option<String>,
    /// When it arrived, since the server started.
    pub at: std::time::Duration,
}

/// A snapshot of the server's request counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Counters {
    /// Every request to `/services/api/…`, refused ones included.
    pub api_requests: u64,
    /// `layers/{id}/` and `tables/{id}/`.
    pub layer_details: u64,
    /// `layers/{id}/versions/` pages.
    pub version_lists: u64,
    /// `layers/{id}/versions/{vid}/`.
    pub version_details: u64,
    /// Dublin Core documents.
    pub dc_documents: u64,
    /// `POST exports/validate/`.
    pub export_validations: u64,
    /// `POST exports/` that created an export.
    pub exports_created: u64,
    /// `GET exports/{id}/`.
    pub export_polls: u64,
    /// `DELETE exports/{id}/`.
    pub export_cancels: u64,
    /// `GET exports/` pages.
    pub export_lists: u64,
    /// `GET exports/{id}/download/` on the API listener.
    pub downloads: u64,
    /// Downloads (on either listener) that carried a `Range` header.
    pub range_requests: u64,
    /// Downloads served by the storage listener.
    pub storage_downloads: u64,
    /// Requests refused with 401.
    pub unauthorized: u64,
    /// Requests refused with an injected 429.
    pub rate_limited: u64,
    /// Requests answered with an injected 5xx.
    pub server_errors: u64,
    /// `GET data/` pages (the catalog).
    pub catalog_pages: u64,
    /// WFS changeset pages served (`GetFeature` on `layer-{id}-changeset`).
    pub changeset_pages: u64,
    /// Bytes of the changeset pages served.
    pub changeset_bytes: u64,
}

macro_rules! counters {
    ($($field:ident),+ $(,)?) => {
        #[derive(Default)]
        pub(crate) struct AtomicCounters { $(pub(crate) $field: AtomicU64,)+ }

        impl AtomicCounters {
            pub(crate) fn snapshot(&self) -> Counters {
                Counters { $($field: self.$field.load(Ordering::SeqCst),)+ }
            }
        }
    };
}

counters!(
    catalog_pages,
    changeset_pages,
    changeset_bytes,
    api_requests,
    layer_details,
    version_lists,
    version_details,
    dc_documents,
    export_validations,
    exports_created,
    export_polls,
    export_cancels,
    export_lists,
    downloads,
    range_requests,
    storage_downloads,
    unauthorized,
    rate_limited,
    server_errors,
);

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::SeqCst);
}

/// The kind of version bump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BumpKind {
    /// New data: a new version id with `data_import: true` and new content.
    Data,
    /// New metadata only: a new version id with `data_import: false`; `import_version` still
    /// points at the previous data version and the content is unchanged.
    MetadataOnly,
    /// New data that edits the previous data: `per_mille` ‰ of the features of a generated point
    /// layer or table are inserted, updated or deleted (half inserts, a quarter each updates and
    /// deletes, each at least one), as a changeset would report them. Other layers get new data
    /// as with [`BumpKind::Data`].
    Edit {
        /// Features changed, in thousandths of the previous feature count.
        per_mille: u32,
    },
}

pub(crate) struct Mutable {
    pub(crate) layers: BTreeMap<u64, LayerEntry>,
    pub(crate) exports: BTreeMap<u64, ExportRecord>,
    pub(crate) next_export_id: u64,
    pub(crate) next_version_id: u64,
    pub(crate) version_clock: u64,
    pub(crate) request_faults: RequestFaults,
    /// API requests seen since the request faults were last set.
    pub(crate) requests_since_faults: u32,
    pub(crate) export_faults: HashMap<u64, ExportFaults>,
    pub(crate) default_export_faults: ExportFaults,
    pub(crate) requests: Vec<RecordedRequest>,
    pub(crate) exports_per_layer: HashMap<u64, u64>,
    pub(crate) changeset_faults: HashMap<u64, crate::faults::ChangesetFaults>,
    /// Injected changeset 500s served, per layer.
    pub(crate) changeset_errors_served: HashMap<u64, u32>,
    /// Changesets computed, by `(layer, from revision, to revision)`.
    pub(crate) changesets: HashMap<(u64, Option<u32>, u32), Arc<Vec<serde_json::Value>>>,
}

pub(crate) struct State {
    pub(crate) api_key: String,
    pub(crate) page_size: usize,
    pub(crate) reuse_identical_exports: bool,
    pub(crate) api_origin: String,
    pub(crate) storage_origin: String,
    pub(crate) counters: AtomicCounters,
    pub(crate) artifacts: Artifacts,
    /// When the server started, the origin of [`RecordedRequest::at`].
    pub(crate) started: Instant,
    mutable: Mutex<Mutable>,
}

/// Timestamps of versions: one hour apart from 2026-01-01T00:00:00Z.
fn version_timestamp(clock: u64) -> String {
    let days = clock / 24;
    let hour = clock % 24;
    format!("{}T{hour:02}:00:00Z", geopackage::civil_date(20_454 + days))
}

pub(crate) fn now_timestamp() -> String {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = since_epoch.as_secs();
    format!(
        "{}T{:02}:{:02}:{:02}.{:06}Z",
        geopackage::civil_date(seconds / 86_400),
        seconds % 86_400 / 3600,
        seconds % 3600 / 60,
        seconds % 60,
        since_epoch.subsec_micros()
    )
}

impl State {
    pub(crate) fn new(
        api_key: String,
        page_size: usize,
        reuse_identical_exports: bool,
        api_origin: String,
        storage_origin: String,
        artifacts: Artifacts,
    ) -> Self {
        Self {
            api_key,
            page_size: page_size.max(1),
            reuse_identical_exports,
            api_origin,
            storage_origin,
            counters: AtomicCounters::default(),
            artifacts,
            started: Instant::now(),
            mutable: Mutex::new(Mutable {
                layers: BTreeMap::new(),
                exports: BTreeMap::new(),
                next_export_id: 1,
                next_version_id: 100_000,
                version_clock: 0,
                request_faults: RequestFaults::default(),
                requests_since_faults: 0,
                export_faults: HashMap::new(),
                default_export_faults: ExportFaults::default(),
                requests: Vec::new(),
                exports_per_layer: HashMap::new(),
                changeset_faults: HashMap::new(),
                changeset_errors_served: HashMap::new(),
                changesets: HashMap::new(),
            }),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Mutable> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.mutable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The API base URL, e.g. `http://127.0.0.1:41234/services/api/v1.x/`.
    pub(crate) fn api_base(&self) -> String {
        format!("{}/services/api/v1.x/", self.api_origin)
    }

    /// Adds (or replaces) a layer with one version.
    pub(crate) fn add_layer(&self, layer: TestLayer) -> Result<(), TestkitError> {
        let schema = match &layer.content {
            LayerContent::GeoPackage(bytes) => {
                let file = tempfile::NamedTempFile::new()?;
                std::fs::write(file.path(), bytes)?;
                Some(geopackage::inspect(file.path())?)
            }
            LayerContent::Generated(content) => Some(content.schema()),
            LayerContent::GeoTiff(_) | LayerContent::Nothing => None,
        };
        let mut mutable = self.lock();
        let id = mutable.next_version_id;
        mutable.next_version_id += 1;
        let clock = mutable.version_clock;
        mutable.version_clock += 1;
        let version = VersionRecord {
            id,
            created_at: version_timestamp(clock),
            data_import: true,
            data_version: id,
            revision: 0,
            updated: std::time::SystemTime::now() - std::time::Duration::from_secs(86_400),
        };
        mutable.layers.insert(
            layer.id,
            LayerEntry {
                layer,
                schema,
                versions: vec![version],
                history: vec![None],
            },
        );
        Ok(())
    }

    /// Adds a version to a layer; returns the new version id.
    pub(crate) fn bump_version(&self, layer_id: u64, kind: BumpKind) -> Option<u64> {
        let mut mutable = self.lock();
        let id = mutable.next_version_id;
        let clock = mutable.version_clock;
        let entry = mutable.layers.get_mut(&layer_id)?;
        let current = entry.current().clone();
        let version = match kind {
            BumpKind::Data | BumpKind::Edit { .. } => VersionRecord {
                id,
                created_at: version_timestamp(clock),
                data_import: true,
                data_version: id,
                revision: current.revision + 1,
                updated: std::time::SystemTime::now(),
            },
            BumpKind::MetadataOnly => VersionRecord {
                id,
                created_at: version_timestamp(clock),
                data_import: false,
                data_version: current.data_version,
                revision: current.revision,
                updated: std::time::SystemTime::now(),
            },
        };
        match kind {
            BumpKind::Data => entry.history.push(None),
            BumpKind::Edit { per_mille } => entry.history.push(Some(per_mille)),
            BumpKind::MetadataOnly => {}
        }
        entry.versions.push(version);
        mutable.next_version_id += 1;
        mutable.version_clock += 1;
        Some(id)
    }

    pub(crate) fn export_faults(&self, layer_id: u64) -> ExportFaults {
        let mutable = self.lock();
        mutable
            .export_faults
            .get(&layer_id)
            .cloned()
            .unwrap_or_else(|| mutable.default_export_faults.clone())
    }

    pub(crate) fn record(&self, request: RecordedRequest) {
        let mut mutable = self.lock();
        if mutable.requests.len() >= 100_000 {
            mutable.requests.drain(..50_000);
        }
        mutable.requests.push(request);
    }

    pub(crate) fn shared(self) -> Arc<Self> {
        Arc::new(self)
    }
}

/// Resolves a layer id from an item URL such as `…/layers/1474/` or `…/tables/113761/`.
pub(crate) fn layer_id_from_item(url: &str) -> Option<u64> {
    let mut segments = url.trim_end_matches('/').rsplit('/');
    let id = segments.next()?.parse().ok()?;
    matches!(segments.next()?, "layers" | "tables").then_some(id)
}

/// `kind` is exportable as `mime`.
pub(crate) fn exportable(kind: Kind, mime: Option<&str>) -> Result<(), &'static str> {
    match (kind.export_mime(), mime) {
        (None, _) => Err("unsupported-kind"),
        (Some(_), None) => Err("no-format-for-kind"),
        (Some(expected), Some(asked)) if expected == asked => Ok(()),
        (Some(_), Some(_)) => Err("invalid-format"),
    }
}
