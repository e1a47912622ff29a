//! `f=pbf`: query answers as Esri's FeatureCollection protocol buffer (`FeatureCollection.proto`
//! of the arcgis-pbf specification, package `esriPBuffer`, version "1"), the format the ArcGIS
//! Maps SDK for JavaScript and ArcGIS Pro ask for once `supportedQueryFormats` offers `PBF`.
//!
//! The messages are declared with prost's derives, field for field after the published `.proto`
//! (only those koop writes). Coordinates are integers on a grid: `quantizationParameters` names
//! it (`tolerance` a cell, counted from the extent's upper-left or lower-left corner); without
//! it the grid is `10^-geometryPrecision`, by default 1e-9° or 1e-4 m (the JSON answers'
//! precision), counted from the page's upper-left corner. Each part (ring, path) starts with
//! its first vertex on the grid and continues with deltas, as the specification's readers
//! (arcgis-pbf-parser, ArcGIS REST JS) decode them.

use axum::body::Bytes;
use geojson::Feature;
use koop_geoservices::Query;
use koop_provider::{Epsg, FieldType};
use prost::Message;

use crate::engine::{Answer, Engine};
use crate::esri::{EsriGeometry, Extent};
use crate::layer::Layer;
use crate::render::FeatureWriter;
use crate::response::GeoservicesError;

/// `FeatureCollectionPBuffer`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct FeatureCollection {
    /// `version`: "1".
    #[prost(string, tag = "1")]
    pub(crate) version: String,
    /// `queryResult`.
    #[prost(message, optional, tag = "2")]
    pub(crate) query_result: Option<QueryResult>,
}

/// `QueryResult`: one of its results.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct QueryResult {
    /// `Results`.
    #[prost(oneof = "Results", tags = "1, 2, 3, 4")]
    pub(crate) results: Option<Results>,
}

/// `QueryResult.Results`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum Results {
    /// `featureResult`.
    #[prost(message, tag = "1")]
    Features(FeatureResult),
    /// `countResult`.
    #[prost(message, tag = "2")]
    Count(CountResult),
    /// `idsResult`.
    #[prost(message, tag = "3")]
    Ids(ObjectIdsResult),
    /// `extentCountResult`.
    #[prost(message, tag = "4")]
    ExtentCount(ExtentCountResult),
}

/// `CountResult`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct CountResult {
    /// `count`.
    #[prost(uint64, tag = "1")]
    pub(crate) count: u64,
}

/// `ObjectIdsResult`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct ObjectIdsResult {
    /// `objectIdFieldName`.
    #[prost(string, tag = "1")]
    pub(crate) object_id_field_name: String,
    /// `objectIds`, packed.
    #[prost(uint64, repeated, tag = "3")]
    pub(crate) object_ids: Vec<u64>,
}

/// `ExtentCountResult`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct ExtentCountResult {
    /// `extent`.
    #[prost(message, optional, tag = "1")]
    pub(crate) extent: Option<Envelope>,
    /// `count`.
    #[prost(uint64, optional, tag = "2")]
    pub(crate) count: Option<u64>,
}

/// `SpatialReference`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct SpatialReference {
    /// `wkid`.
    #[prost(uint32, tag = "1")]
    pub(crate) wkid: u32,
    /// `lastestWkid` (sic, as the specification spells it).
    #[prost(uint32, tag = "2")]
    pub(crate) latest_wkid: u32,
}

/// `Envelope`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct Envelope {
    /// `XMin`.
    #[prost(double, tag = "1")]
    pub(crate) xmin: f64,
    /// `YMin`.
    #[prost(double, tag = "2")]
    pub(crate) ymin: f64,
    /// `XMax`.
    #[prost(double, tag = "3")]
    pub(crate) xmax: f64,
    /// `YMax`.
    #[prost(double, tag = "4")]
    pub(crate) ymax: f64,
    /// `SpatialReference`.
    #[prost(message, optional, tag = "5")]
    pub(crate) spatial_reference: Option<SpatialReference>,
}

