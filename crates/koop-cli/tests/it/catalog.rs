//! `koop mirror` asks the site's catalog once what changed since its last complete run
//! (`GET data/?updated_at.after=…`), and falls back to a details request per layer when the
//! site cannot say.

use anyhow::{Context, Result};
use koop_testkit::{
    BumpKind, CatalogFilter, ExportFaults, ExportOutcome, RequestFaults, TestLayer, TestServer,
    TestServerConfig, data,
};
use serde_json::Value;

use crate::koop;

const FIRST: u64 = 5_000;

/// A site of `count` small vector layers with instant exports, 25 catalog items a page.
async fn site(count: u64) -> Result<TestServer> {
    let layers = (0..count)
        .map(|index| {
            TestLayer::vector(
                FIRST + index,
                &format!("Nightly layer {index}"),
                data::WORLD_COUNTRIES_GPKG,
            )
        })
        .collect();
    Ok(TestServer::start_with(TestServerConfig {
        layers,
        page_size: 25,
        reuse_identical_exports: false,
        ..TestServerConfig::default()
    })
    .await?)
}

/// A site of `count` layers and a cache that got them all in one complete run; the directory
/// holding the cache is removed when dropped.
async fn mirrored(count: u64) -> Result<(TestServer, tempfile::TempDir, std::path::PathBuf)> {
    let server = site(count).await?;
    let dir = tempfile::tempdir()?;
    let cache = dir.path().join("cache");
    let (code, first) = mirror(&server, &cache, count).await?;
    anyhow::ensure!(code == 0, "the first run failed: {first}");
    Ok((server, dir, cache))
}

/// `koop mirror --json --from LIST` of every layer; its JSON document.
async fn mirror(server: &TestServer, cache: &std::path::Path, count: u64) -> Result<(i32, Value)> {
    let list = cache.with_extension("list");
    let ids: Vec<String> = (0..count)
        .map(|index| (FIRST + index).to_string())
        .collect();
    std::fs::write(&list, ids.join("\n"))?;
    let run = koop(
        server,
        cache,
        &["mirror", "--json", "--from", list.to_str().context("path")?],
    )
    .await?;
    let json: Value = serde_json::from_str(&run.stdout)
        .with_context(|| format!("stdout {:?}, stderr {}", run.stdout, run.stderr))?;
    Ok((run.code, json))
}

