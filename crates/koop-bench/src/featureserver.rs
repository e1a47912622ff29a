//! `featureserver`: `koop serve` and the reference Koop answering the requests of real
//! FeatureServer clients on one layer of 1,000,000 points (EPSG:2193 GeoPackage, integer `id`),
//! in one run, measured by an external load generator ([oha](https://crates.io/crates/oha)) on
//! loopback, with the issue's exact anchor queries:
//!
//! | what a client does | goal |
//! |---|---|
//! | QGIS adds the layer: `returnIdsOnly=true` for the whole layer | ≤ 0.3 s |
//! | QGIS pans: one batch of 100 `objectIds` with `inSR`/`outSR` | ≤ 2 ms p50 |
//! | paged attribute query (a) at concurrency 1 | ≥ 150 × Koop |
//! | envelope query (b), 1000 of 6,054 points, at concurrency 1 | ≥ 150 × Koop |
//!
//! and `koop serve`'s peak RSS (≤ 100 MiB). Queries (a) and (b) run one second unmeasured first,
//! on both servers. The reference is Koop 10.4 (`@koopjs/koop-core`
//! 10.4.19 from npm, installed under `target/xtask/koop-reference`) serving the same points from
//! memory through a provider of a few lines, as the fixtures of `koop-testkit` were captured; it
//! runs when `node` and `npm` are on `PATH`, else koop's figures are printed alone and the ratios
//! are not judged. oha is found on `PATH` or installed with `cargo install` under
//! `target/xtask/oha`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use tokio::io::AsyncBufReadExt;

use crate::Args;
use crate::common::{MB, mb, verdict};
use crate::serve::{sample_peak, serve_points};

/// The paged attribute query of the issue's table (a).
const PAGED: &str =
    "where=category%3D%27c3%27&outFields=*&resultOffset=2000&resultRecordCount=1000&f=json";
/// The envelope query of the issue's table (b).
const ENVELOPE: &str = "geometry=174,-42,175,-41&geometryType=esriGeometryEnvelope&inSR=4326&spatialRel=esriSpatialRelIntersects&outFields=*&resultRecordCount=1000&f=json";
/// QGIS adding the layer.
const IDS: &str = "where=1%3D1&returnIdsOnly=true&f=json";
/// The reference Koop's version, as the fixtures were captured with.
const KOOP_CORE: &str = "10.4.19";

/// Where the bench keeps the tools it installs: `KOOP_BENCH_TOOLS` (set by `cargo xtask`), else
/// `target/xtask` next to this executable.
pub(crate) fn tools_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("KOOP_BENCH_TOOLS") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe()?;
    let target = exe
        .parent()
        .and_then(Path::parent)
        .context("the target directory")?;
    Ok(target.join("xtask"))
}

