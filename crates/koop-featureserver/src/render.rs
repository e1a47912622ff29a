//! Query answers as Esri JSON or GeoJSON (ArcGIS REST API, "Query (Feature Service/Layer)").

use geojson::Feature;
use koop_geoservices::{Format, OutFields, Query, Value};
use koop_provider::{Epsg, FieldType, Row};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{Map, Value as Json, json};

use crate::engine::{Answer, Engine};
use crate::esri::{self, CoordinateMapper, EsriGeometry, Extent, FieldStyle};
use crate::layer::Layer;

/// The extent of a query answer; ArcGIS gives `NaN` bounds when nothing matched.
fn extent_json(extent: Option<Extent>, wkid: u32) -> Json {
    match extent {
        Some(extent) => extent.to_query_json(wkid),
        None => json!({
            "xmin": "NaN", "ymin": "NaN", "xmax": "NaN", "ymax": "NaN",
            "spatialReference": esri::spatial_reference(wkid),
        }),
    }
}

/// The names of the fields a response carries, in order: every field then a computed object
/// id for `*`, else the fields asked for.
fn out_field_names(layer: &Layer, query: &Query) -> Vec<String> {
    match &query.out_fields {
        OutFields::All => {
            let mut names: Vec<String> = layer
                .schema
                .fields
                .iter()
                .map(|field| field.name.clone())
                .collect();
            if !layer.schema.object_id_is_attribute {
                names.push(layer.schema.object_id.clone());
            }
            names
        }
        OutFields::Fields(names) => names.clone(),
    }
}

/// The `fields` of a response: for `*` the computed object id comes first, as Koop lists it.
fn fields_json(layer: &Layer, query: &Query) -> Vec<Json> {
    match &query.out_fields {
        OutFields::All => layer.fields_json(FieldStyle::Query),
        OutFields::Fields(names) => names
            .iter()
            .filter_map(|name| layer.field_json(name, FieldStyle::Query))
            .collect(),
    }
}

/// The header every feature response starts with.
fn header(layer: &Layer, query: &Query) -> Map<String, Json> {
    let mut body = Map::new();
    body.insert("objectIdFieldName".into(), json!(layer.schema.object_id));
    body.insert(
        "uniqueIdField".into(),
        json!({"name": layer.schema.object_id, "isSystemMaintained": true}),
    );
    body.insert("globalIdFieldName".into(), json!(""));
    body.insert("hasZ".into(), json!(false));
    body.insert("hasM".into(), json!(false));
    body.insert(
        "spatialReference".into(),
        esri::spatial_reference(query.out_sr),
    );
    body.insert("fields".into(), Json::Array(fields_json(layer, query)));
    body
}

/// Renders features one by one, in `outSR` and `geometryPrecision`, straight into the
/// response (no intermediate JSON tree).
pub(crate) struct FeatureWriter<'a> {
    layer: &'a Layer,
    /// Output fields: name, type, and whether it is the computed object id.
    names: Vec<(String, FieldType, bool)>,
    mapper: CoordinateMapper,
    return_geometry: bool,
}

impl<'a> FeatureWriter<'a> {
    /// The writer of `query`'s features, from `source_crs` to `outSR`.
    pub(crate) fn new(layer: &'a Layer, query: &Query, source_crs: Epsg) -> Result<Self, String> {
        let names = out_field_names(layer, query)
            .into_iter()
            .map(|name| {
                let computed =
                    name == layer.schema.object_id && !layer.schema.object_id_is_attribute;
                let field_type = layer.field_type(&name);
                (name, field_type, computed)
            })
            .collect();
        Ok(Self {
            layer,
            names,
            mapper: CoordinateMapper::new(source_crs, query.out_epsg, query.precision)
                .map_err(|error| error.to_string())?
                .generalizing(query.max_allowable_offset),
            // Tables have no geometry to return.
            return_geometry: query.return_geometry && !layer.is_table(),
        })
    }

    /// Output fields: name, type, and whether it is the computed object id.
    pub(crate) fn names(&self) -> &[(String, FieldType, bool)] {
        &self.names
    }

    /// Whether geometries are returned.
    pub(crate) fn returns_geometry(&self) -> bool {
        self.return_geometry
    }

    /// A feature's geometry in Esri form, in `outSR` and rounded; `None` without one.
    pub(crate) fn esri_geometry(&self, feature: &Feature) -> Option<EsriGeometry> {
        feature
            .geometry
            .as_ref()
            .and_then(|geometry| EsriGeometry::new(&geometry.value, &self.mapper))
    }
}

