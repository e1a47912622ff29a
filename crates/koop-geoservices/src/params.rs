//! The parameters of a Geoservices `query` request (ArcGIS REST API, "Query (Feature
//! Service/Layer)").

use std::collections::BTreeMap;

use super::filter::{Predicate, WhereField, WhereLimits};
use super::geometry::{GeometryFilter, SpatialRel};
use koop_provider::{Field, FieldType, ProviderError};
use koop_types::Epsg;

use crate::crs::{Reprojector, epsg_of_wkid};

/// What a query must return of the attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutFields {
    /// `*` (the default): every field.
    All,
    /// The named fields, as in the data.
    Fields(Vec<String>),
}

/// The response format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `f=json` (default): Esri JSON.
    Json,
    /// `f=pjson`: Esri JSON, indented.
    PrettyJson,
    /// `f=geojson`.
    GeoJson,
    /// `f=pbf`: Esri's FeatureCollection protocol buffer (arcgis-pbf specification).
    Pbf,
}

/// `quantizationParameters` (ArcGIS REST API, "Query (Feature Service/Layer)"): the integer grid
/// coordinates are written on, `tolerance` units of the output CRS a cell, counted from the
/// `extent`'s upper-left (or lower-left) corner. koop honours it in `f=pbf` answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantization {
    /// `originPosition`: `upperLeft` (the default) counts y downwards from `ymax`.
    pub upper_left: bool,
    /// `tolerance`: the size of one grid cell, in output CRS units (> 0).
    pub tolerance: f64,
    /// `extent`: `(xmin, ymin, xmax, ymax)` in the output CRS, when given.
    pub extent: Option<(f64, f64, f64, f64)>,
    /// `mode`: `view` (what the ArcGIS Maps SDK sends to draw) drops the vertices of a line
    /// or ring that fall in the same cell as the one before; `edit` (the default) keeps every
    /// vertex.
    pub view: bool,
}

/// Longest `quantizationParameters` read, in bytes.
const MAX_QUANTIZATION_BYTES: usize = 4096;

/// Parses `quantizationParameters`, e.g. `{"mode":"view","originPosition":"upperLeft",
/// "tolerance":1.2,"extent":{"xmin":…,"ymin":…,"xmax":…,"ymax":…}}`.
fn quantization(params: &BTreeMap<String, String>) -> Result<Option<Quantization>, QueryError> {
    let Some(text) = lookup(params, "quantizationParameters").filter(|text| !text.is_empty())
    else {
        return Ok(None);
    };
    let invalid = |why: &str| QueryError {
        message: "Invalid \"quantizationParameters\"".to_owned(),
        details: vec![why.to_owned()],
    };
    if text.len() > MAX_QUANTIZATION_BYTES {
        return Err(invalid("longer than 4096 bytes"));
    }
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|_| invalid("not a JSON object"))?;
    let upper_left = match json
        .get("originPosition")
        .and_then(serde_json::Value::as_str)
    {
        None | Some("upperLeft") => true,
        Some("lowerLeft") => false,
        Some(_) => return Err(invalid("originPosition must be upperLeft or lowerLeft")),
    };
    let view = match json.get("mode").and_then(serde_json::Value::as_str) {
        Some("view") => true,
        None | Some("edit") => false,
        Some(_) => return Err(invalid("mode must be view or edit")),
    };
    let tolerance = json
        .get("tolerance")
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(1.0);
    if !(tolerance.is_finite() && tolerance > 0.0) {
        return Err(invalid("tolerance must be a positive number"));
    }
    let extent = match json.get("extent") {
        None | Some(serde_json::Value::Null) => None,
        Some(extent) => {
            let side = |name: &str| extent.get(name).and_then(serde_json::Value::as_f64);
            match (side("xmin"), side("ymin"), side("xmax"), side("ymax")) {
                (Some(xmin), Some(ymin), Some(xmax), Some(ymax))
                    if [xmin, ymin, xmax, ymax].iter().all(|v| v.is_finite()) =>
                {
                    Some((xmin, ymin, xmax, ymax))
                }
                _ => return Err(invalid("extent needs finite xmin, ymin, xmax and ymax")),
            }
        }
    };
    Ok(Some(Quantization {
        upper_left,
        tolerance,
        extent,
        view,
    }))
}

