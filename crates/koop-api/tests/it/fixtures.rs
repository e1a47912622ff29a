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

/// The fields each shape requires, and why (see each type's documentation): a layer's `id` names
/// its cache entry and its `url` is the item of an export request; a version's `id` is what data
/// is filed under; an export's `id` is polled and its `state` decides what happens next; a
/// validation's `is_valid` decides whether an export is created.
fn required(shape: Shape) -> &'static [&'static str] {
    match shape {
        Shape::Layer => &["id", "url"],
        Shape::Version => &["id"],
        Shape::Export => &["id", "state"],
        Shape::Validation => &["is_valid"],
    }
}

/// What a decoded body says in its required fields.
fn required_values(shape: Shape, value: &Value) -> Result<String> {
    use serde::Deserialize;
    Ok(match shape {
        Shape::Layer => {
            let layer = LayerDetails::deserialize(value)?;
            format!("{:?} {}", layer.id, layer.url)
        }
        Shape::Version => LayerVersion::deserialize(value)?.id.to_string(),
        Shape::Export => {
            let export = Export::deserialize(value)?;
            format!("{} {}", export.id, export.state)
        }
        Shape::Validation => ExportValidation::deserialize(value)?.is_valid.to_string(),
    })
}

/// Every classified object of every fixture body, with its shape and where it came from; read
/// once per test process.
fn classified_objects() -> Result<&'static [(String, Shape, Value)]> {
    static OBJECTS: std::sync::OnceLock<Vec<(String, Shape, Value)>> = std::sync::OnceLock::new();
    if let Some(objects) = OBJECTS.get() {
        return Ok(objects);
    }
    let objects = read_classified_objects()?;
    Ok(OBJECTS.get_or_init(|| objects))
}

fn read_classified_objects() -> Result<Vec<(String, Shape, Value)>> {
    let mut found = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(fixtures_dir())?.collect::<Result<_, _>>()?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        if Path::new(&name).extension().is_none_or(|ext| ext != "json") {
            continue;
        }
        let Ok(value) = read(&name) else {
            continue;
        };
        let items = match value {
            Value::Array(items) => items,
            other => vec![other],
        };
        // Items of one list share their shape: three of each kind per file are enough.
        let mut per_shape: BTreeMap<Shape, usize> = BTreeMap::new();
        for (index, item) in items.into_iter().enumerate() {
            if let Some(shape) = shape_of(&item) {
                let seen = per_shape.entry(shape).or_default();
                *seen += 1;
                if *seen <= 3 {
                    found.push((format!("{name}[{index}]"), shape, item));
                }
            }
        }
    }
    Ok(found)
}

/// Every path into `value` (object keys and array indices, at any depth) below the top level's
/// `skip` keys.
fn paths(value: &Value, skip: &[&str]) -> Vec<Vec<PathStep>> {
    fn walk(value: &Value, prefix: &mut Vec<PathStep>, out: &mut Vec<Vec<PathStep>>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    prefix.push(PathStep::Key(key.clone()));
                    out.push(prefix.clone());
                    walk(child, prefix, out);
                    prefix.pop();
                }
            }
            Value::Array(items) => {
                for (index, child) in items.iter().enumerate().take(2) {
                    prefix.push(PathStep::Index(index));
                    out.push(prefix.clone());
                    walk(child, prefix, out);
                    prefix.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, &mut Vec::new(), &mut out);
    out.retain(|path| !matches!(path.first(), Some(PathStep::Key(key)) if skip.contains(&key.as_str()) && path.len() == 1));
    out
}

/// `value` with every list cut to its first two elements.
fn shortened(value: &Value) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.iter().take(2).map(shortened).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, child)| (key.clone(), shortened(child)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PathStep {
    Key(String),
    Index(usize),
}

fn slot<'a>(value: &'a mut Value, path: &[PathStep]) -> Option<&'a mut Value> {
    let mut current = value;
    for step in path {
        current = match step {
            PathStep::Key(key) => current.as_object_mut()?.get_mut(key)?,
            PathStep::Index(index) => current.as_array_mut()?.get_mut(*index)?,
        };
    }
    Some(current)
}

