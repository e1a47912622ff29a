//! koop-server with the Koordinates provider (against koop-testkit) and a second provider, over
//! real HTTP on loopback.

mod network;

#[allow(dead_code, reason = "only the provider of the example is used")]
#[path = "../../examples/geojson_file_provider.rs"]
mod example;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use async_trait::async_trait;
use koop_provider::{
    Field, FieldType, GeoJsonValidator, Metadata, Provider, ProviderData, ProviderError,
    ProviderRequest,
};
use koop_provider_koordinates::{KoordinatesConfig, KoordinatesProvider, ServedLayers};
use koop_server::ServerBuilder;
use koop_testkit::{ExportFaults, ExportOutcome, TestServer};
use serde_json::Value;

/// Serves `router` on a free loopback port; returns its base URL.
async fn serve(router: axum::Router) -> Result<String> {
    Ok(koop_testkit::http::serve(router).await?)
}

/// The Koordinates provider for the testkit, with its key and a cache in `cache`.
fn koordinates(server: &TestServer, cache: &Path) -> KoordinatesProvider {
    KoordinatesProvider::new(KoordinatesConfig {
        domains: vec![server.site()],
        layers: ServedLayers::Any,
        api_key: Some(server.api_key().to_owned()),
        cache_dir: Some(cache.to_owned()),
        ..KoordinatesConfig::default()
    })
}

fn fixtures() -> PathBuf {
    koop_testkit::fixtures::koop_geoservices()
}

async fn get_json(url: &str) -> Result<(u16, Value)> {
    Ok(koop_testkit::http::get_json(url, &[]).await?)
}

#[tokio::test]
async fn the_status_route_answers_like_koop() -> Result<()> {
    let base = serve(ServerBuilder::default().build()?).await?;
    assert_eq!(
        get_json(&format!("{base}/status")).await?,
        (200, serde_json::json!({"success": true}))
    );
    Ok(())
}

#[tokio::test]
async fn a_second_provider_is_served_with_no_change_to_the_server() -> Result<()> {
    let server = TestServer::start().await?;
    let cache = tempfile::tempdir()?;
    let router = ServerBuilder::default()
        .provider(koordinates(&server, cache.path()))
        .provider(example::GeoJsonFileProvider::new(fixtures()))
        .build()?;
    let base = serve(router).await?;
    let response = reqwest::get(format!("{base}/file-geojson/sample/geojson")).await?;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok()),
        Some("application/geo+json")
    );
    let json: Value = response.json().await?;
    assert_eq!(json["type"], "FeatureCollection");
    assert_eq!(json["features"].as_array().map(Vec::len), Some(5));
    assert_eq!(json["metadata"]["name"], "sample");
    let fields = koop_testkit::http::field_pairs(&json["metadata"]["fields"]);
    assert!(
        fields.contains(&("area_km2", "Double")) && fields.contains(&("surveyed", "Date")),
        "{fields:?}"
    );
    let (status, json) = get_json(&format!("{base}/file-geojson/..%2Fsecret/geojson")).await?;
    assert_eq!(status, 404, "{json}");

    // The Koordinates provider, registered beside it, still answers.
    let (status, _) = get_json(&format!(
        "{base}/koordinates/{}/1001/geojson",
        server.domain()
    ))
    .await?;
    assert_eq!(status, 200);
    Ok(())
}

/// The reference coordinates of a GeoPackage in EPSG:4326, by GDAL (PROJ).
fn ogr_geojson_4326(path: &Path) -> Result<Value> {
    let output = Command::new("ogr2ogr")
        .args(["-f", "GeoJSON", "/vsistdout/", "-t_srs", "EPSG:4326"])
        .arg(path)
        .output()
        .context("running ogr2ogr (apt-get install gdal-bin)")?;
    ensure!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(serde_json::from_slice(&output.stdout)?)
}

fn ogr_feature_count(path: &Path) -> Result<u64> {
    let output = Command::new("ogrinfo")
        .args(["-ro", "-so", "-al"])
        .arg(path)
        .output()?;
    String::from_utf8(output.stdout)?
        .lines()
        .find_map(|line| line.strip_prefix("Feature Count: "))
        .and_then(|count| count.trim().parse().ok())
        .context("ogrinfo's feature count")
}

