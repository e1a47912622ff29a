//! The pages `koop demo --serve` shows a person: the list of layers with URLs that work, and a
//! map preview drawn by a real browser (headless Chromium, Debian's `chromium`): its screenshot
//! has the features' colour where the layer is, and its console no errors.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use tokio::io::{AsyncBufReadExt, AsyncReadExt};

/// `koop demo --serve` on a free port, once it listens: the process and `http://127.0.0.1:port`.
async fn demo_serving(cache: &std::path::Path) -> Result<(tokio::process::Child, String)> {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_koop"))
        .arg("--cache-dir")
        .arg(cache)
        .args(["--quiet", "demo", "--serve", "--bind", "127.0.0.1:0"])
        .env_remove("KOORDINATES_API_KEY")
        .env_remove("KOOPCACHE_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let base = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(base) = line.strip_prefix("koop serve: listening on ") {
                return anyhow::Ok(base.to_owned());
            }
        }
        anyhow::bail!("koop demo --serve never listened")
    })
    .await??;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    if let Some(mut stderr) = child.stderr.take() {
        tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text).await;
        });
    }
    Ok((child, base))
}

/// Headless Chromium on `url`: its stderr (console messages included) and, with `screenshot`,
/// a PNG of the window; otherwise the DOM after the page's scripts ran.
async fn chromium(url: &str, screenshot: Option<&std::path::Path>) -> Result<(String, String)> {
    let profile = tempfile::tempdir()?;
    let mut command = tokio::process::Command::new("chromium");
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--window-size=900,700",
            "--virtual-time-budget=15000",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()));
    match screenshot {
        Some(path) => {
            command.arg(format!("--screenshot={}", path.display()));
        }
        None => {
            command.arg("--dump-dom");
        }
    }
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        command.arg(url).kill_on_drop(true).output(),
    )
    .await
    .context("chromium took more than 120 s")?
    .context("chromium (Debian's chromium) runs")?;
    Ok((
        String::from_utf8_lossy(&output.stderr).into_owned(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    ))
}

/// Console messages of the page that are errors.
fn console_errors(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|line| line.contains("CONSOLE") || line.contains("Uncaught"))
        .filter(|line| {
            let lower = line.to_ascii_lowercase();
            lower.contains("error") || lower.contains("uncaught") || lower.contains("failed")
        })
        .collect()
}

/// Pixels of the map's feature colour (a pink fill over the grey map, or the darker outline).
fn feature_pixels(png: &[u8]) -> Result<(usize, usize)> {
    let decoder = png::Decoder::new(std::io::Cursor::new(png));
    let mut reader = decoder.read_info()?;
    let mut buffer = vec![0; reader.output_buffer_size().context("a PNG size")?];
    let info = reader.next_frame(&mut buffer)?;
    let channels = info.color_type.samples();
    let pixels = &buffer[..info.buffer_size()];
    let pink = pixels
        .chunks(channels)
        .filter(|pixel| {
            let (r, g, b) = (
                i32::from(pixel[0]),
                i32::from(pixel[1]),
                i32::from(pixel[2]),
            );
            r > 150 && r - g > 60 && b - g > 10
        })
        .count();
    Ok((pink, pixels.len() / channels))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_serves_a_page_of_layers_and_a_map_a_browser_draws() -> Result<()> {
    let cache = tempfile::tempdir()?;
    let (mut child, base) = demo_serving(cache.path()).await?;
    let landing = reqwest::get(format!("{base}/")).await?;
    ensure!(landing.status() == 200);
    let html = landing.text().await?;
    for id in koop_testkit::DEMO_LAYER_IDS {
        ensure!(
            html.contains(&format!("/{id}/map\"")),
            "no map link for layer {id}"
        );
        ensure!(
            html.contains(&format!("/{id}/FeatureServer</code>")),
            "no FeatureServer URL for layer {id}"
        );
    }
    ensure!(
        html.contains("ogrinfo -ro -al -so"),
        "no ogrinfo command line"
    );
    ensure!(html.contains("ogr2ogr -f GPKG"), "no ogr2ogr command line");
    // The URLs on the page answer.
    let featureserver = html
        .split("<code>")
        .find_map(|piece| {
            let url = piece.split("</code>").next()?;
            url.ends_with("/1002/FeatureServer").then(|| url.to_owned())
        })
        .context("layer 1002's FeatureServer URL on the page")?;
    let service: serde_json::Value = reqwest::get(format!("{featureserver}?f=json"))
        .await?
        .json()
        .await?;
    ensure!(
        service["layers"].is_array(),
        "{}",
        service.to_string().chars().take(200).collect::<String>()
    );
    let map = html
        .split("href=\"")
        .find_map(|piece| {
            let href = piece.split('"').next()?;
            href.ends_with("/1002/map").then(|| href.to_owned())
        })
        .context("layer 1002's map link")?;
    let url = format!("{base}{map}?basemap=off");
    let page = reqwest::get(&url).await?.text().await?;
    ensure!(
        page.contains("/assets/leaflet/leaflet.js") && !page.contains("unpkg.com"),
        "Leaflet comes from koop itself"
    );
    let dir = tempfile::tempdir()?;
    let shot = dir.path().join("map.png");
    let (stderr, _) = chromium(&url, Some(&shot)).await?;
    let errors = console_errors(&stderr);
    ensure!(errors.is_empty(), "console errors: {errors:?}");
    let (pink, all) = feature_pixels(&std::fs::read(&shot)?)?;
    ensure!(
        pink * 50 > all,
        "{pink} of {all} pixels have the features' colour"
    );
    let (stderr, dom) = chromium(&url, None).await?;
    ensure!(console_errors(&stderr).is_empty(), "console errors");
    ensure!(!dom.contains("data-error"), "the page reported an error");
    let drawn: u64 = dom
        .split("data-drawn=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|count| count.parse().ok())
        .context("the page says how many features it drew")?;
    ensure!(drawn > 0, "{drawn} features drawn");
    child.kill().await?;
    Ok(())
}
