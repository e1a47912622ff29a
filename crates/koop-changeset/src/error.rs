//! The errors of a changeset build.

use std::path::PathBuf;

/// Why a new version could not be built from a changeset. Every variant means the build was
/// abandoned before anything was published: the caller falls back to a full export.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A changeset page could not be fetched or read.
    #[error("could not read the changeset of layer {layer_id}: {source}")]
    Api {
        /// The layer.
        layer_id: u64,
        /// The request's error.
        #[source]
        source: koop_api::Error,
    },
    /// The previous version's GeoPackage could not be copied into staging, or the result synced.
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// SQLite failed on the staging copy.
    #[error("SQLite failed on {} while {action}: {source}", path.display())]
    Sqlite {
        /// What was being done.
        action: &'static str,
        /// The GeoPackage.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The GeoPackage is not one the changeset can be applied to (no feature table, a primary
    /// key column missing, 3D geometries, …).
    #[error("the cached GeoPackage of layer {layer_id} cannot take a changeset: {reason}")]
    Unsupported {
        /// The layer.
        layer_id: u64,
        /// Why.
        reason: String,
    },
    /// A changeset row disagrees with the cached version (an UPDATE or DELETE of a feature it
    /// does not hold, an INSERT of one it holds, an unknown `__change__`, a value of the wrong
    /// shape).
    #[error("the changeset of layer {layer_id} does not fit the cached version: {reason}")]
    Mismatch {
        /// The layer.
        layer_id: u64,
        /// What did not fit.
        reason: String,
    },
    /// The built GeoPackage failed SQLite's `quick_check`.
    #[error("the GeoPackage built for layer {layer_id} failed SQLite's check: {report}")]
    Corrupt {
        /// The layer.
        layer_id: u64,
        /// The first lines of the check's report.
        report: String,
    },
    /// The changeset did not end within the page limit.
    #[error(
        "the changeset of layer {layer_id} did not end after {pages} pages; export the layer in full"
    )]
    TooManyPages {
        /// The layer.
        layer_id: u64,
        /// Pages read.
        pages: u64,
    },
    /// The build was cancelled.
    #[error("the changeset build of layer {layer_id} was interrupted")]
    Interrupted {
        /// The layer.
        layer_id: u64,
    },
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
