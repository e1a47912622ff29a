//! The request sequences of real FeatureServer clients, replayed against a real `koop serve`:
//! QGIS adding a layer and panning it (after `QgsArcGisRestQueryUtils`: `getObjectIds`,
//! `getObjectIdsByExtent`, `getObjects`), and the ArcGIS Maps SDK for JavaScript counting a layer,
//! loading it as a snapshot in `f=pbf` pages and drawing it as quantized tiles.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use koop_testkit::arcgis_pbf;
use koop_testkit::{GeneratedContent, TestLayer, TestServer};
use serde_json::{Value, json};

use crate::serve::Served;

/// A points layer (EPSG:2193, integer `id` primary key) and a polygons layer (EPSG:2193, ids
/// from the GeoPackage's fid), and `koop serve` serving them.
async fn start(points: u64, first_id: u64) -> Result<(TestServer, tempfile::TempDir, Served)> {
    let site = TestServer::start().await?;
    site.add_layer(TestLayer::generated(
        first_id,
        "Client points",
        GeneratedContent::Points { count: points },
    ))?;
    site.add_layer(TestLayer::generated(
        first_id + 1,
        "Client polygons",
        GeneratedContent::Polygons {
            target_bytes: 3_000_000,
        },
    ))?;
    for layer in [first_id, first_id + 1] {
        site.set_export_latency(layer, Duration::ZERO);
    }
    let cache = tempfile::tempdir()?;
    let layers = format!("{first_id},{}", first_id + 1);
    let served = Served::start(&site, cache.path(), &["--layers", &layers]).await?;
    Ok((site, cache, served))
}

fn layer_url(served: &Served, site: &TestServer, layer: u64) -> String {
    format!(
        "{}/koordinates/rest/services/{}/{layer}/FeatureServer/0",
        served.base,
        site.domain()
    )
}

/// At most 200 characters of `value`, for messages.
fn short(value: &Value) -> String {
    value.to_string().chars().take(200).collect()
}

async fn get(url: &str, query: &[(&str, &str)]) -> Result<Value> {
    let (status, body) = koop_testkit::http::get_json(url, query).await?;
    ensure!(status == 200, "{url}: HTTP {status}");
    ensure!(
        body.get("error").is_none(),
        "{url} {query:?}: {}",
        short(&body)
    );
    Ok(body)
}

async fn get_pbf(url: &str, query: &[(&str, &str)]) -> Result<Value> {
    let (bytes, content_type) = koop_testkit::http::get_bytes(url, query).await?;
    ensure!(
        content_type == "application/x-protobuf",
        "{query:?}: {content_type}: {}",
        String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
    );
    Ok(arcgis_pbf::decode(&bytes)?)
}

