//! Getting layers: many at once (`mirror`), one large one (`large`), and a cached one (`hit`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use koop_testkit::{GeneratedContent, TestLayer, TestServer, TestServerConfig};

use crate::Args;
use crate::common::{
    MB, curl_and_unzip, download_url, latencies_1_to_3_s, mb, run_koop, single_stream_throughput,
    vector_site, verdict,
};

pub(crate) async fn mirror(args: &Args, work: &Path) -> Result<bool> {
    println!(
        "\nmirror: {} layers of ~{} MB, export latencies 1–3 s, --jobs {}",
        args.layers, args.layer_mb, args.jobs
    );
    let sample = work.join("mirror-layer.gpkg");
    GeneratedContent::Polygons {
        target_bytes: args.layer_mb * MB,
    }
    .generate(&sample, 7)?;
    let bytes = tokio::fs::read(&sample).await?;
    let count = args.layers.max(1);
    let latencies = latencies_1_to_3_s(count);
    // No reuse of identical exports: the throughput measurement below exports every layer first.
    let server = vector_site(10_000, count as u64, "Mirror layer", &bytes).await?;
    let ids: Vec<u64> = (0..count as u64).map(|index| 10_000 + index).collect();
    let mut zip_bytes = 0;
    for id in &ids {
        zip_bytes += std::fs::metadata(server.export_zip(*id).await?)?.len();
    }
    // Single-stream loopback throughput: every layer's ZIP, one after another, on one connection.
    let mut urls = Vec::new();
    for id in &ids {
        urls.push(download_url(&server, *id).await?);
    }
    let throughput = single_stream_throughput(&server, &urls).await?;
    for (id, latency) in ids.iter().zip(&latencies) {
        server.set_export_latency(*id, *latency);
    }

    let list = work.join("mirror.txt");
    std::fs::write(
        &list,
        ids.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
    )?;
    let cache = tempfile::tempdir_in(work)?;
    let jobs = args.jobs.to_string();
    let measured = run_koop(
        &server,
        cache.path(),
        &[
            "mirror",
            "--jobs",
            &jobs,
            "--from",
            list.to_str().context("utf-8")?,
        ],
    )
    .await?;
    ensure!(
        measured.stdout.lines().count() == count,
        "every layer was mirrored"
    );

    let longest = latencies
        .iter()
        .max()
        .copied()
        .unwrap_or_default()
        .as_secs_f64();
    let sum: f64 = latencies.iter().map(Duration::as_secs_f64).sum();
    let transfer = zip_bytes as f64 / throughput;
    let ideal = longest.max(sum / args.jobs.max(1) as f64) + transfer;
    let ratio = measured.wall.as_secs_f64() / ideal;
    println!(
        "  koop mirror {:.1} s; ideal ≥ {ideal:.1} s = max({longest:.1} s, {sum:.0} s ÷ {}) + {:.0} MB ÷ {:.0} MB/s",
        measured.wall.as_secs_f64(),
        args.jobs,
        mb(zip_bytes),
        throughput / MB as f64
    );
    println!(
        "  ratio {ratio:.2} (goal ≤ 1.25)  {}",
        verdict(ratio <= 1.25)
    );
    println!("  peak RSS of koop {:.0} MiB", mb(measured.peak_rss));
    Ok(ratio <= 1.25)
}

pub(crate) async fn large(args: &Args, work: &Path) -> Result<bool> {
    println!("\nlarge: one layer of {} MB", args.large_mb);
    let mut sizes = vec![(args.large_mb / 4).max(16), args.large_mb];
    sizes.dedup();
    let mut all_ok = true;
    let mut peaks = Vec::new();
    for (index, size) in sizes.iter().enumerate() {
        let layer_id = 20_000 + index as u64;
        let server = TestServer::start_with(TestServerConfig {
            layers: vec![TestLayer::generated(
                layer_id,
                &format!("Large layer {size} MB"),
                GeneratedContent::Polygons {
                    target_bytes: size * MB,
                },
            )],
            ..TestServerConfig::default()
        })
        .await?;
        let generating = Instant::now();
        let zip = server.export_zip(layer_id).await?;
        let zip_len = std::fs::metadata(&zip)?.len();
        println!(
            "  {size} MB layer: ZIP of {:.0} MB ready in {:.0} s",
            mb(zip_len),
            generating.elapsed().as_secs_f64()
        );
        let url = download_url(&server, layer_id).await?;
        let baseline = curl_and_unzip(&server, &url, work).await?;
        let cache = tempfile::tempdir_in(work)?;
        let measured = run_koop(&server, cache.path(), &["get", &layer_id.to_string()]).await?;
        let path = PathBuf::from(measured.stdout.trim());
        let layer_bytes = std::fs::metadata(&path)?.len();
        let ratio = baseline.as_secs_f64() / measured.wall.as_secs_f64();
        println!(
            "    koop get {:.1} s ({:.0} MB/s of layer), curl + unzip {:.1} s; ratio {ratio:.2} (goal ≥ 0.9)  {}",
            measured.wall.as_secs_f64(),
            mb(layer_bytes) / measured.wall.as_secs_f64(),
            baseline.as_secs_f64(),
            verdict(ratio >= 0.9)
        );
        println!(
            "    peak RSS of koop {:.1} MiB (goal ≤ 64 MiB)  {}",
            mb(measured.peak_rss),
            verdict(measured.peak_rss <= 64 * MB)
        );
        peaks.push((*size, measured.peak_rss));
        if *size == args.large_mb {
            all_ok &= ratio >= 0.9 && measured.peak_rss <= 64 * MB;
        }
    }
    if let [(small, small_peak), (big, big_peak)] = peaks[..] {
        println!(
            "  peak RSS at {small} MB: {:.1} MiB, at {big} MB: {:.1} MiB: memory does not grow with the layer",
            mb(small_peak),
            mb(big_peak)
        );
    }
    Ok(all_ok)
}

pub(crate) async fn hit(work: &Path) -> Result<bool> {
    println!("\ncache hit: koop get on a cached layer");
    let server = TestServer::start().await?;
    let cache = tempfile::tempdir_in(work)?;
    run_koop(&server, cache.path(), &["get", "1002"]).await?;
    let before = server.counters();
    let online = run_koop(&server, cache.path(), &["get", "1002"]).await?;
    let after = server.counters();
    let offline = run_koop(&server, cache.path(), &["--offline", "get", "1002"]).await?;
    let offline_requests = server.counters().api_requests - after.api_requests;
    let requests = after.api_requests - before.api_requests;
    let exports = after.exports_created - before.exports_created;
    println!(
        "  koop get: {requests} request(s), {exports} export(s), {:.0} ms (goal 1 request)  {}",
        online.wall.as_secs_f64() * 1000.0,
        verdict(requests == 1 && exports == 0)
    );
    println!(
        "  koop --offline get: {offline_requests} request(s), {:.0} ms (goal 0)  {}",
        offline.wall.as_secs_f64() * 1000.0,
        verdict(offline_requests == 0)
    );
    Ok(requests == 1 && exports == 0 && offline_requests == 0)
}
