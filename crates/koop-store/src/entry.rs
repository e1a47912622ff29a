//! Entries in the shared store: the data objects under their entry names, the manifest last.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use koop_cache::{Manifest, ManifestFile};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::SharedStore;
use crate::error::{Error, Result};

/// Multipart upload part size, in bytes.
const PART_BYTES: usize = 8 * 1024 * 1024;
/// Parts in flight at most: memory of an upload is about this times [`PART_BYTES`].
const PARTS_IN_FLIGHT: usize = 2;

/// The files of an entry downloaded from the store, checked against its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Downloaded {
    /// Each file: `(path relative to the cache root, where it was written)`.
    pub files: Vec<(String, PathBuf)>,
    /// The metadata document, when the entry has one.
    pub metadata_xml: Option<PathBuf>,
    /// Bytes downloaded.
    pub bytes: u64,
}

/// The data name `{layer}_{fingerprint}` of an entry name `{layer}_{version}_{fingerprint}`.
pub(crate) fn data_name_of(stem: &str) -> Option<String> {
    let mut parts = stem.split('_');
    let (layer, version, fingerprint) = (parts.next()?, parts.next()?, parts.next()?);
    let digits = |text: &str| !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit());
    (parts.next().is_none() && digits(layer) && digits(version) && !fingerprint.is_empty())
        .then(|| format!("{layer}_{fingerprint}"))
}

/// `relative` is a path koop writes: `/`-separated, no empty, `.` or `..` part, not absolute.
fn safe(relative: &str) -> bool {
    !relative.is_empty()
        && !relative.starts_with('/')
        && relative
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != ".." && !part.contains('\\'))
}

impl SharedStore {
    pub(crate) fn manifest_path(&self, stem: &str) -> ObjectPath {
        self.path(&format!("{stem}.json"))
    }

