//! Command-line arguments.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

/// Get Koordinates layers onto disk exactly once, and keep them there.
///
/// Vector layers and tables arrive as GeoPackage, raster and grid layers as GeoTIFF, cached by
/// layer version under `KOOPCACHE_DIR`: a second request for an unchanged layer costs one API call.
#[derive(Debug, Parser)]
#[command(name = "koop", version, max_term_width = 100)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options of every command.
#[derive(Debug, Clone, Args)]
pub(crate) struct Global {
    /// The Koordinates site, e.g. data.linz.govt.nz [default: ttgroup.koordinates.com]. The
    /// API key is sent to these sites only: a layer URL on another site is refused. Repeat to
    /// allow several; bare ids are on the first. `http://host:port` uses plain HTTP (loopback
    /// test servers).
    #[arg(long, global = true, value_name = "DOMAIN", action = ArgAction::Append)]
    pub(crate) domain: Vec<koop::Domain>,

    /// The environment variable holding the API key.
    #[arg(
        long,
        global = true,
        value_name = "NAME",
        default_value = "KOORDINATES_API_KEY"
    )]
    pub(crate) api_key_env: String,

    /// The cache directory [default: `KOOPCACHE_DIR`, then the platform cache directory]; or a
    /// cache shared on object storage (`s3://bucket/prefix`, `gs://…`, `az://…`), configured
    /// from the standard variables (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT`, …), read through a
    /// local copy (`--local-cache-dir`).
    #[arg(long, global = true, value_name = "DIR|URL")]
    pub(crate) cache_dir: Option<PathBuf>,

    /// With a shared cache: the local directory its entries are read through [default:
    /// `KOOP_LOCAL_CACHE_DIR`, then the platform cache directory's `koop-shared`].
    #[arg(long, global = true, value_name = "DIR")]
    pub(crate) local_cache_dir: Option<PathBuf>,

    /// With a shared cache: how long this machine's lease on a layer it exports lasts without
    /// renewal (renewed every third of it), in seconds; how long a crash delays the others.
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 60)]
    pub(crate) lease_seconds: u64,

    /// The CRS to export in, as an EPSG code (2193 or EPSG:2193).
    #[arg(long, global = true, value_name = "EPSG", default_value_t = koop::DEFAULT_CRS)]
    pub(crate) crs: koop::Epsg,

    /// Answer from the cache alone: no request, no API key needed.
    #[arg(long, global = true)]
    pub(crate) offline: bool,

    /// Export a changed layer in full even where its cached previous version and Koordinates'
    /// WFS changeset could build the new version.
    #[arg(long, global = true)]
    pub(crate) no_changesets: bool,

    /// More log output (-v: info, -vv: debug, -vvv: trace).
    #[arg(short, long, global = true, action = ArgAction::Count, conflicts_with = "quiet")]
    pub(crate) verbose: u8,

    /// Only errors; no progress bars.
    #[arg(short, long, global = true)]
    pub(crate) quiet: bool,
}

