//! `koop serve`: Koordinates layers for GIS clients, through the cache.

use anyhow::{Context, Result};
use koop_featureserver::FeatureServerOutput;
use koop_provider_koordinates::{KoordinatesConfig, KoordinatesProvider};
use koop_server::ServerBuilder;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::Status;
use crate::cli::{Deadline, Global};

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing the requests in flight");
}

/// `koop serve [--bind ADDRESS]`.
pub(crate) async fn serve(global: &Global, bind: &str, deadline: Deadline) -> Result<Status> {
    let domains = super::allowed_domains(global)?;
    if !global.offline && std::env::var_os(&global.api_key_env).is_none() {
        tracing::warn!(
            "{} is not set: cached layers are served, others answer 503 until a key is given",
            global.api_key_env
        );
    }
    let provider = KoordinatesProvider::new(KoordinatesConfig {
        domains: domains.clone(),
        export_timeout: deadline.timeout,
        api_key: None,
        api_key_env: global.api_key_env.clone(),
        cache_dir: global.cache_dir.clone(),
        offline: global.offline,
        export_crs: global.crs,
        ..KoordinatesConfig::default()
    });
    let router = ServerBuilder::default()
        .provider(provider)
        .output(FeatureServerOutput::default())
        .build()?
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        );
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind}"))?;
    let address = listener.local_addr()?;
    println!("koop serve: listening on http://{address}");
    for domain in &domains {
        let host = domain.as_str();
        println!("  GeoJSON: http://{address}/koordinates/{host}/{{layer id}}/geojson");
        println!(
            "  FeatureServer: http://{address}/koordinates/rest/services/{host}/{{layer id}}/FeatureServer"
        );
    }
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("the server failed")?;
    Ok(Status::Done)
}
