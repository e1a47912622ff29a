//! `koop info`: a layer's details and what the cache holds of it.

use anyhow::Result;
use koop::{Cache, CacheEntry, LayerDetails};
use serde_json::json;

use super::{koop, one_domain};
use crate::Status;
use crate::cli::Global;
use crate::ids::parse_layer_ref;
use crate::one_line;
use crate::progress::human_bytes;

fn cache_lines(entries: &[CacheEntry], current_version: Option<u64>) -> Vec<String> {
    if entries.is_empty() {
        return vec!["not cached".to_owned()];
    }
    entries
        .iter()
        .map(|entry| {
            let key = &entry.manifest.key;
            let current = if Some(key.version_id) == current_version {
                " (current)"
            } else {
                ""
            };
            format!(
                "version {}{current}, {}, {}, {} — {}",
                key.version_id,
                key.crs,
                human_bytes(entry.manifest.size),
                entry.manifest.fetched_at,
                entry.path.display()
            )
        })
        .collect()
}

fn print_details(details: &LayerDetails, domain: &koop::Domain, entries: &[CacheEntry]) {
    let data = details.data.as_ref();
    println!("{}", details.title);
    let kind = details.kind.as_ref().map_or("?", koop::LayerKind::as_str);
    let geometry = data
        .and_then(|data| data.geometry_type.as_ref())
        .map(|geometry| format!(", {geometry}"))
        .unwrap_or_default();
    println!("  layer      {} ({kind}{geometry}) on {domain}", details.id);
    let version = details
        .version_id()
        .map_or_else(|| "?".to_owned(), |id| id.to_string());
    let data_version = details
        .data_version_id()
        .filter(|data| Some(*data) != details.version_id())
        .map(|data| format!(" (data of version {data})"))
        .unwrap_or_default();
    let published = details.published_at.as_deref().unwrap_or("not published");
    println!("  version    {version}{data_version}, published {published}");
    if let Some(crs) = details.crs() {
        println!(
            "  CRS        {} {}",
            crs.id,
            crs.name.as_deref().unwrap_or_default()
        );
    }
    if let Some(count) = data.and_then(|data| data.feature_count) {
        println!("  features   {count}");
    }
    let fields: Vec<String> = details
        .fields()
        .iter()
        .map(|field| format!("{} ({})", field.name, field.field_type))
        .collect();
    if !fields.is_empty() {
        println!("  fields     {}", fields.join(", "));
    }
    if let Some(url) = &details.url_html {
        println!("  web        {url}");
    }
    for (index, line) in cache_lines(entries, details.version_id())
        .iter()
        .enumerate()
    {
        println!("  {:<10} {line}", if index == 0 { "cache" } else { "" });
    }
}

/// `koop info ID`.
pub(crate) async fn info(global: &Global, id: &str, json: bool) -> Result<Status> {
    let layer = parse_layer_ref(id)?;
    let domain = one_domain(global, &[&layer])?;
    let koop = koop(global, &domain)?;
    let cache: &Cache = koop.cache();
    let entries = cache.entries_of_layer(koop.domain(), layer.id)?;
    if global.offline {
        if json {
            let manifests: Vec<_> = entries.iter().map(|entry| &entry.manifest).collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({ "cache": manifests }))?
            );
        } else if let Some(newest) = entries.first() {
            println!("{}", newest.manifest.title);
            println!(
                "  layer      {} ({}) on {} — offline: from the cache",
                layer.id, newest.manifest.kind, domain
            );
            for (index, line) in cache_lines(&entries, None).iter().enumerate() {
                println!("  {:<10} {line}", if index == 0 { "cache" } else { "" });
            }
        } else {
            eprintln!(
                "error: layer {} is not in the cache at {}, and koop is offline",
                layer.id,
                cache.root().display()
            );
            return Ok(Status::SomeFailed);
        }
        return Ok(Status::Done);
    }
    let details = match koop.layer_details(layer.id).await {
        Ok(details) => details,
        Err(error) => {
            eprintln!("error: {}", one_line(&error));
            return Ok(Status::SomeFailed);
        }
    };
    if json {
        let manifests: Vec<_> = entries.iter().map(|entry| &entry.manifest).collect();
        let current = details.version_id();
        let document = json!({
            "details": details,
            "cache": manifests,
            "current_version_cached": entries.iter().any(|entry| Some(entry.manifest.key.version_id) == current),
        });
        println!("{}", serde_json::to_string_pretty(&document)?);
    } else {
        print_details(&details, koop.domain(), &entries);
    }
    Ok(Status::Done)
}
