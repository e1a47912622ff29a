//! GeoPackages for test layers: inspecting the bundled ones and generating new ones of any size.
//!
//! Generation starts from a copy of the bundled New Zealand islands GeoPackage (so the
//! `gpkg_spatial_ref_sys` rows and GDAL's trigger definitions are the real ones), replaces its
//! feature table, writes valid GeoPackage geometry blobs with geozero, fills the R-tree spatial
//! index, and re-creates the R-tree and feature-count triggers from the original definitions.

use std::path::Path;

use geo_types::{Coord, Geometry, LineString, MultiPolygon, Point, Polygon};
use geozero::wkb::GpkgWkb;
use geozero::{CoordDimensions, ToGeo, ToWkb};
use rusqlite::{Connection, OpenFlags, params};

use crate::TestkitError;
use crate::data::NZ_ISLANDS_GPKG;

/// The table of the bundled islands GeoPackage that generation starts from.
const SOURCE_TABLE: &str = "nz_island_polygons_10m";

/// The schema of a test layer, as its layer details describe it.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSchema {
    /// The GeoPackage table holding the features.
    pub table: String,
    /// `(name, Koordinates type)` for each attribute, the geometry included.
    pub fields: Vec<(String, String)>,
    /// Koordinates geometry type (`point`, `multipolygon`, …); `None` for tables.
    pub geometry_type: Option<String>,
    /// Name of the geometry column.
    pub geometry_field: Option<String>,
    /// EPSG code of the features; `None` for tables.
    pub srs_id: Option<u32>,
    /// Primary key attribute names.
    pub primary_key: Vec<String>,
    /// Number of features, when known before generation.
    pub feature_count: Option<u64>,
    /// `[min_x, min_y, max_x, max_y]` in the layer's CRS, when known.
    pub bounds: Option<[f64; 4]>,
}

/// A GeoPackage generated on demand (at the first export of the layer, never stored in git).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GeneratedContent {
    /// Copies of the real New Zealand island polygons (EPSG:2193), shifted and jittered, until the
    /// file reaches about `target_bytes` bytes.
    Polygons {
        /// Target file size, in bytes.
        target_bytes: u64,
    },
    /// `count` points across New Zealand (EPSG:2193) with attributes `id` (integer, = fid),
    /// `category` (`c0`…`c9`), `value` (double), `name` (text) and `observed` (date).
    Points {
        /// Number of points.
        count: u64,
    },
    /// An attributes-only table (no geometry) with `rows` rows: `id`, `suburb_locality_id`,
    /// `population_estimate`.
    Table {
        /// Number of rows.
        rows: u64,
    },
}

/// What generation produced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeneratedInfo {
    /// Number of features written.
    pub feature_count: u64,
    /// File size, in bytes.
    pub bytes: u64,
}

use crate::edits::NZ_BOUNDS_2193;

impl GeneratedContent {
    /// The schema the generated file will have.
    pub fn schema(&self) -> LayerSchema {
        match *self {
            Self::Polygons { .. } => LayerSchema {
                table: "nz_islands".to_owned(),
                fields: fields(&[
                    ("fid", "integer"),
                    ("geom", "geometry"),
                    ("id", "string"),
                    ("name", "string"),
                    ("copy", "integer"),
                ]),
                geometry_type: Some("multipolygon".to_owned()),
                geometry_field: Some("geom".to_owned()),
                srs_id: Some(2193),
                primary_key: vec!["fid".to_owned()],
                feature_count: None,
                bounds: None,
            },
            Self::Points { count } => LayerSchema {
                table: "points".to_owned(),
                fields: fields(&[
                    ("fid", "integer"),
                    ("geom", "geometry"),
                    ("id", "integer"),
                    ("category", "string"),
                    ("value", "double"),
                    ("name", "string"),
                    ("observed", "date"),
                ]),
                geometry_type: Some("point".to_owned()),
                geometry_field: Some("geom".to_owned()),
                srs_id: Some(2193),
                primary_key: vec!["id".to_owned()],
                feature_count: Some(count),
                bounds: Some(NZ_BOUNDS_2193),
            },
            Self::Table { rows } => LayerSchema {
                table: "population".to_owned(),
                fields: fields(&[
                    ("fid", "integer"),
                    ("id", "integer"),
                    ("suburb_locality_id", "integer"),
                    ("population_estimate", "integer"),
                ]),
                geometry_type: None,
                geometry_field: None,
                srs_id: None,
                primary_key: vec!["id".to_owned()],
                feature_count: Some(rows),
                bounds: None,
            },
        }
    }

