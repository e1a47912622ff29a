//! Esri JSON: field definitions, spatial references, geometries and extents, as the ArcGIS REST
//! API ("Geometry objects", "Field data types") and the reference Koop responses show them.

use geojson::{GeometryValue, Position};
use koop_geoservices::{ReprojectError, Reprojector, epsg_of_wkid};
use koop_provider::{Epsg, FieldType, GeometryType};
use serde_json::{Map, Value as Json, json};

/// `esriFieldType…` of a Koop field type.
pub(crate) fn field_type_name(field_type: FieldType) -> &'static str {
    match field_type {
        FieldType::String => "esriFieldTypeString",
        FieldType::Double => "esriFieldTypeDouble",
        FieldType::Integer => "esriFieldTypeInteger",
        FieldType::Date => "esriFieldTypeDate",
    }
}

/// Where a field definition appears: layer descriptions add `editable` and `nullable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldStyle {
    /// In a query response.
    Query,
    /// In a layer description.
    LayerInfo,
}

/// A field definition: `{name, type, alias, sqlType, domain, defaultValue[, length]}`.
/// `field_type` `None` is the object id field (`esriFieldTypeOID`). Strings are 128 characters
/// long unless the provider says otherwise, dates 36, as Koop declares them.
pub(crate) fn field(
    name: &str,
    alias: Option<&str>,
    field_type: Option<FieldType>,
    length: Option<u32>,
    style: FieldStyle,
) -> Json {
    let mut definition = Map::new();
    definition.insert("name".into(), json!(name));
    definition.insert(
        "type".into(),
        json!(field_type.map_or("esriFieldTypeOID", field_type_name)),
    );
    definition.insert("alias".into(), json!(alias.unwrap_or(name)));
    definition.insert(
        "sqlType".into(),
        json!(if field_type.is_none() {
            "sqlTypeInteger"
        } else {
            "sqlTypeOther"
        }),
    );
    definition.insert("domain".into(), Json::Null);
    definition.insert("defaultValue".into(), Json::Null);
    match field_type {
        Some(FieldType::String) => {
            definition.insert("length".into(), json!(length.unwrap_or(128)));
        }
        Some(FieldType::Date) => {
            definition.insert("length".into(), json!(length.unwrap_or(36)));
        }
        _ => {}
    }
    if style == FieldStyle::LayerInfo {
        definition.insert("editable".into(), json!(false));
        definition.insert("nullable".into(), json!(false));
    }
    Json::Object(definition)
}

/// A statistic's field definition (`esriFieldTypeDouble`, `sqlTypeFloat`; a date for the
/// minimum or maximum of a date field).
pub(crate) fn statistic_field(name: &str, date: bool) -> Json {
    if date {
        return field(name, None, Some(FieldType::Date), None, FieldStyle::Query);
    }
    json!({
        "name": name,
        "type": "esriFieldTypeDouble",
        "sqlType": "sqlTypeFloat",
        "alias": name,
        "domain": null,
        "defaultValue": null,
    })
}

/// `{"wkid": asked, "latestWkid": current}`: 102100 is reported with its latest id 3857.
pub(crate) fn spatial_reference(wkid: u32) -> Json {
    json!({"wkid": wkid, "latestWkid": epsg_of_wkid(wkid).map_or(wkid, Epsg::code)})
}

/// `esriGeometry…` of a geometry type.
pub(crate) fn geometry_type_name(geometry_type: GeometryType) -> &'static str {
    match geometry_type {
        GeometryType::Point => "esriGeometryPoint",
        GeometryType::MultiPoint => "esriGeometryMultipoint",
        GeometryType::LineString | GeometryType::MultiLineString => "esriGeometryPolyline",
        GeometryType::Polygon | GeometryType::MultiPolygon => "esriGeometryPolygon",
    }
}

/// Decimals of output coordinates in a geographic CRS without `geometryPrecision`: 1e-9°.
const DEFAULT_DEGREE_DECIMALS: u32 = 9;
/// Decimals in a projected CRS (metres or feet) without `geometryPrecision`: 1e-4.
const DEFAULT_METRE_DECIMALS: u32 = 4;

