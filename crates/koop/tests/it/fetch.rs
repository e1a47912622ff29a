//! Getting layers: exactly once per version, in the right format, offline, concurrently.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use anyhow::{Context, Result};
use koop::{Error, ExportOptions, FetchOutcome, Koop, Quiet};
use koop_testkit::{BumpKind, TestLayer, TestServer, TestServerConfig, data};

use crate::{feature_count, gdal, koop};

#[tokio::test]
async fn a_layer_is_downloaded_once_per_version() -> Result<()> {
    let server = TestServer::start().await?;
    let dir = tempfile::tempdir()?;
    let koop = koop(&server, dir.path(), ExportOptions::default())?;

    let first = koop.fetch_layer(1002, &Quiet).await?;
    assert_eq!(first.outcome, FetchOutcome::Downloaded);
    assert_eq!(
        first.path.extension().and_then(|ext| ext.to_str()),
        Some("gpkg")
    );
    let name = first
        .path
        .file_name()
        .context("name")?
        .to_string_lossy()
        .into_owned();
    let version = server.current_version(1002).context("version")?;
    assert!(name.starts_with(&format!("1002_{version}_")), "{name}");
    let info = gdal("ogrinfo", &["-ro", "-so", "-al"], &first.path)?;
    assert_eq!(feature_count(&info), Some(16));
    let counters = server.counters();
    assert_eq!(counters.exports_created, 1);
    assert_eq!(counters.downloads, 1);
    // The export's metadata document is kept beside the layer.
    assert!(first.path.with_extension("xml").exists());
    assert_eq!(first.entry.manifest.export_id, Some(1));
    assert_eq!(
        first.entry.manifest.title,
        "NZ Islands — Te Ika-a-Māui & Te Waipounamu"
    );

    // The second call: one request (the details), no export, the same path.
    let second = koop.fetch_layer(1002, &Quiet).await?;
    assert_eq!(second.outcome, FetchOutcome::Cached);
    assert_eq!(second.path, first.path);
    let after = server.counters();
    assert_eq!(after.api_requests - counters.api_requests, 1);
    assert_eq!(after.layer_details - counters.layer_details, 1);
    assert_eq!(after.exports_created, 1);

    // A new version downloads again, to a new name; the old entry stays.
    let bumped = server.bump_version(1002, BumpKind::Data).context("bump")?;
    let third = koop.fetch_layer(1002, &Quiet).await?;
    assert_eq!(third.outcome, FetchOutcome::Downloaded);
    assert_ne!(third.path, first.path);
    assert!(
        third
            .path
            .file_name()
            .context("name")?
            .to_string_lossy()
            .starts_with(&format!("1002_{bumped}_"))
    );
    assert!(first.path.exists());
    assert_ne!(third.entry.manifest.blake3, first.entry.manifest.blake3);
    assert_eq!(server.counters().exports_created, 2);
    assert_eq!(server.counters().downloads, 2);

    // A version that changed only metadata reuses the data: no export, no download, same bytes.
    let metadata_only = server
        .bump_version(1002, BumpKind::MetadataOnly)
        .context("bump")?;
    let fourth = koop.fetch_layer(1002, &Quiet).await?;
    assert_eq!(fourth.outcome, FetchOutcome::Linked);
    assert!(
        fourth
            .path
            .file_name()
            .context("name")?
            .to_string_lossy()
            .starts_with(&format!("1002_{metadata_only}_"))
    );
    assert_eq!(
        std::fs::metadata(&fourth.path)?.ino(),
        std::fs::metadata(&third.path)?.ino()
    );
    assert_eq!(server.counters().exports_created, 2);
    assert_eq!(server.counters().downloads, 2);
    assert!(koop.cache().verify()?.corrupt.is_empty());
    Ok(())
}

#[tokio::test]
async fn the_builder_takes_a_key_a_domain_and_a_cache_dir() -> Result<()> {
    let server = TestServer::start().await?;
    let dir = tempfile::tempdir()?;
    let koop = Koop::builder()
        .api_key(Some(server.api_key().to_owned()))
        .domain(server.domain())
        .configure_connection(|builder| builder.plain_http(true))
        .cache_dir(Some(dir.path().join("cache")))
        .build()?;
    assert_eq!(koop.domain().as_str(), server.domain());
    let path = koop.get_layer(1003).await?;
    assert_eq!(path.extension().and_then(|ext| ext.to_str()), Some("tif"));
    assert!(path.starts_with(dir.path().join("cache")));
    Ok(())
}

#[tokio::test]
async fn grids_give_a_geotiff_and_tiled_rasters_a_vrt_mosaic() -> Result<()> {
    let server = TestServer::start().await?;
    let dir = tempfile::tempdir()?;
    let koop = koop(&server, dir.path(), ExportOptions::default())?;

    let grid = koop.get_layer(1003).await?;
    assert_eq!(grid.extension().and_then(|ext| ext.to_str()), Some("tif"));
    let info = gdal("gdalinfo", &[], &grid)?;
    assert!(info.contains("Size is 275, 387"), "{info}");

    let raster = koop.fetch_layer(1004, &Quiet).await?;
    assert_eq!(
        raster.path.extension().and_then(|ext| ext.to_str()),
        Some("vrt")
    );
    assert_eq!(
        raster.entry.manifest.files.len(),
        5,
        "four tiles and the VRT"
    );
    let info = gdal("gdalinfo", &[], &raster.path)?;
    assert!(info.contains("Driver: VRT"), "{info}");
    assert!(info.contains("Size is 220, 310"), "{info}");
    assert!(
        info.contains("Origin = (1000000.000000000000000,6250000.000000000000000)"),
        "{info}"
    );
    assert!(
        info.contains("Band 3") && info.contains("ColorInterp=Blue"),
        "{info}"
    );
    // GDAL reads the pixels of every tile through the mosaic.
    let stats = gdal("gdalinfo", &["-stats"], &raster.path)?;
    assert!(stats.contains("STATISTICS_MAXIMUM"), "{stats}");

    let table = koop.get_layer(1005).await?;
    let info = gdal("ogrinfo", &["-ro", "-so", "-al"], &table)?;
    assert_eq!(feature_count(&info), Some(3190));
    Ok(())
}

