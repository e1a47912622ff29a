//! Get Koordinates layers onto disk exactly once.
//!
//! `koop` is the crate to embed: it joins the Koordinates client ([`koop_api`]), the export job
//! ([`koop_export`]), changeset builds ([`koop_changeset`]) and the version-aware cache
//! ([`koop_cache`]) behind one call, and re-exports
//! the Dublin Core support ([`koop_metadata`]). Given a layer id
//! and a domain it returns the path of a local GeoPackage (vector layers, tables) or GeoTIFF
//! (raster and grid layers; a VRT over the tiles when an export holds several) of the layer's
//! current version, downloading it only when that version is not cached yet:
//!
//! - a cache hit costs one API request (the layer details) and no export;
//! - a version that changed only metadata reuses the cached data (hard link): no export;
//! - a new version of a cached vector layer or table whose site offers WFS changesets is built
//!   from the cached previous version plus the changes ([`koop_changeset`]), checked against the
//!   version's feature count; otherwise it is exported in full and
//!   [`FetchedLayer::full_export_reason`] says why;
//! - two tasks or processes asking for the same data produce one export and one download;
//! - offline, the newest cached version is answered with no request at all.
//!
//! # Example
//!
//! ```no_run
//! # async fn run() -> koop::Result<()> {
//! // As the original Python package: key from KOORDINATES_API_KEY, cache in KOOPCACHE_DIR.
//! let path = koop::get_layer_from_id(50772, None, Some("data.linz.govt.nz")).await?;
//! println!("{}", path.display());
//!
//! // Reusable, with options.
//! let koop = koop::Koop::builder()
//!     .domain("data.linz.govt.nz")
//!     .crs(koop::Epsg::WGS84)
//!     .build()?;
//! let fetched = koop.fetch_layer(51571, &koop::Quiet).await?;
//! println!("{} ({:?})", fetched.path.display(), fetched.outcome);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub use error::{Error, Result};
pub use koop::{FetchPolicy, FetchedLayer, Koop, KoopBuilder, get_layer_from_id};
pub use koop_api::{
    ExportFormat, ExportState, KoordinatesConnection, LayerDetails, LayerKind, RetryPolicy,
};
pub use koop_cache::{
    CACHE_DIR_ENV, Cache, CacheEntry, ChangesetSource, GcPolicy, GcReport, Manifest, VerifyReport,
};
pub use koop_export::{DEFAULT_CRS, ExportOptions, FetchOutcome, LayerEvent, Observer, Quiet};
pub use koop_metadata::{DublinCoreMetadata, Element as DublinCoreElement};
pub use koop_types::{Domain, Epsg};
pub use mirror::{CatalogCheck, LayerPlan, LayerResult, MirrorOptions, MirrorRun, MirrorSummary};
pub use shared::DEFAULT_LEASE_TTL;
pub use {koop_api, koop_cache, koop_changeset, koop_export, koop_metadata, koop_store};

mod changeset;
mod error;
mod koop;
mod mirror;
mod shared;
