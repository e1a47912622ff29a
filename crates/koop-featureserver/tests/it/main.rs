//! The FeatureServer output over real HTTP on loopback: against the responses of a real Koop
//! (`koop-testkit/fixtures/koop-geoservices`), against Koordinates layers of the testkit, and with
//! GDAL as the client.

#[allow(dead_code, reason = "only the provider of the example is used")]
#[path = "../../../koop-server/examples/geojson_file_provider.rs"]
mod example;

mod auth;
mod caching;
mod compare;
mod koordinates;
mod pbf;

mod reference;

use std::path::PathBuf;

use anyhow::Result;
use koop_featureserver::FeatureServerOutput;
use koop_server::ServerBuilder;
use serde_json::Value;

/// Serves `router` on a free loopback port; returns its base URL.
pub(crate) async fn serve(router: axum::Router) -> Result<String> {
    Ok(koop_testkit::http::serve(router).await?)
}

/// The reference responses and the GeoJSON they were made from.
pub(crate) fn fixtures() -> PathBuf {
    koop_testkit::fixtures::koop_geoservices()
}

/// A server with the file provider over the fixtures (`sample` is the reference's layer).
pub(crate) async fn sample_server() -> Result<String> {
    serve(
        ServerBuilder::default()
            .provider(example::GeoJsonFileProvider::new(fixtures()))
            .output(FeatureServerOutput::default())
            .build()?,
    )
    .await
}

/// GET `url` with `query` pairs; the status and the body as JSON.
pub(crate) async fn get_json(url: &str, query: &[(&str, &str)]) -> Result<(u16, Value)> {
    Ok(koop_testkit::http::get_json(url, query).await?)
}
