//! Export ZIPs on disk: the layer file(s) of one content revision, the ISO metadata XML and a
//! text file, built once per (layer, revision, fault) and served with Range support.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_zip::base::write::ZipFileWriter;
use async_zip::{Compression, DeflateOption, ZipEntryBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::sync::OnceCell;
use tokio_util::compat::TokioAsyncWriteCompatExt;

use crate::TestkitError;
use crate::catalog::{LayerContent, TestLayer};
use crate::faults::ZipFault;

/// A built export ZIP.
#[derive(Debug, Clone)]
pub(crate) struct Artifact {
    pub(crate) path: PathBuf,
    /// Bytes served: the file length, or less for a truncated ZIP.
    pub(crate) served_len: u64,
}

type Slot = Arc<OnceCell<Result<Artifact, String>>>;

/// The cache of built artifacts, in a temporary directory removed with the server.
pub(crate) struct Artifacts {
    dir: tempfile::TempDir,
    slots: Mutex<HashMap<(u64, u32, ZipFault), Slot>>,
}

impl Artifacts {
    pub(crate) fn new() -> Result<Self, TestkitError> {
        Ok(Self {
            dir: tempfile::Builder::new().prefix("koop-testkit-").tempdir()?,
            slots: Mutex::new(HashMap::new()),
        })
    }

    /// The ZIP for `layer` at content `revision` with `fault`, built on first use.
    pub(crate) async fn zip(
        &self,
        layer: &TestLayer,
        history: &[Option<u32>],
        revision: u32,
        fault: ZipFault,
    ) -> Result<Artifact, String> {
        let slot = {
            let mut slots = self
                .slots
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            slots
                .entry((layer.id, revision, fault))
                .or_default()
                .clone()
        };
        slot.get_or_init(|| async {
            build(self.dir.path(), layer, history, revision, fault)
                .await
                .map_err(|error| error.to_string())
        })
        .await
        .clone()
    }
}

/// A file-system-safe slug of a title: `NZ Islands — Te Ika-a-Māui` → `nz-islands-te-ika-a-māui`.
pub(crate) fn slug(title: &str) -> String {
    let mut slug = String::new();
    for c in title.chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
    }
    slug.trim_end_matches('-').to_owned()
}

/// The layer files of one revision, written under `dir`: `(name in the ZIP, path on disk)`.
async fn layer_files(
    dir: &Path,
    layer: &TestLayer,
    history: &[Option<u32>],
    revision: u32,
) -> Result<Vec<(String, PathBuf)>, TestkitError> {
    let slug = slug(&layer.title);
    let revision_dir = dir.join(format!("layer-{}-r{revision}", layer.id));
    tokio::fs::create_dir_all(&revision_dir).await?;
    match &layer.content {
        LayerContent::GeoPackage(bytes) => {
            let path = revision_dir.join(format!("{slug}.gpkg"));
            tokio::fs::write(&path, bytes).await?;
            if revision > 0 {
                let path = path.clone();
                tokio::task::spawn_blocking(move || mark_revision(&path, revision))
                    .await
                    .map_err(|error| TestkitError::Io(std::io::Error::other(error)))??;
            }
            Ok(vec![(format!("{slug}.gpkg"), path)])
        }
        LayerContent::Generated(content) => {
            let path = revision_dir.join(format!("{slug}.gpkg"));
            let content = *content;
            let (target, layer_id, history) = (path.clone(), layer.id, history.to_vec());
            tokio::task::spawn_blocking(move || {
                content.generate_revision(&target, layer_id, &history, revision)
            })
            .await
            .map_err(|error| TestkitError::Io(std::io::Error::other(error)))??;
            Ok(vec![(format!("{slug}.gpkg"), path)])
        }
        LayerContent::GeoTiff(tiles) => {
            let mut files = Vec::new();
            for (name, bytes) in tiles {
                let name = if tiles.len() == 1 {
                    format!("{slug}.tif")
                } else {
                    name.clone()
                };
                let path = revision_dir.join(&name);
                tokio::fs::write(&path, bytes).await?;
                files.push((name, path));
            }
            Ok(files)
        }
        LayerContent::Nothing => Err(TestkitError::NotExportable(layer.id)),
    }
}

/// Gives a bundled GeoPackage new bytes for a new data version: its `gpkg_contents` row records
/// the revision (the features are unchanged).
fn mark_revision(path: &Path, revision: u32) -> Result<(), TestkitError> {
    let connection = rusqlite::Connection::open(path)?;
    connection.execute(
        "UPDATE gpkg_contents SET description = ?1, last_change = ?2",
        rusqlite::params![
            format!("revision {revision} (koop-testkit)"),
            format!("2026-01-01T00:00:{:02}.000Z", revision % 60)
        ],
    )?;
    Ok(())
}

