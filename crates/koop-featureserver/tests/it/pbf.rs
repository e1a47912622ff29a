//! `f=pbf` decoded by an independent implementation: the `protobuf` crate parses Esri's published
//! `FeatureCollection.proto` (koop-testkit fixture) at run time and decodes koop's answers
//! dynamically, as the specification's readers do (transform, each part's first vertex whole and
//! the rest as deltas). What it reads must be what `f=json` and `f=geojson` say.

use anyhow::{Context, Result, ensure};
use koop_testkit::arcgis_pbf::{attribute, decode, json_parts, number, parts};
use serde_json::Value;

use crate::get_json;
use crate::koordinates::Setup;

/// Checks that the PBF answer of `query` decodes to the features of its `f=json` answer:
/// the same fields in order, the same attributes, and every vertex within half a grid cell.
async fn same_as_json(url: &str, query: &[(&str, &str)], cell: f64) -> Result<usize> {
    let view = query.iter().any(|(name, value)| {
        *name == "quantizationParameters" && value.contains(r#""mode":"view""#)
    });
    let mut pbf_query = query.to_vec();
    pbf_query.push(("f", "pbf"));
    let (bytes, content_type) = koop_testkit::http::get_bytes(url, &pbf_query).await?;
    ensure!(content_type == "application/x-protobuf", "{content_type}");
    let decoded = decode(&bytes)?;
    let result = &decoded["queryResult"]["featureResult"];
    let (_, json) = get_json(url, query).await?;
    ensure!(decoded["version"] == "1", "{}", decoded["version"]);
    ensure!(result["objectIdFieldName"] == json["objectIdFieldName"]);
    let names: Vec<&str> = result["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|field| field["name"].as_str())
        .collect();
    let json_names: Vec<&str> = json["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|field| field["name"].as_str())
        .collect();
    ensure!(
        names == json_names,
        "fields {names:?} against {json_names:?}"
    );
    let features = result["features"].as_array().context("features")?;
    let json_features = json["features"].as_array().context("json features")?;
    ensure!(
        features.len() == json_features.len() && !features.is_empty(),
        "{} features against {}",
        features.len(),
        json_features.len()
    );
    ensure!(
        result["exceededTransferLimit"].as_bool().unwrap_or(false)
            == json["exceededTransferLimit"].as_bool().unwrap_or(false)
    );
    for (feature, expected) in features.iter().zip(json_features) {
        let attributes = feature["attributes"].as_array().context("attributes")?;
        ensure!(attributes.len() == names.len());
        for (name, value) in names.iter().zip(attributes) {
            let got = attribute(value);
            let want = &expected["attributes"][*name];
            let same = match (got.as_f64(), want.as_f64()) {
                (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                _ => &got == want,
            };
            ensure!(same, "{name}: {got} against {want}");
        }
        let got = parts(&feature["geometry"], &result["transform"]);
        let want = json_parts(&expected["geometry"]);
        ensure!(
            got.len() == want.len(),
            "{} parts against {}",
            got.len(),
            want.len()
        );
        let near = |(x, y): (f64, f64), (ex, ey): (f64, f64)| {
            (x - ex).abs() <= cell / 2.0 + 1e-9 && (y - ey).abs() <= cell / 2.0 + 1e-9
        };
        for (part, expected_part) in got.iter().zip(&want) {
            if !view {
                ensure!(part.len() == expected_part.len());
                for (&got, &expected) in part.iter().zip(expected_part) {
                    ensure!(near(got, expected), "{got:?} against {expected:?}");
                }
                continue;
            }
            // `mode=view` leaves out vertices in the cell of the one before: what is left is
            // the original's vertices in order, with both ends.
            ensure!(part.len() <= expected_part.len() && !part.is_empty());
            ensure!(
                near(part[0], expected_part[0])
                    && near(part[part.len() - 1], expected_part[expected_part.len() - 1])
            );
            let mut rest = expected_part.iter();
            for &vertex in part {
                ensure!(
                    rest.any(|&expected| near(vertex, expected)),
                    "{vertex:?} is not one of the original's vertices, in order"
                );
            }
        }
    }
    Ok(features.len())
}

#[tokio::test]
async fn pbf_answers_decode_with_the_published_proto_to_the_json_answers() -> Result<()> {
    let setup = Setup::start().await?;
    let points = format!("{}/0/query", setup.service("koordinates", 1006));
    let polygons = format!("{}/0/query", setup.service("koordinates", 1002));

    // Points, every field (dates, doubles, strings, the OID), in degrees and in Web Mercator.
    let page = [
        ("where", "1=1"),
        ("outFields", "*"),
        ("outSR", "4326"),
        ("resultRecordCount", "300"),
    ];
    ensure!(same_as_json(&points, &page, 1e-9).await? == 300);
    let mercator = [
        ("where", "category='c3'"),
        ("outFields", "id,name"),
        ("outSR", "102100"),
        ("orderByFields", "id DESC"),
        ("resultRecordCount", "100"),
    ];
    same_as_json(&points, &mercator, 1e-4).await?;
    // Polygons with holes and many rings (Natural Earth), ids from the GeoPackage fid.
    let islands = [("where", "1=1"), ("outFields", "*"), ("outSR", "4326")];
    same_as_json(&polygons, &islands, 1e-9).await?;
    // The ArcGIS JS API's tile query: its grid, from the extent's upper-left corner.
    let tile = [
        ("where", "1=1"),
        ("outFields", "*"),
        ("outSR", "102100"),
        ("resultType", "tile"),
        (
            "quantizationParameters",
            r#"{"mode":"view","originPosition":"upperLeft","tolerance":500,"extent":{"xmin":-20037508.34,"ymin":-20037508.34,"xmax":20037508.34,"ymax":20037508.34,"spatialReference":{"wkid":102100}}}"#,
        ),
    ];
    same_as_json(&polygons, &tile, 500.0).await?;
    // A precision finer than a grid index can hold is coarsened, never wrapped around.
    let fine = [
        ("where", "1=1"),
        ("outFields", "fid"),
        ("outSR", "102100"),
        ("geometryPrecision", "17"),
    ];
    same_as_json(&polygons, &fine, 1e-8).await?;
    let too_fine = [
        ("where", "1=1"),
        ("outFields", "fid"),
        (
            "quantizationParameters",
            r#"{"mode":"view","originPosition":"upperLeft","tolerance":1e-300}"#,
        ),
        ("f", "pbf"),
    ];
    let (_, error) = get_json(&polygons, &too_fine).await?;
    ensure!(error["error"]["code"] == 400, "{error}");

    // The GeoJSON answer holds the same features: ids and coordinates.
    let (bytes, _) =
        koop_testkit::http::get_bytes(&points, &[page.as_slice(), &[("f", "pbf")]].concat())
            .await?;
    let decoded = decode(&bytes)?;
    let result = &decoded["queryResult"]["featureResult"];
    let (_, geojson) = get_json(&points, &[page.as_slice(), &[("f", "geojson")]].concat()).await?;
    let geojson = geojson["features"].as_array().context("geojson features")?;
    let id_index = result["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .position(|field| field["name"] == result["objectIdFieldName"])
        .context("the OID field")?;
    for (feature, expected) in result["features"]
        .as_array()
        .into_iter()
        .flatten()
        .zip(geojson)
    {
        ensure!(attribute(&feature["attributes"][id_index]).as_f64() == expected["id"].as_f64());
        let (x, y) = parts(&feature["geometry"], &result["transform"])[0][0];
        let coordinates = &expected["geometry"]["coordinates"];
        ensure!((x - coordinates[0].as_f64().unwrap_or(f64::NAN)).abs() < 1e-9);
        ensure!((y - coordinates[1].as_f64().unwrap_or(f64::NAN)).abs() < 1e-9);
    }

    Ok(())
}

#[tokio::test]
async fn counts_ids_and_extents_have_pbf_messages_of_their_own() -> Result<()> {
    let setup = Setup::start().await?;
    let points = format!("{}/0/query", setup.service("koordinates", 1006));
    let count = [("where", "category='c3'"), ("returnCountOnly", "true")];
    let (bytes, _) =
        koop_testkit::http::get_bytes(&points, &[count.as_slice(), &[("f", "pbf")]].concat())
            .await?;
    let (_, json) = get_json(&points, &count).await?;
    let decoded = decode(&bytes)?;
    ensure!(
        number(&decoded["queryResult"]["countResult"]["count"]) == json["count"].as_f64(),
        "{decoded}"
    );
    let ids = [("where", "value < 10"), ("returnIdsOnly", "true")];
    let (bytes, _) =
        koop_testkit::http::get_bytes(&points, &[ids.as_slice(), &[("f", "pbf")]].concat()).await?;
    let (_, json) = get_json(&points, &ids).await?;
    let decoded = decode(&bytes)?;
    let got: Vec<f64> = decoded["queryResult"]["idsResult"]["objectIds"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(number)
        .collect();
    let want: Vec<f64> = json["objectIds"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_f64)
        .collect();
    ensure!(
        !want.is_empty() && got == want,
        "{} ids against {}",
        got.len(),
        want.len()
    );
    let extent = [
        ("where", "1=1"),
        ("returnExtentOnly", "true"),
        ("returnCountOnly", "true"),
    ];
    let (bytes, _) =
        koop_testkit::http::get_bytes(&points, &[extent.as_slice(), &[("f", "pbf")]].concat())
            .await?;
    let (_, json) = get_json(&points, &extent).await?;
    let decoded = decode(&bytes)?;
    let envelope = &decoded["queryResult"]["extentCountResult"]["extent"];
    ensure!(
        number(&envelope["XMin"]) == json["extent"]["xmin"].as_f64(),
        "{decoded}"
    );
    ensure!(
        number(&decoded["queryResult"]["extentCountResult"]["count"]) == json["count"].as_f64()
    );

    // What the format has no message for is a Geoservices error, not a wrong answer.
    let statistics = [
        ("where", "1=1"),
        (
            "outStatistics",
            r#"[{"statisticType":"count","onStatisticField":"id","outStatisticFieldName":"n"}]"#,
        ),
        ("f", "pbf"),
    ];
    let (_, error) = get_json(&points, &statistics).await?;
    ensure!(error["error"]["code"] == 400, "{error}");

    // And the layer offers it.
    let (_, layer) = get_json(&format!("{}/0", setup.service("koordinates", 1006)), &[]).await?;
    let formats = layer["supportedQueryFormats"].as_str().unwrap_or_default();
    ensure!(
        formats.split(',').any(|format| format.trim() == "PBF"),
        "{formats}"
    );
    ensure!(layer["supportsCoordinatesQuantization"] == false);
    Ok(())
}
