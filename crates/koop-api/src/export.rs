//! The Exports API bodies: `exports/validate/`, `exports/`, `exports/{id}/`.
//!
//! An export is of *layers* (items), not of versions: the server exports each item's current
//! version. Source: Koordinates API documentation, "Exports".

use std::collections::BTreeMap;

use koop_types::Epsg;
use serde::{Deserialize, Serialize};

use crate::layer::{Crs, LayerKind, License, lenient_link};
use crate::lenient::{
    lenient, lenient_bool, lenient_f64, lenient_list, lenient_optional_list, lenient_string,
    lenient_text, lenient_u64, required_id,
};
use crate::string_enum::string_enum;

string_enum! {
    /// The state of an export (`state`).
    pub enum ExportState {
        /// The server is building the export; `progress` rises from 0 to 1.
        Processing => "processing",
        /// Ready: `download_url` is set.
        Complete => "complete",
        /// Cancelled by a user (`DELETE exports/{id}/`).
        Cancelled => "cancelled",
        /// Expired: the file is no longer available.
        Gone => "gone",
        /// The server failed to build the export.
        Error => "error",
    }
}

impl ExportState {
    /// `true` when the export will not change state any more.
    pub fn is_final(&self) -> bool {
        !matches!(self, Self::Processing | Self::Other(_))
    }
}

string_enum! {
    /// An export file format, identified by the MIME type the API uses.
    pub enum ExportFormat {
        /// OGC GeoPackage, for vector layers and tables.
        GeoPackage => "application/x-ogc-gpkg",
        /// GeoTIFF, for raster and grid layers.
        GeoTiff => "image/tiff;subtype=geotiff",
    }
}

impl ExportFormat {
    /// The file extension of this format's layer file (`gpkg`, `tif`), when koop knows it.
    pub fn extension(&self) -> Option<&'static str> {
        match self {
            Self::GeoPackage => Some("gpkg"),
            Self::GeoTiff => Some("tif"),
            Self::Other(_) => None,
        }
    }

    /// The format koop exports a layer of this kind in: GeoPackage for vector and table layers,
    /// GeoTIFF for raster, grid and raster attribute table layers; `None` for kinds that cannot be
    /// exported to either (point clouds, documents, sets).
    pub fn for_kind(kind: &LayerKind) -> Option<Self> {
        match kind {
            LayerKind::Vector | LayerKind::Table => Some(Self::GeoPackage),
            LayerKind::Raster | LayerKind::Grid | LayerKind::RasterAttributeTable => {
                Some(Self::GeoTiff)
            }
            _ => None,
        }
    }
}

/// One item of an export: a layer URL, optionally with a display colour. Requires `item` when
/// read (an item without it is left out of a list).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportItem {
    /// API URL of the layer or table (`…/layers/1474/`).
    pub item: String,
    /// Display colour for some formats (`#003399`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_string"
    )]
    pub color: Option<String>,
}

/// How the export is delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// `download` for exports fetched from `download_url`.
    #[serde(default, deserialize_with = "lenient_text")]
    pub method: String,
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            method: "download".to_owned(),
        }
    }
}

/// The body of `POST exports/validate/` and `POST exports/`.
///
/// ```
/// use koop_api::{ExportFormat, ExportRequest, LayerKind};
///
/// let request = ExportRequest::new(koop_types::Epsg::NZTM2000)
///     .with_item("https://data.linz.govt.nz/services/api/v1.x/layers/50787/")
///     .with_format(&LayerKind::Vector, &ExportFormat::GeoPackage);
/// let json = serde_json::to_value(&request).unwrap();
/// assert_eq!(json["formats"]["vector"], "application/x-ogc-gpkg");
/// assert_eq!(json["delivery"]["method"], "download");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportRequest {
    /// Output CRS, sent as `EPSG:2193`.
    pub crs: Epsg,
    /// Format per layer kind: `{"vector": "application/x-ogc-gpkg", "grid": "image/tiff;subtype=geotiff"}`.
    pub formats: BTreeMap<String, String>,
    /// The layers to export.
    pub items: Vec<ExportItem>,
    /// Optional extent to crop to, a GeoJSON geometry in EPSG:4326.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extent: Option<serde_json::Value>,
    /// Delivery method (always `download` for koop).
    #[serde(default)]
    pub delivery: Delivery,
    /// A name for the export; Koordinates slugifies it behind `kx-` (`koop-1474-4067-…` becomes
    /// `kx-koop-1474-4067-…`), so the exports of a layer version can be found again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ExportRequest {
    /// A request in `crs` with no items yet.
    pub fn new(crs: Epsg) -> Self {
        Self {
            crs,
            formats: BTreeMap::new(),
            items: Vec::new(),
            extent: None,
            delivery: Delivery::default(),
            name: None,
        }
    }

    /// Names the export (see [`ExportRequest::name`]).
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Adds a layer by its API URL (the `url` of its [`crate::LayerDetails`]).
    #[must_use]
    pub fn with_item(mut self, layer_url: impl Into<String>) -> Self {
        self.items.push(ExportItem {
            item: layer_url.into(),
            color: None,
        });
        self
    }

    /// Sets the format used for layers of `kind`.
    #[must_use]
    pub fn with_format(mut self, kind: &LayerKind, format: &ExportFormat) -> Self {
        self.formats
            .insert(kind.as_str().to_owned(), format.as_str().to_owned());
        self
    }

    /// Crops the export to `extent`, a GeoJSON geometry in EPSG:4326.
    #[must_use]
    pub fn with_extent(mut self, extent: serde_json::Value) -> Self {
        self.extent = Some(extent);
        self
    }
}