/// Maps output coordinates: reprojection to `outSR`, then rounding to `geometryPrecision`
/// decimals, or by default to 9 decimals of a degree (about 0.1 mm) in a geographic CRS and 4
/// decimals (0.1 mm) in a projected one, so that `174.61343900000003` is written `174.613439`
/// and nothing a survey holds is lost. Z and M values are dropped (`hasZ` and `hasM` are false).
pub(crate) struct CoordinateMapper {
    reprojector: Reprojector,
    scale: Option<f64>,
    /// `maxAllowableOffset`, in target CRS units.
    generalize: Option<f64>,
}

impl CoordinateMapper {
    /// From `source` to `target`, rounded to `precision` decimals.
    pub(crate) fn new(
        source: Epsg,
        target: Epsg,
        precision: Option<u32>,
    ) -> Result<Self, ReprojectError> {
        let reprojector = Reprojector::new(source, target)?;
        let digits = precision.unwrap_or(if reprojector.target_is_geographic() {
            DEFAULT_DEGREE_DECIMALS
        } else {
            DEFAULT_METRE_DECIMALS
        });
        Ok(Self {
            reprojector,
            scale: Some(10_f64.powi(i32::try_from(digits.min(17)).unwrap_or(17))),
            generalize: None,
        })
    }

    /// Lines and rings of [`EsriGeometry::new`] generalized to stray at most `offset` target
    /// CRS units from the original (`maxAllowableOffset`).
    pub(crate) fn generalizing(mut self, offset: Option<f64>) -> Self {
        self.generalize = offset;
        self
    }

    /// `positions` generalized (Douglas–Peucker, `geo::Simplify`) when asked; a ring that would
    /// collapse below four positions keeps every vertex, so no ring vanishes or turns inside out.
    fn generalized(&self, positions: Vec<Xy>, ring: bool) -> Vec<Xy> {
        use geo::Simplify;
        let Some(offset) = self.generalize else {
            return positions;
        };
        if positions.len() <= if ring { 4 } else { 2 } {
            return positions;
        }
        let line: geo_types::LineString<f64> = positions.iter().copied().collect();
        let simplified: Vec<Xy> = line.simplify(offset).0.iter().map(|c| (c.x, c.y)).collect();
        if ring && simplified.len() < 4 {
            positions
        } else {
            simplified
        }
    }

    fn round(&self, value: f64) -> f64 {
        match self.scale {
            Some(scale) => (value * scale).round() / scale,
            None => value,
        }
    }

    /// One position; `None` when it is outside the target CRS's domain.
    pub(crate) fn map(&self, position: &[f64]) -> Option<(f64, f64)> {
        let (x, y) = match position {
            [x, y, ..] => (*x, *y),
            _ => return None,
        };
        let (x, y) = self.reprojector.position(x, y).ok()?;
        (x.is_finite() && y.is_finite()).then(|| (self.round(x), self.round(y)))
    }

    fn positions(&self, positions: &[Position]) -> Option<Vec<Position>> {
        positions
            .iter()
            .map(|position| {
                self.map(position.as_slice())
                    .map(|(x, y)| Position::from([x, y]))
            })
            .collect()
    }

    fn rings(&self, rings: &[Vec<Position>]) -> Option<Vec<Vec<Position>>> {
        rings.iter().map(|ring| self.positions(ring)).collect()
    }

    /// A GeoJSON geometry in the target CRS, rounded; `None` when a position cannot be
    /// reprojected.
    pub(crate) fn geometry(&self, value: &GeometryValue) -> Option<GeometryValue> {
        Some(match value {
            GeometryValue::Point { coordinates } => {
                let (x, y) = self.map(coordinates.as_slice())?;
                GeometryValue::new_point([x, y])
            }
            GeometryValue::MultiPoint { coordinates } => GeometryValue::MultiPoint {
                coordinates: self.positions(coordinates)?,
            },
            GeometryValue::LineString { coordinates } => GeometryValue::LineString {
                coordinates: self.positions(coordinates)?,
            },
            GeometryValue::MultiLineString { coordinates } => GeometryValue::MultiLineString {
                coordinates: self.rings(coordinates)?,
            },
            GeometryValue::Polygon { coordinates } => GeometryValue::Polygon {
                coordinates: self.rings(coordinates)?,
            },
            GeometryValue::MultiPolygon { coordinates } => GeometryValue::MultiPolygon {
                coordinates: coordinates
                    .iter()
                    .map(|polygon| self.rings(polygon))
                    .collect::<Option<_>>()?,
            },
            GeometryValue::GeometryCollection { geometries } => GeometryValue::GeometryCollection {
                geometries: geometries
                    .iter()
                    .map(|geometry| self.geometry(&geometry.value).map(geojson::Geometry::new))
                    .collect::<Option<_>>()?,
            },
        })
    }
}

