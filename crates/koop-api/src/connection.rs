//! `KoordinatesConnection`: one authenticated, pooled HTTP client for one Koordinates site.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use backon::Retryable;
use bytes::Bytes;
use koop_types::Domain;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;

use crate::error::{Error, Resource, Result};
use crate::retry::{RetryPolicy, parse_retry_after};

/// The Koordinates site used when none is given.
pub const DEFAULT_DOMAIN: &str = "ttgroup.koordinates.com";
/// The API version used when none is given (`/services/api/v1.x/`).
pub const DEFAULT_API_VERSION: &str = "1.x";
/// The environment variable the API key is read from when none is passed.
pub const API_KEY_ENV: &str = "KOORDINATES_API_KEY";

/// Redirect hops followed before giving up.
const MAX_REDIRECTS: usize = 10;
/// Largest JSON or XML body read into memory, in bytes (the biggest real layer body is ~300 KB).
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Pages followed on a list endpoint before giving up (a guard against a looping `Link` header).
const MAX_PAGES: usize = 10_000;

/// An API key. Never printed: `Debug` shows `ApiKey(***)` and there is no `Display`.
#[derive(Clone)]
struct ApiKey(String);

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// An authenticated connection to one Koordinates site.
///
/// Holds one pooled HTTP client (connect timeout 15 s, read timeout 60 s by default), the API key
/// (sent only to this site, as `Authorization: key <key>`) and the retry policy. Cloning is cheap
/// and shares the pool, so one connection serves many concurrent tasks.
///
/// The base URL is `https://{domain}/services/api/v{api_version}/`. Plain HTTP is used only when
/// asked for with [`ConnectionBuilder::plain_http`] (tests, loopback).
///
/// `Debug` never shows the key.
#[derive(Clone)]
pub struct KoordinatesConnection {
    inner: Arc<Inner>,
}

struct Inner {
    domain: Domain,
    api_version: String,
    base_url: Url,
    api_key: ApiKey,
    authorization: HeaderValue,
    client: reqwest::Client,
    retry: RetryPolicy,
    plain_http: bool,
    /// Requests sent to the site's own origin, retries included.
    requests: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for KoordinatesConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KoordinatesConnection")
            .field("domain", &self.inner.domain)
            .field("api_version", &self.inner.api_version)
            .field("base_url", &self.inner.base_url.as_str())
            .field("api_key", &self.inner.api_key)
            .field("retry", &self.inner.retry)
            .finish_non_exhaustive()
    }
}

/// Builds a [`KoordinatesConnection`]; see [`KoordinatesConnection::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ConnectionBuilder {
    api_key: Option<ApiKey>,
    api_key_env: String,
    domain: String,
    api_version: String,
    plain_http: bool,
    retry: RetryPolicy,
    connect_timeout: Duration,
    read_timeout: Duration,
}

impl Default for ConnectionBuilder {
    fn default() -> Self {
        Self {
            api_key: None,
            api_key_env: API_KEY_ENV.to_owned(),
            domain: DEFAULT_DOMAIN.to_owned(),
            api_version: DEFAULT_API_VERSION.to_owned(),
            plain_http: false,
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(60),
        }
    }
}

impl ConnectionBuilder {
    /// The API key. When `None` or empty, the key is read from the environment variable set with
    /// [`ConnectionBuilder::api_key_env`] (default `KOORDINATES_API_KEY`).
    pub fn api_key(mut self, api_key: Option<String>) -> Self {
        self.api_key = api_key
            .map(|key| key.trim().to_owned())
            .filter(|key| !key.is_empty())
            .map(ApiKey);
        self
    }

    /// The environment variable the key falls back to (default `KOORDINATES_API_KEY`).
    pub fn api_key_env(mut self, variable: impl Into<String>) -> Self {
        self.api_key_env = variable.into();
        self
    }

