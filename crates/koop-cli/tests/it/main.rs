//! The built `koop` binary against koop-testkit: get, mirror, info, cache, offline, errors.

use std::path::Path;
use std::process::Output;

mod catalog;
mod changeset;
mod clients;
mod interrupt;
mod pages;
mod serve;
mod shared;
mod terminal;

use anyhow::{Context, Result};
use koop_testkit::{BumpKind, TestServer};
use serde_json::Value;

pub(crate) struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn extension(path: &str) -> Option<&str> {
    Path::new(path).extension().and_then(|ext| ext.to_str())
}

/// Runs `koop` against `server` with its cache in `cache`.
pub(crate) async fn koop(server: &TestServer, cache: &Path, args: &[&str]) -> Result<Run> {
    let output: Output = tokio::process::Command::new(env!("CARGO_BIN_EXE_koop"))
        .arg("--domain")
        .arg(server.base_url())
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .env("KOORDINATES_API_KEY", server.api_key())
        .env_remove("KOOPCACHE_DIR")
        .env_remove("KOOP_LOG")
        .output()
        .await?;
    Ok(Run {
        code: output.status.code().context("exit code")?,
        stdout: String::from_utf8(output.stdout)?,
        stderr: String::from_utf8(output.stderr)?,
    })
}

#[tokio::test]
async fn get_prints_paths_in_order_and_json_on_request() -> Result<()> {
    let server = TestServer::start().await?;
    let cache = tempfile::tempdir()?;
    let run = koop(&server, cache.path(), &["get", "1003", "1001"]).await?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let paths: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(paths.len(), 2);
    assert!(
        extension(paths[0]) == Some("tif") && extension(paths[1]) == Some("gpkg"),
        "{paths:?}"
    );
    assert!(paths.iter().all(|path| Path::new(path).exists()));

    let run = koop(&server, cache.path(), &["get", "1001", "--json"]).await?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let json: Value = serde_json::from_str(&run.stdout)?;
    assert_eq!(json[0]["outcome"], "cached");
    assert_eq!(json[0]["layer_id"], 1001);
    assert_eq!(json[0]["path"], paths[1]);
    assert_eq!(server.counters().exports_created, 2);
    Ok(())
}

#[tokio::test]
async fn mirror_from_a_file_with_duplicates_a_bad_line_and_a_failing_layer() -> Result<()> {
    let server = TestServer::start().await?;
    let cache = tempfile::tempdir()?;
    let list = cache.path().join("layers.txt");
    std::fs::write(
        &list,
        format!(
            "# layers to mirror\n1001\n1001   # again\n\n{}/layer/1002-nz-islands/\nnot-a-layer\n1007\n",
            server.base_url()
        ),
    )?;
    let run = koop(
        &server,
        cache.path(),
        &["mirror", "--from", list.to_str().context("utf-8")?],
    )
    .await?;
    assert_eq!(run.code, 1, "some layers failed: {}", run.stderr);
    let done: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(done.len(), 2, "{done:?}");
    assert!(
        done.iter()
            .any(|line| line.starts_with("1001\tdownloaded\t"))
    );
    assert!(
        done.iter()
            .any(|line| line.starts_with("1002\tdownloaded\t"))
    );
    assert!(
        run.stderr
            .contains("layers.txt:6: cannot read a layer id from \"not-a-layer\""),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("failed: layer 1007")
            || run.stderr.contains("layer 1007 is a pointcloud layer"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("2 downloaded"), "{}", run.stderr);
    assert!(run.stderr.contains("2 failed"), "{}", run.stderr);
    assert_eq!(
        server.counters().exports_created,
        2,
        "1001 once, 1002 once, 1007 never"
    );

    // Standard input works as a list; JSON at the end.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_koop"))
        .args(["--domain", &server.base_url(), "--cache-dir"])
        .arg(cache.path())
        .args(["mirror", "--from", "-", "--json"])
        .env("KOORDINATES_API_KEY", server.api_key())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().context("stdin")?;
        stdin.write_all(b"1001\n1002\n").await?;
    }
    let output = child.wait_with_output().await?;
    assert_eq!(output.status.code(), Some(0));
    let json: Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(json["summary"]["cached"], 2);
    assert_eq!(json["summary"]["failed"], 0);
    Ok(())
}

