//! `koop serve` as a process on loopback, as an attacker and as clients meet it: hostile
//! queries, unlisted layers, slow and silent clients, large layers, tokens.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use koop_testkit::{GeneratedContent, TestLayer, TestServer};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connections that send their headers one line every 5 s.
const TRICKLING: usize = 300;
/// `/geojson` clients that never read.
const SILENT: usize = 600;

/// A running `koop serve`, killed when dropped.
pub(crate) struct Served {
    child: tokio::process::Child,
    /// `http://127.0.0.1:port`.
    pub(crate) base: String,
    /// `127.0.0.1:port`.
    pub(crate) address: String,
    stderr: tokio::task::JoinHandle<String>,
}

impl Served {
    /// `koop --domain <server> --cache-dir <cache> serve --bind 127.0.0.1:0 ARGS`, once it
    /// listens. Its log (`KOOP_LOG=info`) is collected from standard error.
    pub(crate) async fn start(site: &TestServer, cache: &Path, args: &[&str]) -> Result<Self> {
        Self::start_in(site, &[cache.as_os_str()], Vec::new(), args).await
    }

    /// As [`Served::start`], with `cache` as the cache options (`--cache-dir s3://…
    /// --local-cache-dir …`) and `env` added to its environment.
    pub(crate) async fn start_in(
        site: &TestServer,
        cache: &[&std::ffi::OsStr],
        env: Vec<(String, String)>,
        args: &[&str],
    ) -> Result<Self> {
        let (dir, rest) = cache.split_first().context("a cache")?;
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_koop"))
            .args(["--domain", &site.base_url(), "--cache-dir"])
            .arg(dir)
            .args(rest)
            .args(["serve", "--bind", "127.0.0.1:0"])
            .args(args)
            .envs(env)
            .env("KOORDINATES_API_KEY", site.api_key())
            .env("KOOP_LOG", "info")
            .env_remove("KOOPCACHE_DIR")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await??
            .context("koop serve printed nothing")?;
        let base = first
            .strip_prefix("koop serve: listening on ")
            .with_context(|| format!("the listening line: {first}"))?
            .to_owned();
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let mut stderr = child.stderr.take().context("stderr")?;
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text).await;
            text
        });
        let address = base.trim_start_matches("http://").to_owned();
        Ok(Self {
            child,
            base,
            address,
            stderr,
        })
    }

    /// The process id.
    pub(crate) fn pid(&self) -> Result<u32> {
        self.child.id().context("koop serve has exited")
    }

    /// Whether it still runs.
    pub(crate) fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Peak resident memory so far (`VmHWM` of `/proc/<pid>/status`), in bytes.
    pub(crate) fn peak_rss(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?))?;
        let line = status
            .lines()
            .find(|line| line.starts_with("VmHWM:"))
            .context("VmHWM")?;
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .context("a number")?
            .parse()?;
        Ok(kib * 1024)
    }

    /// Stops it (SIGTERM) and returns its log.
    pub(crate) async fn stop(mut self) -> Result<String> {
        let pid = self.pid()?;
        tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await?;
        let _ = tokio::time::timeout(Duration::from_secs(40), self.child.wait()).await;
        let _ = self.child.kill().await;
        Ok(self.stderr.await.unwrap_or_default())
    }
}

/// `GET url` with `query`: status and JSON body.
pub(crate) async fn get(url: &str, query: &[(&str, &str)]) -> Result<(u16, Value)> {
    Ok(koop_testkit::http::get_json(url, query).await?)
}

async fn status_answers(served: &Served) -> Result<Duration> {
    let started = Instant::now();
    let (status, body) = get(&format!("{}/status", served.base), &[]).await?;
    ensure!(status == 200 && body["success"] == true, "/status: {body}");
    Ok(started.elapsed())
}

pub(crate) fn query_url(served: &Served, site: &TestServer, layer: u64) -> String {
    format!(
        "{}/koordinates/rest/services/{}/{layer}/FeatureServer/0/query",
        served.base,
        site.domain()
    )
}

