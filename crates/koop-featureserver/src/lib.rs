//! The FeatureServer (Geoservices) output of koop: ArcGIS Pro, ArcGIS Online, QGIS and GDAL
//! read any [`koop_provider::Provider`] as an ArcGIS feature service.
//!
//! [`FeatureServerOutput`] is an output plugin for [`koop_server::ServerBuilder`]. For every
//! provider it answers, with GET and POST (form or JSON bodies):
//!
//! | route | answer |
//! | --- | --- |
//! | `/{ns}/rest/info` | API version; token service when the provider issues tokens |
//! | `/{ns}/rest/generateToken` | `{token, expires, ssl}` from the provider's `authenticate` (POST only) |
//! | `/{ns}/rest/services/{params}/FeatureServer` | the service: one layer (or table) |
//! | `…/FeatureServer/layers` | every layer, described |
//! | `…/FeatureServer/{layer}` and `…/{layer}/info` | one layer: fields, extent, capabilities |
//! | `…/FeatureServer/{layer}/query` | features, counts, ids, extents, statistics |
//! | `…/FeatureServer/{layer}/generateRenderer` | a `uniqueValue` or `classBreaks` renderer (see [Renderers](crate#renderers)) |
//!
//! `{params}` is the provider's `:host/:id`; the same routes also answer without
//! `rest/services` (`/{ns}/{params}/FeatureServer/…`), the form Koop's first versions used.
//! Errors are HTTP 200 with `{"error": {"code", "message", "details"}}`, as ArcGIS clients
//! expect ([`GeoservicesError`]).
//!
//! Queries support every parameter of the Geoservices query operation that the reference Koop
//! supports (`where`, `objectIds`, `geometry` with `inSR` and `spatialRel`, `outFields`,
//! `returnGeometry`, `orderByFields`, `resultOffset`, `resultRecordCount`, `returnCountOnly`,
//! `returnIdsOnly`, `returnExtentOnly`, `returnDistinctValues`, `outStatistics` with
//! `groupByFieldsForStatistics`, `outSR`, `geometryPrecision`, `f` = json, pjson, geojson or
//! pbf, `quantizationParameters` (pbf only; `mode=view` leaves out vertices that share a cell),
//! `maxAllowableOffset` (lines and rings generalized with Douglas–Peucker in `outSR` units; a
//! ring never collapses), `callback`). Without `geometryPrecision`, coordinates are rounded to
//! 1e-9 degree or 1e-4 m (projected CRSs): no float noise. Parameters of other clients
//! (`resultType`, `cacheHint`, `maxRecordCountFactor`, `returnExceededLimitFeatures`) are
//! accepted and change nothing. Queries run over the provider's features in one pass and bounded memory, skipping
//! the steps the provider applied itself (`filtersApplied`); the Koordinates provider applies
//! them all in SQLite, so a page of a layer of millions of features costs milliseconds.
//!
//! Where koop differs from Koop on purpose:
//! - `maxRecordCount` caps every page (`min(resultRecordCount or maxRecordCount,
//!   maxRecordCount)`), and `exceededTransferLimit` is true exactly when more features exist;
//!   `resultOffset` counts even without `resultRecordCount`.
//! - `returnCountOnly` counts every matching feature (`resultRecordCount` pages features, not
//!   counts), as ArcGIS Server does.
//! - Fields come from the provider's `metadata.fields` (inferred from every feature only when it
//!   declares none); `OBJECTID` is the provider's `idField`, or a hash that is the same on every
//!   machine (see [`object_id`](crate#object-ids)).
//! - Dates are epoch milliseconds everywhere in Esri JSON (statistics and distinct values too).
//! - `f=pbf` answers features, counts, ids and extents (Esri's FeatureCollection protocol buffer,
//!   with `quantizationParameters`); statistics and distinct values are answered in JSON only.
//!
//! # Renderers
//!
//! `generateRenderer?classificationDef={…}` answers as Koop's FeatureServer does: `uniqueValueDef`
//! (up to three `uniqueValueFields`, each combination with its count) or `classBreaksDef`
//! (`esriClassifyEqualInterval`, `esriClassifyQuantile`, `esriClassifyNaturalBreaks`; `breakCount`;
//! normalized by field, log or percent of total), with the request's `where` and geometry filters,
//! a `baseSymbol` or the geometry type's default and an algorithmic `colorRamp` (HSV, CIE Lab,
//! `LCh`). Its values come from `outStatistics` queries, so the Koordinates provider computes them in
//! SQL; at most 1,000 unique values and 50,000 distinct classified values are read (natural
//! breaks: 2,000), and past that the answer is a 400 naming the bound. Equal intervals of an
//! unnormalized field need only its minimum and maximum, on any layer.
//!
//! # Object ids
//!
//! When the provider names no integer `idField` (values 0..=2,147,483,647), each feature's
//! `OBJECTID` is the 32-bit FNV-1a hash of the compact JSON array `[properties, geometry]`
//! (`serde_json`, keys in the provider's order), top bit cleared.
//!
//! # Example
//!
//! ```no_run
//! use koop_featureserver::FeatureServerOutput;
//! use koop_provider_koordinates::{KoordinatesConfig, KoordinatesProvider};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let router = koop_server::ServerBuilder::default()
//!     .provider(KoordinatesProvider::new(KoordinatesConfig::default()))
//!     .output(FeatureServerOutput::default())
//!     .build()?;
//! // GET /koordinates/rest/services/data.linz.govt.nz/50772/FeatureServer/0/query?where=1%3D1
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, router).await?;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![recursion_limit = "256"]

