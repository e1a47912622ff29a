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

/// Serves a provider's data as one GeoJSON FeatureCollection with its `metadata`, streamed from
/// `get_stream` (`application/geo+json`), so memory does not grow with the layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct GeoJsonOutput;

impl Output for GeoJsonOutput {
    fn name(&self) -> &'static str {
        "geojson"
    }

    fn routes(&self) -> Vec<OutputRoute> {
        vec![OutputRoute {
            path: "geojson".to_owned(),
            methods: vec![Method::Get],
            absolute_path: false,
            handler: Arc::new(|context, request| Box::pin(geojson(context, request))),
        }]
    }
}

async fn geojson(context: OutputContext, request: ProviderRequest) -> Response {
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
    let features = stream.features;
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
