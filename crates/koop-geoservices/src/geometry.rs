//! The `geometry` filter of a query: Esri JSON geometries (envelope, point, multipoint,
//! polyline, polygon) or `xmin,ymin,xmax,ymax`, in `inSR`, reprojected to EPSG:4326 and
//! related to features by `spatialRel`.

use geo::{BoundingRect, Contains, Intersects, Within};
use geo_types::{
    Coord, Geometry, LineString, MultiLineString, MultiPoint, MultiPolygon, Point, Polygon, Rect,
};

use koop_types::Epsg;

use crate::crs::Reprojector;

/// How features must relate to the filter geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpatialRel {
    /// `esriSpatialRelIntersects` (default): the feature intersects the filter geometry.
    Intersects,
    /// `esriSpatialRelContains`: the feature contains the filter geometry.
    Contains,
    /// `esriSpatialRelWithin`: the feature is within the filter geometry.
    Within,
    /// `esriSpatialRelEnvelopeIntersects`: the feature's envelope intersects the filter
    /// geometry's envelope.
    EnvelopeIntersects,
}

impl SpatialRel {
    /// From the `spatialRel` parameter.
    ///
    /// # Errors
    ///
    /// The supported values, when `text` is not one.
    pub fn parse(text: &str) -> Result<Self, String> {
        Ok(match text.trim() {
            "" | "esriSpatialRelIntersects" => Self::Intersects,
            "esriSpatialRelContains" => Self::Contains,
            "esriSpatialRelWithin" => Self::Within,
            "esriSpatialRelEnvelopeIntersects" => Self::EnvelopeIntersects,
            other => {
                return Err(format!(
                    "spatialRel {other:?} is not supported; use esriSpatialRelIntersects, esriSpatialRelContains, esriSpatialRelWithin or esriSpatialRelEnvelopeIntersects"
                ));
            }
        })
    }
}

/// A geometry filter, in EPSG:4326.
#[derive(Debug, Clone, PartialEq)]
pub struct GeometryFilter {
    /// The filter geometry, in EPSG:4326.
    pub geometry: Geometry<f64>,
    /// Its envelope, in EPSG:4326.
    pub envelope: Rect<f64>,
    /// The relation.
    pub relation: SpatialRel,
}

impl GeometryFilter {
    /// Parses the `geometry` parameter (Esri JSON or `xmin,ymin,xmax,ymax` / `x,y`) in `in_sr`
    /// (or the geometry's own `spatialReference`, else EPSG:4326).
    ///
    /// # Errors
    ///
    /// What is wrong with the geometry or its spatial reference.
    pub fn parse(
        text: &str,
        geometry_type: Option<&str>,
        in_sr: Option<u32>,
        relation: SpatialRel,
    ) -> Result<Self, String> {
        let text = text.trim();
        let (geometry, own_sr) = if text.starts_with('{') {
            let json: serde_json::Value = serde_json::from_str(text)
                .map_err(|error| format!("the geometry is not JSON: {error}"))?;
            let sr = json["spatialReference"]["latestWkid"]
                .as_u64()
                .or_else(|| json["spatialReference"]["wkid"].as_u64())
                .and_then(|code| u32::try_from(code).ok());
            (esri_geometry(&json)?, sr)
        } else {
            let numbers: Vec<f64> = text
                .split(',')
                .map(|part| part.trim().parse::<f64>())
                .collect::<Result<_, _>>()
                .map_err(|_| {
                    format!("the geometry {text:?} is neither JSON nor comma-separated numbers")
                })?;
            let geometry = match (numbers.as_slice(), geometry_type) {
                ([x, y], _) | ([x, y, ..], Some("esriGeometryPoint")) => {
                    Geometry::Point(Point::new(*x, *y))
                }
                ([xmin, ymin, xmax, ymax], _) => Geometry::Rect(Rect::new(
                    Coord { x: *xmin, y: *ymin },
                    Coord { x: *xmax, y: *ymax },
                )),
                _ => {
                    return Err(format!(
                        "the geometry {text:?} needs 2 (x,y) or 4 (xmin,ymin,xmax,ymax) numbers"
                    ));
                }
            };
            (geometry, None)
        };
        let wkid = in_sr.or(own_sr).unwrap_or(4326);
        let source = crate::crs::epsg_of_wkid(wkid)
            .ok_or_else(|| format!("{wkid} is not a spatial reference koop knows"))?;
        let mut geometry = match geometry {
            Geometry::Rect(rect) => Geometry::Polygon(rect.to_polygon()),
            other => other,
        };
        Reprojector::new(source, Epsg::WGS84)
            .and_then(|reprojector| reprojector.geometry(&mut geometry))
            .map_err(|error| error.to_string())?;
        let envelope = geometry
            .bounding_rect()
            .ok_or_else(|| "the geometry is empty".to_owned())?;
        Ok(Self {
            geometry,
            envelope,
            relation,
        })
    }

    /// Whether a feature geometry (EPSG:4326) satisfies the filter.
    pub fn matches(&self, feature: &Geometry<f64>) -> bool {
        match self.relation {
            SpatialRel::Intersects => feature.intersects(&self.geometry),
            SpatialRel::Contains => feature.contains(&self.geometry),
            SpatialRel::Within => feature.is_within(&self.geometry),
            SpatialRel::EnvelopeIntersects => feature
                .bounding_rect()
                .is_some_and(|envelope| envelope.intersects(&self.envelope)),
        }
    }
}

