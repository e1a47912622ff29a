//! `koop demo`: the main job on the built-in demo.
//!
//! Starts koop-testkit in this process (a fake Koordinates site with real Natural Earth layers:
//! vector, grid, a raster of four tiles, a table, generated points; exports take 0.5–3 s) and
//! mirrors its layers into the cache twice. The first run exports and downloads every layer,
//! the second is served from the cache.

use std::time::Instant;

use anyhow::{Context, Result};
use futures::StreamExt;
use koop::{FetchOutcome, Koop, KoordinatesConnection, LayerResult, MirrorOptions};
use koop_testkit::{Counters, DEMO_LAYER_IDS, TestServer};

use crate::Status;
use crate::cli::Global;
use crate::one_line;
use crate::progress::{Reporter, human_bytes};

async fn run(koop: &Koop, bars: bool) -> (Vec<LayerResult>, std::time::Duration) {
    let started = Instant::now();
    let reporter = Reporter::new(DEMO_LAYER_IDS.len(), bars);
    let mut results: Vec<LayerResult> = koop
        .mirror(DEMO_LAYER_IDS, MirrorOptions::default(), &reporter)
        .collect()
        .await;
    results.sort_by_key(|result| result.layer_id);
    (results, started.elapsed())
}

fn report(results: &[LayerResult]) -> usize {
    let mut failed = 0;
    for result in results {
        match &result.result {
            Ok(fetched) => {
                let manifest = &fetched.entry.manifest;
                let file = fetched
                    .path
                    .file_name()
                    .map(|name| name.to_string_lossy().into_owned())
                    .unwrap_or_default();
                println!(
                    "  {:>5}  {:<10}  {:>7}  {:>9}  {:<7}  {}  →  {file}",
                    result.layer_id,
                    format!("{:?}", fetched.outcome).to_lowercase(),
                    format!("{:.0} ms", result.elapsed.as_secs_f64() * 1000.0),
                    human_bytes(manifest.size),
                    manifest.kind,
                    manifest.title,
                );
            }
            Err(error) => {
                failed += 1;
                println!("  {:>5}  failed: {}", result.layer_id, one_line(error));
            }
        }
    }
    failed
}

fn delta(after: Counters, before: Counters) -> String {
    format!(
        "{} API requests, {} exports, {} downloads",
        after.api_requests - before.api_requests,
        after.exports_created - before.exports_created,
        after.downloads - before.downloads
    )
}

/// `koop demo`.
pub(crate) async fn demo(global: &Global, bars: bool) -> Result<Status> {
    let server = TestServer::start()
        .await
        .context("cannot start the demo server")?;
    let temporary;
    let cache_dir = if let Some(dir) = &global.cache_dir {
        dir.clone()
    } else {
        temporary = tempfile::Builder::new().prefix("koop-demo-").tempdir()?;
        temporary.path().to_owned()
    };
    let connection = KoordinatesConnection::builder()
        .api_key(Some(server.api_key().to_owned()))
        .domain(server.domain())
        .plain_http(true)
        .build()?;
    let koop = Koop::builder()
        .connection(connection)
        .cache_dir(Some(cache_dir.clone()))
        .crs(global.crs)
        .build()?;
    println!(
        "koop demo: a fake Koordinates site at {} serving {} layers (vector, grid, a raster of 4 tiles, a table)",
        server.base_url(),
        DEMO_LAYER_IDS.len()
    );
    println!(
        "cache: {}{}",
        cache_dir.display(),
        if global.cache_dir.is_some() {
            ""
        } else {
            " (removed at exit; pass --cache-dir DIR to keep it)"
        }
    );

    let before = server.counters();
    println!(
        "\nfirst run: exports take 0.5–3 s on the server; {} layers overlap",
        DEMO_LAYER_IDS.len()
    );
    let (first, took) = run(&koop, bars).await;
    let mut failed = report(&first);
    let after_first = server.counters();
    println!(
        "  {} layers in {:.1} s: {}",
        first.len(),
        took.as_secs_f64(),
        delta(after_first, before)
    );

    println!("\nsecond run: the same layers, unchanged on the server");
    let (second, took) = run(&koop, bars).await;
    failed += report(&second);
    let after_second = server.counters();
    let cached = second
        .iter()
        .filter(|result| {
            result
                .result
                .as_ref()
                .is_ok_and(|fetched| fetched.outcome == FetchOutcome::Cached)
        })
        .count();
    println!(
        "  {} layers in {:.0} ms: {cached} from the cache, {}",
        second.len(),
        took.as_secs_f64() * 1000.0,
        delta(after_second, after_first)
    );
    if failed == 0 && cached == DEMO_LAYER_IDS.len() {
        println!("\nevery layer is on disk, fetched exactly once.");
        Ok(Status::Done)
    } else {
        println!(
            "\n{failed} failure(s); {cached} of {} served from the cache on the second run",
            DEMO_LAYER_IDS.len()
        );
        Ok(Status::SomeFailed)
    }
}
