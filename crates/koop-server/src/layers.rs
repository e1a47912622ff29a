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

/// An `Accept-Encoding` coding's quality in thousandths (`q=0.5` is 500), as RFC 9110 §12.4.2
/// writes it; `None` when malformed (the coding is then ignored, as tower-http ignores it).
fn quality(parameters: Option<&str>) -> Option<u16> {
    let Some(parameters) = parameters else {
        return Some(1000);
    };
    let (name, value) = parameters.trim().split_once('=')?;
    if !name.trim().eq_ignore_ascii_case("q") {
        return None;
    }
    let value: f64 = value.trim().parse().ok()?;
    // Within 0..=1000 once checked.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a finite value within 0..=1 times 1000"
    )]
    (0.0..=1.0)
        .contains(&value)
        .then(|| (value * 1000.0).round() as u16)
}

/// The `Accept-Encoding` values of `headers` without `br`, when they accept gzip at least as
/// much as brotli (both above `q=0`); `None` when nothing changes.
///
/// At the fastest levels the compression layer uses, brotli (quality 0) took about a millisecond
/// of CPU more than gzip (level 1, zlib-rs) for a 167 KB page of 1,000 Esri JSON features, a
/// quarter of the whole request, for a body a fifth smaller (43 KB against 53 KB); zstd (level 1)
/// beats both and stays first. tower-http breaks ties by its own order (zstd, br, gzip,
/// deflate), so brotli is taken out of the header it reads. RFC 9110 §12.5.3 leaves the choice
/// among codings of equal quality to the server.
fn without_brotli(headers: &axum::http::HeaderMap) -> Option<HeaderValue> {
    // Each coding as written, its name and its quality.
    let codings: Vec<(&str, &str, Option<u16>)> = headers
        .get_all(axum::http::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|coding| {
            let coding = coding.trim();
            match coding.split_once(';') {
                Some((name, parameters)) => (coding, name.trim(), quality(Some(parameters))),
                None => (coding, coding, quality(None)),
            }
        })
        .collect();
    let best = |wanted: &[&str]| {
        codings
            .iter()
            .filter(|(_, name, _)| wanted.iter().any(|w| name.eq_ignore_ascii_case(w)))
            .filter_map(|(_, _, quality)| *quality)
            .max()
            .unwrap_or(0)
    };
    let (gzip, brotli) = (best(&["gzip", "x-gzip"]), best(&["br"]));
    if brotli == 0 || gzip < brotli {
        return None;
    }
    let kept: Vec<&str> = codings
        .iter()
        .filter(|(_, name, _)| !name.eq_ignore_ascii_case("br"))
        .map(|(coding, _, _)| *coding)
        .collect();
    HeaderValue::from_str(&kept.join(", ")).ok()
}

/// The request with brotli taken out of its `Accept-Encoding` when gzip is as welcome
/// ([`without_brotli`]).
async fn prefer_gzip_to_brotli(
    mut request: Request<axum::body::Body>,
) -> Request<axum::body::Body> {
    if let Some(value) = without_brotli(request.headers()) {
        request
            .headers_mut()
            .insert(axum::http::header::ACCEPT_ENCODING, value);
    }
    request
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
        router = router
            .layer(CompressionLayer::new().quality(CompressionLevel::Fastest))
            .layer(axum::middleware::map_request(prefer_gzip_to_brotli));
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

    fn accept(values: &[&str]) -> Option<String> {
        let mut headers = axum::http::HeaderMap::new();
        for value in values {
            headers.append(
                axum::http::header::ACCEPT_ENCODING,
                HeaderValue::from_str(value).expect("a header value"),
            );
        }
        without_brotli(&headers).map(|value| value.to_str().expect("ASCII").to_owned())
    }

    #[test]
    fn gzip_is_chosen_over_brotli_only_when_it_is_as_welcome() {
        // oha, curl and older browsers: brotli goes, the rest stays as it was.
        assert_eq!(
            accept(&["gzip, compress, deflate, br"]).as_deref(),
            Some("gzip, compress, deflate")
        );
        assert_eq!(
            accept(&["br;q=0.9", "gzip;q=0.9, zstd"]).as_deref(),
            Some("gzip;q=0.9, zstd")
        );
        assert_eq!(accept(&["BR, X-Gzip"]).as_deref(), Some("X-Gzip"));
        // A client that prefers brotli, or takes no gzip, keeps it.
        assert_eq!(accept(&["br;q=1, gzip;q=0.5"]), None);
        assert_eq!(accept(&["br, deflate"]), None);
        assert_eq!(accept(&["br, gzip;q=0"]), None);
        assert_eq!(accept(&["br, gzip;q=oops"]), None);
        assert_eq!(accept(&["gzip, deflate"]), None);
        assert_eq!(accept(&[]), None);
        assert_eq!(quality(Some(" q=0.25")), Some(250));
        assert_eq!(quality(Some("q=2")), None);
        assert_eq!(quality(None), Some(1000));
    }

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
