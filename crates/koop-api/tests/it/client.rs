//! The client against koop-testkit over real HTTP on loopback.

use std::error::Error as _;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use koop_api::{
    Error, ExportFormat, ExportRequest, ExportState, KoordinatesConnection, LayerKind, Resource,
    RetryPolicy,
};
use koop_testkit::{
    ApiGeneration, BumpKind, ExportFaults, Listener, RateLimitFault, RequestFaults,
    ServerErrorFault, TestLayer, TestServer, TestServerConfig, data,
};

/// Fast retries so the tests measure behaviour, not backoff.
fn quick_retries(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(5),
    }
}

fn connect_with(
    server: &TestServer,
    key: &str,
    retry: RetryPolicy,
) -> Result<KoordinatesConnection> {
    Ok(KoordinatesConnection::builder()
        .api_key(Some(key.to_owned()))
        .domain(server.domain())
        .plain_http(true)
        .retry_policy(retry)
        .build()?)
}

fn connect(server: &TestServer) -> Result<KoordinatesConnection> {
    connect_with(server, server.api_key(), quick_retries(4))
}

/// Every text an error shows: `Display`, `Debug` and its whole source chain.
fn all_text(error: &Error) -> String {
    let mut text = format!("{error}\n{error:?}");
    let mut source = error.source();
    while let Some(inner) = source {
        let _ = write!(text, "\n{inner}\n{inner:?}");
        source = inner.source();
    }
    text
}

fn gpkg_request(layer_url: &str) -> ExportRequest {
    ExportRequest::new(koop_api::Epsg::NZTM2000)
        .with_item(layer_url)
        .with_format(&LayerKind::Vector, &ExportFormat::GeoPackage)
}

