//! `nightly`: keeping hundreds of layers current. 300 listed layers of ~5 MB, 10 of them bumped
//! by an edit of 0.2 % of their features: koop's run (catalog, details of the changed, changesets)
//! next to the anchor, a run that re-exports the 10 in full (`--no-changesets`, the same catalog
//! plan), from copies of the same cache. Goal: ≤ 2 % of the re-export's bytes, and every
//! rebuilt GeoPackage identical in content to the full export of its version.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use koop_testkit::{BumpKind, GeneratedContent, TestLayer, TestServer, TestServerConfig};
use serde_json::Value;

use crate::Args;
use crate::common::{latencies_1_to_3_s, mb, run_koop, verdict};

const FIRST: u64 = 40_000;
/// Points per layer: about 5 MB of GeoPackage.
const POINTS: u64 = 45_000;
const BUMPED: usize = 10;

/// Every attribute and geometry of every feature, FID aside, ordered by `id`.
fn features(path: &Path) -> Result<Vec<Vec<rusqlite::types::Value>>> {
    let connection = rusqlite::Connection::open(path)?;
    let mut statement = connection
        .prepare("SELECT geom, id, category, value, name, observed FROM points ORDER BY id")?;
    let rows = statement
        .query_map([], |row| {
            (0..6)
                .map(|index| row.get::<_, rusqlite::types::Value>(index))
                .collect::<rusqlite::Result<Vec<_>>>()
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()?;
    ensure!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
    Ok(())
}

/// Paths of the layers of a mirror run's JSON, by id.
fn paths(run: &Value) -> std::collections::BTreeMap<u64, String> {
    run["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|layer| {
            Some((
                layer["layer_id"].as_u64()?,
                layer["path"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// The site of `count` layers with changesets, and the list file naming them.
async fn site(count: u64, work: &Path) -> Result<(TestServer, String)> {
    let layers = (0..count)
        .map(|index| {
            TestLayer::generated(
                FIRST + index,
                &format!("Nightly layer {index}"),
                GeneratedContent::Points { count: POINTS },
            )
            .with_changesets()
        })
        .collect();
    let server = TestServer::start_with(TestServerConfig {
        layers,
        reuse_identical_exports: false,
        ..TestServerConfig::default()
    })
    .await?;
    let list = work.join("nightly.txt");
    let ids: Vec<u64> = (0..count).map(|index| FIRST + index).collect();
    std::fs::write(
        &list,
        ids.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
    )?;
    Ok((server, list.to_str().context("utf-8")?.to_owned()))
}

pub(crate) async fn nightly(args: &Args, work: &Path) -> Result<bool> {
    let count = args.nightly_layers.max(BUMPED) as u64;
    println!(
        "\nnightly: {count} listed layers of {POINTS} points (~5 MB), {BUMPED} bumped by 0.2 % of their features"
    );
    let (server, list) = site(count, work).await?;
    let ours = work.join("nightly-cache");
    let _ = std::fs::remove_dir_all(&ours);
    let first = run_koop(&server, &ours, &["mirror", "--from", &list]).await?;
    println!(
        "  first run: {count} layers exported in {:.1} s",
        first.wall.as_secs_f64()
    );
    let anchor = work.join("nightly-cache-anchor");
    let _ = std::fs::remove_dir_all(&anchor);
    copy_tree(&ours, &anchor)?;

    // Ten layers get a new version; their exports take 1–3 s, as small exports do.
    let step = count / BUMPED as u64;
    let bumped: Vec<u64> = (0..BUMPED as u64)
        .map(|index| FIRST + index * step)
        .collect();
    for (layer_id, latency) in bumped.iter().zip(latencies_1_to_3_s(BUMPED)) {
        server.bump_version(*layer_id, BumpKind::Edit { per_mille: 2 });
        server.set_export_latency(*layer_id, latency);
    }

    let before = server.counters();
    let measured = run_koop(&server, &ours, &["mirror", "--json", "--from", &list]).await?;
    let middle = server.counters();
    let run: Value = serde_json::from_str(&measured.stdout)?;
    let anchor_measured = run_koop(
        &server,
        &anchor,
        &["--no-changesets", "mirror", "--json", "--from", &list],
    )
    .await?;
    let after = server.counters();
    let anchor_run: Value = serde_json::from_str(&anchor_measured.stdout)?;
    ensure!(
        run["summary"]["changesets"] == BUMPED
            && run["summary"]["unchanged"] == count - BUMPED as u64,
        "koop's run: {}",
        run["summary"]
    );
    ensure!(
        anchor_run["summary"]["downloaded"] == BUMPED,
        "the anchor's run: {}",
        anchor_run["summary"]
    );
    let mut zip_bytes = 0;
    for layer_id in &bumped {
        zip_bytes += std::fs::metadata(server.export_zip(*layer_id).await?)?.len();
    }
    let changeset_bytes = middle.changeset_bytes - before.changeset_bytes;
    let byte_share = changeset_bytes as f64 / zip_bytes.max(1) as f64;

    // Every rebuilt layer holds exactly the features of the full export of its version.
    let (built, exported) = (paths(&run), paths(&anchor_run));
    let mut identical = 0;
    for layer_id in &bumped {
        let (Some(ours), Some(theirs)) = (built.get(layer_id), exported.get(layer_id)) else {
            continue;
        };
        if features(Path::new(ours))? == features(Path::new(theirs))? {
            identical += 1;
        }
    }
    let requests = middle.api_requests - before.api_requests;
    let anchor_requests = after.api_requests - middle.api_requests;
    println!(
        "  koop:      {requests} requests ({} changeset pages), {:.2} MB of changesets, {:.2} s, exports {}",
        middle.changeset_pages - before.changeset_pages,
        mb(changeset_bytes),
        measured.wall.as_secs_f64(),
        middle.exports_created - before.exports_created
    );
    println!(
        "  re-export: {anchor_requests} requests, {:.2} MB of ZIPs, {:.2} s, exports {}",
        mb(zip_bytes),
        anchor_measured.wall.as_secs_f64(),
        after.exports_created - middle.exports_created
    );
    let bytes_ok = byte_share <= 0.02;
    let identical_ok = identical == BUMPED;
    println!(
        "  bytes {:.2} % of the re-export's (goal ≤ 2 %)  {}",
        byte_share * 100.0,
        verdict(bytes_ok)
    );
    println!(
        "  wall time {:.2}× the re-export's; peak RSS {:.0} MiB vs {:.0} MiB",
        measured.wall.as_secs_f64() / anchor_measured.wall.as_secs_f64(),
        mb(measured.peak_rss),
        mb(anchor_measured.peak_rss)
    );
    println!(
        "  rebuilt layers identical to a full export: {identical} of {BUMPED}  {}",
        verdict(identical_ok)
    );
    Ok(bytes_ok && identical_ok)
}
