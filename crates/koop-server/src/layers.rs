//! What every route gets: a request log that never shows a token, CORS, compression, a body
//! limit and a deadline.

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, Request, StatusCode};
use tower_http::compression::{CompressionLayer, CompressionLevel};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::server::Cors;

/// The settings of [`wrap`].
pub(crate) struct Layers {
    pub(crate) request_timeout: Duration,
    pub(crate) body_limit: usize,
    pub(crate) cors: Cors,
    pub(crate) compression: bool,
}

/// Query parameters whose values are secrets: never logged.
const SECRET_PARAMETERS: [&str; 3] = ["token", "password", "api_key"];

/// `path?query` with the values of `token`, `password` and `api_key` replaced by `***`, for
/// logs.
pub fn redacted_uri(uri: &axum::http::Uri) -> String {
    let Some(query) = uri.query() else {
        return uri.path().to_owned();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| {
            let name = pair.split('=').next().unwrap_or_default();
            let decoded = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
            if SECRET_PARAMETERS
                .iter()
                .any(|secret| decoded.eq_ignore_ascii_case(secret))
            {
                format!("{name}=***")
            } else {
                pair.to_owned()
            }
        })
        .collect();
    format!("{}?{}", uri.path(), query.join("&"))
}

fn cors_layer(cors: &Cors) -> Option<CorsLayer> {
    let origins = match cors {
        Cors::Off => return None,
        Cors::AnyOrigin => AllowOrigin::any(),
        Cors::Origins(origins) => AllowOrigin::list(
            origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok()),
        ),
    };
    Some(
        CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers(tower_http::cors::Any)
            .max_age(Duration::from_secs(3600)),
    )
}

/// `router` with the layers every request goes through.
pub(crate) fn wrap(router: Router, layers: &Layers) -> Router {
    // A handler still running a second past the deadline its request carried is stopped.
    let timeout = TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        layers.request_timeout + Duration::from_secs(1),
    );
    let mut router = router
        .layer(timeout)
        .layer(DefaultBodyLimit::max(layers.body_limit));
    if layers.compression {
        // Answers are compressed as they are written, once per request: the fastest level of
        // each codec (gzip 1, brotli 0, zstd 1) still shrinks Esri JSON about fivefold, while
        // brotli's default (4) cost more than writing the page itself.
        router = router.layer(CompressionLayer::new().quality(CompressionLevel::Fastest));
    }
    if let Some(cors) = cors_layer(&layers.cors) {
        router = router.layer(cors);
    }
    router.layer(
        TraceLayer::new_for_http()
            .make_span_with(|request: &Request<_>| {
                tracing::info_span!(
                    "request",
                    method = %request.method(),
                    uri = %redacted_uri(request.uri()),
                )
            })
            .on_response(DefaultOnResponse::new().level(Level::INFO)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_reach_the_log() {
        let uri: axum::http::Uri = "/ns/rest/services/x/FeatureServer/0/query?where=1%3D1&token=abc.def&Password=hunter2&f=json"
            .parse()
            .expect("a URI");
        assert_eq!(
            redacted_uri(&uri),
            "/ns/rest/services/x/FeatureServer/0/query?where=1%3D1&token=***&Password=***&f=json"
        );
        let plain: axum::http::Uri = "/status".parse().expect("a URI");
        assert_eq!(redacted_uri(&plain), "/status");
    }
}
