//! What the FeatureServer knows of a provider's layer: its fields, object id, geometry type and
//! extent, from the provider's `metadata` (and, for providers that hold their data in memory and
//! declare less, from the features).

use std::sync::Arc;

use futures::StreamExt;
use koop_geoservices::{COMPUTED_OBJECT_ID, Schema};
use koop_provider::{
    Epsg, FieldType, FiltersApplied, GeometryType, Metadata, ProviderData, ProviderError,
    ProviderRequest, ProviderStream, QueryAnswer, infer_fields,
};
use koop_server::OutputContext;

use crate::esri::{self, Extent, FieldStyle};

/// Where a response's features come from.
pub(crate) enum Features {
    /// The provider's data, held (and cached) in memory.
    Data(Arc<ProviderData>),
    /// A stream from a provider that prefers streaming.
    Stream(Box<ProviderStream>),
}

/// A provider's answer to an info or query request.
pub(crate) struct Fetched {
    /// The `metadata` object.
    pub(crate) metadata: Metadata,
    /// What the provider already applied.
    pub(crate) applied: FiltersApplied,
    /// EPSG code of the coordinates (4326 unless the provider says otherwise).
    pub(crate) crs: Epsg,
    /// The provider's count of matching features, when it counted.
    pub(crate) count: Option<u64>,
    /// The query, when the provider answered it whole.
    pub(crate) answer: Option<QueryAnswer>,
    /// A tag that changes with the data, for `ETag`.
    pub(crate) version_tag: Option<String>,
    /// The features.
    pub(crate) features: Features,
}

impl Fetched {
    /// Asks the provider: `get_stream` when it prefers streaming, else the cached `get_data`.
    pub(crate) async fn fetch(
        context: &OutputContext,
        request: &ProviderRequest,
    ) -> Result<Self, ProviderError> {
        if context.provider.prefers_stream() {
            let mut stream = context.get_stream(request).await?;
            Ok(Self {
                metadata: stream.metadata.clone(),
                applied: stream.filters_applied,
                crs: stream.crs.unwrap_or(Epsg::WGS84),
                count: stream.count,
                answer: stream.answer.take(),
                version_tag: stream.version_tag.take(),
                features: Features::Stream(Box::new(stream)),
            })
        } else {
            let data = context.get_data(request).await?;
            Ok(Self {
                metadata: data.metadata.clone(),
                applied: data.filters_applied,
                crs: data.crs.unwrap_or(Epsg::WGS84),
                count: data.count,
                answer: data.answer.clone(),
                version_tag: data.version_tag.clone(),
                features: Features::Data(data),
            })
        }
    }

    /// The features held in memory, if any.
    fn held(&self) -> &[geojson::Feature] {
        match &self.features {
            Features::Data(data) => &data.features,
            Features::Stream(_) => &[],
        }
    }

    /// The extent of the features held in memory (for descriptions of layers whose metadata
    /// gives none; queries never need it).
    pub(crate) fn feature_extent(&self) -> Option<Extent> {
        let mut extent = None;
        for geometry in self
            .held()
            .iter()
            .filter_map(|feature| feature.geometry.as_ref())
        {
            Extent::include(&mut extent, &geometry.value);
        }
        extent
    }

    /// The first feature of a stream, for providers that declare too little metadata; it is
    /// put back in front of the stream.
    pub(crate) async fn peek(&mut self) -> Option<geojson::Feature> {
        let Features::Stream(stream) = &mut self.features else {
            return None;
        };
        // Rows become features here: the peeked one is handed back as a feature.
        let mut features = stream.take_features().peekable();
        let first = match std::pin::Pin::new(&mut features).peek().await {
            Some(Ok(feature)) => Some(feature.clone()),
            _ => None,
        };
        stream.features = Box::pin(features);
        first
    }
}

/// A layer as the FeatureServer describes it.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    /// Fields and object id.
    pub(crate) schema: Schema,
    /// Geometry type; `None` for tables.
    pub(crate) geometry_type: Option<GeometryType>,
    /// Extent in EPSG:4326, from the metadata (descriptions also compute it from the features
    /// held in memory).
    pub(crate) extent: Option<Extent>,
    /// `maxRecordCount`.
    pub(crate) max_record_count: u32,
    /// The layer's name.
    pub(crate) name: Option<String>,
    /// The layer's description.
    pub(crate) description: Option<String>,
    /// The field clients display.
    pub(crate) display_field: String,
    /// `timeInfo`.
    pub(crate) time_info: Option<serde_json::Value>,
}

