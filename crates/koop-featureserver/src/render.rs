//! Query answers as Esri JSON or GeoJSON (ArcGIS REST API, "Query (Feature Service/Layer)").

use geojson::Feature;
use koop_provider::FieldType;
use koop_provider::geoservices::{Format, OutFields, Query};
use serde_json::{Map, Value as Json, json};

use crate::engine::{Answer, Engine, esri_attribute};
use crate::esri::{self, CoordinateMapper, Extent, FieldStyle};
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

fn field_type(layer: &Layer, name: &str) -> FieldType {
    layer
        .schema
        .fields
        .iter()
        .find(|field| field.name == name)
        .map_or(FieldType::Integer, |field| field.field_type)
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

/// Renders features one by one, in `outSR` and `geometryPrecision`.
struct FeatureWriter<'a> {
    layer: &'a Layer,
    names: Vec<(String, FieldType, bool)>,
    mapper: CoordinateMapper,
    return_geometry: bool,
}

impl<'a> FeatureWriter<'a> {
    fn new(layer: &'a Layer, query: &Query, source_crs: u32) -> Result<Self, String> {
        let names = out_field_names(layer, query)
            .into_iter()
            .map(|name| {
                let computed =
                    name == layer.schema.object_id && !layer.schema.object_id_is_attribute;
                let field_type = field_type(layer, &name);
                (name, field_type, computed)
            })
            .collect();
        Ok(Self {
            layer,
            names,
            mapper: CoordinateMapper::new(source_crs, query.out_sr, query.precision)
                .map_err(|error| error.to_string())?,
            return_geometry: query.return_geometry,
        })
    }

    fn attributes(&self, feature: &Feature, esri: bool) -> Map<String, Json> {
        let mut attributes = Map::with_capacity(self.names.len());
        for (name, field_type, computed) in &self.names {
            if *computed && !esri {
                // In GeoJSON the computed object id is the feature's `id`.
                continue;
            }
            let value = if *computed {
                Engine::object_id(self.layer, feature).map_or(Json::Null, Json::from)
            } else if esri {
                esri_attribute(feature.property(name), *field_type)
            } else {
                feature.property(name).cloned().unwrap_or(Json::Null)
            };
            attributes.insert(name.clone(), value);
        }
        attributes
    }

    fn geometry(&self, feature: &Feature) -> Option<geojson::GeometryValue> {
        if !self.return_geometry {
            return None;
        }
        self.mapper.geometry(&feature.geometry.as_ref()?.value)
    }

    fn esri(&self, feature: &Feature) -> Json {
        let mut object = Map::with_capacity(2);
        object.insert(
            "attributes".into(),
            Json::Object(self.attributes(feature, true)),
        );
        if self.return_geometry {
            let geometry = self
                .geometry(feature)
                .and_then(|geometry| esri::geometry(&geometry));
            object.insert("geometry".into(), geometry.unwrap_or(Json::Null));
        }
        Json::Object(object)
    }

    fn geojson(&self, feature: &Feature) -> Json {
        let mut object = Map::with_capacity(4);
        object.insert("type".into(), json!("Feature"));
        if let Some(id) = Engine::object_id(self.layer, feature) {
            object.insert("id".into(), json!(id));
        }
        object.insert(
            "properties".into(),
            Json::Object(self.attributes(feature, false)),
        );
        let geometry = self
            .geometry(feature)
            .and_then(|geometry| serde_json::to_value(geojson::Geometry::new(geometry)).ok());
        object.insert("geometry".into(), geometry.unwrap_or(Json::Null));
        Json::Object(object)
    }
}

/// The body answering `query`.
///
/// # Errors
///
/// A message when the features' CRS cannot be reprojected to `outSR`.
pub(crate) fn render(
    answer: Answer,
    layer: &Layer,
    query: &Query,
    source_crs: u32,
) -> Result<Json, String> {
    Ok(match answer {
        Answer::Count(count) => json!({ "count": count }),
        Answer::CountExtent(count, extent) => {
            json!({"count": count, "extent": extent_json(extent, query.out_sr)})
        }
        Answer::Extent(extent) => json!({"extent": extent_json(extent, query.out_sr)}),
        Answer::Ids(ids) => {
            json!({"objectIdFieldName": layer.schema.object_id, "objectIds": ids})
        }
        Answer::Statistics(rows) => {
            let mut fields: Vec<Json> = query
                .statistics
                .iter()
                .map(|statistic| {
                    let date = statistic.field_type == FieldType::Date
                        && matches!(
                            statistic.kind,
                            koop_provider::geoservices::StatisticType::Min
                                | koop_provider::geoservices::StatisticType::Max
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
            json!({
                "displayFieldName": "",
                "fields": fields,
                "features": rows.into_iter().map(|row| json!({"attributes": row})).collect::<Vec<_>>(),
            })
        }
        Answer::Distinct(rows) => {
            let mut body = header(layer, query);
            body.insert(
                "features".into(),
                Json::Array(
                    rows.into_iter()
                        .map(|row| json!({ "attributes": row }))
                        .collect(),
                ),
            );
            body.insert("exceededTransferLimit".into(), json!(false));
            if let Some(name) = layer.geometry_type_name() {
                body.insert("geometryType".into(), json!(name));
            }
            Json::Object(body)
        }
        Answer::Features { features, exceeded } => {
            let writer = FeatureWriter::new(layer, query, source_crs)?;
            if query.format == Format::GeoJson {
                let mut body = Map::new();
                body.insert("type".into(), json!("FeatureCollection"));
                body.insert(
                    "features".into(),
                    Json::Array(
                        features
                            .iter()
                            .map(|feature| writer.geojson(feature))
                            .collect(),
                    ),
                );
                if exceeded {
                    body.insert(
                        "properties".into(),
                        json!({ "exceededTransferLimit": true }),
                    );
                }
                return Ok(Json::Object(body));
            }
            let mut body = header(layer, query);
            body.insert(
                "features".into(),
                Json::Array(
                    features
                        .iter()
                        .map(|feature| writer.esri(feature))
                        .collect(),
                ),
            );
            body.insert("exceededTransferLimit".into(), json!(exceeded));
            if let Some(name) = layer.geometry_type_name() {
                body.insert("geometryType".into(), json!(name));
            }
            Json::Object(body)
        }
    })
}
