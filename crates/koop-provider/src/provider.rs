//! The `Provider` trait: the extension point for any data source.

use async_trait::async_trait;

use crate::error::ProviderError;
use crate::model::{
    Credentials, ProviderData, ProviderRequest, ProviderStream, Registration, Token,
};

/// A data source served by koop: the Rust form of a Koop provider's Model.
///
/// Implement [`Provider::name`] and [`Provider::get_data`]; everything else has Koop's
/// default behaviour. The server caches `get_data` results for their `ttl` under
/// [`Provider::create_key`], validates them outside production, and builds every output
/// (GeoJSON, FeatureServer) from them.
///
/// ```
/// use async_trait::async_trait;
/// use koop_provider::{Metadata, Provider, ProviderData, ProviderError, ProviderRequest};
///
/// struct Empty;
///
/// #[async_trait]
/// impl Provider for Empty {
///     fn name(&self) -> &str {
///         "empty"
///     }
///
///     async fn get_data(&self, request: &ProviderRequest) -> Result<ProviderData, ProviderError> {
///         let name = request.params.id.clone();
///         Ok(ProviderData { metadata: Metadata { name, ..Metadata::default() }, ..ProviderData::default() })
///     }
/// }
/// ```
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The provider's name: its URL namespace and the first part of its cache keys.
    fn name(&self) -> &str;

    /// How the provider is registered: `:host` and `:id` route parameters, version, extra
    /// routes. Default: no `:host`, with `:id`, no extra routes.
    fn registration(&self) -> Registration {
        Registration::new(self.name())
    }

    /// Fetches the data for `request` as GeoJSON with a `metadata` object (required).
    ///
    /// # Errors
    ///
    /// A [`ProviderError`] whose status the server answers with.
    async fn get_data(&self, request: &ProviderRequest) -> Result<ProviderData, ProviderError>;

    /// The features as a stream, for data too large to hold in memory. Default: `get_data`,
    /// streamed.
    ///
    /// # Errors
    ///
    /// As [`Provider::get_data`].
    async fn get_stream(&self, request: &ProviderRequest) -> Result<ProviderStream, ProviderError> {
        Ok(ProviderStream::from_data(self.get_data(request).await?))
    }

    /// `true` when [`Provider::get_stream`] is the way to read this provider's data (sources
    /// too large to hold in memory): outputs that stream then skip the data cache. Default:
    /// `false`, so outputs read through the cached `get_data`.
    fn prefers_stream(&self) -> bool {
        false
    }

    /// The key `get_data` results are cached under. Default: the provider name and the route
    /// parameters `host`, `id` and `layer` that are present, joined with `::`, as Koop's
    /// `createKey` does. Override to add query parameters that change the data.
    fn create_key(&self, request: &ProviderRequest) -> String {
        default_key(self.name(), request)
    }

    /// Checks that the caller may make `request`; called before every `get_data`. Default:
    /// everyone may.
    ///
    /// # Errors
    ///
    /// [`ProviderError::Unauthorized`] (no or expired token) or [`ProviderError::Forbidden`].
    async fn authorize(&self, _request: &ProviderRequest) -> Result<(), ProviderError> {
        Ok(())
    }

    /// Whether the provider issues tokens ([`Provider::authenticate`]); outputs offer
    /// `generateToken` only then. Default: no.
    fn authenticates(&self) -> bool {
        false
    }

    /// Validates credentials and issues a token. Default: not supported.
    ///
    /// # Errors
    ///
    /// [`ProviderError::Unauthorized`] for bad credentials; [`ProviderError::NotSupported`].
    async fn authenticate(&self, _credentials: &Credentials) -> Result<Token, ProviderError> {
        Err(ProviderError::not_supported(format!(
            "the {} provider does not issue tokens",
            self.name()
        )))
    }
}

/// Koop's default cache key: `name::host::id::layer`, leaving out absent parameters.
pub fn default_key(name: &str, request: &ProviderRequest) -> String {
    let params = &request.params;
    std::iter::once(name)
        .chain(params.host.as_deref())
        .chain(params.id.as_deref())
        .chain(params.layer.as_deref())
        .collect::<Vec<_>>()
        .join("::")
}
