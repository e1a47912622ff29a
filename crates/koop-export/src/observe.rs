//! What fetching a layer reports as it goes: one event type and one observer trait for every
//! stage, from the layer details through the export job to the file on disk.

/// How a layer was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchOutcome {
    /// The version was in the cache: one API request, no export.
    Cached,
    /// The version changed only metadata; the cached data of its data version was linked under
    /// its name: no export, no download.
    Linked,
    /// Exported and downloaded.
    Downloaded,
    /// Answered from the cache alone, without any request (offline).
    Offline,
    /// The site's catalog reported no change since the last complete mirror run: answered from
    /// the cache without a request of its own.
    Unchanged,
    /// Built from the cached previous version plus the WFS changeset between the two: no
    /// export, only the changed features downloaded.
    Changeset,
    /// Downloaded from the team's shared cache on object storage, where another machine put it:
    /// no export.
    Shared,
}

impl FetchOutcome {
    /// `cached`, `linked`, `downloaded`, `offline`, `unchanged` or `changeset`, as `koop mirror`
    /// prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cached => "cached",
            Self::Linked => "linked",
            Self::Downloaded => "downloaded",
            Self::Offline => "offline",
            Self::Changeset => "changeset",
            Self::Shared => "shared",
            Self::Unchanged => "unchanged",
        }
    }
}

/// What happens while a layer is fetched, for progress bars and logs. The export job
/// ([`crate::Exporter`]) reports the steps from `Validating` to `Extracting`; the `koop` facade
/// reports the others.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum LayerEvent {
    /// The layer details arrived.
    Details {
        /// Title.
        title: String,
        /// Kind (`vector`, `grid`, …).
        kind: String,
        /// Current version.
        version_id: u64,
    },
    /// Another task or process is fetching the same data; waiting for it.
    WaitingForOtherFetch,
    /// Waiting for a free export slot (mirroring).
    QueuedForExport,
    /// Waiting for a free download slot (mirroring).
    QueuedForDownload,
    /// Checking the request with `exports/validate/`.
    Validating,
    /// The export exists on the server.
    Created {
        /// Export id.
        export_id: u64,
        /// Estimated ZIP size in bytes, from the validation, when the server gave one.
        size_estimate: Option<u64>,
    },
    /// A koop export of the same layer version made earlier (by a run that was interrupted) is
    /// used instead of creating one.
    Reused {
        /// Export id.
        export_id: u64,
    },
    /// The server is building the export.
    Processing {
        /// Export id.
        export_id: u64,
        /// Server-side progress 0–1, when given.
        progress: Option<f64>,
    },
    /// The export is ready to download.
    Complete {
        /// Export id.
        export_id: u64,
        /// Estimated ZIP size, in bytes.
        size_estimate: Option<u64>,
    },
    /// Bytes of the ZIP received so far (reported about every MiB).
    Downloading {
        /// Bytes received.
        received: u64,
        /// Size of the ZIP in bytes, when known (`Content-Length`).
        total: Option<u64>,
    },
    /// The download broke and resumes from `offset` with a Range request.
    Resuming {
        /// Bytes already on disk.
        offset: u64,
        /// Resume attempt, from 1.
        attempt: u32,
    },
    /// Writing a member of the ZIP.
    Extracting {
        /// The member's name.
        entry: String,
    },
    /// Done.
    Finished {
        /// How.
        outcome: FetchOutcome,
        /// Bytes of the layer on disk.
        bytes: u64,
    },
}

/// Receives [`LayerEvent`]s. Implemented for every `Fn(u64, LayerEvent)` (layer id, event).
pub trait Observer: Send + Sync {
    /// Called for each event of layer `layer_id`. Must be quick: it runs on the fetch's task.
    fn layer_event(&self, layer_id: u64, event: LayerEvent);
}

impl<F: Fn(u64, LayerEvent) + Send + Sync> Observer for F {
    fn layer_event(&self, layer_id: u64, event: LayerEvent) {
        self(layer_id, event);
    }
}

/// An [`Observer`] that ignores every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet;

impl Observer for Quiet {
    fn layer_event(&self, _layer_id: u64, _event: LayerEvent) {}
}