fn runs(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// oha on `PATH`, or installed under the tools directory.
fn oha() -> Result<PathBuf> {
    if runs("oha", &["--version"]) {
        return Ok(PathBuf::from("oha"));
    }
    let root = tools_dir()?.join("oha");
    let path = root.join("bin/oha");
    if !path.exists() {
        println!(
            "  installing oha (cargo install oha --locked) under {}",
            root.display()
        );
        let status = std::process::Command::new("cargo")
            .args(["install", "oha", "--locked", "--root"])
            .arg(&root)
            .status()?;
        ensure!(status.success(), "cargo install oha failed");
    }
    Ok(path)
}

/// What oha measured.
struct Measured {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
}

/// oha requesting `url` for `seconds` from `concurrency` connections.
async fn load(oha: &Path, url: &str, concurrency: usize, seconds: u64) -> Result<Measured> {
    let output = tokio::process::Command::new(oha)
        .args(["--no-tui", "--output-format", "json", "-z"])
        .arg(format!("{seconds}s"))
        .arg("-c")
        .arg(concurrency.to_string())
        .arg(url)
        .output()
        .await?;
    ensure!(
        output.status.success(),
        "oha failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).context("oha's JSON report")?;
    let ok: u64 = report["statusCodeDistribution"]["200"]
        .as_u64()
        .unwrap_or(0);
    let all: u64 = report["statusCodeDistribution"]
        .as_object()
        .map_or(0, |codes| codes.values().filter_map(Value::as_u64).sum());
    ensure!(ok > 0 && ok == all, "{url}: {ok} of {all} answers were 200");
    let ms = |name: &str| {
        report["latencyPercentiles"][name]
            .as_f64()
            .unwrap_or(f64::NAN)
            * 1000.0
    };
    Ok(Measured {
        per_second: report["summary"]["requestsPerSec"].as_f64().unwrap_or(0.0),
        p50_ms: ms("p50"),
        p99_ms: ms("p99"),
        requests: ok,
    })
}

/// One GET, read whole: its time and JSON body, which must not be an error.
async fn once(client: &reqwest::Client, url: &str) -> Result<(Duration, Value)> {
    let started = Instant::now();
    let body = client.get(url).send().await?.bytes().await?;
    let took = started.elapsed();
    let json: Value = serde_json::from_slice(&body).with_context(|| format!("{url}: not JSON"))?;
    ensure!(
        json.get("error").is_none(),
        "{url}: {}",
        json.to_string().chars().take(200).collect::<String>()
    );
    Ok((took, json))
}

/// The reference Koop, serving `geojson` as `file-geojson/rest/services/points`.
struct Reference {
    child: tokio::process::Child,
    layer: String,
    version: String,
}

const REFERENCE_JS: &str = r"
// The reference Koop: the points loaded once, answered by Koop's own FeatureServer.
const fs = require('fs');
const Koop = require('@koopjs/koop-core');
const [file] = process.argv.slice(2);
const geojson = JSON.parse(fs.readFileSync(file, 'utf8'));
geojson.metadata = { name: 'Bench points', idField: 'id', geometryType: 'Point' };
function Model () {}
Model.prototype.getData = function (req, callback) { callback(null, geojson); };
const koop = new Koop({ logLevel: 'error' });
koop.register({ type: 'provider', name: 'file-geojson', version: '1.0.0', hosts: false, Model });
const server = koop.server.listen(0, '127.0.0.1', () => {
  console.log('listening ' + server.address().port);
});
";

/// Installs and starts the reference Koop on `geojson`, when node and npm are there.
async fn reference(geojson: &Path) -> Result<Option<Reference>> {
    if !(runs("node", &["--version"]) && runs("npm", &["--version"])) {
        println!("  no node and npm on PATH: the reference Koop is not run");
        return Ok(None);
    }
    let dir = tools_dir()?.join("koop-reference");
    std::fs::create_dir_all(&dir)?;
    let core = dir.join("node_modules/@koopjs/koop-core/package.json");
    if !core.exists() {
        println!(
            "  installing @koopjs/koop-core@{KOOP_CORE} with npm under {}",
            dir.display()
        );
        std::fs::write(
            dir.join("package.json"),
            format!(r#"{{"private":true,"dependencies":{{"@koopjs/koop-core":"{KOOP_CORE}"}}}}"#),
        )?;
        let status = std::process::Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                "--prefix",
            ])
            .arg(&dir)
            .status()?;
        ensure!(status.success(), "npm install @koopjs/koop-core failed");
    }
    let version_of = |package: &str| -> String {
        std::fs::read_to_string(dir.join("node_modules").join(package).join("package.json"))
            .ok()
            .and_then(|text| serde_json::from_str::<Value>(&text).ok())
            .and_then(|json| json["version"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "?".to_owned())
    };
    let version = format!(
        "koop-core {}, featureserver {}, winnow {}",
        version_of("@koopjs/koop-core"),
        version_of("@koopjs/featureserver"),
        version_of("@koopjs/winnow")
    );
    let script = dir.join("reference.js");
    std::fs::write(&script, REFERENCE_JS)?;
    let mut child = tokio::process::Command::new("node")
        .arg("--max-old-space-size=12288")
        .arg(&script)
        .arg(geojson)
        .current_dir(&dir)
        .env("SUPPRESS_NO_CONFIG_WARNING", "1")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(300), lines.next_line())
        .await
        .context("the reference Koop did not start within 300 s")??
        .context("the reference Koop exited")?;
    let port = line
        .strip_prefix("listening ")
        .with_context(|| format!("the reference Koop said {line:?}"))?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Some(Reference {
        child,
        layer: format!("http://127.0.0.1:{port}/file-geojson/rest/services/points/FeatureServer/0"),
        version,
    }))
}

