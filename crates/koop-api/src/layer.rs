//! Layer, table and version bodies: `layers/{id}/`, `tables/{id}/`, `layers/{id}/versions/…`.
//!
//! Built from the real responses in the project's fixtures. Both API generations decode:
//! v1 (`name`, `data.crs` as a string, no `version` object on `layers/{id}/`) and v1.x (`title`,
//! `data.crs` as an object, `version.data_import`, `data.import_version`, `data.export_formats`).
//! Decoding is liberal (see `lenient.rs`): unknown fields are ignored, a known field koop does
//! not require decodes whatever JSON it holds (a value of another shape is `None`), and unknown
//! enum values are kept in an `Other` variant. Each type says which fields it requires and why.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::lenient::{
    lenient, lenient_bool, lenient_f64, lenient_list, lenient_optional_list, lenient_string,
    lenient_text, lenient_u64, required_id,
};
use crate::string_enum::string_enum;

string_enum! {
    /// What a layer holds (`kind` in the API). Decides the export format: GeoPackage for
    /// vector and table, GeoTIFF for raster and grid.
    pub enum LayerKind {
        /// Features with geometry.
        Vector => "vector",
        /// Imagery (RGB tiles).
        Raster => "raster",
        /// A grid of values such as elevation (DEM).
        Grid => "grid",
        /// Attributes without geometry.
        Table => "table",
        /// A raster attribute table.
        RasterAttributeTable => "rat",
        /// A LiDAR point cloud (not exportable as GeoPackage or GeoTIFF).
        PointCloud => "pointcloud",
        /// A document attached to a set.
        Document => "document",
        /// A set mixing several kinds.
        Mixed => "mixed",
    }
}

string_enum! {
    /// The catalog item type (`type` in the API): `layer`, `table`, `set`, `document`, …
    pub enum ItemType {
        /// A layer (`layers/{id}/`).
        Layer => "layer",
        /// A table (`tables/{id}/`).
        Table => "table",
        /// A set of layers (`sets/{id}/`).
        Set => "set",
        /// A document.
        Document => "document",
    }
}

string_enum! {
    /// Geometry type of a vector layer (`data.geometry_type`), as Koordinates spells it.
    pub enum GeometryType {
        /// `point`
        Point => "point",
        /// `multipoint`
        MultiPoint => "multipoint",
        /// `linestring`
        LineString => "linestring",
        /// `multilinestring`
        MultiLineString => "multilinestring",
        /// `polygon`
        Polygon => "polygon",
        /// `multipolygon`
        MultiPolygon => "multipolygon",
        /// `geometrycollection`
        GeometryCollection => "geometrycollection",
    }
}

string_enum! {
    /// Attribute type of a layer field (`data.fields[].type`).
    pub enum FieldType {
        /// 32-bit integer.
        Integer => "integer",
        /// 64-bit integer.
        BigInteger => "bigint" | "int64",
        /// Floating point.
        Double => "double",
        /// Single-precision floating point.
        Float => "float" | "real",
        /// Arbitrary-precision decimal.
        Numeric => "numeric" | "decimal",
        /// Text.
        String => "string" | "text",
        /// Boolean.
        Boolean => "boolean",
        /// Calendar date.
        Date => "date",
        /// Date and time.
        DateTime => "datetime" | "timestamp",
        /// The geometry column.
        Geometry => "geometry",
        /// Binary data.
        Binary => "binary" | "blob",
    }
}

/// A layer or catalog item id. Classic layers have integer ids; Kart-backed datasets (point clouds)
/// have string ids such as `d3RtF9GKtV9pqYL`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ItemId {
    /// An integer id (`layers/1474/`).
    Number(u64),
    /// A string id (`datasets/d3RtF9GKtV9pqYL/`).
    Text(String),
}

impl ItemId {
    /// The integer id, when the item has one.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Self::Number(id) => Some(*id),
            Self::Text(text) => text.parse().ok(),
        }
    }
}

impl fmt::Display for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(id) => write!(f, "{id}"),
            Self::Text(text) => f.write_str(text),
        }
    }
}

/// A property that the API sends either as a link to fetch (a URL string) or already expanded
/// (`publisher`, `services`, `styles`, `attachments`, `data.datasources`, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Linked<T> {
    /// A URL to fetch the property from.
    Url(String),
    /// The property itself.
    Expanded(T),
}