fn positions(value: &serde_json::Value, what: &str) -> Result<Vec<Coord<f64>>, String> {
    value
        .as_array()
        .ok_or_else(|| format!("{what} must be an array of [x, y]"))?
        .iter()
        .map(
            |position| match (position[0].as_f64(), position[1].as_f64()) {
                (Some(x), Some(y)) => Ok(Coord { x, y }),
                _ => Err(format!("{what} holds a position that is not [x, y]")),
            },
        )
        .collect()
}

/// Signed area ×2 of a ring: positive when counterclockwise.
pub(crate) fn ring_area(ring: &[Coord<f64>]) -> f64 {
    ring.windows(2)
        .map(|pair| pair[0].x * pair[1].y - pair[1].x * pair[0].y)
        .sum()
}

/// An Esri JSON geometry as geo-types: `{xmin,…}`, `{x,y}`, `{points}`, `{paths}`, `{rings}`.
/// Rings follow Esri's rule: clockwise rings are exteriors, counterclockwise ones holes.
///
/// # Errors
///
/// A message saying which member is missing or malformed.
pub fn esri_geometry(json: &serde_json::Value) -> Result<Geometry<f64>, String> {
    if let (Some(xmin), Some(ymin), Some(xmax), Some(ymax)) = (
        json["xmin"].as_f64(),
        json["ymin"].as_f64(),
        json["xmax"].as_f64(),
        json["ymax"].as_f64(),
    ) {
        return Ok(Geometry::Rect(Rect::new(
            Coord { x: xmin, y: ymin },
            Coord { x: xmax, y: ymax },
        )));
    }
    if let (Some(x), Some(y)) = (json["x"].as_f64(), json["y"].as_f64()) {
        return Ok(Geometry::Point(Point::new(x, y)));
    }
    if json.get("points").is_some() {
        let points = positions(&json["points"], "points")?;
        return Ok(Geometry::MultiPoint(MultiPoint(
            points.into_iter().map(Point::from).collect(),
        )));
    }
    if let Some(paths) = json["paths"].as_array() {
        let lines = paths
            .iter()
            .map(|path| positions(path, "a path").map(LineString))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Geometry::MultiLineString(MultiLineString(lines)));
    }
    if let Some(rings) = json["rings"].as_array() {
        let mut polygons: Vec<Polygon<f64>> = Vec::new();
        for ring in rings {
            let ring = positions(ring, "a ring")?;
            if ring.len() < 4 {
                return Err("a ring needs at least 4 positions".to_owned());
            }
            let clockwise = ring_area(&ring) < 0.0;
            match polygons.last_mut() {
                Some(polygon) if !clockwise => polygon.interiors_push(LineString(ring)),
                _ => polygons.push(Polygon::new(LineString(ring), Vec::new())),
            }
        }
        return Ok(match polygons.len() {
            1 => Geometry::Polygon(polygons.remove(0)),
            _ => Geometry::MultiPolygon(MultiPolygon(polygons)),
        });
    }
    Err("the geometry is none of envelope, point, multipoint, polyline or polygon".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_in_json_and_comma_form_match_points_inside() {
        let json =
            r#"{"xmin":174,"ymin":-42,"xmax":176,"ymax":-36,"spatialReference":{"wkid":4326}}"#;
        for filter in [
            GeometryFilter::parse(
                json,
                Some("esriGeometryEnvelope"),
                None,
                SpatialRel::Intersects,
            ),
            GeometryFilter::parse("174,-42,176,-36", None, None, SpatialRel::Intersects),
        ] {
            let filter = filter.expect("an envelope");
            assert!(filter.matches(&Geometry::Point(Point::new(174.7633, -36.8485))));
            assert!(!filter.matches(&Geometry::Point(Point::new(172.6362, -43.5321))));
        }
    }

    #[test]
    fn an_envelope_in_web_mercator_is_reprojected() {
        let json = r#"{"xmin":19369000,"ymin":-5160000,"xmax":19595000,"ymax":-4300000,"spatialReference":{"wkid":3857}}"#;
        let filter =
            GeometryFilter::parse(json, None, Some(3857), SpatialRel::Intersects).expect("3857");
        assert!(filter.matches(&Geometry::Point(Point::new(174.7762, -41.2865))));
        assert!(!filter.matches(&Geometry::Point(Point::new(170.5028, -45.8788))));
    }

    #[test]
    fn polygons_and_relations() {
        let square = r#"{"rings":[[[0,0],[0,10],[10,10],[10,0],[0,0]]]}"#;
        let within = GeometryFilter::parse(square, None, None, SpatialRel::Within).expect("rings");
        let inner = Geometry::Polygon(Polygon::new(
            LineString::from(vec![(1.0, 1.0), (2.0, 1.0), (2.0, 2.0), (1.0, 1.0)]),
            vec![],
        ));
        assert!(within.matches(&inner));
        let contains = GeometryFilter::parse(r#"{"x":5,"y":5}"#, None, None, SpatialRel::Contains)
            .expect("point");
        let big = Geometry::Polygon(Polygon::new(
            LineString::from(vec![
                (0.0, 0.0),
                (10.0, 0.0),
                (10.0, 10.0),
                (0.0, 10.0),
                (0.0, 0.0),
            ]),
            vec![],
        ));
        assert!(contains.matches(&big));
        assert!(GeometryFilter::parse("{nope", None, None, SpatialRel::Intersects).is_err());
        assert!(GeometryFilter::parse("1,2,3", None, None, SpatialRel::Intersects).is_err());
        assert!(SpatialRel::parse("esriSpatialRelTouches").is_err());
    }
}
