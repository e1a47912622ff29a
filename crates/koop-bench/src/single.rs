//! `single`: one cold `koop get` of a 1 MB layer whose export takes 0.5, 1, 2, 5 or 30 s, with
//! and without `progress` in the export's responses.
//!
//! Figure: koop's wall time ÷ (export latency + download time), where the download time is what
//! `curl` + `unzip` take for the same ZIP in the same run. Goal ≤ 1.10 for every latency ≥ 1 s.
//! Anchor, measured next to it: the original Python package's schedule (layer details, create the
//! export, sleep 1 s, look every second until complete, download, extract) as a script of `curl`
//! calls; koop must never be slower than it.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use koop_testkit::{ExportFaults, GeneratedContent, TestLayer, TestServer, TestServerConfig};

use crate::common::{MB, curl_and_unzip, download_url, run_koop, verdict};

const LAYER: u64 = 30_000;

/// The original Python package's loop, as a script of curl calls: the layer details, create the
/// export, sleep 1 s, look every second until it is complete, download the ZIP, unzip it.
/// Returns its wall time.
async fn one_second_poller(server: &TestServer, work: &Path) -> Result<Duration> {
    const SCRIPT: &str = r#"
set -eu
auth="Authorization: key $KEY"
item=$(curl -sf -H "$auth" "${API}layers/${LAYER}/" | sed -n 's/.*"url": *"\([^"]*\/layers\/[0-9]*\/\)".*/\1/p' | head -n 1)
body="{\"crs\":\"EPSG:2193\",\"formats\":{\"vector\":\"application/x-ogc-gpkg\"},\"items\":[{\"item\":\"$item\"}]}"
id=$(curl -sf -H "$auth" -H "Content-Type: application/json" -d "$body" "${API}exports/" | sed -n 's/^{"id": *\([0-9]*\).*/\1/p')
while :; do
  sleep 1
  download=$(curl -sf -H "$auth" "${API}exports/${id}/" | sed -n 's/.*"download_url": *"\([^"]*\)".*/\1/p')
  [ -n "$download" ] && break
done
curl -sf -H "$auth" -o "$OUT/poller.zip" "$download"
unzip -q -o "$OUT/poller.zip" -d "$OUT/poller-unzipped"
"#;
    let started = Instant::now();
    let status = tokio::process::Command::new("bash")
        .args(["-c", SCRIPT])
        .env("KEY", server.api_key())
        .env("API", server.api_url())
        .env("LAYER", LAYER.to_string())
        .env("OUT", work)
        .status()
        .await
        .context("running the one-second poller (bash, curl, unzip)")?;
    let took = started.elapsed();
    ensure!(status.success(), "the one-second poller failed");
    tokio::fs::remove_file(work.join("poller.zip")).await?;
    tokio::fs::remove_dir_all(work.join("poller-unzipped")).await?;
    Ok(took)
}

/// Prints the requests of a koop run, when `KOOP_BENCH_TIMELINE` is set.
fn tracing_line(timeline: &[String]) {
    if std::env::var_os("KOOP_BENCH_TIMELINE").is_some() {
        println!("    requests: {}", timeline.join(" | "));
    }
}

/// One latency and progress setting: (koop's ratio, koop's wall, the poller's wall).
async fn measure(
    server: &TestServer,
    work: &Path,
    latency: Duration,
    progress: bool,
    transfer: Duration,
) -> Result<(f64, Duration, Duration)> {
    server.set_export_latency(LAYER, latency);
    server.set_export_faults(
        LAYER,
        ExportFaults {
            hide_progress: !progress,
            ..ExportFaults::default()
        },
    );
    // A new version each time: a cold get, which neither a cached entry nor an earlier export of
    // the same version (koop finds its own by name) can answer.
    server
        .bump_version(LAYER, koop_testkit::BumpKind::Data)
        .context("a version bump")?;
    // The test server builds a version's ZIP on its first download: build it now, as a real
    // server has it ready when the export completes (and as the poller below finds it).
    server.export_zip(LAYER).await?;
    let cache = tempfile::tempdir_in(work)?;
    let before = server.requests().len();
    let koop = run_koop(server, cache.path(), &["get", &LAYER.to_string()]).await?;
    let requests = server.requests();
    if let Some(first) = requests.get(before) {
        let timeline: Vec<String> = requests[before..]
            .iter()
            .map(|request| {
                let path = request.path.split("/v1.x/").nth(1).unwrap_or(&request.path);
                format!(
                    "{:.0}ms {} {path}",
                    request.at.saturating_sub(first.at).as_secs_f64() * 1000.0,
                    request.method
                )
            })
            .collect();
        tracing_line(&timeline);
    }
    let poller = one_second_poller(server, work).await?;
    let ratio = koop.wall.as_secs_f64() / (latency + transfer).as_secs_f64();
    Ok((ratio, koop.wall, poller))
}

pub(crate) async fn single(work: &Path) -> Result<bool> {
    println!("\nsingle: one cold `koop get` of a 1 MB layer; export latencies 0.5–30 s");
    let server = TestServer::start_with(TestServerConfig {
        layers: vec![TestLayer::generated(
            LAYER,
            "Single layer",
            GeneratedContent::Polygons { target_bytes: MB },
        )],
        // Every run makes its own export, as a cold get of a new version does.
        reuse_identical_exports: false,
        ..TestServerConfig::default()
    })
    .await?;
    server.set_export_latency(LAYER, Duration::ZERO);
    let url = download_url(&server, LAYER).await?;
    let mut transfers = Vec::new();
    for _ in 0..5 {
        transfers.push(curl_and_unzip(&server, &url, work).await?);
    }
    transfers.sort();
    let transfer = transfers[transfers.len() / 2];
    println!(
        "  download + extract alone (curl + unzip, median of 5): {:.0} ms",
        transfer.as_secs_f64() * 1000.0
    );
    println!(
        "  {:>8} {:>9} {:>9} {:>9} {:>7} {:>9}",
        "latency", "progress", "koop", "1 s poll", "ratio", "verdict"
    );
    let mut all_ok = true;
    for latency in [0.5, 1.0, 2.0, 5.0, 30.0] {
        for progress in [true, false] {
            let latency = Duration::from_secs_f64(latency);
            let (ratio, koop, poller) = measure(&server, work, latency, progress, transfer).await?;
            let goal = latency < Duration::from_secs(1) || (ratio <= 1.10 && koop <= poller);
            all_ok &= goal;
            println!(
                "  {:>7.1}s {:>9} {:>8.2}s {:>8.2}s {ratio:>7.2} {:>9}",
                latency.as_secs_f64(),
                if progress { "yes" } else { "no" },
                koop.as_secs_f64(),
                poller.as_secs_f64(),
                if latency < Duration::from_secs(1) {
                    "-"
                } else {
                    verdict(goal)
                }
            );
        }
    }
    println!(
        "  goal: ratio = koop ÷ (latency + download) ≤ 1.10 and koop ≤ the 1 s poller, for every latency ≥ 1 s"
    );
    Ok(all_ok)
}