/// `Field`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct Field {
    /// `name`.
    #[prost(string, tag = "1")]
    pub(crate) name: String,
    /// `fieldType` (`FieldType` enum).
    #[prost(int32, tag = "2")]
    pub(crate) kind: i32,
    /// `alias`.
    #[prost(string, tag = "3")]
    pub(crate) alias: String,
    /// `sqlType` (`SQLType` enum).
    #[prost(int32, tag = "4")]
    pub(crate) sql_type: i32,
}

/// `Value`: one attribute.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct Value {
    /// `value_type`.
    #[prost(oneof = "ValueType", tags = "1, 3, 4, 6, 7, 8, 10")]
    pub(crate) value_type: Option<ValueType>,
}

/// `Value.value_type`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum ValueType {
    /// `string_value`.
    #[prost(string, tag = "1")]
    String(String),
    /// `double_value`.
    #[prost(double, tag = "3")]
    Double(f64),
    /// `sint_value`.
    #[prost(sint32, tag = "4")]
    Sint(i32),
    /// `int64_value`.
    #[prost(int64, tag = "6")]
    Int64(i64),
    /// `uint64_value`.
    #[prost(uint64, tag = "7")]
    Uint64(u64),
    /// `sint64_value`.
    #[prost(sint64, tag = "8")]
    Sint64(i64),
    /// `null_value`.
    #[prost(bool, tag = "10")]
    Null(bool),
}

/// `Geometry`: `lengths` (vertices per part) and the parts' grid coordinates, each part's
/// first vertex whole and the rest as deltas.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct Geometry {
    /// `geometryType`.
    #[prost(int32, tag = "1")]
    pub(crate) kind: i32,
    /// `lengths`, packed.
    #[prost(uint32, repeated, tag = "2")]
    pub(crate) lengths: Vec<u32>,
    /// `coords`, packed.
    #[prost(sint64, repeated, tag = "3")]
    pub(crate) coords: Vec<i64>,
}

/// `Feature`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct PbfFeature {
    /// `attributes`, one per field of the result, in its order.
    #[prost(message, repeated, tag = "1")]
    pub(crate) attributes: Vec<Value>,
    /// `geometry` (of the `compressed_geometry` oneof).
    #[prost(message, optional, tag = "2")]
    pub(crate) geometry: Option<Geometry>,
}

/// `UniqueIdField`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct UniqueIdField {
    /// `name`.
    #[prost(string, tag = "1")]
    pub(crate) name: String,
    /// `isSystemMaintained`.
    #[prost(bool, tag = "2")]
    pub(crate) is_system_maintained: bool,
}

/// `Scale`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct Scale {
    /// `xScale`.
    #[prost(double, tag = "1")]
    pub(crate) x_scale: f64,
    /// `yScale`.
    #[prost(double, tag = "2")]
    pub(crate) y_scale: f64,
}

/// `Translate`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct Translate {
    /// `xTranslate`.
    #[prost(double, tag = "1")]
    pub(crate) x_translate: f64,
    /// `yTranslate`.
    #[prost(double, tag = "2")]
    pub(crate) y_translate: f64,
}

/// `Transform`: world = translate + grid × scale (y downwards from the origin when
/// `quantizeOriginPostion` is upperLeft, 0).
#[derive(Clone, PartialEq, Message)]
pub(crate) struct Transform {
    /// `quantizeOriginPostion` (sic): 0 upperLeft, 1 lowerLeft.
    #[prost(int32, tag = "1")]
    pub(crate) origin: i32,
    /// `scale`.
    #[prost(message, optional, tag = "2")]
    pub(crate) scale: Option<Scale>,
    /// `translate`.
    #[prost(message, optional, tag = "3")]
    pub(crate) translate: Option<Translate>,
}

