//! `koop serve`: Koordinates layers for GIS clients, through the cache.

use std::path::Path;

use anyhow::{Context, Result, bail};
use koop::Domain;
use koop_featureserver::FeatureServerOutput;
use koop_provider_koordinates::{KoordinatesConfig, KoordinatesProvider, ServedLayers};
use koop_server::{Cors, ServeOptions, ServerBuilder};

use crate::Status;
use crate::cli::{Deadline, Global, ServeArgs};
use crate::ids::{parse_layer_ref, parse_list};

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

/// The layers `--layers` names: each value is ids or URLs separated by commas, or `@FILE`.
/// A URL on a site that is not a `--domain` is refused, as for `koop mirror`.
fn listed_layers(values: &[String], allowed: &[Domain]) -> Result<Vec<(Domain, u64)>> {
    let mut layers = Vec::new();
    let mut bad = Vec::new();
    for value in values {
        let entries: Vec<(String, _)> = match value.strip_prefix('@') {
            Some(file) => {
                let text = super::fetch::read_list(Path::new(file))?;
                parse_list(&text)
                    .into_iter()
                    .map(|line| (format!("{file}:{}", line.number), line.layer))
                    .collect()
            }
            None => value
                .split(',')
                .map(str::trim)
                .filter(|part| !part.is_empty())
                .map(|part| (format!("--layers {part}"), parse_layer_ref(part)))
                .collect(),
        };
        for (place, layer) in entries {
            match layer
                .map_err(|error| error.to_string())
                .and_then(|layer| Ok((super::domain_of(allowed, &layer)?, layer.id)))
            {
                Ok(layer) => layers.push(layer),
                Err(error) => bad.push(format!("{place}: {error}")),
            }
        }
    }
    if !bad.is_empty() {
        bail!("cannot serve these layers:\n  {}", bad.join("\n  "));
    }
    Ok(layers)
}

/// `--cors-origin` values as a policy: none given is any origin, `none` is off.
fn cors(origins: &[String]) -> Result<Cors> {
    match origins {
        [] => Ok(Cors::AnyOrigin),
        [only] if only.eq_ignore_ascii_case("none") => Ok(Cors::Off),
        _ => {
            for origin in origins {
                let parsed = url::Url::parse(origin)
                    .ok()
                    .filter(|url| url.has_host() && url.path() == "/" && url.query().is_none());
                if parsed.is_none() {
                    bail!(
                        "--cors-origin {origin:?} is not an origin: give scheme and host, e.g. https://www.arcgis.com"
                    );
                }
            }
            Ok(Cors::Origins(
                origins
                    .iter()
                    .map(|origin| origin.trim_end_matches('/').to_owned())
                    .collect(),
            ))
        }
    }
}

/// `koop serve`.
pub(crate) async fn serve(global: &Global, args: &ServeArgs, deadline: Deadline) -> Result<Status> {
    let domains = super::allowed_domains(global)?;
    let listed = listed_layers(&args.layers, &domains)?;
    run(global, args, deadline, domains, listed, None).await
}