/// A position `[x, y]`.
type Xy = (f64, f64);

/// An Esri JSON geometry (ArcGIS REST API, "Geometry objects"), in the output CRS: `{x, y}`,
/// `{points}`, `{paths}` or `{rings}`, rings oriented as Esri wants them (exteriors clockwise,
/// holes counterclockwise). Serializes straight into the response.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum EsriGeometry {
    /// `{x, y}`
    Point(Xy),
    /// `{points}`
    Points(Vec<Xy>),
    /// `{paths}`
    Paths(Vec<Vec<Xy>>),
    /// `{rings}`
    Rings(Vec<Vec<Xy>>),
}

impl EsriGeometry {
    /// Calls `visit` with every position, in order.
    pub(crate) fn for_each_position(&self, mut visit: impl FnMut(Xy)) {
        match self {
            Self::Point(position) => visit(*position),
            Self::Points(points) => points.iter().copied().for_each(visit),
            Self::Paths(parts) | Self::Rings(parts) => {
                parts.iter().flatten().copied().for_each(visit);
            }
        }
    }
}

impl serde::Serialize for EsriGeometry {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        match self {
            Self::Point((x, y)) => {
                map.serialize_entry("x", x)?;
                map.serialize_entry("y", y)?;
            }
            Self::Points(points) => map.serialize_entry("points", points)?,
            Self::Paths(paths) => map.serialize_entry("paths", paths)?,
            Self::Rings(rings) => map.serialize_entry("rings", rings)?,
        }
        map.end()
    }
}

/// Twice the signed area of a ring: positive when counterclockwise.
fn signed_area(ring: &[Xy]) -> f64 {
    ring.windows(2)
        .map(|pair| pair[0].0 * pair[1].1 - pair[1].0 * pair[0].1)
        .sum()
}

/// `ring`, reversed when it does not turn the way Esri wants.
fn oriented(mut ring: Vec<Xy>, exterior: bool) -> Vec<Xy> {
    let counterclockwise = signed_area(&ring) > 0.0;
    if counterclockwise == exterior {
        ring.reverse();
    }
    ring
}

impl EsriGeometry {
    /// A GeoJSON geometry mapped by `mapper` (to `outSR`, rounded); `None` for geometry
    /// collections (which have no Esri form) and positions that cannot be reprojected.
    pub(crate) fn new(value: &GeometryValue, mapper: &CoordinateMapper) -> Option<Self> {
        let line = |positions: &[Position]| -> Option<Vec<Xy>> {
            positions
                .iter()
                .map(|position| mapper.map(position.as_slice()))
                .collect()
        };
        let path = |positions: &[Position]| line(positions).map(|p| mapper.generalized(p, false));
        let polygon = |rings: &[Vec<Position>], out: &mut Vec<Vec<Xy>>| -> Option<()> {
            for (index, ring) in rings.iter().enumerate() {
                out.push(oriented(mapper.generalized(line(ring)?, true), index == 0));
            }
            Some(())
        };
        Some(match value {
            GeometryValue::Point { coordinates } => {
                Self::Point(mapper.map(coordinates.as_slice())?)
            }
            GeometryValue::MultiPoint { coordinates } => Self::Points(line(coordinates)?),
            GeometryValue::LineString { coordinates } => Self::Paths(vec![path(coordinates)?]),
            GeometryValue::MultiLineString { coordinates } => Self::Paths(
                coordinates
                    .iter()
                    .map(|positions| path(positions))
                    .collect::<Option<_>>()?,
            ),
            GeometryValue::Polygon { coordinates } => {
                let mut rings = Vec::with_capacity(coordinates.len());
                polygon(coordinates, &mut rings)?;
                Self::Rings(rings)
            }
            GeometryValue::MultiPolygon { coordinates } => {
                let mut rings = Vec::new();
                for rings_of_one in coordinates {
                    polygon(rings_of_one, &mut rings)?;
                }
                Self::Rings(rings)
            }
            GeometryValue::GeometryCollection { .. } => return None,
        })
    }
}

