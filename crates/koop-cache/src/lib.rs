//! A version-aware, content-addressed store of exported Koordinates layers.
//!
//! The cache lives under one root: the caller's, else `KOOPCACHE_DIR`, else the platform cache
//! directory (`~/.cache/koop` on Linux). Each entry is a layer's data at one version, format, CRS
//! and extent, named `{layer_id}_{version_id}_{fingerprint}` ([`EntryKey`]):
//!
//! ```text
//! 50772_413899_3f0c9a1be2d4c877.gpkg    the layer file (or .tif, or a directory with a .vrt mosaic)
//! 50772_413899_3f0c9a1be2d4c877.json    its manifest: domain, layer, versions, format, CRS, size,
//!                                       BLAKE3, export id, fetched_at (never the API key)
//! 50772_413899_3f0c9a1be2d4c877.xml     the export's metadata document
//! ```
//!
//! - **Atomic publish**: entries are built in `.staging/` and moved into place with `rename`; the
//!   manifest is written last, so an entry exists exactly when its manifest does.
//! - **One fetch per data**: [`Cache::try_lock`] takes a cross-process lock shared by every
//!   version with the same data; the fetcher that waited finds the entry published.
//! - **Metadata-only versions** share bytes with the entry of their data ([`Cache::link`]).
//! - **Maintenance**: [`Cache::list`], [`Cache::verify`] (re-hash, quarantine corrupt entries),
//!   [`Cache::gc`] (superseded versions, age, leftovers).
//!
//! The cache knows nothing of HTTP or Koordinates: it stores what it is given.
//!
//! # Example
//!
//! ```
//! use koop_cache::{Cache, EntryKey, LayerInfo, StagedLayer};
//!
//! # fn main() -> Result<(), koop_cache::Error> {
//! # let dir = tempfile::tempdir().unwrap();
//! let cache = Cache::open(Some(dir.path().to_owned()))?;
//! let key = EntryKey {
//!     domain: koop_types::Domain::parse("data.linz.govt.nz").unwrap(),
//!     layer_id: 50772,
//!     version_id: 413_899,
//!     data_version: 413_899,
//!     format: "application/x-ogc-gpkg".into(),
//!     crs: koop_types::Epsg::NZTM2000,
//!     extent: None,
//! };
//! assert!(cache.get(&key)?.is_none());
//!
//! let lock = cache.try_lock(&key)?.expect("nobody else is fetching");
//! let staging = cache.staging(&key)?;
//! let file = staging.path().join("layer.gpkg");
//! std::fs::write(&file, b"GeoPackage bytes").unwrap();
//! let layer = StagedLayer::File {
//!     path: file,
//!     extension: "gpkg".into(),
//!     size: 16,
//!     blake3: blake3::hash(b"GeoPackage bytes").to_hex().to_string(),
//! };
//! let info = LayerInfo { title: "NZ Primary Parcels".into(), kind: "vector".into(), export_id: Some(1), ..LayerInfo::default() };
//! let entry = cache.publish(&key, staging, &layer, None, &info, &lock)?;
//! assert!(entry.path.ends_with(format!("{}.gpkg", key.stem())));
//! assert_eq!(cache.get(&key)?.map(|hit| hit.path), Some(entry.path));
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub use error::{Error, Result};
pub use guards::{EntryLock, Staging};
pub use key::EntryKey;
pub use maintenance::{CorruptEntry, GcPolicy, GcReport, VerifyReport};
pub use manifest::{ChangesetSource, LayerInfo, MANIFEST_VERSION, Manifest, ManifestFile};
pub use state::MirrorState;
pub use store::{CACHE_DIR_ENV, Cache, CacheEntry, StagedFile, StagedLayer};

mod error;
mod fsutil;
mod guards;
mod key;
mod maintenance;
mod manifest;
mod state;
mod store;