use std::borrow::Cow;
use std::sync::Arc;

use axum::response::Response;
use futures::StreamExt;
use koop_geoservices::Query;
use koop_provider::{Credentials, Method, ProviderRequest};
use koop_server::{Output, OutputContext, OutputHandler, OutputRoute};

pub use response::GeoservicesError;

mod caching;
mod engine;
mod esri;
mod info;
mod layer;
mod object_id;
mod pbf;
mod render;
mod renderer;
mod response;
mod streamed;

use caching::Caching;
use engine::Engine;
use layer::{Features, Fetched, Layer};
use response::Encoding;

/// The FeatureServer output plugin.
#[derive(Debug, Clone, Copy)]
pub struct FeatureServerOutput {
    max_record_count: u32,
    caching: Caching,
}

impl Default for FeatureServerOutput {
    /// `maxRecordCount` 2000 for providers whose metadata sets none (as Koop); answers may be
    /// kept 60 s by HTTP caches.
    fn default() -> Self {
        Self {
            max_record_count: 2000,
            caching: Caching {
                max_age: std::time::Duration::from_secs(60),
            },
        }
    }
}

impl FeatureServerOutput {
    /// Uses `count` as `maxRecordCount` for providers whose metadata sets none.
    #[must_use]
    pub fn max_record_count(mut self, count: u32) -> Self {
        self.max_record_count = count.max(1);
        self
    }

    /// How long HTTP caches (browsers, proxies) may keep an answer without asking again, sent
    /// as `Cache-Control: max-age` in whole seconds (default 60 s; zero sends `no-cache`).
    /// Whatever the age, answers carry an `ETag` from the provider's version tag and the
    /// normalised query, and a request with a matching `If-None-Match` gets `304 Not
    /// Modified` without the query being run.
    #[must_use]
    pub fn cache_max_age(mut self, max_age: std::time::Duration) -> Self {
        self.caching.max_age = max_age;
        self
    }
}

/// What every route handler is given besides the request.
#[derive(Debug, Clone, Copy)]
struct Settings {
    max_record_count: u32,
    caching: Caching,
}

/// What a route answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    RestInfo,
    GenerateToken,
    /// `generateToken` by GET: refused, the password would be in the URL.
    GenerateTokenByGet,
    Server,
    Layers,
    Layer,
    LayerMethod,
    InvalidUrl,
}

impl Output for FeatureServerOutput {
    fn name(&self) -> &str {
        "FeatureServer"
    }

