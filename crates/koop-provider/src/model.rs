//! The provider model's data: requests, GeoJSON with `metadata`, registration, errors.
//!
//! Source: Koop's provider specification (koopjs.github.io/docs/development/provider, "Model
//! class": `getData`, `getStream`, `createKey`, `authorize`, `authenticate`, and the `metadata`
//! keys the Geoservices output reads).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use koop_types::Epsg;
use serde::{Deserialize, Serialize};

use crate::error::ProviderError;

/// Route parameters of a request, as Koop names them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteParams {
    /// `:host`, for providers registered with `hosts: true` (for Koordinates: the domain).
    pub host: Option<String>,
    /// `:id`, unless the provider disables it (for Koordinates: the layer id).
    pub id: Option<String>,
    /// `:layer`, from output routes such as `FeatureServer/:layer`.
    pub layer: Option<String>,
    /// `:method`, from output routes such as `FeatureServer/:layer/:method`.
    pub method: Option<String>,
}

/// A request to a provider, independent of the HTTP framework: route parameters, query
/// parameters (and form fields of a POST), and the caller's token if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderRequest {
    /// Route parameters.
    pub params: RouteParams,
    /// Query parameters (and POST form fields), by name.
    pub query: BTreeMap<String, String>,
    /// The token the caller presented (`token` parameter or `Authorization: Bearer`).
    pub token: Option<String>,
    /// Where the request was sent, `http://host:port` (from the `Host` and
    /// `X-Forwarded-Proto` headers), for absolute URLs in responses.
    pub base_url: Option<String>,
    /// The request's path, without its query (which may hold a token), for logs.
    pub path: String,
    /// When the server stops waiting for the answer (its per-request deadline); work still
    /// running then should stop (the Koordinates provider interrupts its SQLite statement).
    pub deadline: Option<std::time::Instant>,
    /// The `If-None-Match` header: entity tags the caller holds (RFC 9110 §13.1.2), so an
    /// output that tags its answers can answer `304 Not Modified`.
    pub if_none_match: Option<String>,
}

impl ProviderRequest {
    /// A query parameter.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }
}

/// The type of a field, as Koop's metadata names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FieldType {
    /// Text.
    String,
    /// Floating point.
    Double,
    /// Integer.
    Integer,
    /// Date or date-time (ISO 8601 text or epoch milliseconds in properties).
    Date,
}

/// One attribute of the features: `{ name, type, alias, length }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    /// Key in the GeoJSON `properties`.
    pub name: String,
    /// Data type.
    #[serde(rename = "type")]
    pub field_type: FieldType,
    /// How clients should label it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// Maximum length of a String or Date field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u32>,
}

impl Field {
    /// A field without alias or length.
    pub fn new(name: impl Into<String>, field_type: FieldType) -> Self {
        Self {
            name: name.into(),
            field_type,
            alias: None,
            length: None,
        }
    }
}

/// Geometry type of a layer, as GeoJSON names it. `None` in [`Metadata`] means tabular data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GeometryType {
    /// `Point`
    Point,
    /// `MultiPoint`
    MultiPoint,
    /// `LineString`
    LineString,
    /// `MultiLineString`
    MultiLineString,
    /// `Polygon`
    Polygon,
    /// `MultiPolygon`
    MultiPolygon,
}

impl GeometryType {
    /// The type of a GeoJSON geometry; `None` for geometry collections.
    pub fn of(value: &geojson::GeometryValue) -> Option<Self> {
        use geojson::GeometryValue;
        Some(match value {
            GeometryValue::Point { .. } => Self::Point,
            GeometryValue::MultiPoint { .. } => Self::MultiPoint,
            GeometryValue::LineString { .. } => Self::LineString,
            GeometryValue::MultiLineString { .. } => Self::MultiLineString,
            GeometryValue::Polygon { .. } => Self::Polygon,
            GeometryValue::MultiPolygon { .. } => Self::MultiPolygon,
            GeometryValue::GeometryCollection { .. } => return None,
        })
    }
}

/// The `metadata` object of a provider's GeoJSON (Koop provider specification, "Adding provider
/// metadata to the GeoJSON").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// Name of the layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Description of the dataset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Extent `[[xmin, ymin], [xmax, ymax]]` in EPSG:4326 degrees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extent: Option<[[f64; 2]; 2]>,
    /// The attribute clients display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_field: Option<String>,
    /// Geometry type; `None` for tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geometry_type: Option<GeometryType>,
    /// The attribute that identifies features: an integer in 0..=2,147,483,647.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_field: Option<String>,
    /// Most features the provider returns at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_record_count: Option<u32>,
    /// More features exist than were returned (Koop's `limitExceeded`; Geoservices'
    /// `exceededTransferLimit`).
    #[serde(default, rename = "limitExceeded", alias = "exceededTransferLimit")]
    pub exceeded_transfer_limit: bool,
    /// Time extent and capabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_info: Option<serde_json::Value>,
    /// One entry per attribute.
    #[serde(default)]
    pub fields: Vec<Field>,
}

