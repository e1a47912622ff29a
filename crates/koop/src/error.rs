//! The error type of the koop facade.

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong getting a layer. The wrapped errors already name the layer and
/// the domain, so they are shown as they are.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Talking to Koordinates failed.
    #[error(transparent)]
    Api(#[from] koop_api::Error),

    /// The export job failed.
    #[error(transparent)]
    Export(#[from] koop_export::Error),

    /// The cache failed.
    #[error(transparent)]
    Cache(#[from] koop_cache::Error),

    /// Offline, and the layer is not in the cache.
    #[error(
        "layer {layer_id} from {domain} is not in the cache at {cache}, and koop is offline; fetch it once online first"
    )]
    NotCached {
        /// Koordinates domain.
        domain: koop_types::Domain,
        /// Layer id.
        layer_id: u64,
        /// The cache root.
        cache: String,
    },

    /// A request that needs the network was made in offline mode.
    #[error("{what} needs the network, and koop is offline")]
    Offline {
        /// What was asked for.
        what: String,
    },

    /// The layer details name no version, so there is nothing to file the data under.
    #[error("layer {layer_id} on {domain} has no version; it may be a draft or not a layer")]
    NoVersion {
        /// Koordinates domain.
        domain: koop_types::Domain,
        /// Layer id.
        layer_id: u64,
    },

    /// The layer's data changed on the server while every attempt was exporting it.
    #[error(
        "layer {layer_id} on {domain} got new data during each of {attempts} exports; try again when it stops changing"
    )]
    VersionKeptChanging {
        /// Koordinates domain.
        domain: koop_types::Domain,
        /// Layer id.
        layer_id: u64,
        /// Exports attempted.
        attempts: u32,
    },

    /// The layer is of a kind the fetch policy does not allow (a raster asked of a feature
    /// server, say); nothing was exported.
    #[error(
        "layer {layer_id} on {domain} is a {kind} layer, which is not served here; nothing was exported"
    )]
    KindNotAllowed {
        /// Koordinates domain.
        domain: koop_types::Domain,
        /// Layer id.
        layer_id: u64,
        /// Its kind.
        kind: String,
    },

    /// Interrupted (Ctrl-C) before any layer was fetched.
    #[error("interrupted while {what}; nothing was fetched")]
    Interrupted {
        /// What was going on.
        what: String,
    },

    /// The shared cache on object storage failed for a layer.
    #[error("layer {layer_id}: {source}")]
    Shared {
        /// The layer.
        layer_id: u64,
        /// The store's error (names the store, never its credentials).
        #[source]
        source: koop_store::Error,
    },

    /// A background task failed (a panic in a blocking cache operation).
    #[error("an internal task failed: {0}")]
    Task(String),
}
