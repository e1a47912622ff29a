//! The Koordinates export job: from a layer to a verified file on disk.
//!
//! [`Exporter`] drives one layer through the Exports API:
//!
//! 1. **validate** (`POST exports/validate/`): an invalid request is a typed error carrying the
//!    server's reasons;
//! 2. **create** (`POST exports/`) in the format the layer's kind needs ([`ExportSpec`]):
//!    GeoPackage for vector layers and tables, GeoTIFF for raster and grid layers;
//! 3. **poll** (`GET exports/{id}/`) until `complete`: at once (identical recent exports come back
//!    complete), then from 250 ms with backoff, sooner when `progress` predicts the end, up to a
//!    deadline (1 hour by default) after which the export is cancelled;
//! 4. **download** the ZIP to disk in bounded memory (1 MiB write buffer), resuming with HTTP Range
//!    requests from the bytes on disk when the connection breaks;
//! 5. **extract** with `async_zip`, every check on (CRC-32, sizes, headers), refusing archives with
//!    absolute or `..` member names, writing only the layer file(s) and the metadata XML, hashing
//!    with BLAKE3 while writing. A raster delivered as many tiles becomes a directory of tiles
//!    plus a GDAL VRT mosaic, so it still opens from one path.
//!
//! Progress is reported to an [`Observer`] as [`LayerEvent`]s. Files are written only under the directory the
//! caller gives; the caller owns cleanup (koop-cache's staging directory removes itself when
//! dropped, so an error or a Ctrl-C leaves nothing behind).
//!
//! Limitations: one layer per export; the VRT mosaic needs tiles that share bands, data type,
//! pixel size and CRS.
//!
//! # Example
//!
//! ```no_run
//! use koop_api::KoordinatesConnection;
//! use koop_export::{ExportOptions, ExportSpec, Exporter, Quiet, DEFAULT_CRS};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let connection = KoordinatesConnection::new(None, Some("data.linz.govt.nz"), None)?;
//! let details = connection.layer_details(50787).await?;
//! let spec = ExportSpec::for_layer(&details, DEFAULT_CRS, None)?;
//! let exporter = Exporter::new(connection, ExportOptions::default());
//! let dir = std::path::Path::new("/tmp/geodetic-marks");
//! std::fs::create_dir_all(dir)?;
//! let extraction = exporter.run(&details, &spec, dir, "mosaic", &Quiet).await?;
//! println!("{:?}", extraction.layer);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub use error::{Error, Result};
pub use extract::{ExtractedFile, ExtractedLayer, Extraction, extract, is_safe_entry_name};
pub use job::{ExportOrigin, Exporter};
pub use observe::{FetchOutcome, LayerEvent, Observer, Quiet};
pub use spec::{DEFAULT_CRS, ExportOptions, ExportSpec};

mod error;
mod extract;
mod job;
mod mosaic;
mod observe;
mod spec;