#[tokio::test]
async fn offline_answers_from_the_cache_with_no_request() -> Result<()> {
    let server = TestServer::start().await?;
    let dir = tempfile::tempdir()?;
    let online = koop(&server, dir.path(), ExportOptions::default())?;
    let old = online.get_layer(1001).await?;
    server.bump_version(1001, BumpKind::Data).context("bump")?;
    let newest = online.get_layer(1001).await?;
    assert_ne!(old, newest);

    let before = server.counters();
    let offline = Koop::builder()
        .api_key(None)
        .api_key_env("KOOP_TEST_VARIABLE_THAT_IS_NEVER_SET")
        .domain(server.domain())
        .configure_connection(|builder| builder.plain_http(true))
        .cache_dir(Some(dir.path().to_owned()))
        .offline(true)
        .build()?;
    let fetched = offline.fetch_layer(1001, &Quiet).await?;
    assert_eq!(fetched.outcome, FetchOutcome::Offline);
    assert_eq!(fetched.path, newest);
    let missing = offline
        .fetch_layer(1002, &Quiet)
        .await
        .expect_err("never fetched");
    assert!(
        matches!(missing, Error::NotCached { layer_id: 1002, .. }),
        "{missing:?}"
    );
    assert!(missing.to_string().contains("offline"));
    assert_eq!(server.counters(), before, "offline makes no request");
    Ok(())
}

#[tokio::test]
async fn two_tasks_fetching_the_same_layer_make_one_export() -> Result<()> {
    let server = TestServer::start().await?;
    let dir = tempfile::tempdir()?;
    let koop = koop(&server, dir.path(), ExportOptions::default())?;
    let (a, b) = tokio::join!(
        koop.fetch_layer(1001, &Quiet),
        koop.fetch_layer(1001, &Quiet)
    );
    let (a, b) = (a?, b?);
    assert_eq!(a.path, b.path);
    let mut outcomes = [a.outcome, b.outcome];
    outcomes.sort_by_key(|outcome| format!("{outcome:?}"));
    assert_eq!(outcomes, [FetchOutcome::Cached, FetchOutcome::Downloaded]);
    assert_eq!(server.exports_created_for(1001), 1);
    assert_eq!(server.counters().downloads, 1);
    Ok(())
}

#[tokio::test]
async fn data_that_changes_during_the_export_is_filed_under_its_own_version() -> Result<()> {
    let config = TestServerConfig {
        layers: vec![
            TestLayer::vector(9, "Changing layer", data::NZ_ISLANDS_GPKG)
                .with_latency(Duration::from_millis(1200)),
        ],
        ..TestServerConfig::default()
    };
    let server = TestServer::start_with(config).await?;
    let dir = tempfile::tempdir()?;
    let koop = koop(&server, dir.path(), ExportOptions::default())?;
    let fetch = koop.fetch_layer(9, &Quiet);
    let bump = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        server.bump_version(9, BumpKind::Data)
    };
    let (fetched, bumped) = tokio::join!(fetch, bump);
    let (fetched, bumped) = (fetched?, bumped.context("bump")?);
    assert_eq!(fetched.entry.manifest.key.version_id, bumped);
    assert_eq!(fetched.entry.manifest.key.data_version, bumped);
    assert_eq!(
        server.exports_created_for(9),
        2,
        "the first export was not filed"
    );
    // The version check runs while the download starts: the stale export's download may have
    // begun, and was stopped when the check came back; only the new version was filed.
    assert!(
        server.counters().downloads <= 2,
        "at most the download that was stopped"
    );
    let entry = &fetched.entry;
    assert_eq!(
        entry.manifest.export_id,
        Some(2),
        "filed from the second export"
    );
    assert_eq!(koop.cache().list()?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn another_crs_is_another_entry() -> Result<()> {
    let server = TestServer::start().await?;
    let dir = tempfile::tempdir()?;
    let nztm = koop(&server, dir.path(), ExportOptions::default())?;
    let wgs84 = Koop::builder()
        .connection(crate::connection(&server)?)
        .cache_dir(Some(dir.path().to_owned()))
        .crs(koop::Epsg::WGS84)
        .build()?;
    let a = nztm.fetch_layer(1001, &Quiet).await?;
    let b = wgs84.fetch_layer(1001, &Quiet).await?;
    assert_eq!(b.outcome, FetchOutcome::Downloaded);
    assert_ne!(a.path, b.path);
    assert_eq!(a.entry.manifest.key.crs.to_string(), "EPSG:2193");
    assert_eq!(b.entry.manifest.key.crs.to_string(), "EPSG:4326");
    assert_eq!(server.exports_created_for(1001), 2);
    Ok(())
}
