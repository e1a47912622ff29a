//! Reprojection between EPSG coordinate reference systems, with proj4rs (pure Rust; NZTM2000 →
//! WGS 84 agrees with PROJ to 1e-9 degrees).

use geo_types::{Coord, Geometry, LineString, Polygon};
use koop_types::Epsg;
use proj4rs::Proj;

/// The EPSG code of an Esri well-known id (the `wkid` of a spatial reference, as `inSR` and
/// `outSR` give it): Web Mercator's aliases 102100, 102113 and 900913 are EPSG:3857; every other
/// wkid below 32768 or in EPSG's range is its own EPSG code. `None` for 0.
pub fn epsg_of_wkid(wkid: u32) -> Option<Epsg> {
    match wkid {
        102_100 | 102_113 | 900_913 => Some(Epsg::WEB_MERCATOR),
        other => Epsg::new(other).ok(),
    }
}

/// Whether `code` is a geographic CRS (coordinates in degrees), per proj4rs's definition of it;
/// `false` for codes proj4rs does not know.
pub fn is_geographic(code: Epsg) -> bool {
    u16::try_from(code.code())
        .ok()
        .and_then(|number| Proj::from_epsg_code(number).ok())
        .is_some_and(|proj| proj.is_latlong())
}

/// Transforms coordinates from one EPSG CRS to another. Geographic coordinates are in degrees
/// (longitude, latitude), projected ones in the CRS's units.
pub struct Reprojector {
    source: Epsg,
    target: Epsg,
    projections: Option<(Proj, Proj)>,
}

impl std::fmt::Debug for Reprojector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reprojector")
            .field("source", &self.source)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// Why a reprojection is not possible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot reproject from {source_code} to {target_code}: {reason}")]
pub struct ReprojectError {
    /// The source CRS.
    pub source_code: Epsg,
    /// The target CRS.
    pub target_code: Epsg,
    /// What failed.
    pub reason: String,
}

impl Reprojector {
    /// From `source` to `target`.
    ///
    /// # Errors
    ///
    /// [`ReprojectError`] when either code has no definition in proj4rs.
    pub fn new(source: Epsg, target: Epsg) -> Result<Self, ReprojectError> {
        let error = |reason: String| ReprojectError {
            source_code: source,
            target_code: target,
            reason,
        };
        if source == target {
            return Ok(Self {
                source,
                target,
                projections: None,
            });
        }
        let proj = |code: Epsg| {
            u16::try_from(code.code())
                .map_err(|_| error(format!("{code} is unknown")))
                .and_then(|number| {
                    Proj::from_epsg_code(number).map_err(|cause| error(format!("{code}: {cause}")))
                })
        };
        Ok(Self {
            source,
            target,
            projections: Some((proj(source)?, proj(target)?)),
        })
    }

    /// The source CRS.
    pub fn source(&self) -> Epsg {
        self.source
    }

    /// The target CRS.
    pub fn target(&self) -> Epsg {
        self.target
    }

    /// Whether the target CRS is geographic (coordinates in degrees), as proj4rs defines it
    /// (see [`is_geographic`]).
    pub fn target_is_geographic(&self) -> bool {
        match &self.projections {
            Some((_, target)) => target.is_latlong(),
            None => is_geographic(self.target),
        }
    }

    /// `true` when nothing changes.
    pub fn is_identity(&self) -> bool {
        self.projections.is_none()
    }

    /// One position.
    ///
    /// # Errors
    ///
    /// [`ReprojectError`] for a position outside the projection's domain.
    pub fn position(&self, x: f64, y: f64) -> Result<(f64, f64), ReprojectError> {
        let Some((source, target)) = &self.projections else {
            return Ok((x, y));
        };
        let (x, y) = if source.is_latlong() {
            (x.to_radians(), y.to_radians())
        } else {
            (x, y)
        };
        let mut point = (x, y, 0.0);
        proj4rs::transform::transform(source, target, &mut point).map_err(|cause| {
            ReprojectError {
                source_code: self.source,
                target_code: self.target,
                reason: cause.to_string(),
            }
        })?;
        Ok(if target.is_latlong() {
            (point.0.to_degrees(), point.1.to_degrees())
        } else {
            (point.0, point.1)
        })
    }

