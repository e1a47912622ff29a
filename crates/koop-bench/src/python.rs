//! **python**: the original Python package koop 0.0.7 (PyPI, the anchor) and koop-rs (the wheel
//! of crates/koop-py) running the same script, one `get_layer_from_id` per layer in a loop
//! (`python/get_layers.py`), then `koop.mirror` of the same layers on koop-rs.
//!
//! Ten vector layers of ~5 MB with export latencies spread over 1–3 s, each run against a fresh
//! koop-testkit server (so no run finds another's exports), each with an empty cache. The
//! original builds `https://{domain}/…` URLs; in its environment only, `loopback_https.py`
//! sends them to the test server over plain HTTP (no TLS handshake paid: if anything this
//! favours the original).
//!
//! Goals: koop-rs never slower on any layer of the loop (each layer's time within 5 % of the
//! original's, for noise) and ≥ 1.15× faster over the loop; `koop.mirror` ≥ 5× faster than the
//! original's loop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use koop_testkit::{GeneratedContent, TestServer};
use serde_json::Value;

use crate::common::{MB, latencies_1_to_3_s, vector_site, verdict};

/// The anchor: the original package, as its users install it.
const ORIGINAL: &str = "koop==0.0.7";
const LAYERS: usize = 10;
const FIRST_ID: u64 = 30_000;

const GET_LAYERS: &str = include_str!("../python/get_layers.py");
const MIRROR_LAYERS: &str = include_str!("../python/mirror_layers.py");
const LOOPBACK_HTTPS: &str = include_str!("../python/loopback_https.py");

fn venv(dir: &Path) -> Result<PathBuf> {
    let python = dir.join("bin/python");
    if !python.exists() {
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(dir)
            .status()
            .context("python3 -m venv (install Python 3 with venv)")?;
        if !status.success() {
            bail!("python3 -m venv {} failed", dir.display());
        }
    }
    Ok(python)
}

fn pip(python: &Path, args: &[&str]) -> Result<()> {
    let status = Command::new(python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(args)
        .status()?;
    if !status.success() {
        bail!("pip install {} failed", args.join(" "));
    }
    Ok(())
}

/// The `site-packages` folder of an environment.
fn site_packages(python: &Path) -> Result<PathBuf> {
    let output = Command::new(python)
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ])
        .output()?;
    Ok(PathBuf::from(String::from_utf8(output.stdout)?.trim()))
}

/// The original package's environment, with the loopback shim.
fn original_env(tools: &Path) -> Result<PathBuf> {
    let python = venv(&tools.join("py-original"))?;
    let installed = Command::new(&python)
        .args([
            "-c",
            "import importlib.metadata as m; assert m.version('koop') == '0.0.7'",
        ])
        .output()
        .is_ok_and(|output| output.status.success());
    if !installed {
        pip(&python, &[ORIGINAL])?;
    }
    let site = site_packages(&python)?;
    std::fs::write(site.join("koop_bench_loopback.py"), LOOPBACK_HTTPS)?;
    std::fs::write(
        site.join("koop_bench_loopback.pth"),
        "import koop_bench_loopback\n",
    )?;
    Ok(python)
}

/// koop-rs's environment, with this build's wheel.
fn koop_rs_env(tools: &Path, wheel: &Path) -> Result<PathBuf> {
    let python = venv(&tools.join("py-koop-rs"))?;
    pip(
        &python,
        &["--force-reinstall", "--no-deps", &wheel.to_string_lossy()],
    )?;
    Ok(python)
}

/// A fresh site of the benchmark's layers with their export latencies.
async fn server(bytes: &[u8], latencies: &[Duration]) -> Result<TestServer> {
    let server = vector_site(FIRST_ID, LAYERS as u64, "Python bench layer", bytes).await?;
    for (index, latency) in latencies.iter().enumerate() {
        server.set_export_latency(FIRST_ID + index as u64, *latency);
    }
    Ok(server)
}

