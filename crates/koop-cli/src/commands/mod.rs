//! The commands, and what they share: building a `Koop` from the global options.

mod cache;
mod demo;
mod fetch;
mod info;
mod metadata;
mod serve;

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
            json,
        } => fetch::get(&global, &ids, &concurrency, json, bars).await,
        Command::Mirror {
            from,
            ids,
            concurrency,
            json,
        } => fetch::mirror(&global, from.as_deref(), &ids, &concurrency, json, bars).await,
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
        Command::Cache { action } => match action {
            CacheAction::Ls { json } => cache::list(&global, json),
            CacheAction::Verify { json } => cache::verify(&global, json).await,
            CacheAction::Gc {
                keep,
                older_than_days,
                dry_run,
                json,
            } => cache::gc(&global, keep, older_than_days, dry_run, json),
            CacheAction::Path => cache::path(&global),
        },
        Command::Serve { bind } => serve::serve(&global, &bind).await,
        Command::Demo => demo::demo(&global, bars).await,
    }
}

/// The domain to use: `--domain`, else the one site the layer URLs name, else the default.
pub(crate) fn domain_for(global: &Global, layers: &[&LayerRef]) -> Result<Domain> {
    if let Some(domain) = &global.domain {
        return Ok(domain.clone());
    }
    let mut hosts: Vec<&Domain> = layers
        .iter()
        .filter_map(|layer| layer.host.as_ref())
        .collect();
    hosts.sort_unstable();
    hosts.dedup();
    match hosts.as_slice() {
        [] => Ok(Domain::parse(koop::koop_api::DEFAULT_DOMAIN)?),
        [host] => Ok((*host).clone()),
        many => bail!(
            "the layer URLs name several sites ({}); mirror one site at a time, or pass --domain",
            many.iter()
                .map(|domain| domain.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A `Koop` for `domain` with the global options. A domain named `http://host` asks for plain
/// HTTP explicitly.
pub(crate) fn koop(global: &Global, domain: &Domain) -> Result<Koop> {
    if domain.is_plain_http() && !domain.is_loopback() {
        tracing::warn!("plain HTTP to {domain}: the API key crosses the network unencrypted");
    }
    let koop = Koop::builder()
        .api_key(None)
        .api_key_env(&global.api_key_env)
        .configure_connection(|connection| connection.site(domain))
        .cache_dir(global.cache_dir.clone())
        .crs(global.crs)
        .offline(global.offline)
        .build()
        .context("cannot start")?;
    Ok(koop)
}
