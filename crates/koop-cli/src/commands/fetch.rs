//! `koop get` and `koop mirror`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use koop::{
    CatalogCheck, Domain, ExportOptions, FetchedLayer, Koop, LayerPlan, LayerResult, MirrorOptions,
    MirrorSummary,
};
use serde_json::{Value, json};

use super::{allowed_domains, domain_of, koop_with};
use crate::Status;
use crate::cli::{Concurrency, Deadline, Global};
use crate::ids::{LayerRef, NotALayer, parse_layer_ref, parse_list};
use crate::one_line;
use crate::progress::{Reporter, err, human_bytes, out};
use crate::signals::Interrupt;

fn options(concurrency: &Concurrency) -> MirrorOptions {
    MirrorOptions {
        exports: concurrency.jobs.max(1),
        downloads: concurrency.downloads.max(1),
        ..MirrorOptions::default()
    }
}

fn export_options(deadline: Deadline) -> ExportOptions {
    ExportOptions {
        deadline: deadline.timeout,
        ..ExportOptions::default()
    }
}

/// Layer ids by site, in the order given.
type Groups = Vec<(Domain, Vec<u64>)>;

/// Layers grouped by their site, in the order given, and why each refused one was refused.
fn by_domain(global: &Global, refs: Vec<LayerRef>) -> Result<(Groups, Vec<(u64, String)>)> {
    let allowed = allowed_domains(global)?;
    let mut groups: Vec<(Domain, Vec<u64>)> = Vec::new();
    let mut refused = Vec::new();
    for layer in refs {
        match domain_of(&allowed, &layer) {
            Ok(domain) => match groups.iter_mut().find(|(site, _)| *site == domain) {
                Some((_, ids)) => ids.push(layer.id),
                None => groups.push((domain, vec![layer.id])),
            },
            Err(reason) => refused.push((layer.id, reason)),
        }
    }
    Ok((groups, refused))
}

/// Fetches every group with its own `Koop`, handing each result to `each` as it finishes.
/// What the catalog of one domain told a mirror run, and how many layers it spared a request.
pub(crate) struct CatalogReport {
    domain: Domain,
    check: CatalogCheck,
    unchanged: usize,
    listed: usize,
    /// Requests the run sent to the site, the catalog's included.
    requests: u64,
}

/// Fetches every group; with `plan`, each domain's run is planned from its catalog
/// ([`Koop::plan_mirror`]) and recorded when complete.
#[expect(
    clippy::too_many_arguments,
    reason = "the shared options of get and mirror"
)]
async fn fetch_groups(
    global: &Global,
    groups: &[(Domain, Vec<u64>)],
    concurrency: &Concurrency,
    deadline: Deadline,
    interrupt: &Interrupt,
    reporter: &Reporter,
    plan: bool,
    mut each: impl FnMut(&Domain, LayerResult),
) -> Result<Vec<CatalogReport>> {
    let mut reports = Vec::new();
    for (domain, ids) in groups {
        if interrupt.exit_code().is_some() {
            break;
        }
        let koop: Koop = koop_with(
            global,
            domain,
            export_options(deadline),
            Some(interrupt.token()),
        )?;
        if !plan {
            let mut results = koop.mirror(ids.iter().copied(), options(concurrency), reporter);
            while let Some(result) = results.next().await {
                each(domain, result);
            }
            continue;
        }
        let run = match koop.plan_mirror(ids.iter().copied()).await {
            Ok(run) => run,
            Err(koop::Error::Interrupted { .. }) => break,
            Err(error) => return Err(error).context(format!("cannot plan the mirror of {domain}")),
        };
        let mut report = CatalogReport {
            domain: domain.clone(),
            check: run.check().clone(),
            unchanged: run.unchanged(),
            listed: run.layer_ids().len(),
            requests: 0,
        };
        let mut complete = true;
        {
            let mut results = koop.mirror_run(&run, options(concurrency), reporter);
            while let Some(result) = results.next().await {
                complete &= result.result.is_ok();
                each(domain, result);
            }
        }
        complete &= interrupt.exit_code().is_none();
        koop.finish_mirror(run, complete)
            .with_context(|| format!("cannot record the mirror of {domain}"))?;
        report.requests = koop
            .connection()
            .map_or(0, koop::KoordinatesConnection::requests_made);
        reports.push(report);
    }
    Ok(reports)
}

