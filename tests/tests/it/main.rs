//! End-to-end tests: separate processes against one in-process koop-testkit.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use koop_testkit::{TestLayer, TestServer, TestServerConfig, data};

async fn fetch_in_another_process(
    server: &TestServer,
    cache: &std::path::Path,
    layer_id: u64,
) -> Result<(String, String)> {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_koop-fetch"))
        .arg(server.domain())
        .arg(layer_id.to_string())
        .env("KOORDINATES_API_KEY", server.api_key())
        .env("KOOPCACHE_DIR", cache)
        .output()
        .await?;
    let stdout = String::from_utf8(output.stdout)?;
    ensure!(
        output.status.success(),
        "koop-fetch failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (outcome, path) = stdout
        .trim()
        .split_once(' ')
        .context("`{outcome} {path}`")?;
    Ok((outcome.to_owned(), path.to_owned()))
}

#[tokio::test]
async fn two_processes_fetching_the_same_layer_make_one_export() -> Result<()> {
    let config = TestServerConfig {
        layers: vec![
            TestLayer::vector(21, "Shared layer", data::NZ_ISLANDS_GPKG)
                .with_latency(Duration::from_millis(1500)),
        ],
        ..TestServerConfig::default()
    };
    let server = TestServer::start_with(config).await?;
    let cache = tempfile::tempdir()?;
    let (first, second) = tokio::join!(
        fetch_in_another_process(&server, cache.path(), 21),
        fetch_in_another_process(&server, cache.path(), 21)
    );
    let (first, second) = (first?, second?);
    assert_eq!(first.1, second.1, "both processes got the same path");
    let mut outcomes = [first.0, second.0];
    outcomes.sort();
    assert_eq!(outcomes, ["Cached", "Downloaded"]);
    assert_eq!(server.exports_created_for(21), 1);
    assert_eq!(server.counters().downloads, 1);
    assert!(
        std::path::Path::new(&first.1).starts_with(cache.path()),
        "KOOPCACHE_DIR was used"
    );
    Ok(())
}