#[tokio::test]
async fn hostile_where_clauses_get_a_400_and_the_server_stays_up() -> Result<()> {
    let site = TestServer::start().await?;
    let cache = tempfile::tempdir()?;
    let served = Served::start(&site, cache.path(), &["--layers", "1001"]).await?;
    let query = query_url(&served, &site, 1001);
    let chain = vec!["1=1"; 4000].join(" AND ");
    let nested = format!("{}1=1{}", "(".repeat(5000), ")".repeat(5000));
    let client = reqwest::Client::new();
    for (name, clause) in [("4,000 ANDs", chain), ("5,000 parentheses", nested)] {
        // By POST (a 30 KB clause does not fit every URL) and by GET.
        let by_post: Value = client
            .post(&query)
            .form(&[("where", clause.as_str()), ("f", "json")])
            .send()
            .await?
            .json()
            .await?;
        assert_eq!(by_post["error"]["code"], 400, "{name}: {by_post}");
        assert!(by_post["error"]["details"].is_array(), "{name}: {by_post}");
        let (_, by_get) = get(&query, &[("where", clause.as_str())]).await?;
        assert_eq!(by_get["error"]["code"], 400, "{name}: {by_get}");
        status_answers(&served).await?;
    }
    // The attackers' generator, by GET and POST: every request is answered, none takes the
    // server down or past its deadline.
    let mut rng = fastrand::Rng::with_seed(12);
    for round in 0..200 {
        let params = koop_testkit::hostile::parameters(&mut rng, &["id", "name"]);
        let length: usize = params
            .iter()
            .map(|(name, value)| name.len() + value.len())
            .sum();
        let started = Instant::now();
        // GET while the URL stays short enough for clients to send it; POST otherwise.
        let response = if round % 2 == 0 || length > 4096 {
            client.post(&query).form(&params).send().await?
        } else {
            client.get(&query).query(&params).send().await?
        };
        let status = response.status().as_u16();
        let body = response.bytes().await?;
        ensure!(
            matches!(status, 200 | 304 | 400 | 404 | 413 | 414 | 431),
            "round {round}: HTTP {status} {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
        ensure!(
            started.elapsed() < Duration::from_secs(31),
            "round {round} took {:?}",
            started.elapsed()
        );
    }
    status_answers(&served).await?;
    // And it still answers queries.
    let (_, count) = get(&query, &[("where", "1=1"), ("returnCountOnly", "true")]).await?;
    assert_eq!(count["count"], 177);
    Ok(())
}

#[tokio::test]
async fn unlisted_layers_cost_no_export_and_raster_layers_are_never_exported() -> Result<()> {
    let site = TestServer::start().await?;
    let cache = tempfile::tempdir()?;
    // 1003 is a grid: listed, it is still no feature layer.
    let served = Served::start(&site, cache.path(), &["--layers", "1001,1003"]).await?;
    // Unlisted (under any spelling) or unknown: not served. Not a number: not a layer id.
    for (id, code) in [
        ("1002", 404),
        ("0001002", 404),
        ("1004", 404),
        ("99999999999", 404),
        ("+1002", 400),
        ("1002.0", 400),
    ] {
        let url = format!(
            "{}/koordinates/rest/services/{}/{id}/FeatureServer/0",
            served.base,
            site.domain()
        );
        let (_, body) = get(&url, &[]).await?;
        assert_eq!(body["error"]["code"], code, "{id}: {body}");
    }
    let (_, raster) = get(&query_url(&served, &site, 1003), &[("where", "1=1")]).await?;
    assert_eq!(raster["error"]["code"], 400, "{raster}");
    assert!(
        raster["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("only vector layers and tables")),
        "{raster}"
    );
    let counters = site.counters();
    assert_eq!(counters.exports_created, 0, "{counters:?}");
    for id in [1002, 1003, 1004] {
        assert_eq!(site.exports_created_for(id), 0, "layer {id}");
    }
    assert!(
        site.requests()
            .iter()
            .all(|request| !request.path.contains("/1002")),
        "an unlisted layer is not even looked up"
    );
    // A listed vector layer, named with leading zeros, is the same layer.
    let (_, count) = get(
        &query_url(&served, &site, 1001).replace("/1001/", "/0001001/"),
        &[("returnCountOnly", "true")],
    )
    .await?;
    assert_eq!(count["count"], 177, "{count}");
    assert_eq!(site.exports_created_for(1001), 1);
    Ok(())
}

#[tokio::test]
async fn trickling_headers_are_cut_off_and_the_server_answers_meanwhile() -> Result<()> {
    let site = TestServer::start().await?;
    let cache = tempfile::tempdir()?;
    let mut served = Served::start(&site, cache.path(), &[]).await?;
    let mut slow = Vec::with_capacity(TRICKLING);
    for _ in 0..TRICKLING {
        let mut stream = TcpStream::connect(&served.address).await?;
        stream.write_all(b"GET /status HTTP/1.1\r\n").await?;
        slow.push(stream);
    }
    let started = Instant::now();
    let mut last_line = Instant::now();
    let mut open = TRICKLING;
    let mut buffer = [0u8; 256];
    // One header line from each every 5 s; count the connections the server has closed.
    while open > 0 {
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "{open} of {TRICKLING} trickling connections still open after 30 s"
        );
        status_answers(&served).await?;
        let trickle = last_line.elapsed() >= Duration::from_secs(5);
        if trickle {
            last_line = Instant::now();
        }
        open = 0;
        for stream in &mut slow {
            let read =
                tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buffer)).await;
            let closed = match read {
                // Closed, or answered (408) before closing.
                Ok(Ok(_) | Err(_)) => true,
                Err(_) => trickle && stream.write_all(b"X-Trickle: 1\r\n").await.is_err(),
            };
            if !closed {
                open += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "{TRICKLING} trickling connections closed after {:?}",
        started.elapsed()
    );
    assert!(served.running());
    Ok(())
}

#[tokio::test]
async fn silent_geojson_clients_leave_counts_fast() -> Result<()> {
    let site = site_with_points(7001).await?;
    let cache = tempfile::tempdir()?;
    let mut served = Served::start(&site, cache.path(), &["--layers", "7001"]).await?;
    let count_url = query_url(&served, &site, 7001);
    let (_, count) = get(
        &count_url,
        &[("where", "category='c3'"), ("returnCountOnly", "true")],
    )
    .await?;
    assert_eq!(count["count"], 10_000, "{count}");

    let request = format!(
        "GET /koordinates/{}/7001/geojson HTTP/1.1\r\nHost: x\r\n\r\n",
        site.domain()
    );
    let mut silent = Vec::with_capacity(SILENT);
    for _ in 0..SILENT {
        silent.push(send(&served, &request).await?);
    }
    // Let the server fill their sockets.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        let (_, count) = get(
            &count_url,
            &[("where", "category='c3'"), ("returnCountOnly", "true")],
        )
        .await?;
        slowest = slowest.max(started.elapsed());
        assert_eq!(count["count"], 10_000, "{count}");
    }
    assert!(
        slowest < Duration::from_millis(100),
        "a count took {slowest:?}"
    );
    let peak = served.peak_rss()?;
    assert!(served.running());
    drop(silent);
    eprintln!(
        "600 silent /geojson clients: peak RSS {} MiB, slowest count {slowest:?}",
        peak >> 20
    );
    Ok(())
}

