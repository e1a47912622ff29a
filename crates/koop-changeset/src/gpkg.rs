//! The GeoPackage side: the SQL functions GDAL's R-tree triggers call, the feature table's
//! shape, and GeoJSON geometries written as GeoPackage geometry blobs (GeoPackage 1.3, §2.1.3).

use geo::BoundingRect;
use geo_types::Geometry;
use geozero::wkb::GpkgWkb;
use geozero::{CoordDimensions, ToGeo, ToWkb};
use rusqlite::Connection;
use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::ValueRef;

/// The bounds of a GeoPackage geometry blob, `[min_x, max_x, min_y, max_y]`, or `None` for an
/// empty geometry, from the header's envelope when it has one, else from the geometry.
pub(crate) fn blob_bounds(blob: &[u8]) -> Option<[f64; 4]> {
    if blob.len() < 8 || &blob[..2] != b"GP" {
        return None;
    }
    let flags = blob[3];
    if flags & 0x10 != 0 {
        return None;
    }
    let little = flags & 1 == 1;
    let read = |at: usize| -> Option<f64> {
        let bytes: [u8; 8] = blob.get(at..at + 8)?.try_into().ok()?;
        Some(if little {
            f64::from_le_bytes(bytes)
        } else {
            f64::from_be_bytes(bytes)
        })
    };
    if (flags >> 1) & 0x07 != 0 {
        return Some([read(8)?, read(16)?, read(24)?, read(32)?]);
    }
    let geometry = GpkgWkb(blob.to_vec()).to_geo().ok()?;
    let rect = geometry.bounding_rect()?;
    Some([rect.min().x, rect.max().x, rect.min().y, rect.max().y])
}

/// Registers `ST_MinX`, `ST_MaxX`, `ST_MinY`, `ST_MaxY` and `ST_IsEmpty` (the functions the
/// R-tree triggers GDAL creates call; `SpatiaLite` and GDAL define them, plain SQLite does not).
pub(crate) fn register_functions(connection: &Connection) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    for (name, index) in [
        ("ST_MinX", 0),
        ("ST_MaxX", 1),
        ("ST_MinY", 2),
        ("ST_MaxY", 3),
    ] {
        connection.create_scalar_function(name, 1, flags, move |context: &Context<'_>| {
            Ok(match context.get_raw(0) {
                ValueRef::Blob(blob) => blob_bounds(blob).map(|bounds| bounds[index]),
                _ => None,
            })
        })?;
    }
    connection.create_scalar_function("ST_IsEmpty", 1, flags, |context: &Context<'_>| {
        Ok(match context.get_raw(0) {
            ValueRef::Blob(blob) => Some(i64::from(blob_bounds(blob).is_none())),
            _ => None,
        })
    })
}

/// A column of the feature table.
#[derive(Debug, Clone)]
pub(crate) struct Column {
    pub(crate) name: String,
    /// Declared type, upper case (`INTEGER`, `TEXT`, `DATE`, `MULTIPOLYGON`, …).
    pub(crate) declared: String,
    /// The `INTEGER PRIMARY KEY` (rowid alias, the GeoPackage FID).
    pub(crate) rowid: bool,
}

/// The feature (or attribute) table of a GeoPackage and its geometry column.
#[derive(Debug, Clone)]
pub(crate) struct FeatureTable {
    pub(crate) name: String,
    pub(crate) columns: Vec<Column>,
    /// `(column, SRS id, geometry type name, has z or m)`.
    pub(crate) geometry: Option<(String, i32, String, bool)>,
}

