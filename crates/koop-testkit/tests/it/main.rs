//! koop-testkit over real HTTP: what it serves is real data that GDAL opens, and its faults
//! happen as documented.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use async_zip::base::read1::ZipOptions;
use async_zip::base::read1::seek::ZipArchiveReader;
use futures::AsyncReadExt;
use koop_testkit::{
    BumpKind, DropDownloadFault, ExportFaults, ExportOutcome, GeneratedContent, TestLayer,
    TestServer, TestServerConfig, ZipFault,
};
use serde_json::Value;

/// `(name, bytes)` of every entry; fails on a CRC mismatch or a broken ZIP.
async fn entries(zip: Vec<u8>) -> Result<Vec<(String, Vec<u8>)>> {
    let mut reader =
        ZipArchiveReader::open_with_options(futures::io::Cursor::new(zip), ZipOptions::untrusted())
            .await?;
    let names: Vec<String> = reader
        .cdrs()
        .iter()
        .map(|cdr| String::from_utf8_lossy(cdr.insecure_file_name.as_bytes()).into_owned())
        .collect();
    let mut out = Vec::new();
    for (index, name) in names.into_iter().enumerate() {
        let mut file = reader.file(index).await?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).await?;
        out.push((name, bytes));
    }
    Ok(out)
}

fn is_gpkg(name: &str) -> bool {
    Path::new(name)
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("gpkg"))
}