/// Serves `domains` (`listed` layers fetched on demand) until a signal; `api_key` overrides the
/// key's environment variable (the demo's own site).
pub(crate) async fn run(
    global: &Global,
    args: &ServeArgs,
    deadline: Deadline,
    domains: Vec<Domain>,
    listed: Vec<(Domain, u64)>,
    api_key: Option<String>,
) -> Result<Status> {
    if api_key.is_none() && !global.offline && std::env::var_os(&global.api_key_env).is_none() {
        tracing::warn!(
            "{} is not set: cached layers are served, others answer 503 until a key is given",
            global.api_key_env
        );
    }
    let layers = if args.any_layer {
        tracing::warn!(
            "--any-layer: any client can make this server export any layer of {}",
            domains
                .iter()
                .map(Domain::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        );
        ServedLayers::Any
    } else {
        ServedLayers::listed(listed.iter().cloned())
    };
    let provider = KoordinatesProvider::new(KoordinatesConfig {
        domains: domains.clone(),
        layers,
        export_timeout: deadline.timeout,
        api_key,
        api_key_env: global.api_key_env.clone(),
        // With a shared cache (a store URL), its local copy, filled from the bucket on first use.
        cache_dir: super::local_cache_dir(global)?,
        shared_cache: super::shared_store(global)?,
        offline: global.offline,
        export_crs: global.crs,
        max_exports: args.max_exports.max(1),
        ..KoordinatesConfig::default()
    });
    let provider: std::sync::Arc<dyn koop_provider::Provider> = match &args.auth_file {
        Some(file) => {
            let users = koop_auth::Users::from_file(file)?;
            let authority = koop_auth::Authority::new(users)?;
            tracing::info!(
                "tokens required: users from {}, tokens last {} min",
                file.display(),
                authority.lifetime().as_secs() / 60
            );
            std::sync::Arc::new(koop_auth::Secured::new(provider, authority))
        }
        None => std::sync::Arc::new(provider),
    };
    let site = super::site::Site {
        cache: koop::Cache::open(super::local_cache_dir(global)?).ok(),
        domains: domains.clone(),
        listed: listed.clone(),
        counts: std::sync::Arc::default(),
    };
    let router = ServerBuilder::default()
        .shared_provider(provider)
        .pages(site.router())
        .output(FeatureServerOutput::default().cache_max_age(args.cache_max_age))
        .request_timeout(args.request_timeout)
        .max_streams(args.max_streams)
        .cors(cors(&args.cors_origin)?)
        .build()?;
    let listener = tokio::net::TcpListener::bind(&args.bind)
        .await
        .with_context(|| format!("cannot listen on {}", args.bind))?;
    let address = listener.local_addr()?;
    println!("koop serve: listening on http://{address}");
    for domain in &domains {
        let host = domain.as_str();
        println!("  GeoJSON: http://{address}/koordinates/{host}/{{layer id}}/geojson");
        println!(
            "  FeatureServer: http://{address}/koordinates/rest/services/{host}/{{layer id}}/FeatureServer"
        );
    }
    println!("  layers and maps: http://{address}/");
    if !args.any_layer {
        println!(
            "  fetched on demand: {}; cached layers are served as they are",
            match listed.len() {
                0 => "no layer (name some with --layers)".to_owned(),
                1 => "1 listed layer".to_owned(),
                n => format!("{n} listed layers"),
            }
        );
    }
    let options = ServeOptions {
        header_read_timeout: args
            .header_timeout
            .max(std::time::Duration::from_millis(100)),
        write_timeout: args
            .write_timeout
            .max(std::time::Duration::from_millis(100)),
        max_connections: args.max_connections.max(1),
    };
    koop_server::serve(listener, router, options, shutdown_signal())
        .await
        .context("the server failed")?;
    Ok(Status::Done)
}

/// `koop hash-password`: the argon2id hash of the password on standard input (one line; the
/// line break is not part of it).
pub(crate) fn hash_password() -> Result<Status> {
    use std::io::BufRead as _;
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        bail!("no password on standard input: printf '%s' 'the password' | koop hash-password");
    }
    println!("{}", koop_auth::hash_password(password)?);
    Ok(Status::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domains() -> Vec<Domain> {
        vec![Domain::parse("data.linz.govt.nz").expect("a domain")]
    }

    #[test]
    fn layers_are_ids_and_urls_by_commas() {
        let layers = listed_layers(
            &[
                "50772, 51571".to_owned(),
                "https://data.linz.govt.nz/layer/53382-nz-roads/".to_owned(),
            ],
            &domains(),
        )
        .expect("layers");
        let ids: Vec<u64> = layers.iter().map(|(_, id)| *id).collect();
        assert_eq!(ids, [50772, 51571, 53382]);
    }

    #[test]
    fn a_foreign_site_or_a_bad_id_is_refused_with_its_place() {
        let error = listed_layers(
            &["12,abc,https://example.com/layer/5/".to_owned()],
            &domains(),
        )
        .expect_err("refused");
        let text = format!("{error:#}");
        assert!(text.contains("--layers abc"), "{text}");
        assert!(text.contains("example.com"), "{text}");
    }

    #[test]
    fn cors_origins_are_checked() {
        assert_eq!(cors(&[]).expect("any"), Cors::AnyOrigin);
        assert_eq!(cors(&["none".to_owned()]).expect("off"), Cors::Off);
        assert_eq!(
            cors(&["https://www.arcgis.com/".to_owned()]).expect("one"),
            Cors::Origins(vec!["https://www.arcgis.com".to_owned()])
        );
        assert!(cors(&["www.arcgis.com".to_owned()]).is_err());
    }
}
