//! Getting layers: the original's `get_layer_from_id`, and beyond it `koop.Koop` (options) and
//! `koop.mirror` (many layers at once).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use koop::{Domain, Epsg, ExportOptions, FetchedLayer, MirrorOptions};
use pyo3::prelude::*;
use tokio_util::sync::CancellationToken;

use crate::connection::{parse_domain, resolve_api_key};
use crate::{errors, wait};

/// The default Koordinates site, as in the original.
const DEFAULT_DOMAIN: &str = "ttgroup.koordinates.com";

/// What a `Koop` is built from; kept to build it again after a Ctrl-C cancelled the last one.
#[derive(Clone)]
struct Settings {
    api_key: Option<String>,
    domain: Domain,
    api_version: String,
    cache_dir: Option<PathBuf>,
    crs: Option<Epsg>,
    extent: Option<serde_json::Value>,
    timeout: Option<Duration>,
    offline: bool,
}

impl Settings {
    fn build(&self) -> PyResult<(koop::Koop, CancellationToken)> {
        let cancel = CancellationToken::new();
        let mut export_options = ExportOptions::default();
        if let Some(timeout) = self.timeout {
            export_options.deadline = timeout;
        }
        let domain = self.domain.clone();
        let api_version = self.api_version.clone();
        let mut builder = koop::Koop::builder()
            .api_key(self.api_key.clone())
            .configure_connection(move |connection| {
                connection.site(&domain).api_version(api_version)
            })
            .cache_dir(self.cache_dir.clone())
            .extent(self.extent.clone())
            .offline(self.offline)
            .export_options(export_options)
            .cancellation(cancel.clone());
        if let Some(crs) = self.crs {
            builder = builder.crs(crs);
        }
        let koop = builder.build().map_err(|error| errors::from_koop(&error))?;
        Ok((koop, cancel))
    }
}

/// A path as Python's `pathlib.Path`.
fn path_object(py: Python<'_>, path: &std::path::Path) -> PyResult<Py<PyAny>> {
    Ok(py
        .import("pathlib")?
        .getattr("Path")?
        .call1((path.as_os_str(),))?
        .unbind())
}

/// Reads `crs=` as Python callers give it: `2193`, `"EPSG:2193"` or `"2193"`.
fn parse_crs(crs: &Bound<'_, PyAny>) -> PyResult<Epsg> {
    let text = match crs.extract::<u32>() {
        Ok(code) => code.to_string(),
        Err(_) => crs.str()?.to_string(),
    };
    text.parse::<Epsg>().map_err(|error| {
        errors::configuration(format!("crs={text:?} is not an EPSG code: {error}"))
    })
}

/// Reads `extent=` as GeoJSON: a dict (a geometry, feature or feature collection) or its JSON
/// text.
fn parse_extent(py: Python<'_>, extent: &Bound<'_, PyAny>) -> PyResult<serde_json::Value> {
    let text = match extent.extract::<String>() {
        Ok(text) => text,
        Err(_) => py
            .import("json")?
            .call_method1("dumps", (extent,))?
            .extract::<String>()?,
    };
    serde_json::from_str(&text)
        .map_err(|error| errors::configuration(format!("extent= is not GeoJSON: {error}")))
}

/// The result of one layer of a mirror.
///
/// Attributes: `layer_id` (int); `path` (`pathlib.Path` of the GeoPackage, GeoTIFF or VRT, or
/// `None` when it failed); `outcome` (`"downloaded"`, `"cached"`, `"linked"` for a version that
/// changed only metadata, `"unchanged"` when the site's catalog reported no change since the last
/// complete mirror, `"changeset"` when the new version was built from the cached previous one and
/// the WFS changeset, `"offline"`, or `None` when it failed); `full_export_reason` (for a layer
/// exported in full, why no changeset was used: a `str`, else `None`); `error` (the
/// `koop.errors.KoopError` it failed with, or `None`); `elapsed` (seconds from its start to its
/// result); `ok` (whether it ended with a file on disk).
#[pyclass(module = "koop", frozen, get_all)]
pub(crate) struct LayerResult {
    layer_id: u64,
    path: Option<Py<PyAny>>,
    outcome: Option<&'static str>,
    full_export_reason: Option<String>,
    error: Option<Py<PyAny>>,
    elapsed: f64,
}

#[pymethods]
impl LayerResult {
    /// Whether the layer ended with a file on disk.
    #[getter]
    fn ok(&self) -> bool {
        self.error.is_none()
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(match (&self.path, &self.error) {
            (Some(path), _) => format!(
                "LayerResult(layer_id={}, outcome={:?}, path={})",
                self.layer_id,
                self.outcome.unwrap_or_default(),
                path.bind(py).repr()?
            ),
            (None, Some(error)) => format!(
                "LayerResult(layer_id={}, error={})",
                self.layer_id,
                error.bind(py).repr()?
            ),
            (None, None) => format!("LayerResult(layer_id={})", self.layer_id),
        })
    }
}

