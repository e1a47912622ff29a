//! `koop metadata`: a layer's Dublin Core metadata as OAI_DC XML.

use std::path::Path;

use anyhow::{Context, Result, bail};
use koop::DublinCoreMetadata;

use super::{koop, one_domain};
use crate::Status;
use crate::cli::Global;
use crate::ids::parse_layer_ref;
use crate::one_line;

/// What `koop metadata` was asked for.
pub(crate) struct Request<'a> {
    pub(crate) id: &'a str,
    pub(crate) xml: Option<&'a Path>,
    pub(crate) set: &'a [String],
    pub(crate) template: bool,
    pub(crate) source_latest: &'a [String],
}

/// `koop metadata ID [--xml PATH] [--set ELEMENT=VALUE]... [--template] [--source-latest ID...]`.
pub(crate) async fn metadata(global: &Global, request: &Request<'_>) -> Result<Status> {
    let layer = parse_layer_ref(request.id)?;
    let sources = request
        .source_latest
        .iter()
        .map(|id| parse_layer_ref(id))
        .collect::<Result<Vec<_>, _>>()?;
    let edits = request
        .set
        .iter()
        .map(|pair| {
            pair.split_once('=').with_context(|| {
                format!("--set {pair:?}: give ELEMENT=VALUE, e.g. creator=\"Toitū Te Whenua\"")
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if global.offline {
        bail!("koop metadata reads the layer from Koordinates and cannot run offline");
    }
    let mut all = vec![&layer];
    all.extend(sources.iter());
    let domain = one_domain(global, &all)?;
    let koop = koop(global, &domain)?;
    let connection = koop
        .connection()
        .context("koop metadata needs a connection to Koordinates")?;

    let fetched = if request.template {
        DublinCoreMetadata::populate_template(connection, layer.id).await
    } else {
        DublinCoreMetadata::from_koordinates(connection, layer.id).await
    };
    let mut metadata = match fetched {
        Ok(metadata) => metadata,
        Err(error) => {
            eprintln!("error: {}", one_line(&error));
            return Ok(Status::SomeFailed);
        }
    };
    // Usage errors (an unknown element, a bad character) are exit 2: `?` with anyhow.
    metadata.edit_by_name(edits)?;
    if !sources.is_empty() {
        let ids: Vec<u64> = sources.iter().map(|source| source.id).collect();
        if let Err(error) = metadata
            .update_source_with_latest_layer_versions(connection, &ids)
            .await
        {
            eprintln!("error: {}", one_line(&error));
            return Ok(Status::SomeFailed);
        }
    }
    match request.xml {
        Some(path) => {
            metadata.to_xml(path)?;
            eprintln!("wrote {}", path.display());
        }
        None => print!("{}", metadata.as_xml()),
    }
    Ok(Status::Done)
}
