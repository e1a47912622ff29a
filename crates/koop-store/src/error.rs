//! The errors of the shared store.

/// What can go wrong with a shared cache. Messages name the store's location (never its
/// credentials) and the object.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The location is not a store koop can open.
    #[error("cannot open the shared cache {location}: {reason}")]
    Location {
        /// The location, without credentials.
        location: String,
        /// Why.
        reason: String,
    },
    /// A request to the store failed (after `object_store`'s own retries).
    #[error("the shared cache {location} failed to {action} {object}: {source}")]
    Store {
        /// The store's location.
        location: String,
        /// What was being done.
        action: &'static str,
        /// The object.
        object: String,
        /// The cause (boxed: `object_store`'s error is large).
        #[source]
        source: Box<object_store::Error>,
    },
    /// A local file could not be read or written.
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An object's bytes do not match the manifest (a truncated or altered upload): the entry is
    /// not used.
    #[error("{object} in the shared cache {location} does not match its manifest: {reason}")]
    Corrupt {
        /// The store's location.
        location: String,
        /// The object.
        object: String,
        /// What differs.
        reason: String,
    },
    /// A manifest or lease object could not be read.
    #[error("{object} in the shared cache {location} is not readable: {reason}")]
    Unreadable {
        /// The store's location.
        location: String,
        /// The object.
        object: String,
        /// Why.
        reason: String,
    },
    /// The lease was taken over by another owner (it had expired) or removed: whatever this
    /// owner built must not be published.
    #[error("the lease on {name} in the shared cache {location} was lost{}", owner.as_ref().map(|owner| format!(" to {owner}")).unwrap_or_default())]
    LeaseLost {
        /// The store's location.
        location: String,
        /// The data name the lease was for.
        name: String,
        /// Its new owner, when known.
        owner: Option<String>,
    },
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