/// A feature's attributes: Esri JSON (dates as epoch milliseconds, the computed object id
/// included) or GeoJSON properties (as the provider gave them).
struct Attributes<'a> {
    writer: &'a FeatureWriter<'a>,
    source: Source<'a>,
    esri: bool,
}

/// Where each output field's value lies among the values of a provider's rows
/// ([`koop_provider::Rows`]), found once per page.
pub(crate) struct RowLayout {
    names: std::sync::Arc<[String]>,
    /// Per output field ([`FeatureWriter::names`]), its position among a row's values.
    slots: Vec<Option<usize>>,
    /// The position of the object id's field, when it is an attribute.
    object_id: Option<usize>,
}

/// A feature as the writer reads it: a `geojson::Feature`, or a provider's row.
#[derive(Clone, Copy)]
enum Source<'a> {
    Feature(&'a Feature),
    Row(&'a Row, &'a RowLayout),
}

impl<'a> Source<'a> {
    fn geometry(self) -> Option<&'a geojson::Geometry> {
        match self {
            Self::Feature(feature) => feature.geometry.as_ref(),
            Self::Row(row, _) => row.geometry.as_ref(),
        }
    }

    /// The object id, as [`Engine::object_id`] gives it.
    fn object_id(self, layer: &Layer) -> Option<i64> {
        match self {
            Self::Feature(feature) => Engine::object_id(layer, feature),
            Self::Row(row, layout) if layer.schema.object_id_is_attribute => layout
                .object_id
                .and_then(|slot| row.values.get(slot))
                .and_then(Json::as_i64),
            // A computed id hashes the feature as GeoJSON.
            Self::Row(row, layout) => {
                Engine::object_id(layer, &row.clone().into_feature(&layout.names))
            }
        }
    }
}

impl Serialize for Attributes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        // Providers usually give the properties in the fields' order: take them as they come,
        // and look a name up only where the order differs.
        let mut in_order = match self.source {
            Source::Feature(feature) => feature.properties.as_ref().map(serde_json::Map::iter),
            Source::Row(..) => None,
        }
        .into_iter()
        .flatten();
        for (index, (name, field_type, computed)) in self.writer.names.iter().enumerate() {
            if *computed {
                // In GeoJSON the computed object id is the feature's `id`.
                if self.esri {
                    map.serialize_entry(name, &self.source.object_id(self.writer.layer))?;
                }
                continue;
            }
            let value = match self.source {
                Source::Feature(feature) => match in_order.next() {
                    Some((key, value)) if key == name => Some(value),
                    _ => feature.property(name),
                },
                Source::Row(row, layout) => layout
                    .slots
                    .get(index)
                    .copied()
                    .flatten()
                    .and_then(|slot| row.values.get(slot)),
            };
            if self.esri && *field_type == FieldType::Date {
                map.serialize_entry(name, &esri_date(value))?;
            } else {
                map.serialize_entry(name, &value)?;
            }
        }
        map.end()
    }
}

/// `{"attributes": …, "geometry": …}`
struct EsriFeature<'a> {
    writer: &'a FeatureWriter<'a>,
    source: Source<'a>,
}

impl Serialize for EsriFeature<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry(
            "attributes",
            &Attributes {
                writer: self.writer,
                source: self.source,
                esri: true,
            },
        )?;
        if self.writer.return_geometry {
            let geometry = self
                .source
                .geometry()
                .and_then(|geometry| EsriGeometry::new(&geometry.value, &self.writer.mapper));
            map.serialize_entry("geometry", &geometry)?;
        }
        map.end()
    }
}

/// `{"type": "Feature", "id", "properties", "geometry"}`
struct GeoJsonFeature<'a> {
    writer: &'a FeatureWriter<'a>,
    source: Source<'a>,
}

impl Serialize for GeoJsonFeature<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("type", "Feature")?;
        if let Some(id) = self.source.object_id(self.writer.layer) {
            map.serialize_entry("id", &id)?;
        }
        map.serialize_entry(
            "properties",
            &Attributes {
                writer: self.writer,
                source: self.source,
                esri: false,
            },
        )?;
        let geometry = if self.writer.return_geometry {
            self.source
                .geometry()
                .and_then(|geometry| self.writer.mapper.geometry(&geometry.value))
                .map(geojson::Geometry::new)
        } else {
            None
        };
        map.serialize_entry("geometry", &geometry)?;
        map.end()
    }
}

/// The features of a response, as Esri JSON or GeoJSON.
struct FeatureList<'a> {
    writer: &'a FeatureWriter<'a>,
    features: &'a [Feature],
    geojson: bool,
}