impl FeatureTable {
    /// The first `features` or `attributes` table of `gpkg_contents`.
    pub(crate) fn read(connection: &Connection) -> rusqlite::Result<Option<Self>> {
        let name: Option<String> = connection
            .query_row(
                "SELECT table_name FROM gpkg_contents WHERE data_type IN ('features', 'attributes')
                 ORDER BY rowid LIMIT 1",
                [],
                |row| row.get(0),
            )
            .map(Some)
            .or_else(|error| match error {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                other => Err(other),
            })?;
        let Some(name) = name else {
            return Ok(None);
        };
        let mut statement =
            connection.prepare("SELECT name, type, pk FROM pragma_table_info(?1) ORDER BY cid")?;
        let raw: Vec<(String, String, i64)> = statement
            .query_map([&name], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let primary_columns = raw.iter().filter(|(_, _, pk)| *pk > 0).count();
        let columns = raw
            .into_iter()
            .map(|(name, declared, pk)| {
                let declared = declared.to_uppercase();
                Column {
                    rowid: pk > 0 && primary_columns == 1 && declared == "INTEGER",
                    name,
                    declared,
                }
            })
            .collect();
        let geometry = connection
            .query_row(
                "SELECT column_name, srs_id, geometry_type_name, z, m FROM gpkg_geometry_columns
                 WHERE lower(table_name) = lower(?1)",
                [&name],
                |row| {
                    let z: i64 = row.get(3)?;
                    let m: i64 = row.get(4)?;
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, i32>(1)?,
                        row.get::<_, String>(2)?.to_uppercase(),
                        z == 1 || m == 1,
                    ))
                },
            )
            .map(Some)
            .or_else(|error| match error {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                other => Err(other),
            })?;
        Ok(Some(Self {
            name,
            columns,
            geometry,
        }))
    }
}

/// SQL identifier quoting.
pub(crate) fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A GeoJSON geometry as a GeoPackage geometry blob in `srs_id`, promoted to the column's multi
/// type where the column is one (as GDAL does on export); points carry no envelope, other
/// geometries the `[min_x, max_x, min_y, max_y]` one GDAL writes.
pub(crate) fn geometry_blob(
    geometry: &serde_json::Value,
    srs_id: i32,
    column_type: &str,
) -> Result<Option<Vec<u8>>, String> {
    if geometry.is_null() {
        return Ok(None);
    }
    let parsed = serde_json::from_value::<geojson::Geometry>(geometry.clone())
        .map_err(|error| format!("a geometry that is not GeoJSON ({error})"))?;
    let geometry: Geometry<f64> = parsed
        .try_into()
        .map_err(|error| format!("a geometry koop cannot read ({error})"))?;
    let geometry = match (column_type, geometry) {
        ("MULTIPOLYGON", Geometry::Polygon(polygon)) => {
            Geometry::MultiPolygon(geo_types::MultiPolygon(vec![polygon]))
        }
        ("MULTILINESTRING", Geometry::LineString(line)) => {
            Geometry::MultiLineString(geo_types::MultiLineString(vec![line]))
        }
        ("MULTIPOINT", Geometry::Point(point)) => {
            Geometry::MultiPoint(geo_types::MultiPoint(vec![point]))
        }
        (_, geometry) => geometry,
    };
    let envelope = match (&geometry, geometry.bounding_rect()) {
        (Geometry::Point(_), _) | (_, None) => Vec::new(),
        (_, Some(rect)) => vec![rect.min().x, rect.max().x, rect.min().y, rect.max().y],
    };
    geometry
        .to_gpkg_wkb(CoordDimensions::xy(), Some(srs_id), envelope)
        .map(Some)
        .map_err(|error| format!("a geometry that cannot be written ({error})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_come_from_the_envelope_or_the_geometry() {
        let point = geometry_blob(
            &serde_json::json!({"type": "Point", "coordinates": [1.5, 2.5]}),
            2193,
            "POINT",
        )
        .expect("point")
        .expect("not null");
        assert_eq!(blob_bounds(&point), Some([1.5, 1.5, 2.5, 2.5]));
        let square = geometry_blob(
            &serde_json::json!({"type": "Polygon", "coordinates": [[[0, 0], [4, 0], [4, 3], [0, 0]]]}),
            2193,
            "MULTIPOLYGON",
        )
        .expect("polygon")
        .expect("not null");
        // Promoted to the column's type, with the envelope in the header.
        assert!(matches!(
            GpkgWkb(square.clone()).to_geo(),
            Ok(Geometry::MultiPolygon(_))
        ));
        assert_eq!(blob_bounds(&square), Some([0.0, 4.0, 0.0, 3.0]));
        assert_eq!(blob_bounds(b"not a blob"), None);
        assert_eq!(
            geometry_blob(&serde_json::Value::Null, 2193, "POINT"),
            Ok(None)
        );
        assert!(geometry_blob(&serde_json::json!({"type": "Blob"}), 2193, "POINT").is_err());
    }
}
