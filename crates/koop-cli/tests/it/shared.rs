//! A team's cache on object storage: machines with their own local caches mirror into one
//! bucket (a real S3-compatible server, moto, on loopback) and each layer version is exported
//! once for all of them.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use koop_testkit::moto::{Moto, StoreProxy};
use koop_testkit::{BumpKind, TestLayer, TestServer, TestServerConfig, data};
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
    machine_via(server, moto, moto.env(), local, args)
}

/// As [`machine`], reaching the store with `env` (a [`StoreProxy`]'s, say).
fn machine_via(
    server: &TestServer,
    moto: &Moto,
    env: Vec<(String, String)>,
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
        .env_remove("KOOP_LOG")
        .envs(env)
        .kill_on_drop(true);
    command
}

/// Runs a machine to its end: exit code, stdout, stderr.
async fn run(mut command: tokio::process::Command) -> Result<(i32, String, String)> {
    let output = command.output().await?;
    Ok((
        output.status.code().context("an exit code")?,
        String::from_utf8(output.stdout)?,
        String::from_utf8(output.stderr)?,
    ))
}

/// The keys under `prefix` in the bucket, read from moto directly (it checks no signature).
async fn keys(moto: &Moto, prefix: &str) -> Result<Vec<String>> {
    let body = reqwest::Client::new()
        .get(format!("{}/{}", moto.endpoint(), moto.bucket()))
        .query(&[("list-type", "2"), ("prefix", prefix)])
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(body
        .split("<Key>")
        .skip(1)
        .filter_map(|rest| rest.split("</Key>").next())
        .map(str::to_owned)
        .collect())
}

fn has_extension(key: &str, extension: &str) -> bool {
    Path::new(key)
        .extension()
        .is_some_and(|found| found.eq_ignore_ascii_case(extension))
}

/// The entry manifests in the bucket's `team/cache/` (not leases).
async fn manifests(moto: &Moto) -> Result<Vec<String>> {
    Ok(keys(moto, "team/cache/")
        .await?
        .into_iter()
        .filter(|key| has_extension(key, "json") && !key.contains("/.leases/"))
        .collect())
}