impl LayerResult {
    fn new(py: Python<'_>, result: koop::LayerResult) -> PyResult<Self> {
        let elapsed = result.elapsed.as_secs_f64();
        Ok(match result.result {
            Ok(FetchedLayer {
                path,
                outcome,
                full_export_reason,
                ..
            }) => Self {
                layer_id: result.layer_id,
                path: Some(path_object(py, &path)?),
                outcome: Some(outcome.as_str()),
                full_export_reason,
                error: None,
                elapsed,
            },
            Err(error) => Self {
                layer_id: result.layer_id,
                path: None,
                outcome: None,
                full_export_reason: None,
                error: Some(errors::from_koop(&error).into_value(py).into_any()),
                elapsed,
            },
        })
    }
}

/// koop with options, to get many layers: `Koop(api_key=None, domain="ttgroup.koordinates.com",
/// *, api_version="1.x", cache_dir=None, crs=None, extent=None, timeout=None, offline=False,
/// jobs=8)`.
///
/// - `cache_dir`: the cache (`str` or `os.PathLike`); default `KOOPCACHE_DIR`, else the
///   platform's cache directory.
/// - `crs`: the CRS exports are made in, an EPSG code (`2193`, `"EPSG:4326"`); default EPSG:2193.
/// - `extent`: a GeoJSON geometry (dict or JSON text) that exports are cropped to.
/// - `timeout`: the longest an export may stay processing, in seconds (default 3600).
/// - `offline`: answer from the cache only, with no request.
/// - `jobs`: exports in flight during `mirror` (default 8).
#[pyclass(module = "koop", frozen)]
pub(crate) struct Koop {
    settings: Settings,
    jobs: usize,
    current: Mutex<(Arc<koop::Koop>, CancellationToken)>,
}

impl Koop {
    /// The current `koop::Koop` and its token; a cancelled one is replaced first.
    fn current(&self) -> PyResult<(Arc<koop::Koop>, CancellationToken)> {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.1.is_cancelled() {
            let (koop, cancel) = self.settings.build()?;
            *current = (Arc::new(koop), cancel);
        }
        Ok((Arc::clone(&current.0), current.1.clone()))
    }

    fn with_settings(settings: Settings, jobs: usize) -> PyResult<Self> {
        let (koop, cancel) = settings.build()?;
        Ok(Self {
            settings,
            jobs: jobs.max(1),
            current: Mutex::new((Arc::new(koop), cancel)),
        })
    }

    fn mirror_ids(
        &self,
        py: Python<'_>,
        layer_ids: Vec<u64>,
        jobs: usize,
        every_layer: bool,
    ) -> PyResult<Vec<LayerResult>> {
        let (koop, cancel) = self.current()?;
        let options = MirrorOptions {
            lookups: jobs.max(16),
            exports: jobs.max(1),
            downloads: jobs.clamp(1, 4),
        };
        let results = wait(py, Some(&cancel), async move {
            if every_layer {
                return Ok(koop
                    .mirror(layer_ids, options, &koop::Quiet)
                    .collect::<Vec<_>>()
                    .await);
            }
            let run = koop.plan_mirror(layer_ids).await?;
            let results: Vec<koop::LayerResult> =
                koop.mirror_run(&run, options, &koop::Quiet).collect().await;
            let complete = results.iter().all(|result| result.result.is_ok());
            koop.finish_mirror(run, complete)?;
            Ok::<_, koop::Error>(results)
        })?
        .map_err(|error| errors::from_koop(&error))?;
        results
            .into_iter()
            .map(|result| LayerResult::new(py, result))
            .collect()
    }
}

