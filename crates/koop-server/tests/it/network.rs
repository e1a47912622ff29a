//! The server on a network: slow and silent clients, too many connections, large bodies, slow
//! providers, browsers on other origins, compression, and what the log shows.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use async_trait::async_trait;
use koop_provider::{
    Metadata, Provider, ProviderData, ProviderError, ProviderRequest, ProviderStream,
};
use koop_server::{Cors, ServeOptions, ServerBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Serves `router` with `options` on a free loopback port; returns the address.
async fn start(router: axum::Router, options: ServeOptions) -> Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(koop_server::serve(
        listener,
        router,
        options,
        std::future::pending(),
    ));
    Ok(address)
}

/// Counts the streams it made and the streams dropped (a dropped stream is a response the
/// server let go of).
#[derive(Default)]
struct Endless {
    dropped: Arc<AtomicUsize>,
    deadlines: Arc<std::sync::Mutex<Vec<Option<Instant>>>>,
}

struct DropCounter(Arc<AtomicUsize>);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn feature(index: usize) -> geojson::Feature {
    let mut properties = serde_json::Map::new();
    properties.insert("index".to_owned(), serde_json::json!(index));
    properties.insert("text".to_owned(), serde_json::json!("x".repeat(200)));
    geojson::Feature {
        geometry: Some(geojson::Geometry::new(geojson::GeometryValue::new_point([
            174.0, -41.0,
        ]))),
        properties: Some(properties),
        ..geojson::Feature::default()
    }
}

#[async_trait]
impl Provider for Endless {
    fn name(&self) -> &str {
        "endless"
    }

    async fn get_data(&self, request: &ProviderRequest) -> Result<ProviderData, ProviderError> {
        self.deadlines
            .lock()
            .map_err(|_| ProviderError::internal("poisoned", None))?
            .push(request.deadline);
        match request.params.id.as_deref() {
            Some("slow") => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(ProviderData::default())
            }
            _ => Ok(ProviderData {
                features: (0..2000).map(feature).collect(),
                metadata: Metadata {
                    name: Some("many".to_owned()),
                    ..Metadata::default()
                },
                ..ProviderData::default()
            }),
        }
    }

    fn prefers_stream(&self) -> bool {
        true
    }

    async fn get_stream(&self, request: &ProviderRequest) -> Result<ProviderStream, ProviderError> {
        if request.params.id.as_deref() != Some("endless") {
            return self.get_data(request).await.map(ProviderStream::from_data);
        }
        let guard = DropCounter(self.dropped.clone());
        let features = futures::stream::iter(0..).map(move |index| {
            let _held = &guard;
            Ok(feature(index))
        });
        Ok(ProviderStream {
            features: Box::pin(features),
            ..ProviderStream::from_data(ProviderData::default())
        })
    }
}

use futures::StreamExt;

#[tokio::test]
async fn a_client_sending_its_headers_slowly_is_closed_after_the_header_timeout() -> Result<()> {
    let options = ServeOptions {
        header_read_timeout: Duration::from_millis(500),
        ..ServeOptions::default()
    };
    let address = start(ServerBuilder::default().build()?, options).await?;
    let mut slow = TcpStream::connect(address).await?;
    slow.write_all(b"GET /status HTTP/1.1\r\n").await?;
    let started = Instant::now();
    let mut buffer = [0u8; 1024];
    // One header line every 200 ms: each is progress, but the whole head is not in time.
    let closed = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if slow.write_all(b"X-Slow: 1\r\n").await.is_err() {
            break started.elapsed();
        }
        let read = tokio::time::timeout(Duration::from_millis(1), slow.read(&mut buffer)).await;
        if read.is_ok() {
            // An answer (408, say) or the end of the stream: the server let go.
            break started.elapsed();
        }
        ensure!(
            started.elapsed() < Duration::from_secs(5),
            "still open after 5 s"
        );
    };
    assert!(closed < Duration::from_secs(2), "closed after {closed:?}");

    // An idle keep-alive connection is closed by the same timer.
    let mut idle = TcpStream::connect(address).await?;
    idle.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    let read = idle.read(&mut buffer).await?;
    assert!(String::from_utf8_lossy(&buffer[..read]).starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest)).await??;
    assert!(started.elapsed() < Duration::from_secs(2));

    // The server still answers.
    let status = reqwest::get(format!("http://{address}/status")).await?;
    assert_eq!(status.status(), 200);
    Ok(())
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_and_its_stream_freed() -> Result<()> {
    let provider = Endless::default();
    let dropped = provider.dropped.clone();
    let options = ServeOptions {
        write_timeout: Duration::from_millis(500),
        ..ServeOptions::default()
    };
    let address = start(
        ServerBuilder::default()
            .provider(provider)
            .compression(false)
            .build()?,
        options,
    )
    .await?;
    let mut silent = TcpStream::connect(address).await?;
    silent
        .write_all(b"GET /endless/endless/geojson HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    // Never read: the socket buffers fill, the server's writes stall, the timeout drops it.
    let started = Instant::now();
    while dropped.load(Ordering::SeqCst) == 0 {
        ensure!(
            started.elapsed() < Duration::from_secs(10),
            "the stream of a client that stopped reading is still held"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = reqwest::get(format!("http://{address}/status")).await?;
    assert_eq!(status.status(), 200);
    drop(silent);
    Ok(())
}

#[tokio::test]
async fn connections_past_the_limit_are_closed_and_the_rest_served() -> Result<()> {
    let options = ServeOptions {
        max_connections: 4,
        ..ServeOptions::default()
    };
    let address = start(ServerBuilder::default().build()?, options).await?;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(address).await?;
        stream
            .write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
            .await?;
        let mut buffer = [0u8; 512];
        let read = stream.read(&mut buffer).await?;
        ensure!(String::from_utf8_lossy(&buffer[..read]).starts_with("HTTP/1.1 200"));
        held.push(stream);
    }
    let mut extra = TcpStream::connect(address).await?;
    let _ = extra
        .write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), extra.read_to_end(&mut rest))
        .await?
        .unwrap_or(0);
    assert_eq!(read, 0, "the fifth connection is closed unanswered");
    drop(held);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let status = reqwest::get(format!("http://{address}/status")).await?;
    assert_eq!(status.status(), 200, "freed connections make room");
    Ok(())
}

