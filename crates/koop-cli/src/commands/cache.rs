//! `koop cache ls|verify|gc|path`: the cache alone, no API key: the local cache, or a shared
//! one on object storage.

use std::time::Duration;

use anyhow::Result;
use koop::koop_store::SharedStore;
use koop::{Cache, GcPolicy, Manifest};
use serde_json::json;

use crate::Status;
use crate::cli::Global;
use crate::progress::human_bytes;

fn open(global: &Global) -> Result<Cache> {
    Ok(Cache::open(super::local_cache_dir(global)?)?)
}

/// `koop cache ls`.
pub(crate) fn list(global: &Global, json: bool) -> Result<Status> {
    let cache = open(global)?;
    let entries = cache.list()?;
    let manifests: Vec<&Manifest> = entries.iter().map(|entry| &entry.manifest).collect();
    print_entries(&manifests, &cache.root().display().to_string(), json)
}

/// `koop cache ls` of a shared cache: its entries, from their manifests.
pub(crate) async fn list_shared(store: &SharedStore, json: bool) -> Result<Status> {
    let inventory = store.inventory().await?;
    for (object, reason) in &inventory.unreadable {
        tracing::warn!("{object}: {reason}");
    }
    let manifests: Vec<&Manifest> = inventory.entries.iter().collect();
    print_entries(&manifests, store.location(), json)
}

fn print_entries(entries: &[&Manifest], location: &str, json: bool) -> Result<Status> {
    if json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(Status::Done);
    }
    if entries.is_empty() {
        eprintln!("the cache at {location} is empty");
        return Ok(Status::Done);
    }
    println!(
        "{:>8}  {:>9}  {:<8}  {:<10}  {:>9}  {:<24}  title",
        "layer", "version", "kind", "CRS", "size", "fetched"
    );
    let mut total = 0;
    for manifest in entries {
        total += manifest.size;
        let fetched: String = manifest.fetched_at.chars().take(19).collect();
        println!(
            "{:>8}  {:>9}  {:<8}  {:<10}  {:>9}  {:<24}  {}",
            manifest.key.layer_id,
            manifest.key.version_id,
            manifest.kind,
            manifest.key.crs,
            human_bytes(manifest.size),
            fetched,
            manifest.title
        );
    }
    eprintln!(
        "{} entries, {} in {location}",
        entries.len(),
        human_bytes(total),
    );
    Ok(Status::Done)
}

/// `koop cache verify` of a shared cache: every object read back and hashed; the manifest of
/// an entry that does not match is removed (exit 1 when any), so nobody downloads it.
pub(crate) async fn verify_shared(store: &SharedStore, json: bool) -> Result<Status> {
    let report = store.verify(true).await?;
    if json {
        let corrupt: Vec<_> = report
            .corrupt
            .iter()
            .map(|(manifest, reason)| json!({ "entry": manifest.entry, "reason": reason }))
            .collect();
        let unreadable: Vec<_> = report
            .unreadable
            .iter()
            .map(|(object, reason)| json!({ "object": object, "reason": reason }))
            .collect();
        let document =
            json!({ "ok": report.ok.len(), "corrupt": corrupt, "unreadable": unreadable });
        println!("{}", serde_json::to_string_pretty(&document)?);
    } else {
        for (manifest, reason) in &report.corrupt {
            println!(
                "corrupt: {}: {reason}; its manifest was removed",
                manifest.entry
            );
        }
        for (object, reason) in &report.unreadable {
            println!("unreadable: {object}: {reason}");
        }
        println!(
            "{} entries ok, {} corrupt, {} unreadable in {}",
            report.ok.len(),
            report.corrupt.len(),
            report.unreadable.len(),
            store.location()
        );
    }
    Ok(
        if report.corrupt.is_empty() && report.unreadable.is_empty() {
            Status::Done
        } else {
            Status::SomeFailed
        },
    )
}