/// Runs `script` with `python` against `server`; returns its JSON.
async fn run_script(
    python: &Path,
    script: &Path,
    server: &TestServer,
    domain: &str,
    cache: &Path,
) -> Result<Value> {
    let ids: Vec<String> = (0..LAYERS as u64)
        .map(|i| (FIRST_ID + i).to_string())
        .collect();
    let storage = server
        .storage_url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let plain = format!("{},{storage}", server.domain());
    let mut command = tokio::process::Command::new(python);
    command
        .arg(script)
        .env("BENCH_LAYER_IDS", ids.join(","))
        .env("BENCH_DOMAIN", domain)
        .env("KOORDINATES_API_KEY", server.api_key())
        .env("KOOPCACHE_DIR", cache)
        .env("KOOP_BENCH_PLAIN_HTTP_HOSTS", plain);
    let output = command.output().await?;
    if !output.status.success() {
        bail!(
            "{} {} failed: {}",
            python.display(),
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let text = String::from_utf8(output.stdout)?;
    let last = text.lines().last().unwrap_or_default();
    serde_json::from_str(last).with_context(|| format!("the script printed {text:?}"))
}

fn seconds(value: &Value) -> Vec<f64> {
    value["seconds"]
        .as_array()
        .map(|items| items.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

/// Runs the benchmark; `Ok(true)` when every goal is met.
pub(crate) async fn python(work: &Path) -> Result<bool> {
    println!(
        "\npython: the original koop 0.0.7 and koop-rs, one get_layer_from_id per layer in a loop; {LAYERS} layers of ~5 MB, export latencies 1–3 s"
    );
    let Some(wheel) = std::env::var_os("KOOP_BENCH_WHEEL").map(PathBuf::from) else {
        println!("  skipped: no wheel (run it with `cargo xtask bench python`, which builds one)");
        return Ok(false);
    };
    let tools = crate::featureserver::tools_dir()?;
    let original = original_env(&tools)?;
    let koop_rs = koop_rs_env(&tools, &wheel)?;
    let get_layers = work.join("get_layers.py");
    let mirror_layers = work.join("mirror_layers.py");
    std::fs::write(&get_layers, GET_LAYERS)?;
    std::fs::write(&mirror_layers, MIRROR_LAYERS)?;

    let sample = work.join("python-layer.gpkg");
    GeneratedContent::Polygons {
        target_bytes: 5 * MB,
    }
    .generate(&sample, 11)?;
    let bytes = tokio::fs::read(&sample).await?;
    let latencies = latencies_1_to_3_s(LAYERS);

    // A fresh server per run: koop reuses a recent complete export it finds on a site. The
    // original is given the bare host (it writes `https://` itself), koop-rs the `http://` origin.
    let mut results = Vec::new();
    for (python, script, plain, cache) in [
        (&original, &get_layers, false, "cache-original"),
        (&koop_rs, &get_layers, true, "cache-koop-rs"),
        (&koop_rs, &mirror_layers, true, "cache-mirror"),
    ] {
        let site = server(&bytes, &latencies).await?;
        let domain = if plain {
            site.site().origin()
        } else {
            site.domain()
        };
        results.push(run_script(python, script, &site, &domain, &work.join(cache)).await?);
    }
    let [anchor, ours, mirrored] = <[Value; 3]>::try_from(results)
        .map_err(|_| anyhow::anyhow!("three runs, three results"))?;

    let (anchor_seconds, our_seconds) = (seconds(&anchor), seconds(&ours));
    println!("  layer  export  original   koop-rs   ratio");
    let mut never_slower = anchor_seconds.len() == our_seconds.len();
    for (index, (theirs, mine)) in anchor_seconds.iter().zip(&our_seconds).enumerate() {
        let ratio = theirs / mine;
        never_slower &= *mine <= theirs * 1.05;
        println!(
            "  {:>5}  {:>5.1}s  {:>7.2}s  {:>7.2}s  {:>5.2}×",
            FIRST_ID + index as u64,
            latencies[index].as_secs_f64(),
            theirs,
            mine,
            ratio
        );
    }
    let anchor_total = anchor["total"].as_f64().unwrap_or(f64::NAN);
    let our_total = ours["total"].as_f64().unwrap_or(f64::NAN);
    let mirror_total = mirrored["total"].as_f64().unwrap_or(f64::NAN);
    let loop_ratio = anchor_total / our_total;
    let mirror_ratio = anchor_total / mirror_total;
    println!(
        "  loop: original {anchor_total:.2} s, koop-rs {our_total:.2} s: {loop_ratio:.2}× (goal ≥ 1.15×) {}",
        verdict(loop_ratio >= 1.15)
    );
    println!(
        "  every layer: koop-rs never slower than the original (within 5 %) {}",
        verdict(never_slower)
    );
    println!(
        "  koop.mirror(jobs=8): {mirror_total:.2} s: {mirror_ratio:.2}× the original's loop (goal ≥ 5×) {}",
        verdict(mirror_ratio >= 5.0)
    );
    Ok(loop_ratio >= 1.15 && never_slower && mirror_ratio >= 5.0)
}