    fn routes(&self) -> Vec<OutputRoute> {
        let mut routes = vec![
            ("$namespace/rest/info".to_owned(), Operation::RestInfo),
            (
                "$namespace/rest/generateToken".to_owned(),
                Operation::GenerateToken,
            ),
            (
                "$namespace/rest/generateToken".to_owned(),
                Operation::GenerateTokenByGet,
            ),
        ];
        for prefix in [
            "$namespace/rest/services/$providerParams",
            "$namespace/$providerParams",
        ] {
            routes.extend([
                (format!("{prefix}/FeatureServer"), Operation::Server),
                (format!("{prefix}/FeatureServer/layers"), Operation::Layers),
                (format!("{prefix}/FeatureServer/:layer"), Operation::Layer),
                (
                    format!("{prefix}/FeatureServer/:layer/:method"),
                    Operation::LayerMethod,
                ),
            ]);
        }
        let map_server = "$namespace/rest/services/$providerParams/MapServer";
        routes.extend([
            (map_server.to_owned(), Operation::InvalidUrl),
            (format!("{map_server}/:layer"), Operation::InvalidUrl),
            (
                format!("{map_server}/:layer/:method"),
                Operation::InvalidUrl,
            ),
        ]);
        let settings = Settings {
            max_record_count: self.max_record_count,
            caching: self.caching,
        };
        routes
            .into_iter()
            .map(|(path, operation)| {
                let handler: OutputHandler = Arc::new(move |context, request| {
                    Box::pin(answer(operation, context, request, settings))
                });
                OutputRoute {
                    absolute_path: matches!(
                        operation,
                        Operation::RestInfo
                            | Operation::GenerateToken
                            | Operation::GenerateTokenByGet
                    ),
                    path,
                    methods: match operation {
                        Operation::GenerateToken => vec![Method::Post],
                        Operation::GenerateTokenByGet => vec![Method::Get],
                        _ => vec![Method::Get, Method::Post],
                    },
                    handler,
                }
            })
            .collect()
    }
}

/// `f` and `callback` of a description request: JSON or pretty JSON only.
fn info_encoding(request: &ProviderRequest) -> Result<Encoding, GeoservicesError> {
    let pretty = match request.query("f").map(str::to_ascii_lowercase).as_deref() {
        None | Some("" | "json") => false,
        Some("pjson") => true,
        Some(_) => {
            return Err(GeoservicesError {
                code: 400,
                message: "Invalid format".to_owned(),
                details: Vec::new(),
            });
        }
    };
    Ok(Encoding {
        pretty,
        callback: koop_geoservices::callback(&request.query)?,
    })
}

/// The layer id of the route: a non-negative integer.
fn layer_id(request: &ProviderRequest) -> Result<u32, GeoservicesError> {
    match request.params.layer.as_deref() {
        None => Ok(0),
        Some(text) => text.parse().map_err(|_| GeoservicesError {
            code: 400,
            message: format!("Invalid layer id {text:?}: layers are numbered from 0"),
            details: Vec::new(),
        }),
    }
}

async fn answer(
    operation: Operation,
    context: OutputContext,
    mut request: ProviderRequest,
    settings: Settings,
) -> Response {
    let method = request.params.method.take();
    let result = match operation {
        Operation::RestInfo => rest_info(&context, &request),
        Operation::GenerateToken => generate_token(&context, &request).await,
        Operation::GenerateTokenByGet => Err(GeoservicesError::bad_request(
            "generateToken takes POST only (a form with username and password): a password in a URL is kept in logs and browser history",
        )),
        Operation::InvalidUrl => Err(GeoservicesError::bad_request("Invalid URL")),
        Operation::Server | Operation::Layers | Operation::Layer => {
            describe(operation, &context, request, settings).await
        }
        Operation::LayerMethod => match method.as_deref() {
            Some("query") => query(&context, request, settings).await,
            Some("info") => describe(Operation::Layer, &context, request, settings).await,
            Some("generateRenderer") => {
                renderer::generate_renderer(&context, request, settings).await
            }
            other => Err(GeoservicesError {
                code: 400,
                message: format!(
                    "{:?} is not an operation of this FeatureServer layer; use query, info or generateRenderer",
                    other.unwrap_or_default()
                ),
                details: Vec::new(),
            }),
        },
    };
    result.unwrap_or_else(GeoservicesError::into_response)
}

fn rest_info(
    context: &OutputContext,
    request: &ProviderRequest,
) -> Result<Response, GeoservicesError> {
    let encoding = info_encoding(request)?;
    let namespace = context.provider.registration().name;
    let token_url = context.provider.authenticates().then(|| {
        format!(
            "{}/{namespace}/rest/generateToken",
            request.base_url.as_deref().unwrap_or_default()
        )
    });
    Ok(encoding.respond(&info::rest_info(token_url.as_deref())))
}