#[pymethods]
impl Koop {
    #[new]
    #[pyo3(signature = (
        api_key=None,
        domain=DEFAULT_DOMAIN,
        *,
        api_version="1.x",
        cache_dir=None,
        crs=None,
        extent=None,
        timeout=None,
        offline=false,
        jobs=8,
    ))]
    #[expect(clippy::too_many_arguments, reason = "the Python keyword arguments")]
    fn new(
        py: Python<'_>,
        api_key: Option<String>,
        domain: &str,
        api_version: &str,
        cache_dir: Option<PathBuf>,
        crs: Option<&Bound<'_, PyAny>>,
        extent: Option<&Bound<'_, PyAny>>,
        timeout: Option<f64>,
        offline: bool,
        jobs: usize,
    ) -> PyResult<Self> {
        let timeout = match timeout {
            None => None,
            Some(seconds) if seconds.is_finite() && seconds > 0.0 => {
                Some(Duration::from_secs_f64(seconds.min(1e9)))
            }
            Some(seconds) => {
                return Err(errors::configuration(format!(
                    "timeout={seconds} must be a positive number of seconds"
                )));
            }
        };
        let settings = Settings {
            api_key: resolve_api_key(api_key),
            domain: parse_domain(domain)?,
            api_version: api_version.to_owned(),
            cache_dir,
            crs: crs.map(parse_crs).transpose()?,
            extent: extent.map(|extent| parse_extent(py, extent)).transpose()?,
            timeout,
            offline,
        };
        Self::with_settings(settings, jobs)
    }

    /// The Koordinates site, e.g. `"data.linz.govt.nz"`.
    #[getter]
    fn domain(&self) -> String {
        self.settings.domain.as_str().to_owned()
    }

    /// The cache's root directory, a `pathlib.Path`.
    #[getter]
    fn cache_dir(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let (koop, _) = self.current()?;
        path_object(py, koop.cache().root())
    }

    /// Gets a layer's current version onto disk and returns its path (`pathlib.Path` of a
    /// GeoPackage, GeoTIFF, or the VRT over a tiled raster). A cached version costs one request
    /// (`GET layers/{id}/`) and no export.
    ///
    /// Raises `koop.errors.NotFoundError`, `AuthenticationError`, `RateLimitError`,
    /// `ExportError`, `CacheError`, `NotCachedError` (offline), all `KoopError`s;
    /// `KeyboardInterrupt` on Ctrl-C, after cancelling the export on the server.
    fn get_layer(&self, py: Python<'_>, layer_id: u64) -> PyResult<Py<PyAny>> {
        let (koop, cancel) = self.current()?;
        let path = wait(
            py,
            Some(&cancel),
            async move { koop.get_layer(layer_id).await },
        )?
        .map_err(|error| errors::from_koop(&error))?;
        path_object(py, &path)
    }

    /// Gets many layers at once: `jobs` exports in flight (default: the `Koop`'s), lookups and
    /// cache hits never waiting behind downloads. Returns one `LayerResult` per distinct id, in
    /// the order they finished; a failed layer does not stop the others.
    ///
    /// As `koop mirror` does, it asks the site's catalog once what changed since the last
    /// complete mirror of this site on this cache: layers it does not name are answered from
    /// the cache without a request (outcome `"unchanged"`). `every_layer=True` asks each layer
    /// instead.
    #[pyo3(signature = (layer_ids, jobs=None, every_layer=false))]
    fn mirror(
        &self,
        py: Python<'_>,
        layer_ids: Vec<u64>,
        jobs: Option<usize>,
        every_layer: bool,
    ) -> PyResult<Vec<LayerResult>> {
        self.mirror_ids(py, layer_ids, jobs.unwrap_or(self.jobs), every_layer)
    }

    fn __repr__(&self) -> String {
        format!("Koop(domain={:?})", self.settings.domain.as_str())
    }
}

/// Downloads and caches a layer, returning the `pathlib.Path` of its file: the original
/// package's function. The key falls back to `KOORDINATES_API_KEY`, the cache to
/// `KOOPCACHE_DIR` (then the platform's cache directory). A second call for an unchanged layer
/// costs one API request and no download.
///
/// Raises as `Koop.get_layer`; `koop.errors.ConfigurationError` (a `ValueError`) without a key.
#[pyfunction]
#[pyo3(signature = (layer_id, api_key=None, domain=DEFAULT_DOMAIN))]
pub(crate) fn get_layer_from_id(
    py: Python<'_>,
    layer_id: u64,
    api_key: Option<String>,
    domain: &str,
) -> PyResult<Py<PyAny>> {
    let koop = Koop::new(py, api_key, domain, "1.x", None, None, None, None, false, 1)?;
    koop.get_layer(py, layer_id)
}

/// Gets many layers of one site at once (see `Koop.mirror`): `mirror(layer_ids, api_key=None,
/// domain="ttgroup.koordinates.com", jobs=8, every_layer=False)` returns one `LayerResult` per
/// distinct id.
#[pyfunction]
#[pyo3(signature = (layer_ids, api_key=None, domain=DEFAULT_DOMAIN, jobs=8, every_layer=false))]
pub(crate) fn mirror(
    py: Python<'_>,
    layer_ids: Vec<u64>,
    api_key: Option<String>,
    domain: &str,
    jobs: usize,
    every_layer: bool,
) -> PyResult<Vec<LayerResult>> {
    let koop = Koop::new(
        py, api_key, domain, "1.x", None, None, None, None, false, jobs,
    )?;
    koop.mirror_ids(py, layer_ids, jobs, every_layer)
}
