//! The cache: lookup, locking, staging and atomic publish.

use std::fs::File;
use std::path::{Path, PathBuf};

use koop_types::Domain;

use crate::error::{Error, Result};
use crate::fsutil::{link_or_copy, rename_durable, sync_dir, sync_tree, write_atomic};
use crate::guards::{EntryLock, Staging};
use crate::key::EntryKey;
use crate::manifest::{LayerInfo, MANIFEST_VERSION, Manifest, ManifestFile};

/// The environment variable naming the cache root.
pub const CACHE_DIR_ENV: &str = "KOOPCACHE_DIR";

pub(crate) const LOCKS: &str = ".locks";
pub(crate) const STAGING: &str = ".staging";
pub(crate) const QUARANTINE: &str = ".quarantine";
pub(crate) const PARTIAL: &str = ".partial";

/// A cached layer: its manifest and the path to open.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheEntry {
    /// What the cache knows about it.
    pub manifest: Manifest,
    /// The file to open: a `.gpkg`, a `.tif`, or the `.vrt` of a mosaic of tiles.
    pub path: PathBuf,
}

/// One file of a staged mosaic, hashed while it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedFile {
    /// Path relative to the mosaic directory, `/`-separated.
    pub relative: String,
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3, hex.
    pub blake3: String,
}

/// A layer built in a [`Staging`] directory, ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StagedLayer {
    /// One file: a GeoPackage or a single GeoTIFF.
    File {
        /// Where it is in the staging directory.
        path: PathBuf,
        /// Its extension without the dot: `gpkg`, `tif`.
        extension: String,
        /// Size in bytes.
        size: u64,
        /// BLAKE3, hex.
        blake3: String,
    },
    /// A directory of GeoTIFF tiles and a VRT mosaic of them.
    Mosaic {
        /// The directory, in the staging directory.
        dir: PathBuf,
        /// The VRT's path relative to `dir`; name it `{stem}.vrt` ([`EntryKey::stem`]).
        vrt: String,
        /// Every file in `dir` (tiles and VRT).
        files: Vec<StagedFile>,
    },
}