/// One value of each JSON kind (the random test below tries arbitrary ones).
fn odd_values() -> Vec<Value> {
    serde_json::from_str(r#"[null, -1, 1.5, "x", true, {"id": [null]}, [1, "a", {}]]"#)
        .unwrap_or_default()
}

#[test]
fn a_field_koop_does_not_require_never_breaks_decoding() -> Result<()> {
    let objects = classified_objects()?;
    assert!(objects.len() >= 25, "{} objects", objects.len());
    let mut decodes = 0;
    for (name, shape, original) in objects {
        // Long lists (extent rings of thousands of positions) are cut to two elements: every
        // field and shape stays present, and each of the thousands of decodes stays cheap.
        let original = &shortened(original);
        let expected = required_values(*shape, original).with_context(|| name.clone())?;
        let mut changed = original.clone();
        for path in paths(original, required(*shape)) {
            for odd in odd_values() {
                // Swap the odd value in, decode, swap the original back.
                let Some(target) = slot(&mut changed, &path) else {
                    continue;
                };
                let kept = std::mem::replace(target, odd.clone());
                let got = required_values(*shape, &changed)
                    .with_context(|| format!("{name}: {path:?} = {odd}"))?;
                assert_eq!(got, expected, "{name}: {path:?} = {odd}");
                if let Some(target) = slot(&mut changed, &path) {
                    *target = kept;
                }
                decodes += 1;
            }
        }
    }
    assert!(decodes > 5_000, "{decodes} decodes");
    Ok(())
}

#[test]
fn a_missing_required_field_is_an_error_that_names_it() -> Result<()> {
    for (name, shape, original) in classified_objects()? {
        for field in required(*shape) {
            let mut changed = original.clone();
            changed.as_object_mut().context("an object")?.remove(*field);
            let error =
                required_values(*shape, &changed).expect_err(&format!("{name} without {field}"));
            assert!(
                error
                    .to_string()
                    .contains(&format!("missing field `{field}`")),
                "{name}: {error}"
            );
        }
    }
    Ok(())
}

#[test]
fn crs_decodes_as_a_string_or_an_object_in_layers_versions_and_exports() -> Result<()> {
    let object = serde_json::json!({"id": "EPSG:2193", "srid": 2193, "name": "NZGD2000 / New Zealand Transverse Mercator 2000", "url": "https://data.linz.govt.nz/services/api/v1.x/coordinate-systems/2193/"});
    let mut export = read("exports__export_complete.json")?;
    export["crs"] = object.clone();
    let export: Export = serde_json::from_value(export)?;
    assert_eq!(export.crs.as_ref().and_then(Crs::epsg), Some(2193));
    let mut export = read("exports__export_complete.json")?;
    export["crs"] = serde_json::json!({"srid": "4326"});
    let export: Export = serde_json::from_value(export)?;
    assert_eq!(export.crs.map(|crs| crs.id), Some("EPSG:4326".to_owned()));
    let mut layer = read("responses__layers_single_good_simulated_response.json")?;
    layer["data"]["crs"] = object;
    let layer: LayerDetails = serde_json::from_value(layer)?;
    assert_eq!(layer.crs().and_then(Crs::epsg), Some(2193));
    let mut export = read("exports__export_detail.json")?;
    export["id"] = serde_json::json!("9");
    export["progress"] = serde_json::json!("0.5");
    let export: Export = serde_json::from_value(export)?;
    assert_eq!((export.id, export.progress), (9, Some(0.5)));
    Ok(())
}

mod random {
    use proptest::prelude::*;

    use super::*;

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |n| n.is_finite())
                .prop_map(Value::from),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("[a-z_]{1,8}", inner, 0..6)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn random_json_in_any_unneeded_field_decodes(
            object in any::<prop::sample::Index>(),
            path in any::<prop::sample::Index>(),
            odd in json(),
        ) {
            let objects = classified_objects().map_err(|error| TestCaseError::fail(error.to_string()))?;
            let (name, shape, original) = object.get(objects);
            let all = paths(original, required(*shape));
            prop_assume!(!all.is_empty());
            let path = path.get(&all);
            let expected = required_values(*shape, original)
                .map_err(|error| TestCaseError::fail(error.to_string()))?;
            let mut changed = original.clone();
            if let Some(target) = slot(&mut changed, path) {
                *target = odd.clone();
            }
            let got = required_values(*shape, &changed)
                .map_err(|error| TestCaseError::fail(format!("{name}: {path:?} = {odd}: {error}")))?;
            prop_assert_eq!(got, expected);
        }
    }
}
