//! What to export, how long to wait, and what the job reports as it goes.

use std::time::Duration;

use koop_api::{Epsg, ExportFormat, ExportRequest, LayerDetails};

use crate::error::{Error, Result};

/// The CRS koop exports in unless told otherwise: EPSG:2193, NZGD2000 / New Zealand Transverse
/// Mercator 2000, as the original Python package does.
pub const DEFAULT_CRS: Epsg = Epsg::NZTM2000;

/// What an export delivers: the format (from the layer's kind), the CRS and an optional extent.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportSpec {
    /// GeoPackage for vector layers and tables, GeoTIFF for raster and grid layers.
    pub format: ExportFormat,
    /// Output CRS.
    pub crs: Epsg,
    /// Crop extent, a GeoJSON geometry in EPSG:4326.
    pub extent: Option<serde_json::Value>,
    /// The name the export is created under, when koop should find it again: an export of the
    /// same name that is still processing or complete is reused instead of creating one (a run
    /// after a crash picks up the export the crashed run made). The `koop` facade names exports
    /// `koop-{layer}-{data version}-{fingerprint}`.
    pub name: Option<String>,
}

impl ExportSpec {
    /// The spec for a layer: the format its kind needs (checked against `data.export_formats`
    /// when the layer lists them), in `crs` (any code; [`DEFAULT_CRS`] is the default), cropped
    /// to `extent` if given.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedKind`] for kinds that are not vector, table, raster, grid or raster
    /// attribute table (point clouds, documents, sets); [`Error::FormatNotOffered`] when the layer
    /// lists its formats and the needed one is not among them.
    pub fn for_layer(
        details: &LayerDetails,
        crs: Epsg,
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
            crs,
            extent,
            name: None,
        })
    }

    /// The export request for `details` with this spec.
    pub fn request(&self, details: &LayerDetails) -> ExportRequest {
        let kind = details.kind.clone().unwrap_or(koop_api::LayerKind::Vector);
        let mut request = ExportRequest::new(self.crs)
            .with_item(&details.url)
            .with_format(&kind, &self.format);
        if let Some(name) = &self.name {
            request = request.with_name(name);
        }
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
    /// The longest an export may stay `processing` before it is cancelled on the server
    /// (default 1 hour).
    pub deadline: Duration,
    /// The step of the first looks at an export that reports no `progress` (default 250 ms,
    /// for the first 2 s; then 500 ms to 5 s).
    pub first_poll: Duration,
    /// The step of later looks at an export that reports no `progress`, up to two minutes
    /// (default 1 s, so koop is never later than a one-second poller); also the longest wait
    /// while a predicted end is overdue.
    pub slow_poll: Duration,
    /// Longest wait between two looks at an export whose `progress` predicts a later end
    /// (default 15 s).
    pub max_poll: Duration,
    /// First wait once `progress` predicts the export is done but it is not yet `complete`
    /// (default 20 ms); it doubles on each further look, up to `slow_poll`.
    pub settle_poll: Duration,
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
            slow_poll: Duration::from_secs(1),
            max_poll: Duration::from_secs(15),
            settle_poll: Duration::from_millis(20),
            resume_attempts: 5,
            max_file_bytes: 256 << 30,
        }
    }
}