/// koop's figure against the anchor's, for a line of the report.
fn ratio_line(koop: &Measured, anchor: Option<&Measured>, goal: f64) -> (String, Option<bool>) {
    match anchor {
        Some(anchor) if anchor.per_second > 0.0 => {
            let ratio = koop.per_second / anchor.per_second;
            (
                format!(
                    "Koop {:.2}/s ({} requests) → {ratio:.0}× (goal ≥ {goal:.0}×)",
                    anchor.per_second, anchor.requests
                ),
                Some(ratio >= goal),
            )
        }
        _ => ("no anchor".to_owned(), None),
    }
}

/// The 100 ids QGIS asks for first when it pans to the envelope (b): the first of the ids in it.
async fn first_batch(client: &reqwest::Client, layer: &str) -> Result<String> {
    let (_, ids) = once(
        client,
        &format!(
            "{layer}/query?{}&returnIdsOnly=true",
            ENVELOPE.replace("&resultRecordCount=1000", "")
        ),
    )
    .await?;
    let ids: Vec<i64> = ids["objectIds"]
        .as_array()
        .context("objectIds")?
        .iter()
        .filter_map(Value::as_i64)
        .take(100)
        .collect();
    ensure!(ids.len() == 100, "{} ids in the envelope", ids.len());
    Ok(ids
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join("%2C"))
}

