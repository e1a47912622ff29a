//! Mirroring many layers: concurrency bounds, duplicates, failures, cache hits first.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Result;
use futures::StreamExt;
use koop::{ExportOptions, FetchOutcome, LayerEvent, MirrorOptions, MirrorSummary, Quiet};
use koop_testkit::{TestLayer, TestServer, TestServerConfig, data};

use crate::koop;

#[tokio::test]
async fn a_mirror_fetches_each_layer_once_and_failures_do_not_stop_it() -> Result<()> {
    let server = TestServer::start().await?;
    let dir = tempfile::tempdir()?;
    let koop = koop(&server, dir.path(), ExportOptions::default())?;
    let ids = [1001, 1002, 1001, 1003, 1007, 424_242, 1002];

    let mut summary = MirrorSummary::default();
    let mut seen = Vec::new();
    let mut results = koop.mirror(ids, MirrorOptions::default(), &Quiet);
    while let Some(result) = results.next().await {
        seen.push(result.layer_id);
        summary.add(result);
    }
    drop(results);
    seen.sort_unstable();
    assert_eq!(
        seen,
        [1001, 1002, 1003, 1007, 424_242],
        "duplicates are fetched once"
    );
    assert_eq!(summary.downloaded, 3);
    assert!(summary.bytes_downloaded > 0);
    let mut failed: Vec<u64> = summary.failed.iter().map(|(id, _)| *id).collect();
    failed.sort_unstable();
    assert_eq!(failed, [1007, 424_242]);
    assert_eq!(server.counters().exports_created, 3);

    let mut again = MirrorSummary::default();
    let mut results = koop.mirror(ids, MirrorOptions::default(), &Quiet);
    while let Some(result) = results.next().await {
        again.add(result);
    }
    assert_eq!(
        (again.cached, again.downloaded, again.failed.len()),
        (3, 0, 2)
    );
    assert_eq!(server.counters().exports_created, 3);
    Ok(())
}

#[tokio::test]
async fn cache_hits_do_not_wait_behind_exports() -> Result<()> {
    let config = TestServerConfig {
        layers: vec![
            TestLayer::vector(31, "Slow", data::NZ_ISLANDS_GPKG)
                .with_latency(Duration::from_secs(3)),
            TestLayer::vector(32, "Slow too", data::NZ_ISLANDS_GPKG)
                .with_latency(Duration::from_secs(3)),
            TestLayer::vector(33, "Cached", data::NZ_ISLANDS_GPKG),
        ],
        ..TestServerConfig::default()
    };
    let server = TestServer::start_with(config).await?;
    let dir = tempfile::tempdir()?;
    let koop = koop(&server, dir.path(), ExportOptions::default())?;
    koop.get_layer(33).await?;

    let options = MirrorOptions {
        lookups: 4,
        exports: 1,
        downloads: 1,
    };
    let mut results = koop.mirror([31, 32, 33], options, &Quiet);
    let first = results.next().await.expect("a result");
    assert_eq!(first.layer_id, 33);
    assert_eq!(first.result?.outcome, FetchOutcome::Cached);
    assert!(
        first.elapsed < Duration::from_secs(1),
        "{:?}",
        first.elapsed
    );
    let rest: Vec<_> = results.collect().await;
    assert!(rest.iter().all(|result| result.result.is_ok()));
    Ok(())
}

#[tokio::test]
async fn exports_in_flight_stay_within_the_bound() -> Result<()> {
    let layers = (41..=46)
        .map(|id| {
            TestLayer::vector(id, &format!("Layer {id}"), data::NZ_ISLANDS_GPKG)
                .with_latency(Duration::from_millis(600))
        })
        .collect();
    let server = TestServer::start_with(TestServerConfig {
        layers,
        ..TestServerConfig::default()
    })
    .await?;
    let dir = tempfile::tempdir()?;
    let koop = koop(&server, dir.path(), ExportOptions::default())?;

    let in_flight = AtomicUsize::new(0);
    let most = AtomicUsize::new(0);
    let queued = Mutex::new(Vec::new());
    let observer = |layer_id: u64, event: LayerEvent| match event {
        LayerEvent::Created { .. } => {
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
        }
        LayerEvent::Complete { .. } => {
            in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        LayerEvent::QueuedForExport => queued.lock().expect("lock").push(layer_id),
        _ => {}
    };
    let options = MirrorOptions {
        lookups: 16,
        exports: 2,
        downloads: 2,
    };
    let results: Vec<_> = koop.mirror(41..=46, options, &observer).collect().await;
    assert!(results.iter().all(|result| result.result.is_ok()));
    assert_eq!(
        most.load(Ordering::SeqCst),
        2,
        "two exports overlap, never three"
    );
    assert_eq!(
        queued.lock().expect("lock").len(),
        4,
        "the other four waited for a slot"
    );
    Ok(())
}
