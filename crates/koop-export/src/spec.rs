//! What to export, how long to wait, and what the job reports as it goes.

use std::time::Duration;

use koop_api::{ExportFormat, ExportRequest, LayerDetails};

use crate::error::{Error, Result};

/// The CRS koop exports in unless told otherwise: NZGD2000 / New Zealand Transverse Mercator 2000,
/// as the original Python package does.
pub const DEFAULT_CRS_EPSG: u32 = 2193;

/// What an export delivers: the format (from the layer's kind), the CRS and an optional extent.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportSpec {
    /// GeoPackage for vector layers and tables, GeoTIFF for raster and grid layers.
    pub format: ExportFormat,
    /// Output CRS as an authority code, `EPSG:{code}`.
    pub crs: String,
    /// Crop extent, a GeoJSON geometry in EPSG:4326.
    pub extent: Option<serde_json::Value>,
}

impl ExportSpec {
    /// The spec for a layer: the format its kind needs (checked against `data.export_formats`
    /// when the layer lists them), in EPSG `crs_epsg` (any code; [`DEFAULT_CRS_EPSG`] is the
    /// default), cropped to `extent` if given.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedKind`] for kinds that are not vector, table, raster, grid or raster
    /// attribute table (point clouds, documents, sets); [`Error::FormatNotOffered`] when the layer
    /// lists its formats and the needed one is not among them.
    pub fn for_layer(
        details: &LayerDetails,
        crs_epsg: u32,
        extent: Option<serde_json::Value>,
    ) -> Result<Self> {
        let layer_id = details.layer_id().unwrap_or_default();
        let kind = details
            .kind
            .as_ref()
            .ok_or_else(|| Error::UnsupportedKind {
                layer_id,
                kind: "unknown".to_owned(),
            })?;
        let format = ExportFormat::for_kind(kind).ok_or_else(|| Error::UnsupportedKind {
            layer_id,
            kind: kind.to_string(),
        })?;
        if let Some(offered) = details
            .data
            .as_ref()
            .and_then(|data| data.export_formats.as_ref())
            && !offered
                .iter()
                .any(|offer| offer.mimetype == format.as_str())
        {
            return Err(Error::FormatNotOffered {
                layer_id,
                format: format.to_string(),
                offered: offered.iter().map(|offer| offer.mimetype.clone()).collect(),
            });
        }
        Ok(Self {
            format,
            crs: format!("EPSG:{crs_epsg}"),
            extent,
        })
    }

    /// The export request for `details` with this spec.
    pub fn request(&self, details: &LayerDetails) -> ExportRequest {
        let kind = details.kind.clone().unwrap_or(koop_api::LayerKind::Vector);
        let request = ExportRequest::new(&self.crs)
            .with_item(&details.url)
            .with_format(&kind, &self.format);
        match &self.extent {
            Some(extent) => request.with_extent(extent.clone()),
            None => request,
        }
    }

    /// The extension of the layer file: `gpkg` or `tif`.
    pub fn extension(&self) -> &'static str {
        self.format.extension().unwrap_or("bin")
    }
}

/// How an export job waits and downloads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExportOptions {
    /// The longest an export may stay `processing` before it is cancelled (default 1 hour).
    pub deadline: Duration,
    /// First wait before looking at a processing export again (default 250 ms).
    pub first_poll: Duration,
    /// Longest wait between two looks (default 15 s).
    pub max_poll: Duration,
    /// Growth of the wait between looks while `progress` gives no better estimate (default 1.5).
    pub poll_factor: f64,
    /// Times a broken download is resumed with a Range request (default 5).
    pub resume_attempts: u32,
    /// Largest layer file accepted, in bytes; bounds what a decompression bomb can write
    /// (default 256 GiB).
    pub max_file_bytes: u64,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(3600),
            first_poll: Duration::from_millis(250),
            max_poll: Duration::from_secs(15),
            poll_factor: 1.5,
            resume_attempts: 5,
            max_file_bytes: 256 << 30,
        }
    }
}

/// What an export job reports as it goes, for progress bars and logs.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ExportEvent {
    /// Checking the request with `exports/validate/`.
    Validating,
    /// The export exists on the server.
    Created {
        /// Export id.
        export_id: u64,
    },
    /// The server is building the export.
    Processing {
        /// Export id.
        export_id: u64,
        /// Server-side progress 0–1, when given.
        progress: Option<f64>,
    },
    /// The export is ready to download.
    Complete {
        /// Export id.
        export_id: u64,
        /// Estimated ZIP size, in bytes.
        size_estimate: Option<u64>,
    },
    /// Bytes of the ZIP received so far (reported about every MiB).
    Downloading {
        /// Bytes received.
        received: u64,
        /// Size of the ZIP in bytes, when known.
        total: Option<u64>,
    },
    /// The download broke and resumes from `offset` with a Range request.
    Resuming {
        /// Bytes already on disk.
        offset: u64,
        /// Resume attempt, from 1.
        attempt: u32,
    },
    /// Writing a member of the ZIP.
    Extracting {
        /// The member's name.
        entry: String,
    },
}

/// Receives [`ExportEvent`]s. Implemented for every `Fn(u64, ExportEvent)` (layer id, event).
pub trait Progress: Send + Sync {
    /// Called for each event of layer `layer_id`. Must be quick: it runs on the job's task.
    fn event(&self, layer_id: u64, event: ExportEvent);
}

impl<F: Fn(u64, ExportEvent) + Send + Sync> Progress for F {
    fn event(&self, layer_id: u64, event: ExportEvent) {
        self(layer_id, event);
    }
}

/// A [`Progress`] that ignores every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _layer_id: u64, _event: ExportEvent) {}
}