/// `FeatureResult`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct FeatureResult {
    /// `objectIdFieldName`.
    #[prost(string, tag = "1")]
    pub(crate) object_id_field_name: String,
    /// `uniqueIdField`.
    #[prost(message, optional, tag = "2")]
    pub(crate) unique_id_field: Option<UniqueIdField>,
    /// `globalIdFieldName`.
    #[prost(string, tag = "3")]
    pub(crate) global_id_field_name: String,
    /// `geometryType`.
    #[prost(int32, tag = "7")]
    pub(crate) geometry_type: i32,
    /// `spatialReference`.
    #[prost(message, optional, tag = "8")]
    pub(crate) spatial_reference: Option<SpatialReference>,
    /// `exceededTransferLimit`.
    #[prost(bool, tag = "9")]
    pub(crate) exceeded_transfer_limit: bool,
    /// `hasZ`.
    #[prost(bool, tag = "10")]
    pub(crate) has_z: bool,
    /// `hasM`.
    #[prost(bool, tag = "11")]
    pub(crate) has_m: bool,
    /// `transform`.
    #[prost(message, optional, tag = "12")]
    pub(crate) transform: Option<Transform>,
    /// `fields`.
    #[prost(message, repeated, tag = "13")]
    pub(crate) fields: Vec<Field>,
    /// `features`.
    #[prost(message, repeated, tag = "15")]
    pub(crate) features: Vec<PbfFeature>,
}

/// `FieldType` values.
mod field_type {
    pub(super) const INTEGER: i32 = 1;
    pub(super) const DOUBLE: i32 = 3;
    pub(super) const STRING: i32 = 4;
    pub(super) const DATE: i32 = 5;
    pub(super) const OID: i32 = 6;
}

/// `SQLType` values.
mod sql_type {
    pub(super) const BIG_INT: i32 = 0;
    pub(super) const DOUBLE: i32 = 6;
    pub(super) const INTEGER: i32 = 10;
    pub(super) const TIMESTAMP: i32 = 21;
    pub(super) const NVARCHAR: i32 = 15;
}

/// `GeometryType` of a layer's `esriGeometry…` name; `esriGeometryTypeNone` (127) for tables.
fn geometry_type(name: Option<&str>) -> i32 {
    match name {
        Some("esriGeometryPoint") => 0,
        Some("esriGeometryMultipoint") => 1,
        Some("esriGeometryPolyline") => 2,
        Some("esriGeometryPolygon") => 3,
        _ => 127,
    }
}

fn spatial_reference(wkid: u32) -> SpatialReference {
    SpatialReference {
        wkid,
        latest_wkid: koop_geoservices::epsg_of_wkid(wkid).map_or(wkid, Epsg::code),
    }
}

fn envelope(extent: Option<Extent>, wkid: u32) -> Envelope {
    let extent = extent.unwrap_or(Extent {
        xmin: f64::NAN,
        ymin: f64::NAN,
        xmax: f64::NAN,
        ymax: f64::NAN,
    });
    Envelope {
        xmin: extent.xmin,
        ymin: extent.ymin,
        xmax: extent.xmax,
        ymax: extent.ymax,
        spatial_reference: Some(spatial_reference(wkid)),
    }
}

/// The grid of an answer's coordinates.
struct Grid {
    upper_left: bool,
    cell: f64,
    x0: f64,
    y0: f64,
    /// `mode=view`: a vertex in the same cell as the one before is left out.
    view: bool,
}

/// Largest grid index a coordinate may take: indices stay exact in `f64` and far from the
/// limits of `sint64`.
const MAX_INDEX: f64 = 4_503_599_627_370_496.0; // 2^52

