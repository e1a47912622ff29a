//! Safe streaming extraction of an export ZIP.
//!
//! The ZIP is read with `async_zip`'s seeking reader over the downloaded file, with every validation
//! of `ZipOptions::untrusted` on (local headers against the central directory, sizes, CRC-32 at the
//! end of every member) and size limits. Before a byte is written, every member name is checked:
//! an absolute path, a `..` component, a drive letter or a NUL refuses the whole archive. Only
//! the layer file(s) and one metadata XML are written, under names this module chooses, inside
//! the target directory. The layer file is hashed with BLAKE3 as it is written.

use std::panic::AssertUnwindSafe;
use std::path::{Component, Path, PathBuf};

use async_zip::base::read1::ZipOptions;
use async_zip::base::read1::seek::ZipArchiveReader;
use futures::{AsyncReadExt, FutureExt};
use koop_api::ExportFormat;
use tokio::io::AsyncWriteExt;
use tokio_util::compat::TokioAsyncReadCompatExt;

use crate::error::{Error, Result};
use crate::mosaic;
use crate::observe::{LayerEvent, Observer};

/// Bytes inflated, hashed and written at a time.
const BLOCK: usize = 1 << 20;

/// One extracted file, hashed while written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractedFile {
    /// Path relative to the mosaic directory, `/`-separated.
    pub relative: String,
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3, hex.
    pub blake3: String,
}

/// The layer as extracted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtractedLayer {
    /// One file: `layer.gpkg` or `layer.tif` in the target directory.
    File {
        /// Its path.
        path: PathBuf,
        /// `gpkg` or `tif`.
        extension: String,
        /// Size in bytes.
        size: u64,
        /// BLAKE3, hex.
        blake3: String,
    },
    /// Several GeoTIFF tiles under `{dir}/tiles/` and a VRT mosaic of them, `{dir}/{vrt}`, so the
    /// layer still opens from one path.
    Mosaic {
        /// The mosaic directory.
        dir: PathBuf,
        /// The VRT file name, relative to `dir`.
        vrt: String,
        /// Every file under `dir` (tiles and VRT).
        files: Vec<ExtractedFile>,
    },
}

/// What an export ZIP held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extraction {
    /// The layer.
    pub layer: ExtractedLayer,
    /// The export's metadata document, `metadata.xml` in the target directory, if the ZIP had one.
    pub metadata_xml: Option<PathBuf>,
    /// Every member name of the ZIP.
    pub members: Vec<String>,
    /// The export the ZIP came from, when known.
    pub export_id: Option<u64>,
}

impl Extraction {
    /// The same extraction, recording the export it came from.
    #[must_use]
    pub fn with_export_id(mut self, export_id: u64) -> Self {
        self.export_id = Some(export_id);
        self
    }
}

/// `true` when `name` stays inside the directory it is extracted to: relative, no `..`, no root,
/// no drive letter or other prefix, no NUL, not empty. Backslashes count as separators.
pub fn is_safe_entry_name(name: &str) -> bool {
    if name.is_empty() || name.contains('\0') || name.starts_with(['/', '\\']) {
        return false;
    }
    let normalised = name.replace('\\', "/");
    if normalised.len() >= 2 && normalised.as_bytes()[1] == b':' {
        return false;
    }
    Path::new(&normalised)
        .components()
        .all(|component| matches!(component, Component::Normal(_) | Component::CurDir))
}

fn extension_of(name: &str) -> Option<String> {
    Path::new(name.trim_end_matches('/'))
        .extension()
        .map(|ext| ext.to_string_lossy().to_ascii_lowercase())
}

/// Extracts the layer of `format` from the ZIP at `zip_path` into `dir` (which must exist):
/// the one `.gpkg` member for GeoPackage; for GeoTIFF the one `.tif`, or, for several tiles, a
/// mosaic directory `dir/{mosaic_name}/` holding `tiles/…` and `{mosaic_name}.vrt`.
///
/// # Errors
///
/// [`Error::UnsafeEntry`] (nothing is written); [`Error::NoLayerFile`] or
/// [`Error::SeveralLayerFiles`] listing the members; [`Error::TooLarge`] past `max_file_bytes`;
/// [`Error::CorruptZip`] for a truncated or malformed ZIP or a CRC mismatch; [`Error::Mosaic`];
/// [`Error::Io`].
pub async fn extract(
    layer_id: u64,
    format: &ExportFormat,
    zip_path: &Path,
    dir: &Path,
    mosaic_name: &str,
    max_file_bytes: u64,
    observer: &dyn Observer,
) -> Result<Extraction> {
    // async_zip can panic on some malformed archives (an unwrap on a missing ZIP64 field):
    // a hostile ZIP must end in an error, not bring the process down.
    AssertUnwindSafe(extract_checked(
        layer_id,
        format,
        zip_path,
        dir,
        mosaic_name,
        max_file_bytes,
        observer,
    ))
    .catch_unwind()
    .await
    .unwrap_or_else(|_| {
        Err(Error::CorruptZip {
            layer_id,
            reason: "the ZIP reader failed on a malformed archive".to_owned(),
        })
    })
}

