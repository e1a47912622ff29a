//! The koop facade against koop-testkit over real HTTP, through its public API.

mod changeset;
mod faults;
mod fetch;
mod mirror;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use koop::{ExportOptions, Koop, KoordinatesConnection, RetryPolicy};
use koop_testkit::TestServer;

/// A connection to the test server with quick retries.
pub(crate) fn connection(server: &TestServer) -> Result<KoordinatesConnection> {
    Ok(KoordinatesConnection::builder()
        .api_key(Some(server.api_key().to_owned()))
        .domain(server.domain())
        .plain_http(true)
        .retry_policy(RetryPolicy {
            max_attempts: 3,
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            max_retry_after: Duration::from_secs(5),
        })
        .build()?)
}

/// A `Koop` for the test server with its cache in `cache_dir`.
pub(crate) fn koop(server: &TestServer, cache_dir: &Path, options: ExportOptions) -> Result<Koop> {
    Ok(Koop::builder()
        .connection(connection(server)?)
        .cache_dir(Some(cache_dir.to_owned()))
        .export_options(options)
        .build()?)
}

/// Every file under the cache root but the lock files, with its size and BLAKE3.
pub(crate) fn snapshot(root: &Path) -> Result<BTreeMap<String, (u64, String)>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let relative = path.strip_prefix(root)?.to_string_lossy().into_owned();
            if relative.starts_with(".locks") {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else {
                let bytes = std::fs::read(&path)?;
                files.insert(
                    relative,
                    (
                        bytes.len() as u64,
                        blake3::hash(&bytes).to_hex().to_string(),
                    ),
                );
            }
        }
    }
    Ok(files)
}

/// Runs a GDAL tool on `path` and returns its output.
pub(crate) fn gdal(tool: &str, args: &[&str], path: &Path) -> Result<String> {
    let output = Command::new(tool)
        .args(args)
        .arg(path)
        .output()
        .with_context(|| format!("running {tool} (apt-get install gdal-bin)"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    ensure!(
        output.status.success(),
        "{tool} failed on {}: {stdout}{}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(stdout)
}

pub(crate) fn feature_count(ogrinfo: &str) -> Option<u64> {
    ogrinfo
        .lines()
        .find_map(|line| line.strip_prefix("Feature Count: "))
        .and_then(|count| count.trim().parse().ok())
}