/// An export (`GET exports/{id}/`, the 201 body of `POST exports/`, the items of `GET exports/`).
///
/// Requires `id` (a number or a numeric string: what koop polls, cancels and downloads) and
/// `state` (a string: what koop does next). Every other field decodes leniently: `crs` as
/// `"EPSG:2193"` or as a v1.x CRS object, `progress` as a number, a numeric string or `null`,
/// `download_url` as a string or an object with a `url`; a value of another shape is `None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Export {
    /// Export id.
    #[serde(deserialize_with = "required_id")]
    pub id: u64,
    /// Name the server gave the export, e.g. `kx-nz-geodetic-marks-GPKG`.
    #[serde(default, deserialize_with = "lenient_string")]
    pub name: Option<String>,
    /// When the export was created (ISO 8601 as sent).
    #[serde(default, deserialize_with = "lenient_string")]
    pub created_at: Option<String>,
    /// `API` or `web`.
    #[serde(default, deserialize_with = "lenient_string")]
    pub created_via: Option<String>,
    /// Current state.
    pub state: ExportState,
    /// API URL of the export (empty when the server sent none; koop polls `exports/{id}/`).
    #[serde(default, deserialize_with = "lenient_text")]
    pub url: String,
    /// Where to download the ZIP once `state` is `complete`.
    #[serde(default, deserialize_with = "lenient_link")]
    pub download_url: Option<String>,
    /// The extent the export is cropped to (any JSON is kept as it is).
    #[serde(default)]
    pub extent: Option<serde_json::Value>,
    /// Delivery method.
    #[serde(default, deserialize_with = "lenient")]
    pub delivery: Option<Delivery>,
    /// Format per layer kind.
    #[serde(default, deserialize_with = "lenient")]
    pub formats: Option<BTreeMap<String, String>>,
    /// The exported layers (absent in list summaries).
    #[serde(default, deserialize_with = "lenient_optional_list")]
    pub items: Option<Vec<ExportItem>>,
    /// Output CRS.
    #[serde(default, deserialize_with = "lenient")]
    pub crs: Option<Crs>,
    /// Estimated ZIP size, in bytes.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub size_estimate_zipped: Option<u64>,
    /// Progress 0–1 while processing; `null` once cancelled.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub progress: Option<f64>,
}

/// One item of an export validation. Nothing is required: an item without `is_valid` counts as
/// invalid only when the whole request is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ValidationItem {
    /// API URL of the layer.
    #[serde(default, deserialize_with = "lenient_text")]
    pub item: String,
    /// Whether this item can be exported as requested.
    #[serde(default = "valid", deserialize_with = "lenient_valid")]
    pub is_valid: bool,
    /// Why not, e.g. `outside-extent`.
    #[serde(default, deserialize_with = "lenient_list")]
    pub invalid_reasons: Vec<String>,
    /// The item's licence.
    #[serde(default, deserialize_with = "lenient")]
    pub license: Option<License>,
    /// Price, as a decimal string (`"0.00"`).
    #[serde(default, deserialize_with = "lenient_string")]
    pub price: Option<String>,
}

fn valid() -> bool {
    true
}

fn lenient_valid<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    Ok(lenient_bool(deserializer)?.unwrap_or(true))
}

/// The body of `POST exports/validate/`. The server answers 200 even when the request is invalid:
/// read `is_valid` and each item's `invalid_reasons`.
///
/// Requires `is_valid` (a boolean, or `"true"`/`"false"`): it decides whether koop creates the
/// export. Every other field decodes leniently.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ExportValidation {
    /// Per-item results.
    #[serde(default, deserialize_with = "lenient_list")]
    pub items: Vec<ValidationItem>,
    /// Whether the whole request is valid.
    #[serde(deserialize_with = "required_bool")]
    pub is_valid: bool,
    /// Request-level reasons.
    #[serde(default, deserialize_with = "lenient_list")]
    pub invalid_reasons: Vec<String>,
    /// Estimated ZIP size in bytes (0 when invalid).
    #[serde(default, deserialize_with = "lenient_u64")]
    pub size_estimate_zipped: Option<u64>,
}

fn required_bool<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    lenient_bool(deserializer)?
        .ok_or_else(|| serde::de::Error::custom("`is_valid` must be true or false"))
}

impl ExportValidation {
    /// Every reason the server gave, request-level first, then `item: reason` per item.
    pub fn reasons(&self) -> Vec<String> {
        let mut reasons = self.invalid_reasons.clone();
        for item in self.items.iter().filter(|item| !item.is_valid) {
            if item.invalid_reasons.is_empty() {
                reasons.push(format!("{}: invalid", item.item));
            }
            for reason in &item.invalid_reasons {
                reasons.push(format!("{}: {reason}", item.item));
            }
        }
        reasons
    }
}