#[tokio::test]
async fn the_key_is_sent_as_a_key_authorization_header() -> Result<()> {
    let server = TestServer::start().await?;
    let connection = connect(&server)?;
    let details = connection.layer_details(1001).await?;
    assert_eq!(details.title, "World Countries (Natural Earth 1:110m)");
    assert_eq!(details.version_id(), server.current_version(1001));
    let expected = format!("key {}", server.api_key());
    let requests = server.requests();
    assert!(!requests.is_empty());
    assert!(
        requests
            .iter()
            .all(|request| request.authorization.as_deref() == Some(expected.as_str())),
        "{requests:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_refused_key_never_appears_in_errors_or_debug() -> Result<()> {
    let server = TestServer::start().await?;
    let wrong_key = "wrong-secret-key-4f9a1c";
    let connection = connect_with(&server, wrong_key, quick_retries(2))?;
    let error = connection
        .layer_details(1001)
        .await
        .expect_err("the key is wrong");
    assert!(matches!(error, Error::Unauthorized { .. }), "{error:?}");
    let text = all_text(&error);
    assert!(text.contains("401"), "{text}");
    assert!(!text.contains(wrong_key), "{text}");
    assert!(!text.contains(server.api_key()), "{text}");
    assert!(!format!("{connection:?}").contains(wrong_key));

    // The good key does not leak through any other error either.
    let connection = connect(&server)?;
    let error = connection
        .layer_details(424_242)
        .await
        .expect_err("no such layer");
    assert!(!all_text(&error).contains(server.api_key()));
    assert!(!format!("{connection:?}").contains(server.api_key()));
    Ok(())
}

#[tokio::test]
async fn a_missing_key_names_the_environment_variable() {
    let error = KoordinatesConnection::builder()
        .api_key(None)
        .api_key_env("KOOP_TEST_VARIABLE_THAT_IS_NEVER_SET")
        .build()
        .expect_err("no key anywhere");
    assert!(matches!(error, Error::MissingApiKey { .. }));
    assert!(
        error
            .to_string()
            .contains("KOOP_TEST_VARIABLE_THAT_IS_NEVER_SET")
    );
}

#[tokio::test]
async fn a_429_with_retry_after_is_retried_after_about_that_long() -> Result<()> {
    let server = TestServer::start().await?;
    let connection = connect(&server)?;
    server.set_request_faults(RequestFaults {
        rate_limit: Some(RateLimitFault {
            count: 1,
            retry_after_secs: 1,
        }),
        ..RequestFaults::default()
    });
    let started = Instant::now();
    let details = connection.layer_details(1002).await?;
    let waited = started.elapsed();
    assert_eq!(details.layer_id(), Some(1002));
    assert!(
        waited >= Duration::from_millis(950),
        "retried after {waited:?}"
    );
    assert!(waited < Duration::from_secs(4), "retried after {waited:?}");
    let counters = server.counters();
    assert_eq!(counters.rate_limited, 1);
    assert_eq!(counters.layer_details, 1);
    assert_eq!(counters.api_requests, 2);
    Ok(())
}

#[tokio::test]
async fn a_429_storm_stops_at_the_bound_with_a_rate_limited_error() -> Result<()> {
    let server = TestServer::start().await?;
    let connection = connect_with(&server, server.api_key(), quick_retries(3))?;
    server.set_request_faults(RequestFaults {
        rate_limit: Some(RateLimitFault {
            count: u32::MAX,
            retry_after_secs: 0,
        }),
        ..RequestFaults::default()
    });
    let error = connection.layer_details(1001).await.expect_err("storm");
    match &error {
        Error::RateLimited {
            attempts,
            retry_after,
            ..
        } => {
            assert_eq!(*attempts, 3);
            assert_eq!(*retry_after, Some(Duration::ZERO));
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    assert!(error.to_string().contains("after 3 attempt"), "{error}");
    assert_eq!(server.counters().api_requests, 3);
    Ok(())
}

#[tokio::test]
async fn a_retry_after_beyond_the_bound_is_not_waited_for() -> Result<()> {
    let server = TestServer::start().await?;
    let connection = connect(&server)?;
    server.set_request_faults(RequestFaults {
        rate_limit: Some(RateLimitFault {
            count: 1,
            retry_after_secs: 3600,
        }),
        ..RequestFaults::default()
    });
    let started = Instant::now();
    let error = connection
        .layer_details(1001)
        .await
        .expect_err("an hour is too long");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(error.retry_after(), Some(Duration::from_secs(3600)));
    Ok(())
}

#[tokio::test]
async fn not_found_names_the_layer_and_the_domain() -> Result<()> {
    let server = TestServer::start().await?;
    let connection = connect(&server)?;
    let error = connection
        .layer_details(987_654)
        .await
        .expect_err("unknown layer");
    assert!(
        matches!(
            &error,
            Error::NotFound {
                resource: Resource::Layer(987_654),
                ..
            }
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("layer 987654"), "{message}");
    assert!(message.contains(&server.domain()), "{message}");
    // A 404 is final: no retries.
    assert_eq!(server.counters().layer_details, 1);

    let error = connection
        .item_details(987_654)
        .await
        .expect_err("neither layer nor table");
    assert!(matches!(
        &error,
        Error::NotFound {
            resource: Resource::LayerOrTable(987_654),
            ..
        }
    ));
    let table = connection.item_details(1005).await?;
    assert_eq!(table.kind, Some(LayerKind::Table));
    Ok(())
}

#[tokio::test]
async fn a_server_error_is_retried_for_reads_but_not_for_creating_an_export() -> Result<()> {
    let server = TestServer::start().await?;
    let connection = connect(&server)?;
    server.set_request_faults(RequestFaults {
        server_error: Some(ServerErrorFault {
            on_request: 1,
            times: 1,
            status: 503,
        }),
        ..RequestFaults::default()
    });
    let details = connection.layer_details(1001).await?;
    assert_eq!(server.counters().server_errors, 1);

    server.set_request_faults(RequestFaults {
        server_error: Some(ServerErrorFault {
            on_request: 1,
            times: 1,
            status: 503,
        }),
        ..RequestFaults::default()
    });
    let error = connection
        .create_export(&gpkg_request(&details.url))
        .await
        .expect_err("503 on create is not retried");
    assert_eq!(error.status(), Some(503));
    assert_eq!(server.counters().exports_created, 0);
    assert_eq!(server.counters().server_errors, 2);
    Ok(())
}

#[tokio::test]
async fn an_export_goes_from_processing_to_complete_and_downloads() -> Result<()> {
    let server = TestServer::start().await?;
    let connection = connect(&server)?;
    let details = connection.layer_details(1002).await?;
    let request = gpkg_request(&details.url);
    let validation = connection.validate_export(&request).await?;
    assert!(validation.is_valid, "{validation:?}");

    let export = connection.create_export(&request).await?;
    assert_eq!(export.state, ExportState::Processing);
    assert_eq!(export.progress, Some(0.0));
    let mut last_progress = 0.0;
    let complete = loop {
        let export = connection.export(export.id).await?;
        if export.state == ExportState::Complete {
            break export;
        }
        let progress = export
            .progress
            .context("processing exports have progress")?;
        assert!(progress >= last_progress, "{progress} < {last_progress}");
        last_progress = progress;
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(last_progress > 0.0, "progress rose while processing");
    assert!(complete.download_url.is_some());

    let mut download = connection.download_export(&complete, 0).await?;
    assert_eq!(download.offset(), 0);
    let filename = download.filename().context("a file name")?.to_owned();
    assert!(
        filename.starts_with("kx-nz-islands-te-ika-a-māui")
            && std::path::Path::new(&filename)
                .extension()
                .is_some_and(|ext| ext == "zip"),
        "{filename}"
    );
    let mut bytes = Vec::new();
    while let Some(chunk) = download.chunk().await? {
        bytes.extend_from_slice(&chunk);
    }
    assert_eq!(Some(bytes.len() as u64), download.total_size());
    assert_eq!(bytes, std::fs::read(server.export_zip(1002).await?)?);

    // Resuming from an offset is a Range request the server honours.
    let mut resumed = connection.download_export(&complete, 100).await?;
    assert_eq!(resumed.offset(), 100);
    assert_eq!(resumed.total_size(), Some(bytes.len() as u64));
    let mut tail = Vec::new();
    while let Some(chunk) = resumed.chunk().await? {
        tail.extend_from_slice(&chunk);
    }
    assert_eq!(tail, bytes[100..]);
    assert_eq!(server.counters().range_requests, 1);

    let past_end = connection
        .download_export(&complete, bytes.len() as u64 + 10)
        .await
        .expect_err("past the end");
    assert!(
        matches!(past_end, Error::RangeNotSatisfiable { .. }),
        "{past_end:?}"
    );

    let listed = connection.exports().await?;
    assert!(listed.iter().any(|export| export.id == complete.id));
    Ok(())
}

#[tokio::test]
async fn an_invalid_export_gives_the_server_reasons() -> Result<()> {
    let server = TestServer::start().await?;
    let connection = connect(&server)?;
    let cloud = format!("{}layers/1007/", server.api_url());
    let request = ExportRequest::new(koop_api::Epsg::NZTM2000)
        .with_item(&cloud)
        .with_format(&LayerKind::PointCloud, &ExportFormat::GeoPackage);
    let validation = connection.validate_export(&request).await?;
    assert!(!validation.is_valid);
    assert_eq!(validation.reasons(), [format!("{cloud}: unsupported-kind")]);

    let error = connection
        .create_export(&request)
        .await
        .expect_err("invalid");
    match &error {
        Error::InvalidExport { reasons, .. } => {
            assert_eq!(reasons, &[format!("{cloud}: unsupported-kind")]);
        }
        other => panic!("expected InvalidExport, got {other:?}"),
    }
    assert!(error.to_string().contains("unsupported-kind"));
    Ok(())
}

#[tokio::test]
async fn cancelling_answers_the_cancelled_export_then_409() -> Result<()> {
    let config = TestServerConfig {
        layers: vec![
            TestLayer::vector(7, "Slow layer", data::NZ_ISLANDS_GPKG)
                .with_latency(Duration::from_secs(60)),
        ],
        ..TestServerConfig::default()
    };
    let server = TestServer::start_with(config).await?;
    let connection = connect(&server)?;
    let details = connection.layer_details(7).await?;
    let export = connection
        .create_export(&gpkg_request(&details.url))
        .await?;
    let cancelled = connection.cancel_export(export.id).await?;
    assert_eq!(cancelled.state, ExportState::Cancelled);
    let error = connection
        .cancel_export(export.id)
        .await
        .expect_err("already cancelled");
    assert_eq!(error.status(), Some(409));
    assert!(error.to_string().contains("Can't cancel"), "{error}");
    Ok(())
}

#[tokio::test]
async fn older_servers_answer_create_with_a_location_only() -> Result<()> {
    let server = TestServer::start().await?;
    server.set_export_faults(
        1001,
        ExportFaults {
            create_with_location_only: true,
            ..ExportFaults::default()
        },
    );
    let connection = connect(&server)?;
    let details = connection.layer_details(1001).await?;
    let export = connection
        .create_export(&gpkg_request(&details.url))
        .await?;
    assert_eq!(server.counters().exports_created, 1);
    assert_eq!(
        server.counters().export_polls,
        1,
        "the Location was followed"
    );
    assert!(export.url.ends_with(&format!("/exports/{}/", export.id)));
    Ok(())
}

#[tokio::test]
async fn the_download_redirect_to_storage_never_carries_the_key() -> Result<()> {
    let server = TestServer::start().await?;
    server.set_export_faults(
        1003,
        ExportFaults {
            redirect_download: true,
            ..ExportFaults::default()
        },
    );
    let connection = connect(&server)?;
    let details = connection.layer_details(1003).await?;
    let request = ExportRequest::new(koop_api::Epsg::NZTM2000)
        .with_item(&details.url)
        .with_format(&LayerKind::Grid, &ExportFormat::GeoTiff);
    let mut export = connection.create_export(&request).await?;
    while export.state != ExportState::Complete {
        tokio::time::sleep(Duration::from_millis(100)).await;
        export = connection.export(export.id).await?;
    }
    let mut download = connection.download_export(&export, 0).await?;
    let mut bytes = Vec::new();
    while let Some(chunk) = download.chunk().await? {
        bytes.extend_from_slice(&chunk);
    }
    assert_eq!(bytes, std::fs::read(server.export_zip(1003).await?)?);

    let requests = server.requests();
    let storage: Vec<_> = requests
        .iter()
        .filter(|request| request.listener == Listener::Storage)
        .collect();
    assert_eq!(storage.len(), 1, "{requests:?}");
    assert_eq!(storage[0].authorization, None);
    assert!(storage[0].path.contains("X-Amz-Signature"));
    assert_eq!(server.counters().storage_downloads, 1);
    Ok(())
}

#[tokio::test]
async fn versions_are_read_across_pages_newest_first() -> Result<()> {
    let config = TestServerConfig {
        page_size: 1,
        ..TestServerConfig::default()
    };
    let server = TestServer::start_with(config).await?;
    let first = server.current_version(1001).context("layer 1001")?;
    let second = server.bump_version(1001, BumpKind::Data).context("bump")?;
    let third = server
        .bump_version(1001, BumpKind::MetadataOnly)
        .context("bump")?;
    let connection = connect(&server)?;
    let versions = connection.layer_versions(1001).await?;
    let ids: Vec<u64> = versions.iter().map(|version| version.id).collect();
    assert_eq!(ids, [third, second, first]);
    assert_eq!(server.counters().version_lists, 3);
    assert_eq!(versions[0].data_import, Some(false));

    let details = connection.layer_details(1001).await?;
    assert_eq!(details.version_id(), Some(third));
    assert!(details.is_metadata_only_version());
    assert_eq!(details.data_version_id(), Some(second));
    let old = connection.layer_version(1001, first).await?;
    assert_eq!(old.version_id(), Some(first));
    Ok(())
}

#[tokio::test]
async fn v1_shaped_layers_decode_through_the_client() -> Result<()> {
    let config = TestServerConfig {
        layers: vec![
            TestLayer::vector(5, "Old style", data::NZ_ISLANDS_GPKG)
                .with_api_generation(ApiGeneration::V1),
        ],
        ..TestServerConfig::default()
    };
    let server = TestServer::start_with(config).await?;
    let details = connect(&server)?.layer_details(5).await?;
    assert_eq!(details.title, "Old style");
    assert!(details.version.is_none());
    assert_eq!(details.version_id(), server.current_version(5));
    assert_eq!(details.crs().and_then(koop_api::Crs::epsg), Some(2193));
    Ok(())
}

#[tokio::test]
async fn dublin_core_documents_come_from_the_metadata_link() -> Result<()> {
    let mut config = TestServerConfig::default();
    config
        .layers
        .push(TestLayer::vector(8, "No metadata", data::NZ_ISLANDS_GPKG).without_dublin_core());
    let server = TestServer::start_with(config).await?;
    let connection = connect(&server)?;
    let details = connection.layer_details(1002).await?;
    let xml = connection
        .dc_metadata(&details)
        .await?
        .context("layer 1002 has DC")?;
    assert!(
        xml.contains("<dc:title>NZ Islands — Te Ika-a-Māui &amp; Te Waipounamu</dc:title>"),
        "{xml}"
    );
    assert!(xml.contains("&lt;New Zealand&gt;"), "{xml}");
    let bare = connection.layer_details(8).await?;
    assert_eq!(connection.dc_metadata(&bare).await?, None);
    Ok(())
}

/// A server that misbehaves in ways the testkit does not: a cross-host redirect of an API call,
/// and a body that echoes the API key.
async fn rogue_server() -> Result<(String, std::sync::Arc<std::sync::atomic::AtomicU32>)> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::get;

    let elsewhere_hits = Arc::new(AtomicU32::new(0));
    let hits = elsewhere_hits.clone();
    let elsewhere = axum::Router::new().fallback(move || {
        hits.fetch_add(1, Ordering::SeqCst);
        async { "{}" }
    });
    let elsewhere_listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let elsewhere_addr = elsewhere_listener.local_addr()?;
    tokio::spawn(async move { axum::serve(elsewhere_listener, elsewhere).await });

    let rogue = axum::Router::new()
        .route(
            "/services/api/v1.x/layers/1/",
            get(move || async move {
                (
                    StatusCode::FOUND,
                    [(header::LOCATION, format!("http://{elsewhere_addr}/steal/"))],
                )
                    .into_response()
            }),
        )
        .route(
            "/services/api/v1.x/layers/2/",
            get(|headers: HeaderMap| async move {
                let auth = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                format!("<html>not json, but your header was {auth}</html>")
            }),
        );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, rogue).await });
    Ok((addr.to_string(), elsewhere_hits))
}

#[tokio::test]
async fn api_calls_refuse_cross_host_redirects_and_redact_echoed_keys() -> Result<()> {
    let (domain, elsewhere_hits) = rogue_server().await?;
    let key = "echo-me-secret-91b2";
    let connection = KoordinatesConnection::builder()
        .api_key(Some(key.to_owned()))
        .domain(domain)
        .plain_http(true)
        .retry_policy(quick_retries(2))
        .build()?;

    let error = connection
        .layer_details(1)
        .await
        .expect_err("cross-host redirect");
    assert!(matches!(error, Error::Redirect { .. }), "{error:?}");
    assert!(error.to_string().contains("never leave"), "{error}");
    assert_eq!(elsewhere_hits.load(std::sync::atomic::Ordering::SeqCst), 0);

    let error = connection.layer_details(2).await.expect_err("not JSON");
    assert!(matches!(error, Error::Decode { .. }), "{error:?}");
    let text = all_text(&error);
    assert!(text.contains("[redacted]"), "{text}");
    assert!(!text.contains(key), "{text}");
    Ok(())
}

#[tokio::test]
async fn an_unknown_domain_fails_at_once_without_retries() -> Result<()> {
    let connection = KoordinatesConnection::builder()
        .api_key(Some("key".to_owned()))
        .domain("no-such-koordinates-site.invalid")
        .retry_policy(RetryPolicy {
            max_attempts: 6,
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(5),
        })
        .build()?;
    let started = Instant::now();
    let error = connection
        .layer_details(1)
        .await
        .expect_err("does not resolve");
    assert!(matches!(error, Error::UnknownHost { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("no-such-koordinates-site.invalid"),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "no backoff: {:?}",
        started.elapsed()
    );
    Ok(())
}

/// A server answering fixed bodies on fixed paths, as an emulator of the API written by someone
/// else might.
async fn fixed_bodies(bodies: Vec<(&'static str, String)>) -> Result<String> {
    let mut router = axum::Router::new();
    for (path, body) in bodies {
        router = router.route(
            path,
            axum::routing::any(move || {
                let body = body.clone();
                async move {
                    (
                        axum::http::StatusCode::CREATED,
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        body,
                    )
                }
            }),
        );
    }
    Ok(koop_testkit::http::serve(router)
        .await?
        .trim_start_matches("http://")
        .to_owned())
}

#[tokio::test]
async fn an_export_with_a_crs_object_decodes_and_a_missing_field_is_named_with_its_endpoint()
-> Result<()> {
    // The body that broke `koop get` against an independent emulator: `crs` as v1.x's object.
    let export = serde_json::json!({
        "id": 1, "name": "kx-te-ika-a-maui", "state": "processing", "progress": null,
        "url": "/services/api/v1.x/exports/1/",
        "crs": {"id": "EPSG:2193", "srid": 2193, "name": "NZGD2000 / NZTM 2000", "url": "https://example.test/crs/2193/"},
        "items": [{"item": "https://example.test/services/api/v1.x/layers/501/"}],
        "formats": {"vector": "application/x-ogc-gpkg"},
        "size_estimate_zipped": "1024",
    });
    let mut no_url =
        serde_json::json!({"id": 1474, "type": "layer", "title": "No URL", "kind": "vector"});
    no_url["version"] = serde_json::json!({"id": "4067", "status": 1, "created_at": 12});
    let domain = fixed_bodies(vec![
        ("/services/api/v1.x/exports/", export.to_string()),
        ("/services/api/v1.x/layers/1474/", no_url.to_string()),
    ])
    .await?;
    let connection = KoordinatesConnection::builder()
        .api_key(Some("a-key".to_owned()))
        .domain(&domain)
        .plain_http(true)
        .build()?;
    let created = connection
        .create_export(&gpkg_request(&format!(
            "http://{domain}/services/api/v1.x/layers/501/"
        )))
        .await?;
    assert_eq!(created.id, 1);
    assert_eq!(
        created.crs.as_ref().and_then(koop_api::Crs::epsg),
        Some(2193)
    );
    assert_eq!(created.size_estimate_zipped, Some(1024));

    let error = connection
        .layer_details(1474)
        .await
        .expect_err("a layer body without url");
    assert!(matches!(error, Error::Decode { .. }), "{error:?}");
    let text = error.to_string();
    assert!(
        text.contains("missing field `url`") && text.contains("/services/api/v1.x/layers/1474/"),
        "names the field and the endpoint: {text}"
    );
    Ok(())
}
