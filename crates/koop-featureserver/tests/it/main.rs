//! The FeatureServer output over real HTTP on loopback: against the responses of a real Koop
//! (`../shared/fixtures/koop-geoservices`), against Koordinates layers of the testkit, and with
//! GDAL as the client.

#[allow(dead_code, reason = "only the provider of the example is used")]
#[path = "../../../koop-server/examples/geojson_file_provider.rs"]
mod example;

mod auth;
mod compare;
mod koordinates;

mod reference;

use std::path::{Path, PathBuf};

use anyhow::Result;
use koop_featureserver::FeatureServerOutput;
use koop_server::ServerBuilder;
use serde_json::Value;

/// Serves `router` on a free loopback port; returns its base URL.
pub(crate) async fn serve(router: axum::Router) -> Result<String> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(format!("http://{address}"))
}

/// The reference responses and the GeoJSON they were made from.
pub(crate) fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/koop-geoservices")
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
    let response = reqwest::Client::new().get(url).query(query).send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await?))
}
