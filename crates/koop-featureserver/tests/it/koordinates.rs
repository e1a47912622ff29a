//! Koordinates layers of the testkit through the FeatureServer: every query parameter, answered
//! in SQLite by the Koordinates provider, against the same query answered in memory by the
//! output (a provider serving the same features without pushing anything down), against GDAL's
//! reading of the cached GeoPackage, and with GDAL as the client.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use async_trait::async_trait;
use koop_featureserver::FeatureServerOutput;
use koop_geoservices::format_date_ms;
use koop_provider::{Provider, ProviderData, ProviderError, ProviderRequest, Registration};
use koop_provider_koordinates::{KoordinatesConfig, KoordinatesProvider, ServedLayers};
use koop_server::ServerBuilder;
use koop_testkit::TestServer;
use serde_json::Value;

use crate::compare::{Allowed, differences};
use crate::{get_json, serve};

/// The Koordinates provider's features, served from memory: the output answers every query
/// itself. The reference for what the push-down must answer.
struct InMemory(Arc<KoordinatesProvider>);

#[async_trait]
impl Provider for InMemory {
    fn name(&self) -> &str {
        "memory"
    }

    fn registration(&self) -> Registration {
        Registration {
            hosts: true,
            ..Registration::new("memory")
        }
    }

    async fn get_data(&self, request: &ProviderRequest) -> Result<ProviderData, ProviderError> {
        let mut plain = request.clone();
        plain.params.method = None;
        let mut data = self.0.get_data(&plain).await?;
        data.ttl = Some(Duration::from_secs(600));
        Ok(data)
    }
}

pub(crate) struct Setup {
    pub(crate) testkit: TestServer,
    pub(crate) cache: tempfile::TempDir,
    pub(crate) base: String,
}

impl Setup {
    pub(crate) async fn start() -> Result<Self> {
        let testkit = TestServer::start().await?;
        for layer in koop_testkit::DEMO_LAYER_IDS {
            testkit.set_export_latency(layer, Duration::ZERO);
        }
        let cache = tempfile::tempdir()?;
        let provider = Arc::new(KoordinatesProvider::new(KoordinatesConfig {
            domains: vec![testkit.site()],
            layers: ServedLayers::Any,
            api_key: Some(testkit.api_key().to_owned()),
            cache_dir: Some(cache.path().to_owned()),
            ..KoordinatesConfig::default()
        }));
        let router = ServerBuilder::default()
            .shared_provider(provider.clone())
            .provider(InMemory(provider))
            .output(FeatureServerOutput::default())
            .build()?;
        let base = serve(router).await?;
        Ok(Self {
            testkit,
            cache,
            base,
        })
    }

    /// `…/FeatureServer` of `layer` through `namespace` (`koordinates` or `memory`).
    pub(crate) fn service(&self, namespace: &str, layer: u64) -> String {
        format!(
            "{}/{namespace}/rest/services/{}/{layer}/FeatureServer",
            self.base,
            self.testkit.domain()
        )
    }

    /// The cached GeoPackage of `layer` (fetched by an earlier request).
    pub(crate) fn geopackage(&self, layer: u64) -> Result<PathBuf> {
        let marker = format!("{layer}");
        walk(self.cache.path())
            .into_iter()
            .find(|path| {
                path.extension().is_some_and(|ext| ext == "gpkg")
                    && path.to_string_lossy().contains(&marker)
            })
            .with_context(|| format!("layer {layer} is not cached"))
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.extend(walk(&path));
            } else {
                found.push(path);
            }
        }
    }
    found
}

fn gdal(program: &str, args: &[&str]) -> Result<String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} (apt-get install gdal-bin)"))?;
    ensure!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

