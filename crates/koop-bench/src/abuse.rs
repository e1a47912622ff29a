//! `abuse`: `koop serve` under four attacks at once, and what its legitimate users see meanwhile.
//!
//! For `--abuse-seconds` (default 60) on loopback:
//! - **slowloris**: 300 connections that send a request's headers one line every 5 s, reopened as
//!   the server closes them;
//! - **non-readers**: 600 connections that ask for a layer's GeoJSON and never read, reopened as
//!   the server drops them;
//! - **random ids**: 4 workers asking for random layer ids (none listed, none cached);
//! - **where generator**: 4 workers posting `koop_testkit::hostile` query parameters to the real
//!   layer.
//!
//! Meanwhile a probe asks `/status` every 50 ms and a count query every 100 ms. Figures: the
//! server's peak RSS (`VmHWM`, goal ≤ 150 MiB), p50/p99 of both probes (goal: `/status` p99 ≤
//! 50 ms), requests answered, and whether the process is still running (goal: always).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Args;
use crate::common::{MB, current_rss, mb, peak_rss, verdict};
use crate::serve::{Load, serve_points};

/// How many requests one kind of attacker got answered, and how many failed.
#[derive(Default)]
struct Tally {
    answered: AtomicU64,
    failed: AtomicU64,
}

impl Tally {
    fn line(&self) -> String {
        format!(
            "{} answered, {} refused or cut",
            self.answered.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed)
        )
    }
}

/// Whether the server has closed `stream` (or answered it). A slow client reads without
/// waiting (an answer, 408, or the end); a client that never reads writes a blank line
/// instead, which fails once the server has dropped the connection.
async fn closed(stream: &mut TcpStream, reads: bool) -> bool {
    if !reads {
        return stream.write_all(b"\r\n").await.is_err();
    }
    let mut buffer = [0u8; 512];
    matches!(
        tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buffer)).await,
        Ok(Ok(_) | Err(_))
    )
}