impl Grid {
    /// From `quantizationParameters`, else `10^-decimals` cells (coarser only where the page
    /// spans more than 2^52 cells) from the upper-left corner of `geometries`.
    ///
    /// # Errors
    ///
    /// A message when the `tolerance` asked for would put a vertex more than 2^52 cells from
    /// the origin.
    fn new(
        query: &Query,
        decimals: u32,
        geometries: &[Option<EsriGeometry>],
    ) -> Result<Self, String> {
        let (mut xmin, mut ymin) = (f64::INFINITY, f64::INFINITY);
        let (mut xmax, mut ymax) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
        for geometry in geometries.iter().flatten() {
            geometry.for_each_position(|(x, y)| {
                xmin = xmin.min(x);
                ymin = ymin.min(y);
                xmax = xmax.max(x);
                ymax = ymax.max(y);
            });
        }
        let any = xmin <= xmax && ymin <= ymax;
        if let Some(quantization) = query.quantization {
            let (x0, y0) = match quantization.extent {
                Some((left, bottom, _, top)) => {
                    (left, if quantization.upper_left { top } else { bottom })
                }
                None => (0.0, 0.0),
            };
            let farthest = [xmin - x0, xmax - x0, ymin - y0, ymax - y0]
                .iter()
                .fold(0.0_f64, |far, offset| far.max(offset.abs()));
            if any && farthest / quantization.tolerance > MAX_INDEX {
                return Err(format!(
                    "quantizationParameters: a tolerance of {} puts vertices more than 2^52 cells from the origin; ask for a larger tolerance",
                    quantization.tolerance
                ));
            }
            return Ok(Self {
                upper_left: quantization.upper_left,
                cell: quantization.tolerance,
                x0,
                y0,
                view: quantization.view,
            });
        }
        if !any {
            return Ok(Self {
                upper_left: true,
                cell: 1.0,
                x0: 0.0,
                y0: 0.0,
                view: false,
            });
        }
        let span = (xmax - xmin).max(ymax - ymin);
        let cell = 10_f64
            .powi(-i32::try_from(decimals.min(17)).unwrap_or(17))
            .max(span / MAX_INDEX);
        // The origin on the grid, so that every vertex lands on a cell exactly.
        Ok(Self {
            upper_left: true,
            cell,
            x0: (xmin / cell).floor() * cell,
            y0: (ymax / cell).ceil() * cell,
            view: false,
        })
    }

    fn cell_of(&self, (x, y): (f64, f64)) -> (i64, i64) {
        let dy = if self.upper_left {
            self.y0 - y
        } else {
            y - self.y0
        };
        // `as` saturates: a vertex far off the grid cannot wrap around.
        #[allow(
            clippy::cast_possible_truncation,
            reason = "saturating float-to-int conversion is what is wanted"
        )]
        (
            ((x - self.x0) / self.cell).round() as i64,
            (dy / self.cell).round() as i64,
        )
    }

    fn transform(&self) -> Transform {
        Transform {
            origin: i32::from(!self.upper_left),
            scale: Some(Scale {
                x_scale: self.cell,
                y_scale: self.cell,
            }),
            translate: Some(Translate {
                x_translate: self.x0,
                y_translate: self.y0,
            }),
        }
    }

    /// Appends one part: its first vertex whole, then deltas. In `view` mode a vertex in the
    /// cell of the one before is left out (a zero delta draws nothing), except the last, so
    /// rings stay closed and lines keep their ends.
    fn part(&self, positions: &[(f64, f64)], geometry: &mut Geometry) {
        let mut previous: Option<(i64, i64)> = None;
        let mut written: u32 = 0;
        let last = positions.len().saturating_sub(1);
        for (index, &position) in positions.iter().enumerate() {
            let (x, y) = self.cell_of(position);
            match previous {
                None => geometry.coords.extend([x, y]),
                Some((px, py)) if self.view && (px, py) == (x, y) && index != last => continue,
                Some((px, py)) => geometry
                    .coords
                    .extend([x.saturating_sub(px), y.saturating_sub(py)]),
            }
            previous = Some((x, y));
            written = written.saturating_add(1);
        }
        geometry.lengths.push(written);
    }

    fn geometry(&self, esri: &EsriGeometry, geometry_type: i32) -> Geometry {
        let mut geometry = Geometry {
            kind: geometry_type,
            ..Geometry::default()
        };
        match esri {
            EsriGeometry::Point(position) => {
                let (x, y) = self.cell_of(*position);
                geometry.coords.extend([x, y]);
            }
            EsriGeometry::Points(points) => self.part(points, &mut geometry),
            EsriGeometry::Paths(parts) | EsriGeometry::Rings(parts) => {
                for part in parts {
                    self.part(part, &mut geometry);
                }
            }
        }
        geometry
    }
}