impl<T> Linked<T> {
    /// The expanded value, if the server sent it expanded.
    pub fn expanded(&self) -> Option<&T> {
        match self {
            Self::Url(_) => None,
            Self::Expanded(value) => Some(value),
        }
    }

    /// The link, if the server sent a URL.
    pub fn url(&self) -> Option<&str> {
        match self {
            Self::Url(url) => Some(url),
            Self::Expanded(_) => None,
        }
    }
}

/// A coordinate reference system as the API describes it. v1 sends `"EPSG:2193"`; v1.x sends an
/// object with `id`, `name`, `kind` and `srid`. Both decode into this type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Crs {
    /// Authority code, e.g. `EPSG:2193` or `CUSTOM:800217`.
    pub id: String,
    /// Human name, e.g. `NZGD2000 / New Zealand Transverse Mercator 2000` (v1.x only).
    pub name: Option<String>,
    /// `projected`, `geographic 2D`, `compound`, … (v1.x only).
    pub kind: Option<String>,
    /// The SRID the server uses; 0 for custom systems (v1.x only).
    pub srid: Option<u32>,
}

impl Crs {
    /// The EPSG code: the `srid` when positive, else the number after `EPSG:` in the id.
    pub fn epsg(&self) -> Option<u32> {
        match self.srid {
            Some(srid) if srid > 0 => Some(srid),
            _ => self
                .id
                .strip_prefix("EPSG:")
                .and_then(|code| code.parse().ok()),
        }
    }
}

impl<'de> Deserialize<'de> for Crs {
    /// `"EPSG:2193"`, or an object with `id` and/or `srid` (`name` and `kind` when present);
    /// an object with neither is an error.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct CrsObject {
            #[serde(default, deserialize_with = "lenient_string")]
            id: Option<String>,
            #[serde(default, deserialize_with = "lenient_string")]
            name: Option<String>,
            #[serde(default, deserialize_with = "lenient_string")]
            kind: Option<String>,
            #[serde(default, deserialize_with = "lenient_u64")]
            srid: Option<u64>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Code(String),
            Object(CrsObject),
        }
        Ok(match Wire::deserialize(deserializer)? {
            Wire::Code(id) => Self {
                id,
                name: None,
                kind: None,
                srid: None,
            },
            Wire::Object(object) => {
                let srid = object.srid.and_then(|srid| u32::try_from(srid).ok());
                let id = match (object.id, srid) {
                    (Some(id), _) => id,
                    (None, Some(srid)) if srid > 0 => format!("EPSG:{srid}"),
                    _ => {
                        return Err(serde::de::Error::custom(
                            "a CRS object needs an id or a positive srid",
                        ));
                    }
                };
                Self {
                    id,
                    name: object.name,
                    kind: object.kind,
                    srid,
                }
            }
        })
    }
}

/// One attribute of a layer schema (`data.fields[]`). Requires `name` (a field without one
/// cannot be named in a query) and `type` as a string; an entry without them is left out of the
/// schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    /// Column name.
    pub name: String,
    /// Column type.
    #[serde(rename = "type")]
    pub field_type: FieldType,
}

/// An export format the layer offers (`data.export_formats[]`, v1.x). Requires `name` and
/// `mimetype`; an entry without them is left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferedFormat {
    /// Display name, e.g. `GeoPackage / SQLite`.
    pub name: String,
    /// MIME type to put in an export request, e.g. `application/x-ogc-gpkg`.
    pub mimetype: String,
}

