//! `koop get` and `koop mirror`.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use koop::{FetchedLayer, Koop, LayerResult, MirrorOptions, MirrorSummary};
use serde_json::{Value, json};

use super::{domain_for, koop};
use crate::Status;
use crate::cli::{Concurrency, Global};
use crate::ids::{LayerRef, NotALayer, parse_layer_ref, parse_list};
use crate::one_line;
use crate::progress::{Reporter, human_bytes};

fn options(concurrency: &Concurrency) -> MirrorOptions {
    MirrorOptions {
        exports: concurrency.jobs.max(1),
        downloads: concurrency.downloads.max(1),
        ..MirrorOptions::default()
    }
}

fn fetched_json(fetched: &FetchedLayer) -> Value {
    let manifest = &fetched.entry.manifest;
    json!({
        "layer_id": manifest.key.layer_id,
        "outcome": format!("{:?}", fetched.outcome).to_lowercase(),
        "path": fetched.path,
        "title": manifest.title,
        "kind": manifest.kind,
        "version_id": manifest.key.version_id,
        "data_version": manifest.key.data_version,
        "crs": manifest.key.crs,
        "size": manifest.size,
        "blake3": manifest.blake3,
        "fetched_at": manifest.fetched_at,
    })
}

fn result_json(result: &LayerResult) -> Value {
    match &result.result {
        Ok(fetched) => fetched_json(fetched),
        Err(error) => json!({
            "layer_id": result.layer_id,
            "outcome": "failed",
            "error": one_line(error),
        }),
    }
}

/// The layers of `refs` that belong to `domain`, and an error for each that does not.
fn on_domain(refs: Vec<LayerRef>, domain: &koop::Domain) -> (Vec<u64>, Vec<(u64, String)>) {
    let host = domain;
    let mut ids = Vec::new();
    let mut wrong = Vec::new();
    for layer in refs {
        match &layer.host {
            Some(other) if other != host => wrong.push((
                layer.id,
                format!(
                    "layer {} is on {other}, not {host}; pass --domain {other}",
                    layer.id
                ),
            )),
            _ => ids.push(layer.id),
        }
    }
    (ids, wrong)
}

/// `koop get ID...`: paths on stdout, one per line in the order given.
pub(crate) async fn get(
    global: &Global,
    ids: &[String],
    concurrency: &Concurrency,
    json: bool,
    bars: bool,
) -> Result<Status> {
    let refs = ids
        .iter()
        .map(|id| parse_layer_ref(id))
        .collect::<Result<Vec<_>, NotALayer>>()?;
    let domain = domain_for(global, &refs.iter().collect::<Vec<_>>())?;
    let koop = koop(global, &domain)?;
    let (ids, wrong) = on_domain(refs, &domain);
    let reporter = Reporter::new(ids.len(), bars);
    let mut results: HashMap<u64, LayerResult> = koop
        .mirror(ids.iter().copied(), options(concurrency), &reporter)
        .map(|result| (result.layer_id, result))
        .collect()
        .await;
    drop(reporter);

    let mut failed = !wrong.is_empty();
    for (layer_id, reason) in &wrong {
        eprintln!("error: layer {layer_id}: {reason}");
    }
    let mut documents = Vec::new();
    let mut printed = std::collections::HashSet::new();
    for id in ids {
        if !printed.insert(id) {
            continue;
        }
        let Some(result) = results.remove(&id) else {
            continue;
        };
        if json {
            documents.push(result_json(&result));
        }
        match result.result {
            Ok(fetched) if !json => println!("{}", fetched.path.display()),
            Ok(_) => {}
            Err(error) => {
                failed = true;
                eprintln!("error: {}", one_line(&error));
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&documents)?);
    }
    Ok(if failed {
        Status::SomeFailed
    } else {
        Status::Done
    })
}

fn read_list(from: &Path) -> Result<String> {
    if from == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the list from standard input")?;
        Ok(text)
    } else {
        std::fs::read_to_string(from)
            .with_context(|| format!("cannot read the list {}", from.display()))
    }
}

fn elapsed_text(elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64();
    if seconds < 1.0 {
        format!("{:.0} ms", seconds * 1000.0)
    } else if seconds < 120.0 {
        format!("{seconds:.1} s")
    } else {
        format!("{}m{:02}s", elapsed.as_secs() / 60, elapsed.as_secs() % 60)
    }
}

/// `koop mirror`: a line per layer as it finishes, a summary at the end.
pub(crate) async fn mirror(
    global: &Global,
    from: Option<&Path>,
    args: &[String],
    concurrency: &Concurrency,
    json: bool,
    bars: bool,
) -> Result<Status> {
    let mut lines = Vec::new();
    if let Some(from) = from {
        let text = read_list(from)?;
        lines.extend(
            parse_list(&text)
                .into_iter()
                .map(|line| (format!("{}:{}", from.display(), line.number), line.layer)),
        );
    }
    for (index, arg) in args.iter().enumerate() {
        lines.push((format!("argument {}", index + 1), parse_layer_ref(arg)));
    }
    if lines.is_empty() {
        bail!("nothing to mirror: give layer ids, or a list with --from FILE");
    }
    let mut bad: Vec<String> = Vec::new();
    let mut refs = Vec::new();
    for (place, layer) in lines {
        match layer {
            Ok(layer) => refs.push(layer),
            Err(error) => bad.push(format!("{place}: {error}")),
        }
    }
    let domain = domain_for(global, &refs.iter().collect::<Vec<_>>())?;
    let koop: Koop = koop(global, &domain)?;
    let (ids, wrong) = on_domain(refs, &domain);
    bad.extend(wrong.into_iter().map(|(_, reason)| reason));
    for line in &bad {
        tracing::error!("{line}");
    }

    let started = Instant::now();
    let reporter = Reporter::new(ids.len(), bars);
    let mut summary = MirrorSummary::default();
    let mut documents = Vec::new();
    let mut results = koop.mirror(ids.iter().copied(), options(concurrency), &reporter);
    while let Some(result) = results.next().await {
        if json {
            documents.push(result_json(&result));
        } else if let Ok(fetched) = &result.result {
            let outcome = format!("{:?}", fetched.outcome).to_lowercase();
            println!("{}\t{outcome}\t{}", result.layer_id, fetched.path.display());
        }
        if let Err(error) = &result.result {
            tracing::error!("{}", one_line(error));
        }
        summary.add(result);
    }
    drop(results);
    drop(reporter);

    let failures = summary.failed.len() + bad.len();
    let elapsed = started.elapsed();
    if json {
        let document = json!({
            "layers": documents,
            "unreadable": bad,
            "summary": {
                "downloaded": summary.downloaded,
                "cached": summary.cached,
                "linked": summary.linked,
                "offline": summary.offline,
                "failed": failures,
                "bytes_downloaded": summary.bytes_downloaded,
                "seconds": elapsed.as_secs_f64(),
            },
        });
        println!("{}", serde_json::to_string_pretty(&document)?);
    } else {
        eprintln!(
            "mirrored {} layers in {}: {} downloaded ({}), {} cached, {} linked, {} failed",
            summary.succeeded() + failures,
            elapsed_text(elapsed),
            summary.downloaded,
            human_bytes(summary.bytes_downloaded),
            summary.cached + summary.offline,
            summary.linked,
            failures
        );
        for line in &bad {
            eprintln!("  failed: {line}");
        }
        for (layer_id, error) in &summary.failed {
            eprintln!("  failed: layer {layer_id}: {}", one_line(error));
        }
    }
    Ok(if failures > 0 {
        Status::SomeFailed
    } else {
        Status::Done
    })
}