/// Which Geoservices operations the provider already applied to its features (`filtersApplied`);
/// the output skips exactly those.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "one flag per operation, as Koop's filtersApplied object"
)]
pub struct FiltersApplied {
    /// The `where` clause and `objectIds`.
    #[serde(default, rename = "where")]
    pub where_clause: bool,
    /// The `geometry` filter.
    #[serde(default)]
    pub geometry: bool,
    /// `resultOffset` (after `orderByFields`, which the provider then applied too).
    #[serde(default)]
    pub offset: bool,
    /// `resultRecordCount` (after `orderByFields`); the provider then says in
    /// [`Metadata::exceeded_transfer_limit`] whether more features exist.
    #[serde(default)]
    pub limit: bool,
    /// `outSR`: coordinates are in the requested CRS (given as `crs`).
    #[serde(default)]
    pub projection: bool,
    /// Everything: the features (or `count`, for `returnCountOnly`) are the answer.
    #[serde(default)]
    pub all: bool,
}

impl FiltersApplied {
    /// `true` when any filter was applied.
    pub fn any(&self) -> bool {
        self.where_clause
            || self.geometry
            || self.offset
            || self.limit
            || self.projection
            || self.all
    }
}

/// What `get_data` returns: a GeoJSON FeatureCollection with `metadata`, and how to treat it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProviderData {
    /// The features.
    pub features: Vec<geojson::Feature>,
    /// The `metadata` object.
    pub metadata: Metadata,
    /// How long the data may be served from the cache; `None` means not cached.
    pub ttl: Option<Duration>,
    /// Filters the provider applied itself.
    pub filters_applied: FiltersApplied,
    /// EPSG code of the coordinates when not EPSG:4326 (RFC 7946 wants 4326).
    pub crs: Option<Epsg>,
    /// The number of features matching the request before paging, when the provider paged
    /// itself (so outputs can tell whether more exist).
    pub count: Option<u64>,
    /// A query the provider answered whole ([`QueryAnswer`]), with `filtersApplied.all`.
    pub answer: Option<QueryAnswer>,
    /// A tag that changes whenever the data changes (the Koordinates provider: the cache
    /// entry's name, which holds the layer version), for HTTP caches (`ETag`).
    pub version_tag: Option<String>,
}

/// A Geoservices query the provider answered whole, as Koop lets providers pass `count`,
/// `extent` and `statistics` with `filtersApplied.all`: what the output returns instead of
/// features. Providers that answer queries in their source (SQL) return it so the output need
/// not see every feature.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryAnswer {
    /// `returnIdsOnly`: the object ids of the matching features, in order.
    ObjectIds(Vec<i64>),
    /// `returnExtentOnly`, with the count for `returnCountOnly`: `[xmin, ymin, xmax, ymax]` of
    /// the matching features in the output CRS (`crs`, or EPSG:4326); `None` when none match.
    Extent {
        /// The extent.
        extent: Option<[f64; 4]>,
        /// The number of matching features, when asked for.
        count: Option<u64>,
    },
    /// `outStatistics` (one row per group) or `returnDistinctValues` (one row per distinct
    /// combination): Esri attributes (dates as epoch milliseconds), and whether more rows exist
    /// than were returned (the page rules of `resultOffset`/`resultRecordCount` and
    /// `maxRecordCount` apply).
    Rows {
        /// The rows.
        rows: Vec<serde_json::Map<String, serde_json::Value>>,
        /// More rows exist.
        exceeded: bool,
    },
}

impl ProviderData {
    /// The data as one GeoJSON document: `{"type": "FeatureCollection", "features": […],
    /// "metadata": {…}}`, plus `filtersApplied`, `ttl` (seconds) and `crs` when set.
    pub fn to_geojson(&self) -> serde_json::Value {
        let mut document = serde_json::json!({
            "type": "FeatureCollection",
            "metadata": self.metadata,
            "features": self.features,
        });
        if self.filters_applied.any() {
            document["filtersApplied"] = serde_json::json!(self.filters_applied);
        }
        if let Some(ttl) = self.ttl {
            document["ttl"] = serde_json::json!(ttl.as_secs());
        }
        if let Some(crs) = self.crs {
            document["crs"] =
                serde_json::json!({"type": "name", "properties": {"name": crs.to_string()}});
        }
        document
    }
}

