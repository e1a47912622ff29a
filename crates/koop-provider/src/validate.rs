//! GeoJSON validation of what providers return, outside production.
//!
//! Checks RFC 7946 on the features (positions of 2 or 3 numbers; longitudes and latitudes in
//! range when the data claims EPSG:4326; polygon rings closed, of at least 4 positions, exterior
//! rings counterclockwise and holes clockwise: the right-hand rule of §3.1.6) and the metadata
//! against them (geometry type; properties against declared fields). Each problem is logged once
//! per layer as a `tracing` warning. Off when `KOOP_ENV=production` or `KOOP_WARNINGS=suppress`,
//! as Koop does.

use std::collections::HashSet;
use std::sync::Mutex;

use geojson::{Feature, GeometryValue};

use crate::model::{FieldType, GeometryType, Metadata, ProviderData};

/// Validates provider data and logs each problem once per layer.
#[derive(Debug)]
pub struct GeoJsonValidator {
    enabled: bool,
    reported: Mutex<HashSet<(String, String)>>,
}

impl Default for GeoJsonValidator {
    fn default() -> Self {
        Self::from_env()
    }
}

impl GeoJsonValidator {
    /// A validator that checks (`true`) or does nothing (`false`).
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            reported: Mutex::new(HashSet::new()),
        }
    }

    /// Enabled unless `koop_env` is `production` or `koop_warnings` is `suppress`.
    pub fn for_environment(koop_env: Option<&str>, koop_warnings: Option<&str>) -> Self {
        let production = koop_env.is_some_and(|env| env.eq_ignore_ascii_case("production"));
        let suppressed =
            koop_warnings.is_some_and(|warnings| warnings.eq_ignore_ascii_case("suppress"));
        Self::new(!production && !suppressed)
    }

    /// From the `KOOP_ENV` and `KOOP_WARNINGS` environment variables.
    pub fn from_env() -> Self {
        Self::for_environment(
            std::env::var("KOOP_ENV").ok().as_deref(),
            std::env::var("KOOP_WARNINGS").ok().as_deref(),
        )
    }

    /// Whether it checks anything.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    fn report(&self, key: &str, problems: Vec<String>) {
        if problems.is_empty() {
            return;
        }
        let mut reported = self
            .reported
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for problem in problems {
            if reported.insert((key.to_owned(), problem.clone())) {
                tracing::warn!(layer = key, "invalid GeoJSON from the provider: {problem}");
            }
        }
    }

    /// Checks everything `get_data` returned for the layer cached under `key`.
    pub fn check_data(&self, key: &str, data: &ProviderData) {
        if !self.enabled {
            return;
        }
        let geographic = data.crs.is_none_or(|crs| crs == koop_types::Epsg::WGS84);
        for feature in &data.features {
            self.report(key, feature_problems(&data.metadata, geographic, feature));
        }
    }

    /// Checks one streamed feature of the layer cached under `key`.
    pub fn check_feature(&self, key: &str, metadata: &Metadata, feature: &Feature) {
        if self.enabled {
            self.report(key, feature_problems(metadata, true, feature));
        }
    }
}

/// Twice the signed area of a ring (shoelace): positive when counterclockwise.
fn signed_area(ring: &[geojson::Position]) -> f64 {
    ring.windows(2)
        .map(|pair| {
            let (a, b) = (&pair[0], &pair[1]);
            match (a.as_slice(), b.as_slice()) {
                ([ax, ay, ..], [bx, by, ..]) => ax * by - bx * ay,
                _ => 0.0,
            }
        })
        .sum()
}

fn check_positions(positions: &[&geojson::Position], geographic: bool, problems: &mut Vec<String>) {
    for position in positions {
        match position.as_slice() {
            [x, y] | [x, y, _] => {
                if !x.is_finite() || !y.is_finite() {
                    problems.push("a position is not a finite number".to_owned());
                } else if geographic && (x.abs() > 180.0 || y.abs() > 90.0) {
                    problems.push(
                        "coordinates out of range for EPSG:4326 (longitude beyond ±180 or latitude beyond ±90); GeoJSON coordinates are WGS 84 degrees"
                            .to_owned(),
                    );
                }
            }
            _ => problems.push("a position does not have 2 or 3 numbers".to_owned()),
        }
    }
}

fn check_polygon(rings: &[Vec<geojson::Position>], problems: &mut Vec<String>) {
    for (index, ring) in rings.iter().enumerate() {
        if ring.len() < 4 {
            problems.push("a polygon ring has fewer than 4 positions".to_owned());
            continue;
        }
        if ring.first() != ring.last() {
            problems
                .push("a polygon ring is not closed (first and last positions differ)".to_owned());
        }
        let area = signed_area(ring);
        if index == 0 && area < 0.0 {
            problems.push(
                "a polygon's exterior ring is clockwise; RFC 7946 §3.1.6 (right-hand rule) wants it counterclockwise".to_owned(),
            );
        } else if index > 0 && area > 0.0 {
            problems.push("a polygon hole is counterclockwise; RFC 7946 §3.1.6 (right-hand rule) wants holes clockwise".to_owned());
        }
    }
}