/// The `data` object of a layer: schema, CRS, extent and import information. Nothing in it is
/// required: every field decodes leniently (a value of another shape is `None`, a list drops
/// the elements it cannot read).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LayerData {
    /// Coordinate reference system: `"EPSG:2193"` (v1) or an object with `id`/`srid` (v1.x);
    /// `null` for tables.
    #[serde(default, deserialize_with = "lenient")]
    pub crs: Option<Crs>,
    /// Attribute schema; `null` for raster and grid layers.
    #[serde(default, deserialize_with = "lenient_optional_list")]
    pub fields: Option<Vec<Field>>,
    /// Geometry type; absent or empty for rasters and tables.
    #[serde(default, deserialize_with = "empty_string_as_none")]
    pub geometry_type: Option<GeometryType>,
    /// Name of the geometry column.
    #[serde(default, deserialize_with = "lenient_string")]
    pub geometry_field: Option<String>,
    /// Primary key column names.
    #[serde(default, deserialize_with = "lenient_list")]
    pub primary_key_fields: Vec<String>,
    /// Number of features (vector, table) or tiles (raster, grid).
    #[serde(default, deserialize_with = "lenient_u64")]
    pub feature_count: Option<u64>,
    /// Extent as a GeoJSON geometry in EPSG:4326 (any JSON is kept as it is).
    #[serde(default)]
    pub extent: Option<serde_json::Value>,
    /// URL of the version whose data this version carries (v1.x). A metadata-only version points
    /// at an earlier version here.
    #[serde(default, deserialize_with = "lenient_link")]
    pub import_version: Option<String>,
    /// Export formats this layer offers (v1.x).
    #[serde(default, deserialize_with = "lenient_optional_list")]
    pub export_formats: Option<Vec<OfferedFormat>>,
    /// Cell size of a raster or grid, in CRS units.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub raster_resolution: Option<f64>,
    /// Whether geometries carry Z values.
    #[serde(default, deserialize_with = "lenient_bool")]
    pub has_z: Option<bool>,
    /// Storage backend, `classic` or `kart` (v1.x).
    #[serde(default, deserialize_with = "lenient_string")]
    pub storage: Option<String>,
    /// What this version changed against the previous one (v1.x), when the API says.
    #[serde(default, deserialize_with = "lenient")]
    pub change_summary: Option<ChangeSummary>,
}

/// `data.change_summary` of a layer version: how many features it inserted, updated and deleted
/// against the previous version, and what it changed in the schema. Every field decodes
/// leniently.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChangeSummary {
    /// Features inserted.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub inserted: Option<u64>,
    /// Features updated.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub updated: Option<u64>,
    /// Features deleted.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub deleted: Option<u64>,
    /// Schema changes; `None` when the API does not say.
    #[serde(default, deserialize_with = "lenient")]
    pub schema_changes: Option<SchemaChanges>,
}

/// `data.change_summary.schema_changes`: fields added, changed and removed, and whether the
/// SRID, the geometry type or the primary keys changed.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SchemaChanges {
    /// Fields added (as the API describes them).
    #[serde(default, deserialize_with = "lenient_list")]
    pub added: Vec<serde_json::Value>,
    /// Fields changed.
    #[serde(default, deserialize_with = "lenient_list")]
    pub changed: Vec<serde_json::Value>,
    /// Fields removed.
    #[serde(default, deserialize_with = "lenient_list")]
    pub removed: Vec<serde_json::Value>,
    /// The CRS changed.
    #[serde(default, deserialize_with = "lenient_bool")]
    pub srid_changed: Option<bool>,
    /// The geometry type changed.
    #[serde(default, deserialize_with = "lenient_bool")]
    pub geometry_type_changed: Option<bool>,
    /// The primary key fields changed.
    #[serde(default, deserialize_with = "lenient_bool")]
    pub primary_keys_changed: Option<bool>,
}

impl SchemaChanges {
    /// `true` when nothing in the schema changed: no field added, changed or removed and no flag
    /// set.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.changed.is_empty()
            && self.removed.is_empty()
            && self.srid_changed != Some(true)
            && self.geometry_type_changed != Some(true)
            && self.primary_keys_changed != Some(true)
    }
}

impl LayerData {
    /// The version id in `import_version`, i.e. the version whose data this version carries.
    pub fn import_version_id(&self) -> Option<u64> {
        self.import_version.as_deref().and_then(version_id_from_url)
    }
}

/// A layer version (`layers/{id}/versions/{vid}/` summary, the items of `layers/{id}/versions/`,
/// and the `version` object inside layer details in v1.x). Requires `id` (a number or a numeric
/// string): it is the version data is filed under. Every other field decodes leniently.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LayerVersion {
    /// Version id.
    #[serde(deserialize_with = "required_id")]
    pub id: u64,
    /// API URL of the version (empty when the server sent none).
    #[serde(default, deserialize_with = "lenient_text")]
    pub url: String,
    /// `ok`, `importing`, …
    #[serde(default, deserialize_with = "lenient_string")]
    pub status: Option<String>,
    /// When the version was created (ISO 8601, as the server sends it).
    #[serde(default, deserialize_with = "lenient_string")]
    pub created_at: Option<String>,
    /// Free-text reference.
    #[serde(default, deserialize_with = "lenient_string")]
    pub reference: Option<String>,
    /// Import progress 0–1 (a number, a numeric string or `null`).
    #[serde(default, deserialize_with = "lenient_f64")]
    pub progress: Option<f64>,
    /// `false` when the version changed only metadata, not data (v1.x).
    #[serde(default, deserialize_with = "lenient_bool")]
    pub data_import: Option<bool>,
}

