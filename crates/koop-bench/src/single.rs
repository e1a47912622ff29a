//! `single`: one cold `koop get` of a 1 MB layer whose export takes 0.5, 1, 2, 5 or 30 s, with
//! and without `progress` in the export's responses.
//!
//! Figure: koop's wall time ÷ (export latency + download time), where the download time is what
//! `curl` + `unzip` take for the same ZIP in the same run. Goal ≤ 1.10 for every latency ≥ 1 s.
//! Anchor, measured next to it: the original Python package's schedule (layer details, create the
//! export, sleep 1 s, look every second until complete, download, extract), over raw HTTP; koop
//! must never be slower than it.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use koop_testkit::{ExportFaults, GeneratedContent, TestLayer, TestServer, TestServerConfig};
use serde_json::Value;

use crate::common::{MB, curl_and_unzip, download_url, run_koop, verdict};

const LAYER: u64 = 30_000;

/// The Python package's loop over raw HTTP: details, create, sleep 1 s, poll every second,
/// download, unzip. Returns its wall time.
async fn one_second_poller(server: &TestServer, work: &Path) -> Result<Duration> {
    let client = server.raw_client();
    let started = Instant::now();
    let details: Value = client
        .get(&format!("{}layers/{LAYER}/", server.api_url()))
        .await?
        .json()
        .await?;
    let body = serde_json::json!({
        "crs": "EPSG:2193",
        "formats": {"vector": koop_testkit::GEOPACKAGE_MIME},
        "items": [{"item": details["url"]}],
    });
    let created: Value = reqwest::Client::new()
        .post(format!("{}exports/", server.api_url()))
        .header("Authorization", format!("key {}", server.api_key()))
        .json(&body)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let url = format!(
        "{}exports/{}/",
        server.api_url(),
        created["id"].as_u64().context("an export id")?
    );
    let download = loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let export: Value = client.get(&url).await?.json().await?;
        if let Some(download) = export["download_url"].as_str() {
            break download.to_owned();
        }
        ensure!(
            started.elapsed() < Duration::from_secs(120),
            "the export never completed"
        );
    };
    let zip = work.join("poller.zip");
    let bytes = client.get(&download).await?.bytes().await?;
    tokio::fs::write(&zip, &bytes).await?;
    let out = work.join("poller-unzipped");
    let status = tokio::process::Command::new("unzip")
        .args(["-q", "-o"])
        .arg(&zip)
        .arg("-d")
        .arg(&out)
        .status()
        .await
        .context("running unzip")?;
    ensure!(status.success(), "unzip failed");
    let took = started.elapsed();
    tokio::fs::remove_file(&zip).await?;
    tokio::fs::remove_dir_all(&out).await?;
    Ok(took)
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
    let cache = tempfile::tempdir_in(work)?;
    let koop = run_koop(server, cache.path(), &["get", &LAYER.to_string()]).await?;
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