/// `maxAllowableOffset`: the largest distance, in output CRS units, a generalized line or ring
/// may stray from the original; `0` or absent keeps every vertex.
fn max_allowable_offset(params: &BTreeMap<String, String>) -> Result<Option<f64>, QueryError> {
    let Some(text) = lookup(params, "maxAllowableOffset").filter(|text| !text.trim().is_empty())
    else {
        return Ok(None);
    };
    match text.trim().parse::<f64>() {
        Ok(offset) if offset.is_finite() && offset >= 0.0 => Ok((offset > 0.0).then_some(offset)),
        _ => Err(QueryError::new(
            "\"maxAllowableOffset\" must be a non-negative number",
        )),
    }
}

/// A statistic of `outStatistics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatisticType {
    /// Non-null values.
    Count,
    /// Sum.
    Sum,
    /// Minimum.
    Min,
    /// Maximum.
    Max,
    /// Mean.
    Avg,
    /// Sample standard deviation.
    Stddev,
    /// Sample variance.
    Var,
}

/// One entry of `outStatistics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statistic {
    /// Which statistic.
    pub kind: StatisticType,
    /// The field it is computed on, as in the data.
    pub field: String,
    /// The field's type.
    pub field_type: FieldType,
    /// The name of the result.
    pub out_name: String,
}

/// The name of the object id a FeatureServer computes for layers without an `idField`.
pub const COMPUTED_OBJECT_ID: &str = "OBJECTID";

/// The fields a query can name: the layer's, and its object id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    /// The layer's fields.
    pub fields: Vec<Field>,
    /// The object id field's name: the provider's `idField`, or [`COMPUTED_OBJECT_ID`].
    pub object_id: String,
    /// `true` when the object id is one of `fields` (the provider's `idField`); `false` when it
    /// is computed (a hash of the feature).
    pub object_id_is_attribute: bool,
}

impl Schema {
    /// The fields the `where` clause may name: the layer's and, when computed, the object id.
    pub fn where_fields(&self) -> Vec<WhereField> {
        let mut fields: Vec<WhereField> = self
            .fields
            .iter()
            .map(|field| WhereField {
                name: field.name.clone(),
                field_type: field.field_type,
            })
            .collect();
        if !self.object_id_is_attribute {
            fields.push(WhereField {
                name: self.object_id.clone(),
                field_type: FieldType::Integer,
            });
        }
        fields
    }

    /// The field named `name` (any case), or the object id.
    pub fn field(&self, name: &str) -> Option<(String, FieldType)> {
        self.where_fields()
            .into_iter()
            .find(|field| field.name == name)
            .or_else(|| {
                self.where_fields()
                    .into_iter()
                    .find(|field| field.name.eq_ignore_ascii_case(name))
            })
            .map(|field| (field.name, field.field_type))
    }
}

/// How large a query's parameters may be: what one request may make the server parse, hold and
/// compute. Past a limit the request is a [`QueryError`] naming the parameter and the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    /// `where` ([`WhereLimits`]: 64 KiB, 8,192 terms, nesting 32).
    pub where_clause: WhereLimits,
    /// Most `objectIds` (default 100,000) and their longest text (default 2 MiB).
    pub max_object_ids: usize,
    /// Longest `objectIds` text, in bytes.
    pub max_object_ids_bytes: usize,
    /// Longest `geometry` text (default 1 MiB) and most positions in it (default 100,000).
    pub max_geometry_bytes: usize,
    /// Most positions in the `geometry` filter.
    pub max_geometry_positions: usize,
    /// Most `outStatistics` entries (default 32) and their longest text (default 64 KiB).
    pub max_statistics: usize,
    /// Longest `outStatistics` text, in bytes.
    pub max_statistics_bytes: usize,
    /// Most fields of `orderByFields` and of `groupByFieldsForStatistics` (default 16 each).
    pub max_sort_fields: usize,
    /// Most fields of `outFields` (default 1,024).
    pub max_out_fields: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            where_clause: WhereLimits::default(),
            max_object_ids: 100_000,
            max_object_ids_bytes: 2 << 20,
            max_geometry_bytes: 1 << 20,
            max_geometry_positions: 100_000,
            max_statistics: 32,
            max_statistics_bytes: 64 * 1024,
            max_sort_fields: 16,
            max_out_fields: 1024,
        }
    }
}

