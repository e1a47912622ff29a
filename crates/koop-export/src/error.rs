//! The error type of koop-export.

use std::path::PathBuf;
use std::time::Duration;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can end an export job. Each variant names the layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A request to Koordinates failed (auth, rate limit, server error, …).
    #[error("exporting layer {layer_id} failed talking to Koordinates")]
    Api {
        /// Layer id.
        layer_id: u64,
        /// The client's error.
        #[source]
        source: koop_api::Error,
    },

    /// The layer's kind cannot be delivered as GeoPackage or GeoTIFF.
    #[error(
        "layer {layer_id} is a {kind} layer; koop exports vector layers and tables as GeoPackage and raster and grid layers as GeoTIFF"
    )]
    UnsupportedKind {
        /// Layer id.
        layer_id: u64,
        /// Its kind, as the API names it.
        kind: String,
    },

    /// The layer does not offer the format its kind needs.
    #[error("layer {layer_id} does not offer {format} exports (it offers: {})", offered.join(", "))]
    FormatNotOffered {
        /// Layer id.
        layer_id: u64,
        /// The MIME type koop needs.
        format: String,
        /// The MIME types the layer offers.
        offered: Vec<String>,
    },

    /// The server says the export request is invalid.
    #[error("Koordinates will not export layer {layer_id}: {}; change the CRS or extent", reasons.join("; "))]
    InvalidExport {
        /// Layer id.
        layer_id: u64,
        /// The reasons it gave.
        reasons: Vec<String>,
    },

    /// The export ended without a file: `error`, `cancelled` or `gone`.
    #[error(
        "the export of layer {layer_id} (export {export_id}) ended {state} on the server; try again, and if it keeps failing ask the site's support"
    )]
    ExportFailed {
        /// Layer id.
        layer_id: u64,
        /// Export id.
        export_id: u64,
        /// The final state.
        state: koop_api::ExportState,
    },

    /// The export did not complete before the deadline; it was cancelled on the server.
    #[error(
        "the export of layer {layer_id} (export {export_id}) was still processing after {}s, the deadline; it was cancelled on the server; allow more time for very large layers (koop --timeout)",
        waited.as_secs()
    )]
    DeadlineExceeded {
        /// Layer id.
        layer_id: u64,
        /// Export id.
        export_id: u64,
        /// How long it was waited for.
        waited: Duration,
    },

    /// The job was interrupted (Ctrl-C, SIGTERM, or its caller's cancellation). An export this
    /// process created and that was still processing was cancelled on the server; a download was
    /// stopped with its bytes kept on disk for the next run to resume.
    #[error("layer {layer_id}: interrupted while {stage}")]
    Interrupted {
        /// Layer id.
        layer_id: u64,
        /// What was going on: `exporting`, `downloading`, `waiting for another fetch`, …
        stage: &'static str,
        /// The export, when there was one.
        export_id: Option<u64>,
    },

    /// The download kept breaking; every resume failed.
    #[error(
        "downloading the export of layer {layer_id} (export {export_id}) broke {attempts} time(s) and could not be resumed; check the network and try again"
    )]
    Download {
        /// Layer id.
        layer_id: u64,
        /// Export id.
        export_id: u64,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        #[source]
        source: koop_api::Error,
    },

    /// The download ended before the size the server announced.
    #[error(
        "the export of layer {layer_id} (export {export_id}) arrived with {received} of {expected} bytes"
    )]
    IncompleteDownload {
        /// Layer id.
        layer_id: u64,
        /// Export id.
        export_id: u64,
        /// Bytes announced.
        expected: u64,
        /// Bytes received.
        received: u64,
    },

    /// A file operation failed (a full disk shows up here).
    #[error("exporting layer {layer_id}: {action} {path} failed")]
    Io {
        /// Layer id.
        layer_id: u64,
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },

    /// The export ZIP is damaged: truncated, not a ZIP, a CRC mismatch, or malformed.
    #[error("the export ZIP of layer {layer_id} is damaged: {reason}; download it again")]
    CorruptZip {
        /// Layer id.
        layer_id: u64,
        /// What is wrong.
        reason: String,
    },

    /// The ZIP holds an entry that would be written outside the target: an absolute path, a `..`
    /// component, a drive letter. The whole archive is refused; nothing is written.
    #[error(
        "the export ZIP of layer {layer_id} holds an unsafe entry {name:?}; refused, nothing was written"
    )]
    UnsafeEntry {
        /// Layer id.
        layer_id: u64,
        /// The entry's name.
        name: String,
    },

    /// The ZIP holds no layer file of the expected format.
    #[error("the export ZIP of layer {layer_id} holds no .{extension} file; its members: {}", members.join(", "))]
    NoLayerFile {
        /// Layer id.
        layer_id: u64,
        /// The extension looked for.
        extension: String,
        /// Every member of the ZIP.
        members: Vec<String>,
    },

    /// The ZIP holds several GeoPackages; koop cannot tell which is the layer.
    #[error("the export ZIP of layer {layer_id} holds several GeoPackages: {}", members.join(", "))]
    SeveralLayerFiles {
        /// Layer id.
        layer_id: u64,
        /// The GeoPackage members.
        members: Vec<String>,
    },

    /// A member is larger than the configured limit (a decompression bomb, or a limit to raise).
    #[error("{name} in the export of layer {layer_id} is larger than the {limit}-byte limit")]
    TooLarge {
        /// Layer id.
        layer_id: u64,
        /// The member.
        name: String,
        /// The limit, in bytes.
        limit: u64,
    },

    /// The tiles of a raster export could not be combined into a mosaic.
    #[error("the tiles of layer {layer_id} cannot be combined into a mosaic: {tile}: {reason}")]
    Mosaic {
        /// Layer id.
        layer_id: u64,
        /// The tile.
        tile: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(
        layer_id: u64,
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            layer_id,
            action,
            path,
            source,
        }
    }
}