/// Links to a layer version's metadata documents. Nothing is required; each link is a URL
/// string or an object with a `url`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MetadataLinks {
    /// Dublin Core document (`…/metadata/dc/`).
    #[serde(default, deserialize_with = "lenient_link")]
    pub dc: Option<String>,
    /// ISO 19115/19139 document (`…/metadata/iso/`).
    #[serde(default, deserialize_with = "lenient_link")]
    pub iso: Option<String>,
    /// The document as uploaded (`…/metadata/`).
    #[serde(default, deserialize_with = "lenient_link")]
    pub native: Option<String>,
}

/// A licence (`license` of a layer, `licenses/{id}/`). Requires `id`; the rest decodes
/// leniently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct License {
    /// Licence id.
    #[serde(deserialize_with = "required_id")]
    pub id: u64,
    /// E.g. `Creative Commons Attribution 4.0 International` (empty when absent).
    #[serde(default, deserialize_with = "lenient_text")]
    pub title: String,
    /// E.g. `cc-by`.
    #[serde(rename = "type", default, deserialize_with = "lenient_string")]
    pub license_type: Option<String>,
    /// Licence version, e.g. `4.0`.
    #[serde(default, deserialize_with = "lenient_string")]
    pub version: Option<String>,
    /// Web page of the licence.
    #[serde(default, deserialize_with = "lenient_string")]
    pub url_html: Option<String>,
}

/// The publisher of a layer (expanded form of `publisher`). Nothing is required.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Publisher {
    /// Publisher id, e.g. `data.linz.govt.nz` (empty when absent).
    #[serde(default, deserialize_with = "lenient_text")]
    pub id: String,
    /// E.g. `Land Information New Zealand`.
    #[serde(default, deserialize_with = "lenient_string")]
    pub name: Option<String>,
    /// Web site of the publisher.
    #[serde(default, deserialize_with = "lenient_string")]
    pub html_url: Option<String>,
}

/// The group that owns a layer. Requires `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Group {
    /// Group id.
    #[serde(deserialize_with = "required_id")]
    pub id: u64,
    /// E.g. `National Geodetic Office` (empty when absent).
    #[serde(default, deserialize_with = "lenient_text")]
    pub name: String,
}

/// A catalog category. Nothing is required.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Category {
    /// E.g. `Geodetic`.
    #[serde(default, deserialize_with = "lenient_text")]
    pub name: String,
    /// E.g. `geodetic`.
    #[serde(default, deserialize_with = "lenient_text")]
    pub slug: String,
}