    /// Writes the GeoPackage to `path` (replacing it). Deterministic for a given `seed`.
    /// Blocking: call from `spawn_blocking` in async code.
    ///
    /// # Errors
    ///
    /// [`TestkitError::Io`] or [`TestkitError::Sqlite`] when the file cannot be written.
    pub fn generate(&self, path: &Path, seed: u64) -> Result<GeneratedInfo, TestkitError> {
        self.write(path, seed, crate::edits::new_rows(*self, seed).as_ref())
    }

    /// Writes content revision `revision` of layer `layer_id` whose revisions were `history`
    /// (see [`crate::edits`]). Blocking.
    pub(crate) fn generate_revision(
        &self,
        path: &Path,
        layer_id: u64,
        history: &crate::edits::History,
        revision: u32,
    ) -> Result<GeneratedInfo, TestkitError> {
        let seed = layer_id * 1_000 + u64::from(revision);
        self.write(
            path,
            seed,
            crate::edits::rows(*self, layer_id, history, revision).as_ref(),
        )
    }

    fn write(
        &self,
        path: &Path,
        seed: u64,
        rows: Option<&crate::edits::Rows>,
    ) -> Result<GeneratedInfo, TestkitError> {
        std::fs::write(path, NZ_ISLANDS_GPKG)?;
        let mut connection = Connection::open(path)?;
        connection.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;")?;
        let source = read_source(&connection)?;
        let transaction = connection.transaction()?;
        drop_feature_table(&transaction, SOURCE_TABLE)?;
        let schema = self.schema();
        let mut random = fastrand::Rng::with_seed(seed);
        let (count, bounds) = match *self {
            Self::Polygons { target_bytes } => write_polygons(
                &transaction,
                &schema.table,
                &source,
                target_bytes,
                &mut random,
            )?,
            Self::Points { .. } => match rows {
                Some(crate::edits::Rows::Points(points)) => {
                    write_points(&transaction, &schema.table, points)?
                }
                _ => (0, None),
            },
            Self::Table { .. } => match rows {
                Some(crate::edits::Rows::Table(table)) => {
                    (write_table(&transaction, &schema.table, table)?, None)
                }
                _ => (0, None),
            },
        };
        register_table(&transaction, &schema, count, bounds, &source.triggers)?;
        transaction.commit()?;
        connection
            .close()
            .map_err(|(_, error)| TestkitError::Sqlite(error))?;
        Ok(GeneratedInfo {
            feature_count: count,
            bytes: std::fs::metadata(path)?.len(),
        })
    }
}

fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(name, kind)| ((*name).to_owned(), (*kind).to_owned()))
        .collect()
}

/// The real features and GDAL's trigger definitions of the bundled islands file.
struct Source {
    polygons: Vec<(String, MultiPolygon<f64>)>,
    /// `(name, sql)` of the triggers on the source table.
    triggers: Vec<String>,
}

fn read_source(connection: &Connection) -> Result<Source, TestkitError> {
    let mut statement = connection.prepare(&format!(
        "SELECT name, geom FROM \"{SOURCE_TABLE}\" ORDER BY fid"
    ))?;
    let mut polygons = Vec::new();
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let name: String = row.get(0)?;
        let blob: Vec<u8> = row.get(1)?;
        match GpkgWkb(blob).to_geo()? {
            Geometry::MultiPolygon(polygon) => polygons.push((name, polygon)),
            Geometry::Polygon(polygon) => polygons.push((name, MultiPolygon(vec![polygon]))),
            _ => {}
        }
    }
    let mut statement = connection
        .prepare("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?1")?;
    let triggers = statement
        .query_map([SOURCE_TABLE], |row| row.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Source { polygons, triggers })
}

fn drop_feature_table(connection: &Connection, table: &str) -> Result<(), TestkitError> {
    connection.execute_batch(&format!(
        "DROP TABLE IF EXISTS \"rtree_{table}_geom\";
         DROP TABLE IF EXISTS \"{table}\";
         DELETE FROM gpkg_geometry_columns WHERE table_name = '{table}';
         DELETE FROM gpkg_extensions WHERE table_name = '{table}';
         DELETE FROM gpkg_ogr_contents WHERE table_name = '{table}';
         DELETE FROM gpkg_contents WHERE table_name = '{table}';"
    ))?;
    Ok(())
}

/// A running bounding box.
#[derive(Clone, Copy)]
struct Bounds([f64; 4]);

