//! `koop mirror` keeps changed layers current from their changesets, says per layer what it did
//! and why a layer was exported in full, and survives being killed mid-changeset.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use koop_testkit::{
    BumpKind, ChangesetFaults, GeneratedContent, TestLayer, TestServer, TestServerConfig, data,
};
use serde_json::Value;

use crate::interrupt::{finish, signal, spawn, until};
use crate::koop;

const FIRST: u64 = 7_000;
/// Odd: its details list its services (even ids link to them).
const PLAIN: u64 = 7_101;

/// Ten generated point layers with changesets and one fixture layer without.
async fn site() -> Result<TestServer> {
    let mut layers: Vec<TestLayer> = (0..10)
        .map(|index| {
            TestLayer::generated(
                FIRST + index,
                &format!("Nightly points {index}"),
                GeneratedContent::Points { count: 500 },
            )
            .with_changesets()
        })
        .collect();
    layers.push(TestLayer::vector(
        PLAIN,
        "Countries",
        data::WORLD_COUNTRIES_GPKG,
    ));
    Ok(TestServer::start_with(TestServerConfig {
        layers,
        ..TestServerConfig::default()
    })
    .await?)
}

fn list(cache: &std::path::Path) -> Result<String> {
    let path = cache.with_extension("list");
    let mut ids: Vec<String> = (0..10).map(|index| (FIRST + index).to_string()).collect();
    ids.push(PLAIN.to_string());
    std::fs::write(&path, ids.join("\n"))?;
    Ok(path.to_str().context("utf-8")?.to_owned())
}