fn run(tool: &str, path: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new(tool)
        .args(args)
        .arg(path)
        .output()
        .with_context(|| format!("running {tool}; install GDAL (apt-get install gdal-bin)"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    ensure!(
        output.status.success(),
        "{tool} failed on {}: {}{}",
        path.display(),
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(stdout)
}

async fn extract(server: &TestServer, layer_id: u64, into: &Path) -> Result<Vec<PathBuf>> {
    let zip = std::fs::read(server.export_zip(layer_id).await?)?;
    let mut paths = Vec::new();
    for (name, bytes) in entries(zip).await? {
        let file_name = Path::new(&name).file_name().context("entry name")?;
        let path = into.join(file_name);
        std::fs::write(&path, bytes)?;
        paths.push(path);
    }
    Ok(paths)
}

fn feature_count(ogrinfo: &str) -> Option<u64> {
    ogrinfo
        .lines()
        .find_map(|line| line.strip_prefix("Feature Count: "))
        .and_then(|count| count.trim().parse().ok())
}

#[tokio::test]
async fn ogrinfo_opens_every_geopackage_it_serves() -> Result<()> {
    let mut config = TestServerConfig::default();
    config.layers.push(TestLayer::generated(
        2001,
        "Sized polygons",
        GeneratedContent::Polygons {
            target_bytes: 2 * 1024 * 1024,
        },
    ));
    let server = TestServer::start_with(config).await?;
    let dir = tempfile::tempdir()?;
    for (layer_id, expected) in [
        (1001, Some(177)),
        (1002, Some(16)),
        (1005, Some(3190)),
        (1006, Some(20_000)),
        (2001, None),
    ] {
        let folder = dir.path().join(layer_id.to_string());
        std::fs::create_dir(&folder)?;
        let files = extract(&server, layer_id, &folder).await?;
        let gpkg = files
            .iter()
            .find(|path| path.extension().is_some_and(|ext| ext == "gpkg"))
            .context("a .gpkg member")?;
        let info = run("ogrinfo", gpkg, &["-ro", "-so", "-al"])?;
        let count = feature_count(&info).context("ogrinfo reports a feature count")?;
        match expected {
            Some(expected) => assert_eq!(count, expected, "layer {layer_id}"),
            None => assert!(count > 16, "layer {layer_id}: {count}"),
        }
        // The R-tree index is valid where there is geometry: a spatial filter finds features.
        if layer_id == 1006 {
            let filtered = run(
                "ogrinfo",
                gpkg,
                &[
                    "-ro", "-so", "-al", "-spat", "1500000", "5000000", "1700000", "5500000",
                ],
            )?;
            let inside = feature_count(&filtered).context("count")?;
            assert!(inside > 0 && inside < 20_000, "{inside}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn gdalinfo_opens_every_geotiff_it_serves() -> Result<()> {
    let server = TestServer::start().await?;
    let dir = tempfile::tempdir()?;
    for (layer_id, tiles) in [(1003, 1), (1004, 4)] {
        let folder = dir.path().join(layer_id.to_string());
        std::fs::create_dir(&folder)?;
        let files = extract(&server, layer_id, &folder).await?;
        let tiffs: Vec<_> = files
            .iter()
            .filter(|path| path.extension().is_some_and(|ext| ext == "tif"))
            .collect();
        assert_eq!(tiffs.len(), tiles, "layer {layer_id}: {files:?}");
        for tiff in tiffs {
            let info = run("gdalinfo", tiff, &[])?;
            assert!(info.contains("Size is"), "{info}");
            assert!(info.contains("2193"), "{info}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn an_export_zip_holds_the_layer_metadata_xml_and_a_text_file() -> Result<()> {
    let server = TestServer::start().await?;
    let client = server.raw_client();
    let export = client
        .finished_export(1002, "vector", "application/x-ogc-gpkg")
        .await?;
    assert_eq!(export["state"], "complete");
    let response = client.download(&export).await?;
    let disposition = response
        .headers()
        .get("content-disposition")
        .context("Content-Disposition")?
        .to_str()?
        .to_owned();
    assert!(
        disposition.starts_with("attachment; filename*=UTF-8''kx-nz-islands-te-ika-a-m%C4%81ui"),
        "{disposition}"
    );
    let names: Vec<String> = entries(response.bytes().await?.to_vec())
        .await?
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let slug = "nz-islands-te-ika-a-māui-te-waipounamu";
    assert_eq!(
        names,
        [
            format!("{slug}.gpkg"),
            format!("{slug}.xml"),
            format!("{slug}.txt")
        ]
    );
    Ok(())
}

#[tokio::test]
async fn zip_faults_deliver_what_they_promise() -> Result<()> {
    let server = TestServer::start().await?;
    let client = server.raw_client();
    let good = std::fs::read(server.export_zip(1001).await?)?;
    for fault in [
        ZipFault::Truncated,
        ZipFault::PathTraversal,
        ZipFault::AbsolutePath,
        ZipFault::Empty,
        ZipFault::Corrupted,
        ZipFault::NoLayerFile,
        ZipFault::TwoLayerFiles,
    ] {
        server.set_export_faults(
            1001,
            ExportFaults {
                zip: fault,
                ..ExportFaults::default()
            },
        );
        let export = client
            .finished_export(1001, "vector", "application/x-ogc-gpkg")
            .await?;
        let bytes = client.download(&export).await?.bytes().await?.to_vec();
        let read = entries(bytes.clone()).await;
        match fault {
            ZipFault::Truncated => {
                assert_eq!(bytes.len(), good.len() / 2);
                assert!(read.is_err(), "a truncated ZIP does not read");
            }
            ZipFault::Corrupted => {
                assert!(read.is_err(), "a corrupted entry fails its CRC or inflate");
            }
            ZipFault::Empty => assert!(read?.is_empty()),
            ZipFault::PathTraversal => {
                assert!(
                    read?
                        .iter()
                        .any(|(name, _)| name == "../../koop-escape.txt")
                );
            }
            ZipFault::AbsolutePath => {
                assert!(
                    read?
                        .iter()
                        .any(|(name, _)| name == "/tmp/koop-absolute.txt")
                );
            }
            ZipFault::NoLayerFile => {
                assert!(read?.iter().all(|(name, _)| !is_gpkg(name)));
            }
            ZipFault::TwoLayerFiles => {
                assert_eq!(read?.iter().filter(|(name, _)| is_gpkg(name)).count(), 2);
            }
            ZipFault::None => {}
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_dropped_download_stops_after_n_bytes_and_the_next_one_completes() -> Result<()> {
    let server = TestServer::start().await?;
    let client = server.raw_client();
    server.set_export_faults(
        1001,
        ExportFaults {
            drop_download: Some(DropDownloadFault {
                after_bytes: 10_000,
                times: 1,
            }),
            ..ExportFaults::default()
        },
    );
    let export = client
        .finished_export(1001, "vector", "application/x-ogc-gpkg")
        .await?;
    let mut response = client.download(&export).await?;
    let total: u64 = response.content_length().context("Content-Length")?;
    let mut received = 0_u64;
    let outcome = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => received += chunk.len() as u64,
            Ok(None) => break Ok(()),
            Err(error) => break Err(error),
        }
    };
    assert!(outcome.is_err(), "the connection was dropped");
    assert_eq!(received, 10_000);
    assert!(total > 10_000);

    let rest = client
        .request(export["download_url"].as_str().context("url")?)
        .header("Range", "bytes=10000-")
        .send()
        .await?;
    assert_eq!(rest.status(), 206);
    assert_eq!(
        rest.headers()
            .get("content-range")
            .context("Content-Range")?
            .to_str()?,
        format!("bytes 10000-{}/{total}", total - 1)
    );
    assert_eq!(rest.bytes().await?.len() as u64, total - 10_000);
    assert_eq!(server.counters().range_requests, 1);
    Ok(())
}

#[tokio::test]
async fn exports_can_end_in_error_or_cancelled_or_never() -> Result<()> {
    let server = TestServer::start().await?;
    let client = server.raw_client();
    for (outcome, state) in [
        (ExportOutcome::Error, "error"),
        (ExportOutcome::Cancelled, "cancelled"),
    ] {
        server.set_export_faults(
            1005,
            ExportFaults {
                outcome,
                ..ExportFaults::default()
            },
        );
        let export = client
            .finished_export(1005, "table", "application/x-ogc-gpkg")
            .await?;
        assert_eq!(export["state"], state);
        assert_eq!(export["download_url"], Value::Null);
    }
    server.set_export_faults(
        1005,
        ExportFaults {
            outcome: ExportOutcome::NeverComplete,
            ..ExportFaults::default()
        },
    );
    // Layer 1005 completes in 0.5 s when healthy: three times that shows "never".
    let error = client
        .export_within(
            1005,
            "table",
            "application/x-ogc-gpkg",
            Duration::from_millis(1500),
        )
        .await;
    assert!(error.is_err(), "never completes");
    Ok(())
}

#[tokio::test]
async fn requests_without_the_key_get_a_json_401() -> Result<()> {
    let server = TestServer::start().await?;
    let response = reqwest::get(format!("{}layers/1001/", server.api_url())).await?;
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await?;
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|text| text.contains("credentials"))
    );
    let response = reqwest::Client::new()
        .get(format!("{}layers/1001/", server.api_url()))
        .header("Authorization", "key wrong")
        .send()
        .await?;
    assert_eq!(response.status(), 401);
    assert_eq!(server.counters().unauthorized, 2);
    assert_eq!(server.counters().layer_details, 0);
    Ok(())
}

#[tokio::test]
async fn a_data_bump_changes_content_and_a_metadata_bump_does_not() -> Result<()> {
    let server = TestServer::start().await?;
    let client = server.raw_client();
    let original = std::fs::read(server.export_zip(1002).await?)?;
    let first = server.current_version(1002).context("version")?;

    let metadata_only = server
        .bump_version(1002, BumpKind::MetadataOnly)
        .context("bump")?;
    let details: Value = client
        .get(&format!("{}layers/1002/", server.api_url()))
        .await?
        .json()
        .await?;
    assert_eq!(details["version"]["id"], metadata_only);
    assert_eq!(details["version"]["data_import"], false);
    assert!(
        details["data"]["import_version"]
            .as_str()
            .is_some_and(|url| url.ends_with(&format!("/versions/{first}/")))
    );
    assert_eq!(std::fs::read(server.export_zip(1002).await?)?, original);

    let data = server.bump_version(1002, BumpKind::Data).context("bump")?;
    let details: Value = client
        .get(&format!("{}layers/1002/", server.api_url()))
        .await?
        .json()
        .await?;
    assert_eq!(details["version"]["id"], data);
    assert!(
        details["data"]["import_version"]
            .as_str()
            .is_some_and(|url| url.ends_with(&format!("/versions/{data}/")))
    );
    assert_ne!(std::fs::read(server.export_zip(1002).await?)?, original);
    Ok(())
}
