//! Serving layers: `koop serve` on a cache of generated points, and GeoJSON streaming
//! (`geojson`).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use koop_testkit::{GeneratedContent, TestLayer, TestServer, TestServerConfig};

use crate::Args;
use crate::common::{MB, koop_binary, mb, peak_rss, run_koop, verdict};

/// A `koop serve` child process and its address.
pub(crate) struct Served {
    pub(crate) child: tokio::process::Child,
    pub(crate) base: String,
    pub(crate) pid: u32,
}

async fn start_serve(server: &TestServer, cache: &Path) -> Result<Served> {
    use tokio::io::AsyncBufReadExt;
    // KOOP_BENCH_WRAP="heaptrack -o /tmp/koop" runs koop serve under a profiler;
    // KOOP_BENCH_SERVE_ARGS adds flags to it.
    let wrap = std::env::var("KOOP_BENCH_WRAP").unwrap_or_default();
    let mut wrap = wrap.split_whitespace();
    let mut command = match wrap.next() {
        Some(program) => {
            let mut command = tokio::process::Command::new(program);
            command.args(wrap).arg(koop_binary()?);
            command
        }
        None => tokio::process::Command::new(koop_binary()?),
    };
    let mut child = command
        .arg("--domain")
        .arg(server.base_url())
        .arg("--cache-dir")
        .arg(cache)
        .args(["--quiet", "serve", "--bind", "127.0.0.1:0"])
        .args(
            std::env::var("KOOP_BENCH_SERVE_ARGS")
                .unwrap_or_default()
                .split_whitespace(),
        )
        .env("KOORDINATES_API_KEY", server.api_key())
        .env("KOOP_ENV", "production")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().context("a process id")?;
    let stdout = child.stdout.take().context("stdout")?;
    // A profiler may print lines of its own first; the rest of stdout is drained, so a later
    // write of either never fails.
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let base = loop {
        let line = lines
            .next_line()
            .await?
            .context("koop serve announces its address")?;
        if let Some(base) = line.strip_prefix("koop serve: listening on ") {
            break base.to_owned();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Served { child, base, pid })
}

/// Samples a process's peak RSS until `done` resolves; returns the largest sample, in bytes.
pub(crate) async fn sample_peak<T>(
    pid: u32,
    done: impl std::future::Future<Output = T>,
) -> (T, u64) {
    let mut peak = 0;
    tokio::pin!(done);
    loop {
        tokio::select! {
            value = &mut done => {
                return (value, peak.max(peak_rss(pid).unwrap_or(0)));
            }
            () = tokio::time::sleep(Duration::from_millis(5)) => {
                peak = peak.max(peak_rss(pid).unwrap_or(0));
            }
        }
    }
}

/// A test server with one layer of `args.points` points, the layer fetched into a new cache
/// (the benchmarks measure serving, not the export), and `koop serve` on that cache.
pub(crate) async fn serve_points(
    args: &Args,
    work: &Path,
    layer_id: u64,
) -> Result<(TestServer, tempfile::TempDir, Served)> {
    let server = TestServer::start_with(TestServerConfig {
        layers: vec![TestLayer::generated(
            layer_id,
            "Bench points",
            GeneratedContent::Points { count: args.points },
        )],
        ..TestServerConfig::default()
    })
    .await?;
    let cache = tempfile::tempdir_in(work)?;
    run_koop(&server, cache.path(), &["get", &layer_id.to_string()]).await?;
    let koop_serve = start_serve(&server, cache.path()).await?;
    Ok((server, cache, koop_serve))
}

pub(crate) async fn geojson(args: &Args, work: &Path) -> Result<bool> {
    println!(
        "
geojson: koop serve streaming a layer of {} points",
        args.points
    );
    let layer_id = 30_000;
    let (server, _cache, mut koop_serve) = serve_points(args, work, layer_id).await?;
    let url = format!(
        "{}/koordinates/{}/{layer_id}/geojson",
        koop_serve.base,
        server.domain()
    );
    let client = reqwest::Client::builder().build()?;
    // Warm up: the provider reads the layer's details and schema on its first request.
    client
        .get(format!("{url}?warm=1"))
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await
        .ok();
    let started = Instant::now();
    let download = async {
        let mut response = client.get(&url).send().await?.error_for_status()?;
        let (mut bytes, mut features, mut tail) = (0_u64, 0_u64, Vec::new());
        let marker = br#"{"type":"Feature""#;
        while let Some(chunk) = response.chunk().await? {
            bytes += chunk.len() as u64;
            tail.extend_from_slice(&chunk);
            features += tail
                .windows(marker.len())
                .filter(|window| *window == marker)
                .count() as u64;
            let keep = tail.len().min(marker.len() - 1);
            tail.drain(..tail.len() - keep);
        }
        anyhow::Ok((bytes, features))
    };
    let (result, peak) = sample_peak(koop_serve.pid, download).await;
    let (bytes, features) = result?;
    let took = started.elapsed();
    let _ = tokio::process::Command::new("kill")
        .args(["-INT", &koop_serve.pid.to_string()])
        .status()
        .await;
    let _ = koop_serve.child.wait().await;
    ensure!(
        features == args.points,
        "streamed {features} of {} features",
        args.points
    );
    println!(
        "  {features} features, {:.0} MB in {:.1} s ({:.0} features/s, {:.0} MB/s)",
        mb(bytes),
        took.as_secs_f64(),
        features as f64 / took.as_secs_f64(),
        mb(bytes) / took.as_secs_f64()
    );
    println!(
        "  peak RSS of koop serve {:.1} MiB (goal < 100 MiB)  {}",
        mb(peak),
        verdict(peak < 100 * MB)
    );
    Ok(peak < 100 * MB)
}

/// Latencies of the requests a load generator made.
pub(crate) struct Load {
    pub(crate) requests: usize,
    pub(crate) latencies: Vec<Duration>,
}

impl Load {
    /// The `q` quantile (0..=1) of the latencies, in milliseconds.
    pub(crate) fn quantile_ms(&self, q: f64) -> f64 {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "an index into a non-empty list"
        )]
        let index = ((sorted.len() - 1) as f64 * q).round() as usize;
        sorted
            .get(index)
            .map_or(f64::NAN, |latency| latency.as_secs_f64() * 1000.0)
    }
}
