//! A layer as served: its cached GeoPackage's table, the metadata outputs read, and which column
//! is its OBJECTID.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use koop::{Epsg, LayerDetails};
use koop_geoservices::{COMPUTED_OBJECT_ID, Reprojector, Schema};
use koop_provider::{Field, FieldType, GeometryType, Metadata, ProviderError};

use crate::gpkg::{self, ConnectionPool, Table};

/// Which values are a layer's OBJECTID (a 32-bit integer ArcGIS clients page and select by).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ObjectId {
    /// An integer primary-key attribute whose values fit 0..=2^31−1.
    Column(String),
    /// The GeoPackage's fid (its `INTEGER PRIMARY KEY`), when no such attribute exists; it is
    /// then served as a field of its own name.
    Fid,
    /// Neither fits: the FeatureServer computes a hash of each feature.
    Computed,
}

/// A layer as served.
#[derive(Debug, Clone)]
pub(crate) struct LayerState {
    /// The feature (or attribute) table of the cached GeoPackage.
    pub(crate) table: Arc<Table>,
    /// Connections to that GeoPackage, for queries.
    pub(crate) connections: Arc<ConnectionPool>,
    /// The `metadata` of every answer.
    pub(crate) metadata: Metadata,
    /// The OBJECTID.
    pub(crate) object_id: ObjectId,
    /// The cache entry's name (`{layer}_{version}_{fingerprint}`): changes with the data, so it
    /// tags answers for HTTP caches.
    pub(crate) entry: String,
    /// When the layer's version was last checked with Koordinates.
    pub(crate) checked: Instant,
    /// Equality indexes of its columns, built on demand.
    pub(crate) indexes: Arc<crate::index::Indexes>,
    /// Its R-tree in memory, built on demand.
    pub(crate) spatial: Arc<crate::spatial::SpatialSlot>,
}

impl LayerState {
    /// The schema queries are checked against: the fields, and the OBJECTID (an attribute, the
    /// fid served as a field, or a computed `OBJECTID`).
    pub(crate) fn schema(&self) -> Schema {
        let id_field = self.metadata.id_field.clone();
        Schema {
            fields: self.metadata.fields.clone(),
            object_id_is_attribute: id_field.is_some(),
            object_id: id_field.unwrap_or_else(|| COMPUTED_OBJECT_ID.to_owned()),
        }
    }

    /// The property the fid is written under, when the fid is the OBJECTID.
    pub(crate) fn fid_property(&self) -> Option<String> {
        (self.object_id == ObjectId::Fid).then(|| self.table.fid.clone())
    }

    /// The SQL of the OBJECTID column; `None` when it is computed.
    pub(crate) fn object_id_sql(&self) -> Option<String> {
        match &self.object_id {
            ObjectId::Column(name) => self.table.sql_column(name),
            ObjectId::Fid => Some(Table::quoted(&self.table.fid)),
            ObjectId::Computed => None,
        }
    }
}

/// The Koop field type of a Koordinates attribute type: integer/bigint → Integer,
/// double/float/numeric → Double, date/datetime → Date, string/boolean (and others) → String.
pub fn field_type(koordinates: &koop::koop_api::FieldType) -> FieldType {
    use koop::koop_api::FieldType as Koordinates;
    match koordinates {
        Koordinates::Integer | Koordinates::BigInteger => FieldType::Integer,
        Koordinates::Double | Koordinates::Float | Koordinates::Numeric => FieldType::Double,
        Koordinates::Date | Koordinates::DateTime => FieldType::Date,
        _ => FieldType::String,
    }
}

fn geometry_type(details: &LayerDetails) -> Option<GeometryType> {
    use koop::koop_api::GeometryType as Koordinates;
    match details.data.as_ref()?.geometry_type.as_ref()? {
        Koordinates::Point => Some(GeometryType::Point),
        Koordinates::MultiPoint => Some(GeometryType::MultiPoint),
        Koordinates::LineString => Some(GeometryType::LineString),
        Koordinates::MultiLineString => Some(GeometryType::MultiLineString),
        Koordinates::Polygon => Some(GeometryType::Polygon),
        Koordinates::MultiPolygon => Some(GeometryType::MultiPolygon),
        _ => None,
    }
}