/// One line (within 80 columns for the usual domains) saying what a domain's catalog told the
/// run; the reason a site could not say goes to the log.
fn catalog_line(report: &CatalogReport) -> String {
    let domain = &report.domain;
    match &report.check {
        CatalogCheck::Asked { since, changed, .. } => format!(
            "catalog of {domain}: {changed} of {} changed since {}",
            report.listed,
            short_time(*since)
        ),
        CatalogCheck::NotAsked { reason } if reason == "offline" => {
            format!("catalog of {domain}: not asked (offline)")
        }
        CatalogCheck::NotAsked { .. } => {
            format!("catalog of {domain}: first recorded run; each layer looked up")
        }
        CatalogCheck::Unsupported { reason } => {
            tracing::warn!("catalog of {domain}: {reason}");
            format!("catalog of {domain}: cannot say what changed; each layer looked up")
        }
        _ => format!("catalog of {domain}: each layer looked up"),
    }
}

/// `2026-12-01 19:30Z`.
fn short_time(time: std::time::SystemTime) -> String {
    jiff::Timestamp::try_from(time)
        .map(|time| time.strftime("%Y-%m-%d %H:%MZ").to_string())
        .unwrap_or_default()
}

fn timestamp(time: std::time::SystemTime) -> String {
    jiff::Timestamp::try_from(time)
        .map(|time| time.round(jiff::Unit::Second).unwrap_or(time).to_string())
        .unwrap_or_default()
}

fn catalog_json(report: &CatalogReport) -> Value {
    let (check, since, changed, requests, reason) = match &report.check {
        CatalogCheck::Asked {
            since,
            changed,
            pages,
        } => (
            "asked",
            Some(timestamp(*since)),
            Some(*changed),
            *pages,
            None,
        ),
        CatalogCheck::NotAsked { reason } => ("not_asked", None, None, 0, Some(reason.clone())),
        CatalogCheck::Unsupported { reason } => {
            ("unsupported", None, None, 1, Some(reason.clone()))
        }
        _ => ("unknown", None, None, 0, None),
    };
    json!({
        "domain": report.domain.as_str(),
        "check": check,
        "since": since,
        "changed": changed,
        "unchanged": report.unchanged,
        "listed": report.listed,
        "catalog_requests": requests,
        "requests": report.requests,
        "reason": reason,
    })
}

/// `koop mirror --dry-run`: what a run would do for each layer, in the order given; nothing
/// is exported, linked or recorded.
pub(crate) async fn dry_run(global: &Global, request: &MirrorRequest<'_>) -> Result<Status> {
    let (refs, bad) = read_layers(request)?;
    let (groups, refused) = by_domain(global, refs)?;
    let mut failures = bad.len() + refused.len();
    for line in bad.iter().chain(refused.iter().map(|(_, reason)| reason)) {
        tracing::error!("{line}");
    }
    let mut documents = Vec::new();
    let mut catalogs = Vec::new();
    let mut counts: HashMap<&'static str, usize> = HashMap::new();
    for (domain, ids) in &groups {
        let koop: Koop = koop_with(global, domain, ExportOptions::default(), None)?;
        let run = koop
            .plan_mirror(ids.iter().copied())
            .await
            .with_context(|| format!("cannot plan the mirror of {domain}"))?;
        let koop = &koop;
        let run = &run;
        let plans: Vec<(u64, koop::Result<LayerPlan>)> =
            futures::stream::iter(run.layer_ids().to_vec())
                .map(|id| async move { (id, koop.plan_layer(run, id).await) })
                .buffered(16)
                .collect()
                .await;
        for (id, plan) in plans {
            match plan {
                Ok(plan) => {
                    *counts.entry(plan.as_str()).or_default() += 1;
                    if request.json {
                        documents.push(plan_json(id, &plan));
                    } else {
                        out(format!("{id}\t{}\t{}", plan.as_str(), plan_detail(&plan)));
                    }
                }
                Err(error) => {
                    failures += 1;
                    tracing::error!("{}", one_line(&error));
                    if request.json {
                        documents.push(
                            json!({"layer_id": id, "plan": "failed", "error": one_line(&error)}),
                        );
                    }
                }
            }
        }
        catalogs.push(CatalogReport {
            domain: domain.clone(),
            check: run.check().clone(),
            unchanged: run.unchanged(),
            listed: run.layer_ids().len(),
            requests: koop
                .connection()
                .map_or(0, koop::KoordinatesConnection::requests_made),
        });
    }
    let count = |plan: &str| counts.get(plan).copied().unwrap_or_default();
    if request.json {
        let document = json!({
            "dry_run": true,
            "layers": documents,
            "catalog": catalogs.iter().map(catalog_json).collect::<Vec<_>>(),
            "summary": {
                "export": count("export"),
                "changeset": count("changeset"),
                "link": count("link"),
                "cached": count("cached"),
                "unchanged": count("unchanged"),
                "failed": failures,
            },
        });
        out(serde_json::to_string_pretty(&document)?);
    } else {
        for report in &catalogs {
            err(catalog_line(report));
        }
        err(format!(
            "dry run: {} to export, {} by changeset, {} to link, {} cached, {} unchanged, {failures} failed; nothing done",
            count("export"),
            count("changeset"),
            count("link"),
            count("cached"),
            count("unchanged")
        ));
    }
    Ok(if failures > 0 {
        Status::SomeFailed
    } else {
        Status::Done
    })
}