    /// The Koordinates site: a host name with an optional port, such as `data.linz.govt.nz`
    /// (default `ttgroup.koordinates.com`), read as [`Domain::parse`] reads it when the connection
    /// is built; `https://data.linz.govt.nz/` is accepted too. A [`Domain`] named with `http://`
    /// needs [`ConnectionBuilder::plain_http`] as well.
    pub fn domain(mut self, domain: impl AsRef<str>) -> Self {
        domain.as_ref().clone_into(&mut self.domain);
        self
    }

    /// The Koordinates site, already read; plain HTTP when it was named with `http://`.
    pub fn site(mut self, domain: &Domain) -> Self {
        self.domain = domain.origin();
        self.plain_http = domain.is_plain_http();
        self
    }

    /// The API version (default `1.x`), giving the base path `/services/api/v{version}/`.
    pub fn api_version(mut self, api_version: impl Into<String>) -> Self {
        self.api_version = api_version.into();
        self
    }

    /// Use plain `http://` instead of HTTPS. Only for tests and loopback servers: the API key
    /// then crosses the network unencrypted.
    pub fn plain_http(mut self, plain_http: bool) -> Self {
        self.plain_http = plain_http;
        self
    }

    /// How transient failures are retried (default [`RetryPolicy::default`]).
    pub fn retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Time allowed to open a connection (default 15 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Time allowed between two reads of a response (default 60 s). There is no limit on a
    /// whole download.
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// Builds the connection.
    ///
    /// # Errors
    ///
    /// [`Error::MissingApiKey`] when no key was passed and the environment variable is unset,
    /// [`Error::InvalidApiKey`], [`Error::InvalidDomain`], or [`Error::Client`] when the HTTP
    /// client cannot be set up.
    pub fn build(self) -> Result<KoordinatesConnection> {
        let api_key = match self.api_key {
            Some(key) => key,
            None => std::env::var(&self.api_key_env)
                .ok()
                .map(|key| key.trim().to_owned())
                .filter(|key| !key.is_empty())
                .map(ApiKey)
                .ok_or_else(|| Error::MissingApiKey {
                    variable: self.api_key_env.clone(),
                })?,
        };
        let mut authorization = HeaderValue::from_str(&format!("key {}", api_key.0))
            .map_err(|_| Error::InvalidApiKey)?;
        authorization.set_sensitive(true);

        let domain = normalise_domain(&self.domain, self.plain_http)?;
        let api_version = self.api_version.trim().trim_start_matches('v').to_owned();
        if api_version.is_empty()
            || !api_version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.')
        {
            return Err(Error::InvalidDomain {
                domain: domain.to_string(),
                reason: format!("API version {:?} is not like \"1.x\"", self.api_version),
            });
        }
        let scheme = if self.plain_http { "http" } else { "https" };
        let base_url = Url::parse(&format!("{scheme}://{domain}/services/api/v{api_version}/"))
            .map_err(|error| Error::InvalidDomain {
                domain: domain.to_string(),
                reason: error.to_string(),
            })?;

        let client = reqwest::Client::builder()
            .user_agent(concat!(
                "koop/",
                env!("CARGO_PKG_VERSION"),
                " (+https://github.com/koop-rs/koop)"
            ))
            .connect_timeout(self.connect_timeout)
            .read_timeout(self.read_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|source| Error::Client { source })?;

        Ok(KoordinatesConnection {
            inner: Arc::new(Inner {
                domain,
                api_version,
                base_url,
                api_key,
                authorization,
                client,
                retry: self.retry,
                plain_http: self.plain_http,
                requests: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }
}

/// Reads `input` as a [`Domain`]; `http://` only when plain HTTP was asked for.
fn normalise_domain(input: &str, plain_http: bool) -> Result<Domain> {
    let domain = Domain::parse(input).map_err(|error| Error::InvalidDomain {
        domain: input.to_owned(),
        reason: error.reason,
    })?;
    if domain.is_plain_http() && !plain_http {
        return Err(Error::InvalidDomain {
            domain: input.to_owned(),
            reason: "plain http is refused; use https, or enable plain HTTP explicitly for a loopback test server".to_owned(),
        });
    }
    Ok(domain.with_plain_http(plain_http))
}

/// One request as the retry loop replays it.
pub(crate) struct Call<'a> {
    pub(crate) method: Method,
    pub(crate) url: Url,
    pub(crate) resource: Resource,
    pub(crate) json_body: Option<&'a [u8]>,
    /// Safe to repeat whatever happened (GET, DELETE of an export, validation).
    pub(crate) idempotent: bool,
    /// Follow redirects to other hosts (without the API key). Only the export download does.
    pub(crate) follow_foreign_redirects: bool,
    /// `Range: bytes={offset}-`
    pub(crate) range_from: Option<u64>,
}

impl Call<'_> {
    pub(crate) fn get(url: Url, resource: Resource) -> Self {
        Self {
            method: Method::GET,
            url,
            resource,
            json_body: None,
            idempotent: true,
            follow_foreign_redirects: false,
            range_from: None,
        }
    }
}

impl KoordinatesConnection {
    /// A connection as the seed's `KoordinatesConnection(api_key, domain, api_version)`: the key
    /// falls back to `KOORDINATES_API_KEY`; `domain` defaults to `ttgroup.koordinates.com` and
    /// `api_version` to `1.x` when `None`.
    ///
    /// # Errors
    ///
    /// As [`ConnectionBuilder::build`].
    pub fn new(
        api_key: Option<String>,
        domain: Option<&str>,
        api_version: Option<&str>,
    ) -> Result<Self> {
        Self::builder()
            .api_key(api_key)
            .domain(domain.unwrap_or(DEFAULT_DOMAIN))
            .api_version(api_version.unwrap_or(DEFAULT_API_VERSION))
            .build()
    }

    /// A builder with the defaults: domain `ttgroup.koordinates.com`, version `1.x`, key from
    /// `KOORDINATES_API_KEY`, HTTPS, [`RetryPolicy::default`].
    pub fn builder() -> ConnectionBuilder {
        ConnectionBuilder::default()
    }

    /// The site, e.g. `data.linz.govt.nz`.
    pub fn domain(&self) -> &Domain {
        &self.inner.domain
    }

    /// The API version, e.g. `1.x`.
    pub fn api_version(&self) -> &str {
        &self.inner.api_version
    }

    /// Requests this connection (and its clones) sent to the site's own origin so far, retries
    /// and followed redirects included; downloads answered by another host (object storage)
    /// are not counted. What a run cost the site, for its report.
    pub fn requests_made(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// The API base URL, e.g. `https://data.linz.govt.nz/services/api/v1.x/`.
    pub fn base_url(&self) -> &Url {
        &self.inner.base_url
    }

    /// The retry policy in use.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.inner.retry
    }

    /// Replaces every occurrence of the API key in `text` by `[redacted]`. Used on every piece of
    /// a response that ends up in an error or a log line.
    pub fn redact(&self, text: &str) -> String {
        let key = &self.inner.api_key.0;
        if key.is_empty() {
            text.to_owned()
        } else {
            text.replace(key.as_str(), "[redacted]")
        }
    }

    /// `base_url` joined with `path` (relative, ending in `/`).
    pub(crate) fn endpoint(&self, path: &str) -> Url {
        // Paths are built by this crate from integers and fixed segments: joining cannot fail.
        self.inner
            .base_url
            .join(path)
            .unwrap_or_else(|_| self.inner.base_url.clone())
    }

    /// Parses a link from a response body and checks that it is on this site, so that following
    /// it never sends the API key elsewhere.
    pub(crate) fn own_link(&self, link: &str, resource: &Resource) -> Result<Url> {
        let foreign = || Error::ForeignLink {
            domain: self.inner.domain.clone(),
            resource: resource.clone(),
            url: link.to_owned(),
        };
        let url = self.inner.base_url.join(link).map_err(|_| foreign())?;
        if self.is_own_origin(&url) {
            Ok(url)
        } else {
            Err(foreign())
        }
    }

    fn is_own_origin(&self, url: &Url) -> bool {
        url.origin() == self.inner.base_url.origin()
    }

    /// Sends `call`, retrying transient failures as the policy allows, and returns the successful
    /// (2xx) response with its body unread.
    pub(crate) async fn execute(&self, call: &Call<'_>) -> Result<Response> {
        let policy = self.inner.retry;
        let attempts = AtomicU32::new(0);
        let result = (|| async {
            attempts.fetch_add(1, Ordering::Relaxed);
            self.attempt(call).await
        })
        .retry(policy.backoff())
        .sleep(tokio::time::sleep)
        .when(|error: &Error| {
            if call.idempotent {
                error.is_transient()
            } else {
                error.server_did_not_act()
            }
        })
        .adjust(|error: &Error, backoff| policy.delay(error.retry_after(), backoff))
        .notify(|error: &Error, delay| {
            tracing::warn!(
                domain = %self.inner.domain,
                resource = %call.resource,
                delay_ms = delay.as_millis(),
                "retrying after: {error}"
            );
        })
        .await;
        result.map_err(|mut error| {
            if let Error::RateLimited {
                attempts: counted, ..
            } = &mut error
            {
                *counted = attempts.load(Ordering::Relaxed);
            }
            error
        })
    }

    /// One attempt: the request and the redirects it leads to.
    async fn attempt(&self, call: &Call<'_>) -> Result<Response> {
        let mut url = call.url.clone();
        let mut method = call.method.clone();
        let mut body = call.json_body;
        for _ in 0..=MAX_REDIRECTS {
            let own_origin = self.is_own_origin(&url);
            let mut request = self.inner.client.request(method.clone(), url.clone());
            if own_origin {
                self.inner.requests.fetch_add(1, Ordering::Relaxed);
                request = request.header(header::AUTHORIZATION, self.inner.authorization.clone());
            }
            request = request.header(header::ACCEPT, "application/json");
            if let Some(offset) = call.range_from.filter(|offset| *offset > 0) {
                request = request.header(header::RANGE, format!("bytes={offset}-"));
            }
            if let Some(json) = body {
                request = request
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(json.to_vec());
            }
            tracing::debug!(%method, url = %url, "request");
            let response = request.send().await.map_err(|source| {
                if is_dns_failure(&source) {
                    Error::UnknownHost {
                        domain: url
                            .host_str()
                            .map_or_else(|| self.inner.domain.to_string(), str::to_owned),
                        source,
                    }
                } else {
                    Error::Transport {
                        domain: self.inner.domain.clone(),
                        resource: call.resource.clone(),
                        source,
                    }
                }
            })?;
            let status = response.status();
            tracing::debug!(%method, url = %url, status = status.as_u16(), "response");
            if !status.is_redirection() || status == StatusCode::NOT_MODIFIED {
                return self.check_status(response, call).await;
            }
            let next = self.redirect_target(&url, &response, call)?;
            if status == StatusCode::SEE_OTHER
                || (matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND)
                    && method == Method::POST)
            {
                method = Method::GET;
                body = None;
            }
            url = next;
        }
        Err(Error::Redirect {
            resource: call.resource.clone(),
            from: url.origin().ascii_serialization(),
            to: url.to_string(),
            reason: "too many redirects",
        })
    }

    fn redirect_target(&self, from: &Url, response: &Response, call: &Call<'_>) -> Result<Url> {
        let refuse = |to: String, reason: &'static str| Error::Redirect {
            resource: call.resource.clone(),
            from: from.origin().ascii_serialization(),
            to,
            reason,
        };
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|value| value.to_str().ok())
            .ok_or_else(|| refuse(String::new(), "the redirect has no Location header"))?;
        let next = from
            .join(location)
            .map_err(|_| refuse(location.to_owned(), "the Location header is not a URL"))?;
        match next.scheme() {
            "https" => {}
            "http" if self.inner.plain_http || from.scheme() == "http" => {}
            _ => {
                return Err(refuse(
                    next.origin().ascii_serialization(),
                    "it would leave HTTPS",
                ));
            }
        }
        if !self.is_own_origin(&next) && !call.follow_foreign_redirects {
            return Err(refuse(
                next.origin().ascii_serialization(),
                "API requests never leave the Koordinates domain",
            ));
        }
        Ok(next)
    }