    /// The manifest of the entry `stem` (`{layer}_{version}_{fingerprint}`), `None` when the
    /// store holds no such entry.
    ///
    /// # Errors
    ///
    /// [`Error::Store`]; [`Error::Unreadable`] when the manifest is not one koop wrote or names a
    /// file outside its entry.
    pub async fn manifest(&self, stem: &str) -> Result<Option<Manifest>> {
        let path = self.manifest_path(stem);
        let bytes = match self.store.get(&path).await {
            Ok(found) => found
                .bytes()
                .await
                .map_err(|source| self.failed("read", &path, source))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(source) => return Err(self.failed("read", &path, source)),
        };
        let unreadable = |reason: String| Error::Unreadable {
            location: self.location.clone(),
            object: path.to_string(),
            reason,
        };
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|error| unreadable(error.to_string()))?;
        // A version that changed only metadata shares the objects of the entry it links to,
        // which must hold the same data (the same data name).
        let owner = manifest
            .linked_from
            .as_deref()
            .filter(|from| data_name_of(from).is_some_and(|name| data_name_of(stem) == Some(name)))
            .unwrap_or(stem);
        let inside = |relative: &str| {
            safe(relative)
                && [stem, owner].iter().any(|owner| {
                    relative.starts_with(&format!("{owner}."))
                        || relative.starts_with(&format!("{owner}/"))
                })
        };
        if manifest.entry != stem
            || !manifest.files.iter().all(|file| inside(&file.path))
            || !manifest.metadata_xml.as_deref().is_none_or(inside)
        {
            return Err(unreadable("it names files outside its entry".to_owned()));
        }
        Ok(Some(manifest))
    }

    /// Uploads the entry `manifest` describes from the cache at `root`: every data file (and the
    /// metadata document) with multipart uploads, each checked afterwards to hold as many bytes
    /// as were sent, then the manifest. Until the manifest is written nobody sees the entry; an
    /// interrupted or truncated upload leaves only orphan data objects (`koop cache gc` removes
    /// them a day later).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when a local file cannot be read; [`Error::Store`] when the store fails;
    /// [`Error::Corrupt`] when an uploaded object is not the size of its file (a truncated
    /// upload).
    pub async fn upload(&self, root: &Path, manifest: &Manifest) -> Result<()> {
        for file in &manifest.files {
            self.upload_file(&root.join(&file.path), &file.path).await?;
        }
        if let Some(xml) = &manifest.metadata_xml {
            self.upload_file(&root.join(xml), xml).await?;
        }
        let path = self.manifest_path(&manifest.entry);
        let json = serde_json::to_vec_pretty(manifest).unwrap_or_default();
        self.store
            .put(&path, PutPayload::from(json))
            .await
            .map_err(|source| self.failed("write", &path, source))?;
        Ok(())
    }

    /// Shares `manifest`, an entry linked locally for a version that changed only metadata
    /// (its `linked_from` set), as a manifest that points at the objects of `source` (the shared
    /// entry with the same data): no data is copied. Written only if absent.
    ///
    /// # Errors
    ///
    /// [`Error::Store`]. `Ok(false)` when the store held the entry already.
    pub async fn put_link(&self, manifest: &Manifest, source: &Manifest) -> Result<bool> {
        let mut link = manifest.clone();
        link.path.clone_from(&source.path);
        link.files.clone_from(&source.files);
        link.metadata_xml.clone_from(&source.metadata_xml);
        link.linked_from = Some(
            source
                .linked_from
                .clone()
                .unwrap_or_else(|| source.entry.clone()),
        );
        let path = self.manifest_path(&link.entry);
        let json = serde_json::to_vec_pretty(&link).unwrap_or_default();
        match self
            .store
            .put_opts(
                &path,
                PutPayload::from(json),
                object_store::PutOptions::from(object_store::PutMode::Create),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(source) => Err(self.failed("write", &path, source)),
        }
    }

    /// Another entry of the store with the same data as `stem` (the same layer, data version,
    /// format, CRS and extent: a version that changed only metadata), when there is one.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn same_data(&self, stem: &str) -> Result<Option<Manifest>> {
        let Some(data_name) = data_name_of(stem) else {
            return Ok(None);
        };
        let Some(layer_id) = stem.split('_').next().and_then(|id| id.parse().ok()) else {
            return Ok(None);
        };
        Ok(self
            .entries_of_layer(layer_id)
            .await?
            .into_iter()
            .find(|manifest| {
                manifest.entry != stem
                    && data_name_of(&manifest.entry).as_deref() == Some(data_name.as_str())
            }))
    }

    /// The entries of layer `layer_id` in the store (every site, version, CRS and extent): one
    /// listing of the prefix's top level, then their manifests. Manifests that cannot be read
    /// are skipped.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] when listing fails.
    pub async fn entries_of_layer(&self, layer_id: u64) -> Result<Vec<Manifest>> {
        let listing = self
            .store
            .list_with_delimiter(Some(&self.prefix))
            .await
            .map_err(|source| self.failed("list", &self.prefix, source))?;
        let layer = format!("{layer_id}_");
        let mut manifests = Vec::new();
        for object in listing.objects {
            let Some(stem) = object
                .location
                .filename()
                .and_then(|name| name.strip_suffix(".json"))
            else {
                continue;
            };
            if !stem.starts_with(&layer) || data_name_of(stem).is_none() {
                continue;
            }
            if let Ok(Some(manifest)) = self.manifest(stem).await {
                manifests.push(manifest);
            }
        }
        Ok(manifests)
    }

    async fn upload_file(&self, local: &Path, relative: &str) -> Result<()> {
        let io = |action: &'static str| {
            let path = local.to_path_buf();
            move |source| Error::Io {
                action,
                path,
                source,
            }
        };
        let path = self.path(relative);
        let mut file = tokio::fs::File::open(local).await.map_err(io("open"))?;
        let upload = self
            .store
            .put_multipart(&path)
            .await
            .map_err(|source| self.failed("start uploading", &path, source))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut buffer = vec![0_u8; 1024 * 1024];
        loop {
            let read = file.read(&mut buffer).await.map_err(io("read"))?;
            if read == 0 {
                break;
            }
            writer
                .wait_for_capacity(PARTS_IN_FLIGHT)
                .await
                .map_err(|source| self.failed("upload", &path, source))?;
            writer.write(&buffer[..read]);
        }
        writer
            .finish()
            .await
            .map_err(|source| self.failed("finish uploading", &path, source))?;
        let sent = file.metadata().await.map_err(io("read"))?.len();
        let stored = self
            .store
            .head(&path)
            .await
            .map_err(|source| self.failed("check the upload of", &path, source))?
            .size;
        if stored != sent {
            return Err(Error::Corrupt {
                location: self.location.clone(),
                object: path.to_string(),
                reason: format!("the store holds {stored} bytes where {sent} were uploaded"),
            });
        }
        Ok(())
    }

    /// Downloads the entry `manifest` describes into `dir` (a staging directory), each file
    /// streamed to disk and hashed as it is written, then checked against the manifest's size
    /// and BLAKE3.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] when a file's size or digest differs (a truncated or altered upload);
    /// [`Error::Store`], [`Error::Io`].
    pub async fn download(&self, manifest: &Manifest, dir: &Path) -> Result<Downloaded> {
        let mut files = Vec::new();
        let mut bytes = 0;
        for file in &manifest.files {
            let target = dir.join(&file.path);
            bytes += self.download_file(file, &target).await?;
            files.push((file.path.clone(), target));
        }
        let metadata_xml = match &manifest.metadata_xml {
            Some(xml) => {
                let target = dir.join(xml);
                let path = self.path(xml);
                let body = self
                    .store
                    .get(&path)
                    .await
                    .map_err(|source| self.failed("read", &path, source))?
                    .bytes()
                    .await
                    .map_err(|source| self.failed("read", &path, source))?;
                tokio::fs::write(&target, &body)
                    .await
                    .map_err(|source| Error::Io {
                        action: "write",
                        path: target.clone(),
                        source,
                    })?;
                bytes += body.len() as u64;
                Some(target)
            }
            None => None,
        };
        Ok(Downloaded {
            files,
            metadata_xml,
            bytes,
        })
    }

    async fn download_file(&self, file: &ManifestFile, target: &Path) -> Result<u64> {
        let io = |action: &'static str| {
            let path = target.to_path_buf();
            move |source| Error::Io {
                action,
                path,
                source,
            }
        };
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(io("create"))?;
        }
        let path = self.path(&file.path);
        let found = self
            .store
            .get(&path)
            .await
            .map_err(|source| self.failed("read", &path, source))?;
        let mut out = tokio::fs::File::create(target)
            .await
            .map_err(io("create"))?;
        let checked = self
            .stream_checked(&path, found, file, Some((&mut out, target)))
            .await?;
        out.sync_all().await.map_err(io("sync"))?;
        if let Some(reason) = checked {
            return Err(Error::Corrupt {
                location: self.location.clone(),
                object: path.to_string(),
                reason,
            });
        }
        Ok(file.size)
    }

    /// Reads the object `path` (`found`, the answer to its GET) to its end, hashing it with
    /// BLAKE3 and writing it to `out` when given (stopping once past the manifest's size): what
    /// differs from `file`'s size or digest, `None` when nothing does.
    pub(crate) async fn stream_checked(
        &self,
        path: &ObjectPath,
        found: object_store::GetResult,
        file: &ManifestFile,
        mut out: Option<(&mut tokio::fs::File, &Path)>,
    ) -> Result<Option<String>> {
        let mut stream = found.into_stream();
        let mut hasher = blake3::Hasher::new();
        let mut size = 0_u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|source| self.failed("read", path, source))?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            if size > file.size {
                break;
            }
            if let Some((out, target)) = out.as_mut() {
                out.write_all(&chunk).await.map_err(|source| Error::Io {
                    action: "write",
                    path: target.to_path_buf(),
                    source,
                })?;
            }
        }
        if size != file.size {
            let more = if size > file.size { "more than " } else { "" };
            return Ok(Some(format!(
                "{more}{size} bytes where the manifest says {}",
                file.size
            )));
        }
        let digest = hasher.finalize().to_hex().to_string();
        Ok((digest != file.blake3)
            .then(|| format!("BLAKE3 {digest} where the manifest says {}", file.blake3)))
    }
}

#[cfg(test)]
mod tests {
    use super::safe;

    #[test]
    fn only_paths_inside_the_cache_are_safe() {
        assert!(safe("1474_4067_ab.gpkg"));
        assert!(safe("1474_4067_ab/tile_r0c0.tif"));
        for bad in ["", "/etc/passwd", "../x", "a/../b", "a//b", "a\\b", "./a"] {
            assert!(!safe(bad), "{bad}");
        }
    }
}