/// Keeps `count` connections open that each send `opening` and then, when `trickle`, one header
/// line every 5 s (a trickling client reads, a non-trickling one never does); reopens those the
/// server closes, counting each close.
async fn hold(
    address: String,
    opening: Vec<u8>,
    count: usize,
    trickle: bool,
    until: Instant,
    closes: Arc<Tally>,
) {
    let mut streams: Vec<Option<TcpStream>> = (0..count).map(|_| None).collect();
    let mut last_line = Instant::now();
    while Instant::now() < until {
        let line_due = trickle && last_line.elapsed() >= Duration::from_secs(5);
        if line_due {
            last_line = Instant::now();
        }
        for slot in &mut streams {
            if let Some(stream) = slot {
                let gone = closed(stream, trickle).await
                    || (line_due && stream.write_all(b"X-Slow: 1\r\n").await.is_err());
                if gone {
                    closes.answered.fetch_add(1, Ordering::Relaxed);
                    *slot = None;
                }
            }
            if slot.is_none() {
                if let Ok(mut stream) = TcpStream::connect(&address).await
                    && stream.write_all(&opening).await.is_ok()
                {
                    *slot = Some(stream);
                } else {
                    closes.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A worker sending `request(rng)` until `until`.
async fn attack(
    client: reqwest::Client,
    until: Instant,
    seed: u64,
    tally: Arc<Tally>,
    trace: Option<u32>,
    request: impl Fn(&reqwest::Client, &mut fastrand::Rng) -> reqwest::RequestBuilder,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    while Instant::now() < until {
        let before = trace.and_then(peak_rss).unwrap_or(0);
        let state = rng.get_seed();
        let sent = request(&client, &mut rng)
            .timeout(Duration::from_secs(40))
            .send();
        let answered = match sent.await {
            Ok(response) => response.bytes().await.is_ok(),
            Err(_) => false,
        };
        let counter = if answered {
            &tally.answered
        } else {
            &tally.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(after) = trace.and_then(peak_rss)
            && after > before + (2 << 20)
        {
            let mut replay = fastrand::Rng::with_seed(state);
            let params = koop_testkit::hostile::parameters(
                &mut replay,
                &["id", "category", "value", "name", "observed"],
            );
            let shown: Vec<String> = params
                .iter()
                .map(|(name, value)| {
                    format!("{name}={}", value.chars().take(100).collect::<String>())
                })
                .collect();
            println!("  +{} MiB: {}", (after - before) >> 20, shown.join(" & "));
        }
    }
}

/// GETs `url` every `every` until `until`: the latencies, and how many failed (no answer within
/// 5 s, or an error).
async fn probe(url: String, every: Duration, until: Instant) -> (Load, u64) {
    let client = reqwest::Client::new();
    let mut latencies = Vec::new();
    let mut failed = 0;
    let mut next = Instant::now();
    while Instant::now() < until {
        let sent = Instant::now();
        let ok = match client
            .get(&url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
        {
            Ok(response) => response
                .bytes()
                .await
                .is_ok_and(|body| !body.starts_with(br#"{"error""#)),
            Err(_) => false,
        };
        if ok {
            latencies.push(sent.elapsed());
        } else {
            failed += 1;
        }
        next += every;
        tokio::time::sleep_until(next.into()).await;
    }
    (
        Load {
            requests: latencies.len(),
            latencies,
        },
        failed,
    )
}

/// The server's RSS, open file descriptors and threads every 5 s until `until`.
async fn timeline(pid: u32, until: Instant) -> Vec<(u64, usize, usize)> {
    let mut timeline = Vec::new();
    while Instant::now() < until {
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
        let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, Iterator::count);
        timeline.push((current_rss(pid).unwrap_or(0), fds, threads));
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    timeline
}

pub(crate) async fn abuse(args: &Args, work: &std::path::Path) -> Result<bool> {
    let seconds = args.abuse_seconds;
    println!(
        "\nabuse: {seconds} s of slowloris (300), non-readers (600), random ids and hostile queries against koop serve ({} points)",
        args.points
    );
    let layer_id = 30_002;
    let (server, _cache, mut koop_serve) = serve_points(args, work, layer_id).await?;
    let base = koop_serve.base.clone();
    let address = base.trim_start_matches("http://").to_owned();
    let domain = server.domain();
    let query =
        format!("{base}/koordinates/rest/services/{domain}/{layer_id}/FeatureServer/0/query");
    let count = format!("{query}?where=category%3D%27c3%27&returnCountOnly=true&f=json");
    // Warm: the layer is open before the attack.
    let warm: serde_json::Value = reqwest::get(&count).await?.json().await?;
    anyhow::ensure!(warm["count"].as_u64().is_some(), "count: {warm}");

    let until = Instant::now() + Duration::from_secs(seconds);
    let slowloris = Arc::new(Tally::default());
    let silent = Arc::new(Tally::default());
    let ids = Arc::new(Tally::default());
    let hostile = Arc::new(Tally::default());
    // KOOP_BENCH_ATTACKS=slowloris,silent,ids,hostile runs some attacks only (to find which
    // one costs what).
    let chosen = std::env::var("KOOP_BENCH_ATTACKS").ok();
    let runs = |name: &str| {
        chosen
            .as_deref()
            .is_none_or(|list| list.split(',').any(|item| item.trim() == name))
    };
    // KOOP_BENCH_TRACE=1: print each hostile request that raised the server's peak RSS.
    let trace = std::env::var_os("KOOP_BENCH_TRACE").map(|_| koop_serve.pid);
    let mut tasks = Vec::new();
    let peak_sampler = tokio::spawn(timeline(koop_serve.pid, until));
    if runs("slowloris") {
        tasks.push(tokio::spawn(hold(
            address.clone(),
            b"GET /status HTTP/1.1\r\nHost: x\r\n".to_vec(),
            300,
            true,
            until,
            slowloris.clone(),
        )));
    }
    if runs("silent") {
        tasks.push(tokio::spawn(hold(
            address.clone(),
            format!("GET /koordinates/{domain}/{layer_id}/geojson HTTP/1.1\r\nHost: x\r\n\r\n")
                .into_bytes(),
            600,
            false,
            until,
            silent.clone(),
        )));
    }
    workers(
        &mut tasks,
        &Workers {
            service: format!("{base}/koordinates/rest/services/{domain}"),
            query: query.clone(),
            until,
            ids: runs("ids").then(|| ids.clone()),
            hostile: runs("hostile").then(|| hostile.clone()),
            trace,
        },
    )?;
    let status_probe = tokio::spawn(probe(
        format!("{base}/status"),
        Duration::from_millis(50),
        until,
    ));
    let count_probe = tokio::spawn(probe(count, Duration::from_millis(100), until));
    let (status, status_failed) = status_probe.await?;
    let (counts, counts_failed) = count_probe.await?;
    for task in tasks {
        let _ = task.await;
    }
    let peak = peak_rss(koop_serve.pid).context("the server's peak RSS")?;
    let timeline = peak_sampler.await.unwrap_or_default();
    let running = matches!(koop_serve.child.try_wait(), Ok(None));
    let _ = tokio::process::Command::new("kill")
        .args(["-INT", &koop_serve.pid.to_string()])
        .status()
        .await;
    let _ = tokio::time::timeout(Duration::from_secs(40), koop_serve.child.wait()).await;
    let _ = koop_serve.child.kill().await;

    Ok(report(&Outcome {
        tallies: [slowloris, silent, ids, hostile],
        status,
        status_failed,
        counts,
        counts_failed,
        peak,
        timeline,
        running,
    }))
}

/// What the attack left: per-attacker tallies (slowloris, non-readers, ids, hostile), the
/// probes, the peak RSS (bytes) and the RSS/fds/threads timeline.
struct Outcome {
    tallies: [Arc<Tally>; 4],
    status: Load,
    status_failed: u64,
    counts: Load,
    counts_failed: u64,
    peak: u64,
    timeline: Vec<(u64, usize, usize)>,
    running: bool,
}

/// Prints the figures; whether every goal was met.
fn report(outcome: &Outcome) -> bool {
    println!(
        "  slowloris: {} closed by the server",
        outcome.tallies[0].answered.load(Ordering::Relaxed)
    );
    println!(
        "  non-readers: {} dropped by the server",
        outcome.tallies[1].answered.load(Ordering::Relaxed)
    );
    println!("  random ids: {}", outcome.tallies[2].line());
    println!("  hostile queries: {}", outcome.tallies[3].line());
    let status_p99 = outcome.status.quantile_ms(0.99);
    println!(
        "  /status: {} answered, {} failed, p50 {:.1} ms, p99 {status_p99:.1} ms (goal ≤ 50 ms)  {}",
        outcome.status.requests,
        outcome.status_failed,
        outcome.status.quantile_ms(0.5),
        verdict(status_p99 <= 50.0 && outcome.status_failed == 0)
    );
    println!(
        "  count query: {} answered, {} failed, p50 {:.1} ms, p99 {:.1} ms",
        outcome.counts.requests,
        outcome.counts_failed,
        outcome.counts.quantile_ms(0.5),
        outcome.counts.quantile_ms(0.99)
    );
    println!(
        "  peak RSS of koop serve {:.1} MiB (goal ≤ 150 MiB)  {}; RSS every 5 s: {}",
        mb(outcome.peak),
        verdict(outcome.peak <= 150 * MB),
        outcome
            .timeline
            .iter()
            .map(|(bytes, fds, threads)| format!(
                "{:.0} MiB/{fds} fds/{threads} threads",
                mb(*bytes)
            ))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "  koop serve {}  {}",
        if outcome.running {
            "still running"
        } else {
            "exited"
        },
        verdict(outcome.running)
    );
    outcome.running && outcome.peak <= 150 * MB && status_p99 <= 50.0 && outcome.status_failed == 0
}

/// The request workers: random layer ids and hostile queries, each when chosen.
struct Workers {
    service: String,
    query: String,
    until: Instant,
    ids: Option<Arc<Tally>>,
    hostile: Option<Arc<Tally>>,
    trace: Option<u32>,
}

/// Starts 4 random-id and 4 hostile-query workers (those chosen) into `tasks`.
fn workers(tasks: &mut Vec<tokio::task::JoinHandle<()>>, spec: &Workers) -> Result<()> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(8)
        .build()?;
    for worker in 0..4_u64 {
        let Some(ids) = &spec.ids else { break };
        let service = spec.service.clone();
        tasks.push(tokio::spawn(attack(
            client.clone(),
            spec.until,
            worker,
            ids.clone(),
            None,
            move |client, rng| {
                let id = rng.u64(1..u64::MAX / 2);
                client.get(format!(
                    "{service}/{id}/FeatureServer/0/query?where=1%3D1&returnCountOnly=true"
                ))
            },
        )));
    }
    for worker in 0..4_u64 {
        let Some(hostile) = &spec.hostile else { break };
        let query = spec.query.clone();
        tasks.push(tokio::spawn(attack(
            client.clone(),
            spec.until,
            100 + worker,
            hostile.clone(),
            spec.trace,
            move |client, rng| {
                let params = koop_testkit::hostile::parameters(
                    rng,
                    &["id", "category", "value", "name", "observed"],
                );
                client.post(&query).form(&params)
            },
        )));
    }
    Ok(())
}