/// The cache of exported layers under one root directory.
///
/// Layout of the root: `{stem}.gpkg` / `{stem}.tif` / `{stem}/` (mosaic) with `{stem}.json` (the
/// manifest) and `{stem}.xml` (the export's metadata) beside it, where
/// `stem = {layer_id}_{version_id}_{fingerprint}`; plus `.locks/`, `.staging/` and `.quarantine/`.
///
/// The manifest is written last, atomically: an entry exists exactly when its manifest does, so a
/// lookup never sees a half-written entry.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// The default root: `KOOPCACHE_DIR`, else the platform cache directory joined with `koop`
    /// (`~/.cache/koop` on Linux).
    ///
    /// # Errors
    ///
    /// [`Error::NoRoot`] when neither exists.
    pub fn default_root() -> Result<PathBuf> {
        if let Some(dir) = std::env::var_os(CACHE_DIR_ENV).filter(|dir| !dir.is_empty()) {
            return Ok(PathBuf::from(dir));
        }
        dirs::cache_dir()
            .map(|dir| dir.join("koop"))
            .ok_or(Error::NoRoot)
    }

    /// Opens (creating if missing) the cache at `root`, or at [`Cache::default_root`].
    ///
    /// # Errors
    ///
    /// [`Error::RootNotWritable`] naming the path when it cannot be created or written;
    /// [`Error::NoRoot`].
    pub fn open(root: Option<PathBuf>) -> Result<Self> {
        let root = match root {
            Some(root) => root,
            None => Self::default_root()?,
        };
        let not_writable = |source| Error::RootNotWritable {
            path: root.clone(),
            source,
        };
        for dir in [LOCKS, STAGING, PARTIAL] {
            std::fs::create_dir_all(root.join(dir)).map_err(not_writable)?;
        }
        let probe = root
            .join(STAGING)
            .join(format!(".probe-{}", fastrand::u64(..)));
        File::create(&probe).map_err(not_writable)?;
        let _ = std::fs::remove_file(&probe);
        Ok(Self { root })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn manifest_path(&self, stem: &str) -> PathBuf {
        self.root.join(format!("{stem}.json"))
    }

    /// Reads the entry whose manifest is at `manifest_path`, if it is whole.
    fn read_entry(&self, manifest_path: &Path) -> Option<CacheEntry> {
        let text = std::fs::read(manifest_path).ok()?;
        let manifest: Manifest = match serde_json::from_slice(&text) {
            Ok(manifest) => manifest,
            Err(error) => {
                tracing::warn!(path = %manifest_path.display(), "ignoring an unreadable manifest: {error}");
                return None;
            }
        };
        let path = manifest.main_path(&self.root);
        path.exists().then_some(CacheEntry { manifest, path })
    }

    /// The entry for `key`, if cached.
    ///
    /// # Errors
    ///
    /// None today: unreadable manifests are treated as absent. The `Result` leaves room for
    /// remote stores.
    pub fn get(&self, key: &EntryKey) -> Result<Option<CacheEntry>> {
        Ok(self
            .read_entry(&self.manifest_path(&key.stem()))
            .filter(|entry| entry.manifest.key == *key))
    }

    /// An entry of the same layer with the same data as `key` under another version id (the
    /// newest such), for a version that changed only metadata.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the root cannot be listed.
    pub fn find_same_data(&self, key: &EntryKey) -> Result<Option<CacheEntry>> {
        let prefix = format!("{}_", key.layer_id);
        let suffix = format!("_{}.json", key.fingerprint());
        let mut best: Option<CacheEntry> = None;
        for name in self.file_names()? {
            if !(name.starts_with(&prefix) && name.ends_with(&suffix)) {
                continue;
            }
            let Some(entry) = self.read_entry(&self.root.join(&name)) else {
                continue;
            };
            let same_data = EntryKey {
                version_id: key.version_id,
                ..entry.manifest.key.clone()
            } == *key;
            if same_data
                && best
                    .as_ref()
                    .is_none_or(|b| b.manifest.key.version_id < entry.manifest.key.version_id)
            {
                best = Some(entry);
            }
        }
        Ok(best)
    }

    /// Names of the files directly in the root (not hidden).
    pub(crate) fn file_names(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let entries = std::fs::read_dir(&self.root).map_err(Error::io("listing", &self.root))?;
        for entry in entries {
            let entry = entry.map_err(Error::io("listing", &self.root))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// Every entry, in name order.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the root cannot be listed.
    pub fn list(&self) -> Result<Vec<CacheEntry>> {
        Ok(self
            .file_names()?
            .iter()
            .filter(|name| Path::new(name).extension().is_some_and(|ext| ext == "json"))
            .filter_map(|name| self.read_entry(&self.root.join(name)))
            .collect())
    }

    /// Every entry of one layer from one domain, newest first (highest version id, then latest
    /// fetch). Only that layer's manifests are read.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the root cannot be listed.
    pub fn entries_of_layer(&self, domain: &Domain, layer_id: u64) -> Result<Vec<CacheEntry>> {
        let prefix = format!("{layer_id}_");
        let mut entries: Vec<CacheEntry> = self
            .file_names()?
            .iter()
            .filter(|name| {
                name.starts_with(&prefix)
                    && Path::new(name).extension().is_some_and(|ext| ext == "json")
            })
            .filter_map(|name| self.read_entry(&self.root.join(name)))
            .filter(|entry| {
                entry.manifest.key.domain == *domain && entry.manifest.key.layer_id == layer_id
            })
            .collect();
        entries.sort_by(|a, b| {
            (b.manifest.key.version_id, &b.manifest.fetched_at)
                .cmp(&(a.manifest.key.version_id, &a.manifest.fetched_at))
        });
        Ok(entries)
    }

    /// The newest cached entry (highest version id, then latest fetch) of a layer from a domain,
    /// whatever its format, CRS or extent.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the root cannot be listed.
    pub fn newest(&self, domain: &Domain, layer_id: u64) -> Result<Option<CacheEntry>> {
        Ok(self.entries_of_layer(domain, layer_id)?.into_iter().next())
    }

    fn lock_file(&self, key: &EntryKey) -> Result<(File, PathBuf)> {
        self.lock_file_named(&key.data_name())
    }

    fn lock_file_named(&self, data_name: &str) -> Result<(File, PathBuf)> {
        let path = self.root.join(LOCKS).join(format!("{data_name}.lock"));
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(Error::io("opening lock", &path))?;
        Ok((file, path))
    }

    /// Takes the lock on `key`'s data if no one holds it; `None` if someone does. Poll this from
    /// async code rather than blocking a thread.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the lock file cannot be opened or locked.
    pub fn try_lock(&self, key: &EntryKey) -> Result<Option<EntryLock>> {
        self.try_lock_named(&key.data_name())
    }

    /// [`Cache::try_lock`] by the lock's name, `{layer_id}_{fingerprint}`.
    pub(crate) fn try_lock_named(&self, data_name: &str) -> Result<Option<EntryLock>> {
        let (file, path) = self.lock_file_named(data_name)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(EntryLock::new(file, path))),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(source)) => Err(Error::Io {
                action: "locking",
                path,
                source,
            }),
        }
    }

    /// Takes the lock on `key`'s data, waiting (blocking the thread) for whoever holds it.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the lock file cannot be opened or locked.
    pub fn lock(&self, key: &EntryKey) -> Result<EntryLock> {
        let (file, path) = self.lock_file(key)?;
        file.lock().map_err(Error::io("locking", &path))?;
        Ok(EntryLock::new(file, path))
    }

    /// A new, empty staging directory for building `key`'s entry, removed when dropped.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when it cannot be created (e.g. the disk is full).
    pub fn staging(&self, key: &EntryKey) -> Result<Staging> {
        let dir = self.root.join(STAGING).join(format!(
            "{}-{}-{:016x}",
            key.stem(),
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).map_err(Error::io("creating", &dir))?;
        Ok(Staging::new(dir))
    }

    /// Where the interrupted download of `key`'s data from export `export_id` is kept between
    /// runs: `.partial/{layer_id}_{fingerprint}-{export_id}.zip`. Only that export's download may
    /// resume from it.
    pub fn partial_download(&self, key: &EntryKey, export_id: u64) -> PathBuf {
        self.root
            .join(PARTIAL)
            .join(format!("{}-{export_id}.zip", key.data_name()))
    }

    /// Keeps `file`, the bytes of an interrupted download of export `export_id`, for the next
    /// run to resume ([`Cache::resume_partial_download`]). Hold `key`'s lock.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the file cannot be moved.
    pub fn keep_partial_download(
        &self,
        key: &EntryKey,
        export_id: u64,
        file: &Path,
        _lock: &EntryLock,
    ) -> Result<PathBuf> {
        let kept = self.partial_download(key, export_id);
        rename_durable(file, &kept)?;
        Ok(kept)
    }

    /// Moves the kept partial download of export `export_id`, if any, to `to` (in a staging
    /// directory) and returns its length; 0 when there is none. Hold `key`'s lock.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when a kept file cannot be moved.
    pub fn resume_partial_download(
        &self,
        key: &EntryKey,
        export_id: u64,
        to: &Path,
        _lock: &EntryLock,
    ) -> Result<u64> {
        let kept = self.partial_download(key, export_id);
        let Ok(metadata) = std::fs::metadata(&kept) else {
            return Ok(0);
        };
        rename_durable(&kept, to)?;
        Ok(metadata.len())
    }

    /// Removes every kept partial download of `key`'s data (once it is published, or when its
    /// export is gone). Hold `key`'s lock.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when one cannot be removed.
    pub fn discard_partial_downloads(&self, key: &EntryKey, _lock: &EntryLock) -> Result<()> {
        let prefix = format!("{}-", key.data_name());
        let dir = self.root.join(PARTIAL);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(Error::io("removing", &path))?;
            }
        }
        Ok(())
    }

    /// Moves a staged layer into place under `key` and writes its manifest, last, atomically.
    /// Hold `key`'s lock while publishing. `metadata_xml`, if given, is kept as `{stem}.xml`.
    ///
    /// # Errors
    ///
    /// [`Error::StagedMissing`] when the staged files are gone; [`Error::Io`]. On error nothing is
    /// visible under the entry's name and earlier entries are untouched.
    pub fn publish(
        &self,
        key: &EntryKey,
        staging: Staging,
        layer: &StagedLayer,
        metadata_xml: Option<&Path>,
        info: &LayerInfo,
        _lock: &EntryLock,
    ) -> Result<CacheEntry> {
        let stem = key.stem();
        let (main, files) = match layer {
            StagedLayer::File {
                path,
                extension,
                size,
                blake3,
            } => {
                let name = format!("{stem}.{extension}");
                if !path.exists() {
                    return Err(Error::StagedMissing { path: path.clone() });
                }
                rename_durable(path, &self.root.join(&name))?;
                let file = ManifestFile {
                    path: name.clone(),
                    size: *size,
                    blake3: blake3.clone(),
                };
                (name, vec![file])
            }
            StagedLayer::Mosaic { dir, vrt, files } => {
                if !dir.is_dir() {
                    return Err(Error::StagedMissing { path: dir.clone() });
                }
                let target = self.root.join(&stem);
                if target.exists() {
                    // An orphan of an interrupted publish: no manifest points at it.
                    std::fs::remove_dir_all(&target).map_err(Error::io("removing", &target))?;
                }
                // The tiles were synced as they were written; their directories' entries too.
                sync_tree(dir)?;
                rename_durable(dir, &target)?;
                let files = files
                    .iter()
                    .map(|file| ManifestFile {
                        path: format!("{stem}/{}", file.relative),
                        size: file.size,
                        blake3: file.blake3.clone(),
                    })
                    .collect();
                (format!("{stem}/{vrt}"), files)
            }
        };
        let metadata_xml = match metadata_xml {
            Some(xml) if xml.exists() => {
                let name = format!("{stem}.xml");
                rename_durable(xml, &self.root.join(&name))?;
                Some(name)
            }
            _ => None,
        };
        let manifest = Manifest {
            manifest_version: MANIFEST_VERSION,
            entry: stem,
            path: main,
            key: key.clone(),
            title: info.title.clone(),
            kind: info.kind.clone(),
            size: files.iter().map(|file| file.size).sum(),
            blake3: match layer {
                StagedLayer::File { blake3, .. } => blake3.clone(),
                StagedLayer::Mosaic { .. } => Manifest::combined_digest(&files),
            },
            files,
            export_id: info.export_id,
            metadata_xml,
            fetched_at: jiff::Timestamp::now().to_string(),
            linked_from: None,
            koop_version: env!("CARGO_PKG_VERSION").to_owned(),
            published_at: info.published_at.clone(),
            changeset: info.changeset.clone(),
        };
        let entry = self.write_manifest(manifest)?;
        drop(staging);
        Ok(entry)
    }

    /// Files `key` (a version that changed only metadata) under its own name with the bytes of
    /// `source` (an entry with the same data): hard links where the file system allows, copies
    /// otherwise. No download. Hold `key`'s lock.
    ///
    /// # Errors
    ///
    /// [`Error::Io`]; on error nothing is visible under `key`'s name.
    pub fn link(
        &self,
        source: &CacheEntry,
        key: &EntryKey,
        _lock: &EntryLock,
    ) -> Result<CacheEntry> {
        let stem = key.stem();
        let old_stem = &source.manifest.entry;
        let rename = |path: &str| -> String {
            match path.strip_prefix(old_stem.as_str()) {
                Some(rest) => format!("{stem}{}", rest.replace(old_stem.as_str(), &stem)),
                None => path.to_owned(),
            }
        };
        let staging = self.staging(key)?;
        let mut files = Vec::new();
        for file in &source.manifest.files {
            let new_path = rename(&file.path);
            let staged = staging.path().join(&new_path);
            if let Some(parent) = staged.parent() {
                std::fs::create_dir_all(parent).map_err(Error::io("creating", parent))?;
            }
            link_or_copy(&self.root.join(&file.path), &staged)?;
            files.push(ManifestFile {
                path: new_path,
                ..file.clone()
            });
        }
        let main = rename(&source.manifest.path);
        // Move the top-level item (the file, or the mosaic directory) into place.
        let top = main.split('/').next().unwrap_or(&main).to_owned();
        let target = self.root.join(&top);
        if target.is_dir() {
            std::fs::remove_dir_all(&target).map_err(Error::io("removing", &target))?;
        }
        let staged_top = staging.path().join(&top);
        if staged_top.is_dir() {
            sync_tree(&staged_top)?;
        }
        rename_durable(&staged_top, &target)?;
        let metadata_xml = match &source.manifest.metadata_xml {
            Some(xml) => {
                let name = format!("{stem}.xml");
                let target = self.root.join(&name);
                let _ = std::fs::remove_file(&target);
                link_or_copy(&self.root.join(xml), &target)?;
                Some(name)
            }
            None => None,
        };
        let manifest = Manifest {
            entry: stem,
            path: main,
            key: key.clone(),
            files,
            metadata_xml,
            linked_from: Some(old_stem.clone()),
            ..source.manifest.clone()
        };
        self.write_manifest(manifest)
    }

    fn write_manifest(&self, manifest: Manifest) -> Result<CacheEntry> {
        let bytes = serde_json::to_vec_pretty(&manifest).map_err(|source| Error::Manifest {
            entry: manifest.entry.clone(),
            source,
        })?;
        write_atomic(&self.manifest_path(&manifest.entry), &bytes)?;
        sync_dir(&self.root)?;
        Ok(CacheEntry {
            path: manifest.main_path(&self.root),
            manifest,
        })
    }
}