/// `koop cache gc` of a shared cache.
pub(crate) async fn gc_shared(
    store: &SharedStore,
    policy: &GcPolicy,
    json: bool,
) -> Result<Status> {
    let report = store.gc(policy).await?;
    let verb = if policy.dry_run {
        "would remove"
    } else {
        "removed"
    };
    if json {
        let removed: Vec<_> = report
            .removed
            .iter()
            .map(|manifest| &manifest.entry)
            .collect();
        let document = json!({ "dry_run": policy.dry_run, "removed": removed, "bytes": report.bytes, "leftovers": report.leftovers });
        println!("{}", serde_json::to_string_pretty(&document)?);
    } else {
        for manifest in &report.removed {
            println!(
                "{verb} {} ({}, version {})",
                manifest.entry, manifest.title, manifest.key.version_id
            );
        }
        println!(
            "{verb} {} entries ({}) and {} leftovers in {}",
            report.removed.len(),
            human_bytes(report.bytes),
            report.leftovers.len(),
            store.location()
        );
    }
    Ok(Status::Done)
}

/// `koop cache verify`: exit 1 when a corrupt entry was found (and quarantined).
pub(crate) async fn verify(global: &Global, json: bool) -> Result<Status> {
    let cache = open(global)?;
    let report = tokio::task::spawn_blocking(move || cache.verify()).await??;
    if json {
        let corrupt: Vec<_> = report
            .corrupt
            .iter()
            .map(|corrupt| {
                json!({
                    "entry": corrupt.entry.manifest.entry,
                    "reason": corrupt.reason,
                    "quarantined_to": corrupt.quarantined_to,
                })
            })
            .collect();
        let document =
            json!({ "ok": report.ok.len(), "busy": report.busy.len(), "corrupt": corrupt });
        println!("{}", serde_json::to_string_pretty(&document)?);
    } else {
        for corrupt in &report.corrupt {
            let moved = corrupt
                .quarantined_to
                .as_ref()
                .map(|path| format!("; moved to {}", path.display()))
                .unwrap_or_default();
            println!(
                "corrupt: {}: {}{moved}",
                corrupt.entry.manifest.entry, corrupt.reason
            );
        }
        println!(
            "{} entries ok, {} corrupt, {} skipped (in use)",
            report.ok.len(),
            report.corrupt.len(),
            report.busy.len()
        );
    }
    Ok(if report.corrupt.is_empty() {
        Status::Done
    } else {
        Status::SomeFailed
    })
}

/// The policy of `koop cache gc`.
pub(crate) fn gc_policy(
    keep: Option<usize>,
    older_than_days: Option<u64>,
    dry_run: bool,
) -> GcPolicy {
    GcPolicy {
        keep_newest: keep,
        max_age: older_than_days.map(|days| Duration::from_secs(days.saturating_mul(86_400))),
        dry_run,
    }
}

/// `koop cache gc`.
pub(crate) fn gc(global: &Global, policy: &GcPolicy, json: bool) -> Result<Status> {
    let cache = open(global)?;
    let dry_run = policy.dry_run;
    let report = cache.gc(policy)?;
    let verb = if dry_run { "would remove" } else { "removed" };
    if json {
        let removed: Vec<_> = report
            .removed
            .iter()
            .map(|entry| &entry.manifest.entry)
            .collect();
        let document = json!({ "dry_run": dry_run, "removed": removed, "bytes": report.bytes, "leftovers": report.leftovers });
        println!("{}", serde_json::to_string_pretty(&document)?);
    } else {
        for entry in &report.removed {
            println!(
                "{verb} {} ({}, version {})",
                entry.manifest.entry, entry.manifest.title, entry.manifest.key.version_id
            );
        }
        println!(
            "{verb} {} entries ({}) and {} leftovers",
            report.removed.len(),
            human_bytes(report.bytes),
            report.leftovers.len()
        );
    }
    Ok(Status::Done)
}

/// `koop cache path`.
pub(crate) fn path(global: &Global) -> Result<Status> {
    let root = match &global.cache_dir {
        Some(dir) => dir.clone(),
        None => Cache::default_root()?,
    };
    println!("{}", root.display());
    Ok(Status::Done)
}
