//! `shared`: a team's cache on object storage. 30 layers, 3 `koop mirror` processes with their
//! own local caches on one bucket (moto's S3 server on loopback) at once, next to one process
//! alone on an empty prefix: exports created (goal: 30, one per layer), wall times, peak RSS
//! per process.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use koop_testkit::moto::Moto;
use koop_testkit::{GeneratedContent, TestLayer, TestServer, TestServerConfig};

use crate::common::{latencies_1_to_3_s, mb, run_koop_with, verdict};

const FIRST: u64 = 60_000;
const LAYERS: usize = 30;
const MACHINES: usize = 3;

/// `moto_server` from the tools folder xtask fills, else `PATH`.
fn moto_program() -> PathBuf {
    std::env::var_os("KOOP_BENCH_TOOLS")
        .map(|tools| PathBuf::from(tools).join("venv/bin/moto_server"))
        .filter(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from("moto_server"))
}

/// A test site of the layers, their files generated before anything is measured (the first
/// export of a layer builds its file).
async fn site() -> Result<TestServer> {
    let latencies = latencies_1_to_3_s(LAYERS);
    let layers = (0..LAYERS as u64)
        .zip(&latencies)
        .map(|(index, latency)| {
            TestLayer::generated(
                FIRST + index,
                &format!("Shared layer {index}"),
                GeneratedContent::Points { count: 45_000 },
            )
            .with_latency(*latency)
        })
        .collect();
    let server = TestServer::start_with(TestServerConfig {
        layers,
        reuse_identical_exports: false,
        ..TestServerConfig::default()
    })
    .await?;
    for index in 0..LAYERS as u64 {
        server.export_zip(FIRST + index).await?;
    }
    Ok(server)
}

/// `koop --cache-dir {url} --local-cache-dir {local} mirror --from {list}`.
async fn mirror(
    server: &TestServer,
    url: &str,
    local: &Path,
    list: &str,
    env: &[(String, String)],
) -> Result<crate::common::Measured> {
    let args = [
        "--local-cache-dir",
        local.to_str().unwrap_or_default(),
        "mirror",
        "--from",
        list,
    ];
    run_koop_with(server, Path::new(url), &args, env).await
}

pub(crate) async fn shared(args: &crate::Args, work: &Path) -> Result<bool> {
    println!(
        "\nshared: {LAYERS} layers of ~5 MB (export latencies 1–3 s), {MACHINES} processes on one bucket next to one alone"
    );
    // Two sites with the same layers, one for the lone process and one for the team: koop
    // finds an export again by its name, so on one site the team would reuse the lone run's.
    let lone_site = site().await?;
    let server = site().await?;
    let moto = Moto::start_program(&moto_program())
        .await
        .context("the shared benchmark needs moto_server (cargo xtask bench installs it)")?;
    let list = work.join("shared.txt");
    std::fs::write(
        &list,
        (0..LAYERS as u64)
            .map(|index| (FIRST + index).to_string())
            .collect::<Vec<_>>()
            .join("\n"),
    )?;
    let list = list.to_str().context("utf-8")?.to_owned();
    let env = moto.env();
    let before = lone_site.counters().exports_created;
    let alone = mirror(
        &lone_site,
        &moto.url("alone"),
        &work.join("shared-alone"),
        &list,
        &env,
    )
    .await?;
    let alone_exports = lone_site.counters().exports_created - before;
    let before = server.counters().exports_created;
    let team_url = moto.url("team");
    let locals: Vec<PathBuf> = (0..MACHINES)
        .map(|index| work.join(format!("shared-machine-{index}")))
        .collect();
    let machines = futures::future::join_all(
        locals
            .iter()
            .map(|local| mirror(&server, &team_url, local, &list, &env)),
    )
    .await
    .into_iter()
    .collect::<Result<Vec<_>>>()?;
    let exports = server.counters().exports_created - before;
    ensure!(
        alone_exports == LAYERS as u64,
        "the lone process made {alone_exports} exports"
    );
    let slowest = machines
        .iter()
        .map(|run| run.wall.as_secs_f64())
        .fold(0.0, f64::max);
    println!(
        "  one process alone: {:.1} s, {alone_exports} exports, peak RSS {:.0} MiB",
        alone.wall.as_secs_f64(),
        mb(alone.peak_rss)
    );
    for (index, run) in machines.iter().enumerate() {
        println!(
            "  machine {index}: {:.1} s, peak RSS {:.0} MiB",
            run.wall.as_secs_f64(),
            mb(run.peak_rss)
        );
    }
    let ok = exports == LAYERS as u64;
    println!(
        "  exports created by the {MACHINES} machines: {exports} (goal {LAYERS})  {}",
        verdict(ok)
    );
    println!(
        "  slowest machine {slowest:.1} s = {:.2}× one process alone",
        slowest / alone.wall.as_secs_f64()
    );
    let large = large(args.large_mb, work, &moto).await?;
    Ok(ok && large)
}