/// What `koop serve` serves, to whom, and within which bounds.
#[derive(Debug, Clone, Args)]
pub(crate) struct ServeArgs {
    /// The address to listen on (port 0 picks a free one).
    #[arg(long, value_name = "ADDRESS", default_value = "127.0.0.1:8080")]
    pub(crate) bind: String,
    /// Layers that may be fetched from Koordinates when a client asks for them: ids or layer
    /// URLs separated by commas (`--layers 50772,51571`), or `@FILE` with one a line (`#`
    /// comments). Repeatable. Layers in the cache are served without being listed.
    #[arg(long, value_name = "IDS|@FILE")]
    pub(crate) layers: Vec<String>,
    /// Fetch any layer of the `--domain` sites that a client asks for: anyone who reaches the
    /// server can then spend exports of the API key.
    #[arg(long)]
    pub(crate) any_layer: bool,
    /// Exports in flight at once for the whole server.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub(crate) max_exports: usize,
    /// Longest time a request is worked on (seconds or 10s, 2m); a query still running then is
    /// interrupted and answered with an error.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub(crate) request_timeout: std::time::Duration,
    /// Browser origins allowed to read answers (CORS), e.g. `https://www.arcgis.com`;
    /// repeatable. Default: any origin. `none` sends no CORS headers.
    #[arg(long, value_name = "ORIGIN")]
    pub(crate) cors_origin: Vec<String>,
    /// How long browsers and proxies may keep an answer before asking again (`Cache-Control:
    /// max-age`); answers carry an ETag either way.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub(crate) cache_max_age: std::time::Duration,
    /// Require a token for every layer: users and their password hashes in a JSON file
    /// (`{"users": [{"username": "analyst", "password_hash": "$argon2id$…"}],
    /// "token_minutes": 60}`; hashes from `koop hash-password`). Clients get tokens from
    /// `POST …/rest/generateToken`.
    #[arg(long, value_name = "FILE")]
    pub(crate) auth_file: Option<PathBuf>,
    /// Longest time a client may take to send a request's headers, and to stay idle between
    /// requests on a kept-alive connection.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub(crate) header_timeout: std::time::Duration,
    /// Longest time a response may wait for a client to read before the connection is dropped.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub(crate) write_timeout: std::time::Duration,
    /// Most connections open at once; more are closed as they arrive.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub(crate) max_connections: usize,
    /// Most GeoJSON responses streaming at once; a request past it waits for one to end until
    /// its deadline, then gets 503 (clients that stop reading hold their stream until
    /// `--write-timeout` drops them).
    #[arg(long, value_name = "N", default_value_t = koop_server::DEFAULT_MAX_STREAMS)]
    pub(crate) max_streams: usize,
}

/// How long an export may take.
#[derive(Debug, Clone, Copy, Args)]
pub(crate) struct Deadline {
    /// Longest time an export may stay processing, in seconds (`600`) or with a unit (`90s`,
    /// `10m`, `2h`); past it the export is cancelled on the server and the layer fails.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub(crate) timeout: std::time::Duration,
}

/// Reads `600`, `600s`, `10m`, `2h` or `1.5h` as a duration.
pub(crate) fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let scale = match unit.trim() {
        "ms" => 0.001,
        "s" | "sec" | "secs" => 1.0,
        "m" | "min" | "mins" => 60.0,
        "h" | "hour" | "hours" => 3600.0,
        other => return Err(format!("{other:?} is not a unit: use s, m or h (e.g. 10m)")),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: give seconds (600) or 10m, 2h"))?;
    let seconds = value * scale;
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= 366.0 * 86_400.0) {
        return Err(format!("{text:?}: give a duration between 1 ms and a year"));
    }
    Ok(std::time::Duration::from_secs_f64(seconds))
}

/// How many things run at once.
#[derive(Debug, Args)]
pub(crate) struct Concurrency {
    /// Exports in flight on the server at once.
    #[arg(short = 'j', long, value_name = "N", default_value_t = 8)]
    pub(crate) jobs: usize,

