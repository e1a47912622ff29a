//! The commands, and what they share: building a `Koop` from the global options.

mod cache;
mod demo;
mod fetch;
mod info;
mod metadata;
mod serve;
mod site;
mod testkit_server;

use anyhow::{Context, Result, bail};
use koop::{Domain, Koop};

use crate::Status;
use crate::cli::{CacheAction, Cli, Command, Global};
use crate::ids::LayerRef;

/// Runs the command line's command.
pub(crate) async fn run(cli: Cli, bars: bool) -> Result<Status> {
    let global = cli.global;
    match cli.command {
        Command::Get {
            ids,
            concurrency,
            deadline,
            json,
        } => fetch::get(&global, &ids, &concurrency, deadline, json, bars).await,
        Command::Mirror {
            from,
            ids,
            concurrency,
            deadline,
            json,
            every_layer,
            dry_run,
        } => {
            let request = fetch::MirrorRequest {
                from: from.as_deref(),
                args: &ids,
                concurrency: &concurrency,
                deadline,
                json,
                every_layer,
            };
            if dry_run {
                fetch::dry_run(&global, &request).await
            } else {
                fetch::mirror(&global, &request, bars).await
            }
        }
        Command::Info { id, json } => info::info(&global, &id, json).await,
        Command::Metadata {
            id,
            xml,
            set,
            template,
            source_latest,
        } => {
            let request = metadata::Request {
                id: &id,
                xml: xml.as_deref(),
                set: &set,
                template,
                source_latest: &source_latest,
            };
            metadata::metadata(&global, &request).await
        }
        Command::Cache { local, action } => {
            let shared = if local { None } else { shared_store(&global)? };
            match (action, shared) {
                (CacheAction::Ls { json }, None) => cache::list(&global, json),
                (CacheAction::Ls { json }, Some(store)) => cache::list_shared(&store, json).await,
                (CacheAction::Verify { json }, None) => cache::verify(&global, json).await,
                (CacheAction::Verify { json }, Some(store)) => {
                    cache::verify_shared(&store, json).await
                }
                (
                    CacheAction::Gc {
                        keep,
                        older_than_days,
                        dry_run,
                        json,
                    },
                    shared,
                ) => {
                    let policy = cache::gc_policy(keep, older_than_days, dry_run);
                    match shared {
                        None => cache::gc(&global, &policy, json),
                        Some(store) => cache::gc_shared(&store, &policy, json).await,
                    }
                }
                (CacheAction::Path, None) => cache::path(&global),
                (CacheAction::Path, Some(store)) => {
                    println!("{}", store.location());
                    Ok(Status::Done)
                }
            }
        }
        Command::Serve { options, deadline } => serve::serve(&global, &options, deadline).await,
        Command::Demo { serve, options } => {
            demo::demo(&global, bars, serve.then_some(&options)).await
        }
        Command::HashPassword => serve::hash_password(),
        Command::TestkitServer {
            ready_file,
            export_latency_ms,
            fresh_exports,
        } => testkit_server::run(ready_file.as_deref(), export_latency_ms, fresh_exports).await,
    }
}

/// The sites the API key may be sent to: every `--domain`, else the default.
pub(crate) fn allowed_domains(global: &Global) -> Result<Vec<Domain>> {
    if global.domain.is_empty() {
        Ok(vec![Domain::parse(koop::koop_api::DEFAULT_DOMAIN)?])
    } else {
        Ok(global.domain.clone())
    }
}

/// The site of a layer: its URL's, when that site is allowed; the first allowed site for a bare
/// id. A URL on any other site is refused before anything is sent to it (a list from someone
/// else must not collect the key): the error names both sites and the flag that allows it.
pub(crate) fn domain_of(allowed: &[Domain], layer: &LayerRef) -> Result<Domain, String> {
    let Some(host) = &layer.host else {
        return allowed
            .first()
            .cloned()
            .ok_or_else(|| "no Koordinates site is configured".to_owned());
    };
    match allowed.iter().find(|domain| *domain == host) {
        Some(domain) => Ok(domain.clone()),
        None => Err(format!(
            "layer {} is on {host}, but koop sends the API key only to {}; pass --domain {host} to allow that site",
            layer.id,
            allowed
                .iter()
                .map(Domain::as_str)
                .collect::<Vec<_>>()
                .join(" and ")
        )),
    }
}

