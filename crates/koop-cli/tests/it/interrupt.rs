//! Deadlines, signals and crashes, with the real binary: what each leaves behind, and what the
//! next run makes of it.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use koop_testkit::{ExportFaults, ExportOutcome, TestServer};

use crate::koop;

/// `koop --domain … --cache-dir … ARGS`, running.
pub(crate) fn spawn(
    server: &TestServer,
    cache: &Path,
    args: &[&str],
) -> Result<tokio::process::Child> {
    Ok(tokio::process::Command::new(env!("CARGO_BIN_EXE_koop"))
        .arg("--domain")
        .arg(server.base_url())
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .env("KOORDINATES_API_KEY", server.api_key())
        .env_remove("KOOPCACHE_DIR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?)
}

/// Waits (polling every 10 ms, at most `limit`) until `ready` holds.
pub(crate) async fn until(limit: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
    let started = Instant::now();
    while !ready() {
        ensure!(started.elapsed() < limit, "not ready within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

pub(crate) async fn signal(child: &tokio::process::Child, name: &str) -> Result<()> {
    let pid = child.id().context("a running process")?;
    let status = tokio::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .await?;
    ensure!(status.success(), "kill -{name} {pid}");
    Ok(())
}

/// What a stopped process said and how it ended.
pub(crate) async fn finish(child: tokio::process::Child) -> Result<(Option<i32>, String)> {
    let output = tokio::time::timeout(Duration::from_secs(15), child.wait_with_output())
        .await
        .context("the process did not stop")??;
    Ok((
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// Files and folders under `dir`, recursively.
fn tree(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(tree(&path));
        }
        found.push(path);
    }
    found
}

fn staging_left(cache: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(cache.join(".staging"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .collect()
}

#[tokio::test]
async fn the_timeout_cancels_a_never_completing_export_and_exits_1() -> Result<()> {
    let server = TestServer::start().await?;
    server.set_export_faults(
        1002,
        ExportFaults {
            outcome: ExportOutcome::NeverComplete,
            ..ExportFaults::default()
        },
    );
    let cache = tempfile::tempdir()?;
    let started = Instant::now();
    let run = koop(&server, cache.path(), &["get", "1002", "--timeout", "2"]).await?;
    let took = started.elapsed();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(took < Duration::from_secs(3), "exited after {took:?}");
    assert_eq!(
        server.counters().export_cancels,
        1,
        "cancelled on the server"
    );
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|line| line.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(
        errors[0].contains("layer 1002")
            && errors[0].contains("after 2s, the deadline")
            && errors[0].contains("--timeout"),
        "{}",
        errors[0]
    );
    assert!(staging_left(cache.path()).is_empty());
    Ok(())
}

#[tokio::test]
async fn sigint_while_exporting_cancels_the_export_and_exits_130() -> Result<()> {
    let server = TestServer::start().await?;
    server.set_export_latency(1002, Duration::from_secs(30));
    let cache = tempfile::tempdir()?;
    let child = spawn(&server, cache.path(), &["get", "1002"])?;
    until(Duration::from_secs(10), || {
        server.counters().export_polls > 0
    })
    .await?;
    signal(&child, "INT").await?;
    let (code, stderr) = finish(child).await?;
    assert_eq!(code, Some(130), "{stderr}");
    assert_eq!(
        server.counters().export_cancels,
        1,
        "the export this process created: {stderr}"
    );
    assert!(
        staging_left(cache.path()).is_empty(),
        "{:?}",
        tree(cache.path())
    );
    // The lock is free again: the next run fetches the layer.
    server.set_export_latency(1002, Duration::ZERO);
    let run = koop(&server, cache.path(), &["get", "1002"]).await?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    Ok(())
}

#[tokio::test]
async fn sigterm_while_downloading_keeps_the_bytes_and_the_next_run_resumes_them() -> Result<()> {
    let server = TestServer::start().await?;
    let zip_len = std::fs::metadata(server.export_zip(1001).await?)?.len();
    assert!(
        zip_len > 2 * 64 * 1024,
        "a ZIP of several 64 KiB chunks: {zip_len}"
    );
    server.set_export_faults(
        1001,
        ExportFaults {
            // A 64 KiB chunk every half second.
            throttle_download: Some(128 * 1024),
            ..ExportFaults::default()
        },
    );
    let cache = tempfile::tempdir()?;
    let child = spawn(&server, cache.path(), &["get", "1001"])?;
    until(Duration::from_secs(10), || server.counters().downloads > 0).await?;
    // Past the first chunk, before the last.
    tokio::time::sleep(Duration::from_millis(750)).await;
    signal(&child, "TERM").await?;
    let (code, stderr) = finish(child).await?;
    assert_eq!(code, Some(143), "{stderr}");
    assert_eq!(server.counters().export_cancels, 0, "a complete export");
    assert!(
        staging_left(cache.path()).is_empty(),
        "{:?}",
        tree(cache.path())
    );
    let kept: Vec<_> = tree(&cache.path().join(".partial"));
    assert_eq!(kept.len(), 1, "the partial download: {kept:?}");
    let kept_len = std::fs::metadata(&kept[0])?.len();
    assert!(
        kept_len > 0 && kept_len < zip_len,
        "{kept_len} of {zip_len}"
    );

    server.clear_faults();
    let exports = server.counters().exports_created;
    let run = koop(&server, cache.path(), &["get", "1001"]).await?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        server.counters().exports_created,
        exports,
        "the same export, found again by its name"
    );
    let ranges: Vec<String> = server
        .requests()
        .into_iter()
        .filter_map(|request| request.range)
        .collect();
    assert_eq!(
        ranges,
        [format!("bytes={kept_len}-")],
        "resumed where it stopped"
    );
    let path = run.stdout.trim();
    let info = std::process::Command::new("ogrinfo")
        .args(["-ro", "-so", "-al", path])
        .output()?;
    assert!(
        String::from_utf8_lossy(&info.stdout).contains("Feature Count: 177"),
        "the resumed GeoPackage opens whole"
    );
    assert!(tree(&cache.path().join(".partial")).is_empty(), "used up");
    Ok(())
}

#[tokio::test]
async fn after_kill_9_mid_export_the_next_run_makes_no_second_export() -> Result<()> {
    let server = TestServer::start().await?;
    server.set_export_latency(1002, Duration::from_secs(2));
    let cache = tempfile::tempdir()?;
    let mut child = spawn(&server, cache.path(), &["get", "1002"])?;
    until(Duration::from_secs(10), || {
        server.counters().export_polls > 0
    })
    .await?;
    signal(&child, "KILL").await?;
    let _ = child.wait().await?;
    assert_eq!(server.exports_created_for(1002), 1);
    let first = koop(&server, cache.path(), &["get", "1002"]).await?;
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(
        server.exports_created_for(1002),
        1,
        "the killed run's export was found and used"
    );
    let again = koop(&server, cache.path(), &["get", "1002"]).await?;
    assert_eq!(again.stdout, first.stdout, "the same file");
    Ok(())
}

#[tokio::test]
async fn a_layer_url_on_another_site_is_refused_before_anything_is_sent_to_it() -> Result<()> {
    let server = TestServer::start().await?;
    // Another site, counting every connection made to it.
    let other = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let other_addr = other.local_addr()?;
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while other.accept().await.is_ok() {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let cache = tempfile::tempdir()?;
    let foreign = format!("http://{other_addr}/layer/1001-world/");
    let run = koop(&server, cache.path(), &["get", &foreign]).await?;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(&other_addr.to_string())
            && run.stderr.contains(&server.domain())
            && run.stderr.contains("--domain"),
        "names both sites and the flag: {}",
        run.stderr
    );
    let list = cache.path().join("list.txt");
    std::fs::write(&list, format!("1001\n{foreign}\n"))?;
    let run = koop(
        &server,
        cache.path(),
        &["mirror", "--from", list.to_str().context("utf-8")?],
    )
    .await?;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(
        run.stdout.lines().count(),
        1,
        "the layer on the allowed site: {}",
        run.stdout
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no request reached the other site"
    );
    Ok(())
}