/// The geometry type `gpkg_geometry_columns` declares, when it is one of GeoJSON's six (not
/// `GEOMETRY` or a curve type).
fn geopackage_geometry_type(table: &Table) -> Option<GeometryType> {
    Some(match table.geometry_type_name.as_deref()? {
        "POINT" => GeometryType::Point,
        "MULTIPOINT" => GeometryType::MultiPoint,
        "LINESTRING" => GeometryType::LineString,
        "MULTILINESTRING" => GeometryType::MultiLineString,
        "POLYGON" => GeometryType::Polygon,
        "MULTIPOLYGON" => GeometryType::MultiPolygon,
        _ => return None,
    })
}

/// `true` when every value of integer column `column` of `table` fits 0..=2^31−1.
fn fits_object_ids(table: &Table, connection: &rusqlite::Connection, column: &str) -> bool {
    table
        .integer_range(connection, column)
        .is_some_and(|(min, max)| min >= 0 && max <= i64::from(i32::MAX))
        || table.count == 0
}

/// What a layer's cached file holds, for [`load`].
pub(crate) struct Source<'a> {
    /// The GeoPackage.
    pub(crate) path: &'a Path,
    /// The cache entry's name.
    pub(crate) entry: &'a str,
    /// The title the manifest records.
    pub(crate) title: &'a str,
    /// The layer details, when online.
    pub(crate) details: Option<&'a LayerDetails>,
    /// `maxRecordCount`.
    pub(crate) max_record_count: u32,
}

/// Reads the GeoPackage's table and builds the metadata: fields and their types, geometry type
/// and primary key from the layer details when given, else from the GeoPackage; the OBJECTID
/// is the integer primary key, else the fid. Blocking.
pub(crate) fn load(source: &Source<'_>) -> Result<LayerState, ProviderError> {
    let table = gpkg::inspect(source.path)?;
    let connection = gpkg::open(source.path)?;
    let details = source.details;
    let mut fields: Vec<Field> = match details {
        Some(details) if !details.fields().is_empty() => details
            .fields()
            .iter()
            .filter(|field| field.field_type != koop::koop_api::FieldType::Geometry)
            .filter(|field| table.columns.iter().any(|column| column.name == field.name))
            .map(|field| Field::new(&field.name, field_type(&field.field_type)))
            .collect(),
        _ => table.fields(),
    };
    let primary_key = details
        .and_then(|details| details.data.as_ref())
        .and_then(|data| data.primary_key_fields.first().cloned())
        .filter(|key| {
            fields
                .iter()
                .any(|field| field.name == *key && field.field_type == FieldType::Integer)
        })
        .filter(|key| fits_object_ids(&table, &connection, key));
    let object_id = match primary_key {
        Some(key) => ObjectId::Column(key),
        None if table.fid != "rowid" && fits_object_ids(&table, &connection, &table.fid) => {
            ObjectId::Fid
        }
        None => ObjectId::Computed,
    };
    let id_field = match &object_id {
        ObjectId::Column(name) => Some(name.clone()),
        ObjectId::Fid => {
            fields.insert(0, Field::new(&table.fid, FieldType::Integer));
            Some(table.fid.clone())
        }
        ObjectId::Computed => None,
    };
    let extent = match (table.bounds, table.srs) {
        (Some(bounds), Some(srs)) => extent_4326(bounds, srs),
        _ => None,
    };
    let metadata = Metadata {
        name: Some(
            details.map_or_else(|| source.title.to_owned(), |details| details.title.clone()),
        ),
        description: details.and_then(|details| details.description.clone()),
        extent,
        display_field: fields
            .iter()
            .find(|field| matches!(field.name.as_str(), "name" | "title"))
            .map(|field| field.name.clone()),
        // Koordinates' details name it; when they do not (an older or partial answer), the
        // GeoPackage's own `gpkg_geometry_columns` does: a point layer is never a table.
        geometry_type: details
            .and_then(geometry_type)
            .or_else(|| geopackage_geometry_type(&table)),
        id_field,
        max_record_count: Some(source.max_record_count),
        exceeded_transfer_limit: false,
        time_info: None,
        fields,
    };
    Ok(LayerState {
        connections: Arc::new(ConnectionPool::new(&table.path)),
        table: Arc::new(table),
        metadata,
        object_id,
        entry: source.entry.to_owned(),
        checked: Instant::now(),
        indexes: Arc::default(),
        spatial: Arc::default(),
    })
}

