//! Every layer, version and export body in `koop-testkit/fixtures/koordinates/` decodes.
//!
//! The folder is read, and each JSON body is classified by its shape, so a fixture added later
//! is covered without a code change.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use koop_api::{
    Crs, Export, ExportFormat, ExportState, ExportValidation, ItemId, ItemType, LayerDetails,
    LayerKind, LayerVersion, Linked,
};
use serde_json::Value;

fn fixtures_dir() -> PathBuf {
    koop_testkit::fixtures::koordinates()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Shape {
    Layer,
    Version,
    Export,
    Validation,
}

fn url_segments(object: &serde_json::Map<String, Value>) -> Vec<String> {
    object
        .get("url")
        .and_then(Value::as_str)
        .and_then(|url| url.split("/services/api/").nth(1))
        .map(|path| {
            path.split('/')
                .skip(1)
                .filter(|segment| !segment.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The shape of one object, from its fields and its URL path.
fn shape_of(value: &Value) -> Option<Shape> {
    let object = value.as_object()?;
    let segments = url_segments(object);
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    if object.contains_key("is_valid") && object.contains_key("items") {
        return Some(Shape::Validation);
    }
    match segments.as_slice() {
        ["exports", id] if object.contains_key("state") && id.parse::<u64>().is_ok() => {
            Some(Shape::Export)
        }
        ["layers" | "tables", _, "versions", _] if object.contains_key("status") => {
            Some(Shape::Version)
        }
        ["layers" | "tables" | "datasets", _]
            if matches!(
                object.get("type").and_then(Value::as_str),
                Some("layer" | "table")
            ) =>
        {
            Some(Shape::Layer)
        }
        _ => None,
    }
}

fn decode_as(shape: Shape, value: &Value) -> Result<()> {
    match shape {
        Shape::Layer => drop(serde_json::from_value::<LayerDetails>(value.clone())?),
        Shape::Version => drop(serde_json::from_value::<LayerVersion>(value.clone())?),
        Shape::Export => drop(serde_json::from_value::<Export>(value.clone())?),
        Shape::Validation => drop(serde_json::from_value::<ExportValidation>(value.clone())?),
    }
    Ok(())
}

fn read(name: &str) -> Result<Value> {
    let path = fixtures_dir().join(name);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

#[test]
fn every_layer_version_and_export_body_decodes() -> Result<()> {
    let mut decoded: BTreeMap<Shape, Vec<String>> = BTreeMap::new();
    let mut entries: Vec<_> = std::fs::read_dir(fixtures_dir())
        .context("the Koordinates fixtures folder")?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        if Path::new(&name).extension().is_none_or(|ext| ext != "json") {
            continue;
        }
        let Ok(value) = read(&name) else {
            continue;
        };
        let items: Vec<&Value> = match &value {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        // Lists may mix kinds (the catalog holds layers, tables, documents and sets): each item
        // is classified on its own.
        let mut shapes = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let Some(shape) = shape_of(item) else {
                continue;
            };
            decode_as(shape, item).with_context(|| format!("{name}: item {index} as {shape:?}"))?;
            if !shapes.contains(&shape) {
                shapes.push(shape);
            }
        }
        for shape in shapes {
            decoded.entry(shape).or_default().push(name.clone());
        }
    }
    let count = |shape| decoded.get(&shape).map_or(0, Vec::len);
    // The folder holds 14 layer bodies/lists, 3 version bodies/lists, 6 exports and 2 validations
    // today: fewer means the classification lost some.
    assert!(count(Shape::Layer) >= 14, "layers: {decoded:#?}");
    assert!(count(Shape::Version) >= 3, "versions: {decoded:#?}");
    assert!(count(Shape::Export) >= 5, "exports: {decoded:#?}");
    assert_eq!(count(Shape::Validation), 2, "validations: {decoded:#?}");
    Ok(())
}

fn layer(name: &str) -> Result<LayerDetails> {
    Ok(serde_json::from_value(read(name)?)?)
}

#[test]
fn v1_layer_reads_name_string_crs_and_version_from_url() -> Result<()> {
    let details = layer("responses__layers_single_good_simulated_response.json")?;
    assert_eq!(details.title, "Wellington City Building Footprints");
    assert_eq!(details.id, ItemId::Number(1474));
    assert_eq!(details.kind, Some(LayerKind::Vector));
    assert!(details.version.is_none());
    assert_eq!(details.version_id(), Some(4067));
    assert_eq!(details.data_version_id(), Some(4067));
    assert_eq!(details.crs().and_then(Crs::epsg), Some(2193));
    assert_eq!(details.fields().len(), 7);
    assert!(
        details
            .dc_metadata_url()
            .is_some_and(|url| url.ends_with("/metadata/dc/"))
    );
    Ok(())
}

#[test]
fn v1x_raster_knows_its_metadata_only_version() -> Result<()> {
    let details = layer("kapipy__layers__raster.json")?;
    assert_eq!(details.kind, Some(LayerKind::Raster));
    assert_eq!(details.version_id(), Some(409_411));
    assert!(details.is_metadata_only_version());
    assert_eq!(details.data_version_id(), Some(408_934));
    let formats = details
        .data
        .as_ref()
        .and_then(|data| data.export_formats.clone());
    assert!(
        formats
            .unwrap_or_default()
            .iter()
            .any(|format| format.mimetype == ExportFormat::GeoTiff.as_str())
    );
    assert!(matches!(details.publisher, Some(Linked::Expanded(_))));
    Ok(())
}

#[test]
fn v1x_links_decode_as_url_or_expanded() -> Result<()> {
    let marks = layer("kapipy__sample_api_data__LAYER_JSON.json")?;
    assert!(matches!(marks.publisher, Some(Linked::Url(_))));
    assert!(matches!(marks.services, Some(Linked::Url(_))));
    assert!(matches!(marks.styles, Some(Linked::Url(_))));
    assert_eq!(marks.crs().and_then(Crs::epsg), Some(4167));
    assert!(!marks.is_metadata_only_version());
    let titles = layer("kapipy__layer_vector__response.json")?;
    assert!(matches!(titles.services, Some(Linked::Expanded(ref list)) if !list.is_empty()));
    Ok(())
}

#[test]
fn grid_table_and_point_cloud_decode() -> Result<()> {
    let grid = layer("kapipy__layers__grid.json")?;
    assert_eq!(grid.kind, Some(LayerKind::Grid));
    assert_eq!(
        ExportFormat::for_kind(&LayerKind::Grid),
        Some(ExportFormat::GeoTiff)
    );

    let table = layer("kapipy__tables__table.json")?;
    assert_eq!(table.item_type, ItemType::Table);
    assert_eq!(table.kind, Some(LayerKind::Table));
    assert!(table.crs().is_none());

    let cloud = layer("kapipy__layers__point_cloud.json")?;
    assert_eq!(cloud.id, ItemId::Text("d3RtF9GKtV9pqYL".into()));
    assert_eq!(cloud.layer_id(), None);
    assert_eq!(cloud.kind, Some(LayerKind::PointCloud));
    assert_eq!(ExportFormat::for_kind(&LayerKind::PointCloud), None);
    Ok(())
}

#[test]
fn export_states_and_validation_reasons_decode() -> Result<()> {
    let list: Vec<Export> = serde_json::from_value(read("exports__export_list.json")?)?;
    let states: Vec<ExportState> = list.iter().map(|export| export.state.clone()).collect();
    assert_eq!(
        states,
        [
            ExportState::Complete,
            ExportState::Cancelled,
            ExportState::Complete,
            ExportState::Processing,
            ExportState::Gone
        ]
    );
    let complete: Export = serde_json::from_value(read("exports__export_complete.json")?)?;
    assert!(
        complete
            .download_url
            .as_deref()
            .is_some_and(|url| url.ends_with("/exports/19/download/"))
    );
    assert_eq!(complete.progress, Some(1.0));
    let cancelled: Export = serde_json::from_value(read("exports__cancel_ok.json")?)?;
    assert_eq!(cancelled.progress, None);

    let invalid: ExportValidation =
        serde_json::from_value(read("exports__validation_error.json")?)?;
    assert!(!invalid.is_valid);
    assert_eq!(
        invalid.reasons(),
        [
            "https://test.koordinates.com/services/api/v1/layers/3/: outside-extent",
            "https://test.koordinates.com/services/api/v1/layers/1/: outside-extent"
        ]
    );
    Ok(())
}