fn first_position(geometry: &Value) -> Option<(f64, f64)> {
    let mut value = &geometry["coordinates"];
    while value.get(0).is_some_and(Value::is_array) {
        value = &value[0];
    }
    Some((value[0].as_f64()?, value[1].as_f64()?))
}

#[tokio::test]
async fn a_koordinates_layer_is_served_with_every_feature_in_wgs84() -> Result<()> {
    let server = TestServer::start().await?;
    let cache = tempfile::tempdir()?;
    let base = serve(
        ServerBuilder::default()
            .provider(koordinates(&server, cache.path()))
            .build()?,
    )
    .await?;
    let url = format!("{base}/koordinates/{}/1002/geojson", server.domain());
    let (status, json) = get_json(&url).await?;
    assert_eq!(status, 200, "{json}");
    let gpkg = std::fs::read_dir(cache.path())?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .find(|path| path.extension().is_some_and(|ext| ext == "gpkg"))
        .context("the layer was fetched into the cache")?;
    let features = json["features"].as_array().context("features")?;
    assert_eq!(features.len() as u64, ogr_feature_count(&gpkg)?);
    let reference = ogr_geojson_4326(&gpkg)?;
    let reference = reference["features"].as_array().context("reference")?;
    assert_eq!(reference.len(), features.len());
    for (ours, theirs) in features.iter().zip(reference) {
        let (ours, theirs) = (
            first_position(&ours["geometry"]).context("our position")?,
            first_position(&theirs["geometry"]).context("GDAL's position")?,
        );
        assert!(
            (ours.0 - theirs.0).abs() < 1e-6 && (ours.1 - theirs.1).abs() < 1e-6,
            "{ours:?} vs {theirs:?}"
        );
    }
    let metadata = &json["metadata"];
    assert_eq!(
        metadata["name"],
        "NZ Islands — Te Ika-a-Māui & Te Waipounamu"
    );
    assert_eq!(metadata["geometryType"], "MultiPolygon");
    assert!(
        metadata["extent"][0][0]
            .as_f64()
            .is_some_and(|x| x > 160.0 && x < 180.0),
        "{metadata}"
    );
    let names: Vec<&str> = metadata["fields"]
        .as_array()
        .context("fields")?
        .iter()
        .filter_map(|field| field["name"].as_str())
        .collect();
    // The text `id` is no object id: the GeoPackage fid is the idField, served as a field.
    assert_eq!(
        names,
        ["fid", "id", "name"],
        "the layer schema, without the geometry"
    );
    assert_eq!(metadata["idField"], "fid");

    // Served again from the provider's state: no new export, at most one request.
    let before = server.counters();
    assert_eq!(get_json(&url).await?.0, 200);
    assert_eq!(server.counters().exports_created, before.exports_created);
    assert!(server.counters().api_requests - before.api_requests <= 1);
    Ok(())
}

#[tokio::test]
async fn koordinates_metadata_types_fields_and_the_id_field() -> Result<()> {
    let server = TestServer::start().await?;
    let cache = tempfile::tempdir()?;
    let base = serve(
        ServerBuilder::default()
            .provider(koordinates(&server, cache.path()))
            .build()?,
    )
    .await?;
    let (status, json) = get_json(&format!(
        "{base}/koordinates/{}/1006/geojson",
        server.domain()
    ))
    .await?;
    assert_eq!(status, 200, "{json}");
    let metadata = &json["metadata"];
    assert_eq!(metadata["geometryType"], "Point");
    assert_eq!(
        metadata["idField"], "id",
        "an integer primary key within 0..2^31"
    );
    let fields = koop_testkit::http::field_pairs(&metadata["fields"]);
    assert_eq!(
        fields,
        [
            ("id", "Integer"),
            ("category", "String"),
            ("value", "Double"),
            ("name", "String"),
            ("observed", "Date")
        ]
    );
    assert_eq!(json["features"].as_array().map(Vec::len), Some(20_000));
    Ok(())
}