async fn generate_token(
    context: &OutputContext,
    request: &ProviderRequest,
) -> Result<Response, GeoservicesError> {
    let encoding = info_encoding(request)?;
    if !context.provider.authenticates() {
        return Err(GeoservicesError::bad_request(format!(
            "the {} provider does not issue tokens; its layers need none",
            context.provider.name()
        )));
    }
    let credentials = Credentials {
        username: request.query("username").unwrap_or_default().to_owned(),
        password: request.query("password").unwrap_or_default().to_owned(),
    };
    let token = context
        .provider
        .authenticate(&credentials)
        .await
        .map_err(|error| GeoservicesError {
            code: 400,
            message: "Unable to generate token.".to_owned(),
            details: vec![error.to_string()],
        })?;
    let body = serde_json::to_value(&token).map_err(|error| GeoservicesError {
        code: 500,
        message: error.to_string(),
        details: Vec::new(),
    })?;
    Ok(encoding.respond(&body))
}

/// The first feature of a stream, when the provider declares no fields or geometry type.
async fn sample(fetched: &mut Fetched) -> Option<geojson::Feature> {
    let metadata = &fetched.metadata;
    if metadata.fields.is_empty() || metadata.geometry_type.is_none() {
        fetched.peek().await
    } else {
        None
    }
}

/// Asks the provider, and describes its layer.
async fn fetch_layer(
    context: &OutputContext,
    request: &ProviderRequest,
    max_record_count: u32,
) -> Result<(Fetched, Layer), GeoservicesError> {
    let mut fetched = Fetched::fetch(context, request)
        .await
        .map_err(|error| GeoservicesError::from_provider(&error, request.token.is_some()))?;
    let sample = sample(&mut fetched).await;
    let layer = Layer::describe(&fetched, sample.as_ref(), max_record_count);
    Ok((fetched, layer))
}

async fn describe(
    operation: Operation,
    context: &OutputContext,
    mut request: ProviderRequest,
    settings: Settings,
) -> Result<Response, GeoservicesError> {
    let encoding = info_encoding(&request)?;
    let id = layer_id(&request)?;
    request.params.method = Some("info".to_owned());
    let (fetched, mut layer) = fetch_layer(context, &request, settings.max_record_count).await?;
    let etag = fetched
        .version_tag
        .as_deref()
        .map(|tag| caching::etag(tag, &request));
    if let Some(response) = etag
        .as_deref()
        .and_then(|etag| settings.caching.not_modified(&request, etag))
    {
        return Ok(response);
    }
    if layer.extent.is_none() {
        layer.extent = fetched.feature_extent();
    }
    let body = match operation {
        Operation::Server => info::server_info(&layer, id),
        Operation::Layers => info::layers(&layer, id),
        _ => info::layer_info(&layer, id),
    };
    let mut response = encoding.respond(&body);
    settings
        .caching
        .decorate(&mut response, &request, etag.as_deref());
    Ok(response)
}

/// The tag of the provider's current data for `request`, from an info request (which costs a
/// provider that answers queries in its source no query), when the caller holds tags.
async fn held_etag(context: &OutputContext, request: &ProviderRequest) -> Option<String> {
    request.if_none_match.as_ref()?;
    let mut info = request.clone();
    info.params.method = Some("info".to_owned());
    let fetched = Fetched::fetch(context, &info).await.ok()?;
    Some(caching::etag(fetched.version_tag.as_deref()?, request))
}

async fn query(
    context: &OutputContext,
    mut request: ProviderRequest,
    settings: Settings,
) -> Result<Response, GeoservicesError> {
    layer_id(&request)?;
    if let Some(response) = held_etag(context, &request)
        .await
        .and_then(|etag| settings.caching.not_modified(&request, &etag))
    {
        return Ok(response);
    }
    request.params.method = Some("query".to_owned());
    let (mut response, version_tag) =
        match run_query(context, &request, settings.max_record_count).await? {
            Queried::Answer(ran) => (
                respond(ran.answer, &ran.layer, &ran.query, ran.crs)?,
                ran.version_tag,
            ),
            Queried::Page(page, version_tag) => (page.respond().await?, version_tag),
        };
    let etag = version_tag
        .as_deref()
        .map(|tag| caching::etag(tag, &request));
    settings
        .caching
        .decorate(&mut response, &request, etag.as_deref());
    Ok(response)
}

