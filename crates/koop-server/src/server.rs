//! Composing providers and outputs into one router.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, RawQuery};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use futures::future::BoxFuture;
use koop_provider::{
    DataCache, GeoJsonValidator, Method, Provider, ProviderRequest, ProviderRoute, RouteParams,
};

use crate::geojson::GeoJsonOutput;
use crate::output::{Output, OutputContext, OutputHandler, error_response};

/// Why a server cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Two providers claim the same namespace.
    #[error("two providers are named {0:?}; provider names are URL namespaces and must differ")]
    DuplicateNamespace(String),
    /// Two routes claim the same path and method.
    #[error("two routes claim {method} {path}")]
    DuplicateRoute {
        /// The HTTP method.
        method: String,
        /// The path.
        path: String,
    },
}

/// Which browser origins may read the server's answers (CORS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cors {
    /// Any origin (the default: ArcGIS Online, esri-leaflet and other web maps read layers from
    /// pages on their own origins; no credentials are involved).
    AnyOrigin,
    /// Only these origins, e.g. `https://www.arcgis.com`.
    Origins(Vec<String>),
    /// No CORS headers: browsers allow same-origin pages only.
    Off,
}

/// Builds the koop server: providers, outputs, the data cache and the validator, and the bounds
/// every request gets (a deadline, a body limit), CORS and response compression.
pub struct ServerBuilder {
    providers: Vec<Arc<dyn Provider>>,
    /// Always registered, before `outputs`.
    geojson: GeoJsonOutput,
    outputs: Vec<Arc<dyn Output>>,
    cache: Arc<DataCache>,
    validator: Arc<GeoJsonValidator>,
    request_timeout: Duration,
    body_limit: usize,
    cors: Cors,
    compression: bool,
    pages: Option<Router>,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field(
                "providers",
                &self
                    .providers
                    .iter()
                    .map(|provider| provider.name())
                    .collect::<Vec<_>>(),
            )
            .field(
                "outputs",
                &std::iter::once(self.geojson.name())
                    .chain(self.outputs.iter().map(|output| output.name()))
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Default for ServerBuilder {
    /// The GeoJSON output, a [`DataCache::default`], validation unless `KOOP_ENV=production`,
    /// a 30 s request deadline, 2 MiB request bodies, CORS for any origin and compression.
    fn default() -> Self {
        Self {
            providers: Vec::new(),
            geojson: GeoJsonOutput::default(),
            outputs: Vec::new(),
            cache: Arc::new(DataCache::default()),
            validator: Arc::new(GeoJsonValidator::from_env()),
            request_timeout: Duration::from_secs(30),
            body_limit: 2 << 20,
            cors: Cors::AnyOrigin,
            compression: true,
            pages: None,
        }
    }
}

/// `/{namespace}/{providerParams}` of a provider, as `:param` segments.
fn provider_params(provider: &dyn Provider) -> String {
    let registration = provider.registration();
    match (registration.hosts, registration.disable_id_param) {
        (true, false) => ":host/:id".to_owned(),
        (true, true) => ":host".to_owned(),
        (false, false) => ":id".to_owned(),
        (false, true) => String::new(),
    }
}

/// The axum path of a route template: placeholders replaced, `:param` → `{param}`, one slash
/// between segments.
fn axum_path(template: &str, namespace: &str, params: &str, absolute: bool) -> String {
    let placeholders = template.contains("$namespace") || template.contains("$providerParams");
    let path = if placeholders || absolute {
        template
            .replace("$namespace", namespace)
            .replace("$providerParams", params)
    } else {
        format!("/{namespace}/{params}/{template}")
    };
    let segments: Vec<String> = path
        .split('/')
        .filter(|segment| !segment.is_empty())
        .map(|segment| match segment.strip_prefix(':') {
            Some(name) => format!("{{{name}}}"),
            None => segment.to_owned(),
        })
        .collect();
    format!("/{}", segments.join("/"))
}

/// Fields of an `application/x-www-form-urlencoded` body, or of a JSON object body (values
/// that are not strings are kept as JSON text).
fn body_fields(headers: &HeaderMap, body: &[u8]) -> BTreeMap<String, String> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if content_type.starts_with("application/json") {
        if let Ok(serde_json::Value::Object(map)) =
            serde_json::from_slice::<serde_json::Value>(body)
        {
            return map
                .into_iter()
                .map(|(key, value)| match value {
                    serde_json::Value::String(text) => (key, text),
                    other => (key, other.to_string()),
                })
                .collect();
        }
        return BTreeMap::new();
    }
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// The framework-independent request of an HTTP request.
fn provider_request(
    deadline: Option<std::time::Instant>,
    path: &str,
    params: &HashMap<String, String>,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> ProviderRequest {
    let mut fields: BTreeMap<String, String> = query
        .map(|query| {
            url::form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    fields.extend(body_fields(headers, body));
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::to_owned);
    let header_text = |name: &header::HeaderName| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let base_url = header_text(&header::HOST)
        .filter(|host| {
            host.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        })
        .map(|host| {
            let scheme = header_text(&header::HeaderName::from_static("x-forwarded-proto"))
                .filter(|scheme| scheme == "https")
                .unwrap_or_else(|| "http".to_owned());
            format!("{scheme}://{host}")
        });
    ProviderRequest {
        base_url,
        deadline,
        path: path.to_owned(),
        params: RouteParams {
            host: params.get("host").cloned(),
            id: params.get("id").cloned(),
            layer: params.get("layer").cloned(),
            method: params.get("method").cloned(),
        },
        token: fields.get("token").cloned().or(bearer),
        if_none_match: header_text(&header::IF_NONE_MATCH),
        query: fields,
    }
}

type Handler = Arc<dyn Fn(ProviderRequest) -> BoxFuture<'static, Response> + Send + Sync>;

fn method_router(methods: &[Method], handler: &Handler, timeout: Duration) -> MethodRouter {
    let make = |handler: Handler| {
        move |OriginalUri(uri): OriginalUri,
              Path(params): Path<HashMap<String, String>>,
              RawQuery(query): RawQuery,
              headers: HeaderMap,
              body: Bytes| {
            let handler = handler.clone();
            async move {
                let deadline = std::time::Instant::now().checked_add(timeout);
                let request = provider_request(
                    deadline,
                    uri.path(),
                    &params,
                    query.as_deref(),
                    &headers,
                    &body,
                );
                handler(request).await
            }
        }
    };
    let mut router = MethodRouter::new();
    for method in methods {
        router = match method {
            Method::Get => router.merge(get(make(handler.clone()))),
            Method::Post => router.merge(post(make(handler.clone()))),
        };
    }
    router
}

fn output_handler(handler: OutputHandler, context: OutputContext) -> Handler {
    Arc::new(move |request| handler(context.clone(), request))
}

fn provider_route_handler(route: &ProviderRoute) -> Handler {
    let handler = route.handler.clone();
    Arc::new(move |request| {
        let handler = handler.clone();
        Box::pin(async move {
            match handler(request).await {
                Ok(json) => axum::Json(json).into_response(),
                Err(error) => error_response(&error),
            }
        })
    })
}

impl ServerBuilder {
    /// Adds a provider.
    #[must_use]
    pub fn provider(mut self, provider: impl Provider) -> Self {
        self.providers.push(Arc::new(provider));
        self
    }

    /// Adds a provider already shared.
    #[must_use]
    pub fn shared_provider(mut self, provider: Arc<dyn Provider>) -> Self {
        self.providers.push(provider);
        self
    }

    /// Adds an output plugin (the GeoJSON output is there from the start).
    #[must_use]
    pub fn output(mut self, output: impl Output) -> Self {
        self.outputs.push(Arc::new(output));
        self
    }

    /// Uses this data cache.
    #[must_use]
    pub fn data_cache(mut self, cache: DataCache) -> Self {
        self.cache = Arc::new(cache);
        self
    }

    /// Uses this validator.
    #[must_use]
    pub fn validator(mut self, validator: GeoJsonValidator) -> Self {
        self.validator = Arc::new(validator);
        self
    }

    /// The deadline of each request (default 30 s): providers see it as
    /// [`ProviderRequest::deadline`] and stop their work then; a handler still running a second
    /// later is answered `408`. A streamed response's body is not bounded by it (only by the
    /// write timeout of [`serve`](crate::serve)).
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Largest request body, in bytes (default 2 MiB); a larger one is answered `413`.
    #[must_use]
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Which origins may read answers from a browser (default any).
    #[must_use]
    pub fn cors(mut self, cors: Cors) -> Self {
        self.cors = cors;
        self
    }

    /// Routes of the embedding application (HTML pages, assets) served next to the outputs',
    /// with the same deadline, body limit, compression and CORS. Their paths must not be the
    /// outputs' (`build` panics inside axum on a conflict, so give them paths of their own, e.g.
    /// `/` and `/{namespace}/{host}/{id}/map` after a provider's own placeholders).
    #[must_use]
    pub fn pages(mut self, pages: Router) -> Self {
        self.pages = Some(pages);
        self
    }

    /// At most `streams` GeoJSON responses stream at once (default
    /// [`crate::geojson::DEFAULT_MAX_STREAMS`]; see [`GeoJsonOutput`]).
    #[must_use]
    pub fn max_streams(mut self, streams: usize) -> Self {
        self.geojson = GeoJsonOutput::with_max_streams(streams);
        self
    }

    /// Whether answers are compressed as `Accept-Encoding` asks (zstd, br, gzip, deflate at
    /// their fastest levels; among codings the client accepts equally, zstd first, then gzip
    /// before brotli, which costs about twice the CPU; default on).
    #[must_use]
    pub fn compression(mut self, compression: bool) -> Self {
        self.compression = compression;
        self
    }

    /// The router: `GET /status`, every output's routes for every provider, and every
    /// provider's extra routes.
    ///
    /// # Errors
    ///
    /// [`ServerError::DuplicateNamespace`]; [`ServerError::DuplicateRoute`] when two routes
    /// claim the same path and method.
    pub fn build(self) -> Result<Router, ServerError> {
        let mut routes: Vec<(String, Vec<Method>, Handler)> = Vec::new();
        let mut namespaces = HashSet::new();
        let geojson: Arc<dyn Output> = Arc::new(self.geojson.clone());
        let outputs: Vec<&Arc<dyn Output>> =
            std::iter::once(&geojson).chain(&self.outputs).collect();
        for provider in &self.providers {
            let registration = provider.registration();
            if !namespaces.insert(registration.name.clone()) {
                return Err(ServerError::DuplicateNamespace(registration.name));
            }
            let params = provider_params(provider.as_ref());
            let context = OutputContext {
                provider: provider.clone(),
                cache: self.cache.clone(),
                validator: self.validator.clone(),
            };
            for output in &outputs {
                for route in output.routes() {
                    let path = axum_path(
                        &route.path,
                        &registration.name,
                        &params,
                        route.absolute_path,
                    );
                    routes.push((
                        path,
                        route.methods,
                        output_handler(route.handler, context.clone()),
                    ));
                }
            }
            for route in &registration.routes {
                let path = axum_path(&route.path, &registration.name, &params, false);
                routes.push((path, route.methods.clone(), provider_route_handler(route)));
            }
        }
        let mut seen = HashSet::new();
        let mut grouped: Vec<(String, MethodRouter)> = Vec::new();
        for (path, methods, handler) in routes {
            for method in &methods {
                if !seen.insert((path.clone(), *method)) {
                    return Err(ServerError::DuplicateRoute {
                        method: format!("{method:?}").to_uppercase(),
                        path,
                    });
                }
            }
            let methods_router = method_router(&methods, &handler, self.request_timeout);
            match grouped.iter_mut().find(|(existing, _)| *existing == path) {
                Some((_, existing)) => {
                    let merged = std::mem::take(existing).merge(methods_router);
                    *existing = merged;
                }
                None => grouped.push((path, methods_router)),
            }
        }
        let mut app = Router::new().route(
            "/status",
            get(|| async { axum::Json(serde_json::json!({"success": true})) }),
        );
        for (path, methods_router) in grouped {
            app = app.route(&path, methods_router);
        }
        if let Some(pages) = self.pages {
            app = app.merge(pages);
        }
        Ok(crate::layers::wrap(
            app,
            &crate::layers::Layers {
                request_timeout: self.request_timeout,
                body_limit: self.body_limit,
                cors: self.cors,
                compression: self.compression,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_templates_follow_koop_placeholders() {
        assert_eq!(
            axum_path("geojson", "koordinates", ":host/:id", false),
            "/koordinates/{host}/{id}/geojson"
        );
        assert_eq!(
            axum_path(
                "$namespace/rest/services/$providerParams/FeatureServer/:layer",
                "file-geojson",
                ":id",
                false
            ),
            "/file-geojson/rest/services/{id}/FeatureServer/{layer}"
        );
        assert_eq!(
            axum_path("$namespace/rest/info", "koordinates", ":host/:id", true),
            "/koordinates/rest/info"
        );
        assert_eq!(axum_path("/status/extra", "ns", "", true), "/status/extra");
        assert_eq!(axum_path("geojson", "ns", "", false), "/ns/geojson");
    }

    #[test]
    fn requests_merge_query_form_and_json_fields() {
        let params = HashMap::from([("id".to_owned(), "sample".to_owned())]);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().expect("header"),
        );
        let request = provider_request(
            None,
            "/test/sample/FeatureServer/0/query",
            &params,
            Some("f=json&where=1%3D1"),
            &headers,
            b"outFields=name&token=abc",
        );
        assert_eq!(request.params.id.as_deref(), Some("sample"));
        assert_eq!(request.query("where"), Some("1=1"));
        assert_eq!(request.query("outFields"), Some("name"));
        assert_eq!(request.token.as_deref(), Some("abc"));
        assert_eq!(request.base_url, None, "no Host header");
        assert_eq!(request.path, "/test/sample/FeatureServer/0/query");

        headers.insert(
            header::CONTENT_TYPE,
            "application/json".parse().expect("header"),
        );
        headers.insert(header::HOST, "127.0.0.1:8080".parse().expect("header"));
        let request = provider_request(
            None,
            "/test/sample/FeatureServer/0/query",
            &params,
            None,
            &headers,
            br#"{"where":"a > 1","returnGeometry":false}"#,
        );
        assert_eq!(request.query("returnGeometry"), Some("false"));
        assert_eq!(request.query("where"), Some("a > 1"));
        assert_eq!(request.base_url.as_deref(), Some("http://127.0.0.1:8080"));
        headers.insert(
            header::HOST,
            "evil.example/<script>".parse().expect("header"),
        );
        let request = provider_request(None, "/", &params, None, &headers, b"");
        assert_eq!(
            request.base_url, None,
            "a Host that is not a host name is ignored"
        );
    }
}