/// A minimal ISO 19139-flavoured metadata document, as exports carry beside the data.
fn iso_metadata(layer: &TestLayer) -> String {
    let title = quick_xml::escape::escape(layer.title.as_str());
    let abstract_ = quick_xml::escape::escape(layer.description.as_str());
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<gmd:MD_Metadata xmlns:gmd="http://www.isotc211.org/2005/gmd" xmlns:gco="http://www.isotc211.org/2005/gco">
  <gmd:identificationInfo>
    <gmd:MD_DataIdentification>
      <gmd:citation><gmd:CI_Citation><gmd:title><gco:CharacterString>{title}</gco:CharacterString></gmd:title></gmd:CI_Citation></gmd:citation>
      <gmd:abstract><gco:CharacterString>{abstract_}</gco:CharacterString></gmd:abstract>
    </gmd:MD_DataIdentification>
  </gmd:identificationInfo>
</gmd:MD_Metadata>
"#
    )
}

async fn build(
    dir: &Path,
    layer: &TestLayer,
    history: &[Option<u32>],
    revision: u32,
    fault: ZipFault,
) -> Result<Artifact, TestkitError> {
    let slug = slug(&layer.title);
    let files = layer_files(dir, layer, history, revision).await?;
    let large = matches!(layer.content, LayerContent::Generated(_));
    let zip_path = dir.join(format!("export-{}-r{revision}-{fault:?}.zip", layer.id));
    let file = tokio::fs::File::create(&zip_path).await?;
    let mut writer = ZipFileWriter::new(BufWriter::with_capacity(1 << 20, file).compat_write());

    let layer_entries: Vec<(String, PathBuf)> = match fault {
        ZipFault::Empty | ZipFault::NoLayerFile => Vec::new(),
        ZipFault::TwoLayerFiles => {
            let mut doubled = files.clone();
            for (name, path) in &files {
                doubled.push((format!("copy-of-{name}"), path.clone()));
            }
            doubled
        }
        _ => files,
    };
    for (name, path) in &layer_entries {
        let option = if large {
            DeflateOption::Other(1)
        } else {
            DeflateOption::Normal
        };
        // A one-layer export holds its files at the top of the ZIP (the original Python
        // package, used against the real sites, looks for `*.gpkg` there and nowhere else).
        let entry =
            ZipEntryBuilder::new(name.clone().into(), Compression::Deflate).deflate_option(option);
        let mut entry_writer = writer.write_entry_stream(entry).await?;
        let mut source = tokio::fs::File::open(path).await?;
        let mut buffer = vec![0_u8; 1 << 20];
        loop {
            let read = source.read(&mut buffer).await?;
            if read == 0 {
                break;
            }
            futures::AsyncWriteExt::write_all(&mut entry_writer, &buffer[..read]).await?;
        }
        entry_writer.close().await?;
    }
    if fault != ZipFault::Empty {
        let extras: Vec<(String, Vec<u8>)> = vec![
            (format!("{slug}.xml"), iso_metadata(layer).into_bytes()),
            (
                format!("{slug}.txt"),
                format!(
                    "{}\r\nExported by koop-testkit. Natural Earth data is in the public domain.\r\n",
                    layer.title
                )
                .into_bytes(),
            ),
        ];
        for (name, bytes) in extras {
            let entry = ZipEntryBuilder::new(name.into(), Compression::Deflate);
            writer.write_entry_whole(entry, &bytes).await?;
        }
    }
    match fault {
        ZipFault::PathTraversal => {
            let entry = ZipEntryBuilder::new(
                "../../koop-escape.txt".to_owned().into(),
                Compression::Stored,
            );
            writer.write_entry_whole(entry, b"escaped").await?;
        }
        ZipFault::AbsolutePath => {
            let entry = ZipEntryBuilder::new(
                "/tmp/koop-absolute.txt".to_owned().into(),
                Compression::Stored,
            );
            writer.write_entry_whole(entry, b"absolute").await?;
        }
        _ => {}
    }
    let mut inner = writer.close().await?.into_inner();
    inner.flush().await?;
    inner.into_inner().sync_all().await?;

    let len = tokio::fs::metadata(&zip_path).await?.len();
    let served_len = if fault == ZipFault::Truncated {
        len / 2
    } else {
        len
    };
    if fault == ZipFault::Corrupted {
        corrupt_first_entry(&zip_path).await?;
    }
    Ok(Artifact {
        path: zip_path,
        served_len,
    })
}

/// Flips one byte inside the compressed data of the ZIP's first entry.
async fn corrupt_first_entry(path: &Path) -> Result<(), TestkitError> {
    let mut bytes = tokio::fs::read(path).await?;
    if bytes.len() < 64 {
        return Ok(());
    }
    let name_len = usize::from(u16::from_le_bytes([bytes[26], bytes[27]]));
    let extra_len = usize::from(u16::from_le_bytes([bytes[28], bytes[29]]));
    let data_start = 30 + name_len + extra_len;
    let target = (data_start + 40).min(bytes.len() - 1);
    bytes[target] ^= 0xA5;
    tokio::fs::write(path, bytes).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_keep_letters_and_collapse_the_rest() {
        assert_eq!(
            slug("NZ Islands — Te Ika-a-Māui & Te Waipounamu"),
            "nz-islands-te-ika-a-māui-te-waipounamu"
        );
        assert_eq!(slug("  World (1:110m) "), "world-1-110m");
    }
}
