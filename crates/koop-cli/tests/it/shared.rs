//! A team's cache on object storage: machines with their own local caches mirror into one
//! bucket (a real S3-compatible server, moto, on loopback) and each layer version is exported
//! once for all of them.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use koop_testkit::moto::Moto;
use koop_testkit::{TestLayer, TestServer, TestServerConfig, data};
use serde_json::Value;

const FIRST: u64 = 8_000;
const COUNT: u64 = 6;

/// `koop --cache-dir s3://… --local-cache-dir LOCAL ARGS` as a process.
fn machine(
    server: &TestServer,
    moto: &Moto,
    local: &Path,
    args: &[&str],
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_koop"));
    command
        .arg("--domain")
        .arg(server.base_url())
        .arg("--cache-dir")
        .arg(moto.url("team/cache"))
        .arg("--local-cache-dir")
        .arg(local)
        .args(args)
        .env("KOORDINATES_API_KEY", server.api_key())
        .env_remove("KOOPCACHE_DIR")
        .envs(moto.env())
        .kill_on_drop(true);
    command
}

/// Outcome and entry name of each layer of a `--json` run.
fn outcomes(json: &Value) -> BTreeMap<u64, (String, String)> {
    json["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|layer| {
            let path = Path::new(layer["path"].as_str()?);
            Some((
                layer["layer_id"].as_u64()?,
                (
                    layer["outcome"].as_str()?.to_owned(),
                    path.file_name()?.to_string_lossy().into_owned(),
                ),
            ))
        })
        .collect()
}

#[tokio::test]
async fn two_machines_mirroring_into_one_bucket_export_each_layer_once() -> Result<()> {
    let layers = (0..COUNT)
        .map(|index| {
            TestLayer::vector(
                FIRST + index,
                &format!("Shared layer {index}"),
                data::WORLD_COUNTRIES_GPKG,
            )
            .with_latency(Duration::from_millis(700))
        })
        .collect();
    let server = TestServer::start_with(TestServerConfig {
        layers,
        reuse_identical_exports: false,
        ..TestServerConfig::default()
    })
    .await?;
    let moto = Moto::start().await?;
    let dir = tempfile::tempdir()?;
    let list = dir.path().join("layers.txt");
    std::fs::write(
        &list,
        (0..COUNT)
            .map(|index| (FIRST + index).to_string())
            .collect::<Vec<_>>()
            .join("\n"),
    )?;
    let list = list.to_str().context("utf-8")?;
    let args = ["mirror", "--json", "--from", list];
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let first = machine(&server, &moto, &a, &args).output();
    let second = machine(&server, &moto, &b, &args).output();
    let (first, second) = tokio::join!(first, second);
    let (first, second) = (first?, second?);
    ensure!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    ensure!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    ensure!(
        server.counters().exports_created == COUNT,
        "{} exports for {COUNT} layers",
        server.counters().exports_created
    );
    let (first, second): (Value, Value) = (
        serde_json::from_slice(&first.stdout)?,
        serde_json::from_slice(&second.stdout)?,
    );
    let (first, second) = (outcomes(&first), outcomes(&second));
    ensure!(first.len() as u64 == COUNT && second.len() as u64 == COUNT);
    for (layer_id, (outcome, entry)) in &first {
        let (other, other_entry) = &second[layer_id];
        // The same entry on both machines, exported by one and downloaded by the other.
        ensure!(
            entry == other_entry,
            "layer {layer_id}: {entry} and {other_entry}"
        );
        let mut pair = [outcome.as_str(), other.as_str()];
        pair.sort_unstable();
        ensure!(
            pair == ["downloaded", "shared"],
            "layer {layer_id}: {pair:?}"
        );
    }

    // A third machine with an empty local cache gets everything from the bucket.
    let c = dir.path().join("c");
    let mut get = vec!["get", "--json"];
    let ids: Vec<String> = (0..COUNT)
        .map(|index| (FIRST + index).to_string())
        .collect();
    get.extend(ids.iter().map(String::as_str));
    let third = machine(&server, &moto, &c, &get).output().await?;
    ensure!(
        third.status.success(),
        "{}",
        String::from_utf8_lossy(&third.stderr)
    );
    let third: Value = serde_json::from_slice(&third.stdout)?;
    ensure!(
        third
            .as_array()
            .is_some_and(|layers| layers.iter().all(|layer| layer["outcome"] == "shared")),
        "{third}"
    );
    ensure!(server.counters().exports_created == COUNT);
    // Its local copy verifies.
    let verify = tokio::process::Command::new(env!("CARGO_BIN_EXE_koop"))
        .arg("--cache-dir")
        .arg(&c)
        .args(["cache", "verify"])
        .output()
        .await?;
    ensure!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    Ok(())
}

#[tokio::test]
async fn a_killed_lease_holder_delays_the_other_machine_by_the_lease_time_at_most() -> Result<()> {
    let layer_id = FIRST + 50;
    let server = TestServer::start_with(TestServerConfig {
        layers: vec![
            TestLayer::vector(layer_id, "Slow shared layer", data::WORLD_COUNTRIES_GPKG)
                .with_latency(Duration::from_secs(4)),
        ],
        reuse_identical_exports: false,
        ..TestServerConfig::default()
    })
    .await?;
    let moto = Moto::start().await?;
    let dir = tempfile::tempdir()?;
    let id = layer_id.to_string();
    let mut holder = machine(
        &server,
        &moto,
        &dir.path().join("a"),
        &["--lease-seconds", "2", "get", &id],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()?;
    crate::interrupt::until(Duration::from_secs(20), || {
        server.counters().exports_created >= 1
    })
    .await?;
    let pid = holder.id().context("running")?;
    let killed = tokio::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .await?;
    ensure!(killed.success());
    let _ = holder.wait().await;

    let started = std::time::Instant::now();
    let other = machine(
        &server,
        &moto,
        &dir.path().join("b"),
        &["--lease-seconds", "2", "get", "--json", &id],
    )
    .output()
    .await?;
    let waited = started.elapsed();
    ensure!(
        other.status.success(),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    let json: Value = serde_json::from_slice(&other.stdout)?;
    ensure!(json[0]["outcome"] == "downloaded", "{json}");
    // The other machine took the lease over and found the killed one's export by its name (as
    // a restarted run does): still one export.
    ensure!(
        server.counters().exports_created == 1,
        "{} exports",
        server.counters().exports_created
    );
    // At most the lease time (2 s) more than its own export (4 s), with room for the machine.
    ensure!(waited < Duration::from_secs(10), "waited {waited:?}");

    // What the bucket holds is a whole entry: a third machine downloads and verifies it.
    let third = machine(
        &server,
        &moto,
        &dir.path().join("c"),
        &["get", "--json", &id],
    )
    .output()
    .await?;
    ensure!(
        third.status.success(),
        "{}",
        String::from_utf8_lossy(&third.stderr)
    );
    let json: Value = serde_json::from_slice(&third.stdout)?;
    ensure!(json[0]["outcome"] == "shared", "{json}");
    ensure!(server.counters().exports_created == 1);
    Ok(())
}