/// `[min_x, min_y, max_x, max_y]` in EPSG `from` as the same box in EPSG `to`, from 16 points
/// along each edge (a box's edges curve when reprojected); `None` when it cannot be reprojected.
pub(crate) fn reproject_box(
    [min_x, min_y, max_x, max_y]: [f64; 4],
    from: Epsg,
    to: Epsg,
) -> Option<[f64; 4]> {
    const STEPS: u32 = 16;
    let reprojector = Reprojector::new(from, to).ok()?;
    if reprojector.is_identity() {
        return Some([min_x, min_y, max_x, max_y]);
    }
    let mut bounds = [
        f64::INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NEG_INFINITY,
    ];
    for step in 0..=STEPS {
        let t = f64::from(step) / f64::from(STEPS);
        let x = min_x + (max_x - min_x) * t;
        let y = min_y + (max_y - min_y) * t;
        for (px, py) in [(x, min_y), (x, max_y), (min_x, y), (max_x, y)] {
            let (qx, qy) = reprojector.position(px, py).ok()?;
            if !(qx.is_finite() && qy.is_finite()) {
                return None;
            }
            bounds = [
                bounds[0].min(qx),
                bounds[1].min(qy),
                bounds[2].max(qx),
                bounds[3].max(qy),
            ];
        }
    }
    Some(bounds)
}

/// The extent of `bounds` (in `srs`) in EPSG:4326: `[[xmin, ymin], [xmax, ymax]]`.
fn extent_4326(bounds: [f64; 4], srs: Epsg) -> Option<[[f64; 2]; 2]> {
    let [xmin, ymin, xmax, ymax] = reproject_box(bounds, srs, Epsg::WGS84)?;
    Some([[xmin, ymin], [xmax, ymax]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn koordinates_field_types_map_to_koop_types() {
        use koop::koop_api::FieldType as Koordinates;
        for (koordinates, koop) in [
            (Koordinates::Integer, FieldType::Integer),
            (Koordinates::BigInteger, FieldType::Integer),
            (Koordinates::Double, FieldType::Double),
            (Koordinates::Float, FieldType::Double),
            (Koordinates::Numeric, FieldType::Double),
            (Koordinates::Date, FieldType::Date),
            (Koordinates::DateTime, FieldType::Date),
            (Koordinates::String, FieldType::String),
            (Koordinates::Boolean, FieldType::String),
        ] {
            assert_eq!(field_type(&koordinates), koop, "{koordinates:?}");
        }
    }

    #[test]
    fn without_layer_details_the_geopackage_says_the_geometry_type() {
        // Offline (no details), or details whose geometry type is empty: a point layer must
        // still be a "Feature Layer" for QGIS and ArcGIS, a table still a table.
        let dir = tempfile::tempdir().expect("a temporary directory");
        for (content, expected) in [
            (
                koop_testkit::GeneratedContent::Points { count: 50 },
                Some(GeometryType::Point),
            ),
            (koop_testkit::GeneratedContent::Table { rows: 5 }, None),
        ] {
            let path = dir.path().join("layer.gpkg");
            content.generate(&path, 7).expect("a generated GeoPackage");
            let state = load(&Source {
                path: &path,
                entry: "1_1_x",
                title: "generated",
                details: None,
                max_record_count: 1000,
            })
            .expect("the layer loads");
            assert_eq!(state.metadata.geometry_type, expected, "{content:?}");
        }
    }

    #[test]
    fn extents_are_reprojected_to_degrees() {
        let extent = extent_4326(
            [1_090_000.0, 4_750_000.0, 2_090_000.0, 6_190_000.0],
            Epsg::NZTM2000,
        )
        .expect("extent");
        assert!(extent[0][0] > 165.0 && extent[1][0] < 180.0, "{extent:?}");
        assert!(extent[0][1] > -48.0 && extent[1][1] < -33.0, "{extent:?}");
        assert_eq!(
            extent_4326([0.0, 0.0, 1.0, 1.0], Epsg::WGS84),
            Some([[0.0, 0.0], [1.0, 1.0]])
        );
    }
}
