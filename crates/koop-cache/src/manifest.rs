//! The JSON manifest written beside every entry.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::key::EntryKey;

/// Version of the manifest format.
pub const MANIFEST_VERSION: u32 = 1;

/// One file of an entry: the layer file, or one tile or the VRT of a mosaic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Path relative to the cache root, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3 of the content, hex.
    pub blake3: String,
}

/// What the cache knows of an entry: `{stem}.json` beside it. Never holds the API key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Manifest {
    /// [`MANIFEST_VERSION`].
    pub manifest_version: u32,
    /// The entry name without extension: `{layer_id}_{version_id}_{fingerprint}`.
    pub entry: String,
    /// The file to open, relative to the cache root: `{stem}.gpkg`, `{stem}.tif`, or
    /// `{stem}/{stem}.vrt` for a mosaic of tiles.
    pub path: String,
    /// The key the entry was filed under.
    pub key: EntryKey,
    /// Layer title.
    pub title: String,
    /// Layer kind (`vector`, `raster`, `grid`, `table`, …).
    pub kind: String,
    /// Total size of the entry's files, in bytes.
    pub size: u64,
    /// BLAKE3 of the layer file (hex); for a mosaic, BLAKE3 over the sorted `path size blake3`
    /// lines of its files.
    pub blake3: String,
    /// Every file of the entry.
    pub files: Vec<ManifestFile>,
    /// The Koordinates export the data came from.
    pub export_id: Option<u64>,
    /// The export's metadata document kept beside the entry (`{stem}.xml`), relative to the root.
    pub metadata_xml: Option<String>,
    /// When the data was fetched (RFC 3339).
    pub fetched_at: String,
    /// The entry whose bytes this one shares, when it was linked for a metadata-only version.
    pub linked_from: Option<String>,
    /// The koop version that wrote the manifest.
    pub koop_version: String,
    /// When the layer version was published (`published_at` of its details, ISO 8601 as the
    /// API sent it): the `from` of the changeset that updates this entry to a later version.
    /// Absent in manifests written before koop recorded it.
    #[serde(default)]
    pub published_at: Option<String>,
    /// Set when the data was built from an earlier entry plus a WFS changeset instead of an
    /// export.
    #[serde(default)]
    pub changeset: Option<ChangesetSource>,
}

/// How an entry built from a changeset came about: the entry it started from and what the
/// changeset did to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChangesetSource {
    /// The version the build started from.
    pub from_version: u64,
    /// The entry (stem) the build started from.
    pub from_entry: String,
    /// Features inserted.
    pub inserts: u64,
    /// Features updated.
    pub updates: u64,
    /// Features deleted.
    pub deletes: u64,
    /// Bytes of the changeset downloaded (its GeoJSON pages).
    pub bytes: u64,
}

impl ChangesetSource {
    /// A record of a build from `from_entry` (version `from_version`).
    pub fn new(
        from_version: u64,
        from_entry: String,
        inserts: u64,
        updates: u64,
        deletes: u64,
        bytes: u64,
    ) -> Self {
        Self {
            from_version,
            from_entry,
            inserts,
            updates,
            deletes,
            bytes,
        }
    }
}

impl Manifest {
    /// BLAKE3 over the sorted `path size blake3` lines of `files`: the digest of a mosaic.
    pub fn combined_digest(files: &[ManifestFile]) -> String {
        let mut lines: Vec<String> = files
            .iter()
            .map(|file| format!("{} {} {}\n", file.path, file.size, file.blake3))
            .collect();
        lines.sort();
        blake3::hash(lines.concat().as_bytes()).to_hex().to_string()
    }

    /// The main file's absolute path under `root`.
    pub fn main_path(&self, root: &Path) -> PathBuf {
        root.join(&self.path)
    }
}

/// What the caller knows about the layer of a new entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LayerInfo {
    /// Layer title.
    pub title: String,
    /// Layer kind.
    pub kind: String,
    /// The export the data came from.
    pub export_id: Option<u64>,
    /// When the version was published (`published_at` of its details).
    pub published_at: Option<String>,
    /// The earlier entry and changeset the data was built from, instead of an export.
    pub changeset: Option<ChangesetSource>,
}