#[tokio::test]
async fn a_request_past_its_deadline_is_answered_and_the_provider_saw_the_deadline() -> Result<()> {
    let provider = Endless::default();
    let deadlines = provider.deadlines.clone();
    let router = ServerBuilder::default()
        .provider(provider)
        .request_timeout(Duration::from_millis(300))
        .build()?;
    let address = start(router, ServeOptions::default()).await?;
    let started = Instant::now();
    let response = reqwest::get(format!("http://{address}/endless/slow/geojson")).await?;
    let took = started.elapsed();
    assert_eq!(response.status(), 408);
    assert!(took < Duration::from_secs(3), "{took:?}");
    let seen = deadlines.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let deadline = seen
        .first()
        .copied()
        .flatten()
        .context("the provider was given a deadline")?;
    assert!(deadline <= started + Duration::from_millis(400));
    Ok(())
}

#[tokio::test]
async fn bodies_past_the_limit_are_refused() -> Result<()> {
    let router = ServerBuilder::default()
        .provider(super::WithRoutes)
        .body_limit(64 * 1024)
        .build()?;
    let address = start(router, ServeOptions::default()).await?;
    let client = reqwest::Client::new();
    let url = format!("http://{address}/routes/here/summary");
    let big = client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("q={}", "1".repeat(100 * 1024)))
        .send()
        .await?;
    assert_eq!(big.status(), 413);
    let small = client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("q=small")
        .send()
        .await?;
    assert_eq!(small.status(), 200);
    let json: serde_json::Value = small.json().await?;
    assert_eq!(json["q"], "small");
    Ok(())
}

#[tokio::test]
async fn browsers_on_other_origins_may_read_and_answers_are_compressed() -> Result<()> {
    let address = start(
        ServerBuilder::default()
            .provider(Endless::default())
            .build()?,
        ServeOptions::default(),
    )
    .await?;
    let client = reqwest::Client::new();
    let url = format!("http://{address}/endless/many/geojson");
    // The preflight of a POST from ArcGIS Online.
    let preflight = client
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://www.arcgis.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await?;
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let header = |response: &reqwest::Response, name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(
        header(&preflight, "access-control-allow-origin").as_deref(),
        Some("*")
    );
    assert!(header(&preflight, "access-control-allow-methods").is_some_and(|m| m.contains("POST")));

    let plain = client.get(&url).send().await?;
    let plain_length = plain.bytes().await?.len();
    // What the client accepts, and the coding chosen: gzip before brotli when both are as
    // welcome (brotli's fastest level costs about twice gzip's CPU), zstd before both.
    for (accepted, encoding) in [
        ("gzip", "gzip"),
        ("br", "br"),
        ("zstd", "zstd"),
        ("gzip, deflate, br", "gzip"),
        ("br;q=1.0, gzip;q=0.8", "br"),
        ("gzip, deflate, br, zstd", "zstd"),
    ] {
        let compressed = client
            .get(&url)
            .header("origin", "https://www.arcgis.com")
            .header("accept-encoding", accepted)
            .send()
            .await?;
        assert_eq!(
            header(&compressed, "content-encoding").as_deref(),
            Some(encoding)
        );
        assert_eq!(
            header(&compressed, "access-control-allow-origin").as_deref(),
            Some("*")
        );
        let length = compressed.bytes().await?.len();
        assert!(
            length * 10 < plain_length,
            "{encoding}: {length} of {plain_length} bytes"
        );
    }

    // Restricted to one origin: another gets no CORS header.
    let address = start(
        ServerBuilder::default()
            .provider(Endless::default())
            .cors(Cors::Origins(vec!["https://www.arcgis.com".to_owned()]))
            .build()?,
        ServeOptions::default(),
    )
    .await?;
    let url = format!("http://{address}/endless/many/geojson");
    let other = client
        .get(&url)
        .header("origin", "https://evil.example")
        .send()
        .await?;
    assert_eq!(header(&other, "access-control-allow-origin"), None);
    let allowed = client
        .get(&url)
        .header("origin", "https://www.arcgis.com")
        .send()
        .await?;
    assert_eq!(
        header(&allowed, "access-control-allow-origin").as_deref(),
        Some("https://www.arcgis.com")
    );
    Ok(())
}

#[tokio::test]
async fn the_request_log_never_shows_a_token_or_password() -> Result<()> {
    let (logs, _guard) = koop_testkit::logs::Logs::capture();
    let address = start(
        ServerBuilder::default()
            .provider(Endless::default())
            .build()?,
        ServeOptions::default(),
    )
    .await?;
    let response = reqwest::get(format!(
        "http://{address}/endless/many/geojson?token=sekrit-token-1&password=sekrit-pass-2&where=1%3D1"
    ))
    .await?;
    assert_eq!(response.status(), 200);
    let text = logs.text();
    assert!(text.contains("/endless/many/geojson"), "{text}");
    assert!(text.contains("token=***"), "{text}");
    assert!(!text.contains("sekrit"), "{text}");
    Ok(())
}