impl Serialize for FeatureList<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut list = serializer.serialize_seq(Some(self.features.len()))?;
        for feature in self.features {
            if self.geojson {
                list.serialize_element(&GeoJsonFeature {
                    writer: self.writer,
                    source: Source::Feature(feature),
                })?;
            } else {
                list.serialize_element(&EsriFeature {
                    writer: self.writer,
                    source: Source::Feature(feature),
                })?;
            }
        }
        list.end()
    }
}

/// A page of features: the header's members, then the features, written as they are
/// serialized.
pub(crate) struct FeaturePage<'a> {
    header: Map<String, Json>,
    writer: FeatureWriter<'a>,
    features: Vec<Feature>,
    exceeded: bool,
    geojson: bool,
}

impl Serialize for FeaturePage<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let list = FeatureList {
            writer: &self.writer,
            features: &self.features,
            geojson: self.geojson,
        };
        let mut map = serializer.serialize_map(None)?;
        if self.geojson {
            map.serialize_entry("type", "FeatureCollection")?;
            map.serialize_entry("features", &list)?;
            if self.exceeded {
                map.serialize_entry("properties", &json!({ "exceededTransferLimit": true }))?;
            }
            return map.end();
        }
        for (key, value) in &self.header {
            map.serialize_entry(key, value)?;
        }
        map.serialize_entry("features", &list)?;
        map.serialize_entry("exceededTransferLimit", &self.exceeded)?;
        if let Some(name) = self.writer.layer.geometry_type_name() {
            map.serialize_entry("geometryType", name)?;
        }
        map.end()
    }
}

/// A page written in pieces, as its features arrive ([`crate::streamed`]): the same bytes as a
/// [`FeaturePage`] serialized compactly.
pub(crate) struct PagePieces<'a> {
    writer: FeatureWriter<'a>,
    geojson: bool,
    written: usize,
}

impl<'a> PagePieces<'a> {
    /// The pieces of `query`'s page over features in `source_crs`.
    ///
    /// # Errors
    ///
    /// A message when `source_crs` cannot be reprojected to `outSR`.
    pub(crate) fn new(layer: &'a Layer, query: &Query, source_crs: Epsg) -> Result<Self, String> {
        Ok(Self {
            writer: FeatureWriter::new(layer, query, source_crs)?,
            geojson: query.format == Format::GeoJson,
            written: 0,
        })
    }

    /// Everything before the first feature: `{…header…,"features":[`.
    pub(crate) fn head(&self, query: &Query, out: &mut Vec<u8>) -> serde_json::Result<()> {
        if self.geojson {
            out.extend_from_slice(br#"{"type":"FeatureCollection","features":["#);
            return Ok(());
        }
        let header = header(self.writer.layer, query);
        serde_json::to_writer(&mut *out, &header)?;
        // The header is an object with members: reopen it.
        out.pop();
        out.extend_from_slice(br#","features":["#);
        Ok(())
    }

    /// One feature, after a comma unless it is the first.
    pub(crate) fn feature(
        &mut self,
        feature: &Feature,
        out: &mut Vec<u8>,
    ) -> serde_json::Result<()> {
        self.source(Source::Feature(feature), out)
    }

    /// Where this page's fields lie among the values of rows named `names`.
    pub(crate) fn row_layout(&self, names: std::sync::Arc<[String]>) -> RowLayout {
        let position = |name: &str| names.iter().position(|known| known == name);
        RowLayout {
            slots: self
                .writer
                .names
                .iter()
                .map(|(name, _, _)| position(name))
                .collect(),
            object_id: position(&self.writer.layer.schema.object_id),
            names,
        }
    }

    /// One row (with its page's [`PagePieces::row_layout`]): the same bytes as
    /// [`PagePieces::feature`] of the feature it stands for.
    pub(crate) fn row(
        &mut self,
        row: &Row,
        layout: &RowLayout,
        out: &mut Vec<u8>,
    ) -> serde_json::Result<()> {
        self.source(Source::Row(row, layout), out)
    }

    fn source(&mut self, source: Source<'_>, out: &mut Vec<u8>) -> serde_json::Result<()> {
        if self.written > 0 {
            out.push(b',');
        }
        self.written += 1;
        if self.geojson {
            serde_json::to_writer(
                out,
                &GeoJsonFeature {
                    writer: &self.writer,
                    source,
                },
            )
        } else {
            serde_json::to_writer(
                out,
                &EsriFeature {
                    writer: &self.writer,
                    source,
                },
            )
        }
    }

    /// Everything after the last feature.
    pub(crate) fn tail(&self, exceeded: bool, out: &mut Vec<u8>) {
        out.push(b']');
        if self.geojson {
            if exceeded {
                out.extend_from_slice(br#","properties":{"exceededTransferLimit":true}"#);
            }
        } else {
            out.extend_from_slice(if exceeded {
                br#","exceededTransferLimit":true"#
            } else {
                br#","exceededTransferLimit":false"#
            });
            if let Some(name) = self.writer.layer.geometry_type_name() {
                out.extend_from_slice(br#","geometryType":""#);
                out.extend_from_slice(name.as_bytes());
                out.push(b'"');
            }
        }
        out.push(b'}');
    }
}

/// A response body: a small JSON document, or a page of features serialized as it is written.
pub(crate) enum Body<'a> {
    /// Counts, extents, statistics, distinct values.
    Json(Json),
    /// `returnIdsOnly`: written straight from the ids (a layer's millions of ids as JSON
    /// values would take four times their own size).
    Ids {
        /// `objectIdFieldName`.
        field: &'a str,
        /// `objectIds`.
        ids: Vec<i64>,
    },
    /// Features.
    Page(Box<FeaturePage<'a>>),
}

impl Body<'_> {
    /// About how many bytes the body takes: 256 per feature of a page.
    pub(crate) fn expected_bytes(&self) -> usize {
        match self {
            Self::Json(_) => 4 * 1024,
            // Up to 10 digits and a comma an id.
            Self::Ids { ids, .. } => 256 + ids.len() * 11,
            Self::Page(page) => 4 * 1024 + page.features.len() * 256,
        }
    }
}

impl Serialize for Body<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Json(json) => json.serialize(serializer),
            Self::Ids { field, ids } => {
                use serde::ser::SerializeMap;
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("objectIdFieldName", field)?;
                map.serialize_entry("objectIds", ids)?;
                map.end()
            }
            Self::Page(page) => page.serialize(serializer),
        }
    }
}

