//! A new version built from the cached previous one plus its WFS changeset, checked feature by
//! feature against a full export of the same version; and every reason to export in full
//! instead, named in the result.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use koop::{ExportOptions, FetchOutcome, FetchedLayer, Koop, Quiet, RetryPolicy};
use koop_testkit::{
    BumpKind, ChangesetFaults, GeneratedContent, TestLayer, TestServer, TestServerConfig,
};
use rusqlite::types::Value;

const POINTS: u64 = 3001;
const TABLE: u64 = 3002;
const PLAIN: u64 = 3003;

async fn site() -> Result<TestServer> {
    Ok(TestServer::start_with(TestServerConfig {
        layers: vec![
            TestLayer::generated(
                POINTS,
                "Changing points",
                GeneratedContent::Points { count: 2000 },
            )
            .with_changesets(),
            TestLayer::generated(
                TABLE,
                "Changing table",
                GeneratedContent::Table { rows: 1500 },
            )
            .with_changesets(),
            TestLayer::generated(
                PLAIN,
                "Points without changesets",
                GeneratedContent::Points { count: 300 },
            ),
        ],
        ..TestServerConfig::default()
    })
    .await?)
}

fn koop_for(server: &TestServer, cache: &Path, changesets: bool) -> Result<Koop> {
    Ok(Koop::builder()
        .connection(crate::connection(server)?)
        .cache_dir(Some(cache.to_owned()))
        .export_options(ExportOptions::default())
        .changesets(changesets)
        .build()?)
}