    /// Maps a non-2xx response to an error (reading its body for the server's message).
    async fn check_status(&self, response: Response, call: &Call<'_>) -> Result<Response> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(parse_retry_after);
        let body = read_limited(response, 64 * 1024).await.unwrap_or_default();
        let message = self.redact(&error_message(&body, status));
        let domain = self.inner.domain.clone();
        let resource = call.resource.clone();
        Err(match status.as_u16() {
            401 => Error::Unauthorized { domain, message },
            403 => Error::Forbidden {
                domain,
                resource,
                message,
            },
            404 | 410 => Error::NotFound { domain, resource },
            429 => Error::RateLimited {
                domain,
                retry_after,
                attempts: 1,
            },
            400 if matches!(call.resource, Resource::Exports) => {
                match serde_json::from_slice::<crate::ExportValidation>(&body) {
                    Ok(validation) if !validation.is_valid => Error::InvalidExport {
                        domain,
                        reasons: validation
                            .reasons()
                            .iter()
                            .map(|reason| self.redact(reason))
                            .collect(),
                    },
                    _ => Error::Rejected {
                        domain,
                        resource,
                        status: 400,
                        message,
                    },
                }
            }
            code @ 500..=599 => Error::Server {
                domain,
                resource,
                status: code,
                message,
                retry_after,
            },
            code => Error::Rejected {
                domain,
                resource,
                status: code,
                message,
            },
        })
    }