fn layer(json: &Value, layer_id: u64) -> Result<&Value> {
    json["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|layer| layer["layer_id"] == layer_id)
        .with_context(|| format!("layer {layer_id} is not in {json}"))
}

#[tokio::test]
async fn a_nightly_run_updates_changed_layers_by_changeset_and_says_why_others_are_exported()
-> Result<()> {
    let server = site().await?;
    let dir = tempfile::tempdir()?;
    let cache = dir.path().join("cache");
    let list = list(&cache)?;
    let first = koop(&server, &cache, &["mirror", "--json", "--from", &list]).await?;
    ensure!(first.code == 0, "{}", first.stderr);
    let first: Value = serde_json::from_str(&first.stdout)?;
    ensure!(
        layer(&first, FIRST)?["full_export_reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("no earlier version")),
        "{first}"
    );

    for index in 0..3 {
        server.bump_version(FIRST + index, BumpKind::Edit { per_mille: 20 });
    }
    server.bump_version(PLAIN, BumpKind::Data);

    // The dry run says what would happen, and does nothing.
    let before = server.counters();
    let plan = koop(
        &server,
        &cache,
        &["mirror", "--dry-run", "--json", "--from", &list],
    )
    .await?;
    ensure!(plan.code == 0, "{}", plan.stderr);
    let plan: Value = serde_json::from_str(&plan.stdout)?;
    ensure!(
        plan["summary"]["changeset"] == 3 && plan["summary"]["export"] == 1,
        "{plan}"
    );
    ensure!(layer(&plan, FIRST)?["plan"] == "changeset", "{plan}");
    ensure!(
        layer(&plan, PLAIN)?["full_export_reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("offers no WFS changesets")),
        "{plan}"
    );
    ensure!(server.counters().changeset_pages == before.changeset_pages);
    ensure!(server.counters().exports_created == before.exports_created);

    let before = server.counters();
    let run = koop(&server, &cache, &["mirror", "--json", "--from", &list]).await?;
    ensure!(run.code == 0, "{}", run.stderr);
    let run: Value = serde_json::from_str(&run.stdout)?;
    let after = server.counters();
    ensure!(
        after.exports_created - before.exports_created == 1,
        "only the plain layer is exported"
    );
    ensure!(
        run["summary"]["changesets"] == 3 && run["summary"]["downloaded"] == 1,
        "{run}"
    );
    ensure!(run["summary"]["unchanged"] == 7, "{run}");
    let updated = layer(&run, FIRST)?;
    ensure!(updated["outcome"] == "changeset", "{updated}");
    // 500 points, 2 %: 5 inserted, 2 updated, 3 deleted.
    let changeset = &updated["changeset"];
    ensure!(
        changeset["inserts"] == 5 && changeset["updates"] == 2 && changeset["deletes"] == 3,
        "{changeset}"
    );
    ensure!(changeset["bytes"].as_u64().is_some_and(|bytes| bytes > 0));
    ensure!(
        layer(&run, PLAIN)?["full_export_reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("offers no WFS changesets")),
        "{run}"
    );
    // The catalog, the details of the 4 changed layers, 3 one-page changesets and the plain
    // layer's export: the run counts its own requests as the site does.
    ensure!(
        run["summary"]["requests"].as_u64() == Some(after.api_requests - before.api_requests),
        "{run}"
    );

    // In text, a changeset line carries its counts and a full export its reason.
    for index in 3..5 {
        server.bump_version(FIRST + index, BumpKind::Edit { per_mille: 20 });
    }
    let text = koop(&server, &cache, &["mirror", "--from", &list]).await?;
    ensure!(text.code == 0, "{}", text.stderr);
    let line = text
        .stdout
        .lines()
        .find(|line| line.starts_with(&format!("{}\t", FIRST + 3)))
        .context("no line for the layer")?;
    ensure!(
        line.contains("\tchangeset\t") && line.contains("+5 ~2 -3"),
        "{line}"
    );
    ensure!(
        text.stderr.contains("2 updated by changeset"),
        "{}",
        text.stderr
    );
    let verify = koop(&server, &cache, &["cache", "verify"]).await?;
    ensure!(verify.code == 0, "{}", verify.stdout);
    Ok(())
}

#[tokio::test]
async fn kill_9_mid_changeset_leaves_the_entries_and_the_state_valid() -> Result<()> {
    let server = site().await?;
    let dir = tempfile::tempdir()?;
    let cache = dir.path().join("cache");
    let list = list(&cache)?;
    let first = koop(&server, &cache, &["mirror", "--from", &list]).await?;
    ensure!(first.code == 0, "{}", first.stderr);
    let state_before = std::fs::read_dir(cache.join(".state"))?
        .map(|entry| Ok(std::fs::read(entry?.path())?))
        .collect::<Result<Vec<_>>>()?;

    server.bump_version(FIRST, BumpKind::Edit { per_mille: 20 });
    server.set_changeset_faults(
        FIRST,
        ChangesetFaults {
            page_cap: Some(2),
            page_delay: Some(Duration::from_millis(300)),
            ..ChangesetFaults::default()
        },
    );
    let pages = server.counters().changeset_pages;
    let child = spawn(&server, &cache, &["mirror", "--from", &list])?;
    until(Duration::from_secs(20), || {
        server.counters().changeset_pages >= pages + 2
    })
    .await?;
    signal(&child, "KILL").await?;
    let (code, _) = finish(child).await?;
    ensure!(code.is_none(), "the run was not killed");

    // What was cached stays valid; the state still records the last complete run.
    let verify = koop(&server, &cache, &["cache", "verify"]).await?;
    ensure!(
        verify.code == 0 && verify.stdout.contains("11 entries ok"),
        "{}",
        verify.stdout
    );
    let state_after = std::fs::read_dir(cache.join(".state"))?
        .filter_map(Result::ok)
        .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "json"))
        .map(|entry| Ok(std::fs::read(entry.path())?))
        .collect::<Result<Vec<_>>>()?;
    ensure!(
        state_before
            .iter()
            .filter(|bytes| bytes.starts_with(b"{"))
            .count()
            == state_after.len()
            && state_after.iter().all(|bytes| state_before.contains(bytes)),
        "the state file changed"
    );

    // The next run builds the version from the changeset.
    server.set_changeset_faults(FIRST, ChangesetFaults::default());
    let again = koop(&server, &cache, &["mirror", "--json", "--from", &list]).await?;
    ensure!(again.code == 0, "{}", again.stderr);
    let again: Value = serde_json::from_str(&again.stdout)?;
    ensure!(layer(&again, FIRST)?["outcome"] == "changeset", "{again}");
    Ok(())
}