type Archive = ZipArchiveReader<tokio_util::compat::Compat<tokio::io::BufReader<tokio::fs::File>>>;

async fn extract_checked(
    layer_id: u64,
    format: &ExportFormat,
    zip_path: &Path,
    dir: &Path,
    mosaic_name: &str,
    max_file_bytes: u64,
    observer: &dyn Observer,
) -> Result<Extraction> {
    let (mut archive, members) = open_checked(layer_id, zip_path, max_file_bytes).await?;
    let (extension, layer_members) = layer_members(layer_id, format, &members)?;
    let layer = if let [index] = layer_members[..] {
        let path = dir.join(format!("layer.{extension}"));
        observer.layer_event(
            layer_id,
            LayerEvent::Extracting {
                entry: members[index].clone(),
            },
        );
        let (size, blake3) = copy_member(
            &mut archive,
            layer_id,
            index,
            &members[index],
            &path,
            max_file_bytes,
        )
        .await?;
        ExtractedLayer::File {
            path,
            extension: extension.to_owned(),
            size,
            blake3,
        }
    } else {
        let mosaic = Mosaic {
            layer_id,
            dir: dir.join(mosaic_name),
            vrt: format!("{mosaic_name}.vrt"),
            max_file_bytes,
        };
        mosaic
            .extract(&mut archive, &members, &layer_members, observer)
            .await?
    };
    let metadata_xml = match members_with(&members, &["xml"]).first() {
        Some(&index) => {
            let path = dir.join("metadata.xml");
            copy_member(
                &mut archive,
                layer_id,
                index,
                &members[index],
                &path,
                64 << 20,
            )
            .await?;
            Some(path)
        }
        None => None,
    };
    Ok(Extraction {
        layer,
        metadata_xml,
        members,
        export_id: None,
    })
}

/// Opens the ZIP with every validation on and checks every member name and declared size before
/// anything is written.
async fn open_checked(
    layer_id: u64,
    zip_path: &Path,
    max_file_bytes: u64,
) -> Result<(Archive, Vec<String>)> {
    let corrupt = |error: async_zip::error::ZipError| Error::CorruptZip {
        layer_id,
        reason: error.to_string(),
    };
    let file = tokio::fs::File::open(zip_path)
        .await
        .map_err(Error::io(layer_id, "opening", zip_path))?;
    let reader = tokio::io::BufReader::with_capacity(256 * 1024, file).compat();
    let options = ZipOptions {
        max_uncompressed_size_per_file: max_file_bytes,
        max_compressed_size_per_file: max_file_bytes,
        ..ZipOptions::untrusted()
    };
    let archive = ZipArchiveReader::open_with_options(reader, options)
        .await
        .map_err(corrupt)?;
    let mut members = Vec::new();
    for cdr in archive.cdrs() {
        let name = String::from_utf8_lossy(cdr.insecure_file_name.as_bytes()).into_owned();
        if !is_safe_entry_name(&name) {
            return Err(Error::UnsafeEntry { layer_id, name });
        }
        if cdr.uncompressed_size().map_err(corrupt)? > max_file_bytes {
            return Err(Error::TooLarge {
                layer_id,
                name,
                limit: max_file_bytes,
            });
        }
        members.push(name);
    }
    Ok((archive, members))
}

/// Indexes of the (non-directory) members with one of `extensions`.
fn members_with(members: &[String], extensions: &[&str]) -> Vec<usize> {
    members
        .iter()
        .enumerate()
        .filter(|(_, name)| {
            !name.ends_with('/')
                && extension_of(name).is_some_and(|ext| extensions.contains(&ext.as_str()))
        })
        .map(|(index, _)| index)
        .collect()
}