fn field_types(field_type: FieldType, object_id: bool) -> (i32, i32) {
    if object_id {
        return (field_type::OID, sql_type::INTEGER);
    }
    match field_type {
        FieldType::String => (field_type::STRING, sql_type::NVARCHAR),
        FieldType::Double => (field_type::DOUBLE, sql_type::DOUBLE),
        FieldType::Integer => (field_type::INTEGER, sql_type::BIG_INT),
        FieldType::Date => (field_type::DATE, sql_type::TIMESTAMP),
    }
}

/// One attribute as a `Value`, by the field's type: integers in `sint_value` when they fit 32
/// bits (else `sint64_value`), object ids in `uint64_value`, dates as epoch milliseconds.
fn value(json: Option<&serde_json::Value>, field_type: FieldType, object_id: bool) -> Value {
    use serde_json::Value as Json;
    let value_type = match (json, field_type) {
        (None | Some(Json::Null), _) => ValueType::Null(true),
        (Some(json), _) if object_id => match json.as_u64() {
            Some(id) => ValueType::Uint64(id),
            None => json
                .as_i64()
                .map_or(ValueType::Null(true), ValueType::Int64),
        },
        (Some(json), FieldType::Date) => match crate::render::esri_date(Some(json)) {
            Some(ms) => ValueType::Sint64(ms),
            None => ValueType::Null(true),
        },
        (Some(Json::Number(number)), FieldType::Integer) => match number.as_i64() {
            Some(integer) => {
                i32::try_from(integer).map_or(ValueType::Sint64(integer), ValueType::Sint)
            }
            None => number
                .as_f64()
                .map_or(ValueType::Null(true), ValueType::Double),
        },
        (Some(Json::Number(number)), _) => number
            .as_f64()
            .map_or(ValueType::Null(true), ValueType::Double),
        (Some(Json::String(text)), _) => ValueType::String(text.clone()),
        (Some(Json::Bool(flag)), _) => ValueType::String(flag.to_string()),
        (Some(other), _) => ValueType::String(other.to_string()),
    };
    Value {
        value_type: Some(value_type),
    }
}

/// Decimals of the default grid: `geometryPrecision`, else 9 in degrees and 4 otherwise.
fn decimals(query: &Query) -> u32 {
    query
        .precision
        .unwrap_or(if koop_geoservices::is_geographic(query.out_epsg) {
            9
        } else {
            4
        })
}

