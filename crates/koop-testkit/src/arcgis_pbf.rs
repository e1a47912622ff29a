//! Reading Esri's `f=pbf` answers independently of the server that wrote them: Esri's published
//! `FeatureCollection.proto` (fixture `arcgis-pbf/`) parsed at run time by the `protobuf` crate,
//! the message decoded dynamically and printed as proto3 JSON, and geometries rebuilt as the
//! specification's readers do (through `transform`, each part's first vertex whole and the rest
//! as deltas). For tests and benchmarks of FeatureServer outputs.

use protobuf::reflect::FileDescriptor;
use serde_json::Value;

use crate::TestkitError;

fn unexpected(what: impl std::fmt::Display) -> TestkitError {
    TestkitError::Unexpected(what.to_string())
}

/// Decodes a `FeatureCollectionPBuffer` with the published `.proto`, as proto3 JSON.
///
/// # Errors
///
/// [`TestkitError::Unexpected`] when the `.proto` does not parse or the bytes are not a
/// `FeatureCollectionPBuffer`; [`TestkitError::Io`] when the fixture cannot be read.
pub fn decode(bytes: &[u8]) -> Result<Value, TestkitError> {
    let dir = tempfile::tempdir()?;
    let text = std::fs::read(crate::fixtures::path("arcgis-pbf/FeatureCollection.proto"))?;
    // The fixture keeps the byte-order mark it was published with; the parser wants none.
    let text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&text);
    let proto = dir.path().join("FeatureCollection.proto");
    std::fs::write(&proto, text)?;
    let parsed = protobuf_parse::Parser::new()
        .pure()
        .include(dir.path())
        .input(&proto)
        .parse_and_typecheck()
        .map_err(unexpected)?;
    let files =
        FileDescriptor::new_dynamic_fds(parsed.file_descriptors, &[]).map_err(unexpected)?;
    let descriptor = files
        .iter()
        .find_map(|file| file.message_by_package_relative_name("FeatureCollectionPBuffer"))
        .ok_or_else(|| unexpected("no FeatureCollectionPBuffer in the .proto"))?;
    let message = descriptor.parse_from_bytes(bytes).map_err(unexpected)?;
    let json = protobuf_json_mapping::print_to_string(&*message).map_err(unexpected)?;
    serde_json::from_str(&json).map_err(unexpected)
}

/// A proto3 JSON number: 64-bit integers are strings there.
pub fn number(value: &Value) -> Option<f64> {
    value
        .as_f64()
        .or_else(|| value.as_str().and_then(|text| text.parse().ok()))
}

/// An attribute `Value` as JSON: whichever member of the oneof is set.
pub fn attribute(value: &Value) -> Value {
    match value.as_object().and_then(|members| members.iter().next()) {
        Some((key, found)) => match key.as_str() {
            "stringValue" => found.clone(),
            "nullValue" => Value::Null,
            _ => number(found).map_or(Value::Null, Value::from),
        },
        None => Value::Null,
    }
}

/// The parts of a decoded geometry in world coordinates: `lengths` vertices a part, each part's
/// first vertex whole and the rest deltas, through the transform.
pub fn parts(geometry: &Value, transform: &Value) -> Vec<Vec<(f64, f64)>> {
    let coords: Vec<f64> = geometry["coords"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(number)
        .collect();
    let mut lengths: Vec<usize> = geometry["lengths"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .filter_map(|n| usize::try_from(n).ok())
        .collect();
    if lengths.is_empty() {
        lengths.push(coords.len() / 2);
    }
    let scale = |name: &str| number(&transform["scale"][name]).unwrap_or(1.0);
    let translate = |name: &str| number(&transform["translate"][name]).unwrap_or(0.0);
    let upper_left = transform["quantizeOriginPostion"].as_str() != Some("lowerLeft");
    let world = |x: f64, y: f64| {
        let wy = if upper_left {
            translate("yTranslate") - y * scale("yScale")
        } else {
            translate("yTranslate") + y * scale("yScale")
        };
        (translate("xTranslate") + x * scale("xScale"), wy)
    };
    let mut out = Vec::new();
    let mut at = 0;
    for length in lengths {
        let mut part = Vec::new();
        let (mut x, mut y) = (0.0, 0.0);
        for vertex in 0..length {
            // A short `coords` ends the geometry: what was read is what the tests compare.
            let (Some(&dx), Some(&dy)) = (coords.get(at), coords.get(at + 1)) else {
                break;
            };
            at += 2;
            if vertex == 0 {
                (x, y) = (dx, dy);
            } else {
                x += dx;
                y += dy;
            }
            part.push(world(x, y));
        }
        out.push(part);
    }
    out
}

/// The Esri JSON geometry's parts: `[x, y]`, `points`, `paths` or `rings`.
pub fn json_parts(geometry: &Value) -> Vec<Vec<(f64, f64)>> {
    let pair = |point: &Value| {
        (
            point[0].as_f64().unwrap_or(f64::NAN),
            point[1].as_f64().unwrap_or(f64::NAN),
        )
    };
    if let (Some(x), Some(y)) = (geometry["x"].as_f64(), geometry["y"].as_f64()) {
        return vec![vec![(x, y)]];
    }
    for key in ["rings", "paths"] {
        if let Some(parts) = geometry[key].as_array() {
            return parts
                .iter()
                .map(|part| part.as_array().into_iter().flatten().map(pair).collect())
                .collect();
        }
    }
    geometry["points"]
        .as_array()
        .map(|points| vec![points.iter().map(pair).collect()])
        .unwrap_or_default()
}