/// The one site of `layers` (for commands that talk to one site): an error when one is refused
/// or they are on several.
pub(crate) fn one_domain(global: &Global, layers: &[&LayerRef]) -> Result<Domain> {
    let allowed = allowed_domains(global)?;
    let mut domains: Vec<Domain> = Vec::new();
    for layer in layers {
        let domain = domain_of(&allowed, layer).map_err(anyhow::Error::msg)?;
        if !domains.contains(&domain) {
            domains.push(domain);
        }
    }
    match domains.as_slice() {
        [] => Ok(allowed[0].clone()),
        [domain] => Ok(domain.clone()),
        many => bail!(
            "these layers are on several sites ({}); give layers of one site",
            many.iter()
                .map(Domain::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The cache location given (`--cache-dir`, else `KOOPCACHE_DIR`) when it is a store URL.
fn shared_location(global: &Global) -> Option<String> {
    global
        .cache_dir
        .as_ref()
        .map(|dir| dir.to_string_lossy().into_owned())
        .or_else(|| std::env::var(koop::CACHE_DIR_ENV).ok())
        .filter(|location| koop::koop_store::is_store_url(location))
}

/// The local cache directory: `--cache-dir`; with a shared cache, `--local-cache-dir`, else
/// `KOOP_LOCAL_CACHE_DIR`, else `koop-shared` in the platform cache directory.
pub(crate) fn local_cache_dir(global: &Global) -> Result<Option<std::path::PathBuf>> {
    if shared_location(global).is_none() {
        return Ok(global.cache_dir.clone());
    }
    if let Some(dir) = global
        .local_cache_dir
        .clone()
        .or_else(|| std::env::var_os("KOOP_LOCAL_CACHE_DIR").map(Into::into))
    {
        return Ok(Some(dir));
    }
    let home = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| std::path::PathBuf::from(home).join(".cache"))
        })
        .context("no local cache directory for the shared cache: pass --local-cache-dir")?;
    Ok(Some(home.join("koop-shared")))
}

/// The shared cache, when the cache location is a store URL.
pub(crate) fn shared_store(global: &Global) -> Result<Option<koop::koop_store::SharedStore>> {
    shared_location(global)
        .map(|location| {
            koop::koop_store::SharedStore::from_url(&location)
                .context("cannot open the shared cache")
        })
        .transpose()
}

/// A `Koop` for `domain` with the global options. A domain named `http://host` asks for plain
/// HTTP explicitly.
pub(crate) fn koop(global: &Global, domain: &Domain) -> Result<Koop> {
    koop_with(global, domain, koop::ExportOptions::default(), None)
}

/// A `Koop` with export options and, for commands that stop on Ctrl-C, a cancellation token.
pub(crate) fn koop_with(
    global: &Global,
    domain: &Domain,
    export_options: koop::ExportOptions,
    cancel: Option<tokio_util::sync::CancellationToken>,
) -> Result<Koop> {
    if domain.is_plain_http() && !domain.is_loopback() {
        tracing::warn!("plain HTTP to {domain}: the API key crosses the network unencrypted");
    }
    let mut builder = Koop::builder()
        .api_key(None)
        .api_key_env(&global.api_key_env)
        .configure_connection(|connection| connection.site(domain))
        .cache_dir(local_cache_dir(global)?)
        .shared_cache(shared_store(global)?)
        .lease_ttl(std::time::Duration::from_secs(global.lease_seconds.max(1)))
        .crs(global.crs)
        .offline(global.offline)
        .changesets(!global.no_changesets)
        .export_options(export_options);
    if let Some(cancel) = cancel {
        builder = builder.cancellation(cancel);
    }
    let koop = builder.build().context("cannot start")?;
    Ok(koop)
}
