//! A GDAL VRT mosaic over the tiles of a raster export, so a multi-tile layer opens from one path.
//!
//! Each tile's size, band layout, data type, georeferencing (`ModelPixelScale` + `ModelTiepoint`)
//! and EPSG code (GeoKeys) are read from its TIFF tags with the `tiff` crate; no pixel is read.
//! Tiles must share bands, data type, pixel size and CRS. Format: GDAL's VRT driver
//! (<https://gdal.org/drivers/raster/vrt.html>).

use std::io::Cursor;
use std::path::Path;

use quick_xml::Writer;
use quick_xml::events::BytesText;
use tiff::decoder::Decoder;
use tiff::tags::Tag;

use crate::error::{Error, Result};
use crate::extract::ExtractedFile;

/// Georeferencing and layout of one tile.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Tile {
    relative: String,
    width: u32,
    height: u32,
    bands: u16,
    data_type: &'static str,
    colors: Vec<&'static str>,
    /// Upper-left corner, CRS units.
    origin: (f64, f64),
    /// Pixel size, CRS units, both positive.
    pixel: (f64, f64),
    epsg: Option<u16>,
    nodata: Option<String>,
}

fn gdal_data_type(bits: u16, sample_format: u16) -> Option<&'static str> {
    Some(match (bits, sample_format) {
        (8, 1) => "Byte",
        (8, 2) => "Int8",
        (16, 1) => "UInt16",
        (16, 2) => "Int16",
        (32, 1) => "UInt32",
        (32, 2) => "Int32",
        (64, 1) => "UInt64",
        (64, 2) => "Int64",
        (32, 3) => "Float32",
        (64, 3) => "Float64",
        _ => return None,
    })
}

/// Reads a tile's tags. Blocking.
pub(crate) fn read_tile(path: &Path, relative: &str) -> std::result::Result<Tile, String> {
    let file = std::fs::File::open(path).map_err(|error| error.to_string())?;
    let mut decoder = Decoder::new(std::io::BufReader::new(file))
        .map_err(|error| format!("not a TIFF: {error}"))?;
    let (width, height) = decoder.dimensions().map_err(|error| error.to_string())?;
    let bands: u16 = decoder
        .find_tag_unsigned(Tag::SamplesPerPixel)
        .map_err(|error| error.to_string())?
        .unwrap_or(1);
    let bits = decoder
        .find_tag_unsigned_vec::<u16>(Tag::BitsPerSample)
        .map_err(|error| error.to_string())?
        .and_then(|bits| bits.first().copied())
        .unwrap_or(1);
    let sample_format = decoder
        .find_tag_unsigned_vec::<u16>(Tag::SampleFormat)
        .map_err(|error| error.to_string())?
        .and_then(|formats| formats.first().copied())
        .unwrap_or(1);
    let data_type = gdal_data_type(bits, sample_format)
        .ok_or_else(|| format!("unsupported sample type: {bits} bits, format {sample_format}"))?;
    let photometric: u16 = decoder
        .find_tag_unsigned(Tag::PhotometricInterpretation)
        .map_err(|error| error.to_string())?
        .unwrap_or(1);
    let colors = (0..bands)
        .map(|band| match (photometric, band) {
            (2, 0) => "Red",
            (2, 1) => "Green",
            (2, 2) => "Blue",
            (2, 3) => "Alpha",
            (0 | 1, 0) => "Gray",
            _ => "Undefined",
        })
        .collect();
    let scale = decoder
        .get_tag_f64_vec(Tag::ModelPixelScaleTag)
        .map_err(|_| "no ModelPixelScale tag: the tile is not georeferenced".to_owned())?;
    let tiepoint = decoder
        .get_tag_f64_vec(Tag::ModelTiepointTag)
        .map_err(|_| "no ModelTiepoint tag: the tile is not georeferenced".to_owned())?;
    if scale.len() < 2 || tiepoint.len() < 6 || scale[0] <= 0.0 || scale[1] <= 0.0 {
        return Err("unusable georeferencing tags".to_owned());
    }
    let keys = decoder
        .find_tag_unsigned_vec::<u16>(Tag::GeoKeyDirectoryTag)
        .map_err(|error| error.to_string())?
        .unwrap_or_default();
    let geo_key = |wanted: u16| {
        keys.get(4..)
            .unwrap_or_default()
            .chunks_exact(4)
            .find(|entry| entry[0] == wanted && entry[1] == 0)
            .map(|entry| entry[3])
    };
    // GTRasterTypeGeoKey 2 = PixelIsPoint: the tiepoint is a pixel's centre, not its corner.
    let half = if geo_key(1025) == Some(2) { 0.5 } else { 0.0 };
    let origin = (
        tiepoint[3] - (tiepoint[0] + half) * scale[0],
        tiepoint[4] + (tiepoint[1] + half) * scale[1],
    );
    let epsg = geo_key(3072)
        .or_else(|| geo_key(2048))
        .filter(|code| (1..32767).contains(code));
    let nodata = decoder
        .get_tag_ascii_string(Tag::GdalNodata)
        .ok()
        .map(|text| text.trim_matches(char::from(0)).trim().to_owned())
        .filter(|text| !text.is_empty());
    Ok(Tile {
        relative: relative.to_owned(),
        width,
        height,
        bands,
        data_type,
        colors,
        origin,
        pixel: (scale[0], scale[1]),
        epsg,
        nodata,
    })
}