    /// Reads a successful response's body (bounded to 64 MiB).
    pub(crate) async fn read_body(&self, response: Response, resource: &Resource) -> Result<Bytes> {
        read_limited(response, MAX_BODY_BYTES)
            .await
            .map_err(|source| Error::Transport {
                domain: self.inner.domain.clone(),
                resource: resource.clone(),
                source,
            })
    }

    /// Decodes a JSON body from `url`, turning a failure into [`Error::Decode`] with the endpoint
    /// and a redacted excerpt.
    pub(crate) fn decode<T: DeserializeOwned>(
        &self,
        body: &[u8],
        what: &str,
        url: &Url,
    ) -> Result<T> {
        serde_json::from_slice(body).map_err(|source| Error::Decode {
            domain: self.inner.domain.clone(),
            what: format!("{what} at {}", url.path()),
            excerpt: self.redact(&excerpt(body)),
            source,
        })
    }

    /// GET a JSON document.
    pub(crate) async fn get_json<T: DeserializeOwned>(
        &self,
        url: Url,
        resource: Resource,
        what: &str,
    ) -> Result<T> {
        let call = Call::get(url, resource);
        let response = self.execute(&call).await?;
        let body = self.read_body(response, &call.resource).await?;
        self.decode(&body, what, &call.url)
    }

