//! Fault injection. Every fault is opt-in; a server without faults behaves like a healthy
//! Koordinates site.

/// Faults applied to API requests (`/services/api/…`), counted across the whole server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFaults {
    /// Answer the next API requests with 429 and `Retry-After`.
    pub rate_limit: Option<RateLimitFault>,
    /// Answer chosen API requests with a 5xx status.
    pub server_error: Option<ServerErrorFault>,
    /// Answer every request to `exports/` with 401 `Invalid API key.`, as for a key that expired
    /// (or was revoked) after the layer details were read.
    pub refuse_key_for_exports: bool,
    /// How the catalog (`GET data/`) treats its `updated_at.after` filter.
    pub catalog_filter: CatalogFilter,
}

/// How the catalog (`GET data/`) treats `updated_at.after`, as sites do and do not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum CatalogFilter {
    /// Lists only the items updated after the given time (the default).
    #[default]
    Honoured,
    /// Ignores the parameter and lists every item, as a site without the filter would.
    Ignored,
    /// Answers 400 to a request that names it.
    Refused,
}

/// 429 Too Many Requests for the next `count` API requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitFault {
    /// How many requests are refused (`u32::MAX` for a storm that never ends).
    pub count: u32,
    /// The `Retry-After` sent, in seconds.
    pub retry_after_secs: u64,
}

/// A 5xx answer on the k-th API request after the fault is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerErrorFault {
    /// The first request answered with `status` (1 = the next request).
    pub on_request: u32,
    /// How many consecutive requests from there get `status`.
    pub times: u32,
    /// The status, e.g. 500 or 503.
    pub status: u16,
}

/// How an export ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExportOutcome {
    /// `processing` for the layer's latency, then `complete`.
    #[default]
    Complete,
    /// `processing`, then `error`.
    Error,
    /// `processing`, then `cancelled`.
    Cancelled,
    /// `processing` forever, progress stuck below 1.
    NeverComplete,
}

/// What is wrong with the ZIP an export delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ZipFault {
    /// A good ZIP.
    #[default]
    None,
    /// The ZIP cut in half, served as if complete.
    Truncated,
    /// An extra entry named `../../koop-escape.txt`.
    PathTraversal,
    /// An extra entry named `/tmp/koop-absolute.txt`.
    AbsolutePath,
    /// A ZIP with no entries.
    Empty,
    /// A byte of the layer file's compressed data flipped (CRC or inflate failure).
    Corrupted,
    /// Only the metadata and text files, no layer file.
    NoLayerFile,
    /// The layer file twice, under two names.
    TwoLayerFiles,
}

/// Faults of one layer's exports and downloads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportFaults {
    /// How its exports end.
    pub outcome: ExportOutcome,
    /// Drop the connection after some bytes of a download.
    pub drop_download: Option<DropDownloadFault>,
    /// What is wrong with its ZIP.
    pub zip: ZipFault,
    /// Answer the download with 302 to the second listener ("object storage", another origin).
    pub redirect_download: bool,
    /// Answer `POST exports/` with 201, an empty body and a `Location` header (older servers).
    pub create_with_location_only: bool,
    /// Send `progress: null` while the export is processing, as servers that do not estimate it.
    pub hide_progress: bool,
    /// Send downloads at about this many bytes per second (a slow link), in 64 KiB chunks.
    pub throttle_download: Option<u64>,
}

/// Faults of one layer's WFS changeset service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangesetFaults {
    /// Leave the first INSERT row out of every changeset: its rows then disagree with the new
    /// version's feature count.
    pub leave_out_insert: bool,
    /// Answer a page after the first with 503 this many times (`u32::MAX`: always).
    pub server_error_pages: u32,
    /// Features per page at most (default [`DEFAULT_CHANGESET_PAGE_CAP`]), whatever `count` asks.
    pub page_cap: Option<usize>,
    /// The details' `change_summary` reports a field added (a schema change).
    pub report_schema_change: bool,
    /// The details list no primary key fields.
    pub hide_primary_key: bool,
    /// Wait this long before answering each page (a slow service).
    pub page_delay: Option<std::time::Duration>,
}

/// Features per changeset page the server returns at most, unless a layer's faults say
/// otherwise: fewer than clients usually ask for, as real servers cap pages.
pub const DEFAULT_CHANGESET_PAGE_CAP: usize = 250;

/// Drop the connection after `after_bytes` bytes of the next `times` downloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropDownloadFault {
    /// Bytes of the body sent before the connection is dropped.
    pub after_bytes: u64,
    /// How many downloads are cut.
    pub times: u32,
}
