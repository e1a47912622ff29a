//! Service and layer descriptions, shaped as the reference Koop (output-geoservices 8) answers
//! them: `rest/info`, the FeatureServer, its `layers`, and one layer.

use serde_json::{Value as Json, json};

use crate::esri::{self, FieldStyle};
use crate::layer::Layer;

/// Version of the ArcGIS REST API the descriptions follow.
const CURRENT_VERSION: f64 = 11.2;
const SERVICE_DESCRIPTION: &str = "A feature service exposed with koop.";
const LAYER_DESCRIPTION: &str = "A feature layer exposed with koop.";
const COPYRIGHT: &str = "Copyright information varies by provider. For more information please contact the source of this data.";

/// `rest/info`: the API version, and where tokens are issued when the provider issues them.
pub(crate) fn rest_info(token_url: Option<&str>) -> Json {
    let auth = match token_url {
        Some(url) => json!({"isTokenBasedSecurity": true, "tokenServicesUrl": url}),
        None => json!({"isTokenBasedSecurity": false}),
    };
    json!({"currentVersion": CURRENT_VERSION, "fullVersion": "11.2.0", "authInfo": auth})
}

fn layer_name(layer: &Layer, id: u32) -> String {
    layer.name.clone().unwrap_or_else(|| format!("Layer_{id}"))
}

/// The FeatureServer: one layer (or table) with id `id`.
pub(crate) fn server_info(layer: &Layer, id: u32) -> Json {
    let extent = layer
        .extent
        .map_or(Json::Null, |extent| extent.to_service_json(4326));
    let entry = json!({
        "id": id,
        "name": layer_name(layer, id),
        "type": if layer.is_table() { "Table" } else { "Feature Layer" },
        "parentLayerId": -1,
        "defaultVisibility": true,
        "subLayerIds": null,
        "minScale": 0,
        "maxScale": 0,
        "geometryType": layer.geometry_type_name(),
    });
    let (layers, tables) = if layer.is_table() {
        (Vec::new(), vec![entry])
    } else {
        (vec![entry], Vec::new())
    };
    json!({
        "currentVersion": CURRENT_VERSION,
        "serviceDescription": layer.description.as_deref().unwrap_or(SERVICE_DESCRIPTION),
        "hasVersionedData": false,
        "supportsDisconnectedEditing": false,
        "hasStaticData": false,
        "hasSharedDomains": false,
        "maxRecordCount": layer.max_record_count,
        "supportedQueryFormats": "JSON,geojson,PBF",
        "supportsVCSProjection": false,
        "supportedExportFormats": "",
        "capabilities": "Query",
        "description": layer.description.as_deref().unwrap_or(SERVICE_DESCRIPTION),
        "copyrightText": COPYRIGHT,
        "spatialReference": esri::spatial_reference(4326),
        "fullExtent": extent,
        "initialExtent": extent,
        "allowGeometryUpdates": false,
        "units": "esriDecimalDegrees",
        "supportsAppend": false,
        "supportsSharedDomains": false,
        "supportsWebHooks": false,
        "supportsTemporalLayers": false,
        "layerOverridesEnabled": false,
        "syncEnabled": false,
        "supportsApplyEditsWithGlobalIds": false,
        "supportsReturnDeleteResults": false,
        "supportsLayerOverrides": false,
        "supportsTilesAndBasicQueriesMode": true,
        "supportsQueryContingentValues": false,
        "supportedContingentValuesFormats": "",
        "supportsContingentValuesJson": null,
        "tables": tables,
        "layers": layers,
        "relationships": [],
        "supportsRelationshipsResource": false,
    })
}

/// The default renderer of a geometry type.
fn drawing_info(geometry_type: Option<&str>) -> Json {
    let outline = json!({"color": [190, 190, 190, 105], "width": 0.5, "type": "esriSLS", "style": "esriSLSSolid"});
    let symbol = match geometry_type {
        Some("esriGeometryPolyline") => {
            json!({"color": [247, 150, 70, 204], "width": 2, "type": "esriSLS", "style": "esriSLSSolid"})
        }
        Some("esriGeometryPolygon") => {
            json!({"color": [75, 172, 198, 161], "outline": outline, "type": "esriSFS", "style": "esriSFSSolid"})
        }
        _ => {
            json!({"color": [247, 150, 70, 161], "outline": outline, "size": 7.5, "type": "esriSMS", "style": "esriSMSCircle"})
        }
    };
    json!({"renderer": {"type": "simple", "symbol": symbol}, "labelingInfo": null})
}