/// The ids of the layers of a run's JSON whose `key` is `value`.
fn ids_where(json: &Value, key: &str, value: &str) -> Vec<u64> {
    json["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|layer| layer[key] == value)
        .filter_map(|layer| layer["layer_id"].as_u64())
        .collect()
}

/// The ids of the layers of a run whose outcome is `outcome`.
fn outcomes(json: &Value, outcome: &str) -> Vec<u64> {
    ids_where(json, "outcome", outcome)
}

#[tokio::test]
async fn an_unchanged_nightly_run_asks_the_catalog_once_and_a_changed_layer_alone_is_fetched()
-> Result<()> {
    let count = 60;
    let server = site(count).await?;
    let dir = tempfile::tempdir()?;
    let cache = dir.path().join("cache");

    let (code, first) = mirror(&server, &cache, count).await?;
    assert_eq!(code, 0, "{first}");
    assert_eq!(
        first["catalog"][0]["check"], "not_asked",
        "{}",
        first["catalog"]
    );
    assert_eq!(server.counters().exports_created, count);

    // Nothing changed: one catalog request, no layer asked about.
    let before = server.counters();
    let (code, second) = mirror(&server, &cache, count).await?;
    let after = server.counters();
    assert_eq!(code, 0, "{second}");
    assert_eq!(
        second["catalog"][0]["check"], "asked",
        "{}",
        second["catalog"]
    );
    assert_eq!(second["catalog"][0]["changed"], 0);
    assert_eq!(second["summary"]["unchanged"], count);
    assert!(
        after.api_requests - before.api_requests <= 4,
        "{} requests for {count} unchanged layers",
        after.api_requests - before.api_requests
    );
    assert_eq!(after.layer_details, before.layer_details);
    assert_eq!(after.exports_created, before.exports_created);
    // The run counts its own requests as the site does.
    assert_eq!(
        second["summary"]["requests"].as_u64(),
        Some(after.api_requests - before.api_requests)
    );
    // The paths are the cached files of the first run.
    let first_paths: Vec<&Value> = first["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| &l["path"])
        .collect();
    for layer in second["layers"].as_array().into_iter().flatten() {
        assert!(first_paths.contains(&&layer["path"]), "{layer}");
    }

    // Three layers get new data: three details requests before their three exports.
    let bumped = [FIRST + 3, FIRST + 30, FIRST + 59];
    for id in bumped {
        server.bump_version(id, BumpKind::Data).context("bump")?;
    }
    // A run's start is taken from the site's `Date` (whole seconds) less a second, so changes
    // in the two seconds before a run are reported to the next one too (harmless: a details
    // request that finds the version cached). Bumps made well before the run are not.
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    let before = server.counters();
    let (code, third) = mirror(&server, &cache, count).await?;
    let after = server.counters();
    assert_eq!(code, 0, "{third}");
    assert_eq!(third["catalog"][0]["changed"], 3, "{}", third["catalog"]);
    let mut downloaded = outcomes(&third, "downloaded");
    downloaded.sort_unstable();
    assert_eq!(downloaded, bumped);
    assert_eq!(outcomes(&third, "unchanged").len(), 57);
    // One details request each before its export, and the check after it that the data did not
    // change meanwhile.
    assert_eq!(after.layer_details - before.layer_details, 2 * 3);
    assert!(after.catalog_pages - before.catalog_pages <= 4);
    assert_eq!(after.exports_created - before.exports_created, 3);

    // The state moved on: the next run finds nothing changed again.
    let (code, fourth) = mirror(&server, &cache, count).await?;
    assert_eq!(code, 0);
    assert_eq!(
        fourth["summary"]["unchanged"], count,
        "{}",
        fourth["catalog"]
    );
    Ok(())
}

#[tokio::test]
async fn a_site_that_ignores_or_refuses_the_filter_is_asked_layer_by_layer() -> Result<()> {
    let count = 30;
    let (server, _dir, cache) = mirrored(count).await?;
    server
        .bump_version(FIRST + 7, BumpKind::Data)
        .context("bump")?;

    // The first of these runs also exports the bumped layer: one more details request, the
    // check after its export.
    for (filter, says, details) in [
        (CatalogFilter::Ignored, "ignored", count + 1),
        (CatalogFilter::Refused, "refused", count),
    ] {
        server.set_request_faults(RequestFaults {
            catalog_filter: filter,
            ..RequestFaults::default()
        });
        let before = server.counters();
        let (code, run) = mirror(&server, &cache, count).await?;
        let after = server.counters();
        assert_eq!(code, 0, "{run}");
        let catalog = &run["catalog"][0];
        assert_eq!(catalog["check"], "unsupported", "{catalog}");
        assert!(
            catalog["reason"]
                .as_str()
                .is_some_and(|reason| reason.contains(says)),
            "{catalog}"
        );
        assert_eq!(
            after.layer_details - before.layer_details,
            details,
            "{filter:?}"
        );
        assert_eq!(run["summary"]["unchanged"], 0);
    }
    // The bumped layer was fetched by the first of those runs, through its details.
    assert_eq!(server.exports_created_for(FIRST + 7), 2);
    Ok(())
}

#[tokio::test]
async fn a_run_with_a_failed_layer_is_not_recorded() -> Result<()> {
    let count = 10;
    let (server, _dir, cache) = mirrored(count).await?;

    let (failing, fine) = (FIRST + 1, FIRST + 2);
    server
        .bump_version(failing, BumpKind::Data)
        .context("bump")?;
    server.bump_version(fine, BumpKind::Data).context("bump")?;
    server.set_export_faults(
        failing,
        ExportFaults {
            outcome: ExportOutcome::Error,
            ..ExportFaults::default()
        },
    );
    let (code, second) = mirror(&server, &cache, count).await?;
    assert_eq!(code, 1, "{second}");
    assert_eq!(outcomes(&second, "failed"), [failing]);
    assert_eq!(outcomes(&second, "downloaded"), [fine]);

    // Still asked from the first run's start: both changes are reported again.
    server.clear_faults();
    let (code, third) = mirror(&server, &cache, count).await?;
    assert_eq!(code, 0, "{third}");
    assert_eq!(third["catalog"][0]["changed"], 2, "{}", third["catalog"]);
    assert_eq!(outcomes(&third, "downloaded"), [failing]);
    assert_eq!(outcomes(&third, "cached"), [fine]);
    assert_eq!(outcomes(&third, "unchanged").len(), 8);
    Ok(())
}

#[tokio::test]
async fn a_run_killed_mid_export_leaves_the_state_of_the_last_complete_run() -> Result<()> {
    let count = 5;
    let (server, _dir, cache) = mirrored(count).await?;
    let state_dir = cache.join(".state");
    let state_file = std::fs::read_dir(&state_dir)?
        .next()
        .context("a state file")??
        .path();
    let recorded = std::fs::read(&state_file)?;

    let slow = FIRST + 4;
    server.bump_version(slow, BumpKind::Data).context("bump")?;
    server.set_export_latency(slow, std::time::Duration::from_secs(3));
    let list = cache.with_extension("list");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_koop"))
        .arg("--domain")
        .arg(server.base_url())
        .arg("--cache-dir")
        .arg(&cache)
        .args(["mirror", "--json", "--from"])
        .arg(&list)
        .env("KOORDINATES_API_KEY", server.api_key())
        .env_remove("KOOPCACHE_DIR")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while server.exports_created_for(slow) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the export never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    child.kill().await?; // SIGKILL
    assert_eq!(
        std::fs::read(&state_file)?,
        recorded,
        "the state is the last complete run's"
    );

    // The next run picks up the export the killed one started (no second export) and completes.
    let (code, again) = mirror(&server, &cache, count).await?;
    assert_eq!(code, 0, "{again}");
    assert_eq!(outcomes(&again, "downloaded"), [slow]);
    assert_eq!(outcomes(&again, "unchanged").len(), 4);
    assert_eq!(server.exports_created_for(slow), 2);
    let state: Value = serde_json::from_slice(&std::fs::read(&state_file)?)?;
    assert!(state["last_complete_run_started_at"].is_string(), "{state}");
    Ok(())
}

#[tokio::test]
async fn a_dry_run_says_what_would_be_exported_and_does_nothing() -> Result<()> {
    let count = 12;
    let (server, _dir, cache) = mirrored(count).await?;
    server
        .bump_version(FIRST + 5, BumpKind::Data)
        .context("bump")?;
    server
        .bump_version(FIRST + 6, BumpKind::MetadataOnly)
        .context("bump")?;

    let list = cache.with_extension("list");
    let before = server.counters();
    let run = koop(
        &server,
        &cache,
        &[
            "mirror",
            "--dry-run",
            "--json",
            "--from",
            list.to_str().context("path")?,
        ],
    )
    .await?;
    let after = server.counters();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let plan: Value = serde_json::from_str(&run.stdout)?;
    assert_eq!(plan["summary"]["export"], 1, "{plan}");
    assert_eq!(plan["summary"]["link"], 1, "{plan}");
    assert_eq!(plan["summary"]["unchanged"], count - 2, "{plan}");
    assert_eq!(ids_where(&plan, "plan", "export"), [FIRST + 5]);
    assert_eq!(ids_where(&plan, "plan", "link"), [FIRST + 6]);
    assert_eq!(
        after.exports_created, before.exports_created,
        "nothing exported"
    );
    assert_eq!(after.layer_details - before.layer_details, 2);

    // Nothing was recorded either: the real run finds the same two changes.
    let (code, real) = mirror(&server, &cache, count).await?;
    assert_eq!(code, 0, "{real}");
    assert_eq!(outcomes(&real, "downloaded"), [FIRST + 5]);
    assert_eq!(outcomes(&real, "linked"), [FIRST + 6]);
    Ok(())
}

#[tokio::test]
async fn a_layer_cached_outside_a_complete_run_is_asked_about() -> Result<()> {
    let server = site(6).await?;
    let dir = tempfile::tempdir()?;
    let cache = dir.path().join("cache");
    let late = FIRST + 5;
    // Cached by `koop get`, then changed on the site, before a complete run of the other five.
    let run = koop(&server, &cache, &["get", &late.to_string()]).await?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    server.bump_version(late, BumpKind::Data).context("bump")?;
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    let (code, _) = mirror(&server, &cache, 5).await?;
    assert_eq!(code, 0);

    // The catalog does not name it (it changed before that run), but that run did not get it:
    // its cached version is not known to be current, so it is looked up and fetched anew.
    let (code, run) = mirror(&server, &cache, 6).await?;
    assert_eq!(code, 0, "{run}");
    assert_eq!(outcomes(&run, "downloaded"), [late], "{run}");
    assert_eq!(outcomes(&run, "unchanged").len(), 5);
    Ok(())
}
