//! An axum server for Koop-style providers.
//!
//! [`ServerBuilder`] takes any number of [`koop_provider::Provider`]s and output plugins
//! ([`Output`]) and builds one router, as Koop does: every output contributes its routes under
//! every provider's namespace and parameters (`/{namespace}/:host/:id/…`, or where its
//! `$namespace` / `$providerParams` placeholders put them, or at an absolute path), and every
//! provider's extra routes are added under its namespace. `GET /status` answers
//! `{"success": true}`.
//!
//! The GeoJSON output ([`GeoJsonOutput`], always registered) serves
//! `/{namespace}/{providerParams}/geojson` as `application/geo+json`, streamed from the
//! provider's `get_stream` in bounded memory. Errors are JSON with their HTTP status:
//! `{"error": {"code": 404, "message": "…"}}`; the server keeps serving.
//!
//! Safe on a network: every request carries a deadline and a bounded body, answers are
//! compressed as the client asks, CORS lets web maps on other origins read them, and the log
//! never shows a token. [`serve`] runs the router with bounded header reads, idle connections,
//! stalled writes and connection counts ([`ServeOptions`]); `axum::serve` works too, without
//! those bounds.
//!
//! # Example
//!
//! ```no_run
//! use async_trait::async_trait;
//! use koop_provider::{Metadata, Provider, ProviderData, ProviderError, ProviderRequest};
//!
//! struct Empty;
//!
//! #[async_trait]
//! impl Provider for Empty {
//!     fn name(&self) -> &str {
//!         "empty"
//!     }
//!
//!     async fn get_data(&self, _request: &ProviderRequest) -> Result<ProviderData, ProviderError> {
//!         Ok(ProviderData { metadata: Metadata::default(), ..ProviderData::default() })
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let router = koop_server::ServerBuilder::default().provider(Empty).build()?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! // GET /empty/anything/geojson
//! koop_server::serve(listener, router, koop_server::ServeOptions::default(), async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await?;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub use geojson::{DEFAULT_MAX_STREAMS, GeoJsonOutput};
pub use layers::redacted_uri;
pub use output::{Output, OutputContext, OutputHandler, OutputRoute, error_response, log_failure};
pub use serve::{ServeOptions, serve};
pub use server::{Cors, ServerBuilder, ServerError};

mod geojson;
mod layers;
mod output;
mod serve;
mod server;