fn plan_detail(plan: &LayerPlan) -> String {
    match plan {
        LayerPlan::Unchanged { path } | LayerPlan::Cached { path, .. } => {
            path.display().to_string()
        }
        LayerPlan::Link { version_id } => format!("version {version_id}: metadata only"),
        LayerPlan::Changeset {
            version_id,
            from_version,
        } => format!("version {version_id}: changeset from version {from_version}"),
        LayerPlan::Export {
            version_id,
            kind,
            title,
            reason,
        } => format!("version {version_id} ({kind}): {title}; in full: {reason}"),
        _ => String::new(),
    }
}

fn plan_json(layer_id: u64, plan: &LayerPlan) -> Value {
    let mut document = json!({"layer_id": layer_id, "plan": plan.as_str()});
    match plan {
        LayerPlan::Unchanged { path } => document["path"] = json!(path),
        LayerPlan::Cached { version_id, path } => {
            document["version_id"] = json!(version_id);
            document["path"] = json!(path);
        }
        LayerPlan::Link { version_id } => document["version_id"] = json!(version_id),
        LayerPlan::Changeset {
            version_id,
            from_version,
        } => {
            document["version_id"] = json!(version_id);
            document["from_version"] = json!(from_version);
        }
        LayerPlan::Export {
            version_id,
            kind,
            title,
            reason,
        } => {
            document["version_id"] = json!(version_id);
            document["kind"] = json!(kind);
            document["title"] = json!(title);
            document["full_export_reason"] = json!(reason);
        }
        _ => {}
    }
    document
}

/// `true` for an error that only says the work was interrupted.
fn is_interrupted(error: &koop::Error) -> bool {
    matches!(
        error,
        koop::Error::Export(koop::koop_export::Error::Interrupted { .. })
    )
}

fn fetched_json(fetched: &FetchedLayer) -> Value {
    let manifest = &fetched.entry.manifest;
    json!({
        "layer_id": manifest.key.layer_id,
        "outcome": fetched.outcome.as_str(),
        "path": fetched.path,
        "title": manifest.title,
        "kind": manifest.kind,
        "version_id": manifest.key.version_id,
        "data_version": manifest.key.data_version,
        "crs": manifest.key.crs,
        "size": manifest.size,
        "blake3": manifest.blake3,
        "fetched_at": manifest.fetched_at,
        "changeset": manifest.changeset.as_ref().map(|changeset| json!({
            "from_version": changeset.from_version,
            "inserts": changeset.inserts,
            "updates": changeset.updates,
            "deletes": changeset.deletes,
            "bytes": changeset.bytes,
        })),
        "full_export_reason": fetched.full_export_reason,
        "not_shared": fetched.not_shared,
    })
}

/// What a mirror line adds after the path: a changeset's counts, or why a layer was exported
/// in full; and why it is not in the shared cache.
fn fetched_note(fetched: &FetchedLayer) -> Option<String> {
    let note = how_fetched(fetched);
    match (note, &fetched.not_shared) {
        (Some(note), Some(reason)) => Some(format!("{note}; not shared: {reason}")),
        (None, Some(reason)) => Some(format!("not shared: {reason}")),
        (note, None) => note,
    }
}