/// A test site holding one generated layer `id` of 100,000 points.
async fn site_with_points(id: u64) -> Result<TestServer> {
    let site = TestServer::start().await?;
    site.add_layer(TestLayer::generated(
        id,
        "Many points",
        GeneratedContent::Points { count: 100_000 },
    ))?;
    Ok(site)
}

/// A connection to `served` that has sent `request` (raw HTTP) and reads nothing yet.
async fn send(served: &Served, request: &str) -> Result<TcpStream> {
    let mut stream = TcpStream::connect(&served.address).await?;
    stream.write_all(request.as_bytes()).await?;
    Ok(stream)
}

/// Reads an HTTP response head from `stream`: its status code.
async fn status_of(stream: &mut TcpStream) -> Result<u16> {
    let mut head = vec![0_u8; 512];
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut head)).await??;
    let line = String::from_utf8_lossy(&head[..read]);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP answer: {line:?}"))
}

#[tokio::test]
async fn geojson_streams_past_max_streams_wait_then_get_503() -> Result<()> {
    let site = site_with_points(7002).await?;
    let cache = tempfile::tempdir()?;
    let mut served = Served::start(
        &site,
        cache.path(),
        &[
            "--layers",
            "7002",
            "--max-streams",
            "2",
            "--request-timeout",
            "2s",
        ],
    )
    .await?;
    let request = format!(
        "GET /koordinates/{}/7002/geojson HTTP/1.1\r\nHost: x\r\n\r\n",
        site.domain()
    );
    // Two clients that never read take both streams.
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut stream = send(&served, &request).await?;
        assert_eq!(status_of(&mut stream).await?, 200);
        holders.push(stream);
    }
    // A third waits for one until its deadline (2 s), then is told to come back.
    let started = Instant::now();
    let mut third = send(&served, &request).await?;
    assert_eq!(status_of(&mut third).await?, 503);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(10),
        "answered after {waited:?}"
    );
    // Counts are not streams: they answer meanwhile.
    let (_, count) = get(
        &query_url(&served, &site, 7002),
        &[("where", "1=1"), ("returnCountOnly", "true")],
    )
    .await?;
    assert_eq!(count["count"], 100_000, "{count}");
    // A client that leaves gives its stream back: the next one streams the whole layer.
    drop(holders.pop());
    let body = reqwest::get(format!(
        "{}/koordinates/{}/7002/geojson",
        served.base,
        site.domain()
    ))
    .await?;
    assert_eq!(body.status(), 200);
    let text = body.text().await?;
    let document: Value = serde_json::from_str(&text)?;
    assert_eq!(document["features"].as_array().map(Vec::len), Some(100_000));
    assert!(served.running());
    Ok(())
}