/// A test site with `layers` (each export made anew, as when data changes), a moto server with
/// an empty bucket, and a temporary directory for the machines' local caches.
async fn team(layers: Vec<TestLayer>) -> Result<(TestServer, Moto, tempfile::TempDir)> {
    let server = TestServer::start_with(TestServerConfig {
        layers,
        reuse_identical_exports: false,
        ..TestServerConfig::default()
    })
    .await?;
    Ok((server, Moto::start().await?, tempfile::tempdir()?))
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
    let (server, moto, dir) = team(layers).await?;
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
    let (server, moto, dir) = team(vec![
        TestLayer::vector(layer_id, "Slow shared layer", data::WORLD_COUNTRIES_GPKG)
            .with_latency(Duration::from_secs(4)),
    ])
    .await?;
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

#[tokio::test]
async fn a_failing_or_truncating_store_publishes_no_entry_and_the_run_says_why() -> Result<()> {
    use std::sync::atomic::Ordering;
    let (failing, truncated) = (FIRST + 60, FIRST + 61);
    let (server, moto, dir) = team(
        [failing, truncated]
            .into_iter()
            .map(|id| TestLayer::vector(id, "Unlucky layer", data::WORLD_COUNTRIES_GPKG))
            .collect(),
    )
    .await?;
    let proxy = StoreProxy::start(&moto).await?;
    let a = dir.path().join("a");

    // 503 to every data upload: the layer is on this machine, not in the bucket, and the run
    // says so.
    proxy.faults.fail_data_writes.store(true, Ordering::SeqCst);
    let id = failing.to_string();
    let (code, stdout, stderr) = run(machine_via(
        &server,
        &moto,
        proxy.env(&moto),
        &a,
        &["mirror", "--json", &id],
    ))
    .await?;
    ensure!(code == 0, "{stderr}");
    let json: Value = serde_json::from_str(&stdout)?;
    let layer = &json["layers"][0];
    ensure!(layer["outcome"] == "downloaded", "{json}");
    let why = layer["not_shared"].as_str().context("not_shared")?;
    ensure!(why.contains("failed to") && why.contains("503"), "{why}");
    ensure!(json["summary"]["not_shared"] == 1, "{json}");
    ensure!(Path::new(layer["path"].as_str().context("path")?).is_file());
    ensure!(
        manifests(&moto).await?.is_empty(),
        "{:?}",
        manifests(&moto).await?
    );
    ensure!(proxy.faults.failed.load(Ordering::SeqCst) > 0);
    proxy.faults.fail_data_writes.store(false, Ordering::SeqCst);

    // Half of each upload reaches the store: caught by its size before the manifest is written.
    proxy
        .faults
        .truncate_data_writes
        .store(true, Ordering::SeqCst);
    let id = truncated.to_string();
    let (code, stdout, stderr) = run(machine_via(
        &server,
        &moto,
        proxy.env(&moto),
        &a,
        &["mirror", &id],
    ))
    .await?;
    ensure!(code == 0, "{stderr}");
    ensure!(
        stdout.contains("not shared:") && stdout.contains("bytes where"),
        "{stdout}"
    );
    ensure!(stderr.contains("1 not shared"), "{stderr}");
    ensure!(
        manifests(&moto).await?.is_empty(),
        "{:?}",
        manifests(&moto).await?
    );
    proxy
        .faults
        .truncate_data_writes
        .store(false, Ordering::SeqCst);

    // Nothing half-shared is taken for an entry: another machine exports the layer again and
    // shares it, and a third downloads it.
    let (code, stdout, stderr) = run(machine(
        &server,
        &moto,
        &dir.path().join("b"),
        &["get", "--json", &id],
    ))
    .await?;
    ensure!(code == 0, "{stderr}");
    let json: Value = serde_json::from_str(&stdout)?;
    ensure!(
        json[0]["outcome"] == "downloaded" && json[0]["not_shared"].is_null(),
        "{json}"
    );
    let (code, stdout, stderr) = run(machine(
        &server,
        &moto,
        &dir.path().join("c"),
        &["get", "--json", &id],
    ))
    .await?;
    ensure!(code == 0, "{stderr}");
    let json: Value = serde_json::from_str(&stdout)?;
    ensure!(json[0]["outcome"] == "shared", "{json}");

    Ok(())
}

#[tokio::test]
async fn a_lease_lost_to_another_owner_is_not_published() -> Result<()> {
    let layer_id = FIRST + 70;
    let (server, moto, dir) = team(vec![
        TestLayer::vector(layer_id, "Contested layer", data::WORLD_COUNTRIES_GPKG)
            .with_latency(Duration::from_secs(3)),
    ])
    .await?;
    let id = layer_id.to_string();
    let holder = machine(
        &server,
        &moto,
        &dir.path().join("a"),
        &["--lease-seconds", "60", "get", "--json", &id],
    )
    .output();
    let thief = async {
        // Once the lease exists, another owner overwrites it (as one that took it over would):
        // its ETag changes under the holder.
        let mut lease = None;
        for _ in 0..200 {
            lease = keys(&moto, "team/cache/.leases/").await?.into_iter().next();
            if lease.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let lease = lease.context("no lease was taken")?;
        let expires = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
            + 60_000;
        moto.put(
            &lease,
            format!(r#"{{"owner":"other-machine/1","expires_at_ms":{expires}}}"#).into_bytes(),
        )
        .await?;
        anyhow::Ok(())
    };
    let (holder, thief) = tokio::join!(holder, thief);
    thief?;
    let holder = holder?;
    ensure!(
        holder.status.success(),
        "{}",
        String::from_utf8_lossy(&holder.stderr)
    );
    let json: Value = serde_json::from_slice(&holder.stdout)?;
    ensure!(json[0]["outcome"] == "downloaded", "{json}");
    let why = json[0]["not_shared"].as_str().context("not_shared")?;
    ensure!(why.contains("lease"), "{why}");
    ensure!(
        manifests(&moto).await?.is_empty(),
        "{:?}",
        manifests(&moto).await?
    );
    Ok(())
}

#[tokio::test]
async fn koop_serve_instances_fill_their_local_copies_from_the_bucket() -> Result<()> {
    let layer_id = FIRST + 80;
    let (server, moto, dir) = team(vec![TestLayer::vector(
        layer_id,
        "Served from the bucket",
        data::WORLD_COUNTRIES_GPKG,
    )])
    .await?;
    let id = layer_id.to_string();
    let (code, _, stderr) = run(machine(
        &server,
        &moto,
        &dir.path().join("a"),
        &["get", &id],
    ))
    .await?;
    ensure!(code == 0, "{stderr}");
    ensure!(server.exports_created_for(layer_id) == 1);

    let url = moto.url("team/cache");
    for instance in ["b", "c"] {
        let local = dir.path().join(instance);
        let instance = crate::serve::Served::start_in(
            &server,
            &[
                url.as_ref(),
                "--local-cache-dir".as_ref(),
                local.as_os_str(),
            ],
            moto.env(),
            &["--layers", &id],
        )
        .await?;
        let (status, body) = crate::serve::get(
            &crate::serve::query_url(&instance, &server, layer_id),
            &[("where", "1=1"), ("returnCountOnly", "true"), ("f", "json")],
        )
        .await?;
        ensure!(
            status == 200 && body["count"].as_u64() > Some(100),
            "{body}"
        );
        // Downloaded once into the instance's local copy, never exported again.
        ensure!(server.exports_created_for(layer_id) == 1);
        let copies: Vec<_> = std::fs::read_dir(&local)?
            .flatten()
            .filter(|file| file.path().extension().is_some_and(|ext| ext == "gpkg"))
            .collect();
        ensure!(copies.len() == 1, "{copies:?}");
        let log = instance.stop().await?;
        ensure!(log.contains("downloaded from the shared cache"), "{log}");
    }
    Ok(())
}

#[tokio::test]
async fn cache_commands_list_verify_and_collect_the_bucket_and_metadata_versions_share_data()
-> Result<()> {
    let (kept, bumped) = (FIRST + 90, FIRST + 91);
    let (server, moto, dir) = team(
        [kept, bumped]
            .into_iter()
            .map(|id| TestLayer::vector(id, "Maintained layer", data::WORLD_COUNTRIES_GPKG))
            .collect(),
    )
    .await?;
    let a = dir.path().join("a");
    let ids = [kept.to_string(), bumped.to_string()];
    let (code, _, stderr) = run(machine(&server, &moto, &a, &["get", &ids[0], &ids[1]])).await?;
    ensure!(code == 0, "{stderr}");

    // A version that changed only metadata: linked on the machine that had the data, and shared
    // as a link to the same objects; a machine with nothing local downloads it, no export.
    server
        .bump_version(bumped, BumpKind::MetadataOnly)
        .context("bump")?;
    let (code, stdout, stderr) =
        run(machine(&server, &moto, &a, &["get", "--json", &ids[1]])).await?;
    ensure!(code == 0, "{stderr}");
    ensure!(stdout.contains(r#""outcome": "linked""#), "{stdout}");
    ensure!(manifests(&moto).await?.len() == 3);
    let data_objects =
        |keys: &[String]| keys.iter().filter(|key| has_extension(key, "gpkg")).count();
    ensure!(data_objects(&keys(&moto, "team/cache/").await?) == 2);
    let (code, stdout, stderr) = run(machine(
        &server,
        &moto,
        &dir.path().join("b"),
        &["get", "--json", &ids[1]],
    ))
    .await?;
    ensure!(code == 0, "{stderr}");
    ensure!(stdout.contains(r#""outcome": "shared""#), "{stdout}");
    ensure!(server.exports_created_for(bumped) == 1);

    // `koop cache` on the bucket: ls, gc of the superseded version (its data stays: the link
    // uses it), verify.
    let cache = |args: &[&str]| {
        let mut command = machine(&server, &moto, &dir.path().join("z"), &["cache"]);
        command.args(args);
        command
    };
    let (code, stdout, stderr) = run(cache(&["ls", "--json"])).await?;
    ensure!(code == 0, "{stderr}");
    let listed: Value = serde_json::from_str(&stdout)?;
    ensure!(listed.as_array().map(Vec::len) == Some(3), "{listed}");
    let (code, stdout, stderr) = run(cache(&["gc", "--keep", "1"])).await?;
    ensure!(code == 0, "{stderr}");
    ensure!(stdout.contains("removed 1 entries"), "{stdout}");
    ensure!(manifests(&moto).await?.len() == 2);
    ensure!(data_objects(&keys(&moto, "team/cache/").await?) == 2);
    let (code, stdout, stderr) = run(cache(&["verify"])).await?;
    ensure!(code == 0, "{stdout}{stderr}");
    ensure!(stdout.contains("2 entries ok, 0 corrupt"), "{stdout}");

    // An object altered in the bucket: verify says which, exits 1 and withdraws the entry, so
    // the next machine exports the version again instead of downloading bad data.
    let object = keys(&moto, "team/cache/")
        .await?
        .into_iter()
        .find(|key| key.starts_with(&format!("team/cache/{kept}_")) && has_extension(key, "gpkg"))
        .context("the kept layer's object")?;
    moto.put(&object, b"not a GeoPackage".to_vec()).await?;
    // A machine that meets it refuses the download (BLAKE3), exports the version itself and
    // replaces the bucket's entry.
    let (code, stdout, stderr) = run(machine(
        &server,
        &moto,
        &dir.path().join("e"),
        &["get", "--json", &ids[0]],
    ))
    .await?;
    ensure!(code == 0, "{stderr}");
    ensure!(stdout.contains(r#""outcome": "downloaded""#), "{stdout}");
    ensure!(stdout.contains(r#""not_shared": null"#), "{stdout}");
    let (code, stdout, _) = run(cache(&["verify"])).await?;
    ensure!(code == 0 && stdout.contains("2 entries ok"), "{stdout}");
    moto.put(&object, b"not a GeoPackage".to_vec()).await?;
    let (code, stdout, _) = run(cache(&["verify"])).await?;
    ensure!(code == 1, "{stdout}");
    ensure!(
        stdout.contains("corrupt:") && stdout.contains("1 corrupt"),
        "{stdout}"
    );
    ensure!(manifests(&moto).await?.len() == 1);
    let (code, stdout, stderr) = run(machine(
        &server,
        &moto,
        &dir.path().join("c"),
        &["get", "--json", &ids[0]],
    ))
    .await?;
    ensure!(code == 0, "{stderr}");
    ensure!(stdout.contains(r#""outcome": "downloaded""#), "{stdout}");
    ensure!(manifests(&moto).await?.len() == 2);
    // `--local` is this machine's copy.
    let mut local = cache(&["ls", "--json"]);
    local.arg("--local");
    let (code, stdout, _) = run(local).await?;
    ensure!(code == 0 && stdout.trim() == "[]", "{stdout}");
    Ok(())
}

#[tokio::test]
async fn a_store_that_answers_nothing_fails_the_layer_before_any_export() -> Result<()> {
    let failing = FIRST + 62;
    let (server, moto, dir) = team(vec![TestLayer::vector(
        failing,
        "Unlucky layer",
        data::WORLD_COUNTRIES_GPKG,
    )])
    .await?;
    let proxy = StoreProxy::start(&moto).await?;
    // A store that answers nothing: the layer fails with the store named, rather than being
    // exported once per machine.
    proxy
        .faults
        .fail_everything
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let id = failing.to_string();
    let (code, _, stderr) = run(machine_via(
        &server,
        &moto,
        proxy.env(&moto),
        &dir.path().join("d"),
        &["get", &id],
    ))
    .await?;
    ensure!(code != 0, "{stderr}");
    ensure!(
        stderr.contains(&moto.url("team/cache")) || stderr.contains("shared cache"),
        "{stderr}"
    );
    ensure!(!stderr.contains("koop-test-secret"), "{stderr}");
    ensure!(server.exports_created_for(failing) == 0);
    Ok(())
}