/// Details of a layer or table: the body of `GET layers/{id}/`, `GET tables/{id}/`,
/// `GET layers/{id}/versions/{vid}/` and the items of catalog lists.
///
/// Requires `id` (a number, or a string for Kart datasets: it names the cache entry) and `url`
/// (the layer's API URL: the `item` of an export request). Every other field decodes
/// leniently: `title` falls back to v1's `name`, then to the empty string; a value of another
/// shape is `None`; lists drop what they cannot read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "LayerDetailsWire")]
#[non_exhaustive]
pub struct LayerDetails {
    /// Layer id.
    pub id: ItemId,
    /// API URL of the layer; the `item` of an export request.
    pub url: String,
    /// Catalog item type (`layer`, `table`, …).
    #[serde(rename = "type")]
    pub item_type: ItemType,
    /// Title (v1.x `title`; v1 `name`).
    pub title: String,
    /// What the layer holds; absent in catalog list items.
    pub kind: Option<LayerKind>,
    /// Plain-text (Markdown) description.
    pub description: Option<String>,
    /// When the layer was first published (ISO 8601 as sent).
    pub first_published_at: Option<String>,
    /// When this version was published (ISO 8601 as sent); `null` for drafts.
    pub published_at: Option<String>,
    /// When the layer was created (ISO 8601 as sent).
    pub created_at: Option<String>,
    /// Web page of the layer, e.g. `https://data.linz.govt.nz/layer/50787-nz-geodetic-marks/`.
    pub url_html: Option<String>,
    /// The version these details describe (v1.x; v1 `layers/{id}/` has none, see
    /// [`LayerDetails::version_id`]).
    pub version: Option<LayerVersion>,
    /// URL of the version these details describe.
    pub this_version: Option<String>,
    /// URL of the published version.
    pub published_version: Option<String>,
    /// URL of the latest version (v1).
    pub latest_version: Option<String>,
    /// Schema, CRS and import information.
    pub data: Option<LayerData>,
    /// Metadata document links.
    pub metadata: Option<MetadataLinks>,
    /// Licence.
    pub license: Option<License>,
    /// Publisher, as a URL or expanded.
    pub publisher: Option<Linked<Publisher>>,
    /// Owning group.
    pub group: Option<Group>,
    /// Services (WFS, WMTS, …), as a URL or expanded.
    pub services: Option<Linked<Vec<serde_json::Value>>>,
    /// Styles, as a URL or expanded.
    pub styles: Option<Linked<Vec<serde_json::Value>>>,
    /// Attachments, as a URL or expanded.
    pub attachments: Option<Linked<Vec<serde_json::Value>>>,
    /// Free tags.
    pub tags: Vec<String>,
    /// Catalog categories.
    pub categories: Vec<Category>,
}

impl LayerDetails {
    /// The integer layer id (`None` for string-id datasets such as point clouds).
    pub fn layer_id(&self) -> Option<u64> {
        self.id.as_u64()
    }

    /// The id of the version these details describe: `version.id` (v1.x), else the id in
    /// `this_version` (v1).
    pub fn version_id(&self) -> Option<u64> {
        self.version
            .as_ref()
            .map(|version| version.id)
            .or_else(|| self.this_version.as_deref().and_then(version_id_from_url))
    }

    /// The id of the version whose data this version carries: `data.import_version` where the
    /// API gives it, else [`LayerDetails::version_id`]. Two versions with the same data version
    /// have identical data (the newer one changed only metadata).
    pub fn data_version_id(&self) -> Option<u64> {
        self.data
            .as_ref()
            .and_then(LayerData::import_version_id)
            .or_else(|| self.version_id())
    }

    /// `true` when this version changed only metadata (`version.data_import: false`).
    pub fn is_metadata_only_version(&self) -> bool {
        self.version
            .as_ref()
            .and_then(|version| version.data_import)
            .is_some_and(|imported| !imported)
    }

    /// The layer's CRS, when it has one.
    pub fn crs(&self) -> Option<&Crs> {
        self.data.as_ref().and_then(|data| data.crs.as_ref())
    }

    /// The layer's attribute schema (empty for rasters).
    pub fn fields(&self) -> &[Field] {
        self.data
            .as_ref()
            .and_then(|data| data.fields.as_deref())
            .unwrap_or_default()
    }

    /// Whether the layer's services list has a service with this `key` (such as `wfs-changesets`,
    /// Koordinates' WFS changeset service): `None` when the details hold only a link to the list.
    pub fn has_service(&self, key: &str) -> Option<bool> {
        match self.services.as_ref()? {
            Linked::Expanded(services) => Some(services.iter().any(|service| {
                service.get("key").and_then(serde_json::Value::as_str) == Some(key)
            })),
            Linked::Url(_) => None,
        }
    }

    /// The link to the Dublin Core document of this version, when the API gives one.
    pub fn dc_metadata_url(&self) -> Option<&str> {
        self.metadata.as_ref().and_then(|links| links.dc.as_deref())
    }
}