    /// Sends a JSON body and returns the response (status, headers and body).
    pub(crate) async fn send_json(
        &self,
        method: Method,
        url: Url,
        body: &impl Serialize,
        resource: Resource,
        idempotent: bool,
    ) -> Result<(StatusCode, HeaderMap, Bytes)> {
        // Serialising our own request types cannot fail: they hold only strings, maps and JSON.
        let json = serde_json::to_vec(body).unwrap_or_default();
        let call = Call {
            method,
            url,
            resource,
            json_body: Some(&json),
            idempotent,
            follow_foreign_redirects: false,
            range_from: None,
        };
        let response = self.execute(&call).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = self.read_body(response, &call.resource).await?;
        Ok((status, headers, body))
    }

    /// GETs the pages of a list endpoint, following `Link: <…>; rel="page-next"`, at most
    /// `max_pages` of them (and never more than 10,000).
    pub(crate) async fn get_all_pages<T: DeserializeOwned>(
        &self,
        first: Url,
        resource: Resource,
        what: &str,
        max_pages: usize,
    ) -> Result<Vec<T>> {
        Ok(self
            .get_pages_dated(first, resource, what, max_pages)
            .await?
            .0)
    }

    /// As [`KoordinatesConnection::get_all_pages`], with the server's clock (the `Date` header
    /// of the first page, when it sent a readable one) and the number of pages read.
    pub(crate) async fn get_pages_dated<T: DeserializeOwned>(
        &self,
        first: Url,
        resource: Resource,
        what: &str,
        max_pages: usize,
    ) -> Result<(Vec<T>, Option<std::time::SystemTime>, usize)> {
        let mut items = Vec::new();
        let mut next = Some(first);
        let mut pages = 0;
        let mut date = None;
        while let Some(url) = next.take() {
            pages += 1;
            let call = Call::get(url, resource.clone());
            let response = self.execute(&call).await?;
            if pages == 1 {
                date = response
                    .headers()
                    .get(header::DATE)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| httpdate::parse_http_date(value).ok());
            }
            let link = response
                .headers()
                .get(header::LINK)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| next_page_link(value).map(str::to_owned));
            let body = self.read_body(response, &resource).await?;
            // A list is read item by item: an item koop cannot read is left out (and logged),
            // never the whole list.
            let page: Vec<serde_json::Value> = self.decode(&body, what, &call.url)?;
            for item in page {
                match T::deserialize(&item) {
                    Ok(item) => items.push(item),
                    Err(error) => tracing::debug!(
                        domain = %self.inner.domain,
                        endpoint = call.url.path(),
                        "left out an item of {what} that could not be read: {error}"
                    ),
                }
            }
            if let Some(link) = link {
                if pages >= MAX_PAGES.min(max_pages) {
                    break;
                }
                next = Some(self.own_link(&link, &resource)?);
            }
        }
        Ok((items, date, pages))
    }
}