/// The layer file members for `format`: the one `.gpkg`, or every `.tif`/`.tiff`.
fn layer_members(
    layer_id: u64,
    format: &ExportFormat,
    members: &[String],
) -> Result<(&'static str, Vec<usize>)> {
    let (extension, found) = match format {
        ExportFormat::GeoTiff => ("tif", members_with(members, &["tif", "tiff"])),
        _ => ("gpkg", members_with(members, &["gpkg"])),
    };
    if found.is_empty() {
        return Err(Error::NoLayerFile {
            layer_id,
            extension: extension.to_owned(),
            members: members.to_vec(),
        });
    }
    if extension == "gpkg" && found.len() > 1 {
        return Err(Error::SeveralLayerFiles {
            layer_id,
            members: found.iter().map(|index| members[*index].clone()).collect(),
        });
    }
    Ok((extension, found))
}

/// A multi-tile raster: tiles under `{dir}/tiles/` and `{dir}/{vrt}`.
struct Mosaic {
    layer_id: u64,
    dir: PathBuf,
    vrt: String,
    max_file_bytes: u64,
}

impl Mosaic {
    async fn extract(
        self,
        archive: &mut Archive,
        members: &[String],
        tiles: &[usize],
        observer: &dyn Observer,
    ) -> Result<ExtractedLayer> {
        let layer_id = self.layer_id;
        let mut files = Vec::new();
        for &index in tiles {
            let name = &members[index];
            let relative = format!("tiles/{}", name.replace('\\', "/").trim_start_matches("./"));
            let path = self.dir.join(&relative);
            if path.exists() {
                return Err(Error::CorruptZip {
                    layer_id,
                    reason: format!("the member {name} appears twice"),
                });
            }
            if let Some(parent) = path.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(Error::io(layer_id, "creating", parent))?;
            }
            observer.layer_event(
                layer_id,
                LayerEvent::Extracting {
                    entry: name.clone(),
                },
            );
            let (size, blake3) =
                copy_member(archive, layer_id, index, name, &path, self.max_file_bytes).await?;
            files.push(ExtractedFile {
                relative,
                size,
                blake3,
            });
        }
        let vrt_file = mosaic::write_vrt(layer_id, &self.dir, &files, &self.vrt).await?;
        files.push(vrt_file);
        Ok(ExtractedLayer::Mosaic {
            dir: self.dir,
            vrt: self.vrt,
            files,
        })
    }
}

/// Inflates member `index` to `target`, hashing as it writes. Returns `(size, blake3 hex)`. The
/// CRC-32 and size are checked by the reader when the member ends.
async fn copy_member<R>(
    archive: &mut ZipArchiveReader<R>,
    layer_id: u64,
    index: usize,
    name: &str,
    target: &Path,
    limit: u64,
) -> Result<(u64, String)>
where
    R: futures::AsyncBufRead + futures::AsyncSeek + Unpin,
{
    let corrupt = |reason: String| Error::CorruptZip { layer_id, reason };
    let mut member = archive
        .file(index)
        .await
        .map_err(|error| corrupt(format!("{name}: {error}")))?;
    let mut out = tokio::fs::File::create(target)
        .await
        .map_err(Error::io(layer_id, "creating", target))?;
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0_u8; BLOCK];
    let mut size = 0_u64;
    loop {
        // Fill the block before writing: one large write per MiB.
        let mut filled = 0;
        while filled < BLOCK {
            let read = member.read(&mut buffer[filled..]).await.map_err(|error| {
                if size + filled as u64 > limit {
                    Error::TooLarge {
                        layer_id,
                        name: name.to_owned(),
                        limit,
                    }
                } else {
                    corrupt(format!("{name}: {error}"))
                }
            })?;
            if read == 0 {
                break;
            }
            filled += read;
        }
        if filled == 0 {
            break;
        }
        hasher.update(&buffer[..filled]);
        out.write_all(&buffer[..filled])
            .await
            .map_err(Error::io(layer_id, "writing", target))?;
        size += filled as u64;
    }
    out.sync_all()
        .await
        .map_err(Error::io(layer_id, "syncing", target))?;
    Ok((size, hasher.finalize().to_hex().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_entry_names_are_recognised() {
        for safe in [
            "layer.gpkg",
            "folder/layer.gpkg",
            "./a/b.tif",
            "a\\b.tif",
            "naïve ā.gpkg",
        ] {
            assert!(is_safe_entry_name(safe), "{safe}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "\\windows\\system32",
            "../escape.txt",
            "a/../../escape.txt",
            "a\\..\\..\\escape.txt",
            "C:\\evil.dll",
            "c:evil",
            "nul\0byte",
        ] {
            assert!(!is_safe_entry_name(bad), "{bad:?}");
        }
    }
}