/// A running extent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Extent {
    pub(crate) xmin: f64,
    pub(crate) ymin: f64,
    pub(crate) xmax: f64,
    pub(crate) ymax: f64,
}

impl Extent {
    /// The extent `[[xmin, ymin], [xmax, ymax]]` of Koop metadata.
    pub(crate) fn from_metadata([[xmin, ymin], [xmax, ymax]]: [[f64; 2]; 2]) -> Self {
        Self {
            xmin,
            ymin,
            xmax,
            ymax,
        }
    }

    fn add(extent: &mut Option<Self>, x: f64, y: f64) {
        match extent {
            Some(extent) => {
                extent.xmin = extent.xmin.min(x);
                extent.ymin = extent.ymin.min(y);
                extent.xmax = extent.xmax.max(x);
                extent.ymax = extent.ymax.max(y);
            }
            None => {
                *extent = Some(Self {
                    xmin: x,
                    ymin: y,
                    xmax: x,
                    ymax: y,
                });
            }
        }
    }

    /// Grows `extent` by every position of `value`.
    pub(crate) fn include(extent: &mut Option<Self>, value: &GeometryValue) {
        let mut positions = |positions: &[Position]| {
            for position in positions {
                if let [x, y, ..] = position.as_slice() {
                    Self::add(extent, *x, *y);
                }
            }
        };
        match value {
            GeometryValue::Point { coordinates } => positions(std::slice::from_ref(coordinates)),
            GeometryValue::MultiPoint { coordinates }
            | GeometryValue::LineString { coordinates } => {
                positions(coordinates);
            }
            GeometryValue::MultiLineString { coordinates }
            | GeometryValue::Polygon { coordinates } => {
                for line in coordinates {
                    positions(line);
                }
            }
            GeometryValue::MultiPolygon { coordinates } => {
                for ring in coordinates.iter().flatten() {
                    positions(ring);
                }
            }
            GeometryValue::GeometryCollection { geometries } => {
                for geometry in geometries {
                    Self::include(extent, &geometry.value);
                }
            }
        }
    }

    /// `{xmin, ymin, xmax, ymax, spatialReference}`, as query responses give it.
    pub(crate) fn to_query_json(self, wkid: u32) -> Json {
        json!({
            "xmin": self.xmin,
            "ymin": self.ymin,
            "xmax": self.xmax,
            "ymax": self.ymax,
            "spatialReference": spatial_reference(wkid),
        })
    }

    /// `{xmin, xmax, ymin, ymax, spatialReference}`, as layer descriptions give it.
    pub(crate) fn to_layer_json(self, wkid: u32) -> Json {
        json!({
            "xmin": self.xmin,
            "xmax": self.xmax,
            "ymin": self.ymin,
            "ymax": self.ymax,
            "spatialReference": spatial_reference(wkid),
        })
    }