impl Bounds {
    fn empty() -> Self {
        Self([f64::MAX, f64::MAX, f64::MIN, f64::MIN])
    }

    fn add(&mut self, coord: Coord<f64>) {
        self.0[0] = self.0[0].min(coord.x);
        self.0[1] = self.0[1].min(coord.y);
        self.0[2] = self.0[2].max(coord.x);
        self.0[3] = self.0[3].max(coord.y);
    }

    fn merge(&mut self, other: Bounds) {
        self.add(Coord {
            x: other.0[0],
            y: other.0[1],
        });
        self.add(Coord {
            x: other.0[2],
            y: other.0[3],
        });
    }
}

fn shifted(
    line: &LineString<f64>,
    dx: f64,
    dy: f64,
    random: &mut fastrand::Rng,
    bounds: &mut Bounds,
) -> LineString<f64> {
    let count = line.0.len();
    LineString(
        line.0
            .iter()
            .enumerate()
            .map(|(index, coord)| {
                // Jitter every vertex by up to ±0.5 m but keep rings closed.
                let (jx, jy) = if index + 1 == count {
                    (0.0, 0.0)
                } else {
                    (random.f64() - 0.5, random.f64() - 0.5)
                };
                let moved = Coord {
                    x: coord.x + dx + jx,
                    y: coord.y + dy + jy,
                };
                bounds.add(moved);
                moved
            })
            .collect::<Vec<_>>(),
    )
    .closed()
}

trait Closed {
    fn closed(self) -> Self;
}

impl Closed for LineString<f64> {
    fn closed(mut self) -> Self {
        if let (Some(first), Some(last)) = (self.0.first().copied(), self.0.last_mut()) {
            *last = first;
        }
        self
    }
}

fn write_polygons(
    connection: &Connection,
    table: &str,
    source: &Source,
    target_bytes: u64,
    random: &mut fastrand::Rng,
) -> Result<(u64, Option<[f64; 4]>), TestkitError> {
    connection.execute_batch(&format!(
        "CREATE TABLE \"{table}\" (\"fid\" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, \"geom\" MULTIPOLYGON, \"id\" TEXT, \"name\" TEXT, \"copy\" INTEGER);
         CREATE VIRTUAL TABLE \"rtree_{table}_geom\" USING rtree(id, minx, maxx, miny, maxy);"
    ))?;
    let mut insert = connection.prepare(&format!(
        "INSERT INTO \"{table}\" (fid, geom, id, name, copy) VALUES (?1, ?2, ?3, ?4, ?5)"
    ))?;
    let mut index = connection.prepare(&format!(
        "INSERT INTO \"rtree_{table}_geom\" VALUES (?1, ?2, ?3, ?4, ?5)"
    ))?;
    let mut written: u64 = 0;
    let mut fid: i64 = 0;
    let mut total = Bounds::empty();
    let mut copy: i64 = 0;
    // The base file is ~170 KB; every copy adds its blob size.
    let mut size_estimate: u64 = 170 * 1024;
    while written == 0 || size_estimate < target_bytes {
        // Each copy of the whole island set moves by up to ±20 km.
        let (dx, dy) = if copy == 0 {
            (0.0, 0.0)
        } else {
            (
                random.f64() * 40_000.0 - 20_000.0,
                random.f64() * 40_000.0 - 20_000.0,
            )
        };
        for (name, polygons) in &source.polygons {
            let mut bounds = Bounds::empty();
            let moved = MultiPolygon(
                polygons
                    .0
                    .iter()
                    .map(|polygon| {
                        Polygon::new(
                            shifted(polygon.exterior(), dx, dy, random, &mut bounds),
                            polygon
                                .interiors()
                                .iter()
                                .map(|ring| shifted(ring, dx, dy, random, &mut bounds))
                                .collect(),
                        )
                    })
                    .collect(),
            );
            let [min_x, min_y, max_x, max_y] = bounds.0;
            let blob = Geometry::MultiPolygon(moved).to_gpkg_wkb(
                CoordDimensions::xy(),
                Some(2193),
                vec![min_x, max_x, min_y, max_y],
            )?;
            fid += 1;
            size_estimate += blob.len() as u64 + 64;
            insert.execute(params![fid, blob, format!("{fid}"), name, copy])?;
            index.execute(params![fid, min_x, max_x, min_y, max_y])?;
            total.merge(bounds);
            written += 1;
        }
        copy += 1;
    }
    Ok((written, Some(total.0)))
}