/// Waits until the layer behind `layer_url` is cached (the first request starts its export).
async fn fetched(layer_url: &str) -> Result<()> {
    let started = Instant::now();
    loop {
        let (_, count) = koop_testkit::http::get_json(
            &format!("{layer_url}/query"),
            &[("where", "1=1"), ("returnCountOnly", "true"), ("f", "json")],
        )
        .await?;
        if count["count"].is_u64() {
            return Ok(());
        }
        ensure!(
            started.elapsed() < Duration::from_secs(120),
            "not fetched: {}",
            short(&count)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `xmin, ymin, xmax, ymax` of an Esri envelope.
fn envelope(extent: &Value) -> Result<[f64; 4]> {
    let side = |name: &str| extent[name].as_f64().with_context(|| name.to_owned());
    Ok([side("xmin")?, side("ymin")?, side("xmax")?, side("ymax")?])
}

/// The bounding box of every vertex of an Esri JSON geometry.
fn bounds(geometry: &Value) -> Option<[f64; 4]> {
    let mut box_ = [
        f64::INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NEG_INFINITY,
    ];
    for (x, y) in arcgis_pbf::json_parts(geometry).into_iter().flatten() {
        box_ = [
            box_[0].min(x),
            box_[1].min(y),
            box_[2].max(x),
            box_[3].max(y),
        ];
    }
    (box_[0] <= box_[2]).then_some(box_)
}

fn intersects(a: [f64; 4], b: [f64; 4]) -> bool {
    a[0] <= b[2] && b[0] <= a[2] && a[1] <= b[3] && b[1] <= a[3]
}

fn ids_of(answer: &Value) -> Result<Vec<i64>> {
    answer["objectIds"]
        .as_array()
        .with_context(|| format!("objectIds in {}", short(answer)))?
        .iter()
        .map(|id| id.as_i64().context("an integer id"))
        .collect()
}

/// QGIS's `getObjects`: one batch of ids with `inSR`/`outSR` the layer's, every field, no M or Z,
/// and (when panning) the map's box. Returns each feature's id and geometry bounds.
async fn qgis_batch(
    query_url: &str,
    object_id_field: &str,
    ids: &[i64],
    wkid: &str,
    bbox: Option<&str>,
) -> Result<Vec<(i64, Option<[f64; 4]>)>> {
    let joined = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    let mut query = vec![
        ("f", "json"),
        ("objectIds", joined.as_str()),
        ("inSR", wkid),
        ("outSR", wkid),
        ("returnGeometry", "true"),
        ("outFields", "*"),
        ("returnM", "false"),
        ("returnZ", "false"),
    ];
    if let Some(bbox) = bbox {
        query.extend([
            ("geometry", bbox),
            ("geometryType", "esriGeometryEnvelope"),
            ("spatialRel", "esriSpatialRelEnvelopeIntersects"),
        ]);
    }
    let page = get(query_url, &query).await?;
    ensure!(
        page["spatialReference"]["wkid"]
            .as_u64()
            .map(|w| w.to_string())
            .as_deref()
            == Some(wkid),
        "answered in {}",
        page["spatialReference"]
    );
    page["features"]
        .as_array()
        .context("features")?
        .iter()
        .map(|feature| {
            let id = feature["attributes"][object_id_field]
                .as_i64()
                .with_context(|| format!("{object_id_field} of {}", short(feature)))?;
            Ok((id, bounds(&feature["geometry"])))
        })
        .collect()
}

/// What QGIS learns when it adds a layer.
struct Added {
    object_id_field: String,
    /// The layer's CRS, from its extent.
    wkid: String,
    extent: [f64; 4],
    all_ids: Vec<i64>,
}

/// QGIS adds the layer: its description, then every id unpaged (`getObjectIds`).
async fn qgis_adds(url: &str, layer: u64) -> Result<Added> {
    let query_url = format!("{url}/query");
    // Adding the layer: its description.
    let info = get(url, &[("f", "json")]).await?;
    for key in [
        "extent",
        "objectIdField",
        "fields",
        "geometryType",
        "capabilities",
    ] {
        ensure!(!info[key].is_null(), "layer {layer}: no {key}");
    }
    ensure!(
        info["capabilities"]
            .as_str()
            .is_some_and(|capabilities| capabilities.split(',').any(|c| c == "Query")),
        "layer {layer}: capabilities {}",
        info["capabilities"]
    );
    let object_id_field = info["objectIdField"].as_str().context("objectIdField")?;
    ensure!(
        info["fields"]
            .as_array()
            .is_some_and(|fields| fields.iter().any(|field| {
                field["name"] == object_id_field && field["type"] == "esriFieldTypeOID"
            })),
        "layer {layer}: {object_id_field} is not an esriFieldTypeOID field"
    );
    // QGIS takes the layer's CRS from its extent.
    let spatial_reference = &info["extent"]["spatialReference"];
    let wkid = spatial_reference["latestWkid"]
        .as_u64()
        .or_else(|| spatial_reference["wkid"].as_u64())
        .context("the extent's wkid")?
        .to_string();
    let extent = envelope(&info["extent"])?;

    // Every id, unpaged, as 32-bit integers.
    let all = get(
        &query_url,
        &[("f", "json"), ("where", "1=1"), ("returnIdsOnly", "true")],
    )
    .await?;
    ensure!(all["objectIdFieldName"] == object_id_field);
    ensure!(all["exceededTransferLimit"] != true, "ids are paged");
    let all_ids = ids_of(&all)?;
    let count = get(
        &query_url,
        &[("f", "json"), ("where", "1=1"), ("returnCountOnly", "true")],
    )
    .await?["count"]
        .as_u64()
        .context("count")?;
    let unique: BTreeSet<i64> = all_ids.iter().copied().collect();
    ensure!(
        unique.len() == all_ids.len() && all_ids.len() as u64 == count && count > 300,
        "layer {layer}: {} ids, {} distinct, count {count}",
        all_ids.len(),
        unique.len()
    );
    ensure!(
        all_ids
            .iter()
            .all(|id| (0..=i64::from(i32::MAX)).contains(id)),
        "layer {layer}: an id outside 32 bits"
    );

    Ok(Added {
        object_id_field: object_id_field.to_owned(),
        wkid,
        extent,
        all_ids,
    })
}

/// QGIS pans to the middle of the layer: the ids in the view (`getObjectIdsByExtent`), then
/// their features 100 at a time (`getObjects`).
async fn qgis_pans(url: &str, layer: u64, added: &Added) -> Result<()> {
    let query_url = format!("{url}/query");
    let Added {
        object_id_field,
        wkid,
        extent,
        all_ids,
    } = added;
    let unique: BTreeSet<i64> = all_ids.iter().copied().collect();
    // Panning: the middle of the layer, in the layer's CRS, with no inSR.
    let (width, height) = (extent[2] - extent[0], extent[3] - extent[1]);
    let view = [
        extent[0] + width * 0.3,
        extent[1] + height * 0.3,
        extent[0] + width * 0.7,
        extent[1] + height * 0.7,
    ];
    let bbox = format!("{},{},{},{}", view[0], view[1], view[2], view[3]);
    let in_view = ids_of(
        &get(
            &query_url,
            &[
                ("f", "json"),
                ("where", "1=1"),
                ("returnIdsOnly", "true"),
                ("geometry", &bbox),
                ("geometryType", "esriGeometryEnvelope"),
                ("spatialRel", "esriSpatialRelEnvelopeIntersects"),
            ],
        )
        .await?,
    )?;
    let in_view_set: BTreeSet<i64> = in_view.iter().copied().collect();
    ensure!(
        !in_view.is_empty() && in_view.len() < all_ids.len() && in_view_set.is_subset(&unique),
        "layer {layer}: {} of {} ids in the view",
        in_view.len(),
        all_ids.len()
    );
    // The features of the view, 100 ids a request, with the view's box as QGIS sends it.
    for batch in in_view.chunks(100) {
        let features = qgis_batch(&query_url, object_id_field, batch, wkid, Some(&bbox)).await?;
        let got: BTreeSet<i64> = features.iter().map(|(id, _)| *id).collect();
        let asked: BTreeSet<i64> = batch.iter().copied().collect();
        ensure!(
            got == asked && features.len() == batch.len(),
            "layer {layer}: a batch of {} ids answered {} features",
            batch.len(),
            features.len()
        );
        for (id, geometry) in features {
            let geometry = geometry.with_context(|| format!("feature {id}: no geometry"))?;
            ensure!(
                intersects(geometry, view),
                "feature {id} at {geometry:?} is outside the view {view:?}"
            );
        }
    }
    // Every other feature, in batches without a box: none touches the view.
    let outside: Vec<i64> = all_ids
        .iter()
        .copied()
        .filter(|id| !in_view_set.contains(id))
        .collect();
    for batch in outside.chunks(100) {
        let features = qgis_batch(&query_url, object_id_field, batch, wkid, None).await?;
        ensure!(
            features.len() == batch.len(),
            "layer {layer}: a short batch"
        );
        for (id, geometry) in features {
            let geometry = geometry.with_context(|| format!("feature {id}: no geometry"))?;
            ensure!(
                !intersects(geometry, view),
                "feature {id} at {geometry:?} touches the view but was not listed"
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn qgis_adds_a_layer_and_pans_and_every_batch_holds_exactly_its_ids() -> Result<()> {
    let (site, _cache, served) = start(5_000, 7301).await?;
    for layer in [7301, 7302] {
        let url = layer_url(&served, &site, layer);
        fetched(&url).await?;
        let added = qgis_adds(&url, layer).await?;
        qgis_pans(&url, layer, &added).await?;
    }
    served.stop().await?;
    Ok(())
}

/// The decoded ids of a PBF feature result, by the object id field's position in `fields`.
fn pbf_ids(result: &Value) -> Result<Vec<i64>> {
    let name = result["objectIdFieldName"]
        .as_str()
        .context("objectIdFieldName")?;
    let position = result["fields"]
        .as_array()
        .context("fields")?
        .iter()
        .position(|field| field["name"] == name)
        .with_context(|| format!("{name} among the fields"))?;
    result["features"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|feature| {
            let id = arcgis_pbf::attribute(&feature["attributes"][position]);
            id.as_i64()
                .or_else(|| {
                    #[allow(clippy::cast_possible_truncation, reason = "checked integral")]
                    id.as_f64()
                        .filter(|id| id.fract() == 0.0 && id.abs() < 9e15)
                        .map(|id| id as i64)
                })
                .with_context(|| format!("an integer id: {id}"))
        })
        .collect()
}

/// The JS API loads the layer: its description and the count probe. Returns the object id
/// field and every id, sorted.
async fn js_counts(url: &str) -> Result<(String, Vec<i64>)> {
    let query_url = format!("{url}/query");
    let info = get(url, &[("f", "json")]).await?;
    // The JS API picks PBF from supportedQueryFormats once and never falls back.
    ensure!(
        info["supportedQueryFormats"]
            .as_str()
            .is_some_and(|formats| formats.split(',').any(|f| f.trim() == "PBF")),
        "supportedQueryFormats {}",
        info["supportedQueryFormats"]
    );
    ensure!(info["advancedQueryCapabilities"]["supportsPagination"] == true);
    ensure!(info["advancedQueryCapabilities"]["supportsOrderBy"] == true);
    let object_id_field = info["objectIdField"].as_str().context("objectIdField")?;

    // The count probe.
    let count = get(
        &query_url,
        &[
            ("f", "json"),
            ("where", "1=1"),
            ("returnIdsOnly", "true"),
            ("returnCountOnly", "true"),
            ("cacheHint", "true"),
        ],
    )
    .await?["count"]
        .as_u64()
        .context("count")?;
    let all_ids = ids_of(
        &get(
            &query_url,
            &[("f", "json"), ("where", "1=1"), ("returnIdsOnly", "true")],
        )
        .await?,
    )?;
    ensure!(
        count == all_ids.len() as u64 && count > 300,
        "count {count}"
    );
    let mut expected = all_ids.clone();
    expected.sort_unstable();

    Ok((object_id_field.to_owned(), expected))
}

/// A snapshot: pages in PBF ordered by the object id, in Web Mercator; every id once.
async fn js_snapshot(query_url: &str, layer: u64, order: &str, expected: &[i64]) -> Result<()> {
    // The snapshot: pages in PBF ordered by the object id, in Web Mercator.
    let page_size = 1000;
    let mut snapshot: Vec<i64> = Vec::new();
    for page in 0.. {
        ensure!(page < 100, "layer {layer}: the snapshot never ends");
        let offset = (page * page_size).to_string();
        let records = page_size.to_string();
        let query = [
            ("f", "pbf"),
            ("where", "1=1"),
            ("outFields", "*"),
            ("returnGeometry", "true"),
            ("spatialRel", "esriSpatialRelIntersects"),
            ("orderByFields", order),
            ("outSR", "102100"),
            ("resultOffset", offset.as_str()),
            ("resultRecordCount", records.as_str()),
            ("returnExceededLimitFeatures", "true"),
            ("maxRecordCountFactor", "4"),
            ("cacheHint", "true"),
        ];
        let decoded = get_pbf(query_url, &query).await?;
        let result = &decoded["queryResult"]["featureResult"];
        let wkid = &result["spatialReference"]["wkid"];
        ensure!(
            *wkid == 102_100 || *wkid == 3857,
            "layer {layer}: a page in {wkid}"
        );
        let ids = pbf_ids(result)?;
        snapshot.extend(&ids);
        // Web Mercator metres around New Zealand.
        for feature in result["features"].as_array().into_iter().flatten() {
            for (x, y) in arcgis_pbf::parts(&feature["geometry"], &result["transform"])
                .into_iter()
                .flatten()
            {
                ensure!(
                    (1.7e7..2.03e7).contains(&x) && (-6.3e6..-3.9e6).contains(&y),
                    "layer {layer}: a vertex at {x}, {y} is not in Web Mercator near NZ"
                );
            }
        }
        if result["exceededTransferLimit"] != true {
            break;
        }
        ensure!(
            ids.len() == page_size,
            "a short page that says it is not the last"
        );
    }
    ensure!(
        snapshot.windows(2).all(|pair| pair[0] < pair[1]),
        "layer {layer}: the snapshot is not in {order}"
    );
    ensure!(
        snapshot == expected,
        "layer {layer}: the snapshot has {} features, the layer {}",
        snapshot.len(),
        expected.len()
    );

    Ok(())
}

/// Every feature of a decoded tile has a geometry whose bounds touch `tile` grown by `slack`.
fn on_tile(result: &Value, tile: [f64; 4], slack: f64) -> Result<()> {
    for feature in result["features"].as_array().into_iter().flatten() {
        let parts = arcgis_pbf::parts(&feature["geometry"], &result["transform"]);
        ensure!(!parts.is_empty(), "a feature without geometry");
        let mut bounds = [
            f64::INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
        ];
        for (x, y) in parts.iter().flatten() {
            bounds = [
                bounds[0].min(*x),
                bounds[1].min(*y),
                bounds[2].max(*x),
                bounds[3].max(*y),
            ];
        }
        let grown = [
            tile[0] - slack,
            tile[1] - slack,
            tile[2] + slack,
            tile[3] + slack,
        ];
        ensure!(
            intersects(bounds, grown),
            "a feature at {bounds:?} is off the tile {tile:?}"
        );
    }
    Ok(())
}

/// Tiles: the layer's extent in Web Mercator cut in 2 × 2, each quantized to 512 pixels, as the
/// JS API draws them; the tiles hold every feature. Returns the extent.
async fn js_tiles(
    query_url: &str,
    layer: u64,
    object_id_field: &str,
    order: &str,
    expected: &[i64],
) -> Result<[f64; 4]> {
    let extent = envelope(
        &get(
            query_url,
            &[
                ("f", "json"),
                ("where", "1=1"),
                ("returnExtentOnly", "true"),
                ("outSR", "102100"),
            ],
        )
        .await?["extent"],
    )?;
    let (width, height) = ((extent[2] - extent[0]) / 2.0, (extent[3] - extent[1]) / 2.0);
    let mut drawn = BTreeSet::new();
    for (column, row) in [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)] {
        let tile = [
            extent[0] + column * width,
            extent[1] + row * height,
            extent[0] + (column + 1.0) * width,
            extent[1] + (row + 1.0) * height,
        ];
        let tolerance = width.max(height) / 512.0;
        let envelope = json!({
            "xmin": tile[0], "ymin": tile[1], "xmax": tile[2], "ymax": tile[3],
            "spatialReference": {"wkid": 102_100}
        });
        let quantization = json!({
            "mode": "view",
            "originPosition": "upperLeft",
            "tolerance": tolerance,
            "extent": envelope,
        });
        let (envelope, quantization, tolerance) = (
            envelope.to_string(),
            quantization.to_string(),
            tolerance.to_string(),
        );
        let query = [
            ("f", "pbf"),
            ("geometry", envelope.as_str()),
            ("maxAllowableOffset", tolerance.as_str()),
            ("orderByFields", order),
            ("outFields", object_id_field),
            ("outSR", "102100"),
            ("quantizationParameters", quantization.as_str()),
            ("resultType", "tile"),
            ("returnExceededLimitFeatures", "false"),
            ("spatialRel", "esriSpatialRelIntersects"),
            ("where", "1=1"),
            ("geometryType", "esriGeometryEnvelope"),
            ("inSR", "102100"),
            ("cacheHint", "true"),
        ];
        let decoded = get_pbf(query_url, &query).await?;
        let result = &decoded["queryResult"]["featureResult"];
        let ids = pbf_ids(result)?;
        // The same tile in JSON: the same features.
        let mut json_query: Vec<(&str, &str)> = query
            .iter()
            .copied()
            .filter(|(name, _)| !matches!(*name, "f" | "quantizationParameters"))
            .collect();
        json_query.extend([("f", "json"), ("returnIdsOnly", "true")]);
        let mut json_ids = ids_of(&get(query_url, &json_query).await?)?;
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        json_ids.sort_unstable();
        ensure!(
            sorted == json_ids,
            "layer {layer}: tile {column},{row} has {} features in PBF, {} in JSON",
            sorted.len(),
            json_ids.len()
        );
        // Every vertex on the tile's grid lands within the tile (a cell of slack).
        let transform = &result["transform"];
        ensure!(
            arcgis_pbf::number(&transform["scale"]["xScale"]) == Some(tolerance.parse()?),
            "layer {layer}: the grid is not the tolerance asked: {transform}"
        );
        on_tile(result, tile, tolerance.parse::<f64>()? * 1.01)
            .with_context(|| format!("layer {layer}, tile {column},{row}"))?;
        drawn.extend(ids);
    }
    ensure!(
        drawn.into_iter().collect::<Vec<_>>() == expected,
        "layer {layer}: the four tiles do not hold every feature"
    );
    Ok(extent)
}

/// `maxAllowableOffset` generalizes: fewer vertices, each one of the original's.
async fn generalizes(query_url: &str, layer: u64, order: &str, extent: [f64; 4]) -> Result<()> {
    let offset = ((extent[2] - extent[0]) / 512.0).to_string();
    let whole = |generalized: bool| {
        let mut query = vec![
            ("f", "json"),
            ("where", "1=1"),
            ("outSR", "102100"),
            ("orderByFields", order),
            ("resultRecordCount", "200"),
        ];
        if generalized {
            query.push(("maxAllowableOffset", offset.as_str()));
        }
        let url = query_url.to_owned();
        async move { get(&url, &query).await }
    };
    let (full, generalized) = (whole(false).await?, whole(true).await?);
    let vertices = |answer: &Value| -> Vec<Vec<(f64, f64)>> {
        answer["features"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|feature| {
                arcgis_pbf::json_parts(&feature["geometry"])
                    .into_iter()
                    .flatten()
                    .collect()
            })
            .collect()
    };
    let (full, generalized) = (vertices(&full), vertices(&generalized));
    ensure!(full.len() == generalized.len() && !full.is_empty());
    for (original, simpler) in full.iter().zip(&generalized) {
        ensure!(
            simpler.iter().all(|vertex| original.contains(vertex)),
            "layer {layer}: a generalized vertex that is not the original's"
        );
    }
    let count = |features: &[Vec<(f64, f64)>]| features.iter().map(Vec::len).sum::<usize>();
    if layer == 7312 {
        ensure!(
            count(&generalized) * 2 < count(&full),
            "layer {layer}: generalized to {} of {} vertices",
            count(&generalized),
            count(&full)
        );
    } else {
        ensure!(count(&generalized) == count(&full), "points lost");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_arcgis_js_api_counts_pages_a_snapshot_and_draws_tiles_in_pbf() -> Result<()> {
    let (site, _cache, served) = start(3_000, 7311).await?;
    for layer in [7311, 7312] {
        let url = layer_url(&served, &site, layer);
        let query_url = format!("{url}/query");
        fetched(&url).await?;
        let (object_id_field, expected) = js_counts(&url).await?;
        let order = format!("{object_id_field} ASC");
        js_snapshot(&query_url, layer, &order, &expected).await?;
        let extent = js_tiles(&query_url, layer, &object_id_field, &order, &expected).await?;
        generalizes(&query_url, layer, &order, extent).await?;
    }
    served.stop().await?;
    Ok(())
}
