//! A second provider: GeoJSON files in a directory, served by the same koop server as the
//! Koordinates provider, with no change to koop-server: the `Provider` trait is the extension
//! point.
//!
//! ```sh
//! cargo run -p koop-server --example geojson_file_provider -- DIR [127.0.0.1:8080]
//! curl http://127.0.0.1:8080/file-geojson/sample/geojson      # DIR/sample.geojson
//! ```

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use koop_provider::{
    Metadata, Provider, ProviderData, ProviderError, ProviderRequest, infer_fields,
};

/// Serves `{dir}/{id}.geojson` as layer `id` (namespace `file-geojson`, no `:host`), cached
/// for a minute.
pub(crate) struct GeoJsonFileProvider {
    dir: PathBuf,
}

impl GeoJsonFileProvider {
    /// Serves the `.geojson` files of `dir`.
    pub(crate) fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
}

#[async_trait]
impl Provider for GeoJsonFileProvider {
    fn name(&self) -> &str {
        "file-geojson"
    }

    async fn get_data(&self, request: &ProviderRequest) -> Result<ProviderData, ProviderError> {
        let id = request.params.id.as_deref().unwrap_or_default();
        // Only plain names: no path can reach outside the directory.
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        {
            return Err(ProviderError::not_found(format!(
                "no GeoJSON file named {id:?}"
            )));
        }
        let path = self.dir.join(format!("{id}.geojson"));
        let text = tokio::fs::read_to_string(&path)
            .await
            .map_err(|_| ProviderError::not_found(format!("no GeoJSON file named {id:?}")))?;
        let collection: geojson::FeatureCollection = text
            .parse::<geojson::GeoJson>()
            .and_then(geojson::FeatureCollection::try_from)
            .map_err(|error| {
                ProviderError::internal(
                    format!("{id}.geojson is not a FeatureCollection: {error}"),
                    None,
                )
            })?;
        let fields = infer_fields(&collection.features);
        Ok(ProviderData {
            features: collection.features,
            metadata: Metadata {
                name: Some(id.to_owned()),
                fields,
                ..Metadata::default()
            },
            ttl: Some(Duration::from_secs(60)),
            ..ProviderData::default()
        })
    }
}

#[allow(
    dead_code,
    reason = "the integration tests include this file for the provider alone"
)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .ok_or("usage: geojson_file_provider DIR [ADDRESS]")?;
    let address = args.next().unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let router = koop_server::ServerBuilder::default()
        .provider(GeoJsonFileProvider::new(dir))
        .build()?;
    let listener = tokio::net::TcpListener::bind(&address).await?;
    println!("serving http://{address}/file-geojson/{{file}}/geojson");
    axum::serve(listener, router).await?;
    Ok(())
}
