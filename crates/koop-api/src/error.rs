//! The error type of koop-api.
//!
//! Messages name the domain and the resource and say what to do. They never contain the API key:
//! every text taken from a response body goes through the connection's redaction first, and the
//! key travels only in a header marked sensitive.

use std::fmt;

use koop_types::Domain;
use std::time::Duration;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a request was about, for error messages: "layer 1474", "export 19", …
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Resource {
    /// `layers/{id}/`
    Layer(u64),
    /// `tables/{id}/`
    Table(u64),
    /// `layers/{id}/` or `tables/{id}/`, whichever exists.
    LayerOrTable(u64),
    /// `layers/{id}/versions/{vid}/`
    LayerVersion {
        /// Layer id.
        layer_id: u64,
        /// Version id.
        version_id: u64,
    },
    /// `layers/{id}/versions/`
    LayerVersions(u64),
    /// The Dublin Core document of a layer.
    DublinCore(u64),
    /// `exports/{id}/` or its download.
    Export(u64),
    /// `exports/` (create, validate, list).
    Exports,
    /// `data/`, the catalog.
    Catalog,
    /// The WFS changeset of a layer or table (`/services/wfs/layer-{id}-changeset`).
    Changeset(u64),
    /// Any other URL.
    Url(String),
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Layer(id) => write!(f, "layer {id}"),
            Self::Table(id) => write!(f, "table {id}"),
            Self::LayerOrTable(id) => write!(f, "layer or table {id}"),
            Self::LayerVersion {
                layer_id,
                version_id,
            } => write!(f, "version {version_id} of layer {layer_id}"),
            Self::LayerVersions(id) => write!(f, "the versions of layer {id}"),
            Self::DublinCore(id) => write!(f, "the Dublin Core metadata of layer {id}"),
            Self::Export(id) => write!(f, "export {id}"),
            Self::Exports => f.write_str("exports"),
            Self::Catalog => f.write_str("the data catalog"),
            Self::Changeset(id) => write!(f, "the changeset of layer {id}"),
            Self::Url(url) => f.write_str(url),
        }
    }
}

