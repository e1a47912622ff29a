//! The Koop provider model in Rust.
//!
//! Koop ("add support for any remote API or datasource") lets a *provider* turn a data source
//! into GeoJSON with a `metadata` object, and *outputs* (GeoJSON, FeatureServer) serve any
//! provider. This crate is that model:
//!
//! - [`Provider`]: `get_data` (required), `get_stream`, `create_key`, `authorize`,
//!   `authenticate`, and a [`Registration`] (name = URL namespace, `hosts`, `disable_id_param`,
//!   extra routes, version). Anyone can implement it for any source.
//! - [`ProviderRequest`]: route parameters (`host`, `id`, `layer`, `method`) and query
//!   parameters, independent of the HTTP framework.
//! - [`ProviderData`] / [`Metadata`]: GeoJSON features plus name, description, extent,
//!   displayField, geometryType, idField, maxRecordCount, limitExceeded, timeInfo and fields, and
//!   `ttl`, `filtersApplied`, `crs`.
//! - [`ProviderStream`]: the same, the features read one by one; a provider reading a table may
//!   give them as [`Rows`] (values under property names given once, no map per feature), which
//!   [`ProviderStream::take_features`] turns into features for outputs that want them.
//! - [`DataCache`] and [`get_data_cached`]: the cache in front of `get_data`, keyed by
//!   `create_key`; entries expire after their `ttl` (Koop's own memory cache never expires them)
//!   and the cache is bounded. Pass-through providers (no `ttl`) are not cached.
//! - [`GeoJsonValidator`]: RFC 7946 checks outside production, each problem logged once.
//! - [`ProviderError`]: what failed, one line for the client, with the cause's whole chain kept
//!   for the server's log.
//!
//! The crate is the model alone: it knows no data source, no HTTP framework and no query
//! language. The Geoservices query model is `koop-geoservices`; the Koordinates provider is
//! `koop-provider-koordinates`.
//!
//! # Example
//!
//! ```
//! use async_trait::async_trait;
//! use koop_provider::{
//!     DataCache, Field, FieldType, GeoJsonValidator, Metadata, Provider, ProviderData,
//!     ProviderError, ProviderRequest, get_data_cached,
//! };
//!
//! struct Cities;
//!
//! #[async_trait]
//! impl Provider for Cities {
//!     fn name(&self) -> &str {
//!         "cities"
//!     }
//!
//!     async fn get_data(&self, _request: &ProviderRequest) -> Result<ProviderData, ProviderError> {
//!         let feature: geojson::Feature = serde_json::from_str(
//!             r#"{"type":"Feature","geometry":{"type":"Point","coordinates":[174.78,-41.29]},"properties":{"name":"Wellington"}}"#,
//!         ).unwrap();
//!         Ok(ProviderData {
//!             features: vec![feature],
//!             metadata: Metadata { fields: vec![Field::new("name", FieldType::String)], ..Metadata::default() },
//!             ttl: Some(std::time::Duration::from_secs(3600)),
//!             ..ProviderData::default()
//!         })
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), ProviderError> {
//! let (cache, validator) = (DataCache::default(), GeoJsonValidator::new(true));
//! let request = ProviderRequest::default();
//! let data = get_data_cached(&Cities, &request, &cache, &validator).await?;
//! assert_eq!(data.features.len(), 1);
//! assert_eq!(cache.len(), 1, "kept for its ttl");
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub use cache::{DataCache, get_data_cached};
pub use error::{Cause, ProviderError};
pub use infer::{infer_fields, is_iso_date};
pub use koop_types::Epsg;
pub use model::{
    Credentials, Field, FieldType, FiltersApplied, GeometryType, Metadata, Method, ProviderData,
    ProviderRequest, ProviderRoute, ProviderStream, QueryAnswer, Registration, RouteHandler,
    RouteParams, Row, Rows, Token,
};
pub use provider::{Provider, default_key};
pub use validate::{GeoJsonValidator, feature_problems};

mod cache;
mod error;
mod infer;
mod model;
mod provider;
mod validate;