fn how_fetched(fetched: &FetchedLayer) -> Option<String> {
    match (
        fetched.outcome,
        &fetched.entry.manifest.changeset,
        &fetched.full_export_reason,
    ) {
        (koop::FetchOutcome::Changeset, Some(changeset), _) => Some(format!(
            "from version {}: +{} ~{} -{} ({})",
            changeset.from_version,
            changeset.inserts,
            changeset.updates,
            changeset.deletes,
            human_bytes(changeset.bytes)
        )),
        (koop::FetchOutcome::Downloaded, _, Some(reason)) => Some(format!("in full: {reason}")),
        _ => None,
    }
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

/// `koop get ID...`: paths on stdout, one per line in the order given.
pub(crate) async fn get(
    global: &Global,
    ids: &[String],
    concurrency: &Concurrency,
    deadline: Deadline,
    json: bool,
    bars: bool,
) -> Result<Status> {
    let refs = ids
        .iter()
        .map(|id| parse_layer_ref(id))
        .collect::<Result<Vec<_>, NotALayer>>()?;
    let order: Vec<u64> = refs.iter().map(|layer| layer.id).collect();
    let (groups, refused) = by_domain(global, refs)?;
    for (_, reason) in &refused {
        err(format!("error: {reason}"));
    }
    let interrupt = Interrupt::install();
    let total = groups.iter().map(|(_, ids)| ids.len()).sum();
    let reporter = Reporter::new(total, bars);
    let mut results: HashMap<u64, LayerResult> = HashMap::new();
    fetch_groups(
        global,
        &groups,
        concurrency,
        deadline,
        &interrupt,
        &reporter,
        false,
        |_, result| {
            results.insert(result.layer_id, result);
        },
    )
    .await?;
    drop(reporter);

    let mut failed = !refused.is_empty();
    let mut documents = Vec::new();
    let mut printed = std::collections::HashSet::new();
    for id in order {
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
            Ok(fetched) if !json => out(fetched.path.display()),
            Ok(_) => {}
            Err(error) if is_interrupted(&error) => {}
            Err(error) => {
                failed = true;
                err(format!("error: {}", one_line(&error)));
            }
        }
    }
    if json {
        out(serde_json::to_string_pretty(&documents)?);
    }
    if let Some(code) = interrupt.exit_code() {
        err("koop: interrupted; what is on disk stays valid; the next run resumes the rest");
        return Ok(Status::Interrupted(code));
    }
    Ok(if failed {
        Status::SomeFailed
    } else {
        Status::Done
    })
}

/// `mirrored 8 layers in 2.1 s: 8 downloaded (28.3 MB)`, then only the counts that are not
/// zero, so the line fits an 80-column terminal.
fn mirror_summary_line(
    layers: usize,
    elapsed: Duration,
    summary: &MirrorSummary,
    failures: usize,
    interrupted: usize,
) -> String {
    let mut line = format!(
        "mirrored {layers} layers in {}: {} downloaded",
        elapsed_text(elapsed),
        summary.downloaded
    );
    if summary.downloaded + summary.changesets > 0 {
        let _ = write!(line, " ({})", human_bytes(summary.bytes_downloaded));
    }
    for (count, what) in [
        (summary.cached + summary.offline, "cached"),
        (summary.unchanged, "unchanged"),
        (summary.changesets, "updated by changeset"),
        (summary.shared, "from the shared cache"),
        (summary.linked, "linked"),
        (summary.not_shared.len(), "not shared"),
        (failures, "failed"),
        (interrupted, "interrupted"),
    ] {
        if count > 0 {
            let _ = write!(line, ", {count} {what}");
        }
    }
    line
}

/// The `summary` object of `koop mirror --json`.
fn summary_json(
    summary: &MirrorSummary,
    failures: usize,
    interrupted: usize,
    catalogs: &[CatalogReport],
    elapsed: Duration,
) -> Value {
    json!({
        "downloaded": summary.downloaded,
        "cached": summary.cached,
        "linked": summary.linked,
        "offline": summary.offline,
        "unchanged": summary.unchanged,
        "changesets": summary.changesets,
        "shared": summary.shared,
        "not_shared": summary.not_shared.len(),
        "failed": failures,
        "requests": catalogs.iter().map(|report| report.requests).sum::<u64>(),
        "interrupted": interrupted,
        "bytes_downloaded": summary.bytes_downloaded,
        "seconds": elapsed.as_secs_f64(),
    })
}