#[tokio::test]
async fn info_shows_details_and_the_cache_state() -> Result<()> {
    let server = TestServer::start().await?;
    let cache = tempfile::tempdir()?;
    let run = koop(&server, cache.path(), &["info", "1002"]).await?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    for expected in [
        "NZ Islands — Te Ika-a-Māui & Te Waipounamu",
        "vector, multipolygon",
        "EPSG:2193",
        "name (string)",
        "not cached",
    ] {
        assert!(run.stdout.contains(expected), "{expected}: {}", run.stdout);
    }
    koop(&server, cache.path(), &["get", "1002"]).await?;
    let run = koop(&server, cache.path(), &["info", "1002", "--json"]).await?;
    let json: Value = serde_json::from_str(&run.stdout)?;
    assert_eq!(
        json["details"]["title"],
        "NZ Islands — Te Ika-a-Māui & Te Waipounamu"
    );
    assert_eq!(json["current_version_cached"], true);
    assert_eq!(json["cache"][0]["key"]["layer_id"], 1002);

    let run = koop(&server, cache.path(), &["info", "999999"]).await?;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("999999") && run.stderr.contains("404"),
        "{}",
        run.stderr
    );
    Ok(())
}

#[tokio::test]
async fn cache_ls_verify_gc_and_path() -> Result<()> {
    let server = TestServer::start().await?;
    let cache = tempfile::tempdir()?;
    koop(&server, cache.path(), &["get", "1001", "1002"]).await?;
    server.bump_version(1002, BumpKind::Data).context("bump")?;
    koop(&server, cache.path(), &["get", "1002"]).await?;

    let run = koop(&server, cache.path(), &["cache", "ls"]).await?;
    assert_eq!(run.code, 0);
    assert_eq!(
        run.stdout.lines().count(),
        1 + 3,
        "header and three entries: {}",
        run.stdout
    );

    let run = koop(&server, cache.path(), &["cache", "verify"]).await?;
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(
        run.stdout.contains("3 entries ok, 0 corrupt"),
        "{}",
        run.stdout
    );

    // An age too large for seconds selects nothing (it once wrapped and selected everything).
    let run = koop(
        &server,
        cache.path(),
        &[
            "cache",
            "gc",
            "--older-than-days",
            "18446744073709551615",
            "--dry-run",
        ],
    )
    .await?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("would remove 0 entries"),
        "{}",
        run.stdout
    );
    let run = koop(
        &server,
        cache.path(),
        &["cache", "gc", "--keep", "1", "--dry-run"],
    )
    .await?;
    assert!(
        run.stdout.contains("would remove 1 entries"),
        "{}",
        run.stdout
    );
    let run = koop(
        &server,
        cache.path(),
        &["cache", "gc", "--keep", "1", "--json"],
    )
    .await?;
    let json: Value = serde_json::from_str(&run.stdout)?;
    assert_eq!(json["removed"].as_array().map(Vec::len), Some(1));

    // Corrupt the remaining 1001 entry: verify reports it and exits 1.
    let ls: Value = serde_json::from_str(
        &koop(&server, cache.path(), &["cache", "ls", "--json"])
            .await?
            .stdout,
    )?;
    let entry = ls
        .as_array()
        .context("list")?
        .iter()
        .find(|manifest| manifest["key"]["layer_id"] == 1001)
        .context("1001 cached")?;
    let file = cache.path().join(entry["path"].as_str().context("path")?);
    let mut bytes = std::fs::read(&file)?;
    bytes[100] ^= 0xff;
    std::fs::write(&file, bytes)?;
    let run = koop(&server, cache.path(), &["cache", "verify"]).await?;
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("corrupt: 1001_"), "{}", run.stdout);

    let run = koop(&server, cache.path(), &["cache", "path"]).await?;
    assert_eq!(run.stdout.trim(), cache.path().to_str().context("utf-8")?);
    Ok(())
}