/// Why `tiles` cannot share one mosaic: `(tile, reason)`.
fn incompatibility(tiles: &[Tile]) -> Option<(String, String)> {
    let first = tiles.first()?;
    tiles.iter().find_map(|tile| {
        let reason = if tile.bands != first.bands || tile.data_type != first.data_type {
            format!(
                "{} bands of {} where {} has {} bands of {}",
                tile.bands, tile.data_type, first.relative, first.bands, first.data_type
            )
        } else if (tile.pixel.0 - first.pixel.0).abs() > first.pixel.0 * 1e-9
            || (tile.pixel.1 - first.pixel.1).abs() > first.pixel.1 * 1e-9
        {
            format!("pixel size {:?} differs from {:?}", tile.pixel, first.pixel)
        } else if tile.epsg != first.epsg {
            format!(
                "CRS EPSG:{:?} differs from EPSG:{:?}",
                tile.epsg, first.epsg
            )
        } else {
            return None;
        };
        Some((tile.relative.clone(), reason))
    })
}

/// The mosaic's upper-left corner, pixel size and size in pixels.
struct Grid {
    min_x: f64,
    max_y: f64,
    pixel: (f64, f64),
    size: (f64, f64),
}

impl Grid {
    fn of(tiles: &[Tile], pixel: (f64, f64)) -> Self {
        let min_x = tiles
            .iter()
            .map(|t| t.origin.0)
            .fold(f64::INFINITY, f64::min);
        let max_y = tiles
            .iter()
            .map(|t| t.origin.1)
            .fold(f64::NEG_INFINITY, f64::max);
        let max_x = tiles
            .iter()
            .map(|t| t.origin.0 + f64::from(t.width) * pixel.0)
            .fold(f64::NEG_INFINITY, f64::max);
        let min_y = tiles
            .iter()
            .map(|t| t.origin.1 - f64::from(t.height) * pixel.1)
            .fold(f64::INFINITY, f64::min);
        Self {
            min_x,
            max_y,
            pixel,
            size: (
                ((max_x - min_x) / pixel.0).round(),
                ((max_y - min_y) / pixel.1).round(),
            ),
        }
    }

    /// Where `tile` goes, in mosaic pixels.
    fn offset(&self, tile: &Tile) -> (String, String) {
        (
            format!("{}", ((tile.origin.0 - self.min_x) / self.pixel.0).round()),
            format!("{}", ((self.max_y - tile.origin.1) / self.pixel.1).round()),
        )
    }
}

type XmlWriter = Writer<Cursor<Vec<u8>>>;

fn write_source(
    writer: &mut XmlWriter,
    grid: &Grid,
    tile: &Tile,
    band: &str,
) -> std::io::Result<()> {
    let (width, height) = (tile.width.to_string(), tile.height.to_string());
    let (x_off, y_off) = grid.offset(tile);
    let element = if tile.nodata.is_some() {
        "ComplexSource"
    } else {
        "SimpleSource"
    };
    writer
        .create_element(element)
        .write_inner_content(|writer| {
            writer
                .create_element("SourceFilename")
                .with_attribute(("relativeToVRT", "1"))
                .write_text_content(BytesText::new(&tile.relative))?;
            writer
                .create_element("SourceBand")
                .write_text_content(BytesText::new(band))?;
            writer
                .create_element("SrcRect")
                .with_attributes([
                    ("xOff", "0"),
                    ("yOff", "0"),
                    ("xSize", width.as_str()),
                    ("ySize", height.as_str()),
                ])
                .write_empty()?;
            writer
                .create_element("DstRect")
                .with_attributes([
                    ("xOff", x_off.as_str()),
                    ("yOff", y_off.as_str()),
                    ("xSize", width.as_str()),
                    ("ySize", height.as_str()),
                ])
                .write_empty()?;
            if let Some(nodata) = &tile.nodata {
                writer
                    .create_element("NODATA")
                    .write_text_content(BytesText::new(nodata))?;
            }
            Ok(())
        })?;
    Ok(())
}