#[allow(
    clippy::too_many_lines,
    reason = "one report, in the order of the issue's table"
)]
pub(crate) async fn featureserver(args: &Args, work: &Path) -> Result<bool> {
    println!(
        "
featureserver: koop serve and the reference Koop answering FeatureServer clients on {} points",
        args.points
    );
    let oha = oha()?;
    let layer_id = 30_001;
    let (server, _cache, mut koop_serve) = serve_points(args, work, layer_id).await?;
    let koop = format!(
        "{}/koordinates/rest/services/{}/{layer_id}/FeatureServer/0",
        koop_serve.base,
        server.domain()
    );
    let client = reqwest::Client::new();
    // The same points for the reference, written by koop serve's own GeoJSON route.
    let geojson = work.join("bench-points.geojson");
    let mut reference = None;
    if runs("node", &["--version"]) {
        let bytes = client
            .get(format!(
                "{}/koordinates/{}/{layer_id}/geojson",
                koop_serve.base,
                server.domain()
            ))
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        std::fs::write(&geojson, &bytes)?;
        reference = self::reference(&geojson).await?;
    } else {
        println!("  no node on PATH: the reference Koop is not run");
    }
    if let Some(reference) = &reference {
        println!("  reference: Koop ({}) on node", reference.version);
    }
    let anchor_layer = reference.as_ref().map(|reference| reference.layer.clone());
    if args.hold > 0 {
        println!(
            "  holding {} s: koop {koop} (pid {}), Koop {}",
            args.hold,
            koop_serve.pid,
            anchor_layer.as_deref().unwrap_or("not run")
        );
        tokio::time::sleep(Duration::from_secs(args.hold)).await;
    }
    let seconds = args.seconds;
    let pid = koop_serve.pid;
    let mut verdicts: Vec<Option<bool>> = Vec::new();
    let run = async {
        // QGIS adds the layer: every id, unpaged.
        let ids_url = format!("{koop}/query?{IDS}");
        once(&client, &ids_url).await?;
        let mut times = Vec::new();
        let mut count = 0;
        for _ in 0..3 {
            let (took, ids) = once(&client, &ids_url).await?;
            count = ids["objectIds"].as_array().map_or(0, Vec::len);
            times.push(took);
        }
        times.sort_unstable();
        ensure!(
            count as u64 == args.points,
            "{count} ids of {}",
            args.points
        );
        let koop_ids = times[1].as_secs_f64();
        let anchor_ids = match &anchor_layer {
            Some(layer) => Some(once(&client, &format!("{layer}/query?{IDS}")).await?.0),
            None => None,
        };
        let met = koop_ids <= 0.3;
        verdicts.push(Some(met));
        println!(
            "  QGIS adds the layer: returnIdsOnly of {count}: {:.3} s (median of 3; goal ≤ 0.3 s; Koop {})  {}",
            koop_ids,
            anchor_ids.map_or_else(
                || "not run".to_owned(),
                |took| format!("{:.1} s", took.as_secs_f64())
            ),
            verdict(met)
        );

        // QGIS pans: 100 ids of the view, in and out in WGS 84.
        let batch = first_batch(&client, &koop).await?;
        let batch_query = format!(
            "f=json&objectIds={batch}&inSR=4326&outSR=4326&returnGeometry=true&outFields=*&returnM=false&returnZ=false"
        );
        let (_, answer) = once(&client, &format!("{koop}/query?{batch_query}")).await?;
        ensure!(
            answer["features"].as_array().map(Vec::len) == Some(100),
            "a batch of 100 ids answered {:?} features",
            answer["features"].as_array().map(Vec::len)
        );
        let koop_batch = load(&oha, &format!("{koop}/query?{batch_query}"), 1, seconds).await?;
        let anchor_batch = match &anchor_layer {
            Some(layer) => {
                Some(load(&oha, &format!("{layer}/query?{batch_query}"), 1, seconds).await?)
            }
            None => None,
        };
        let met = koop_batch.p50_ms <= 2.0;
        verdicts.push(Some(met));
        println!(
            "  QGIS pans: 100 objectIds: p50 {:.2} ms p99 {:.2} ms, {:.0}/s (goal p50 ≤ 2 ms; Koop p50 {})  {}",
            koop_batch.p50_ms,
            koop_batch.p99_ms,
            koop_batch.per_second,
            anchor_batch.as_ref().map_or_else(
                || "not run".to_owned(),
                |anchor| format!("{:.0} ms", anchor.p50_ms)
            ),
            verdict(met)
        );

        // The paged attribute query and the envelope query, at concurrency 1 and 8.
        for (name, parameters, expected) in [
            ("paged attribute query (a)", PAGED, 1000),
            ("envelope query (b)", ENVELOPE, 1000),
        ] {
            let url = format!("{koop}/query?{parameters}");
            let (_, answer) = once(&client, &url).await?;
            let features = answer["features"].as_array().map_or(0, Vec::len);
            ensure!(
                features == expected,
                "{name}: {features} features, not {expected}"
            );
            // One second unmeasured first, for koop and for Koop alike: what a server builds
            // on a query's first run (koop's k-d tree of the points, for the envelope query)
            // is ready when a client's next pan comes.
            load(&oha, &url, 1, 1).await?;
            let one = load(&oha, &url, 1, seconds).await?;
            let eight = load(&oha, &url, 8, seconds).await?;
            let anchor = match &anchor_layer {
                Some(layer) => {
                    let url = format!("{layer}/query?{parameters}");
                    let (_, answer) = once(&client, &url).await?;
                    let features = answer["features"].as_array().map_or(0, Vec::len);
                    ensure!(features == expected, "Koop's {name}: {features} features");
                    load(&oha, &url, 1, 1).await?;
                    Some(load(&oha, &url, 1, seconds.max(10)).await?)
                }
                None => None,
            };
            let (against, met) = ratio_line(&one, anchor.as_ref(), 150.0);
            verdicts.push(met);
            println!(
                "  {name}: c=1 {:.0}/s p50 {:.1} ms; c=8 {:.0}/s p50 {:.1} ms p99 {:.1} ms; {against}  {}",
                one.per_second,
                one.p50_ms,
                eight.per_second,
                eight.p50_ms,
                eight.p99_ms,
                met.map_or("(not judged)", verdict)
            );
        }
        anyhow::Ok(())
    };
    let (result, peak) = sample_peak(pid, run).await;
    let _ = tokio::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .await;
    let _ = koop_serve.child.wait().await;
    if let Some(mut reference) = reference {
        let _ = reference.child.kill().await;
    }
    let _ = std::fs::remove_file(&geojson);
    result?;
    let rss_met = peak <= 100 * MB;
    println!(
        "  peak RSS of koop serve {:.1} MiB (goal ≤ 100 MiB)  {}",
        mb(peak),
        verdict(rss_met)
    );
    if verdicts.iter().any(Option::is_none) {
        println!("  (ratios to Koop not judged: install node and npm to run the reference)");
    }
    if verdicts.contains(&Some(false)) || !rss_met {
        return Ok(false);
    }
    if verdicts.is_empty() {
        bail!("nothing was measured");
    }
    Ok(true)
}
