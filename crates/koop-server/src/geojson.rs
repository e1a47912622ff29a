//! The GeoJSON output: `/{namespace}/{providerParams}/geojson`, streamed.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use koop_provider::{Method, ProviderRequest};

use crate::output::{Output, OutputContext, OutputRoute, error_response};

/// Features are sent in chunks of about this many bytes.
const CHUNK: usize = 32 * 1024;

/// GeoJSON streams answered at once by default ([`GeoJsonOutput::with_max_streams`]).
pub const DEFAULT_MAX_STREAMS: usize = 64;

/// Serves a provider's data as one GeoJSON FeatureCollection with its `metadata`, streamed from
/// `get_stream` (`application/geo+json`), so memory does not grow with the layer.
///
/// At most `max_streams` responses stream at once (default [`DEFAULT_MAX_STREAMS`]): a stream
/// whose client stops reading holds what the connection has queued (up to about 100 KiB) until
/// the server's write timeout drops it, so hundreds of clients that never read would otherwise
/// hold tens of MiB. A request past the bound waits for a stream to end until its deadline, then
/// answers `503 Service Unavailable` with `Retry-After: 5`.
#[derive(Debug, Clone)]
pub struct GeoJsonOutput {
    streams: Arc<tokio::sync::Semaphore>,
}

impl Default for GeoJsonOutput {
    fn default() -> Self {
        Self::with_max_streams(DEFAULT_MAX_STREAMS)
    }
}

impl GeoJsonOutput {
    /// The output with at most `streams` responses streaming at once (at least 1).
    pub fn with_max_streams(streams: usize) -> Self {
        Self {
            streams: Arc::new(tokio::sync::Semaphore::new(streams.max(1))),
        }
    }
}

impl Output for GeoJsonOutput {
    fn name(&self) -> &'static str {
        "geojson"
    }

    fn routes(&self) -> Vec<OutputRoute> {
        let streams = self.streams.clone();
        vec![OutputRoute {
            path: "geojson".to_owned(),
            methods: vec![Method::Get],
            absolute_path: false,
            handler: Arc::new(move |context, request| {
                Box::pin(geojson(context, request, streams.clone()))
            }),
        }]
    }
}

/// The answer when every stream is taken until the request's deadline.
fn busy() -> Response {
    let mut response = error_response(&koop_provider::ProviderError::unavailable(
        "this server is streaming as many GeoJSON responses as it allows; try again shortly",
        None,
    ));
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
}

async fn geojson(
    context: OutputContext,
    request: ProviderRequest,
    streams: Arc<tokio::sync::Semaphore>,
) -> Response {
    let acquire = streams.acquire_owned();
    let permit = match request.deadline {
        Some(deadline) => {
            match tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), acquire).await {
                Ok(Ok(permit)) => permit,
                _ => return busy(),
            }
        }
        None => match acquire.await {
            Ok(permit) => permit,
            Err(_) => return busy(),
        },
    };
    let stream = match context.get_stream(&request).await {
        Ok(stream) => stream,
        Err(error) => return error_response(&error),
    };
    let mut head = BytesMut::new();
    head.put_slice(b"{\"type\":\"FeatureCollection\",\"metadata\":");
    head.put_slice(&serde_json::to_vec(&stream.metadata).unwrap_or_else(|_| b"{}".to_vec()));
    if stream.filters_applied.any() {
        head.put_slice(b",\"filtersApplied\":");
        head.put_slice(
            &serde_json::to_vec(&stream.filters_applied).unwrap_or_else(|_| b"{}".to_vec()),
        );
    }
    head.put_slice(b",\"features\":[");
    // The permit travels with the features: the stream is counted until its body ends or the
    // client leaves.
    let mut stream = stream;
    let features = stream.take_features().map(move |feature| {
        let _held = &permit;
        feature
    });
    let body = futures::stream::unfold(
        (features, Some(head), false, false),
        |(mut features, head, mut first_written, done)| async move {
            if done {
                return None;
            }
            // Sized once: a buffer that doubles past the chunk holds twice the memory, and
            // hundreds of slow clients each hold one.
            let mut buffer = head.unwrap_or_else(|| BytesMut::with_capacity(CHUNK + CHUNK / 4));
            loop {
                match features.next().await {
                    Some(Ok(feature)) => {
                        if first_written {
                            buffer.put_u8(b',');
                        }
                        first_written = true;
                        if let Err(error) = serde_json::to_writer((&mut buffer).writer(), &feature)
                        {
                            return Some((
                                Err(std::io::Error::other(error)),
                                (features, None, first_written, true),
                            ));
                        }
                        if buffer.len() >= CHUNK {
                            return Some((
                                Ok(buffer.freeze()),
                                (features, None, first_written, false),
                            ));
                        }
                    }
                    Some(Err(error)) => {
                        tracing::warn!("the GeoJSON stream broke: {error}");
                        return Some((
                            Err(std::io::Error::other(error.to_string())),
                            (features, None, first_written, true),
                        ));
                    }
                    None => {
                        buffer.put_slice(b"]}");
                        return Some((
                            Ok::<Bytes, std::io::Error>(buffer.freeze()),
                            (features, None, first_written, true),
                        ));
                    }
                }
            }
        },
    );
    // Fused: a body layer (compression) may poll once more after the end.
    let mut response = Response::new(Body::from_stream(body.fuse()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/geo+json"),
    );
    response
}