/// A query's answer, with what is needed to write it.
struct Ran {
    answer: engine::Answer,
    layer: Layer,
    query: Query,
    /// EPSG code of the provider's coordinates.
    crs: koop_provider::Epsg,
    /// The provider's data version, for `ETag`.
    version_tag: Option<String>,
}

/// What a query came to: an answer to write, or a page to write as its features arrive (with
/// the provider's data version).
enum Queried {
    Answer(Box<Ran>),
    Page(Box<streamed::StreamedPage>, Option<String>),
}

/// Asks the provider for `request` (a `query`) and runs what it did not apply: whole, or, for a
/// page whose features a provider streams in their final order (as JSON, GeoJSON or JSONP), as
/// they arrive.
async fn run_query(
    context: &OutputContext,
    request: &ProviderRequest,
    max_record_count: u32,
) -> Result<Queried, GeoservicesError> {
    let had_token = request.token.is_some();
    let (mut fetched, layer) = fetch_layer(context, request, max_record_count).await?;
    let query = Query::parse(&request.query, &layer.schema)?;
    let version_tag = fetched.version_tag.take();
    let crs = fetched.crs;
    if let Some(answer) = fetched.answer.take() {
        let answer = engine::Answer::from_provider(answer, &query);
        return Ok(Queried::Answer(Box::new(Ran {
            answer,
            layer,
            query,
            crs,
            version_tag,
        })));
    }
    let mut engine = Engine::new(
        &query,
        &layer,
        fetched.applied,
        fetched.crs,
        fetched.count,
        fetched.metadata.exceeded_transfer_limit,
    )
    .map_err(GeoservicesError::bad_request)?;
    let streams = engine.streams_page()
        && matches!(
            query.format,
            koop_geoservices::Format::Json | koop_geoservices::Format::GeoJson
        );
    if streams && let Features::Stream(stream) = fetched.features {
        return Ok(Queried::Page(
            Box::new(streamed::StreamedPage {
                layer,
                query,
                stream,
                applied: fetched.applied,
                crs,
                count: fetched.count,
                exceeded: fetched.metadata.exceeded_transfer_limit,
                had_token,
                deadline: request.deadline,
            }),
            version_tag,
        ));
    }
    match &mut fetched.features {
        Features::Data(data) => {
            for feature in &data.features {
                if !engine.push(Cow::Borrowed(feature)) {
                    break;
                }
            }
        }
        Features::Stream(stream) => {
            let mut features = stream.take_features();
            while engine.needs_features() {
                match features.next().await {
                    Some(Ok(feature)) => {
                        if !engine.push(Cow::Owned(feature)) {
                            break;
                        }
                    }
                    Some(Err(error)) => {
                        return Err(GeoservicesError::from_provider(&error, had_token));
                    }
                    None => break,
                }
            }
        }
    }
    let answer = engine.finish();
    Ok(Queried::Answer(Box::new(Ran {
        answer,
        layer,
        query,
        crs,
        version_tag,
    })))
}

/// The response of an answer, in the query's format.
fn respond(
    answer: engine::Answer,
    layer: &Layer,
    query: &Query,
    crs: koop_provider::Epsg,
) -> Result<Response, GeoservicesError> {
    if query.format == koop_geoservices::Format::Pbf {
        let bytes = pbf::encode(answer, layer, query, crs)?;
        let mut response = Response::new(axum::body::Body::from(bytes));
        response.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/x-protobuf"),
        );
        return Ok(response);
    }
    let body = render::render(answer, layer, query, crs).map_err(|message| GeoservicesError {
        code: 500,
        message,
        details: Vec::new(),
    })?;
    let encoding = Encoding {
        pretty: query.format == koop_geoservices::Format::PrettyJson,
        callback: query.callback.clone(),
    };
    match body {
        render::Body::Ids { field, ids } if !encoding.pretty => {
            Ok(streamed::ids(field, ids, encoding.callback.as_deref()))
        }
        body => Ok(encoding.respond_sized(&body, body.expected_bytes())),
    }
}