    /// `{spatialReference, xmin, xmax, ymin, ymax}`, as service descriptions give it.
    pub(crate) fn to_service_json(self, wkid: u32) -> Json {
        json!({
            "spatialReference": spatial_reference(wkid),
            "xmin": self.xmin,
            "xmax": self.xmax,
            "ymin": self.ymin,
            "ymax": self.ymax,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polygons_follow_esri_ring_order() -> Result<(), ReprojectError> {
        // A counterclockwise exterior with a clockwise hole, as RFC 7946 wants them.
        let exterior = [[0.0, 0.0], [4.0, 0.0], [4.0, 4.0], [0.0, 4.0], [0.0, 0.0]];
        let hole = [[1.0, 1.0], [1.0, 2.0], [2.0, 2.0], [2.0, 1.0], [1.0, 1.0]];
        let polygon = GeometryValue::Polygon {
            coordinates: vec![
                exterior.iter().copied().map(Position::from).collect(),
                hole.iter().copied().map(Position::from).collect(),
            ],
        };
        let identity = CoordinateMapper::new(Epsg::WGS84, Epsg::WGS84, None)?;
        let Some(EsriGeometry::Rings(rings)) = EsriGeometry::new(&polygon, &identity) else {
            panic!("a polygon has rings");
        };
        assert!(
            signed_area(&rings[0]) < 0.0,
            "exterior clockwise: {rings:?}"
        );
        assert!(
            signed_area(&rings[1]) > 0.0,
            "hole counterclockwise: {rings:?}"
        );
        let json = serde_json::to_value(EsriGeometry::Rings(rings)).expect("JSON");
        assert_eq!(json["rings"][0][1], json!([0.0, 4.0]));
        let point = GeometryValue::new_point([174.5, -41.25]);
        assert_eq!(
            serde_json::to_value(EsriGeometry::new(&point, &identity)).expect("JSON"),
            json!({"x": 174.5, "y": -41.25})
        );
        Ok(())
    }

    #[test]
    fn max_allowable_offset_generalizes_lines_and_keeps_small_rings() -> Result<(), ReprojectError>
    {
        // A line that wiggles by 0.01 around y = 0, and a ring smaller than the offset.
        let wiggle: Vec<Position> = (0..=100)
            .map(|i| Position::from([f64::from(i), if i % 2 == 0 { 0.0 } else { 0.01 }]))
            .collect();
        let line = GeometryValue::LineString {
            coordinates: wiggle.clone(),
        };
        let small = [[0.0, 0.0], [0.1, 0.0], [0.1, 0.1], [0.0, 0.1], [0.0, 0.0]];
        let polygon = GeometryValue::Polygon {
            coordinates: vec![small.iter().copied().map(Position::from).collect()],
        };
        let mapper = CoordinateMapper::new(Epsg::WGS84, Epsg::WGS84, None)?.generalizing(Some(0.5));
        let Some(EsriGeometry::Paths(paths)) = EsriGeometry::new(&line, &mapper) else {
            panic!("a line has paths");
        };
        assert_eq!(paths, vec![vec![(0.0, 0.0), (100.0, 0.0)]]);
        let Some(EsriGeometry::Rings(rings)) = EsriGeometry::new(&polygon, &mapper) else {
            panic!("a polygon has rings");
        };
        assert_eq!(rings[0].len(), 5, "a ring never collapses: {rings:?}");
        let exact = CoordinateMapper::new(Epsg::WGS84, Epsg::WGS84, None)?;
        let Some(EsriGeometry::Paths(paths)) = EsriGeometry::new(&line, &exact) else {
            panic!("a line has paths");
        };
        assert_eq!(paths[0].len(), wiggle.len());
        Ok(())
    }

    #[test]
    fn coordinates_are_reprojected_and_rounded() -> Result<(), ReprojectError> {
        let mapper = CoordinateMapper::new(Epsg::WGS84, Epsg::WEB_MERCATOR, Some(1))?;
        let (x, y) = mapper.map(&[174.7633, -36.8485]).expect("in range");
        // The reference Koop answer for Auckland in EPSG:3857.
        assert!((x - 19_454_561.6).abs() < 0.051, "{x}");
        assert!((y - -4_418_010.6).abs() < 0.051, "{y}");
        let mapper = CoordinateMapper::new(Epsg::WGS84, Epsg::WGS84, Some(1))?;
        assert_eq!(
            mapper.map(&[174.7633, -36.8485, 12.0]),
            Some((174.8, -36.8))
        );
        Ok(())
    }

    #[test]
    fn web_mercator_keeps_the_asked_wkid() {
        assert_eq!(
            spatial_reference(102_100),
            json!({"wkid": 102_100, "latestWkid": 3857})
        );
        assert_eq!(
            spatial_reference(2193),
            json!({"wkid": 2193, "latestWkid": 2193})
        );
    }
}