/// One large layer through the bucket: exported and uploaded by one machine, downloaded by
/// another, next to `koop get` into a local cache alone; peak RSS of each (goal ≤ 64 MiB).
async fn large(size_mb: u64, work: &Path, moto: &Moto) -> Result<bool> {
    let layer_id = FIRST + 1_000;
    println!("  a {size_mb} MB layer through the bucket:");
    let server = TestServer::start_with(TestServerConfig {
        layers: vec![TestLayer::generated(
            layer_id,
            &format!("Large shared layer {size_mb} MB"),
            GeneratedContent::Polygons {
                target_bytes: size_mb * crate::common::MB,
            },
        )],
        ..TestServerConfig::default()
    })
    .await?;
    server.export_zip(layer_id).await?;
    let id = layer_id.to_string();
    let env = moto.env();
    let alone_dir = tempfile::tempdir_in(work)?;
    let alone = crate::common::run_koop(&server, alone_dir.path(), &["get", &id]).await?;
    drop(alone_dir);
    let url = moto.url("large");
    let (first, second) = (work.join("shared-large-a"), work.join("shared-large-b"));
    let get = |local: &Path| {
        [
            "--local-cache-dir".to_owned(),
            local.to_string_lossy().into_owned(),
            "get".to_owned(),
            id.clone(),
        ]
    };
    let upload_args = get(&first);
    let upload_args: Vec<&str> = upload_args.iter().map(String::as_str).collect();
    let upload = run_koop_with(&server, Path::new(&url), &upload_args, &env).await?;
    std::fs::remove_dir_all(&first).ok();
    let download_args = get(&second);
    let download_args: Vec<&str> = download_args.iter().map(String::as_str).collect();
    let download = run_koop_with(&server, Path::new(&url), &download_args, &env).await?;
    let path = PathBuf::from(download.stdout.trim());
    let bytes = std::fs::metadata(&path)?.len();
    std::fs::remove_dir_all(&second).ok();
    ensure!(
        server.counters().exports_created == 1,
        "{} exports of the large layer",
        server.counters().exports_created
    );
    let limit = 64 * crate::common::MB;
    for (what, run) in [
        ("get, local cache alone", &alone),
        ("get, export + upload", &upload),
        ("get, download from the bucket", &download),
    ] {
        println!(
            "    {what}: {:.1} s, peak RSS {:.1} MiB (goal ≤ 64 MiB)  {}",
            run.wall.as_secs_f64(),
            mb(run.peak_rss),
            verdict(run.peak_rss <= limit)
        );
    }
    println!(
        "    layer file {:.0} MB; download from the bucket {:.0} MB/s",
        mb(bytes),
        mb(bytes) / download.wall.as_secs_f64()
    );
    Ok(upload.peak_rss <= limit && download.peak_rss <= limit)
}