fn features(
    layer: &Layer,
    query: &Query,
    source_crs: Epsg,
    features: &[Feature],
    exceeded: bool,
) -> Result<FeatureResult, GeoservicesError> {
    let writer =
        FeatureWriter::new(layer, query, source_crs).map_err(|message| GeoservicesError {
            code: 500,
            message,
            details: Vec::new(),
        })?;
    let object_id = layer.schema.object_id.clone();
    let geometry_type = geometry_type(layer.geometry_type_name());
    let geometries: Vec<Option<EsriGeometry>> = if writer.returns_geometry() {
        features
            .iter()
            .map(|feature| writer.esri_geometry(feature))
            .collect()
    } else {
        Vec::new()
    };
    let grid =
        Grid::new(query, decimals(query), &geometries).map_err(GeoservicesError::bad_request)?;
    let fields = writer
        .names()
        .iter()
        .map(|(name, field_type, _)| {
            let (field_type, sql_type) = field_types(*field_type, *name == object_id);
            Field {
                name: name.clone(),
                kind: field_type,
                alias: name.clone(),
                sql_type,
            }
        })
        .collect();
    let encoded = features
        .iter()
        .enumerate()
        .map(|(index, feature)| PbfFeature {
            attributes: writer
                .names()
                .iter()
                .map(|(name, field_type, computed)| {
                    if *computed {
                        let id = Engine::object_id(layer, feature).map(serde_json::Value::from);
                        value(id.as_ref(), *field_type, true)
                    } else {
                        value(feature.property(name), *field_type, *name == object_id)
                    }
                })
                .collect(),
            geometry: geometries
                .get(index)
                .and_then(Option::as_ref)
                .map(|esri| grid.geometry(esri, geometry_type)),
        })
        .collect();
    Ok(FeatureResult {
        object_id_field_name: object_id.clone(),
        unique_id_field: Some(UniqueIdField {
            name: object_id,
            is_system_maintained: true,
        }),
        global_id_field_name: String::new(),
        geometry_type,
        spatial_reference: Some(spatial_reference(query.out_sr)),
        exceeded_transfer_limit: exceeded,
        has_z: false,
        has_m: false,
        transform: Some(grid.transform()),
        fields,
        features: encoded,
    })
}

/// The protocol buffer answering `query`.
///
/// # Errors
///
/// A 400 for what `f=pbf` cannot carry (statistics and distinct values: the specification has
/// no message for them) and for a `quantizationParameters` tolerance too fine for the page; a
/// 500 when the features' CRS cannot be reprojected to `outSR` (as the JSON answers).
pub(crate) fn encode(
    answer: Answer,
    layer: &Layer,
    query: &Query,
    source_crs: Epsg,
) -> Result<Bytes, GeoservicesError> {
    let results = match answer {
        Answer::Count(count) => Results::Count(CountResult { count }),
        Answer::CountExtent(count, extent) => Results::ExtentCount(ExtentCountResult {
            extent: Some(envelope(extent, query.out_sr)),
            count: Some(count),
        }),
        Answer::Extent(extent) => Results::ExtentCount(ExtentCountResult {
            extent: Some(envelope(extent, query.out_sr)),
            count: None,
        }),
        Answer::Ids(ids) => Results::Ids(ObjectIdsResult {
            object_id_field_name: layer.schema.object_id.clone(),
            object_ids: ids
                .into_iter()
                .filter_map(|id| u64::try_from(id).ok())
                .collect(),
        }),
        Answer::Statistics(..) | Answer::Distinct(..) => {
            return Err(GeoservicesError::bad_request(
                "outStatistics and returnDistinctValues are answered in f=json only",
            ));
        }
        Answer::Features {
            features: page,
            exceeded,
        } => Results::Features(features(layer, query, source_crs, &page, exceeded)?),
    };
    let collection = FeatureCollection {
        version: "1".to_owned(),
        query_result: Some(QueryResult {
            results: Some(results),
        }),
    };
    Ok(Bytes::from(collection.encode_to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_mode_leaves_out_vertices_that_share_a_cell_but_keeps_the_ends() {
        let ring = [
            (0.0, 0.0),
            (0.2, 0.1),
            (0.3, 0.0),
            (5.0, 0.0),
            (5.0, 5.0),
            (0.0, 0.0),
        ];
        let grid = |view| Grid {
            upper_left: true,
            cell: 1.0,
            x0: 0.0,
            y0: 10.0,
            view,
        };
        let mut edit = Geometry::default();
        grid(false).part(&ring, &mut edit);
        assert_eq!(edit.lengths, vec![6]);
        let mut view = Geometry::default();
        grid(true).part(&ring, &mut view);
        assert_eq!(view.lengths, vec![4], "{:?}", view.coords);
        // First vertex whole, then deltas; the closing vertex comes back to the first.
        assert_eq!(view.coords, vec![0, 10, 5, 0, 0, -5, -5, 5]);
    }
}