/// The error for a parameter longer than its limit.
fn too_long(parameter: &str, length: usize, limit: usize, unit: &str) -> QueryError {
    QueryError::new(format!(
        "\"{parameter}\" has {length} {unit}; this server accepts at most {limit}"
    ))
}

/// A query parameter that is not acceptable: Geoservices error 400 with `message` and `details`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct QueryError {
    /// The error message.
    pub message: String,
    /// Further details.
    pub details: Vec<String>,
}

impl QueryError {
    fn new(message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            details: vec![message.clone()],
            message,
        }
    }
}

impl From<QueryError> for ProviderError {
    /// [`ProviderError::InvalidQuery`] with the same message and details.
    fn from(error: QueryError) -> Self {
        ProviderError::invalid_query(error.message, error.details)
    }
}

/// A parsed, checked `query` request.
#[allow(
    clippy::struct_excessive_bools,
    reason = "one field per boolean parameter of the Geoservices query"
)]
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// `where`, parsed.
    pub predicate: Predicate,
    /// `where`, as given.
    pub where_text: String,
    /// `objectIds`.
    pub object_ids: Option<Vec<i64>>,
    /// `geometry` with `geometryType`, `inSR` and `spatialRel`.
    pub geometry: Option<GeometryFilter>,
    /// `outFields`.
    pub out_fields: OutFields,
    /// `returnGeometry` (default true).
    pub return_geometry: bool,
    /// `orderByFields`: `(field, descending)`.
    pub order_by: Vec<(String, bool)>,
    /// `resultOffset` (default 0).
    pub offset: u64,
    /// `resultRecordCount`, as asked.
    pub limit: Option<u64>,
    /// `returnCountOnly`.
    pub count_only: bool,
    /// `returnIdsOnly`.
    pub ids_only: bool,
    /// `returnExtentOnly`.
    pub extent_only: bool,
    /// `returnDistinctValues`.
    pub distinct: bool,
    /// `outStatistics`.
    pub statistics: Vec<Statistic>,
    /// `groupByFieldsForStatistics`.
    pub group_by: Vec<String>,
    /// `outSR` as asked: the well-known id responses echo (e.g. 102100), 4326 by default.
    pub out_sr: u32,
    /// The EPSG code of `outSR` (102100 is EPSG:3857).
    pub out_epsg: Epsg,
    /// `geometryPrecision`: decimals of output coordinates.
    pub precision: Option<u32>,
    /// `f`.
    pub format: Format,
    /// `callback`: JSONP function name.
    pub callback: Option<String>,
    /// `quantizationParameters`, honoured by `f=pbf`.
    pub quantization: Option<Quantization>,
    /// `maxAllowableOffset`, in output CRS units: lines and rings are generalized
    /// (Douglas–Peucker) to stay within it; `None` keeps every vertex.
    pub max_allowable_offset: Option<f64>,
}

fn lookup<'a>(params: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    params
        .get(name)
        .or_else(|| {
            params
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value)
        })
        .map(String::as_str)
        .filter(|value| !value.trim().is_empty())
}

fn boolean(
    params: &BTreeMap<String, String>,
    name: &str,
    default: bool,
) -> Result<bool, QueryError> {
    match lookup(params, name).map(|value| value.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(value) if value == "true" || value == "1" => Ok(true),
        Some(value) if value == "false" || value == "0" => Ok(false),
        Some(_) => Err(QueryError::new(format!("\"{name}\" must be true or false"))),
    }
}

fn number(params: &BTreeMap<String, String>, name: &str) -> Result<Option<u64>, QueryError> {
    lookup(params, name)
        .map(|value| {
            value
                .trim()
                .parse::<u64>()
                .map_err(|_| QueryError::new(format!("\"{name}\" must be a number")))
        })
        .transpose()
}

