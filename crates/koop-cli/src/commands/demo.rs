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
use crate::cli::{Deadline, Global, ServeArgs};
use crate::one_line;
use crate::progress::{Reporter, human_bytes, out};
use crate::signals::Interrupt;

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
                // 50 columns before the title: the line fits 80 columns.
                let mut title: String = manifest.title.chars().take(30).collect();
                if manifest.title.chars().count() > 30 {
                    title.pop();
                    title.push('…');
                }
                out(format!(
                    "  {:>5}  {:<10}  {:>7}  {:>9}  {:<7}  {title}",
                    result.layer_id,
                    format!("{:?}", fetched.outcome).to_lowercase(),
                    format!("{:.0} ms", result.elapsed.as_secs_f64() * 1000.0),
                    human_bytes(manifest.size),
                    manifest.kind,
                ));
            }
            Err(error) => {
                failed += 1;
                out(format!(
                    "  {:>5}  failed: {}",
                    result.layer_id,
                    one_line(error)
                ));
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

/// `koop demo`. Ctrl-C stops it at once: the bars are cleared and what was fetched stays in the
/// cache.
///
/// With `serve`, the demo's site and cache are then served as `koop serve` serves them.
pub(crate) async fn demo(global: &Global, bars: bool, serve: Option<&ServeArgs>) -> Result<Status> {
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
    let interrupt = Interrupt::install();
    let token = interrupt.token();
    let status = tokio::select! {
        status = run_demo(global, bars, &server, &cache_dir) => status?,
        () = token.cancelled() => {
            out("koop demo: interrupted; what is on disk stays valid");
            return Ok(Status::Interrupted(interrupt.exit_code().unwrap_or(130)));
        }
    };
    drop(interrupt);
    let Some(args) = serve else {
        return Ok(status);
    };
    out(format!(
        "\nserving the demo's cache{}; Ctrl-C stops",
        if global.cache_dir.is_none() {
            " (removed when it stops)"
        } else {
            ""
        }
    ));
    let mut global = global.clone();
    global.cache_dir = Some(cache_dir.clone());
    let site = server.site();
    let listed = DEMO_LAYER_IDS
        .iter()
        .map(|id| (site.clone(), *id))
        .collect();
    super::serve::run(
        &global,
        args,
        Deadline {
            timeout: std::time::Duration::from_secs(3600),
        },
        vec![site],
        listed,
        Some(server.api_key().to_owned()),
    )
    .await
}

async fn run_demo(
    global: &Global,
    bars: bool,
    server: &TestServer,
    cache_dir: &std::path::Path,
) -> Result<Status> {
    let cache_dir = cache_dir.to_owned();
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
    out(format!(
        "koop demo: a fake Koordinates site at {}, serving {} layers",
        server.base_url(),
        DEMO_LAYER_IDS.len()
    ));
    out("(vector, grid, a raster of 4 tiles, a table)");
    out(format!(
        "cache: {}{}",
        cache_dir.display(),
        if global.cache_dir.is_some() {
            ""
        } else {
            "\n(removed at exit; pass --cache-dir DIR to keep it)"
        }
    ));

    let before = server.counters();
    out(format!(
        "\nfirst run: exports take 0.5–3 s on the server; {} layers overlap",
        DEMO_LAYER_IDS.len()
    ));
    let (first, took) = run(&koop, bars).await;
    let mut failed = report(&first);
    let after_first = server.counters();
    out(format!(
        "  {} layers in {:.1} s: {}",
        first.len(),
        took.as_secs_f64(),
        delta(after_first, before)
    ));

    out("\nsecond run: the same layers, unchanged on the server");
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
    out(format!(
        "  {} layers in {:.0} ms: {cached} from the cache, {}",
        second.len(),
        took.as_secs_f64() * 1000.0,
        delta(after_second, after_first)
    ));
    if failed == 0 && cached == DEMO_LAYER_IDS.len() {
        out("\nevery layer is on disk, fetched exactly once.");
        Ok(Status::Done)
    } else {
        out(format!(
            "\n{failed} failure(s); {cached} of {} served from the cache on the second run",
            DEMO_LAYER_IDS.len()
        ));
        Ok(Status::SomeFailed)
    }
}