fn write_points(
    connection: &Connection,
    table: &str,
    points: &[crate::edits::PointRow],
) -> Result<(u64, Option<[f64; 4]>), TestkitError> {
    connection.execute_batch(&format!(
        "CREATE TABLE \"{table}\" (\"fid\" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, \"geom\" POINT, \"id\" INTEGER, \"category\" TEXT, \"value\" DOUBLE, \"name\" TEXT, \"observed\" DATE);
         CREATE VIRTUAL TABLE \"rtree_{table}_geom\" USING rtree(id, minx, maxx, miny, maxy);"
    ))?;
    let mut insert = connection.prepare(&format!(
        "INSERT INTO \"{table}\" (fid, geom, id, category, value, name, observed) VALUES (?1, ?2, ?1, ?3, ?4, ?5, ?6)"
    ))?;
    let mut index = connection.prepare(&format!(
        "INSERT INTO \"rtree_{table}_geom\" VALUES (?1, ?2, ?2, ?3, ?3)"
    ))?;
    let mut bounds = Bounds::empty();
    for point in points {
        bounds.add(Coord {
            x: point.x,
            y: point.y,
        });
        let blob = Geometry::Point(Point::new(point.x, point.y)).to_gpkg_wkb(
            CoordDimensions::xy(),
            Some(2193),
            Vec::new(),
        )?;
        insert.execute(params![
            point.id,
            blob,
            point.category,
            point.value,
            point.name,
            point.observed
        ])?;
        index.execute(params![point.id, point.x, point.y])?;
    }
    let count = points.len() as u64;
    Ok((count, (count > 0).then_some(bounds.0)))
}

fn write_table(
    connection: &Connection,
    table: &str,
    rows: &[crate::edits::TableRow],
) -> Result<u64, TestkitError> {
    connection.execute_batch(&format!(
        "CREATE TABLE \"{table}\" (\"fid\" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, \"id\" INTEGER, \"suburb_locality_id\" INTEGER, \"population_estimate\" INTEGER);"
    ))?;
    let mut insert = connection.prepare(&format!(
        "INSERT INTO \"{table}\" (fid, id, suburb_locality_id, population_estimate) VALUES (?1, ?1, ?2, ?3)"
    ))?;
    for row in rows {
        insert.execute(params![
            row.id,
            row.suburb_locality_id,
            row.population_estimate
        ])?;
    }
    Ok(rows.len() as u64)
}

/// Registers the table in `gpkg_contents`, `gpkg_geometry_columns`, `gpkg_extensions` and
/// `gpkg_ogr_contents`, and creates GDAL's triggers for it.
fn register_table(
    connection: &Connection,
    schema: &LayerSchema,
    count: u64,
    bounds: Option<[f64; 4]>,
    trigger_templates: &[String],
) -> Result<(), TestkitError> {
    let table = &schema.table;
    let [min_x, min_y, max_x, max_y] = bounds.map_or([None; 4], |b| b.map(Some));
    let data_type = if schema.geometry_type.is_some() {
        "features"
    } else {
        "attributes"
    };
    connection.execute(
        "INSERT INTO gpkg_contents (table_name, data_type, identifier, description, min_x, min_y, max_x, max_y, srs_id)
         VALUES (?1, ?2, ?1, 'generated by koop-testkit', ?3, ?4, ?5, ?6, ?7)",
        params![table, data_type, min_x, min_y, max_x, max_y, schema.srs_id],
    )?;
    connection.execute(
        "INSERT INTO gpkg_ogr_contents (table_name, feature_count) VALUES (?1, ?2)",
        params![table, i64::try_from(count).unwrap_or(i64::MAX)],
    )?;
    if let (Some(geometry_type), Some(srs_id)) = (&schema.geometry_type, schema.srs_id) {
        connection.execute(
            "INSERT INTO gpkg_geometry_columns VALUES (?1, 'geom', ?2, ?3, 0, 0)",
            params![table, geometry_type.to_uppercase(), srs_id],
        )?;
        connection.execute(
            "INSERT INTO gpkg_extensions VALUES (?1, 'geom', 'gpkg_rtree_index', 'http://www.geopackage.org/spec120/#extension_rtree', 'write-only')",
            params![table],
        )?;
    }
    for template in trigger_templates {
        let is_rtree = template.contains("rtree_");
        if is_rtree && schema.geometry_type.is_none() {
            continue;
        }
        connection.execute_batch(&template.replace(SOURCE_TABLE, table))?;
    }
    Ok(())
}

