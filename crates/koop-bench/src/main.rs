//! koop's benchmarks: the release `koop` binary against koop-testkit on loopback.
//!
//! Each figure is printed as a ratio to its limit, so it holds on a noisy machine:
//!
//! - **mirror**: 100 layers of ~5 MB with export latencies spread over 1–3 s; koop's wall time ÷
//!   the ideal schedule's lower bound, `max(longest latency, sum of latencies ÷ jobs) + bytes ÷
//!   single-stream loopback throughput` (goal ≤ 1.25).
//! - **large**: one 1 GB layer; `curl` download + `unzip` time ÷ koop's time (goal ≥ 0.9), and
//!   koop's peak RSS (goal ≤ 64 MiB), also at a quarter of the size to show it does not grow.
//! - **hit**: `koop get` on a cached layer: requests made (goal 1; offline 0) and wall time.
//! - **geojson**: `koop serve` streaming a layer of 1 million points as GeoJSON: time, features
//!   per second, and the server's peak RSS (goal < 100 MiB).
//!
//! - **featureserver**: `koop serve` and the reference Koop (npm, when node is there) answering
//!   the requests of QGIS and of paging clients on a layer of 1 million points, measured by oha:
//!   QGIS's `returnIdsOnly` (goal ≤ 0.3 s) and batch of 100 `objectIds` (goal p50 ≤ 2 ms), the
//!   issue's paged attribute and envelope queries (goal ≥ 150 × Koop at concurrency 1), and the
//!   server's peak RSS (goal ≤ 100 MiB).
//!
//! - **abuse**: `koop serve` for 60 s under slowloris, non-reading clients, random layer ids and
//!   hostile queries at once: its peak RSS (goal ≤ 150 MiB), `/status` p99 (goal ≤ 50 ms) and
//!   a count query's latency meanwhile, and that it keeps running.
//!
//! - **python**: the original Python package (koop 0.0.7 from PyPI) and koop-rs running the same
//!   loop of `get_layer_from_id` over 10 layers with 1–3 s exports (goal: never slower per
//!   layer, ≥ 1.15× over the loop), and `koop.mirror` of them (goal ≥ 5× the original's loop).
//!
//! - **nightly**: 300 listed layers of ~5 MB, 10 of them bumped by 0.2 % of their features: the
//!   bytes, requests and wall time of koop's run (catalog, changesets) next to a run that
//!   re-exports the 10 (goal ≤ 2 % of its bytes), and every rebuilt GeoPackage identical in
//!   content to the full export of its version.
//!
//! - **shared**: 30 layers, 3 `koop mirror` processes on one bucket (moto's S3 server) at once:
//!   exports created (goal: 30), wall time against one process alone, peak RSS per process.
//!
//! Run with `cargo xtask bench [mirror|large|hit|single|geojson|featureserver|abuse|python|nightly|shared]`, which builds `koop` and this harness in
//! release mode; `koop` is found next to this executable.

mod abuse;
mod common;
mod featureserver;
mod fetch;
mod nightly;
mod python;
mod serve;
mod shared;
mod single;

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;

#[derive(Parser)]
#[command(about = "koop benchmarks against koop-testkit on loopback")]
pub(crate) struct Args {
    /// Which benchmarks: mirror, large, hit, single, geojson, featureserver, abuse, python,
    /// nightly, shared (default: all).
    pub(crate) benches: Vec<String>,
    /// Layers mirrored.
    #[arg(long, default_value_t = 100)]
    pub(crate) layers: usize,
    /// Layers listed in the nightly benchmark.
    #[arg(long, default_value_t = 300)]
    pub(crate) nightly_layers: usize,
    /// Size of each mirrored layer, in MB.
    #[arg(long, default_value_t = 5)]
    pub(crate) layer_mb: u64,
    /// Exports in flight during the mirror (koop's default is 8).
    #[arg(long, default_value_t = 8)]
    pub(crate) jobs: usize,
    /// Size of the large layer, in MB.
    #[arg(long, default_value_t = 1024)]
    pub(crate) large_mb: u64,
    /// Points in the GeoJSON benchmark's layer.
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) points: u64,
    /// Seconds each FeatureServer query runs at each concurrency.
    #[arg(long, default_value_t = 5)]
    pub(crate) seconds: u64,
    /// Seconds the abuse benchmark attacks the server.
    #[arg(long, default_value_t = 60)]
    pub(crate) abuse_seconds: u64,
    /// featureserver: after setting up, print the layer's URLs and keep `koop serve` (and the
    /// reference Koop) running this many seconds before measuring, for profilers and load
    /// generators of your own.
    #[arg(long, default_value_t = 0)]
    pub(crate) hold: u64,
    /// Where to put the data (default: a temporary directory).
    #[arg(long)]
    pub(crate) work_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let temporary = tempfile::Builder::new().prefix("koop-bench-").tempdir()?;
    let work = args
        .work_dir
        .clone()
        .unwrap_or_else(|| temporary.path().to_owned());
    std::fs::create_dir_all(&work)?;
    let wanted =
        |name: &str| args.benches.is_empty() || args.benches.iter().any(|bench| bench == name);
    println!(
        "koop benchmarks: release build against koop-testkit on loopback, {} CPU(s)",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    let mut results = Vec::new();
    if wanted("mirror") {
        results.push(("mirror", fetch::mirror(&args, &work).await?));
    }
    if wanted("large") {
        results.push(("large", fetch::large(&args, &work).await?));
    }
    if wanted("hit") {
        results.push(("hit", fetch::hit(&work).await?));
    }
    if wanted("geojson") {
        results.push(("geojson", serve::geojson(&args, &work).await?));
    }
    if wanted("featureserver") {
        results.push((
            "featureserver",
            featureserver::featureserver(&args, &work).await?,
        ));
    }
    if wanted("abuse") {
        results.push(("abuse", abuse::abuse(&args, &work).await?));
    }
    if wanted("python") {
        results.push(("python", python::python(&work).await?));
    }
    if wanted("nightly") {
        results.push(("nightly", nightly::nightly(&args, &work).await?));
    }
    if wanted("shared") {
        results.push(("shared", shared::shared(&args, &work).await?));
    }
    if wanted("single") {
        results.push(("single", single::single(&work).await?));
    }
    let missed: Vec<&str> = results
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| *name)
        .collect();
    println!();
    if missed.is_empty() {
        println!("every goal met");
    } else {
        println!("goals missed: {}", missed.join(", "));
    }
    Ok(())
}