    /// Downloads (and extractions) at once.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub(crate) downloads: usize,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Fetch layers and print their paths, one per line, in the order given.
    Get {
        /// Layer ids or layer URLs.
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
        #[command(flatten)]
        concurrency: Concurrency,
        #[command(flatten)]
        deadline: Deadline,
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Mirror a list of layers: ids or URLs, one per line, `#` comments.
    Mirror {
        /// Read the list from FILE (`-` for standard input).
        #[arg(long, value_name = "FILE")]
        from: Option<PathBuf>,
        /// Layer ids or layer URLs, besides the list.
        #[arg(value_name = "ID")]
        ids: Vec<String>,
        #[command(flatten)]
        concurrency: Concurrency,
        #[command(flatten)]
        deadline: Deadline,
        /// Print one JSON document at the end instead of a line per layer.
        #[arg(long)]
        json: bool,
        /// Ask each layer for its details instead of asking the site's catalog once what
        /// changed since the last complete run.
        #[arg(long)]
        every_layer: bool,
        /// Show what the run would do for each layer (unchanged, cached, link, export) without
        /// exporting or writing anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show a layer's details and what the cache holds of it.
    Info {
        /// Layer id or layer URL.
        #[arg(value_name = "ID")]
        id: String,
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Print or write a layer's Dublin Core metadata as OAI_DC XML.
    Metadata {
        /// Layer id or layer URL.
        #[arg(value_name = "ID")]
        id: String,
        /// Write the XML to PATH (atomically) instead of printing it.
        #[arg(long, value_name = "PATH")]
        xml: Option<PathBuf>,
        /// Set an element, e.g. `--set creator="Toitū Te Whenua"` (repeatable).
        #[arg(long = "set", value_name = "ELEMENT=VALUE")]
        set: Vec<String>,
        /// Start from a template built from the layer's details instead of its DC document.
        #[arg(long)]
        template: bool,
        /// Set `source` to the current versions of these layers.
        #[arg(long, value_name = "ID", num_args = 1..)]
        source_latest: Vec<String>,
    },
    /// Inspect and maintain the cache. With a shared cache (a store URL as `--cache-dir` or
    /// `KOOPCACHE_DIR`), the shared one; `--local` for this machine's copy of it.
    Cache {
        /// With a shared cache: act on this machine's local copy instead of the bucket.
        #[arg(long, global = true)]
        local: bool,
        #[command(subcommand)]
        action: CacheAction,
    },
    /// Serve layers of the `--domain` sites to GIS clients: GeoJSON at
    /// `/koordinates/{domain}/{layer}/geojson` and an ArcGIS FeatureServer at
    /// `/koordinates/rest/services/{domain}/{layer}/FeatureServer`, fetched once into the cache.
    ///
    /// Only the layers named by `--layers` are fetched on demand (and whatever the cache
    /// holds is served from it); `--any-layer` lets any client make koop export any layer.
    Serve {
        #[command(flatten)]
        options: ServeArgs,
        #[command(flatten)]
        deadline: Deadline,
    },
    /// Mirror the built-in demo layers from an in-process fake Koordinates site, twice: the
    /// second run is served from the cache.
    Demo {
        /// Then serve the demo's cache (as `koop serve` does) and print the address of its
        /// page of layers and maps.
        #[arg(long)]
        serve: bool,
        #[command(flatten)]
        options: ServeArgs,
    },
    /// Read a password from standard input and print its argon2id hash, for the users file of
    /// `koop serve --auth-file` (`{"users": [{"username": …, "password_hash": …}]}`).
    HashPassword,
    /// Run the built-in fake Koordinates site (koop-testkit) until stopped, for tests outside
    /// Rust (the Python package's pytest suite): writes `{"domain", "api_key", "base_url",
    /// "layers"}` as JSON to `--ready-file` once it listens. Not for production.
    #[command(hide = true)]
    TestkitServer {
        /// Write the JSON here (atomically) once the server listens; else print it on stdout.
        #[arg(long, value_name = "PATH")]
        ready_file: Option<std::path::PathBuf>,
        /// Every layer's export takes this long, in milliseconds (default: each demo layer's
        /// own latency, 0.5–3 s).
        #[arg(long, value_name = "MS")]
        export_latency_ms: Option<u64>,
        /// Make every export anew, as when the layer changed, instead of answering one identical
        /// to a recent complete export as complete at once (as Koordinates does).
        #[arg(long)]
        fresh_exports: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum CacheAction {
    /// List the cached layers.
    Ls {
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Re-hash every cached file; corrupt entries are quarantined (exit 1 when any).
    Verify {
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Remove superseded versions, old entries and leftovers of interrupted fetches.
    Gc {
        /// Keep this many newest versions of each layer.
        #[arg(long, value_name = "N")]
        keep: Option<usize>,
        /// Remove entries fetched more than DAYS days ago.
        #[arg(long, value_name = "DAYS")]
        older_than_days: Option<u64>,
        /// Show what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Print the cache directory.
    Path,
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_read_with_or_without_a_unit() {
        assert_eq!(parse_duration("600"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["", "ten", "5d", "-3", "0", "1e30"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
