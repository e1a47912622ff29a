//! HTTP caching of answers: an `ETag` from the data's version and the normalised request, `304
//! Not Modified` when the caller holds it (RFC 9110 §8.8.3, §13.1.2, §15.4.5), and
//! `Cache-Control` with the configured max-age (RFC 9111 §5.2.2.1).

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use koop_provider::ProviderRequest;

/// The weak entity tag of an answer: a hash of the provider's version tag, the request path and
/// every query parameter but `token` (sorted by name: the same query in another order has the
/// same tag). Weak, because compression changes the bytes but not the meaning.
pub(crate) fn etag(version_tag: &str, request: &ProviderRequest) -> String {
    let mut hasher = blake3::Hasher::new();
    for part in [version_tag, "\n", &request.path, "\n"] {
        hasher.update(part.as_bytes());
    }
    for (name, value) in &request.query {
        if name.eq_ignore_ascii_case("token") {
            continue;
        }
        // Lengths first, so that no two different queries hash the same text.
        hasher.update(&(name.len() as u64).to_le_bytes());
        hasher.update(name.as_bytes());
        hasher.update(&(value.len() as u64).to_le_bytes());
        hasher.update(value.as_bytes());
    }
    let hash = hasher.finalize().to_hex();
    format!("W/\"{}\"", &hash[..20])
}

/// Whether `If-None-Match: header` matches `etag` by weak comparison (`*`, or any listed tag
/// with or without `W/`).
pub(crate) fn matches(header: &str, etag: &str) -> bool {
    let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    let ours = opaque(etag);
    header
        .split(',')
        .any(|tag| tag.trim() == "*" || opaque(tag) == ours)
}

/// How answers may be kept by HTTP caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Caching {
    /// `max-age` of `Cache-Control`; zero sends `no-cache` (keep, but revalidate each time).
    pub(crate) max_age: Duration,
}

impl Caching {
    fn cache_control(self, private: bool) -> HeaderValue {
        let scope = if private { "private" } else { "public" };
        let value = if self.max_age.is_zero() {
            format!("{scope}, no-cache")
        } else {
            format!("{scope}, max-age={}", self.max_age.as_secs())
        };
        HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("no-cache"))
    }

    /// `304 Not Modified` with the tag and `Cache-Control`, when the request holds `etag`.
    pub(crate) fn not_modified(self, request: &ProviderRequest, etag: &str) -> Option<Response> {
        let held = request.if_none_match.as_deref()?;
        if !matches(held, etag) {
            return None;
        }
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        self.decorate(&mut response, request, Some(etag));
        Some(response)
    }

    /// Adds `ETag` (when known) and `Cache-Control` to a successful answer. Answers to requests
    /// with a token are `private`: a shared cache must not hand them to others.
    pub(crate) fn decorate(
        self,
        response: &mut Response,
        request: &ProviderRequest,
        etag: Option<&str>,
    ) {
        let headers = response.headers_mut();
        if let Some(value) = etag.and_then(|etag| HeaderValue::from_str(etag).ok()) {
            headers.insert(header::ETAG, value);
        }
        headers.insert(
            header::CACHE_CONTROL,
            self.cache_control(request.token.is_some()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(pairs: &[(&str, &str)]) -> ProviderRequest {
        ProviderRequest {
            path: "/ns/rest/services/h/1/FeatureServer/0/query".to_owned(),
            query: pairs
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
            ..ProviderRequest::default()
        }
    }

    #[test]
    fn the_tag_follows_the_version_and_the_query_but_not_the_token() {
        let a = request(&[("where", "1=1"), ("f", "json")]);
        let b = request(&[("f", "json"), ("where", "1=1"), ("token", "secret")]);
        assert_eq!(etag("v1", &a), etag("v1", &b));
        assert_ne!(etag("v1", &a), etag("v2", &a));
        assert_ne!(etag("v1", &a), etag("v1", &request(&[("where", "1=2")])));
        // Concatenations that would read the same text hash differently.
        assert_ne!(
            etag("v1", &request(&[("ab", "c")])),
            etag("v1", &request(&[("a", "bc")]))
        );
        assert!(etag("v1", &a).starts_with("W/\""));
    }

    #[test]
    fn if_none_match_compares_weakly_and_reads_lists() {
        let tag = "W/\"abc\"";
        assert!(matches("W/\"abc\"", tag));
        assert!(matches("\"abc\"", tag));
        assert!(matches("\"x\", W/\"abc\"", tag));
        assert!(matches("*", tag));
        assert!(!matches("\"abd\"", tag));
        assert!(!matches("", tag));
    }
}