/// A provider whose data is cached for `ttl`, counting its `get_data` calls.
struct Counting {
    calls: AtomicUsize,
    ttl: Duration,
    data: ProviderData,
    key_with_query: bool,
}

#[async_trait]
impl Provider for Counting {
    fn name(&self) -> &str {
        "counting"
    }

    async fn get_data(&self, _request: &ProviderRequest) -> Result<ProviderData, ProviderError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(ProviderData {
            ttl: Some(self.ttl),
            ..self.data.clone()
        })
    }

    fn create_key(&self, request: &ProviderRequest) -> String {
        let key = koop_provider::default_key(self.name(), request);
        match request.query("date") {
            Some(date) if self.key_with_query => format!("{key}::{date}"),
            _ => key,
        }
    }
}

fn point_data(geometry: &Value) -> Result<ProviderData> {
    Ok(ProviderData {
        features: vec![serde_json::from_value(serde_json::json!({
            "type": "Feature", "geometry": geometry, "properties": {"name": "x"}
        }))?],
        metadata: Metadata {
            fields: vec![Field::new("name", FieldType::String)],
            ..Metadata::default()
        },
        ..ProviderData::default()
    })
}

/// GETs `path` from `router` in this task (no socket, so the paused clock stays in charge).
async fn oneshot_status(router: &axum::Router, path: &str) -> Result<u16> {
    let response = tower::ServiceExt::oneshot(
        router.clone(),
        axum::http::Request::get(path).body(axum::body::Body::empty())?,
    )
    .await?;
    Ok(response.status().as_u16())
}