fn check_geometry(value: &GeometryValue, geographic: bool, problems: &mut Vec<String>) {
    match value {
        GeometryValue::Point { coordinates } => {
            check_positions(&[coordinates], geographic, problems);
        }
        GeometryValue::MultiPoint { coordinates } | GeometryValue::LineString { coordinates } => {
            check_positions(
                &coordinates.iter().collect::<Vec<_>>(),
                geographic,
                problems,
            );
        }
        GeometryValue::MultiLineString { coordinates } => {
            check_positions(
                &coordinates.iter().flatten().collect::<Vec<_>>(),
                geographic,
                problems,
            );
        }
        GeometryValue::Polygon { coordinates } => {
            check_positions(
                &coordinates.iter().flatten().collect::<Vec<_>>(),
                geographic,
                problems,
            );
            check_polygon(coordinates, problems);
        }
        GeometryValue::MultiPolygon { coordinates } => {
            for polygon in coordinates {
                check_positions(
                    &polygon.iter().flatten().collect::<Vec<_>>(),
                    geographic,
                    problems,
                );
                check_polygon(polygon, problems);
            }
        }
        GeometryValue::GeometryCollection { geometries } => {
            for geometry in geometries {
                check_geometry(&geometry.value, geographic, problems);
            }
        }
    }
}

fn matches_type(field_type: FieldType, value: &serde_json::Value) -> bool {
    match (field_type, value) {
        (FieldType::Integer, serde_json::Value::Number(number)) => {
            number.is_i64() || number.is_u64()
        }
        (_, serde_json::Value::Null)
        | (FieldType::Double, serde_json::Value::Number(_))
        | (FieldType::String, serde_json::Value::String(_))
        | (FieldType::Date, serde_json::Value::String(_) | serde_json::Value::Number(_)) => true,
        _ => false,
    }
}

/// The problems of one feature against `metadata`. `geographic` when the coordinates should be
/// EPSG:4326 degrees.
pub fn feature_problems(metadata: &Metadata, geographic: bool, feature: &Feature) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(geometry) = &feature.geometry {
        check_geometry(&geometry.value, geographic, &mut problems);
        if let (Some(declared), Some(actual)) =
            (metadata.geometry_type, GeometryType::of(&geometry.value))
            && declared != actual
        {
            problems.push(format!(
                "a feature's geometry is a {actual:?} but metadata.geometryType is {declared:?}"
            ));
        }
    }
    if !metadata.fields.is_empty() {
        let empty = serde_json::Map::new();
        let properties = feature.properties.as_ref().unwrap_or(&empty);
        for (name, value) in properties {
            match metadata.fields.iter().find(|field| field.name == *name) {
                None => problems.push(format!(
                    "property {name:?} is not declared in metadata.fields"
                )),
                Some(field) if !matches_type(field.field_type, value) => problems.push(format!(
                    "property {name:?} holds {value_kind} but its field is {:?}",
                    field.field_type,
                    value_kind = match value {
                        serde_json::Value::Bool(_) => "a boolean",
                        serde_json::Value::Number(_) => "a number",
                        serde_json::Value::String(_) => "a string",
                        serde_json::Value::Array(_) => "an array",
                        serde_json::Value::Object(_) => "an object",
                        serde_json::Value::Null => "null",
                    }
                )),
                Some(_) => {}
            }
        }
        for field in &metadata.fields {
            if !properties.contains_key(&field.name) {
                problems.push(format!(
                    "declared field {:?} is missing from a feature's properties",
                    field.name
                ));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Field;

    fn polygon(rings: &serde_json::Value) -> Feature {
        serde_json::from_value(serde_json::json!({
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": rings},
            "properties": {"name": "x"},
        }))
        .expect("a feature")
    }

    #[test]
    fn the_right_hand_rule_and_ranges_are_checked() {
        let metadata = Metadata {
            geometry_type: Some(GeometryType::Polygon),
            fields: vec![Field::new("name", FieldType::String)],
            ..Metadata::default()
        };
        let counterclockwise = polygon(&serde_json::json!([[
            [0, 0],
            [1, 0],
            [1, 1],
            [0, 1],
            [0, 0]
        ]]));
        assert!(feature_problems(&metadata, true, &counterclockwise).is_empty());
        let clockwise = polygon(&serde_json::json!([[
            [0, 0],
            [0, 1],
            [1, 1],
            [1, 0],
            [0, 0]
        ]]));
        let problems = feature_problems(&metadata, true, &clockwise);
        assert!(
            problems
                .iter()
                .any(|problem| problem.contains("right-hand rule")),
            "{problems:?}"
        );
        let far = polygon(&serde_json::json!([[
            [170, 0],
            [190, 0],
            [190, 1],
            [170, 1],
            [170, 0]
        ]]));
        assert!(
            feature_problems(&metadata, true, &far)
                .iter()
                .any(|problem| problem.contains("out of range"))
        );
        assert!(
            !feature_problems(&metadata, false, &far)
                .iter()
                .any(|problem| problem.contains("out of range"))
        );
        let open = polygon(&serde_json::json!([[[0, 0], [1, 0], [1, 1], [0, 1]]]));
        assert!(
            feature_problems(&metadata, true, &open)
                .iter()
                .any(|problem| problem.contains("not closed"))
        );
    }

    #[test]
    fn properties_are_checked_against_fields() {
        let metadata = Metadata {
            fields: vec![
                Field::new("population", FieldType::Integer),
                Field::new("name", FieldType::String),
            ],
            ..Metadata::default()
        };
        let feature: Feature = serde_json::from_value(serde_json::json!({
            "type": "Feature", "geometry": null,
            "properties": {"population": "many", "extra": 1},
        }))
        .expect("a feature");
        let problems = feature_problems(&metadata, true, &feature);
        assert!(
            problems
                .iter()
                .any(|p| p.contains("\"population\" holds a string but its field is Integer")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("\"extra\" is not declared"))
        );
        assert!(problems.iter().any(|p| p.contains("\"name\" is missing")));
    }

    #[test]
    fn production_turns_validation_off() {
        assert!(!GeoJsonValidator::for_environment(Some("production"), None).is_enabled());
        assert!(!GeoJsonValidator::for_environment(None, Some("suppress")).is_enabled());
        assert!(GeoJsonValidator::for_environment(Some("development"), None).is_enabled());
    }
}