fn write_band(
    writer: &mut XmlWriter,
    grid: &Grid,
    tiles: &[Tile],
    band: u16,
) -> std::io::Result<()> {
    let first = &tiles[0];
    let band_text = band.to_string();
    writer
        .create_element("VRTRasterBand")
        .with_attribute(("dataType", first.data_type))
        .with_attribute(("band", band_text.as_str()))
        .write_inner_content(|writer| {
            if let Some(nodata) = &first.nodata {
                writer
                    .create_element("NoDataValue")
                    .write_text_content(BytesText::new(nodata))?;
            }
            let color = first
                .colors
                .get(usize::from(band - 1))
                .copied()
                .unwrap_or("Undefined");
            writer
                .create_element("ColorInterp")
                .write_text_content(BytesText::new(color))?;
            for tile in tiles {
                write_source(writer, grid, tile, &band_text)?;
            }
            Ok(())
        })?;
    Ok(())
}

/// The VRT document for `tiles`, or `(tile, reason)` when they do not fit together.
pub(crate) fn vrt_document(tiles: &[Tile]) -> std::result::Result<String, (String, String)> {
    let first = tiles
        .first()
        .ok_or_else(|| (String::new(), "no tiles".to_owned()))?;
    if let Some(problem) = incompatibility(tiles) {
        return Err(problem);
    }
    let grid = Grid::of(tiles, first.pixel);
    let (width, height) = (grid.size.0.to_string(), grid.size.1.to_string());
    let mut writer = Writer::new_with_indent(Cursor::new(Vec::new()), b' ', 2);
    writer
        .create_element("VRTDataset")
        .with_attribute(("rasterXSize", width.as_str()))
        .with_attribute(("rasterYSize", height.as_str()))
        .write_inner_content(|writer| {
            if let Some(epsg) = first.epsg {
                writer
                    .create_element("SRS")
                    .with_attribute(("dataAxisToSRSAxisMapping", "1,2"))
                    .write_text_content(BytesText::new(&format!("EPSG:{epsg}")))?;
            }
            let transform = format!(
                "{}, {}, 0, {}, 0, {}",
                grid.min_x, grid.pixel.0, grid.max_y, -grid.pixel.1
            );
            writer
                .create_element("GeoTransform")
                .write_text_content(BytesText::new(&transform))?;
            for band in 1..=first.bands {
                write_band(writer, &grid, tiles, band)?;
            }
            Ok(())
        })
        .map_err(|error| (String::new(), error.to_string()))?;
    let mut document = writer.into_inner().into_inner();
    document.push(b'\n');
    String::from_utf8(document).map_err(|error| (String::new(), error.to_string()))
}

/// Reads the tiles' tags and writes `{dir}/{vrt_name}`; returns the VRT as an extracted file.
pub(crate) async fn write_vrt(
    layer_id: u64,
    dir: &Path,
    tiles: &[ExtractedFile],
    vrt_name: &str,
) -> Result<ExtractedFile> {
    let dir = dir.to_owned();
    let relatives: Vec<String> = tiles.iter().map(|tile| tile.relative.clone()).collect();
    let read_dir = dir.clone();
    let document = tokio::task::spawn_blocking(move || {
        let tiles = relatives
            .iter()
            .map(|relative| {
                read_tile(&read_dir.join(relative), relative)
                    .map_err(|reason| (relative.clone(), reason))
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        vrt_document(&tiles)
    })
    .await
    .map_err(|error| Error::Mosaic {
        layer_id,
        tile: String::new(),
        reason: error.to_string(),
    })?
    .map_err(|(tile, reason)| Error::Mosaic {
        layer_id,
        tile,
        reason,
    })?;
    let path = dir.join(vrt_name);
    let write = async {
        let mut file = tokio::fs::File::create(&path).await?;
        tokio::io::AsyncWriteExt::write_all(&mut file, document.as_bytes()).await?;
        file.sync_all().await
    };
    write.await.map_err(Error::io(layer_id, "writing", &path))?;
    Ok(ExtractedFile {
        relative: vrt_name.to_owned(),
        size: document.len() as u64,
        blake3: blake3::hash(document.as_bytes()).to_hex().to_string(),
    })
}