/// A date attribute as epoch milliseconds (null when unreadable).
pub(crate) fn esri_date(value: Option<&Json>) -> Option<i64> {
    match Value::from_json(value, FieldType::Date) {
        Value::Date(ms) => Some(ms),
        _ => None,
    }
}

/// The body answering `query`.
///
/// # Errors
///
/// A message when the features' CRS cannot be reprojected to `outSR`.
pub(crate) fn render<'a>(
    answer: Answer,
    layer: &'a Layer,
    query: &Query,
    source_crs: Epsg,
) -> Result<Body<'a>, String> {
    Ok(Body::Json(match answer {
        Answer::Count(count) => json!({ "count": count }),
        Answer::CountExtent(count, extent) => {
            json!({"count": count, "extent": extent_json(extent, query.out_sr)})
        }
        Answer::Extent(extent) => json!({"extent": extent_json(extent, query.out_sr)}),
        Answer::Ids(ids) => {
            return Ok(Body::Ids {
                field: &layer.schema.object_id,
                ids,
            });
        }
        Answer::Statistics(rows, exceeded) => {
            let mut fields: Vec<Json> = query
                .statistics
                .iter()
                .map(|statistic| {
                    let date = statistic.field_type == FieldType::Date
                        && matches!(
                            statistic.kind,
                            koop_geoservices::StatisticType::Min
                                | koop_geoservices::StatisticType::Max
                        );
                    esri::statistic_field(&statistic.out_name, date)
                })
                .collect();
            fields.extend(
                query
                    .group_by
                    .iter()
                    .filter_map(|name| layer.field_json(name, FieldStyle::Query)),
            );
            let mut body = json!({
                "displayFieldName": "",
                "fields": fields,
                "features": rows.into_iter().map(|row| json!({"attributes": row})).collect::<Vec<_>>(),
            });
            if exceeded {
                body["exceededTransferLimit"] = json!(true);
            }
            body
        }
        Answer::Distinct(rows, exceeded) => {
            let mut body = header(layer, query);
            body.insert(
                "features".into(),
                Json::Array(
                    rows.into_iter()
                        .map(|row| json!({ "attributes": row }))
                        .collect(),
                ),
            );
            body.insert("exceededTransferLimit".into(), json!(exceeded));
            if let Some(name) = layer.geometry_type_name() {
                body.insert("geometryType".into(), json!(name));
            }
            Json::Object(body)
        }
        Answer::Features { features, exceeded } => {
            return Ok(Body::Page(Box::new(FeaturePage {
                header: header(layer, query),
                writer: FeatureWriter::new(layer, query, source_crs)?,
                features,
                exceeded,
                geojson: query.format == Format::GeoJson,
            })));
        }
    }))
}