/// What `get_stream` returns: the metadata, then the features one by one, so a layer of any
/// size can be served in bounded memory.
pub struct ProviderStream {
    /// The `metadata` object.
    pub metadata: Metadata,
    /// Filters the provider applied itself.
    pub filters_applied: FiltersApplied,
    /// EPSG code of the coordinates when not EPSG:4326 (as [`ProviderData::crs`]).
    pub crs: Option<Epsg>,
    /// The number of features matching the request before paging, when the provider counted
    /// them itself (as [`ProviderData::count`]).
    pub count: Option<u64>,
    /// A query the provider answered whole (as [`ProviderData::answer`]).
    pub answer: Option<QueryAnswer>,
    /// A tag that changes whenever the data changes (as [`ProviderData::version_tag`]).
    pub version_tag: Option<String>,
    /// The features (empty when they come as [`ProviderStream::rows`]).
    pub features: BoxStream<'static, Result<geojson::Feature, ProviderError>>,
    /// The features as rows of values under shared property names, instead of `features`:
    /// a provider reading a table (the Koordinates provider's pages) builds no property map per
    /// feature, and an output that writes rows ([`Row`]) takes them as they are. Outputs that
    /// need `geojson::Feature`s take [`ProviderStream::take_features`], which converts them.
    pub rows: Option<Rows>,
}

impl ProviderStream {
    /// A stream of the features of `data`, with its metadata, filters, CRS and count.
    pub fn from_data(data: ProviderData) -> Self {
        Self {
            metadata: data.metadata,
            filters_applied: data.filters_applied,
            crs: data.crs,
            count: data.count,
            answer: data.answer,
            version_tag: data.version_tag,
            features: Box::pin(futures::stream::iter(data.features.into_iter().map(Ok))),
            rows: None,
        }
    }

    /// The features as `geojson::Feature`s, whichever way the provider gave them (rows are
    /// converted one by one as they are read); the stream is left empty.
    pub fn take_features(&mut self) -> BoxStream<'static, Result<geojson::Feature, ProviderError>> {
        use futures::StreamExt;
        match self.rows.take() {
            Some(Rows { names, rows }) => {
                Box::pin(rows.map(move |row| row.map(|row| row.into_feature(&names))))
            }
            None => std::mem::replace(&mut self.features, Box::pin(futures::stream::empty())),
        }
    }
}

/// One feature of a [`Rows`] stream: its id, its geometry, and its property values in the
/// order of [`Rows::names`] (`null` where it has none).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The feature's `id` (GeoJSON's, not a property).
    pub id: Option<geojson::feature::Id>,
    /// The geometry, in the stream's CRS ([`ProviderStream::crs`]).
    pub geometry: Option<geojson::Geometry>,
    /// One value per name of the stream, in its order.
    pub values: Vec<serde_json::Value>,
}

impl Row {
    /// The same feature as GeoJSON: `names[i]` is the property of `values[i]` (values beyond
    /// the names are dropped; names beyond the values get `null`).
    pub fn into_feature(self, names: &[String]) -> geojson::Feature {
        let mut properties = serde_json::Map::with_capacity(names.len());
        let mut values = self.values.into_iter();
        for name in names {
            properties.insert(
                name.clone(),
                values.next().unwrap_or(serde_json::Value::Null),
            );
        }
        geojson::Feature {
            bbox: None,
            geometry: self.geometry,
            id: self.id,
            properties: Some(properties),
            foreign_members: None,
        }
    }
}

/// Features as rows: the property names once, then each feature's values in their order.
pub struct Rows {
    /// The property names, shared by every row (no name twice).
    pub names: std::sync::Arc<[String]>,
    /// The rows.
    pub rows: BoxStream<'static, Result<Row, ProviderError>>,
}

impl std::fmt::Debug for Rows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rows")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ProviderStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderStream")
            .field("metadata", &self.metadata)
            .field("filters_applied", &self.filters_applied)
            .field("crs", &self.crs)
            .field("count", &self.count)
            .field("answer", &self.answer)
            .finish_non_exhaustive()
    }
}

/// Credentials given to `authenticate` (the Geoservices `generateToken` request).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// A token issued by `authenticate`: `{token, expires, ssl}` as ArcGIS clients expect it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// The token.
    pub token: String,
    /// When it expires, in milliseconds since the Unix epoch.
    pub expires: u64,
    /// Whether it must be used over HTTPS only.
    pub ssl: bool,
}

