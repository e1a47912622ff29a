//! HTTP helpers that several test suites need: serving a router on loopback, reading JSON, the
//! `(name, type)` pairs of a field list, and driving the testkit's Exports API over raw HTTP.

use std::time::Duration;

use serde_json::{Value, json};

use crate::{TestServer, TestkitError};

/// Serves `router` on a free loopback port in the current Tokio runtime; returns its base URL,
/// `http://127.0.0.1:PORT`.
///
/// # Errors
///
/// [`TestkitError::Io`] when no port can be bound.
pub async fn serve(router: axum::Router) -> Result<String, TestkitError> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(format!("http://{address}"))
}

/// GETs `url` with `query` pairs: the status and the body as JSON.
///
/// # Errors
///
/// [`TestkitError::Http`] when the request fails or the body is not JSON.
pub async fn get_json(url: &str, query: &[(&str, &str)]) -> Result<(u16, Value), TestkitError> {
    let response = reqwest::Client::new().get(url).query(query).send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await?))
}

/// GETs `url` with `query` pairs: the body's bytes and its `Content-Type` (empty when none).
///
/// # Errors
///
/// [`TestkitError::Http`] when the request fails.
pub async fn get_bytes(
    url: &str,
    query: &[(&str, &str)],
) -> Result<(Vec<u8>, String), TestkitError> {
    let response = reqwest::Client::new().get(url).query(query).send().await?;
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Ok((response.bytes().await?.to_vec(), content_type))
}

/// `(name, type)` of each entry of a JSON list of field definitions (`fields` of Koop metadata or
/// of a Geoservices layer), in order; entries without both are left out.
pub fn field_pairs(fields: &Value) -> Vec<(&str, &str)> {
    fields
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|field| Some((field["name"].as_str()?, field["type"].as_str()?)))
        .collect()
}

/// A client of one [`TestServer`] sending its key, for tests of what the server itself answers.
#[derive(Debug, Clone)]
pub struct RawClient {
    http: reqwest::Client,
    api: String,
    key: String,
}

impl RawClient {
    pub(crate) fn new(server: &TestServer) -> Self {
        Self {
            http: reqwest::Client::new(),
            api: server.api_url(),
            key: format!("key {}", server.api_key()),
        }
    }

    /// A GET of `url` with the key, to add headers to before sending.
    pub fn request(&self, url: &str) -> reqwest::RequestBuilder {
        self.http.get(url).header("Authorization", &self.key)
    }

    /// GET `url` with the key.
    ///
    /// # Errors
    ///
    /// [`TestkitError::Http`] when the request cannot be sent.
    pub async fn get(&self, url: &str) -> Result<reqwest::Response, TestkitError> {
        Ok(self.request(url).send().await?)
    }

    /// Creates an export of layer (or table, for `kind` `table`) `layer_id` in EPSG:2193 with
    /// format `mime` for `kind`, and polls it every 20 ms until it is no longer `processing`, for
    /// at most `wait`. Returns the export as the server last described it.
    ///
    /// # Errors
    ///
    /// [`TestkitError::Http`] for a failed request or a non-2xx creation;
    /// [`TestkitError::Unexpected`] when the export has no URL or is still processing after
    /// `wait`.
    pub async fn export_within(
        &self,
        layer_id: u64,
        kind: &str,
        mime: &str,
        wait: Duration,
    ) -> Result<Value, TestkitError> {
        let collection = if kind == "table" { "tables" } else { "layers" };
        let body = json!({
            "crs": "EPSG:2193",
            "formats": {kind: mime},
            "items": [{"item": format!("{}{collection}/{layer_id}/", self.api)}],
        });
        let created: Value = self
            .http
            .post(format!("{}exports/", self.api))
            .header("Authorization", &self.key)
            .json(&body)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let url = created["url"]
            .as_str()
            .ok_or_else(|| TestkitError::Unexpected(format!("an export without url: {created}")))?
            .to_owned();
        let deadline = std::time::Instant::now() + wait;
        while std::time::Instant::now() < deadline {
            let export: Value = self.get(&url).await?.json().await?;
            if export["state"] != "processing" {
                return Ok(export);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(TestkitError::Unexpected(format!(
            "the export of layer {layer_id} was still processing after {wait:?}"
        )))
    }

    /// [`RawClient::export_within`] with 10 s to finish.
    ///
    /// # Errors
    ///
    /// As [`RawClient::export_within`].
    pub async fn finished_export(
        &self,
        layer_id: u64,
        kind: &str,
        mime: &str,
    ) -> Result<Value, TestkitError> {
        self.export_within(layer_id, kind, mime, Duration::from_secs(10))
            .await
    }

    /// GETs the `download_url` of a finished export.
    ///
    /// # Errors
    ///
    /// [`TestkitError::Unexpected`] when the export has no `download_url`;
    /// [`TestkitError::Http`].
    pub async fn download(&self, export: &Value) -> Result<reqwest::Response, TestkitError> {
        let url = export["download_url"].as_str().ok_or_else(|| {
            TestkitError::Unexpected(format!("an export without download_url: {export}"))
        })?;
        self.get(url).await
    }
}
