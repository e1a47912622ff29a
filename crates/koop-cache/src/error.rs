//! The error type of koop-cache.

use std::path::PathBuf;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the cache. Each variant names the path it concerns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No root was given, `KOOPCACHE_DIR` is unset, and the platform has no cache directory.
    #[error(
        "no cache directory: set KOOPCACHE_DIR or pass a cache directory (the platform has no default cache location)"
    )]
    NoRoot,

    /// The root cannot be created or written.
    #[error(
        "the cache directory {path} cannot be created or written; choose another with KOOPCACHE_DIR or --cache-dir"
    )]
    RootNotWritable {
        /// The root.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },

    /// A file operation in the cache failed (a full disk shows up here).
    #[error("cache operation failed: {action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },

    /// A manifest could not be written.
    #[error("could not encode the manifest for {entry}")]
    Manifest {
        /// The entry.
        entry: String,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },

    /// A staged layer is not where the publisher said.
    #[error("the staged layer {path} is missing; nothing was published")]
    StagedMissing {
        /// The missing path.
        path: PathBuf,
    },
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}