/// HTTP methods of extra routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// GET
    Get,
    /// POST
    Post,
}

/// The handler of a provider's extra route (Koop's controller function): JSON out.
pub type RouteHandler = Arc<
    dyn Fn(ProviderRequest) -> BoxFuture<'static, Result<serde_json::Value, ProviderError>>
        + Send
        + Sync,
>;

/// An extra route of a provider (Koop's `routes.js` entry with its controller function).
#[derive(Clone)]
pub struct ProviderRoute {
    /// Path, with `:param` segments and optionally the `$namespace` and `$providerParams`
    /// placeholders; without placeholders it is relative to the provider's namespace.
    pub path: String,
    /// Methods it answers.
    pub methods: Vec<Method>,
    /// What answers.
    pub handler: RouteHandler,
}

impl std::fmt::Debug for ProviderRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderRoute")
            .field("path", &self.path)
            .field("methods", &self.methods)
            .finish_non_exhaustive()
    }
}

/// How a provider is registered (Koop's provider `index.js`).
#[derive(Debug, Clone)]
pub struct Registration {
    /// The provider's name, also its URL namespace (`/{name}/…`).
    pub name: String,
    /// Routes carry a `:host` parameter.
    pub hosts: bool,
    /// Routes carry no `:id` parameter.
    pub disable_id_param: bool,
    /// The provider's version.
    pub version: String,
    /// Extra routes.
    pub routes: Vec<ProviderRoute>,
}

impl Registration {
    /// A registration named `name`: no `:host`, with `:id`, no extra routes.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            hosts: false,
            disable_id_param: false,
            version: "0.0.0".to_owned(),
            routes: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    fn stream_of(rows: Option<Rows>, features: Vec<geojson::Feature>) -> ProviderStream {
        ProviderStream {
            metadata: Metadata::default(),
            filters_applied: FiltersApplied::default(),
            crs: None,
            count: None,
            answer: None,
            version_tag: None,
            features: Box::pin(futures::stream::iter(features.into_iter().map(Ok))),
            rows,
        }
    }

    #[tokio::test]
    async fn rows_become_the_features_they_stand_for() {
        let names: std::sync::Arc<[String]> = vec!["fid".to_owned(), "name".to_owned()].into();
        let rows = vec![
            Ok(Row {
                id: Some(geojson::feature::Id::Number(7.into())),
                geometry: Some(
                    serde_json::from_value(serde_json::json!(
                        {"type": "Point", "coordinates": [174.5, -41.5]}
                    ))
                    .expect("a point"),
                ),
                values: vec![serde_json::json!(7), serde_json::json!("a")],
            }),
            // Too few values: the missing one is null.
            Ok(Row {
                id: None,
                geometry: None,
                values: vec![serde_json::json!(8)],
            }),
        ];
        let mut stream = stream_of(
            Some(Rows {
                names,
                rows: Box::pin(futures::stream::iter(rows)),
            }),
            Vec::new(),
        );
        let features: Vec<geojson::Feature> = stream
            .take_features()
            .map(|feature| feature.expect("a feature"))
            .collect()
            .await;
        let expected: Vec<geojson::Feature> = vec![
            serde_json::from_value(serde_json::json!({
                "type": "Feature", "id": 7,
                "geometry": {"type": "Point", "coordinates": [174.5, -41.5]},
                "properties": {"fid": 7, "name": "a"},
            }))
            .expect("a feature"),
            serde_json::from_value(serde_json::json!({
                "type": "Feature", "geometry": null,
                "properties": {"fid": 8, "name": null},
            }))
            .expect("a feature"),
        ];
        assert_eq!(features, expected);
        // The property order is the names' order.
        let keys: Vec<&String> = features[0]
            .properties
            .as_ref()
            .expect("properties")
            .keys()
            .collect();
        assert_eq!(keys, ["fid", "name"]);
        assert!(stream.rows.is_none(), "taken");
        assert!(stream.take_features().next().await.is_none(), "left empty");
    }

    #[tokio::test]
    async fn features_are_taken_as_they_are() {
        let feature: geojson::Feature = serde_json::from_value(serde_json::json!({
            "type": "Feature", "geometry": null, "properties": {"b": 1, "a": 2},
        }))
        .expect("a feature");
        let mut stream = stream_of(None, vec![feature.clone()]);
        let taken: Vec<_> = stream.take_features().collect().await;
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].as_ref().ok(), Some(&feature));
        assert!(stream.take_features().next().await.is_none(), "left empty");
    }
}