/// `true` when a request failed because its host name did not resolve. reqwest does not classify
/// this; its connector reports it as a connect error whose message starts with "dns error".
fn is_dns_failure(error: &reqwest::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(inner) = source {
        if inner.to_string().starts_with("dns error") {
            return true;
        }
        source = inner.source();
    }
    false
}

/// Reads at most `limit` bytes of a body.
async fn read_limited(mut response: Response, limit: usize) -> reqwest::Result<Bytes> {
    let mut buffer = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit.saturating_sub(buffer.len());
        buffer.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if buffer.len() >= limit {
            break;
        }
    }
    Ok(Bytes::from(buffer))
}

/// The first 200 characters of a body, whitespace collapsed, for error messages.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let collapsed: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut short: String = collapsed.chars().take(200).collect();
    if collapsed.chars().count() > 200 {
        short.push('…');
    }
    short
}

/// The server's explanation in an error body: `{"error": …}`, `{"errors": [...]}`,
/// `{"detail": …}` or a field → messages map; else an excerpt of the body; else the status text.
pub(crate) fn error_message(body: &[u8], status: StatusCode) -> String {
    fn text_of(value: &serde_json::Value) -> Option<String> {
        match value {
            serde_json::Value::String(text) => Some(text.clone()),
            serde_json::Value::Array(items) => {
                let parts: Vec<String> = items.iter().filter_map(text_of).collect();
                (!parts.is_empty()).then(|| parts.join("; "))
            }
            serde_json::Value::Object(map) => map
                .get("message")
                .or_else(|| map.get("detail"))
                .and_then(text_of)
                .or_else(|| Some(value.to_string())),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        }
    }
    let fallback = || {
        let text = excerpt(body);
        if text.is_empty() {
            status
                .canonical_reason()
                .unwrap_or("no explanation")
                .to_owned()
        } else {
            text
        }
    };
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(body)
    else {
        return fallback();
    };
    for key in ["error", "errors", "detail", "message"] {
        if let Some(text) = map.get(key).and_then(text_of) {
            return text;
        }
    }
    let fields: Vec<String> = map
        .iter()
        .filter_map(|(field, value)| text_of(value).map(|text| format!("{field}: {text}")))
        .collect();
    if fields.is_empty() {
        fallback()
    } else {
        fields.join("; ")
    }
}

