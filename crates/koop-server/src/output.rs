//! Output plugins: each contributes routes under every provider's namespace and parameters.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use futures::future::BoxFuture;
use koop_provider::{
    DataCache, GeoJsonValidator, Method, Provider, ProviderData, ProviderError, ProviderRequest,
    ProviderStream, get_data_cached,
};

/// What an output route's handler gets besides the request: the provider and the server's
/// shared cache and validator.
#[derive(Clone)]
pub struct OutputContext {
    /// The provider the route was built for.
    pub provider: Arc<dyn Provider>,
    /// The data cache in front of `get_data`.
    pub cache: Arc<DataCache>,
    /// The GeoJSON validator.
    pub validator: Arc<GeoJsonValidator>,
}

impl std::fmt::Debug for OutputContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputContext")
            .field("provider", &self.provider.name())
            .finish_non_exhaustive()
    }
}

impl OutputContext {
    /// Authorizes the request, then answers it from the cache or the provider's `get_data`.
    ///
    /// # Errors
    ///
    /// The provider's.
    pub async fn get_data(
        &self,
        request: &ProviderRequest,
    ) -> Result<Arc<ProviderData>, ProviderError> {
        let result = async {
            self.provider.authorize(request).await?;
            get_data_cached(
                self.provider.as_ref(),
                request,
                &self.cache,
                &self.validator,
            )
            .await
        }
        .await;
        result.inspect_err(|error| log_failure(request, error))
    }

    /// Authorizes the request, then streams the provider's features: from its `get_stream`
    /// (validated one by one outside production) when it [prefers streaming], else from the
    /// cached `get_data`.
    ///
    /// [prefers streaming]: Provider::prefers_stream
    ///
    /// # Errors
    ///
    /// The provider's.
    pub async fn get_stream(
        &self,
        request: &ProviderRequest,
    ) -> Result<ProviderStream, ProviderError> {
        self.stream(request)
            .await
            .inspect_err(|error| log_failure(request, error))
    }

    async fn stream(&self, request: &ProviderRequest) -> Result<ProviderStream, ProviderError> {
        if !self.provider.prefers_stream() {
            // Read through the data cache, then stream what it holds.
            let data = self.get_data(request).await?;
            let features: Vec<_> = data.features.iter().cloned().map(Ok).collect();
            return Ok(ProviderStream {
                metadata: data.metadata.clone(),
                filters_applied: data.filters_applied,
                crs: data.crs,
                count: data.count,
                answer: data.answer.clone(),
                version_tag: data.version_tag.clone(),
                features: Box::pin(futures::stream::iter(features)),
                rows: None,
            });
        }
        self.provider.authorize(request).await?;
        let mut stream = self.provider.get_stream(request).await?;
        if self.validator.is_enabled() {
            let key = self.provider.create_key(request);
            let validator = self.validator.clone();
            let metadata = stream.metadata.clone();
            // Rows are validated as the features they stand for.
            stream.features = Box::pin(stream.take_features().inspect(move |feature| {
                if let Ok(feature) = feature {
                    validator.check_feature(&key, &metadata, feature);
                }
            }));
        }
        Ok(stream)
    }
}

/// Logs a provider's failure with the request path: the whole chain at `warn` for the server's
/// faults and the upstream's (5xx), at `debug` for the client's (4xx).
pub fn log_failure(request: &ProviderRequest, error: &ProviderError) {
    if error.status() >= 500 {
        tracing::warn!(path = %request.path, status = error.status(), "{}", error.chain());
    } else {
        tracing::debug!(path = %request.path, status = error.status(), "{}", error.chain());
    }
}

/// The handler of an output route.
pub type OutputHandler =
    Arc<dyn Fn(OutputContext, ProviderRequest) -> BoxFuture<'static, Response> + Send + Sync>;

/// A route an output contributes.
///
/// The path may hold `:param` segments and the placeholders `$namespace` (the provider's name)
/// and `$providerParams` (its `:host/:id`, as registered). Without placeholders it is appended
/// after `/{namespace}/{providerParams}/`; with `absolute_path` it is taken as it is (after
/// replacing `$namespace`), as Koop's output plugins do.
#[derive(Clone)]
pub struct OutputRoute {
    /// The path.
    pub path: String,
    /// Methods it answers.
    pub methods: Vec<Method>,
    /// Skip the provider's namespace and parameters.
    pub absolute_path: bool,
    /// What answers.
    pub handler: OutputHandler,
}

impl std::fmt::Debug for OutputRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputRoute")
            .field("path", &self.path)
            .field("methods", &self.methods)
            .field("absolute_path", &self.absolute_path)
            .finish_non_exhaustive()
    }
}

/// An output plugin (Koop's output-services): routes that present any provider's data in some
/// format.
pub trait Output: Send + Sync + 'static {
    /// The output's name, for logs.
    fn name(&self) -> &str;

    /// The routes it adds for every provider.
    fn routes(&self) -> Vec<OutputRoute>;
}

/// A JSON error with the HTTP status of `error`: `{"error": {"code": 404, "message": "…"}}`, the
/// message alone (never the cause's chain, which may name local paths).
pub fn error_response(error: &ProviderError) -> Response {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::json!({"error": {"code": error.status(), "message": error.message()}});
    (status, axum::Json(body)).into_response()
}