#[tokio::test]
async fn offline_makes_no_request_and_needs_no_key() -> Result<()> {
    let server = TestServer::start().await?;
    let cache = tempfile::tempdir()?;
    let online = koop(&server, cache.path(), &["get", "1001"]).await?;
    let before = server.counters();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_koop"))
        .args(["--domain", &server.base_url(), "--offline", "--cache-dir"])
        .arg(cache.path())
        .args(["get", "1001", "1005"])
        .env_remove("KOORDINATES_API_KEY")
        .output()
        .await?;
    assert_eq!(output.status.code(), Some(1), "1005 was never fetched");
    assert_eq!(String::from_utf8(output.stdout)?, online.stdout);
    let stderr = String::from_utf8(output.stderr)?;
    assert!(
        stderr.contains("layer 1005") && stderr.contains("offline"),
        "{stderr}"
    );
    assert_eq!(server.counters(), before);
    Ok(())
}

#[tokio::test]
async fn a_bad_id_a_missing_key_and_an_unknown_domain_each_give_one_clear_line() -> Result<()> {
    let server = TestServer::start().await?;
    let cache = tempfile::tempdir()?;
    let run = koop(&server, cache.path(), &["get", "abc"]).await?;
    assert_eq!(run.code, 2);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr
            .starts_with("error: cannot read a layer id from \"abc\""),
        "{}",
        run.stderr
    );

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_koop"))
        .args(["--domain", &server.base_url(), "--cache-dir"])
        .arg(cache.path())
        .args(["--api-key-env", "KOOP_TEST_NO_SUCH_KEY", "get", "1001"])
        .output()
        .await?;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr)?;
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("KOOP_TEST_NO_SUCH_KEY"), "{stderr}");

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_koop"))
        .args([
            "--domain",
            "no-such-koordinates-site.invalid",
            "--cache-dir",
        ])
        .arg(cache.path())
        .args(["get", "1001"])
        .env("KOORDINATES_API_KEY", "some-key")
        .output()
        .await?;
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr)?;
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("no-such-koordinates-site.invalid does not resolve"),
        "{stderr}"
    );
    assert!(!stderr.contains("some-key"));
    Ok(())
}

#[tokio::test]
async fn the_demo_ends_with_every_layer_cached() -> Result<()> {
    let cache = tempfile::tempdir()?;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_koop"))
        .arg("--cache-dir")
        .arg(cache.path())
        .arg("demo")
        .env_remove("KOORDINATES_API_KEY")
        .output()
        .await?;
    let stdout = String::from_utf8(output.stdout)?;
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("6 layers in") && stdout.contains("6 exports, 6 downloads"),
        "{stdout}"
    );
    assert!(
        stdout.contains("6 from the cache, 6 API requests, 0 exports, 0 downloads"),
        "{stdout}"
    );
    assert!(
        stdout.contains("every layer is on disk, fetched exactly once"),
        "{stdout}"
    );
    Ok(())
}

