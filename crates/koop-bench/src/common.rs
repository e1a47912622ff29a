//! What every benchmark shares: the `koop` binary, running it with its peak RSS, and raw HTTP
//! against the test server.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use koop_testkit::{TestLayer, TestServer, TestServerConfig};

pub(crate) const MB: u64 = 1024 * 1024;

/// `count` export latencies spread evenly over 1–3 s: the schedule of the mirror benchmarks.
pub(crate) fn latencies_1_to_3_s(count: usize) -> Vec<Duration> {
    (0..count)
        .map(|index| Duration::from_secs_f64(1.0 + 2.0 * index as f64 / (count.max(2) - 1) as f64))
        .collect()
}

/// A test server of `count` vector layers with ids from `first_id`, each holding `geopackage`,
/// that exports every layer anew (no answering a new export with an identical recent one).
pub(crate) async fn vector_site(
    first_id: u64,
    count: u64,
    title: &str,
    geopackage: &[u8],
) -> Result<TestServer> {
    let layers = (0..count)
        .map(|index| {
            TestLayer::vector(
                first_id + index,
                &format!("{title} {index}"),
                geopackage.to_vec(),
            )
        })
        .collect();
    Ok(TestServer::start_with(TestServerConfig {
        layers,
        reuse_identical_exports: false,
        ..TestServerConfig::default()
    })
    .await?)
}

pub(crate) fn koop_binary() -> Result<PathBuf> {
    let path = std::env::current_exe()?
        .parent()
        .context("the harness's directory")?
        .join("koop");
    ensure!(
        path.exists(),
        "{} is missing: run `cargo xtask bench`, which builds it",
        path.display()
    );
    Ok(path)
}

/// What a `koop` run took.
pub(crate) struct Measured {
    pub(crate) wall: Duration,
    pub(crate) peak_rss: u64,
    pub(crate) stdout: String,
}

/// Peak resident set size of a live process, from `/proc/{pid}/status` (`VmHWM`), in bytes.
pub(crate) fn peak_rss(pid: u32) -> Option<u64> {
    status_bytes(pid, "VmHWM:")
}

/// The resident memory of a process now (`VmRSS`), in bytes.
pub(crate) fn current_rss(pid: u32) -> Option<u64> {
    status_bytes(pid, "VmRSS:")
}

fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Runs `koop` with `args` against `server`, sampling its peak RSS every 5 ms.
pub(crate) async fn run_koop(server: &TestServer, cache: &Path, args: &[&str]) -> Result<Measured> {
    run_koop_with(server, cache, args, &[]).await
}

/// As [`run_koop`], with more environment variables; `cache` may be a store URL.
pub(crate) async fn run_koop_with(
    server: &TestServer,
    cache: &Path,
    args: &[&str],
    env: &[(String, String)],
) -> Result<Measured> {
    let verbose = std::env::var_os("KOOP_BENCH_LOG").is_some();
    let started = Instant::now();
    let mut child = tokio::process::Command::new(koop_binary()?)
        .arg("--domain")
        .arg(server.base_url())
        .arg("--cache-dir")
        .arg(cache)
        .arg(if verbose { "-vv" } else { "--quiet" })
        .args(args)
        .env("KOORDINATES_API_KEY", server.api_key())
        .envs(env.iter().cloned())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id().context("a process id")?;
    // Read both pipes while it runs: a run that writes more than a pipe holds (the JSON of a
    // 300-layer mirror) would otherwise block on its write and never exit.
    let mut stdout_pipe = child.stdout.take().context("stdout")?;
    let mut stderr_pipe = child.stderr.take().context("stderr")?;
    let stdout_task = tokio::spawn(async move {
        let mut bytes = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut stdout_pipe, &mut bytes)
            .await
            .map(|_| bytes)
    });
    let stderr_task = tokio::spawn(async move {
        let mut bytes = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut stderr_pipe, &mut bytes)
            .await
            .map(|_| bytes)
    });
    let mut peak = 0;
    let status = loop {
        if let Some(rss) = peak_rss(pid) {
            peak = peak.max(rss);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let wall = started.elapsed();
    let output = std::process::Output {
        status,
        stdout: stdout_task.await??,
        stderr: stderr_task.await??,
    };
    if verbose {
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    }
    ensure!(
        status.success(),
        "koop {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(Measured {
        wall,
        peak_rss: peak,
        stdout: String::from_utf8(output.stdout)?,
    })
}

pub(crate) fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

pub(crate) fn mb(bytes: u64) -> f64 {
    bytes as f64 / MB as f64
}

/// Creates an export of `layer_id` (latency 0) and returns its download URL.
pub(crate) async fn download_url(server: &TestServer, layer_id: u64) -> Result<String> {
    let export = server
        .raw_client()
        .finished_export(layer_id, "vector", koop_testkit::GEOPACKAGE_MIME)
        .await?;
    export["download_url"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("the export of layer {layer_id} has no download URL: {export}"))
}

/// Bytes per second of one stream downloading `urls` one after another.
pub(crate) async fn single_stream_throughput(server: &TestServer, urls: &[String]) -> Result<f64> {
    let client = reqwest::Client::builder().build()?;
    let key = format!("key {}", server.api_key());
    let started = Instant::now();
    let mut bytes = 0_u64;
    for url in urls {
        let mut response = client
            .get(url)
            .header("Authorization", &key)
            .send()
            .await?
            .error_for_status()?;
        while let Some(chunk) = response.chunk().await? {
            bytes += chunk.len() as u64;
        }
    }
    Ok(bytes as f64 / started.elapsed().as_secs_f64())
}

/// Time of `curl` downloading `url` and `unzip` extracting it.
pub(crate) async fn curl_and_unzip(
    server: &TestServer,
    url: &str,
    work: &Path,
) -> Result<Duration> {
    let zip = work.join("curl.zip");
    let out = work.join("unzipped");
    let started = Instant::now();
    let curl = tokio::process::Command::new("curl")
        .args(["-sS", "--fail", "-o"])
        .arg(&zip)
        .args([
            "-H",
            &format!("Authorization: key {}", server.api_key()),
            url,
        ])
        .status()
        .await
        .context("running curl (apt-get install curl)")?;
    ensure!(curl.success(), "curl failed");
    let unzip = tokio::process::Command::new("unzip")
        .args(["-q", "-o"])
        .arg(&zip)
        .arg("-d")
        .arg(&out)
        .status()
        .await
        .context("running unzip (apt-get install unzip)")?;
    ensure!(unzip.success(), "unzip failed");
    let took = started.elapsed();
    tokio::fs::remove_file(&zip).await?;
    tokio::fs::remove_dir_all(&out).await?;
    Ok(took)
}