/// The wire form of [`LayerDetails`]: merges `title` and `name`.
#[derive(Deserialize)]
struct LayerDetailsWire {
    id: ItemId,
    url: String,
    #[serde(rename = "type", default, deserialize_with = "lenient")]
    item_type: Option<ItemType>,
    #[serde(default, deserialize_with = "lenient_string")]
    title: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    kind: Option<LayerKind>,
    #[serde(default, deserialize_with = "lenient_string")]
    description: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    first_published_at: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    published_at: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    created_at: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    url_html: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    version: Option<LayerVersion>,
    #[serde(default, deserialize_with = "lenient_link")]
    this_version: Option<String>,
    #[serde(default, deserialize_with = "lenient_link")]
    published_version: Option<String>,
    #[serde(default, deserialize_with = "lenient_link")]
    latest_version: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    data: Option<LayerData>,
    #[serde(default, deserialize_with = "lenient")]
    metadata: Option<MetadataLinks>,
    #[serde(default, deserialize_with = "lenient")]
    license: Option<License>,
    #[serde(default, deserialize_with = "lenient")]
    publisher: Option<Linked<Publisher>>,
    #[serde(default, deserialize_with = "lenient")]
    group: Option<Group>,
    #[serde(default, deserialize_with = "lenient")]
    services: Option<Linked<Vec<serde_json::Value>>>,
    #[serde(default, deserialize_with = "lenient")]
    styles: Option<Linked<Vec<serde_json::Value>>>,
    #[serde(default, deserialize_with = "lenient")]
    attachments: Option<Linked<Vec<serde_json::Value>>>,
    #[serde(default, deserialize_with = "lenient_list")]
    tags: Vec<String>,
    #[serde(default, deserialize_with = "lenient_list")]
    categories: Vec<Category>,
}

fn default_item_type() -> ItemType {
    ItemType::Layer
}

impl From<LayerDetailsWire> for LayerDetails {
    fn from(wire: LayerDetailsWire) -> Self {
        Self {
            id: wire.id,
            url: wire.url,
            item_type: wire.item_type.unwrap_or_else(default_item_type),
            title: wire.title.or(wire.name).unwrap_or_default(),
            kind: wire.kind,
            description: wire.description,
            first_published_at: wire.first_published_at,
            published_at: wire.published_at,
            created_at: wire.created_at,
            url_html: wire.url_html,
            version: wire.version,
            this_version: wire.this_version,
            published_version: wire.published_version,
            latest_version: wire.latest_version,
            data: wire.data,
            metadata: wire.metadata,
            license: wire.license,
            publisher: wire.publisher,
            group: wire.group,
            services: wire.services,
            styles: wire.styles,
            attachments: wire.attachments,
            tags: wire.tags,
            categories: wire.categories,
        }
    }
}

/// The version id in a version URL such as `…/layers/1474/versions/4067/`.
pub fn version_id_from_url(url: &str) -> Option<u64> {
    let mut segments = url.trim_end_matches('/').rsplit('/');
    let id = segments.next()?;
    (segments.next()? == "versions")
        .then(|| id.parse().ok())
        .flatten()
}

/// A string enum, `None` when absent, empty or not a string.
fn empty_string_as_none<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr,
{
    let value = lenient_string(deserializer)?;
    Ok(value
        .filter(|text| !text.is_empty())
        .and_then(|text| text.parse().ok()))
}

/// A link: a URL string, or an object carrying it as `url` (as the API expands some links);
/// `None` otherwise.
pub(crate) fn lenient_link<'de, D>(deserializer: D) -> Result<Option<String>, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::String(url) => Some(url),
        serde_json::Value::Object(object) => object
            .get("url")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_id_is_read_from_version_urls() {
        assert_eq!(
            version_id_from_url(
                "https://koordinates.com/services/api/v1/layers/1474/versions/4067/"
            ),
            Some(4067)
        );
        assert_eq!(
            version_id_from_url("https://koordinates.com/services/api/v1/layers/1474/"),
            None
        );
        assert_eq!(version_id_from_url("versions/abc/"), None);
    }

    #[test]
    fn crs_decodes_both_generations() {
        let v1: Crs = serde_json::from_str(r#""EPSG:2193""#).expect("v1 crs");
        assert_eq!(v1.epsg(), Some(2193));
        let v1x: Crs = serde_json::from_str(
            r#"{"id":"CUSTOM:800217","name":"NZTM + NZVD2016","kind":"compound","srid":0}"#,
        )
        .expect("v1.x crs");
        assert_eq!(v1x.epsg(), None);
        assert_eq!(v1x.kind.as_deref(), Some("compound"));
    }

    #[test]
    fn unknown_kind_is_kept() {
        let kind: LayerKind = serde_json::from_str(r#""hologram""#).expect("kind");
        assert_eq!(kind, LayerKind::Other("hologram".into()));
        assert_eq!(serde_json::to_string(&kind).expect("json"), r#""hologram""#);
    }
}
