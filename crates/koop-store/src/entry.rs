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

/// `relative` is a path koop writes: `/`-separated, no empty, `.` or `..` part, not absolute.
fn safe(relative: &str) -> bool {
    !relative.is_empty()
        && !relative.starts_with('/')
        && relative
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != ".." && !part.contains('\\'))
}

impl SharedStore {
    fn manifest_path(&self, stem: &str) -> ObjectPath {
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
        let inside = |relative: &str| {
            safe(relative)
                && (relative.starts_with(&format!("{stem}."))
                    || relative.starts_with(&format!("{stem}/")))
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
    /// metadata document) with multipart uploads, then the manifest. Until the manifest is
    /// written nobody sees the entry; an interrupted upload leaves only orphan data objects.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when a local file cannot be read; [`Error::Store`] when the store fails.
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
        let mut stream = found.into_stream();
        let mut out = tokio::fs::File::create(target)
            .await
            .map_err(io("create"))?;
        let mut hasher = blake3::Hasher::new();
        let mut size = 0_u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|source| self.failed("read", &path, source))?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            if size > file.size {
                break;
            }
            out.write_all(&chunk).await.map_err(io("write"))?;
        }
        out.sync_all().await.map_err(io("sync"))?;
        let corrupt = |reason: String| Error::Corrupt {
            location: self.location.clone(),
            object: path.to_string(),
            reason,
        };
        if size != file.size {
            return Err(corrupt(format!(
                "{size} bytes where the manifest says {}",
                file.size
            )));
        }
        let digest = hasher.finalize().to_hex().to_string();
        if digest != file.blake3 {
            return Err(corrupt(format!(
                "BLAKE3 {digest} where the manifest says {}",
                file.blake3
            )));
        }
        Ok(size)
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