impl Layer {
    /// Describes the layer of `fetched` (with `sample`, a first feature of a stream, for
    /// providers that declare no fields or geometry type).
    ///
    /// - Fields: `metadata.fields`; only when the provider declares none, inferred from every
    ///   feature held in memory (or the sample).
    /// - Object id: `metadata.idField` when it names an Integer field and (for data in memory)
    ///   every value is in 0..=2,147,483,647; otherwise a computed `OBJECTID`.
    pub(crate) fn describe(
        fetched: &Fetched,
        sample: Option<&geojson::Feature>,
        default_max_record_count: u32,
    ) -> Self {
        let metadata = &fetched.metadata;
        let held = fetched.held();
        let fields = if metadata.fields.is_empty() {
            match sample {
                Some(feature) => infer_fields(std::slice::from_ref(feature)),
                None => infer_fields(held),
            }
        } else {
            metadata.fields.clone()
        };
        let id_field = metadata.id_field.as_ref().filter(|name| {
            fields
                .iter()
                .any(|field| field.name == **name && field.field_type == FieldType::Integer)
                && held.iter().all(|feature| {
                    feature
                        .property(name.as_str())
                        .and_then(serde_json::Value::as_i64)
                        .is_some_and(|id| (0..=i64::from(i32::MAX)).contains(&id))
                })
        });
        let geometry_type = metadata.geometry_type.or_else(|| {
            sample
                .into_iter()
                .chain(held)
                .find_map(|feature| feature.geometry.as_ref())
                .and_then(|geometry| GeometryType::of(&geometry.value))
        });
        let extent = metadata.extent.map(Extent::from_metadata);
        let object_id = id_field
            .cloned()
            .unwrap_or_else(|| COMPUTED_OBJECT_ID.to_owned());
        Self {
            display_field: metadata
                .display_field
                .clone()
                .unwrap_or_else(|| object_id.clone()),
            schema: Schema {
                fields,
                object_id_is_attribute: id_field.is_some(),
                object_id,
            },
            geometry_type,
            extent,
            max_record_count: metadata
                .max_record_count
                .unwrap_or(default_max_record_count),
            name: metadata.name.clone(),
            description: metadata.description.clone(),
            time_info: metadata.time_info.clone(),
        }
    }

    /// The type of field `name` (any case; the computed object id is an Integer).
    pub(crate) fn field_type(&self, name: &str) -> FieldType {
        self.schema
            .field(name)
            .map_or(FieldType::String, |(_, field_type)| field_type)
    }

    /// `true` for a table (no geometry).
    pub(crate) fn is_table(&self) -> bool {
        self.geometry_type.is_none()
    }

    /// The definition of field `name` (a layer field or the object id), for responses.
    pub(crate) fn field_json(&self, name: &str, style: FieldStyle) -> Option<serde_json::Value> {
        if name == self.schema.object_id {
            let alias = self
                .schema
                .fields
                .iter()
                .find(|field| field.name == name)
                .and_then(|field| field.alias.as_deref());
            return Some(esri::field(name, alias, None, None, style));
        }
        let field = self.schema.fields.iter().find(|field| field.name == name)?;
        Some(esri::field(
            &field.name,
            field.alias.as_deref(),
            Some(field.field_type),
            field.length,
            style,
        ))
    }

    /// Every field's definition: a computed object id first, then the layer's fields (the
    /// `idField` typed `esriFieldTypeOID`).
    pub(crate) fn fields_json(&self, style: FieldStyle) -> Vec<serde_json::Value> {
        let computed = (!self.schema.object_id_is_attribute).then(|| self.schema.object_id.clone());
        computed
            .iter()
            .chain(self.schema.fields.iter().map(|field| &field.name))
            .filter_map(|name| self.field_json(name, style))
            .collect()
    }

    /// `esriGeometry…`, for layers with geometry.
    pub(crate) fn geometry_type_name(&self) -> Option<&'static str> {
        self.geometry_type.map(esri::geometry_type_name)
    }
}