/// Inspects a GeoPackage's first feature or attribute table: name, fields, geometry, CRS,
/// primary key, count and bounds.
///
/// # Errors
///
/// [`TestkitError::Sqlite`] when the file is not a readable GeoPackage.
pub fn inspect(path: &Path) -> Result<LayerSchema, TestkitError> {
    type ContentsRow = (
        String,
        Option<f64>,
        Option<f64>,
        Option<f64>,
        Option<f64>,
        Option<i64>,
    );
    let connection = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let (table, min_x, min_y, max_x, max_y, srs_id): ContentsRow = connection.query_row(
        "SELECT table_name, min_x, min_y, max_x, max_y, srs_id FROM gpkg_contents
         WHERE data_type IN ('features', 'attributes') ORDER BY table_name LIMIT 1",
        [],
        |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
                row.get(5)?,
            ))
        },
    )?;
    let geometry: Option<(String, String)> = connection
        .query_row(
            "SELECT column_name, geometry_type_name FROM gpkg_geometry_columns WHERE table_name = ?1",
            [&table],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .ok();
    let mut fields = Vec::new();
    let mut primary_key = Vec::new();
    let mut statement = connection.prepare(&format!("PRAGMA table_info(\"{table}\")"))?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let name: String = row.get(1)?;
        let declared: String = row.get(2)?;
        let is_key: i64 = row.get(5)?;
        if is_key > 0 {
            primary_key.push(name.clone());
        }
        let is_geometry = geometry.as_ref().is_some_and(|(column, _)| *column == name);
        fields.push((name, koordinates_type(&declared, is_geometry).to_owned()));
    }
    let count: i64 =
        connection.query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |row| {
            row.get(0)
        })?;
    let bounds = match (min_x, min_y, max_x, max_y) {
        (Some(a), Some(b), Some(c), Some(d)) => Some([a, b, c, d]),
        _ => None,
    };
    Ok(LayerSchema {
        table,
        fields,
        geometry_type: geometry.as_ref().map(|(_, kind)| kind.to_lowercase()),
        geometry_field: geometry.map(|(column, _)| column),
        srs_id: srs_id.and_then(|id| u32::try_from(id).ok()),
        primary_key,
        feature_count: u64::try_from(count).ok(),
        bounds,
    })
}

/// The Koordinates field type of a SQLite declared column type.
fn koordinates_type(declared: &str, is_geometry: bool) -> &'static str {
    let declared = declared.to_ascii_uppercase();
    if is_geometry {
        "geometry"
    } else if declared.contains("INT") {
        "integer"
    } else if declared.contains("REAL") || declared.contains("DOUBLE") || declared.contains("FLOAT")
    {
        "double"
    } else if declared == "DATE" {
        "date"
    } else if declared.contains("DATETIME") || declared.contains("TIMESTAMP") {
        "datetime"
    } else if declared.contains("BOOL") {
        "boolean"
    } else {
        "string"
    }
}

/// `YYYY-MM-DD` of a day count since 1970-01-01 (proleptic Gregorian; H. Hinnant's algorithm).
pub(crate) fn civil_date(days_since_epoch: u64) -> String {
    let z = i64::try_from(days_since_epoch).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_are_right() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(10_957), "2000-01-01");
        assert_eq!(civil_date(11_016), "2000-02-29");
        assert_eq!(civil_date(20_454), "2026-01-01");
    }

    #[test]
    fn generated_points_have_the_declared_schema() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("points.gpkg");
        let content = GeneratedContent::Points { count: 250 };
        let info = content.generate(&path, 7).expect("generate");
        assert_eq!(info.feature_count, 250);
        let schema = inspect(&path).expect("inspect");
        assert_eq!(schema.table, "points");
        assert_eq!(schema.feature_count, Some(250));
        assert_eq!(schema.geometry_type.as_deref(), Some("point"));
        assert_eq!(schema.srs_id, Some(2193));
        let declared: Vec<_> = content.schema().fields;
        assert_eq!(schema.fields, declared);
    }

    #[test]
    fn generated_polygons_reach_the_target_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("polygons.gpkg");
        let info = GeneratedContent::Polygons {
            target_bytes: 3 * 1024 * 1024,
        }
        .generate(&path, 1)
        .expect("generate");
        assert!(info.bytes >= 3 * 1024 * 1024, "{info:?}");
        assert!(info.bytes < 5 * 1024 * 1024, "{info:?}");
        let schema = inspect(&path).expect("inspect");
        assert_eq!(schema.feature_count, Some(info.feature_count));
        assert!(info.feature_count > 16);
    }
}