#[tokio::test]
async fn distinct_values_of_a_million_features_stay_in_bounded_memory() -> Result<()> {
    let site = TestServer::start().await?;
    site.add_layer(TestLayer::generated(
        7002,
        "A million points",
        GeneratedContent::Points { count: 1_000_000 },
    ))?;
    let cache = tempfile::tempdir()?;
    let served = Served::start(&site, cache.path(), &["--layers", "7002"]).await?;
    let url = query_url(&served, &site, 7002);
    // Fetched into the cache first (the download's buffers are not the query's memory).
    let started = Instant::now();
    let count = loop {
        let (_, count) = get(&url, &[("returnCountOnly", "true")]).await?;
        let fetching = count["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("is being fetched"));
        if !fetching {
            break count;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(300),
            "not fetched: {count}"
        );
    };
    eprintln!("a million points fetched in {:?}", started.elapsed());
    assert_eq!(count["count"], 1_000_000, "{count}");
    let before = served.peak_rss()?;
    let (_, distinct) = get(
        &url,
        &[
            ("where", "1=1"),
            ("returnDistinctValues", "true"),
            ("outFields", "name"),
            ("returnGeometry", "false"),
        ],
    )
    .await?;
    let features = distinct["features"].as_array().context("features")?;
    assert_eq!(features.len(), 2000, "a page of maxRecordCount: {distinct}");
    assert_eq!(distinct["exceededTransferLimit"], true);
    let (_, deep) = get(
        &url,
        &[
            ("orderByFields", "name DESC"),
            ("resultOffset", "900000"),
            ("resultRecordCount", "10"),
            ("outFields", "name"),
        ],
    )
    .await?;
    assert_eq!(
        deep["features"].as_array().map(Vec::len),
        Some(10),
        "{deep}"
    );
    let peak = served.peak_rss()?;
    eprintln!(
        "distinct and a deep ordered page of 1,000,000: peak RSS {} MiB (after the fetch {} MiB)",
        peak >> 20,
        before >> 20
    );
    assert!(peak < 150 << 20, "peak RSS {} MiB", peak >> 20);
    Ok(())
}

#[tokio::test]
async fn tokens_from_an_auth_file_guard_every_layer_and_never_reach_the_log() -> Result<()> {
    let site = TestServer::start().await?;
    let cache = tempfile::tempdir()?;
    // The hash, made by koop itself from standard input.
    let mut hasher = tokio::process::Command::new(env!("CARGO_BIN_EXE_koop"))
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    hasher
        .stdin
        .take()
        .context("stdin")?
        .write_all(b"correct horse battery\n")
        .await?;
    let output = hasher.wait_with_output().await?;
    ensure!(output.status.success(), "hash-password failed");
    let hash = String::from_utf8(output.stdout)?.trim().to_owned();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let users = cache.path().join("users.json");
    std::fs::write(
        &users,
        serde_json::to_string(&serde_json::json!({
            "users": [{"username": "analyst", "password_hash": hash}],
            "token_minutes": 5,
        }))?,
    )?;
    let served = Served::start(
        &site,
        cache.path(),
        &["--layers", "1001", "--auth-file", &users.to_string_lossy()],
    )
    .await?;
    let query = query_url(&served, &site, 1001);
    let (_, missing) = get(&query, &[("returnCountOnly", "true")]).await?;
    assert_eq!(missing["error"]["code"], 499, "{missing}");
    let (_, forged) = get(
        &query,
        &[
            ("returnCountOnly", "true"),
            ("token", "eyJhbGciOiJub25lIn0.e30."),
        ],
    )
    .await?;
    assert_eq!(forged["error"]["code"], 498, "{forged}");
    assert_eq!(site.counters().exports_created, 0, "no token, no export");

    let (_, info) = get(&format!("{}/koordinates/rest/info", served.base), &[]).await?;
    assert_eq!(info["authInfo"]["isTokenBasedSecurity"], true, "{info}");
    let generate = format!("{}/koordinates/rest/generateToken", served.base);
    let client = reqwest::Client::new();
    let wrong: Value = client
        .post(&generate)
        .form(&[
            ("username", "analyst"),
            ("password", "wrong"),
            ("f", "json"),
        ])
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(wrong["error"]["code"], 400, "{wrong}");
    let token: Value = client
        .post(&generate)
        .form(&[
            ("username", "analyst"),
            ("password", "correct horse battery"),
            ("f", "json"),
        ])
        .send()
        .await?
        .json()
        .await?;
    let token = token["token"].as_str().context("a token")?.to_owned();
    let (_, count) = get(&query, &[("returnCountOnly", "true"), ("token", &token)]).await?;
    assert_eq!(count["count"], 177, "{count}");
    let bearer: Value = client
        .get(&query)
        .query(&[("returnCountOnly", "true")])
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(bearer["count"], 177, "{bearer}");

    let log = served.stop().await?;
    assert!(
        log.contains("FeatureServer/0/query"),
        "requests are logged: {log}"
    );
    for secret in [token.as_str(), "correct horse battery", site.api_key()] {
        assert!(!log.contains(secret), "the log holds a secret: {log}");
    }
    Ok(())
}

#[cfg(not(target_env = "msvc"))]
/// jemalloc's options in effect in `koop` run with `_RJEM_MALLOC_CONF=conf`, read from the
/// statistics jemalloc prints at exit (`stats_print:true`): `(name, value)` of each `opt.` line
/// (`opt.dirty_decay_ms: 250 (arenas.dirty_decay_ms: 250)` gives `("dirty_decay_ms", "250")`).
fn allocator_options(conf: &str) -> Result<Vec<(String, String)>> {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_koop"))
        .arg("--version")
        .env("_RJEM_MALLOC_CONF", conf)
        .output()?;
    ensure!(output.status.success(), "koop --version failed: {output:?}");
    let printed = String::from_utf8_lossy(&output.stderr);
    Ok(printed
        .lines()
        .filter_map(|line| line.trim().strip_prefix("opt."))
        .filter_map(|line| line.split_once(": "))
        .map(|(name, value)| {
            let value = value.split_whitespace().next().unwrap_or_default();
            (name.to_owned(), value.to_owned())
        })
        .collect())
}

#[cfg(not(target_env = "msvc"))]
#[test]
fn koop_runs_on_jemalloc_with_its_built_in_options_unless_told_otherwise() -> Result<()> {
    let option = |options: &[(String, String)], name: &str| {
        options
            .iter()
            .find(|(option, _)| option == name)
            .map(|(_, value)| value.clone())
    };
    let built_in = allocator_options("stats_print:true")?;
    // The options `.cargo/config.toml` builds in (the README's memory figures depend on them).
    for (name, value) in [
        ("narenas", "1"),
        ("background_thread", "true"),
        ("dirty_decay_ms", "250"),
        ("muzzy_decay_ms", "0"),
        ("tcache_max", "4096"),
    ] {
        assert_eq!(
            option(&built_in, name).as_deref(),
            Some(value),
            "opt.{name}: {built_in:?}"
        );
    }
    // A user's own options win.
    let chosen = allocator_options("narenas:3,stats_print:true")?;
    assert_eq!(
        option(&chosen, "narenas").as_deref(),
        Some("3"),
        "{chosen:?}"
    );
    assert_eq!(option(&chosen, "dirty_decay_ms").as_deref(), Some("250"));
    Ok(())
}
