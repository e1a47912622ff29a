//! HTTP caching of FeatureServer answers: ETags from the layer version and the query, 304 on
//! `If-None-Match` without running the query, `Cache-Control`, and headers that keep answers
//! from being sniffed as something else.

use std::time::Duration;

use anyhow::{Context, Result};
use koop_featureserver::FeatureServerOutput;
use koop_provider_koordinates::{KoordinatesConfig, KoordinatesProvider, ServedLayers};
use koop_server::ServerBuilder;
use koop_testkit::{BumpKind, TestServer};

use crate::serve;

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

#[tokio::test]
async fn a_held_etag_gets_304_until_the_layer_version_changes() -> Result<()> {
    let testkit = TestServer::start().await?;
    testkit.set_export_latency(1006, Duration::ZERO);
    let cache = tempfile::tempdir()?;
    let provider = KoordinatesProvider::new(KoordinatesConfig {
        domains: vec![testkit.site()],
        layers: ServedLayers::Any,
        api_key: Some(testkit.api_key().to_owned()),
        cache_dir: Some(cache.path().to_owned()),
        // Every request re-checks the layer's version.
        refresh: Duration::ZERO,
        ..KoordinatesConfig::default()
    });
    let router = ServerBuilder::default()
        .provider(provider)
        .output(FeatureServerOutput::default().cache_max_age(Duration::from_secs(300)))
        .build()?;
    let base = serve(router).await?;
    let layer = format!(
        "{base}/koordinates/rest/services/{}/1006/FeatureServer/0",
        testkit.domain()
    );
    let query = format!("{layer}/query?where=category%3D%27c3%27&outFields=*&resultRecordCount=10");
    let client = reqwest::Client::new();

    let first = client.get(&query).send().await?;
    assert_eq!(first.status(), 200);
    let etag = header(&first, "etag").context("an ETag")?;
    assert!(etag.starts_with("W/\""), "{etag}");
    assert_eq!(
        header(&first, "cache-control").as_deref(),
        Some("public, max-age=300")
    );
    assert_eq!(
        header(&first, "x-content-type-options").as_deref(),
        Some("nosniff")
    );
    let body = first.text().await?;
    assert!(body.contains("\"features\""), "{body}");

    // The same query, its parameters in another order: the same tag, answered 304.
    let reordered =
        format!("{layer}/query?resultRecordCount=10&outFields=*&where=category%3D%27c3%27");
    let again = client
        .get(&reordered)
        .header("if-none-match", &etag)
        .send()
        .await?;
    assert_eq!(again.status(), 304);
    assert_eq!(header(&again, "etag").as_deref(), Some(etag.as_str()));
    assert!(again.bytes().await?.is_empty());

    // Another query has another tag; the layer description has its own.
    let other = client
        .get(format!("{layer}/query?where=1%3D1&returnCountOnly=true"))
        .header("if-none-match", &etag)
        .send()
        .await?;
    assert_eq!(other.status(), 200);
    assert_ne!(header(&other, "etag"), Some(etag.clone()));
    let info = client.get(&layer).send().await?;
    let info_tag = header(&info, "etag").context("the layer's ETag")?;
    let info_again = client
        .get(&layer)
        .header("if-none-match", &info_tag)
        .send()
        .await?;
    assert_eq!(info_again.status(), 304);

    // With a token the answer is private to the caller.
    let private = client.get(format!("{query}&token=abc")).send().await?;
    assert_eq!(
        header(&private, "cache-control").as_deref(),
        Some("private, max-age=300")
    );

    // A new version of the layer: once the provider has seen it (it answers from the version
    // open while it checks), the old tag no longer matches.
    testkit
        .bump_version(1006, BumpKind::Data)
        .context("bumped")?;
    let started = std::time::Instant::now();
    let changed = loop {
        let response = client
            .get(&query)
            .header("if-none-match", &etag)
            .send()
            .await?;
        if response.status() == 200 {
            break response;
        }
        assert_eq!(response.status(), 304);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the new version is never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let new_tag = header(&changed, "etag").context("a new ETag")?;
    assert_ne!(new_tag, etag);
    Ok(())
}

#[tokio::test]
async fn jsonp_and_errors_are_never_sniffed_or_cached() -> Result<()> {
    let base = crate::sample_server().await?;
    let layer = format!("{base}/file-geojson/rest/services/sample/FeatureServer/0");
    let client = reqwest::Client::new();
    let jsonp = client
        .get(format!("{layer}/query?where=1%3D1&callback=draw"))
        .send()
        .await?;
    assert_eq!(
        header(&jsonp, "content-type").as_deref(),
        Some("application/javascript; charset=utf-8")
    );
    assert_eq!(
        header(&jsonp, "x-content-type-options").as_deref(),
        Some("nosniff")
    );
    assert!(jsonp.text().await?.starts_with("draw("));

    let error = client
        .get(format!("{layer}/query?where=nonsense%20%3D%3D"))
        .send()
        .await?;
    assert_eq!(error.status(), 200, "Geoservices errors are HTTP 200");
    assert_eq!(header(&error, "cache-control").as_deref(), Some("no-store"));
    assert_eq!(header(&error, "etag"), None);
    let json: serde_json::Value = error.json().await?;
    assert!(json["error"]["details"].is_array(), "{json}");
    Ok(())
}
