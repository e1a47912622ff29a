//! `koop testkit-server`: the fake Koordinates site of `koop demo`, alone, for test suites that
//! are not written in Rust (the Python package's pytest suite starts it as a process).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use koop_testkit::{DEMO_LAYER_IDS, TestServer, TestServerConfig};

use crate::Status;

/// Starts the server, announces it, and serves until Ctrl-C or SIGTERM.
pub(crate) async fn run(
    ready_file: Option<&Path>,
    export_latency_ms: Option<u64>,
    fresh_exports: bool,
) -> Result<Status> {
    let server = TestServer::start_with(TestServerConfig {
        reuse_identical_exports: !fresh_exports,
        ..TestServerConfig::default()
    })
    .await
    .context("cannot start the test server")?;
    if let Some(ms) = export_latency_ms {
        for id in DEMO_LAYER_IDS {
            server.set_export_latency(id, Duration::from_millis(ms));
        }
    }
    let announcement = serde_json::json!({
        "domain": server.site().origin(),
        "api_key": server.api_key(),
        "base_url": server.base_url(),
        "layers": DEMO_LAYER_IDS,
    });
    match ready_file {
        Some(path) => {
            // Written beside, then persisted by rename: a reader never sees half a file.
            let dir = path
                .parent()
                .filter(|dir| !dir.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let mut staging = tempfile::NamedTempFile::new_in(dir)
                .with_context(|| format!("cannot write in {}", dir.display()))?;
            std::io::Write::write_all(&mut staging, announcement.to_string().as_bytes())?;
            staging
                .persist(path)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        None => crate::progress::out(announcement.to_string()),
    }
    let code = wait_for_stop().await;
    drop(server);
    Ok(Status::Interrupted(code))
}

/// Waits for SIGINT (130) or SIGTERM (143).
async fn wait_for_stop() -> u8 {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            return tokio::select! {
                _ = tokio::signal::ctrl_c() => 130,
                _ = terminate.recv() => 143,
            };
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    130
}