/// Everything that can go wrong talking to a Koordinates site.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No API key was passed and the environment variable is unset or empty.
    #[error(
        "no Koordinates API key: pass one, or set the {variable} environment variable (create a key with the export scope in your Koordinates account settings)"
    )]
    MissingApiKey {
        /// The environment variable that was consulted.
        variable: String,
    },

    /// The API key cannot be sent in an HTTP header (control characters, non-ASCII).
    #[error(
        "the Koordinates API key contains characters that cannot be sent in an HTTP header; copy it again from your account settings"
    )]
    InvalidApiKey,

    /// The domain is not a host name (with an optional port).
    #[error("invalid Koordinates domain {domain:?}: {reason}")]
    InvalidDomain {
        /// The domain as given.
        domain: String,
        /// What is wrong with it.
        reason: String,
    },

    /// 401: the key is missing, wrong or expired.
    #[error(
        "{domain} refused the API key (401 Unauthorized): {message}; check that the key is valid for {domain} and has not expired"
    )]
    Unauthorized {
        /// The Koordinates domain.
        domain: Domain,
        /// What the server said.
        message: String,
    },

    /// 403: the key is valid but lacks permission.
    #[error(
        "{domain} denied access to {resource} (403 Forbidden): {message}; the API key needs the scopes for this request (e.g. exports:access, layers:read)"
    )]
    Forbidden {
        /// The Koordinates domain.
        domain: Domain,
        /// What was asked for.
        resource: Resource,
        /// What the server said.
        message: String,
    },

    /// 404: the layer, version or export does not exist (or is not visible to this key).
    #[error("{resource} was not found on {domain} (404); check the id and the domain")]
    NotFound {
        /// The Koordinates domain.
        domain: Domain,
        /// What was asked for.
        resource: Resource,
    },

    /// 429, still after every retry.
    #[error(
        "{domain} is rate limiting requests (429 Too Many Requests) after {attempts} attempt(s){}; wait and try again, or lower concurrency",
        retry_after.map(|after| format!(", asking to wait {}s", after.as_secs())).unwrap_or_default()
    )]
    RateLimited {
        /// The Koordinates domain.
        domain: Domain,
        /// The server's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
        /// Attempts made.
        attempts: u32,
    },

    /// 5xx, still after every retry where retrying was safe.
    #[error("{domain} failed with HTTP {status} for {resource}: {message}; try again later")]
    Server {
        /// The Koordinates domain.
        domain: Domain,
        /// What was asked for.
        resource: Resource,
        /// HTTP status code.
        status: u16,
        /// What the server said.
        message: String,
        /// The server's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },

    /// Another 4xx (400, 405, 409, …): the server refused the request as made.
    #[error("{domain} rejected the request for {resource} (HTTP {status}): {message}")]
    Rejected {
        /// The Koordinates domain.
        domain: Domain,
        /// What was asked for.
        resource: Resource,
        /// HTTP status code.
        status: u16,
        /// What the server said.
        message: String,
    },

    /// The export request is not valid for these layers (from `exports/validate/` or a 400 on create).
    #[error("{domain} will not export this request: {}; change the CRS, extent or format", reasons.join("; "))]
    InvalidExport {
        /// The Koordinates domain.
        domain: Domain,
        /// The reasons the server gave, `item: reason` per item.
        reasons: Vec<String>,
    },

    /// A response body could not be decoded: a field koop requires is missing or of a shape it
    /// cannot read (the decoder's message names it), or the body is not JSON.
    #[error(
        "could not decode {what} from {domain}: {source}; the response starts with {excerpt:?}; is {domain} a Koordinates site?"
    )]
    Decode {
        /// The Koordinates domain.
        domain: Domain,
        /// What was being decoded, and the path of the endpoint that answered: `the details of
        /// layer 1474 at /services/api/v1.x/layers/1474/`.
        what: String,
        /// The first characters of the body (the API key redacted).
        excerpt: String,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },

    /// The domain's name does not resolve (DNS). Not retried: a typo does not fix itself.
    #[error(
        "the Koordinates domain {domain} does not resolve; check its spelling (e.g. data.linz.govt.nz)"
    )]
    UnknownHost {
        /// The Koordinates domain.
        domain: String,
        /// The HTTP client's error.
        #[source]
        source: reqwest::Error,
    },

    /// The connection failed, timed out or broke.
    #[error("could not reach {domain} for {resource}; check the network and the domain")]
    Transport {
        /// The Koordinates domain.
        domain: Domain,
        /// What was asked for.
        resource: Resource,
        /// The HTTP client's error.
        #[source]
        source: reqwest::Error,
    },

    /// A redirect was refused: API calls never leave the domain, and downloads never downgrade
    /// from HTTPS to HTTP.
    #[error("refused a redirect from {from} to {to} while fetching {resource}: {reason}")]
    Redirect {
        /// What was asked for.
        resource: Resource,
        /// Origin redirected from.
        from: String,
        /// Where the server pointed.
        to: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// A link from a response points outside the domain, so following it would send the API key
    /// to another host.
    #[error(
        "refused to follow {url} for {resource}: it is not on {domain}, and the API key is only sent to {domain}"
    )]
    ForeignLink {
        /// The Koordinates domain.
        domain: Domain,
        /// What was asked for.
        resource: Resource,
        /// The link.
        url: String,
    },

    /// 416: the download cannot start at the requested byte offset.
    #[error(
        "{domain} cannot serve export {export_id} from byte {offset} (416 Range Not Satisfiable); download it again from the start"
    )]
    RangeNotSatisfiable {
        /// The Koordinates domain.
        domain: Domain,
        /// Export id.
        export_id: u64,
        /// The requested offset, in bytes.
        offset: u64,
    },

    /// The HTTP client could not be built (TLS roots, invalid settings).
    #[error("could not set up the HTTP client")]
    Client {
        /// The HTTP client's error.
        #[source]
        source: reqwest::Error,
    },
}

impl Error {
    /// The HTTP status the server answered with, when the error came from a response.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Unauthorized { .. } => Some(401),
            Self::Forbidden { .. } => Some(403),
            Self::NotFound { .. } => Some(404),
            Self::RateLimited { .. } => Some(429),
            Self::RangeNotSatisfiable { .. } => Some(416),
            Self::Server { status, .. } | Self::Rejected { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// `true` for 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// How long the server asked us to wait, from `Retry-After`.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } | Self::Server { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// `true` when a retry may succeed: rate limiting, 502/503/504 and transport failures.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::RateLimited { .. } | Self::Transport { .. } => true,
            Self::Server { status, .. } => matches!(status, 502..=504),
            _ => false,
        }
    }

    /// `true` when the server cannot have acted on the request: it answered 429, or the
    /// connection was never made. Only these are retried for requests that are not idempotent.
    pub fn server_did_not_act(&self) -> bool {
        match self {
            Self::RateLimited { .. } | Self::UnknownHost { .. } => true,
            Self::Transport { source, .. } => source.is_connect(),
            _ => false,
        }
    }
}
