//! koop's benchmarks: the release `koop` binary against koop-testkit on loopback.
//!
//! Each figure is printed as a ratio to its limit, so it holds on a noisy machine:
//!
//! - **mirror**: 100 layers of ~5 MB with export latencies spread over 1–3 s; koop's wall time ÷
//!   the ideal schedule's lower bound, `max(longest latency, sum of latencies ÷ jobs) + bytes ÷
//!   single-stream loopback throughput` (goal ≤ 1.25).
//! - **large**: one 1 GB layer; `curl` download + `unzip` time ÷ koop's time (goal ≥ 0.9), and
//!   koop's peak RSS (goal ≤ 64 MiB), also at a quarter of the size to show it does not grow.
//! - **hit**: `koop get` on a cached layer: requests made (goal 1; offline 0) and wall time.
//! - **geojson**: `koop serve` streaming a layer of 1 million points as GeoJSON: time, features
//!   per second, and the server's peak RSS (goal < 100 MiB).
//!
//! - **featureserver**: `koop serve` answering FeatureServer queries on a layer of 1 million
//!   points, from a load generator on loopback at concurrency 1 and 8: requests per second and
//!   p50/p99 latency of a paged attribute query (goal ≥ 200/s), an envelope query of up to 1000
//!   features (goal ≥ 220/s) and a count (goal ≥ 250/s), and the server's peak RSS (goal
//!   ≤ 100 MiB).
//!
//! Run with `cargo xtask bench [mirror|large|hit|geojson|featureserver]`, which builds `koop` and this harness in
//! release mode; `koop` is found next to this executable.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use clap::Parser;
use koop_testkit::{GeneratedContent, TestLayer, TestServer, TestServerConfig};