#[tokio::test(start_paused = true)]
async fn cached_data_expires_after_its_ttl() -> Result<()> {
    let provider = Arc::new(Counting {
        calls: AtomicUsize::new(0),
        ttl: Duration::from_secs(300),
        data: point_data(&serde_json::json!({"type": "Point", "coordinates": [174.7, -41.2]}))?,
        key_with_query: false,
    });
    let router = ServerBuilder::default()
        .shared_provider(provider.clone())
        .build()?;
    let url = "/counting/a/geojson";
    assert_eq!(oneshot_status(&router, url).await?, 200);
    tokio::time::advance(Duration::from_secs(299)).await;
    assert_eq!(oneshot_status(&router, url).await?, 200);
    assert_eq!(
        provider.calls.load(Ordering::SeqCst),
        1,
        "within the ttl the second request came from the cache"
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(oneshot_status(&router, url).await?, 200);
    assert_eq!(
        provider.calls.load(Ordering::SeqCst),
        2,
        "after the ttl the provider is asked again"
    );
    // Another id is another key.
    assert_eq!(oneshot_status(&router, "/counting/b/geojson").await?, 200);
    assert_eq!(provider.calls.load(Ordering::SeqCst), 3);
    Ok(())
}

#[tokio::test]
async fn create_key_can_be_overridden_to_include_query_parameters() -> Result<()> {
    let provider = Arc::new(Counting {
        calls: AtomicUsize::new(0),
        ttl: Duration::from_secs(60),
        data: point_data(&serde_json::json!({"type": "Point", "coordinates": [0, 0]}))?,
        key_with_query: true,
    });
    let mut request = ProviderRequest::default();
    request.params.id = Some("a".to_owned());
    request.params.layer = Some("0".to_owned());
    assert_eq!(provider.create_key(&request), "counting::a::0");
    request.query.insert("date".to_owned(), "2025".to_owned());
    assert_eq!(provider.create_key(&request), "counting::a::0::2025");

    let base = serve(
        ServerBuilder::default()
            .shared_provider(provider.clone())
            .build()?,
    )
    .await?;
    get_json(&format!("{base}/counting/a/geojson?date=2024")).await?;
    get_json(&format!("{base}/counting/a/geojson?date=2025")).await?;
    get_json(&format!("{base}/counting/a/geojson?date=2025")).await?;
    assert_eq!(provider.calls.load(Ordering::SeqCst), 2);
    Ok(())
}

async fn bad_polygon_logs(validator: GeoJsonValidator) -> Result<String> {
    let (logs, _guard) = koop_testkit::logs::Logs::capture();
    let provider = Counting {
        calls: AtomicUsize::new(0),
        ttl: Duration::from_millis(1),
        // Clockwise exterior ring: breaks the right-hand rule.
        data: point_data(
            &serde_json::json!({"type": "Polygon", "coordinates": [[[0, 0], [0, 1], [1, 1], [1, 0], [0, 0]]]}),
        )?,
        key_with_query: false,
    };
    let router = ServerBuilder::default()
        .validator(validator)
        .provider(provider)
        .build()?;
    // In this task, so the log guard sees the handler's events.
    for _ in 0..3 {
        let response = tower::ServiceExt::oneshot(
            router.clone(),
            axum::http::Request::get("/counting/bad/geojson").body(axum::body::Body::empty())?,
        )
        .await?;
        ensure!(response.status() == 200);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(logs.text())
}

#[tokio::test]
async fn invalid_geojson_is_warned_about_once_and_not_in_production() -> Result<()> {
    let logs =
        bad_polygon_logs(GeoJsonValidator::for_environment(Some("development"), None)).await?;
    assert_eq!(
        logs.matches("right-hand rule").count(),
        1,
        "once per layer: {logs}"
    );
    assert!(logs.contains("WARN"), "{logs}");
    let logs =
        bad_polygon_logs(GeoJsonValidator::for_environment(Some("production"), None)).await?;
    assert!(!logs.contains("right-hand rule"), "{logs}");
    Ok(())
}

#[tokio::test]
async fn errors_are_json_with_their_status_and_the_server_keeps_serving() -> Result<()> {
    let server = TestServer::start().await?;
    let cache = tempfile::tempdir()?;
    let without_key = KoordinatesProvider::new(KoordinatesConfig {
        domains: vec![server.site()],
        layers: ServedLayers::Any,
        api_key_env: "KOOP_SERVER_TEST_VARIABLE_NEVER_SET".to_owned(),
        cache_dir: Some(cache.path().to_owned()),
        ..KoordinatesConfig::default()
    });
    let host = server.domain();
    let base = serve(
        ServerBuilder::default()
            .provider(koordinates(&server, cache.path()))
            .build()?,
    )
    .await?;
    let keyless = serve(ServerBuilder::default().provider(without_key).build()?).await?;

    let cases = [
        (
            format!("{base}/koordinates/not-served.example.com/1001/geojson"),
            404,
            "serves layers of",
        ),
        (
            format!("{base}/koordinates/{host}/abc/geojson"),
            400,
            "not a layer id",
        ),
        (
            format!("{base}/koordinates/{host}/424242/geojson"),
            404,
            "424242",
        ),
        (
            format!("{base}/koordinates/{host}/1003/geojson"),
            400,
            "grid layer",
        ),
        (
            format!("{keyless}/koordinates/{host}/1001/geojson"),
            503,
            "KOOP_SERVER_TEST_VARIABLE_NEVER_SET",
        ),
    ];
    for (url, expected, text) in cases {
        let (status, json) = get_json(&url).await?;
        assert_eq!(status, expected, "{url}: {json}");
        assert_eq!(json["error"]["code"], expected);
        assert!(
            json["error"]["message"]
                .as_str()
                .is_some_and(|message| message.contains(text)),
            "{url}: {json}"
        );
    }
    server.set_export_faults(
        1001,
        ExportFaults {
            outcome: ExportOutcome::Error,
            ..ExportFaults::default()
        },
    );
    let (status, json) = get_json(&format!("{base}/koordinates/{host}/1001/geojson")).await?;
    assert_eq!(status, 502, "a failed export: {json}");
    assert!(
        json["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("ended error")),
        "{json}"
    );
    // The server keeps serving.
    server.clear_faults();
    let (status, json) = get_json(&format!("{base}/koordinates/{host}/1001/geojson")).await?;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["features"].as_array().map(Vec::len), Some(177));
    Ok(())
}

/// A provider with an extra route (Koop's routes + controller) and no `:id`.
struct WithRoutes;

#[async_trait]
impl Provider for WithRoutes {
    fn name(&self) -> &str {
        "routes"
    }

    fn registration(&self) -> koop_provider::Registration {
        let handler: koop_provider::RouteHandler = Arc::new(|request: ProviderRequest| {
            Box::pin(async move {
                match request.params.host.as_deref() {
                    Some("bad") => Err(ProviderError::bad_request("a bad host".to_owned())),
                    host => Ok(serde_json::json!({"host": host, "q": request.query("q")})),
                }
            })
        });
        koop_provider::Registration {
            hosts: true,
            disable_id_param: true,
            routes: vec![koop_provider::ProviderRoute {
                path: "$namespace/:host/summary".to_owned(),
                methods: vec![koop_provider::Method::Get, koop_provider::Method::Post],
                handler,
            }],
            ..koop_provider::Registration::new(self.name())
        }
    }

    async fn get_data(&self, request: &ProviderRequest) -> Result<ProviderData, ProviderError> {
        point_data(&serde_json::json!({"type": "Point", "coordinates": [1, 2]})).map_or_else(
            |error| Err(ProviderError::internal(error.to_string(), None)),
            |data| {
                Ok(ProviderData {
                    metadata: Metadata {
                        name: request.params.host.clone(),
                        ..data.metadata
                    },
                    ..data
                })
            },
        )
    }
}

#[tokio::test]
async fn providers_add_their_own_routes_and_choose_their_parameters() -> Result<()> {
    let base = serve(ServerBuilder::default().provider(WithRoutes).build()?).await?;
    let (status, json) = get_json(&format!("{base}/routes/somewhere/summary?q=1")).await?;
    assert_eq!(
        (status, json),
        (200, serde_json::json!({"host": "somewhere", "q": "1"}))
    );
    let posted: Value = reqwest::Client::new()
        .post(format!("{base}/routes/there/summary"))
        .form(&[("q", "2")])
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(posted, serde_json::json!({"host": "there", "q": "2"}));
    let (status, json) = get_json(&format!("{base}/routes/bad/summary")).await?;
    assert_eq!(status, 400, "{json}");
    // hosts: true and disable_id_param: true give /{namespace}/:host/geojson.
    let (status, json) = get_json(&format!("{base}/routes/here/geojson")).await?;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["metadata"]["name"], "here");

    let duplicate = ServerBuilder::default()
        .provider(WithRoutes)
        .provider(WithRoutes)
        .build();
    assert!(matches!(
        duplicate,
        Err(koop_server::ServerError::DuplicateNamespace(_))
    ));
    Ok(())
}

#[tokio::test]
async fn offline_the_provider_refuses_layers_it_does_not_hold() -> Result<()> {
    let server = TestServer::start().await?;
    let cache = tempfile::tempdir()?;
    let offline = KoordinatesProvider::new(KoordinatesConfig {
        domains: vec![server.site()],
        cache_dir: Some(cache.path().to_owned()),
        offline: true,
        ..KoordinatesConfig::default()
    });
    let base = serve(ServerBuilder::default().provider(offline).build()?).await?;
    let (status, json) = get_json(&format!(
        "{base}/koordinates/{}/1001/geojson",
        server.domain()
    ))
    .await?;
    assert_eq!(status, 404, "{json}");
    assert!(
        json["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("offline")),
        "{json}"
    );
    assert_eq!(server.counters().api_requests, 0);

    // Once cached, offline serves it (metadata from the GeoPackage alone).
    koordinates_fetch(&server, cache.path(), 1002).await?;
    let (status, json) = get_json(&format!(
        "{base}/koordinates/{}/1002/geojson",
        server.domain()
    ))
    .await?;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["features"].as_array().map(Vec::len), Some(16));
    assert_eq!(
        json["metadata"]["name"],
        "NZ Islands — Te Ika-a-Māui & Te Waipounamu"
    );
    Ok(())
}

/// Fetches a layer into `cache` with the facade.
async fn koordinates_fetch(server: &TestServer, cache: &Path, layer_id: u64) -> Result<PathBuf> {
    let koop = koop::Koop::builder()
        .api_key(Some(server.api_key().to_owned()))
        .domain(server.base_url())
        .configure_connection(|connection| connection.plain_http(true))
        .cache_dir(Some(cache.to_owned()))
        .build()?;
    Ok(koop.get_layer(layer_id).await?)
}