/// The EPSG code of a spatial reference parameter: `4326`, or `{"wkid": 3857}`.
fn spatial_reference(
    params: &BTreeMap<String, String>,
    name: &str,
) -> Result<Option<u32>, QueryError> {
    let Some(value) = lookup(params, name) else {
        return Ok(None);
    };
    let value = value.trim();
    let code = if value.starts_with('{') {
        let json: serde_json::Value = serde_json::from_str(value)
            .map_err(|_| QueryError::new(format!("\"{name}\" is not a spatial reference")))?;
        json["wkid"]
            .as_u64()
            .or_else(|| json["latestWkid"].as_u64())
    } else {
        value.parse::<u64>().ok()
    };
    code.and_then(|code| u32::try_from(code).ok())
        .map(Some)
        .ok_or_else(|| QueryError::new(format!("\"{name}\" must be a well-known id such as 4326")))
}

fn field_list(
    schema: &Schema,
    text: &str,
    parameter: &str,
    limit: usize,
) -> Result<Vec<String>, QueryError> {
    let count = text
        .split(',')
        .filter(|name| !name.trim().is_empty())
        .count();
    if count > limit {
        return Err(too_long(parameter, count, limit, "fields"));
    }
    text.split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| {
            schema.field(name).map(|(name, _)| name).ok_or_else(|| {
                QueryError::new(format!(
                    "\"{parameter}\" names {name:?}, which is not a field"
                ))
            })
        })
        .collect()
}

fn statistics(
    schema: &Schema,
    text: &str,
    limits: &QueryLimits,
) -> Result<Vec<Statistic>, QueryError> {
    if text.len() > limits.max_statistics_bytes {
        return Err(too_long(
            "outStatistics",
            text.len(),
            limits.max_statistics_bytes,
            "bytes",
        ));
    }
    let json: serde_json::Value = serde_json::from_str(text)
        .map_err(|_| QueryError::new("\"outStatistics\" must be a JSON array"))?;
    let entries = json
        .as_array()
        .ok_or_else(|| QueryError::new("\"outStatistics\" must be a JSON array"))?;
    if entries.len() > limits.max_statistics {
        return Err(too_long(
            "outStatistics",
            entries.len(),
            limits.max_statistics,
            "statistics",
        ));
    }
    entries
        .iter()
        .map(|entry| {
            let kind = match entry["statisticType"].as_str().unwrap_or_default().to_ascii_lowercase().as_str() {
                "count" => StatisticType::Count,
                "sum" => StatisticType::Sum,
                "min" => StatisticType::Min,
                "max" => StatisticType::Max,
                "avg" => StatisticType::Avg,
                "stddev" => StatisticType::Stddev,
                "var" => StatisticType::Var,
                other => {
                    return Err(QueryError::new(format!(
                        "statisticType {other:?} is not one of count, sum, min, max, avg, stddev, var"
                    )));
                }
            };
            let on = entry["onStatisticField"].as_str().unwrap_or_default();
            let (field, field_type) = schema
                .field(on)
                .ok_or_else(|| QueryError::new(format!("onStatisticField {on:?} is not a field")))?;
            if matches!(kind, StatisticType::Sum | StatisticType::Avg | StatisticType::Stddev | StatisticType::Var)
                && !matches!(field_type, FieldType::Integer | FieldType::Double)
            {
                return Err(QueryError::new(format!("a {kind:?} of {field:?} needs a numeric field")));
            }
            let out_name = entry["outStatisticFieldName"]
                .as_str()
                .filter(|name| !name.is_empty())
                .map_or_else(|| format!("{}_{field}", format!("{kind:?}").to_ascii_lowercase()), str::to_owned);
            Ok(Statistic {
                kind,
                field,
                field_type,
                out_name,
            })
        })
        .collect()
}

/// `geometry` with `geometryType`, `inSR` and `spatialRel`, within the limits.
fn geometry_filter(
    params: &BTreeMap<String, String>,
    in_sr: Option<u32>,
    relation: SpatialRel,
    limits: &QueryLimits,
) -> Result<Option<GeometryFilter>, QueryError> {
    lookup(params, "geometry")
        .map(|text| {
            if text.len() > limits.max_geometry_bytes {
                return Err(too_long(
                    "geometry",
                    text.len(),
                    limits.max_geometry_bytes,
                    "bytes",
                ));
            }
            let filter =
                GeometryFilter::parse(text, lookup(params, "geometryType"), in_sr, relation)
                    .map_err(|reason| {
                        QueryError::new(format!("Invalid \"geometry\" parameter: {reason}"))
                    })?;
            let positions = geo::CoordsIter::coords_count(&filter.geometry);
            if positions > limits.max_geometry_positions {
                return Err(too_long(
                    "geometry",
                    positions,
                    limits.max_geometry_positions,
                    "positions",
                ));
            }
            Ok(filter)
        })
        .transpose()
}