#[derive(Parser)]
#[command(about = "koop benchmarks against koop-testkit on loopback")]
struct Args {
    /// Which benchmarks: mirror, large, hit, geojson, featureserver (default: all).
    benches: Vec<String>,
    /// Layers mirrored.
    #[arg(long, default_value_t = 100)]
    layers: usize,
    /// Size of each mirrored layer, in MB.
    #[arg(long, default_value_t = 5)]
    layer_mb: u64,
    /// Exports in flight during the mirror (koop's default is 8).
    #[arg(long, default_value_t = 8)]
    jobs: usize,
    /// Size of the large layer, in MB.
    #[arg(long, default_value_t = 1024)]
    large_mb: u64,
    /// Points in the GeoJSON benchmark's layer.
    #[arg(long, default_value_t = 1_000_000)]
    points: u64,
    /// Seconds each FeatureServer query runs at each concurrency.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Where to put the data (default: a temporary directory).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

const MB: u64 = 1024 * 1024;

fn koop_binary() -> Result<PathBuf> {
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
struct Measured {
    wall: Duration,
    peak_rss: u64,
    stdout: String,
}

/// Peak resident set size of a live process, from `/proc/{pid}/status` (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Runs `koop` with `args` against `server`, sampling its peak RSS every 5 ms.
async fn run_koop(server: &TestServer, cache: &Path, args: &[&str]) -> Result<Measured> {
    let started = Instant::now();
    let mut child = tokio::process::Command::new(koop_binary()?)
        .arg("--domain")
        .arg(server.base_url())
        .arg("--cache-dir")
        .arg(cache)
        .arg("--quiet")
        .args(args)
        .env("KOORDINATES_API_KEY", server.api_key())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id().context("a process id")?;
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
    let output = child.wait_with_output().await?;
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

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / MB as f64
}

/// Creates an export of `layer_id` (latency 0) and returns its download URL.
async fn download_url(server: &TestServer, layer_id: u64) -> Result<String> {
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
async fn single_stream_throughput(server: &TestServer, urls: &[String]) -> Result<f64> {
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

async fn mirror(args: &Args, work: &Path) -> Result<bool> {
    println!(
        "\nmirror: {} layers of ~{} MB, export latencies 1–3 s, --jobs {}",
        args.layers, args.layer_mb, args.jobs
    );
    let sample = work.join("mirror-layer.gpkg");
    GeneratedContent::Polygons {
        target_bytes: args.layer_mb * MB,
    }
    .generate(&sample, 7)?;
    let bytes = tokio::fs::read(&sample).await?;
    let count = args.layers.max(1);
    let latencies: Vec<Duration> = (0..count)
        .map(|index| Duration::from_secs_f64(1.0 + 2.0 * index as f64 / (count.max(2) - 1) as f64))
        .collect();
    let layers = (0..count)
        .map(|index| {
            TestLayer::vector(
                10_000 + index as u64,
                &format!("Mirror layer {index}"),
                bytes.clone(),
            )
        })
        .collect();
    // No reuse of identical exports: the throughput measurement below exports every layer first.
    let server = TestServer::start_with(TestServerConfig {
        layers,
        reuse_identical_exports: false,
        ..TestServerConfig::default()
    })
    .await?;
    let ids: Vec<u64> = (0..count as u64).map(|index| 10_000 + index).collect();
    let mut zip_bytes = 0;
    for id in &ids {
        zip_bytes += std::fs::metadata(server.export_zip(*id).await?)?.len();
    }
    // Single-stream loopback throughput: every layer's ZIP, one after another, on one connection.
    let mut urls = Vec::new();
    for id in &ids {
        urls.push(download_url(&server, *id).await?);
    }
    let throughput = single_stream_throughput(&server, &urls).await?;
    for (id, latency) in ids.iter().zip(&latencies) {
        server.set_export_latency(*id, *latency);
    }

    let list = work.join("mirror.txt");
    std::fs::write(
        &list,
        ids.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
    )?;
    let cache = tempfile::tempdir_in(work)?;
    let jobs = args.jobs.to_string();
    let measured = run_koop(
        &server,
        cache.path(),
        &[
            "mirror",
            "--jobs",
            &jobs,
            "--from",
            list.to_str().context("utf-8")?,
        ],
    )
    .await?;
    ensure!(
        measured.stdout.lines().count() == count,
        "every layer was mirrored"
    );

    let longest = latencies
        .iter()
        .max()
        .copied()
        .unwrap_or_default()
        .as_secs_f64();
    let sum: f64 = latencies.iter().map(Duration::as_secs_f64).sum();
    let transfer = zip_bytes as f64 / throughput;
    let ideal = longest.max(sum / args.jobs.max(1) as f64) + transfer;
    let ratio = measured.wall.as_secs_f64() / ideal;
    println!(
        "  koop mirror {:.1} s; ideal ≥ {ideal:.1} s = max({longest:.1} s, {sum:.0} s ÷ {}) + {:.0} MB ÷ {:.0} MB/s",
        measured.wall.as_secs_f64(),
        args.jobs,
        mb(zip_bytes),
        throughput / MB as f64
    );
    println!(
        "  ratio {ratio:.2} (goal ≤ 1.25)  {}",
        verdict(ratio <= 1.25)
    );
    println!("  peak RSS of koop {:.0} MiB", mb(measured.peak_rss));
    Ok(ratio <= 1.25)
}

/// Time of `curl` downloading `url` and `unzip` extracting it.
async fn curl_and_unzip(server: &TestServer, url: &str, work: &Path) -> Result<Duration> {
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

async fn large(args: &Args, work: &Path) -> Result<bool> {
    println!("\nlarge: one layer of {} MB", args.large_mb);
    let mut sizes = vec![(args.large_mb / 4).max(16), args.large_mb];
    sizes.dedup();
    let mut all_ok = true;
    let mut peaks = Vec::new();
    for (index, size) in sizes.iter().enumerate() {
        let layer_id = 20_000 + index as u64;
        let server = TestServer::start_with(TestServerConfig {
            layers: vec![TestLayer::generated(
                layer_id,
                &format!("Large layer {size} MB"),
                GeneratedContent::Polygons {
                    target_bytes: size * MB,
                },
            )],
            ..TestServerConfig::default()
        })
        .await?;
        let generating = Instant::now();
        let zip = server.export_zip(layer_id).await?;
        let zip_len = std::fs::metadata(&zip)?.len();
        println!(
            "  {size} MB layer: ZIP of {:.0} MB ready in {:.0} s",
            mb(zip_len),
            generating.elapsed().as_secs_f64()
        );
        let url = download_url(&server, layer_id).await?;
        let baseline = curl_and_unzip(&server, &url, work).await?;
        let cache = tempfile::tempdir_in(work)?;
        let measured = run_koop(&server, cache.path(), &["get", &layer_id.to_string()]).await?;
        let path = PathBuf::from(measured.stdout.trim());
        let layer_bytes = std::fs::metadata(&path)?.len();
        let ratio = baseline.as_secs_f64() / measured.wall.as_secs_f64();
        println!(
            "    koop get {:.1} s ({:.0} MB/s of layer), curl + unzip {:.1} s; ratio {ratio:.2} (goal ≥ 0.9)  {}",
            measured.wall.as_secs_f64(),
            mb(layer_bytes) / measured.wall.as_secs_f64(),
            baseline.as_secs_f64(),
            verdict(ratio >= 0.9)
        );
        println!(
            "    peak RSS of koop {:.1} MiB (goal ≤ 64 MiB)  {}",
            mb(measured.peak_rss),
            verdict(measured.peak_rss <= 64 * MB)
        );
        peaks.push((*size, measured.peak_rss));
        if *size == args.large_mb {
            all_ok &= ratio >= 0.9 && measured.peak_rss <= 64 * MB;
        }
    }
    if let [(small, small_peak), (big, big_peak)] = peaks[..] {
        println!(
            "  peak RSS at {small} MB: {:.1} MiB, at {big} MB: {:.1} MiB: memory does not grow with the layer",
            mb(small_peak),
            mb(big_peak)
        );
    }
    Ok(all_ok)
}

async fn hit(work: &Path) -> Result<bool> {
    println!("\ncache hit: koop get on a cached layer");
    let server = TestServer::start().await?;
    let cache = tempfile::tempdir_in(work)?;
    run_koop(&server, cache.path(), &["get", "1002"]).await?;
    let before = server.counters();
    let online = run_koop(&server, cache.path(), &["get", "1002"]).await?;
    let after = server.counters();
    let offline = run_koop(&server, cache.path(), &["--offline", "get", "1002"]).await?;
    let offline_requests = server.counters().api_requests - after.api_requests;
    let requests = after.api_requests - before.api_requests;
    let exports = after.exports_created - before.exports_created;
    println!(
        "  koop get: {requests} request(s), {exports} export(s), {:.0} ms (goal 1 request)  {}",
        online.wall.as_secs_f64() * 1000.0,
        verdict(requests == 1 && exports == 0)
    );
    println!(
        "  koop --offline get: {offline_requests} request(s), {:.0} ms (goal 0)  {}",
        offline.wall.as_secs_f64() * 1000.0,
        verdict(offline_requests == 0)
    );
    Ok(requests == 1 && exports == 0 && offline_requests == 0)
}

/// A `koop serve` child process and its address.
struct Served {
    child: tokio::process::Child,
    base: String,
    pid: u32,
}

async fn start_serve(server: &TestServer, cache: &Path) -> Result<Served> {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(koop_binary()?)
        .arg("--domain")
        .arg(server.base_url())
        .arg("--cache-dir")
        .arg(cache)
        .args(["--quiet", "serve", "--bind", "127.0.0.1:0"])
        .env("KOORDINATES_API_KEY", server.api_key())
        .env("KOOP_ENV", "production")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().context("a process id")?;
    let stdout = child.stdout.take().context("stdout")?;
    let line = tokio::io::BufReader::new(stdout)
        .lines()
        .next_line()
        .await?
        .context("koop serve's address")?;
    let base = line
        .strip_prefix("koop serve: listening on ")
        .context("koop serve announces its address")?
        .to_owned();
    Ok(Served { child, base, pid })
}

/// Samples a process's peak RSS until `done` resolves; returns the largest sample, in bytes.
async fn sample_peak<T>(pid: u32, done: impl std::future::Future<Output = T>) -> (T, u64) {
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
async fn serve_points(
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

async fn geojson(args: &Args, work: &Path) -> Result<bool> {
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
struct Load {
    requests: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Load {
    fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// The `q` quantile (0..=1) of the latencies, in milliseconds.
    fn quantile_ms(&self, q: f64) -> f64 {
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

/// GETs `url` from `concurrency` workers for `duration`, reading every body whole.
async fn load(url: &str, concurrency: usize, duration: Duration) -> Result<Load> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (client, url) = (client.clone(), url.to_owned());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let sent = Instant::now();
                let body = client
                    .get(&url)
                    .send()
                    .await?
                    .error_for_status()?
                    .bytes()
                    .await?;
                latencies.push(sent.elapsed());
                ensure!(
                    !body.starts_with(br#"{"error""#),
                    "{}",
                    String::from_utf8_lossy(&body)
                );
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await??);
    }
    Ok(Load {
        requests: latencies.len(),
        elapsed: started.elapsed(),
        latencies,
    })
}

async fn featureserver(args: &Args, work: &Path) -> Result<bool> {
    println!(
        "
featureserver: koop serve answering FeatureServer queries on a layer of {} points",
        args.points
    );
    let layer_id = 30_001;
    let (server, _cache, mut koop_serve) = serve_points(args, work, layer_id).await?;
    let query = format!(
        "{}/koordinates/rest/services/{}/{layer_id}/FeatureServer/0/query",
        koop_serve.base,
        server.domain()
    );
    // Wellington, about 34 km square: some 800 of the million points.
    let scenarios = [
        (
            "paged attribute query",
            "where=category%3D%27c3%27&outFields=*&resultOffset=2000&resultRecordCount=1000&f=json",
            200.0,
            Some(1000),
        ),
        (
            "envelope query",
            "geometry=174.6%2C-41.4%2C175.0%2C-41.1&geometryType=esriGeometryEnvelope&inSR=4326&spatialRel=esriSpatialRelIntersects&outFields=*&resultRecordCount=1000&f=json",
            220.0,
            None,
        ),
        (
            "count",
            "where=1%3D1&returnCountOnly=true&f=json",
            250.0,
            None,
        ),
    ];
    let client = reqwest::Client::new();
    let mut all_met = true;
    let pid = koop_serve.pid;
    let run = async {
        for (name, parameters, goal, expected) in scenarios {
            let url = format!("{query}?{parameters}");
            // Check the answer (and warm the provider up) before measuring.
            let answer: serde_json::Value = client.get(&url).send().await?.json().await?;
            ensure!(answer.get("error").is_none(), "{name}: {answer}");
            let features = answer["features"].as_array().map_or(0, Vec::len);
            if let Some(expected) = expected {
                ensure!(
                    features == expected,
                    "{name}: {features} features, not {expected}"
                );
            }
            let detail = match answer["count"].as_u64() {
                Some(count) => format!("count {count}"),
                None => format!("{features} features"),
            };
            let mut line = format!("  {name:<22} ({detail})");
            let mut slowest = f64::INFINITY;
            for concurrency in [1, 8] {
                let measured = load(&url, concurrency, Duration::from_secs(args.seconds)).await?;
                slowest = slowest.min(measured.per_second());
                let _ = write!(
                    line,
                    "  c={concurrency}: {:.0}/s p50 {:.1} ms p99 {:.1} ms",
                    measured.per_second(),
                    measured.quantile_ms(0.5),
                    measured.quantile_ms(0.99)
                );
            }
            // The goal holds at both concurrencies.
            let met = slowest >= goal;
            all_met &= met;
            println!("{line}  (goal ≥ {goal:.0}/s)  {}", verdict(met));
        }
        anyhow::Ok(())
    };
    let (result, peak) = sample_peak(pid, run).await;
    let _ = tokio::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .await;
    let _ = koop_serve.child.wait().await;
    result?;
    println!(
        "  peak RSS of koop serve {:.1} MiB (goal ≤ 100 MiB)  {}",
        mb(peak),
        verdict(peak <= 100 * MB)
    );
    Ok(all_met && peak <= 100 * MB)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let temporary = tempfile::Builder::new().prefix("koop-bench-").tempdir()?;
    let work = args
        .work_dir
        .clone()
        .unwrap_or_else(|| temporary.path().to_owned());
    std::fs::create_dir_all(&work)?;
    let wanted =
        |name: &str| args.benches.is_empty() || args.benches.iter().any(|bench| bench == name);
    println!(
        "koop benchmarks: release build against koop-testkit on loopback, {} CPU(s)",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    let mut results = Vec::new();
    if wanted("mirror") {
        results.push(("mirror", mirror(&args, &work).await?));
    }
    if wanted("large") {
        results.push(("large", large(&args, &work).await?));
    }
    if wanted("hit") {
        results.push(("hit", hit(&work).await?));
    }
    if wanted("geojson") {
        results.push(("geojson", geojson(&args, &work).await?));
    }
    if wanted("featureserver") {
        results.push(("featureserver", featureserver(&args, &work).await?));
    }
    let missed: Vec<&str> = results
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| *name)
        .collect();
    println!();
    if missed.is_empty() {
        println!("every goal met");
    } else {
        println!("goals missed: {}", missed.join(", "));
    }
    Ok(())
}