#[tokio::test]
async fn metadata_prints_edits_and_writes_oai_dc() -> Result<()> {
    let server = TestServer::start().await?;
    let cache = tempfile::tempdir()?;
    let run = koop(&server, cache.path(), &["metadata", "1002"]).await?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("<dc:title>NZ Islands — Te Ika-a-Māui &amp; Te Waipounamu</dc:title>"),
        "{}",
        run.stdout
    );
    let printed = cache.path().join("printed.xml");
    std::fs::write(&printed, &run.stdout)?;
    let lint = std::process::Command::new("xmllint")
        .arg("--noout")
        .arg(&printed)
        .output()?;
    assert!(
        lint.status.success(),
        "{}",
        String::from_utf8_lossy(&lint.stderr)
    );

    let out = cache.path().join("edited.xml");
    let run = koop(
        &server,
        cache.path(),
        &[
            "metadata",
            "1002",
            "--set",
            "creator=Koop & Co <test>",
            "--source-latest",
            "1001",
            "1003",
            "--xml",
            out.to_str().context("utf-8")?,
        ],
    )
    .await?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let written = std::fs::read_to_string(&out)?;
    assert!(
        written.contains("<dc:creator>Koop &amp; Co &lt;test&gt;</dc:creator>"),
        "{written}"
    );
    assert!(written.contains("<dc:source>layer_id,title,version_id,last_updated\n1001,World Countries (Natural Earth 1:110m),"), "{written}");

    let run = koop(&server, cache.path(), &["metadata", "1003", "--template"]).await?;
    assert!(
        run.stdout.contains("<dc:type>grid</dc:type>"),
        "{}",
        run.stdout
    );

    let run = koop(
        &server,
        cache.path(),
        &["metadata", "1002", "--set", "author=me"],
    )
    .await?;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("\"author\" is not a Dublin Core element; the elements are: title, creator"),
        "{}",
        run.stderr
    );
    Ok(())
}

#[tokio::test]
async fn serve_answers_geojson_and_featureserver_and_stops_cleanly_on_sigint() -> Result<()> {
    use tokio::io::AsyncBufReadExt;

    let server = TestServer::start().await?;
    let cache = tempfile::tempdir()?;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_koop"))
        .args(["--domain", &server.base_url(), "--cache-dir"])
        .arg(cache.path())
        .args(["serve", "--bind", "127.0.0.1:0", "--layers", "1001"])
        .env("KOORDINATES_API_KEY", server.api_key())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let first = lines.next_line().await?.context("the listening line")?;
    let base = first
        .strip_prefix("koop serve: listening on ")
        .context("koop serve announces its address")?
        .to_owned();
    let host = server.domain();
    let response = reqwest::get(format!("{base}/koordinates/{host}/1001/geojson")).await?;
    assert_eq!(response.status(), 200);
    let json: Value = response.json().await?;
    assert_eq!(json["features"].as_array().map(Vec::len), Some(177));
    let response = reqwest::get(format!("{base}/koordinates/{host}/424242/geojson")).await?;
    assert_eq!(response.status(), 404);
    // Neither an unknown nor an unlisted layer is asked of the site, let alone exported.
    let response = reqwest::get(format!("{base}/koordinates/{host}/1002/geojson")).await?;
    assert_eq!(response.status(), 404);
    assert!(
        server
            .requests()
            .iter()
            .all(|request| !request.path.contains("/1002") && !request.path.contains("/424242")),
        "{:?}",
        server.requests()
    );
    assert_eq!(server.exports_created_for(1002), 0);
    let response = reqwest::get(format!("{base}/status")).await?;
    assert_eq!(response.status(), 200);
    // The same layer as an ArcGIS feature service.
    let count: Value = reqwest::get(format!(
        "{base}/koordinates/rest/services/{host}/1001/FeatureServer/0/query?where=1%3D1&returnCountOnly=true"
    ))
    .await?
    .json()
    .await?;
    assert_eq!(count, serde_json::json!({"count": 177}));
    let announced = lines.next_line().await?.unwrap_or_default();
    let announced = format!(
        "{announced}\n{}",
        lines.next_line().await?.unwrap_or_default()
    );
    assert!(
        announced.contains("/koordinates/rest/services/"),
        "koop serve says where the FeatureServer is: {announced}"
    );

    let pid = child.id().context("pid")?;
    let signalled = tokio::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .await?;
    assert!(signalled.success());
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait()).await??;
    assert_eq!(status.code(), Some(0), "graceful shutdown");
    Ok(())
}