/// `objectIds`: a comma-separated list of integers.
fn object_ids(
    params: &BTreeMap<String, String>,
    limits: &QueryLimits,
) -> Result<Option<Vec<i64>>, QueryError> {
    lookup(params, "objectIds")
        .map(|text| {
            if text.len() > limits.max_object_ids_bytes {
                return Err(too_long(
                    "objectIds",
                    text.len(),
                    limits.max_object_ids_bytes,
                    "bytes",
                ));
            }
            let count = text.split(',').filter(|id| !id.trim().is_empty()).count();
            if count > limits.max_object_ids {
                return Err(too_long("objectIds", count, limits.max_object_ids, "ids"));
            }
            text.split(',')
                .map(str::trim)
                .filter(|id| !id.is_empty())
                .map(|id| {
                    id.parse::<i64>()
                        .map_err(|_| QueryError::new(format!("object id {id:?} is not a number")))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()
}

/// `orderByFields`: `field [ASC|DESC], …` as `(field, descending)`.
fn order_by(
    params: &BTreeMap<String, String>,
    schema: &Schema,
    limits: &QueryLimits,
) -> Result<Vec<(String, bool)>, QueryError> {
    let Some(text) = lookup(params, "orderByFields") else {
        return Ok(Vec::new());
    };
    let count = text
        .split(',')
        .filter(|part| !part.trim().is_empty())
        .count();
    if count > limits.max_sort_fields {
        return Err(too_long(
            "orderByFields",
            count,
            limits.max_sort_fields,
            "fields",
        ));
    }
    text.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut words = part.split_whitespace();
            let name = words.next().unwrap_or_default();
            let descending = match words.next().map(str::to_ascii_uppercase).as_deref() {
                None | Some("ASC") => false,
                Some("DESC") => true,
                Some(other) => {
                    return Err(QueryError::new(format!(
                        "\"orderByFields\": {other} is not ASC or DESC"
                    )));
                }
            };
            let (field, _) = schema.field(name).ok_or_else(|| {
                QueryError::new(format!(
                    "\"orderByFields\" names {name:?}, which is not a field"
                ))
            })?;
            Ok((field, descending))
        })
        .collect()
}

/// At most `limit` characters of `text`, with `…` when cut (for messages that echo input).
pub(crate) fn shortened(text: &str, limit: usize) -> String {
    if text.chars().count() <= limit {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(limit).collect();
    short.push('…');
    short
}

/// The `callback` parameter (JSONP): a JavaScript function name (letters, digits, `_`, `$`,
/// `.`), never markup.
///
/// # Errors
///
/// [`QueryError`] when the name is not a plain function name.
pub fn callback(params: &BTreeMap<String, String>) -> Result<Option<String>, QueryError> {
    let Some(name) = lookup(params, "callback") else {
        return Ok(None);
    };
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '.'));
    if valid {
        Ok(Some(name.to_owned()))
    } else {
        Err(QueryError::new(
            "\"callback\" must be a JavaScript function name",
        ))
    }
}

impl Query {
    /// Parses the query parameters of a request against the layer's `schema`.
    ///
    /// # Errors
    ///
    /// [`QueryError`] naming the parameter: an invalid format, `where`, number, boolean,
    /// geometry, spatial reference, field name, statistic or callback.
    pub fn parse(params: &BTreeMap<String, String>, schema: &Schema) -> Result<Self, QueryError> {
        Self::parse_within(params, schema, &QueryLimits::default())
    }

    /// Parses the query parameters of a request against the layer's `schema`, within `limits`.
    ///
    /// # Errors
    ///
    /// As [`Query::parse`]; a parameter past its limit is named with the limit.
    pub fn parse_within(
        params: &BTreeMap<String, String>,
        schema: &Schema,
        limits: &QueryLimits,
    ) -> Result<Self, QueryError> {
        // Messages echo parts of the request: keep them short whatever was sent.
        Self::parse_unbounded_messages(params, schema, limits).map_err(|error| QueryError {
            message: shortened(&error.message, 300),
            details: error
                .details
                .iter()
                .map(|detail| shortened(detail, 300))
                .collect(),
        })
    }

    fn parse_unbounded_messages(
        params: &BTreeMap<String, String>,
        schema: &Schema,
        limits: &QueryLimits,
    ) -> Result<Self, QueryError> {
        let format = match lookup(params, "f").map(str::to_ascii_lowercase).as_deref() {
            None | Some("json") => Format::Json,
            Some("pjson") => Format::PrettyJson,
            Some("geojson") => Format::GeoJson,
            Some("pbf") => Format::Pbf,
            Some(_) => {
                return Err(QueryError {
                    message: "Invalid format".to_owned(),
                    details: vec!["\"f\" must be one of [json, pjson, geojson]".to_owned()],
                });
            }
        };
        let where_text = lookup(params, "where").unwrap_or_default().to_owned();
        let predicate =
            Predicate::parse_within(&where_text, &schema.where_fields(), &limits.where_clause)
                .map_err(|reason| QueryError {
                    message: format!(
                        "Invalid \"where\" parameter: {}",
                        shortened(&where_text, 200)
                    ),
                    details: vec![reason],
                })?;
        let object_ids = object_ids(params, limits)?;
        let in_sr = spatial_reference(params, "inSR")?;
        let relation = SpatialRel::parse(lookup(params, "spatialRel").unwrap_or_default())
            .map_err(QueryError::new)?;
        let geometry = geometry_filter(params, in_sr, relation, limits)?;
        let out_fields = match lookup(params, "outFields").map(str::trim) {
            None | Some("*") => OutFields::All,
            Some(text) => OutFields::Fields(field_list(
                schema,
                text,
                "outFields",
                limits.max_out_fields,
            )?),
        };
        let order_by = order_by(params, schema, limits)?;
        let out_sr = spatial_reference(params, "outSR")?.unwrap_or(4326);
        let unknown = || {
            QueryError::new(format!(
                "\"outSR\" {out_sr} is not a spatial reference koop knows"
            ))
        };
        let out_epsg = epsg_of_wkid(out_sr).ok_or_else(unknown)?;
        Reprojector::new(Epsg::WGS84, out_epsg).map_err(|_| unknown())?;
        let precision = number(params, "geometryPrecision")?
            .map(|digits| u32::try_from(digits.min(17)).unwrap_or(17));
        let callback = callback(params)?;
        Ok(Self {
            predicate,
            where_text,
            object_ids,
            geometry,
            out_fields,
            return_geometry: boolean(params, "returnGeometry", true)?,
            order_by,
            offset: number(params, "resultOffset")?.unwrap_or(0),
            limit: number(params, "resultRecordCount")?,
            count_only: boolean(params, "returnCountOnly", false)?,
            ids_only: boolean(params, "returnIdsOnly", false)?,
            extent_only: boolean(params, "returnExtentOnly", false)?,
            distinct: boolean(params, "returnDistinctValues", false)?,
            statistics: lookup(params, "outStatistics")
                .map(|text| statistics(schema, text, limits))
                .transpose()?
                .unwrap_or_default(),
            group_by: lookup(params, "groupByFieldsForStatistics")
                .map(|text| {
                    field_list(
                        schema,
                        text,
                        "groupByFieldsForStatistics",
                        limits.max_sort_fields,
                    )
                })
                .transpose()?
                .unwrap_or_default(),
            out_sr,
            out_epsg,
            precision,
            format,
            callback,
            quantization: quantization(params)?,
            max_allowable_offset: max_allowable_offset(params)?,
        })
    }

    /// How many features one response holds at most: `resultRecordCount` capped by
    /// `maxRecordCount`.
    pub fn page_size(&self, max_record_count: u32) -> u64 {
        let max = u64::from(max_record_count);
        self.limit.map_or(max, |limit| limit.min(max))
    }

    /// `true` for queries that return features one by one (not a count, ids, an extent,
    /// statistics or distinct values).
    pub fn returns_features(&self) -> bool {
        !(self.count_only
            || self.ids_only
            || self.extent_only
            || self.distinct
            || !self.statistics.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema {
            fields: vec![
                Field::new("name", FieldType::String),
                Field::new("population", FieldType::Integer),
                Field::new("surveyed", FieldType::Date),
            ],
            object_id: "OBJECTID".to_owned(),
            object_id_is_attribute: false,
        }
    }

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn generalization_and_quantization_modes_parse() -> Result<(), QueryError> {
        let query = Query::parse(
            &params(&[
                ("maxAllowableOffset", "2.5"),
                (
                    "quantizationParameters",
                    r#"{"mode":"view","tolerance":2.5}"#,
                ),
            ]),
            &schema(),
        )?;
        assert_eq!(query.max_allowable_offset, Some(2.5));
        assert!(query.quantization.is_some_and(|q| q.view));
        let query = Query::parse(
            &params(&[
                ("maxAllowableOffset", "0"),
                ("quantizationParameters", r#"{"tolerance":1}"#),
            ]),
            &schema(),
        )?;
        assert_eq!(query.max_allowable_offset, None);
        assert!(query.quantization.is_some_and(|q| !q.view));
        for bad in [
            ("maxAllowableOffset", "-1"),
            ("maxAllowableOffset", "NaN"),
            ("maxAllowableOffset", "inf"),
            ("quantizationParameters", r#"{"mode":"sketch"}"#),
        ] {
            assert!(Query::parse(&params(&[bad]), &schema()).is_err(), "{bad:?}");
        }
        Ok(())
    }

    #[test]
    fn parameters_parse_with_defaults() -> Result<(), QueryError> {
        let query = Query::parse(&params(&[]), &schema())?;
        assert!(query.predicate.is_always_true());
        assert_eq!(
            (query.format, query.out_sr, query.offset, query.limit),
            (Format::Json, 4326, 0, None)
        );
        assert!(query.return_geometry && query.returns_features());
        assert_eq!(query.page_size(2000), 2000);

        let query = Query::parse(
            &params(&[
                ("where", "population > 1"),
                ("outFields", "NAME,OBJECTID"),
                ("orderByFields", "population DESC, name"),
                ("resultOffset", "2"),
                ("resultRecordCount", "5000"),
                ("outSR", "{\"wkid\":102100}"),
                ("geometryPrecision", "1"),
                ("returnGeometry", "FALSE"),
                ("f", "pjson"),
                ("callback", "my.cb"),
            ]),
            &schema(),
        )?;
        assert_eq!(
            query.out_fields,
            OutFields::Fields(vec!["name".into(), "OBJECTID".into()])
        );
        assert_eq!(
            query.order_by,
            [("population".into(), true), ("name".into(), false)]
        );
        assert_eq!(query.page_size(2000), 2000, "capped by maxRecordCount");
        assert_eq!(
            (query.out_sr, query.precision, query.return_geometry),
            (102_100, Some(1), false)
        );
        assert_eq!(query.callback.as_deref(), Some("my.cb"));
        Ok(())
    }

    #[test]
    fn bad_parameters_are_errors_with_the_reference_messages() {
        let error = Query::parse(&params(&[("f", "xml")]), &schema()).expect_err("format");
        assert_eq!(error.message, "Invalid format");
        assert_eq!(
            error.details,
            ["\"f\" must be one of [json, pjson, geojson]"]
        );
        let error =
            Query::parse(&params(&[("resultRecordCount", "abc")]), &schema()).expect_err("number");
        assert_eq!(error.message, "\"resultRecordCount\" must be a number");
        let error =
            Query::parse(&params(&[("where", "foo bar baz")]), &schema()).expect_err("where");
        assert_eq!(error.message, "Invalid \"where\" parameter: foo bar baz");
        for bad in [
            ("outFields", "nope"),
            ("orderByFields", "name SIDEWAYS"),
            ("outSR", "999999"),
            ("callback", "alert(1)"),
            (
                "outStatistics",
                r#"[{"statisticType":"median","onStatisticField":"population"}]"#,
            ),
            (
                "outStatistics",
                r#"[{"statisticType":"sum","onStatisticField":"name"}]"#,
            ),
            ("returnCountOnly", "maybe"),
            ("geometry", "1,2,3"),
        ] {
            assert!(Query::parse(&params(&[bad]), &schema()).is_err(), "{bad:?}");
        }
    }
}