/// The `rel="page-next"` target of a `Link` header (RFC 8288), if any.
pub(crate) fn next_page_link(header: &str) -> Option<&str> {
    header.split(',').find_map(|link| {
        let mut parts = link.split(';');
        let target = parts.next()?.trim();
        let target = target.strip_prefix('<')?.strip_suffix('>')?;
        parts
            .any(|param| {
                let param = param.trim();
                param
                    .strip_prefix("rel=")
                    .map(|rel| rel.trim_matches('"'))
                    .is_some_and(|rel| rel.split_whitespace().any(|r| r == "page-next"))
            })
            .then_some(target)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_normalised_and_checked() {
        assert_eq!(
            normalise_domain("data.linz.govt.nz", false)
                .expect("plain host")
                .as_str(),
            "data.linz.govt.nz"
        );
        assert_eq!(
            normalise_domain("https://data.linz.govt.nz/", false)
                .expect("url")
                .as_str(),
            "data.linz.govt.nz"
        );
        let plain = normalise_domain("http://127.0.0.1:8080", true).expect("port");
        assert!(plain.is_plain_http() && plain.as_str() == "127.0.0.1:8080");
        assert!(normalise_domain("http://data.linz.govt.nz", false).is_err());
        assert!(normalise_domain("data.linz.govt.nz/services/api", false).is_err());
        assert!(normalise_domain("", false).is_err());
        assert!(normalise_domain("user:pw@host", false).is_err());
    }

    #[test]
    fn error_messages_come_from_every_body_shape() {
        let status = StatusCode::BAD_REQUEST;
        assert_eq!(error_message(br#"{"error": "bad"}"#, status), "bad");
        assert_eq!(
            error_message(br#"{"errors": ["Can't cancel", "really"]}"#, status),
            "Can't cancel; really"
        );
        assert_eq!(
            error_message(br#"{"detail": "Invalid token."}"#, status),
            "Invalid token."
        );
        assert_eq!(
            error_message(
                br#"{"url_remote": ["Invalid URL: Can't resolve host."]}"#,
                status
            ),
            "url_remote: Invalid URL: Can't resolve host."
        );
        assert_eq!(
            error_message(b"<html>oops</html>", status),
            "<html>oops</html>"
        );
        assert_eq!(error_message(b"", status), "Bad Request");
    }

    #[test]
    fn next_page_link_is_found() {
        let header = r#"<https://x/services/api/v1.x/layers/?page=1>; rel="page-previous", <https://x/services/api/v1.x/layers/?page=3>; rel="page-next""#;
        assert_eq!(
            next_page_link(header),
            Some("https://x/services/api/v1.x/layers/?page=3")
        );
        assert_eq!(next_page_link(r#"<https://x/>; rel="page-last""#), None);
    }

    #[test]
    fn debug_never_shows_the_key() {
        let connection = KoordinatesConnection::builder()
            .api_key(Some("super-secret-key".into()))
            .build()
            .expect("connection");
        let debug = format!("{connection:?}");
        assert!(!debug.contains("super-secret-key"), "{debug}");
        assert!(debug.contains("ttgroup.koordinates.com"));
        assert_eq!(
            connection.redact("echo super-secret-key"),
            "echo [redacted]"
        );
    }
}