    /// Every position of a geometry, in place.
    ///
    /// # Errors
    ///
    /// [`ReprojectError`] for a position outside the projection's domain.
    pub fn geometry(&self, geometry: &mut Geometry<f64>) -> Result<(), ReprojectError> {
        if self.is_identity() {
            return Ok(());
        }
        map_coords(geometry, &|coord: Coord<f64>| {
            let (x, y) = self.position(coord.x, coord.y)?;
            Ok(Coord { x, y })
        })
    }
}

type CoordFn<'a, E> = &'a dyn Fn(Coord<f64>) -> Result<Coord<f64>, E>;

fn map_line<E>(line: &mut LineString<f64>, f: CoordFn<'_, E>) -> Result<(), E> {
    for coord in &mut line.0 {
        *coord = f(*coord)?;
    }
    Ok(())
}

fn map_polygon<E>(polygon: &mut Polygon<f64>, f: CoordFn<'_, E>) -> Result<(), E> {
    let (mut exterior, mut interiors) =
        std::mem::replace(polygon, Polygon::new(LineString(Vec::new()), Vec::new())).into_inner();
    map_line(&mut exterior, f)?;
    for ring in &mut interiors {
        map_line(ring, f)?;
    }
    *polygon = Polygon::new(exterior, interiors);
    Ok(())
}

/// Applies `f` to every coordinate of `geometry`, in place. (geo's `MapCoordsInPlace` recurses
/// on `&f` through geometry collections, which the compiler cannot instantiate for closures.)
pub(crate) fn map_coords<E>(geometry: &mut Geometry<f64>, f: CoordFn<'_, E>) -> Result<(), E> {
    match geometry {
        Geometry::Point(point) => point.0 = f(point.0)?,
        Geometry::Line(line) => {
            line.start = f(line.start)?;
            line.end = f(line.end)?;
        }
        Geometry::LineString(line) => map_line(line, f)?,
        Geometry::Polygon(polygon) => map_polygon(polygon, f)?,
        Geometry::MultiPoint(points) => {
            for point in &mut points.0 {
                point.0 = f(point.0)?;
            }
        }
        Geometry::MultiLineString(lines) => {
            for line in &mut lines.0 {
                map_line(line, f)?;
            }
        }
        Geometry::MultiPolygon(polygons) => {
            for polygon in &mut polygons.0 {
                map_polygon(polygon, f)?;
            }
        }
        Geometry::GeometryCollection(collection) => {
            for member in &mut collection.0 {
                map_coords(member, f)?;
            }
        }
        Geometry::Rect(rect) => {
            let (min, max) = (f(rect.min())?, f(rect.max())?);
            *rect = geo_types::Rect::new(min, max);
        }
        Geometry::Triangle(triangle) => {
            *triangle =
                geo_types::Triangle::new(f(triangle.v1())?, f(triangle.v2())?, f(triangle.v3())?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nztm_to_wgs84_matches_proj() -> Result<(), ReprojectError> {
        // Reference: gdaltransform -s_srs EPSG:2193 -t_srs EPSG:4326 (PROJ 9).
        let reprojector = Reprojector::new(Epsg::NZTM2000, Epsg::WGS84)?;
        let (lon, lat) = reprojector.position(1_748_735.5, 5_427_916.7)?;
        assert!((lon - 174.776_199_312_642).abs() < 1e-9, "{lon}");
        assert!((lat - -41.286_498_018_996_4).abs() < 1e-9, "{lat}");
        let back = Reprojector::new(Epsg::WGS84, Epsg::NZTM2000)?.position(lon, lat)?;
        assert!(
            (back.0 - 1_748_735.5).abs() < 1e-3 && (back.1 - 5_427_916.7).abs() < 1e-3,
            "{back:?}"
        );
        let web_mercator = epsg_of_wkid(102_100).expect("an alias");
        assert!(Reprojector::new(web_mercator, Epsg::WEB_MERCATOR)?.is_identity());
        assert!(Reprojector::new(Epsg::WGS84, Epsg::new(999_999).expect("a code")).is_err());
        assert_eq!(epsg_of_wkid(0), None);
        Ok(())
    }
}
