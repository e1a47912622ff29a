//! Typed client for the Koordinates REST API (`/services/api/v1.x/`).
//!
//! [`KoordinatesConnection`] talks to one Koordinates site (data.linz.govt.nz,
//! ttgroup.koordinates.com, …) with one pooled HTTP client. It reads layer and table details,
//! versions and Dublin Core documents, and drives the Exports API: validate, create, poll,
//! cancel, list, and download the ZIP as a stream that can resume at a byte offset.
//!
//! - **Authentication**: `Authorization: key <key>`, the key passed in or read from
//!   `KOORDINATES_API_KEY`. The key is sent only to the connection's own origin: never on a
//!   redirect to another host (the export download's presigned object-storage URL), never in
//!   `Debug`, errors or logs.
//! - **Retries**: 429, 502, 503, 504 and connection failures are retried with exponential backoff
//!   and jitter, honouring `Retry-After` ([`RetryPolicy`]). Creating an export is retried only
//!   where the server cannot have acted.
//! - **Types** decode both API generations (v1 `name` and string CRS; v1.x `title`, CRS object,
//!   `version.data_import`, `data.import_version`), ignore unknown fields and keep unknown enum
//!   values.
//!
//! Limitations: only the read side of layers and the Exports API are covered; publishing,
//! sources and permissions are not.
//!
//! # Example
//!
//! ```no_run
//! use koop_api::{ExportFormat, ExportRequest, KoordinatesConnection, LayerKind};
//!
//! # async fn run() -> koop_api::Result<()> {
//! let connection = KoordinatesConnection::new(None, Some("data.linz.govt.nz"), None)?;
//! let layer = connection.layer_details(50787).await?;
//! println!("{} is a {} layer at version {:?}", layer.title,
//!     layer.kind.as_ref().map_or("?", LayerKind::as_str), layer.version_id());
//!
//! let request = ExportRequest::new(koop_api::Epsg::NZTM2000)
//!     .with_item(&layer.url)
//!     .with_format(&LayerKind::Vector, &ExportFormat::GeoPackage);
//! let export = connection.create_export(&request).await?;
//! println!("export {} is {}", export.id, export.state);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub use catalog::{CatalogChanges, CatalogItem};
pub use changeset::{ChangesetPage, ChangesetQuery};
pub use connection::{
    API_KEY_ENV, ConnectionBuilder, DEFAULT_API_VERSION, DEFAULT_DOMAIN, KoordinatesConnection,
};
pub use download::ExportDownload;
pub use error::{Error, Resource, Result};
pub use export::{
    Delivery, Export, ExportFormat, ExportItem, ExportRequest, ExportState, ExportValidation,
    ValidationItem,
};
pub use koop_types::{Domain, Epsg};
pub use layer::{
    Category, ChangeSummary, Crs, Field, FieldType, GeometryType, Group, ItemId, ItemType,
    LayerData, LayerDetails, LayerKind, LayerVersion, License, Linked, MetadataLinks,
    OfferedFormat, Publisher, SchemaChanges, version_id_from_url,
};
pub use retry::RetryPolicy;

mod calls;
mod catalog;
mod changeset;
mod connection;
mod download;
mod error;
mod export;
mod layer;
mod lenient;
mod retry;
mod string_enum;