/// What queries can do: paging, statistics, ordering, distinct values, extents.
fn advanced_query_capabilities() -> Json {
    json!({
        "supportsPagination": true,
        "supportsQueryAttachmentsCountOnly": false,
        "supportsPaginationOnAggregatedQueries": false,
        "supportsQueryRelatedPagination": false,
        "supportsQueryWithDistance": false,
        "supportsReturningQueryExtent": true,
        "supportsStatistics": true,
        "supportsOrderBy": true,
        "supportsDistinct": true,
        "supportsQueryWithResultType": false,
        "supportsSqlExpression": false,
        "supportsAdvancedQueryRelated": false,
        "supportsCountDistinct": false,
        "supportsPercentileStatistics": false,
        "supportedSpatialAggregationStatistics": [],
        "supportsLod": false,
        "supportsQueryWithLodSR": false,
        "supportedLodTypes": [],
        "supportsReturningGeometryCentroid": false,
        "supportsReturningGeometryEnvelope": false,
        "supportsQueryWithDatumTransformation": false,
        "supportsCurrentUserQueries": false,
        "supportsHavingClause": false,
        "supportsOutFieldSQLExpression": false,
        "supportsMaxRecordCountFactor": false,
        "supportsTopFeaturesQuery": false,
        "supportsDisjointSpatialRel": false,
        "supportsQueryWithCacheHint": false,
        "supportedOperationsWithCacheHint": [],
        "supportsQueryAnalytic": false,
        "supportsDefaultSR": false,
        "supportsFullTextSearch": false,
        "advancedQueryAnalyticCapabilities": {},
        "advancedEditingCapabilities": {},
    })
}

/// One layer's description, with the id the client asked for.
pub(crate) fn layer_info(layer: &Layer, id: u32) -> Json {
    let object_id = &layer.schema.object_id;
    let mut info = json!({
        "currentVersion": CURRENT_VERSION,
        "id": id,
        "name": layer_name(layer, id),
        "type": if layer.is_table() { "Table" } else { "Feature Layer" },
        "displayField": layer.display_field,
        "description": layer.description.as_deref().unwrap_or(LAYER_DESCRIPTION),
        "copyrightText": COPYRIGHT,
        "defaultVisibility": true,
        "isDataVersioned": false,
        "hasContingentValuesDefinition": false,
        "supportsAppend": false,
        "supportsCalculate": false,
        "supportsASyncCalculate": false,
        "supportsTruncate": false,
        "supportsAttachmentsByUploadId": false,
        "supportsAttachmentsResizing": false,
        "supportsRollbackOnFailureParameter": false,
        "supportsStatistics": true,
        "supportsExceedsLimitStatistics": false,
        "supportsAdvancedQueries": true,
        "supportsValidateSql": false,
        "supportsLayerOverrides": false,
        "supportsTilesAndBasicQueriesMode": true,
        "supportsFieldDescriptionProperty": false,
        "supportsQuantizationEditMode": false,
        "supportsApplyEditsWithGlobalIds": false,
        "supportsReturningQueryGeometry": false,
        "supportedPbfFeatureEncodings": "",
        "advancedQueryCapabilities": advanced_query_capabilities(),
        "useStandardizedQueries": true,
        "allowGeometryUpdates": false,
        "hasAttachments": false,
        "htmlPopupType": "esriServerHTMLPopupTypeNone",
        "hasM": false,
        "hasZ": false,
        "objectIdField": object_id,
        "uniqueIdField": {"name": object_id, "isSystemMaintained": true},
        "globalIdField": "",
        "typeIdField": "",
        "dateFieldsTimeReference": {"timeZone": "UTC", "respectsDaylightSaving": false},
        "preferredTimeReference": null,
        "templates": [],
        "supportedQueryFormats": "JSON,geojson,PBF",
        "supportedAppendFormats": "",
        "supportedExportFormats": "",
        "supportedSpatialRelationships": [
            "esriSpatialRelIntersects",
            "esriSpatialRelContains",
            "esriSpatialRelEnvelopeIntersects",
            "esriSpatialRelWithin",
        ],
        "supportedContingentValuesFormats": "",
        "hasStaticData": false,
        "maxRecordCount": layer.max_record_count,
        "standardMaxRecordCount": layer.max_record_count,
        "standardMaxRecordCountNoGeometry": layer.max_record_count,
        "tileMaxRecordCount": layer.max_record_count,
        "maxRecordCountFactor": 1,
        "fields": layer.fields_json(FieldStyle::LayerInfo),
        "relationships": [],
        "indexes": [],
        "capabilities": "Query",
        "ownershipBasedAccessControlForFeatures": {"allowOthersToQuery": true},
        "types": [],
        "timeInfo": layer.time_info.clone().unwrap_or_else(|| json!({})),
        "minScale": 0,
        "maxScale": 0,
    });
    if !layer.is_table() {
        info["drawingInfo"] = drawing_info(layer.geometry_type_name());
        info["extent"] = layer
            .extent
            .map_or(Json::Null, |extent| extent.to_layer_json(4326));
    }
    // As Koop: f=pbf honours quantizationParameters when sent, but JSON answers are never
    // quantized, and a client told "true" may ask JSON for quantized coordinates.
    info["supportsCoordinatesQuantization"] = json!(false);
    info["hasLabels"] = json!(false);
    if let Some(name) = layer.geometry_type_name() {
        info["geometryType"] = json!(name);
    }
    info
}

/// `…/FeatureServer/layers`: the layer (or table), described in full.
pub(crate) fn layers(layer: &Layer, id: u32) -> Json {
    let info = layer_info(layer, id);
    if layer.is_table() {
        json!({"layers": [], "tables": [info]})
    } else {
        json!({"layers": [info], "tables": []})
    }
}