/// Every row of the GeoPackage's feature table but its FID, ordered by `id`, geometry blobs
/// included.
fn rows(path: &Path) -> Result<Vec<Vec<Value>>> {
    let connection = rusqlite::Connection::open(path)?;
    let table: String = connection.query_row(
        "SELECT table_name FROM gpkg_contents WHERE data_type IN ('features', 'attributes')",
        [],
        |row| row.get(0),
    )?;
    let mut statement = connection.prepare(&format!("SELECT * FROM \"{table}\" ORDER BY id"))?;
    let columns = statement.column_count();
    let names: Vec<String> = statement.column_names().map(str::to_owned).collect();
    let rows = statement
        .query_map([], |row| {
            (0..columns)
                .filter(|&index| names[index] != "fid")
                .map(|index| row.get::<_, Value>(index))
                .collect::<rusqlite::Result<Vec<_>>>()
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// The GeoPackage is sound: SQLite's integrity check, its feature count record, and (for a
/// feature table) an R-tree entry with the right bounds for every feature.
fn check_geopackage(path: &Path) -> Result<u64> {
    let connection = rusqlite::Connection::open(path)?;
    let check: String = connection.query_row("PRAGMA integrity_check", [], |row| row.get(0))?;
    ensure!(check == "ok", "integrity_check: {check}");
    let (table, recorded): (String, i64) = connection.query_row(
        "SELECT table_name, feature_count FROM gpkg_ogr_contents",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    let count: i64 =
        connection.query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |row| {
            row.get(0)
        })?;
    ensure!(
        recorded == count,
        "gpkg_ogr_contents says {recorded}, the table holds {count}"
    );
    let rtree = format!("rtree_{table}_geom");
    let has_rtree: bool = connection.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE name = ?1",
        [&rtree],
        |row| row.get(0),
    )?;
    if has_rtree {
        let indexed: i64 =
            connection.query_row(&format!("SELECT count(*) FROM \"{rtree}\""), [], |row| {
                row.get(0)
            })?;
        ensure!(
            indexed == count,
            "the R-tree holds {indexed} of {count} features"
        );
        // Points: the R-tree box of every feature is its point (read from the WKB after the
        // 8-byte header, as float32-rounded R-tree bounds allow).
        let mut statement = connection.prepare(&format!(
            "SELECT t.geom, r.minx, r.maxx, r.miny, r.maxy FROM \"{table}\" t JOIN \"{rtree}\" r ON r.id = t.fid"
        ))?;
        let mut rows = statement.query([])?;
        let mut joined = 0;
        while let Some(row) = rows.next()? {
            let blob: Vec<u8> = row.get(0)?;
            let x = f64::from_le_bytes(blob[8 + 5..8 + 13].try_into()?);
            let y = f64::from_le_bytes(blob[8 + 13..8 + 21].try_into()?);
            let (min_x, max_x, min_y, max_y): (f64, f64, f64, f64) =
                (row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?);
            ensure!(
                min_x <= x && x <= max_x && min_y <= y && y <= max_y,
                "R-tree box off for ({x}, {y})"
            );
            ensure!(
                max_x - min_x < 1.0 && max_y - min_y < 1.0,
                "R-tree box too large"
            );
            joined += 1;
        }
        ensure!(
            joined == count,
            "{joined} of {count} features joined the R-tree"
        );
    }
    // GDAL reads it and counts the same features.
    let output = Command::new("ogrinfo")
        .args(["-so", "-al"])
        .arg(path)
        .output()?;
    ensure!(
        output.status.success(),
        "ogrinfo failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    ensure!(
        text.contains(&format!("Feature Count: {count}")),
        "ogrinfo does not report {count} features:\n{text}"
    );
    Ok(u64::try_from(count)?)
}

async fn fetch(koop: &Koop, layer_id: u64) -> Result<FetchedLayer> {
    koop.fetch_layer(layer_id, &Quiet)
        .await
        .with_context(|| format!("layer {layer_id}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bumped_layer_is_rebuilt_from_its_changeset_with_the_features_of_a_full_export()
-> Result<()> {
    let server = site().await?;
    let cache = tempfile::tempdir()?;
    let koop = koop_for(&server, cache.path(), true)?;
    let mut before = Vec::new();
    for layer_id in [POINTS, TABLE] {
        let first = fetch(&koop, layer_id).await?;
        ensure!(first.outcome == FetchOutcome::Downloaded);
        let reason = first.full_export_reason.clone().unwrap_or_default();
        ensure!(
            reason.contains("no earlier version"),
            "first fetch: {reason}"
        );
        before.push((first.path.clone(), std::fs::read(&first.path)?));
        server.bump_version(layer_id, BumpKind::Edit { per_mille: 20 });
    }
    // Pages smaller than koop asks for: the build must advance by what each page holds.
    server.set_changeset_faults(
        POINTS,
        ChangesetFaults {
            page_cap: Some(7),
            ..ChangesetFaults::default()
        },
    );
    let exports_before = server.counters().exports_created;
    let full_cache = tempfile::tempdir()?;
    let full = koop_for(&server, full_cache.path(), false)?;
    for (index, (layer_id, expected)) in [(POINTS, (20, 10, 10)), (TABLE, (15, 7, 8))]
        .into_iter()
        .enumerate()
    {
        let pages_before = server.counters().changeset_pages;
        let built = fetch(&koop, layer_id).await?;
        ensure!(
            built.outcome == FetchOutcome::Changeset,
            "layer {layer_id}: {:?} ({:?})",
            built.outcome,
            built.full_export_reason
        );
        let source = built
            .entry
            .manifest
            .changeset
            .clone()
            .context("no changeset in the manifest")?;
        ensure!(
            (source.inserts, source.updates, source.deletes) == expected,
            "layer {layer_id}: +{} ~{} -{}",
            source.inserts,
            source.updates,
            source.deletes
        );
        ensure!(source.bytes > 0 && source.from_entry != built.entry.manifest.entry);
        let pages = server.counters().changeset_pages - pages_before;
        if layer_id == POINTS {
            // 40 rows, 7 a page: 6 pages (numberMatched tells when the last one has arrived).
            ensure!(pages == 6, "{pages} pages");
        }
        // The new version, exported in full into another cache.
        let exported = fetch(&full, layer_id).await?;
        ensure!(exported.outcome == FetchOutcome::Downloaded);
        ensure!(
            exported.entry.manifest.key == built.entry.manifest.key,
            "different versions"
        );
        let count = check_geopackage(&built.path)?;
        ensure!(count == check_geopackage(&exported.path)?);
        let (ours, theirs) = (rows(&built.path)?, rows(&exported.path)?);
        ensure!(ours.len() == theirs.len());
        for (a, b) in ours.iter().zip(&theirs) {
            ensure!(a == b, "layer {layer_id}: {a:?} != {b:?}");
        }
        // The old entry is untouched and the cache verifies.
        let (old_path, old_bytes) = &before[index];
        ensure!(
            std::fs::read(old_path)? == *old_bytes,
            "the previous version's file changed"
        );
    }
    // Only the full exports of the second cache were exports.
    ensure!(server.counters().exports_created - exports_before == 2);
    let report = koop.cache().verify()?;
    ensure!(report.corrupt.is_empty(), "{:?}", report.corrupt);
    // Asked again, the built version is simply cached.
    ensure!(fetch(&koop, POINTS).await?.outcome == FetchOutcome::Cached);
    Ok(())
}

/// Fetches `layer_id` (cached before the bump `kind`) and returns why it was exported in full.
async fn full_export_reason(
    server: &TestServer,
    koop: &Koop,
    layer_id: u64,
    kind: BumpKind,
    faults: ChangesetFaults,
) -> Result<String> {
    fetch(koop, layer_id).await?;
    server.bump_version(layer_id, kind);
    server.set_changeset_faults(layer_id, faults);
    let exports = server.exports_created_for(layer_id);
    let fetched = fetch(koop, layer_id).await?;
    ensure!(
        fetched.outcome == FetchOutcome::Downloaded,
        "layer {layer_id}: {:?}",
        fetched.outcome
    );
    ensure!(server.exports_created_for(layer_id) == exports + 1);
    ensure!(fetched.entry.manifest.changeset.is_none());
    check_geopackage(&fetched.path)?;
    fetched.full_export_reason.context("no reason given")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reason_to_export_in_full_is_named() -> Result<()> {
    let edit = BumpKind::Edit { per_mille: 20 };
    let cases: Vec<(u64, BumpKind, ChangesetFaults, &str)> = vec![
        (
            POINTS,
            edit,
            ChangesetFaults {
                leave_out_insert: true,
                ..ChangesetFaults::default()
            },
            "features where version",
        ),
        (
            TABLE,
            edit,
            ChangesetFaults {
                server_error_pages: u32::MAX,
                page_cap: Some(10),
                ..ChangesetFaults::default()
            },
            "the changeset failed",
        ),
        (
            PLAIN,
            edit,
            ChangesetFaults::default(),
            "offers no WFS changesets",
        ),
        (
            POINTS,
            edit,
            ChangesetFaults {
                report_schema_change: true,
                ..ChangesetFaults::default()
            },
            "changed the layer's schema",
        ),
        (
            TABLE,
            edit,
            ChangesetFaults {
                hide_primary_key: true,
                ..ChangesetFaults::default()
            },
            "no primary key",
        ),
        (
            POINTS,
            BumpKind::Data,
            ChangesetFaults::default(),
            "a full export is cheaper",
        ),
    ];
    for (layer_id, kind, faults, expected) in cases {
        let server = site().await?;
        let cache = tempfile::tempdir()?;
        let koop = koop_for(&server, cache.path(), true)?;
        let reason = full_export_reason(&server, &koop, layer_id, kind, faults).await?;
        ensure!(
            reason.contains(expected),
            "layer {layer_id}: {reason:?} does not say {expected:?}"
        );
    }
    // A cropped export, and changesets turned off.
    let server = site().await?;
    let cache = tempfile::tempdir()?;
    let cropped = Koop::builder()
        .connection(crate::connection(&server)?)
        .cache_dir(Some(cache.path().to_owned()))
        .extent(Some(serde_json::json!({"type": "Polygon", "coordinates": [[[172.0, -44.0], [173.0, -44.0], [173.0, -43.0], [172.0, -44.0]]]})))
        .build()?;
    let reason =
        full_export_reason(&server, &cropped, POINTS, edit, ChangesetFaults::default()).await?;
    ensure!(reason.contains("extent"), "{reason}");
    let off = koop_for(&server, cache.path(), false)?;
    let reason = full_export_reason(&server, &off, TABLE, edit, ChangesetFaults::default()).await?;
    ensure!(reason.contains("turned off"), "{reason}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_on_one_page_is_retried_and_an_interrupted_build_publishes_nothing() -> Result<()> {
    let server = site().await?;
    let cache = tempfile::tempdir()?;
    let koop = koop_for(&server, cache.path(), true)?;
    fetch(&koop, POINTS).await?;
    server.bump_version(POINTS, BumpKind::Edit { per_mille: 20 });
    server.set_changeset_faults(
        POINTS,
        ChangesetFaults {
            server_error_pages: 1,
            page_cap: Some(10),
            ..ChangesetFaults::default()
        },
    );
    let errors = server.counters().server_errors;
    let built = fetch(&koop, POINTS).await?;
    ensure!(
        built.outcome == FetchOutcome::Changeset,
        "{:?}",
        built.full_export_reason
    );
    ensure!(server.counters().server_errors == errors + 1);

    // Cancelled while a page is being retried: an error, nothing new in the cache, the earlier
    // entries intact, no staging left.
    server.bump_version(POINTS, BumpKind::Edit { per_mille: 20 });
    server.set_changeset_faults(
        POINTS,
        ChangesetFaults {
            server_error_pages: u32::MAX,
            page_cap: Some(10),
            ..ChangesetFaults::default()
        },
    );
    let cancel = tokio_util::sync::CancellationToken::new();
    let slow = Koop::builder()
        .connection(
            koop::KoordinatesConnection::builder()
                .api_key(Some(server.api_key().to_owned()))
                .domain(server.domain())
                .plain_http(true)
                .retry_policy(RetryPolicy {
                    max_attempts: 10,
                    min_delay: Duration::from_secs(2),
                    max_delay: Duration::from_secs(2),
                    max_retry_after: Duration::from_secs(5),
                })
                .build()?,
        )
        .cache_dir(Some(cache.path().to_owned()))
        .cancellation(cancel.clone())
        .build()?;
    let entries = koop.cache().list()?.len();
    let task = tokio::spawn(async move { slow.fetch_layer(POINTS, &Quiet).await });
    tokio::time::sleep(Duration::from_millis(800)).await;
    cancel.cancel();
    let result = tokio::time::timeout(Duration::from_secs(10), task).await??;
    ensure!(result.is_err(), "the cancelled fetch succeeded");
    ensure!(koop.cache().list()?.len() == entries);
    let report = koop.cache().verify()?;
    ensure!(report.corrupt.is_empty(), "{:?}", report.corrupt);
    let staging = cache.path().join(".staging");
    ensure!(
        !staging.exists() || std::fs::read_dir(&staging)?.next().is_none(),
        "staging left behind"
    );
    Ok(())
}