fn feature_count(ogrinfo: &str) -> Option<u64> {
    ogrinfo
        .lines()
        .find_map(|line| line.strip_prefix("Feature Count: "))
        .and_then(|count| count.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn gdal_pages_through_every_feature_and_copies_them_exactly() -> Result<()> {
    let setup = Setup::start().await?;
    let query = format!(
        "{}/0/query?where=1%3D1&outFields=*&f=json",
        setup.service("koordinates", 1006)
    );
    let source = {
        let (_, count) = get_json(
            &format!("{}/0/query", setup.service("koordinates", 1006)),
            &[("returnCountOnly", "true")],
        )
        .await?;
        ensure!(count["count"] == 20_000, "{count}");
        setup.geopackage(1006)?
    };
    let url = format!("ESRIJSON:{query}");
    let (url_for_info, source_for_info) = (url.clone(), source.clone());
    let (info, reference) = tokio::task::spawn_blocking(move || -> Result<(String, String)> {
        Ok((
            gdal("ogrinfo", &["-ro", "-al", "-so", &url_for_info])?,
            gdal(
                "ogrinfo",
                &["-ro", "-al", "-so", &source_for_info.to_string_lossy()],
            )?,
        ))
    })
    .await??;
    assert_eq!(feature_count(&reference), Some(20_000), "{reference}");
    assert_eq!(
        feature_count(&info),
        Some(20_000),
        "GDAL pages through resultOffset past maxRecordCount 2000:\n{info}"
    );

    // ogr2ogr of the same URL to a GeoPackage: the same features and attribute values.
    let out = tempfile::tempdir()?;
    let copy = out.path().join("copy.gpkg");
    let copy_path = copy.to_string_lossy().into_owned();
    let (ours, theirs) = tokio::task::spawn_blocking(move || -> Result<(Value, Value)> {
        gdal("ogr2ogr", &["-f", "GPKG", &copy_path, &url])?;
        let as_json = |path: &str| -> Result<Value> {
            Ok(serde_json::from_str(&gdal(
                "ogr2ogr",
                &["-f", "GeoJSON", "/vsistdout/", "-t_srs", "EPSG:4326", path],
            )?)?)
        };
        Ok((as_json(&copy_path)?, as_json(&source.to_string_lossy())?))
    })
    .await??;
    let ours = ours["features"]
        .as_array()
        .context("features of the copy")?;
    let theirs = theirs["features"]
        .as_array()
        .context("features of the source")?;
    assert_eq!(ours.len(), theirs.len());
    let mut mismatches = Vec::new();
    for (a, b) in ours.iter().zip(theirs) {
        // The id field is the FeatureServer's object id: GDAL makes it the copy's fid.
        let id = b["properties"]["id"].as_i64();
        let same_id = a["properties"]["id"].as_i64().or_else(|| a["id"].as_i64()) == id;
        let mut copied = a["properties"].clone();
        let mut source = b["properties"].clone();
        if let (Some(copied), Some(source)) = (copied.as_object_mut(), source.as_object_mut()) {
            copied.remove("id");
            source.remove("id");
            // GDAL 3.6 reads esriFieldTypeDate values as text (the epoch milliseconds), later
            // versions as date-times at midnight UTC: both must be the source's date.
            if let Some(Value::String(observed)) = copied.get("observed").cloned() {
                let date = match observed.parse::<i64>() {
                    Ok(ms) => format_date_ms(ms),
                    Err(_) => observed.replace('/', "-"),
                };
                copied.insert("observed".into(), Value::String(date[..10].to_owned()));
            }
        }
        let position = |feature: &Value| -> Option<(f64, f64)> {
            Some((
                feature["geometry"]["coordinates"][0].as_f64()?,
                feature["geometry"]["coordinates"][1].as_f64()?,
            ))
        };
        let close = match (position(a), position(b)) {
            (Some(p), Some(q)) => (p.0 - q.0).abs() < 1e-7 && (p.1 - q.1).abs() < 1e-7,
            _ => false,
        };
        let differs = differences(&source, &copied, &[]);
        if !same_id || !close || !differs.is_empty() {
            mismatches.push(format!("{a}\n  vs {b}\n  {differs:?}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} features differ, first: {}",
        mismatches.len(),
        mismatches[0]
    );
    Ok(())
}

/// The same query through the push-down (`koordinates`) and in memory (`memory`).
async fn both(setup: &Setup, layer: u64, query: &[(&str, &str)]) -> Result<(Value, Value)> {
    let (_, pushed) = get_json(
        &format!("{}/0/query", setup.service("koordinates", layer)),
        query,
    )
    .await?;
    let (_, memory) = get_json(
        &format!("{}/0/query", setup.service("memory", layer)),
        query,
    )
    .await?;
    Ok((pushed, memory))
}

const ENVELOPE: &str =
    r#"{"xmin":174,"ymin":-42,"xmax":176,"ymax":-36,"spatialReference":{"wkid":4326}}"#;
/// A point in Auckland, on the North Island.
const AUCKLAND: &str = r#"{"x":174.7633,"y":-36.8485,"spatialReference":{"wkid":4326}}"#;
const ENVELOPE_3857: &str = r#"{"xmin":19369000,"ymin":-5160000,"xmax":19595000,"ymax":-4300000}"#;
const TRIANGLE: &str =
    r#"{"rings":[[[170,-46],[178,-38],[172,-38],[170,-46]]],"spatialReference":{"wkid":4326}}"#;
const STATISTICS: &str = r#"[{"statisticType":"count","onStatisticField":"value","outStatisticFieldName":"n"},{"statisticType":"sum","onStatisticField":"value","outStatisticFieldName":"total"},{"statisticType":"min","onStatisticField":"observed","outStatisticFieldName":"first"},{"statisticType":"max","onStatisticField":"value","outStatisticFieldName":"top"},{"statisticType":"avg","onStatisticField":"value","outStatisticFieldName":"mean"},{"statisticType":"stddev","onStatisticField":"value","outStatisticFieldName":"sd"},{"statisticType":"var","onStatisticField":"value","outStatisticFieldName":"v"}]"#;

/// Queries of every parameter, on points (1006), polygons (1002, no `idField`: a computed
/// OBJECTID), a table (1005) and world countries (1001).
#[allow(clippy::too_many_lines, reason = "a table of queries")]
fn comparison_cases() -> Vec<(u64, Vec<(&'static str, &'static str)>)> {
    vec![
        (
            1006,
            vec![
                ("where", "category='c3'"),
                ("outFields", "*"),
                ("resultOffset", "2000"),
                ("resultRecordCount", "1000"),
            ],
        ),
        (1006, vec![]),
        (
            1006,
            vec![
                ("resultRecordCount", "5000"),
                ("outFields", "id"),
                ("returnGeometry", "false"),
            ],
        ),
        (
            1006,
            vec![
                ("where", "value > 500 AND category IN ('c1', 'c2')"),
                ("orderByFields", "value DESC"),
                ("resultRecordCount", "50"),
                ("outFields", "id,value,category"),
            ],
        ),
        (
            1006,
            vec![
                ("where", "name LIKE 'point 1%'"),
                ("returnCountOnly", "true"),
            ],
        ),
        (
            1006,
            vec![
                ("where", "name like 'POINT 1%'"),
                ("returnCountOnly", "true"),
            ],
        ),
        (
            1006,
            vec![
                ("where", "UPPER(category) = 'C5' OR id <= 3"),
                ("returnCountOnly", "true"),
            ],
        ),
        (
            1006,
            vec![
                (
                    "where",
                    "observed BETWEEN DATE '2001-01-01' AND DATE '2001-12-31'",
                ),
                ("outFields", "id,observed"),
                ("resultRecordCount", "100"),
                ("orderByFields", "observed DESC, id"),
            ],
        ),
        (
            1006,
            vec![
                (
                    "where",
                    "observed >= TIMESTAMP '2010-06-01 00:00:00' AND NOT (category = 'c0')",
                ),
                ("returnCountOnly", "true"),
            ],
        ),
        (
            1006,
            vec![
                ("where", "NOT (category = 'c0') AND id < 100"),
                ("returnIdsOnly", "true"),
            ],
        ),
        (
            1006,
            vec![("where", "name IS NULL"), ("returnCountOnly", "true")],
        ),
        (
            1006,
            vec![
                ("where", "id NOT BETWEEN 10 AND 19990"),
                ("outFields", "id,name"),
                ("orderByFields", "name"),
            ],
        ),
        (
            1006,
            vec![("objectIds", "5,17,99999"), ("outFields", "id,category")],
        ),
        (
            1006,
            vec![
                ("geometry", ENVELOPE),
                ("geometryType", "esriGeometryEnvelope"),
                ("outFields", "id"),
                ("returnGeometry", "false"),
                ("resultRecordCount", "1000"),
            ],
        ),
        (
            1006,
            vec![("geometry", ENVELOPE), ("returnCountOnly", "true")],
        ),
        // The issue's envelope query (b): candidates from the R-tree in fid order, sure ones
        // (boxes inside the envelope) never read to be decided; then pages past the first.
        (
            1006,
            vec![
                ("geometry", "174,-42,175,-41"),
                ("geometryType", "esriGeometryEnvelope"),
                ("inSR", "4326"),
                ("spatialRel", "esriSpatialRelIntersects"),
                ("outFields", "*"),
                ("resultRecordCount", "1000"),
            ],
        ),
        (
            1006,
            vec![
                ("geometry", "172,-44,176,-37"),
                ("geometryType", "esriGeometryEnvelope"),
                ("outFields", "id,name"),
                ("resultOffset", "1500"),
                ("resultRecordCount", "300"),
            ],
        ),
        (
            1006,
            vec![
                ("geometry", "172,-44,176,-37"),
                ("spatialRel", "esriSpatialRelEnvelopeIntersects"),
                ("returnCountOnly", "true"),
            ],
        ),
        // Polygons: boxes of many sizes, some inside the envelope, some across its edges.
        (
            1002,
            vec![
                ("geometry", "172.5,-43.7,172.8,-43.4"),
                ("geometryType", "esriGeometryEnvelope"),
                ("outFields", "*"),
                ("resultRecordCount", "40"),
                ("resultOffset", "3"),
            ],
        ),
        (
            1002,
            vec![
                ("geometry", "172.5,-43.7,172.8,-43.4"),
                ("returnCountOnly", "true"),
            ],
        ),
        (
            1006,
            vec![
                ("geometry", "174,-42,176,-36"),
                ("where", "category = 'c7'"),
                ("outFields", "id,value"),
                ("resultOffset", "10"),
                ("resultRecordCount", "20"),
            ],
        ),
        (
            1006,
            vec![
                ("geometry", ENVELOPE_3857),
                ("inSR", "3857"),
                ("spatialRel", "esriSpatialRelEnvelopeIntersects"),
                ("returnCountOnly", "true"),
            ],
        ),
        (
            1006,
            vec![
                ("geometry", TRIANGLE),
                ("geometryType", "esriGeometryPolygon"),
                ("spatialRel", "esriSpatialRelWithin"),
                ("returnCountOnly", "true"),
            ],
        ),
        (
            1006,
            vec![
                ("geometry", TRIANGLE),
                ("geometryType", "esriGeometryPolygon"),
                ("outFields", "id"),
                ("orderByFields", "id DESC"),
                ("resultRecordCount", "7"),
            ],
        ),
        (
            1006,
            vec![("where", "category = 'c2'"), ("returnExtentOnly", "true")],
        ),
        (
            1006,
            vec![
                ("where", "category = 'c2'"),
                ("returnExtentOnly", "true"),
                ("returnCountOnly", "true"),
                ("outSR", "102100"),
            ],
        ),
        (
            1006,
            vec![
                ("outStatistics", STATISTICS),
                ("groupByFieldsForStatistics", "category"),
                ("where", "id < 5000"),
            ],
        ),
        (
            1006,
            vec![
                ("returnDistinctValues", "true"),
                ("outFields", "category"),
                ("orderByFields", "category"),
                ("returnGeometry", "false"),
            ],
        ),
        (
            1006,
            vec![
                ("outSR", "2193"),
                ("outFields", "id"),
                ("resultRecordCount", "10"),
            ],
        ),
        (
            1006,
            vec![
                ("outSR", "102100"),
                ("geometryPrecision", "2"),
                ("outFields", "id,name"),
                ("resultRecordCount", "10"),
                ("resultOffset", "19995"),
            ],
        ),
        (
            1006,
            vec![
                ("f", "geojson"),
                ("where", "category = 'c9'"),
                ("outFields", "id,name"),
                ("resultRecordCount", "3"),
            ],
        ),
        (
            1006,
            vec![
                ("f", "pjson"),
                ("outFields", "id"),
                ("resultRecordCount", "2"),
            ],
        ),
        (1006, vec![("where", "OBJECTID = 4")]),
        (1006, vec![("where", "nonsense = 1")]),
        (1006, vec![("where", "id = 1; DROP TABLE points")]),
        (
            1006,
            vec![
                ("orderByFields", "value DESC"),
                ("outFields", "id"),
                ("resultRecordCount", "3"),
                ("where", "1=1"),
            ],
        ),
        (1002, vec![("outFields", "*"), ("resultRecordCount", "3")]),
        (
            1002,
            vec![
                ("geometry", AUCKLAND),
                ("geometryType", "esriGeometryPoint"),
                ("spatialRel", "esriSpatialRelContains"),
                ("outFields", "name"),
                ("returnGeometry", "false"),
            ],
        ),
        (
            1002,
            vec![
                ("geometry", "174.7633,-36.8485"),
                ("geometryType", "esriGeometryPoint"),
                ("returnIdsOnly", "true"),
            ],
        ),
        (
            1002,
            vec![
                ("geometry", ENVELOPE),
                ("outFields", "name"),
                ("returnGeometry", "false"),
            ],
        ),
        (
            1002,
            vec![("where", "name LIKE '%a%'"), ("returnIdsOnly", "true")],
        ),
        (
            1002,
            vec![("where", "OBJECTID > 0"), ("returnCountOnly", "true")],
        ),
        (
            1005,
            vec![
                ("where", "population_estimate > 20000"),
                ("returnCountOnly", "true"),
            ],
        ),
        (
            1005,
            vec![
                ("where", "population_estimate > 20000"),
                ("orderByFields", "population_estimate DESC"),
                ("resultRecordCount", "5"),
            ],
        ),
        (
            1005,
            vec![("geometry", ENVELOPE), ("returnCountOnly", "true")],
        ),
        (
            1001,
            vec![
                ("where", "1=1"),
                ("outFields", "*"),
                ("resultRecordCount", "2"),
                ("resultOffset", "100"),
            ],
        ),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn queries_answered_in_sqlite_match_the_output_answering_them_in_memory() -> Result<()> {
    let setup = Setup::start().await?;
    let cases = comparison_cases();
    let mut failures = Vec::new();
    for (layer, query) in &cases {
        let (pushed, memory) = both(&setup, *layer, query).await?;
        if pushed.get("error").is_some() != memory.get("error").is_some() {
            failures.push(format!("{layer} {query:?}: {pushed}\n  vs {memory}"));
            continue;
        }
        // An extent from the R-tree is float32, rounded outwards (as GeoPackage stores it):
        // within 1 m (projected) or 1e-5° of the exact one, never inside it.
        let corners = [
            "/extent/xmin",
            "/extent/ymin",
            "/extent/xmax",
            "/extent/ymax",
        ];
        let allowed: Vec<Allowed<'_>> = corners.iter().map(|path| Allowed::Value(path)).collect();
        for difference in differences(&memory, &pushed, &allowed) {
            failures.push(format!("{layer} {query:?}: {difference}"));
        }
        let projected = memory["extent"]["spatialReference"]["wkid"] != 4326;
        let slack = if projected { 1.0 } else { 1e-5 };
        for (index, corner) in corners.iter().enumerate() {
            let (Some(exact), Some(ours)) = (
                memory.pointer(corner).and_then(Value::as_f64),
                pushed.pointer(corner).and_then(Value::as_f64),
            ) else {
                continue;
            };
            let outwards = if index < 2 {
                exact - ours
            } else {
                ours - exact
            };
            if !(-1e-9..=slack).contains(&outwards) {
                failures.push(format!(
                    "{layer} {query:?}: {corner}: {exact}, ours {ours} (more than {slack} outside, or inside)"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(())
}

/// Positions of the cached layer's features in EPSG:4326, by GDAL (PROJ), with their `id`.
fn gdal_points_4326(path: &Path) -> Result<Vec<(i64, f64, f64)>> {
    let json: Value = serde_json::from_str(&gdal(
        "ogr2ogr",
        &[
            "-f",
            "GeoJSON",
            "/vsistdout/",
            "-t_srs",
            "EPSG:4326",
            &path.to_string_lossy(),
        ],
    )?)?;
    Ok(json["features"]
        .as_array()
        .context("features")?
        .iter()
        .filter_map(|feature| {
            let position = &feature["geometry"]["coordinates"];
            Some((
                feature["properties"]["id"].as_i64()?,
                position[0].as_f64()?,
                position[1].as_f64()?,
            ))
        })
        .collect())
}

fn gdal_sql_count(path: &Path, sql: &str) -> Result<u64> {
    let output = gdal(
        "ogrinfo",
        &["-ro", "-q", "-sql", sql, &path.to_string_lossy()],
    )?;
    output
        .lines()
        .find_map(|line| {
            line.trim()
                .split_once(" (Integer) = ")
                .or_else(|| line.trim().split_once(" (Integer64) = "))
        })
        .and_then(|(_, count)| count.trim().parse().ok())
        .with_context(|| format!("a count in {output}"))
}

/// `true` when (x, y) is inside the ring (even-odd rule).
fn inside(ring: &[(f64, f64)], x: f64, y: f64) -> bool {
    let mut inside = false;
    for pair in ring.windows(2) {
        let ((x1, y1), (x2, y2)) = (pair[0], pair[1]);
        if (y1 > y) != (y2 > y) && x < x1 + (y - y1) * (x2 - x1) / (y2 - y1) {
            inside = !inside;
        }
    }
    inside
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_agree_with_gdal_reading_the_cached_geopackage() -> Result<()> {
    let setup = Setup::start().await?;
    let query = format!("{}/0/query", setup.service("koordinates", 1006));
    let count = |clause: &'static str| {
        let query = query.clone();
        async move {
            let (_, json) =
                get_json(&query, &[("where", clause), ("returnCountOnly", "true")]).await?;
            json["count"]
                .as_u64()
                .with_context(|| format!("{clause}: {json}"))
        }
    };
    let c3 = count("category = 'c3'").await?;
    let source = setup.geopackage(1006)?;
    let dates = count("observed BETWEEN DATE '2001-01-01' AND DATE '2001-12-31'").await?;
    let like = count("name LIKE 'point 1%' AND value >= 250.5").await?;
    let path = source.clone();
    let gdal_counts = tokio::task::spawn_blocking(move || -> Result<[u64; 3]> {
        Ok([
            gdal_sql_count(&path, "SELECT count(*) FROM points WHERE category = 'c3'")?,
            gdal_sql_count(
                &path,
                "SELECT count(*) FROM points WHERE observed BETWEEN '2001-01-01' AND '2001-12-31'",
            )?,
            gdal_sql_count(
                &path,
                "SELECT count(*) FROM points WHERE name LIKE 'point 1%' AND value >= 250.5",
            )?,
        ])
    });
    let [gdal_c3, gdal_dates, gdal_like] = gdal_counts.await??;
    let path = source.clone();
    let points = tokio::task::spawn_blocking(move || gdal_points_4326(&path)).await??;
    assert_eq!((c3, dates), (gdal_c3, gdal_dates), "{}", source.display());
    assert_eq!(c3, 2000);
    assert_eq!(like, gdal_like);
    assert_eq!(points.len(), 20_000);

    // An envelope: the R-tree candidates, tested exactly in EPSG:4326.
    let (_, ids) = get_json(
        &query,
        &[("geometry", "174,-42,176,-36"), ("returnIdsOnly", "true")],
    )
    .await?;
    let mut ours: Vec<i64> = serde_json::from_value(ids["objectIds"].clone())?;
    ours.sort_unstable();
    let expected: Vec<i64> = points
        .iter()
        .filter(|(_, x, y)| (174.0..=176.0).contains(x) && (-42.0..=-36.0).contains(y))
        .map(|(id, _, _)| *id)
        .collect();
    assert!(expected.len() > 1000, "a real test: {}", expected.len());
    assert_eq!(ours, expected);

    // A polygon.
    let triangle = [
        (170.0, -46.0),
        (178.0, -38.0),
        (172.0, -38.0),
        (170.0, -46.0),
    ];
    let (_, count) = get_json(
        &query,
        &[
            (
                "geometry",
                r#"{"rings":[[[170,-46],[178,-38],[172,-38],[170,-46]]]}"#,
            ),
            ("geometryType", "esriGeometryPolygon"),
            ("returnCountOnly", "true"),
        ],
    )
    .await?;
    let expected = points
        .iter()
        .filter(|(_, x, y)| inside(&triangle, *x, *y))
        .count() as u64;
    assert!(expected > 1000, "a real test: {expected}");
    assert_eq!(count["count"].as_u64(), Some(expected), "{count}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn koordinates_layers_are_described_from_their_schema() -> Result<()> {
    let setup = Setup::start().await?;
    let (_, layer) = get_json(&format!("{}/3", setup.service("koordinates", 1006)), &[]).await?;
    assert_eq!(layer["id"], 3, "the layer id asked for");
    assert_eq!(layer["name"], "NZ Survey Points (generated)");
    assert_eq!(layer["geometryType"], "esriGeometryPoint");
    // QGIS and ArcGIS draw only a "Feature Layer": when Koordinates' details leave the geometry
    // type empty (the test site's generated layers do), the GeoPackage's own declaration says it.
    assert_eq!(layer["type"], "Feature Layer", "{layer}");
    assert_eq!(layer["objectIdField"], "id", "the layer's primary key");
    assert_eq!(layer["maxRecordCount"], 2000);
    let fields = koop_testkit::http::field_pairs(&layer["fields"]);
    assert_eq!(
        fields,
        [
            ("id", "esriFieldTypeOID"),
            ("category", "esriFieldTypeString"),
            ("value", "esriFieldTypeDouble"),
            ("name", "esriFieldTypeString"),
            ("observed", "esriFieldTypeDate"),
        ]
    );
    let extent = &layer["extent"];
    assert!(
        extent["xmin"].as_f64().is_some_and(|x| x > 165.0)
            && extent["ymax"].as_f64().is_some_and(|y| y < -33.0),
        "{extent}"
    );

    // Without an integer primary-key attribute, the GeoPackage fid is the object id.
    let (_, islands) = get_json(&format!("{}/0", setup.service("koordinates", 1002)), &[]).await?;
    // A point filter: the one polygon that contains Auckland; none contains a point at sea.
    let contains = |point: &'static str| {
        let url = format!("{}/0/query", setup.service("koordinates", 1002));
        async move {
            let (_, json) = get_json(
                &url,
                &[
                    ("geometry", point),
                    ("geometryType", "esriGeometryPoint"),
                    ("spatialRel", "esriSpatialRelContains"),
                    ("returnCountOnly", "true"),
                ],
            )
            .await?;
            json["count"].as_u64().with_context(|| format!("{json}"))
        }
    };
    assert_eq!(contains(AUCKLAND).await?, 1);
    assert_eq!(contains("165.0,-39.0").await?, 0, "the Tasman Sea");
    assert_eq!(islands["objectIdField"], "fid");
    assert_eq!(islands["fields"][0]["name"], "fid");
    assert_eq!(islands["fields"][0]["type"], "esriFieldTypeOID");
    assert_eq!(islands["geometryType"], "esriGeometryPolygon");

    // A table is listed as a table.
    let (_, service) = get_json(&setup.service("koordinates", 1005), &[]).await?;
    assert_eq!(service["layers"], serde_json::json!([]));
    assert_eq!(service["tables"][0]["type"], "Table", "{service}");
    let (_, rows) = get_json(
        &format!("{}/0/query", setup.service("koordinates", 1005)),
        &[("resultRecordCount", "2"), ("orderByFields", "id DESC")],
    )
    .await?;
    assert_eq!(rows["features"][0]["attributes"]["id"], 3190, "{rows}");
    assert!(
        rows["features"][0].get("geometry").is_none(),
        "a table has no geometry: {rows}"
    );

    // A grid is not a feature layer.
    let (_, grid) = get_json(
        &format!("{}/0/query", setup.service("koordinates", 1003)),
        &[],
    )
    .await?;
    assert_eq!(grid["error"]["code"], 400, "{grid}");
    let (_, unknown) =
        get_json(&format!("{}/0", setup.service("koordinates", 999_999)), &[]).await?;
    assert_eq!(unknown["error"]["code"], 404, "{unknown}");
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn an_export_refused_with_401_names_the_401_and_the_log_holds_the_chain() -> Result<()> {
    let testkit = TestServer::start().await?;
    testkit.set_request_faults(koop_testkit::RequestFaults {
        refuse_key_for_exports: true,
        ..koop_testkit::RequestFaults::default()
    });
    let cache = tempfile::tempdir()?;
    let router = ServerBuilder::default()
        .provider(KoordinatesProvider::new(KoordinatesConfig {
            domains: vec![testkit.site()],
            layers: ServedLayers::Any,
            api_key: Some(testkit.api_key().to_owned()),
            cache_dir: Some(cache.path().to_owned()),
            ..KoordinatesConfig::default()
        }))
        .output(FeatureServerOutput::default())
        .build()?;
    let path = format!(
        "/koordinates/rest/services/{}/1002/FeatureServer/0/query",
        testkit.domain()
    );
    // In this task, so the captured log sees the handler's events.
    let (logs, _guard) = koop_testkit::logs::Logs::capture();
    let response = tower::ServiceExt::oneshot(
        router,
        axum::http::Request::get(format!("{path}?where=1%3D1&returnCountOnly=true"))
            .body(axum::body::Body::empty())?,
    )
    .await?;
    assert_eq!(response.status(), 200, "Geoservices errors are HTTP 200");
    let body = axum::body::to_bytes(response.into_body(), 1 << 20).await?;
    let text = String::from_utf8_lossy(&body).into_owned();
    let json: Value = serde_json::from_str(&text)?;
    let message = json["error"]["message"].as_str().context("a message")?;
    assert_eq!(json["error"]["code"], 500, "{json}");
    assert!(
        message.contains("401") && message.contains("layer 1002"),
        "the client is told the upstream cause: {message}"
    );
    let cache_dir = cache.path().to_string_lossy().into_owned();
    assert!(
        !text.contains(&cache_dir) && !text.contains(testkit.api_key()),
        "no local path, no key: {text}"
    );
    let logs = logs.text();
    let line = logs
        .lines()
        .find(|line| line.contains("WARN") && line.contains(&path))
        .with_context(|| format!("a warning with the request path: {logs}"))?;
    assert!(
        line.contains("exporting layer 1002 failed talking to Koordinates")
            && line.contains("401 Unauthorized")
            && line.contains("Invalid API key"),
        "the whole chain: {line}"
    );
    assert!(!logs.contains(testkit.api_key()), "{logs}");
    assert_eq!(testkit.exports_created_for(1002), 0);
    Ok(())
}

/// The decimals of every number in `text` that follows `"x":`, `"y":` or a `[` (coordinates).
fn coordinate_decimals(text: &str) -> Vec<usize> {
    let mut decimals = Vec::new();
    for (start, _) in text.match_indices(['[', ':']) {
        let rest = &text[start + 1..];
        let number: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || matches!(c, '-' | '.' | 'e' | 'E'))
            .collect();
        if let Some((_, fraction)) = number.split_once('.') {
            decimals.push(fraction.len());
        }
    }
    decimals
}

#[tokio::test]
async fn coordinates_carry_no_float_noise_unless_geometry_precision_asks() -> Result<()> {
    let setup = Setup::start().await?;
    let query = format!("{}/0/query", setup.service("koordinates", 1006));
    let text = |params: &'static [(&'static str, &'static str)]| {
        let query = query.clone();
        async move {
            let response = reqwest::Client::new()
                .get(&query)
                .query(params)
                .send()
                .await?;
            anyhow::Ok(response.text().await?)
        }
    };
    // Reprojected from EPSG:2193 to degrees: at most 9 decimals (1e-9°, ~0.1 mm).
    let degrees = text(&[
        ("where", "1=1"),
        ("outFields", "id"),
        ("outSR", "4326"),
        ("resultRecordCount", "200"),
    ])
    .await?;
    let json: Value = serde_json::from_str(&degrees)?;
    let first = &json["features"][0]["geometry"];
    ensure!(first["x"].as_f64().is_some(), "{first}");
    let places = coordinate_decimals(&degrees);
    ensure!(
        places.iter().any(|&n| n >= 6) && places.iter().all(|&n| n <= 9),
        "decimals in degrees: {:?}",
        &places[..places.len().min(20)]
    );
    // In metres (EPSG:2193): at most 4 decimals.
    let metres = text(&[
        ("where", "1=1"),
        ("outFields", "id"),
        ("outSR", "2193"),
        ("resultRecordCount", "200"),
    ])
    .await?;
    let places = coordinate_decimals(&metres);
    ensure!(
        places.iter().all(|&n| n <= 4),
        "decimals in metres: {places:?}"
    );
    // geometryPrecision wins, both ways.
    let two = text(&[
        ("where", "1=1"),
        ("outFields", "id"),
        ("outSR", "4326"),
        ("geometryPrecision", "2"),
        ("resultRecordCount", "50"),
    ])
    .await?;
    ensure!(coordinate_decimals(&two).iter().all(|&n| n <= 2));
    let twelve = text(&[
        ("where", "1=1"),
        ("outFields", "id"),
        ("outSR", "4326"),
        ("geometryPrecision", "12"),
        ("resultRecordCount", "50"),
    ])
    .await?;
    ensure!(coordinate_decimals(&twelve).iter().any(|&n| n > 9));
    Ok(())
}

/// esridump's `esri2geojson` (PyPI `esridump`, installed by `cargo xtask test`) dumps the layer
/// behind `layer_url`; the GeoJSON it wrote.
fn esri2geojson(layer_url: &str, out: &Path) -> Result<Value> {
    let output = Command::new("esri2geojson")
        .arg(layer_url)
        .arg(out)
        .output()
        .context("running esri2geojson (cargo xtask test installs esridump)")?;
    ensure!(
        output.status.success(),
        "esri2geojson {layer_url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(serde_json::from_str(&std::fs::read_to_string(out)?)?)
}

#[tokio::test(flavor = "multi_thread")]
async fn esridump_dumps_every_feature_exactly_once() -> Result<()> {
    let setup = Setup::start().await?;
    let dir = tempfile::tempdir()?;
    // Points with an integer primary key; polygons whose ids are the GeoPackage fid.
    for (layer, object_id) in [(1006, "id"), (1002, "fid")] {
        let layer_url = format!("{}/0", setup.service("koordinates", layer));
        let (_, ids) = get_json(
            &format!("{layer_url}/query"),
            &[("where", "1=1"), ("returnIdsOnly", "true")],
        )
        .await?;
        let mut expected: Vec<i64> = ids["objectIds"]
            .as_array()
            .context("objectIds")?
            .iter()
            .filter_map(Value::as_i64)
            .collect();
        expected.sort_unstable();
        let dumped = esri2geojson(&layer_url, &dir.path().join(format!("{layer}.geojson")))?;
        let features = dumped["features"].as_array().context("features")?;
        let mut got: Vec<i64> = features
            .iter()
            .filter_map(|feature| feature["properties"][object_id].as_i64())
            .collect();
        ensure!(
            got.len() == features.len(),
            "layer {layer}: a feature without {object_id}"
        );
        got.sort_unstable();
        ensure!(
            got == expected,
            "layer {layer}: esridump wrote {} features for {} ids",
            got.len(),
            expected.len()
        );
        ensure!(
            features
                .iter()
                .all(|feature| feature["geometry"]["coordinates"].is_array()),
            "layer {layer}: a feature without geometry"
        );
    }
    Ok(())
}

#[tokio::test]
async fn geoservices_errors_always_carry_details() -> Result<()> {
    let setup = Setup::start().await?;
    let query = format!("{}/0/query", setup.service("koordinates", 1006));
    for params in [
        vec![("where", "nope = 1")],
        vec![("f", "xml")],
        vec![("outSR", "999999")],
        vec![("where", "1=1"), ("resultRecordCount", "many")],
    ] {
        let (_, json) = get_json(&query, &params).await?;
        let text = json.to_string();
        ensure!(
            json["error"]["details"].is_array(),
            "{params:?}: {}",
            &text[..text.len().min(200)]
        );
    }
    Ok(())
}

/// `count` of `where` on layer 1006, by a count query.
async fn count_where(query: &str, clause: &str) -> Result<u64> {
    let (_, count) = get_json(query, &[("where", clause), ("returnCountOnly", "true")]).await?;
    count["count"].as_u64().context("count")
}

#[tokio::test]
async fn generate_renderer_lists_unique_values_with_their_counts() -> Result<()> {
    let setup = Setup::start().await?;
    let layer = setup.service("koordinates", 1006);
    let query = format!("{layer}/0/query");
    let renderer = format!("{layer}/0/generateRenderer");
    let total = count_where(&query, "1=1").await?;

    // Unique values of category: every category with its count, coloured green to blue.
    let (_, unique) = get_json(
        &renderer,
        &[(
            "classificationDef",
            r#"{"type":"uniqueValueDef","uniqueValueFields":["category"],"fieldDelimiter":","}"#,
        )],
    )
    .await?;
    ensure!(unique["type"] == "uniqueValue", "{}", short(&unique));
    ensure!(unique["field1"] == "category");
    let infos = unique["uniqueValueInfos"]
        .as_array()
        .context("uniqueValueInfos")?;
    ensure!(infos.len() == 10, "{} categories", infos.len());
    let mut counted = 0;
    for info in infos {
        let value = info["value"].as_str().context("value")?;
        let count = info["count"].as_u64().context("count")?;
        ensure!(
            count == count_where(&query, &format!("category = '{value}'")).await?,
            "{value}"
        );
        ensure!(
            info["symbol"]["type"] == "esriSMS",
            "points draw with marker symbols"
        );
        counted += count;
    }
    ensure!(counted == total, "{counted} of {total} counted");
    ensure!(infos[0]["symbol"]["color"] == serde_json::json!([0, 255, 0]));
    ensure!(infos[9]["symbol"]["color"] == serde_json::json!([0, 0, 255]));

    // What koop cannot classify is a 400 that says why.
    for definition in [
        r#"{"type":"classBreaksDef","classificationField":"name"}"#,
        r#"{"type":"classBreaksDef","classificationField":"value","classificationMethod":"esriClassifyNaturalBreaks"}"#,
        r#"{"type":"uniqueValueDef","uniqueValueFields":["id"]}"#,
        r#"{"type":"classBreaksDef","classificationField":"value","baseSymbol":{"type":"esriSFS"}}"#,
    ] {
        let (_, error) = get_json(&renderer, &[("classificationDef", definition)]).await?;
        ensure!(
            error["error"]["code"] == 400,
            "{definition}: {}",
            short(&error)
        );
    }
    Ok(())
}

#[tokio::test]
async fn generate_renderer_breaks_classes_by_each_method() -> Result<()> {
    let setup = Setup::start().await?;
    let layer = setup.service("koordinates", 1006);
    let query = format!("{layer}/0/query");
    let renderer = format!("{layer}/0/generateRenderer");
    let total = count_where(&query, "1=1").await?;
    // Class breaks of value: each method covers the field's range in increasing classes.
    let (_, stats) = get_json(
        &query,
        &[(
            "outStatistics",
            r#"[{"statisticType":"min","onStatisticField":"value","outStatisticFieldName":"lo"},{"statisticType":"max","onStatisticField":"value","outStatisticFieldName":"hi"}]"#,
        )],
    )
    .await?;
    let lo = stats["features"][0]["attributes"]["lo"]
        .as_f64()
        .context("min")?;
    let hi = stats["features"][0]["attributes"]["hi"]
        .as_f64()
        .context("max")?;
    for (method, filter, breaks) in [
        ("esriClassifyEqualInterval", "1=1", 5),
        ("esriClassifyQuantile", "1=1", 4),
        ("esriClassifyNaturalBreaks", "id <= 400", 3),
    ] {
        let definition = format!(
            r#"{{"type":"classBreaksDef","classificationField":"value","classificationMethod":"{method}","breakCount":{breaks},"baseSymbol":{{"type":"esriSMS","style":"esriSMSSquare","size":4}}}}"#
        );
        let (_, classes) = get_json(
            &renderer,
            &[("classificationDef", &definition), ("where", filter)],
        )
        .await?;
        let infos = classes["classBreakInfos"]
            .as_array()
            .with_context(|| format!("{method}: {}", short(&classes)))?;
        ensure!(infos.len() == breaks, "{method}: {} classes", infos.len());
        let bounds: Vec<(f64, f64)> = infos
            .iter()
            .map(|info| {
                (
                    info["classMinValue"].as_f64().unwrap_or(f64::NAN),
                    info["classMaxValue"].as_f64().unwrap_or(f64::NAN),
                )
            })
            .collect();
        ensure!(
            bounds
                .windows(2)
                .all(|pair| pair[0].1 <= pair[1].0 && pair[0].0 <= pair[0].1),
            "{method}: {bounds:?}"
        );
        ensure!(
            infos
                .iter()
                .all(|info| info["symbol"]["style"] == "esriSMSSquare")
        );
        if filter == "1=1" {
            ensure!(
                bounds[0].0.total_cmp(&lo).is_eq() && bounds[breaks - 1].1.total_cmp(&hi).is_eq(),
                "{method}: {bounds:?} for {lo}..{hi}"
            );
        }
        if method == "esriClassifyQuantile" {
            // Each quartile holds about a quarter of the points.
            for (low, high) in &bounds {
                let inside =
                    count_where(&query, &format!("value >= {low} AND value <= {high}")).await?;
                ensure!(
                    inside.abs_diff(total / 4) <= total / 100,
                    "{method}: {inside} of {total} in {low}..{high}"
                );
            }
        }
    }

    Ok(())
}

/// At most 200 characters of `value`, for messages.
fn short(value: &Value) -> String {
    value.to_string().chars().take(200).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn equality_pages_and_counts_from_the_in_memory_index_match_the_scan() -> Result<()> {
    let setup = Setup::start().await?;
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![("where", "category = 'c3'"), ("returnCountOnly", "true")],
        vec![("where", "'c7' = category"), ("returnCountOnly", "true")],
        vec![
            ("where", "category = 'nothing'"),
            ("returnCountOnly", "true"),
        ],
        vec![
            ("where", "category = 'c3'"),
            ("outFields", "*"),
            ("resultOffset", "150"),
            ("resultRecordCount", "100"),
        ],
        vec![
            ("where", "category = 'c3'"),
            ("outFields", "id,category"),
            ("resultOffset", "1990"),
            ("resultRecordCount", "100"),
        ],
        vec![
            ("where", "category = 'c3'"),
            ("outFields", "id"),
            ("resultOffset", "5000"),
        ],
        // A page of 1,000: read in two halves at once when a thread is free.
        vec![
            ("where", "category = 'c3'"),
            ("outFields", "*"),
            ("resultOffset", "10"),
            ("resultRecordCount", "1000"),
        ],
        vec![("where", "category = 'nothing'"), ("outFields", "*")],
        // More values than an index holds: always a scan.
        vec![("where", "id = 77"), ("outFields", "*")],
    ];
    // The first round asks for the indexes (and scans); the later ones use them once built.
    agree_in_rounds(&setup, &cases).await
}

/// `cases` on the points (1006), answered in SQLite and by the output in memory, in three
/// rounds 300 ms apart (what a first query asks to be built in the background is used by the
/// later rounds): every answer is the same, and none is an error.
async fn agree_in_rounds(setup: &Setup, cases: &[Vec<(&str, &str)>]) -> Result<()> {
    for round in 0..3 {
        for query in cases {
            let (pushed, memory) = both(setup, 1006, query).await?;
            ensure!(
                pushed.get("error").is_none(),
                "round {round}, {query:?}: {}",
                short(&pushed)
            );
            let found = differences(&memory, &pushed, &[]);
            ensure!(
                found.is_empty(),
                "round {round}, {query:?}: {:?}",
                found.iter().take(5).collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn geometry_queries_from_the_rtree_in_memory_match_the_output_answering_them() -> Result<()> {
    let setup = Setup::start().await?;
    // The geometry cases of the points (20,000 rows: their R-tree is copied into memory), and
    // pages of 1,000 and 300 rows (read in two halves at once when a thread is free).
    let mut cases: Vec<Vec<(&str, &str)>> = comparison_cases()
        .into_iter()
        .filter(|(layer, query)| {
            *layer == 1006 && query.iter().any(|(name, _)| *name == "geometry")
        })
        .map(|(_, query)| query)
        .collect();
    cases.push(vec![
        ("geometry", "170,-47,179,-34"),
        ("geometryType", "esriGeometryEnvelope"),
        ("outFields", "*"),
        ("resultOffset", "12345"),
        ("resultRecordCount", "2000"),
    ]);
    ensure!(cases.len() >= 8, "{} geometry cases", cases.len());
    // The first round asks for the copy (and searches SQLite's R-tree); the later ones use it
    // once built.
    agree_in_rounds(&setup, &cases).await
}

#[tokio::test(flavor = "multi_thread")]
async fn streamed_pages_and_ids_are_the_same_documents_as_json_jsonp_and_geojson() -> Result<()> {
    let setup = Setup::start().await?;
    let query = format!("{}/0/query", setup.service("koordinates", 1006));
    let client = reqwest::Client::new();
    let text = |params: Vec<(&'static str, &'static str)>| {
        let (client, query) = (client.clone(), query.clone());
        async move {
            let response = client.get(&query).query(&params).send().await?;
            let kind = response
                .headers()
                .get("content-type")
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            anyhow::Ok((kind, response.text().await?))
        }
    };
    for (format, extra) in [
        ("json", ("where", "category='c3'")),
        ("json", ("geometry", "166,-48,179,-34")),
        ("geojson", ("where", "category='c3'")),
        ("json", ("returnIdsOnly", "true")),
    ] {
        let base = vec![
            extra,
            ("outFields", "*"),
            ("resultOffset", "10"),
            ("resultRecordCount", "700"),
            ("f", format),
        ];
        let (kind, plain) = text(base.clone()).await?;
        assert!(kind.starts_with("application/json"), "{kind}");
        let document: Value = serde_json::from_str(&plain)
            .with_context(|| format!("{extra:?} {format}: not JSON"))?;
        assert!(document.get("error").is_none(), "{document}");
        let mut wrapped = base.clone();
        wrapped.push(("callback", "draw"));
        let (kind, script) = text(wrapped).await?;
        assert!(kind.starts_with("application/javascript"), "{kind}");
        let inner = script
            .strip_prefix("draw(")
            .and_then(|rest| rest.strip_suffix(')'))
            .with_context(|| format!("not a JSONP call: {}", &script[..script.len().min(80)]))?;
        assert_eq!(
            inner, plain,
            "{extra:?} {format}: JSONP wraps the same document"
        );
        if extra.0 != "returnIdsOnly" {
            assert_eq!(
                document["features"].as_array().map(Vec::len),
                Some(700),
                "{extra:?} {format}"
            );
            let exceeded = if format == "geojson" {
                document["properties"]["exceededTransferLimit"].as_bool()
            } else {
                document["exceededTransferLimit"].as_bool()
            };
            assert_eq!(exceeded, Some(true), "{extra:?} {format}: more exist");
        }
    }
    // The last page of the where clause: exceeded is false and the page is not cut.
    let (_, last) = text(vec![
        ("where", "category='c3'"),
        ("resultOffset", "1990"),
        ("resultRecordCount", "100"),
        ("f", "json"),
    ])
    .await?;
    let last: Value = serde_json::from_str(&last)?;
    assert_eq!(last["exceededTransferLimit"], false, "{last}");
    assert_eq!(last["features"].as_array().map(Vec::len), Some(10));
    Ok(())
}