/// The text of a list file, or of standard input for `-`.
pub(crate) fn read_list(from: &Path) -> Result<String> {
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

/// What `koop mirror` was asked to do.
pub(crate) struct MirrorRequest<'a> {
    /// The list file (`-` for standard input).
    pub(crate) from: Option<&'a Path>,
    /// Layers given as arguments.
    pub(crate) args: &'a [String],
    /// Exports and downloads at once.
    pub(crate) concurrency: &'a Concurrency,
    /// The export deadline.
    pub(crate) deadline: Deadline,
    /// One JSON document instead of lines.
    pub(crate) json: bool,
    /// Look up every layer instead of asking the catalog what changed.
    pub(crate) every_layer: bool,
}

/// The layers of the list file and the arguments, and a line for each that cannot be read.
fn read_layers(request: &MirrorRequest<'_>) -> Result<(Vec<LayerRef>, Vec<String>)> {
    let mut lines = Vec::new();
    if let Some(from) = request.from {
        let text = read_list(from)?;
        lines.extend(
            parse_list(&text)
                .into_iter()
                .map(|line| (format!("{}:{}", from.display(), line.number), line.layer)),
        );
    }
    for (index, arg) in request.args.iter().enumerate() {
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
    Ok((refs, bad))
}

/// `koop mirror`: a line per layer as it finishes, a summary at the end.
pub(crate) async fn mirror(
    global: &Global,
    request: &MirrorRequest<'_>,
    bars: bool,
) -> Result<Status> {
    let (refs, mut bad) = read_layers(request)?;
    let (groups, refused) = by_domain(global, refs)?;
    bad.extend(refused.into_iter().map(|(_, reason)| reason));
    for line in &bad {
        tracing::error!("{line}");
    }

    let started = Instant::now();
    let interrupt = Interrupt::install();
    let total = groups.iter().map(|(_, ids)| ids.len()).sum();
    let reporter = Reporter::new(total, bars);
    let mut summary = MirrorSummary::default();
    let mut interrupted = 0_usize;
    let mut documents = Vec::new();
    let json = request.json;
    let catalogs = fetch_groups(
        global,
        &groups,
        request.concurrency,
        request.deadline,
        &interrupt,
        &reporter,
        !request.every_layer,
        |_, result| {
            if json {
                documents.push(result_json(&result));
            } else if let Ok(fetched) = &result.result {
                let mut line = format!(
                    "{}\t{}\t{}",
                    result.layer_id,
                    fetched.outcome.as_str(),
                    fetched.path.display()
                );
                if let Some(note) = fetched_note(fetched) {
                    let _ = write!(line, "\t{note}");
                }
                out(line);
            }
            match &result.result {
                Err(error) if is_interrupted(error) => interrupted += 1,
                Err(error) => {
                    tracing::error!("{}", one_line(error));
                    summary.add(result);
                }
                Ok(_) => summary.add(result),
            }
        },
    )
    .await?;
    drop(reporter);

    let failures = summary.failed.len() + bad.len();
    let elapsed = started.elapsed();
    if json {
        let document = json!({
            "layers": documents,
            "catalog": catalogs.iter().map(catalog_json).collect::<Vec<_>>(),
            "unreadable": bad,
            "summary": summary_json(&summary, failures, interrupted, &catalogs, elapsed),
        });
        out(serde_json::to_string_pretty(&document)?);
    } else {
        for report in &catalogs {
            err(catalog_line(report));
        }
        err(mirror_summary_line(
            summary.succeeded() + failures,
            elapsed,
            &summary,
            failures,
            interrupted,
        ));
        for line in &bad {
            err(format!("  failed: {line}"));
        }
        for (layer_id, error) in &summary.failed {
            err(format!("  failed: layer {layer_id}: {}", one_line(error)));
        }
    }
    if let Some(code) = interrupt.exit_code() {
        err("koop: interrupted; what is on disk stays valid; the next run resumes the rest");
        return Ok(Status::Interrupted(code));
    }
    Ok(if failures > 0 {
        Status::SomeFailed
    } else {
        Status::Done
    })
}
