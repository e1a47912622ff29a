//! Mirroring many layers at once.

use std::collections::{HashSet, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use koop_api::CatalogChanges;
use koop_cache::{EntryLock, MirrorState};

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, Stream, StreamExt};
use tokio::sync::Semaphore;

use crate::error::{Error, Result};
use koop_export::{FetchOutcome, Observer};

use crate::koop::{FetchedLayer, Koop, Limits, Lookup};

/// How much a mirror run does at once.
///
/// The stages are bounded separately. Looking a layer up (its details and the cache) is cheap,
/// so many run at once and cache hits never wait behind downloads. Exports wait on the server,
/// so several overlap to hide their latency. Downloads and extraction use the network and a CPU
/// core each (inflating runs at about 300–500 MiB/s per core), so a few suffice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MirrorOptions {
    /// Layer lookups in flight (default 16).
    pub lookups: usize,
    /// Exports being created or processed on the server at once (default 8).
    pub exports: usize,
    /// Downloads and extractions at once (default 4).
    pub downloads: usize,
}

impl Default for MirrorOptions {
    fn default() -> Self {
        Self {
            lookups: 16,
            exports: 8,
            downloads: 4,
        }
    }
}

/// The result of one layer of a mirror run.
#[derive(Debug)]
pub struct LayerResult {
    /// The layer.
    pub layer_id: u64,
    /// What became of it.
    pub result: Result<FetchedLayer>,
    /// Time from its start to its result.
    pub elapsed: Duration,
}

/// Totals of a mirror run.
#[derive(Debug, Default)]
pub struct MirrorSummary {
    /// Layers exported and downloaded.
    pub downloaded: usize,
    /// Layers already cached.
    pub cached: usize,
    /// Metadata-only versions linked to cached data.
    pub linked: usize,
    /// Layers answered offline from the cache.
    pub offline: usize,
    /// Layers the catalog reported unchanged, answered from the cache without a request.
    pub unchanged: usize,
    /// Layers updated by a changeset applied to their cached previous version.
    pub changesets: usize,
    /// Layers downloaded from the shared cache, exported by another machine.
    pub shared: usize,
    /// Layers exported (or built) here that could not be shared: `(layer id, why)`. Their local
    /// entries are valid; another machine will export them again.
    pub not_shared: Vec<(u64, String)>,
    /// Bytes downloaded: the files of the layers exported, the pages of the changesets.
    pub bytes_downloaded: u64,
    /// Layers that failed, with their errors.
    pub failed: Vec<(u64, Error)>,
}

impl MirrorSummary {
    /// Counts one result.
    pub fn add(&mut self, result: LayerResult) {
        match result.result {
            Ok(fetched) => {
                if let Some(reason) = &fetched.not_shared {
                    self.not_shared.push((result.layer_id, reason.clone()));
                }
                self.count(&fetched);
            }
            Err(error) => self.failed.push((result.layer_id, error)),
        }
    }

    fn count(&mut self, fetched: &crate::FetchedLayer) {
        match fetched.outcome {
            FetchOutcome::Downloaded => {
                self.downloaded += 1;
                self.bytes_downloaded += fetched.entry.manifest.size;
            }
            FetchOutcome::Cached => self.cached += 1,
            FetchOutcome::Linked => self.linked += 1,
            FetchOutcome::Offline => self.offline += 1,
            FetchOutcome::Unchanged => self.unchanged += 1,
            FetchOutcome::Shared => self.shared += 1,
            FetchOutcome::Changeset => {
                self.changesets += 1;
                self.bytes_downloaded += fetched
                    .entry
                    .manifest
                    .changeset
                    .as_ref()
                    .map_or(0, |changeset| changeset.bytes);
            }
        }
    }

    /// Layers that ended with a file on disk.
    pub fn succeeded(&self) -> usize {
        self.downloaded
            + self.cached
            + self.linked
            + self.offline
            + self.unchanged
            + self.changesets
            + self.shared
    }
}

type Pending<'a, T> = FuturesUnordered<BoxFuture<'a, T>>;

/// The stream of [`Koop::mirror`]: a pool of lookups feeding a pool of fetches.
struct Mirror<'a> {
    koop: &'a Koop,
    observer: &'a dyn Observer,
    options: MirrorOptions,
    limits: Limits,
    ids: VecDeque<u64>,
    /// Layers the catalog reported unchanged: answered from the cache when it holds them.
    unchanged: HashSet<u64>,
    missing: VecDeque<(u64, Instant, Box<crate::LayerDetails>)>,
    lookups: Pending<'a, (u64, Instant, Result<Lookup>)>,
    fetches: Pending<'a, LayerResult>,
}

impl Mirror<'_> {
    fn top_up(&mut self) {
        while self.lookups.len() < self.options.lookups.max(1) {
            let Some(layer_id) = self.ids.pop_front() else {
                break;
            };
            let (koop, observer) = (self.koop, self.observer);
            let unchanged = self.unchanged.contains(&layer_id);
            self.lookups.push(Box::pin(async move {
                let started = Instant::now();
                if unchanged {
                    // Not cached (or the cache unreadable): the layer is asked about as usual.
                    if let Ok(Some(fetched)) = koop.fetch_unchanged(layer_id, observer) {
                        return (layer_id, started, Ok(Lookup::Found(Box::new(fetched))));
                    }
                }
                (layer_id, started, koop.lookup(layer_id, observer).await)
            }));
        }
        // The export and download semaphores bound the real work; this bounds the tasks waiting
        // on them.
        let slots = self.options.exports.max(1) + self.options.downloads.max(1);
        while self.fetches.len() < slots {
            let Some((layer_id, started, details)) = self.missing.pop_front() else {
                break;
            };
            let (koop, observer, limits) = (self.koop, self.observer, self.limits.clone());
            self.fetches.push(Box::pin(async move {
                let result = koop
                    .fetch_missing(layer_id, *details, observer, &limits)
                    .await;
                LayerResult {
                    layer_id,
                    result,
                    elapsed: started.elapsed(),
                }
            }));
        }
    }
}

impl Stream for Mirror<'_> {
    type Item = LayerResult;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<LayerResult>> {
        let this = self.get_mut();
        loop {
            this.top_up();
            if let Poll::Ready(Some((layer_id, started, lookup))) = this.lookups.poll_next_unpin(cx)
            {
                match lookup {
                    Ok(Lookup::Missing(details)) => {
                        this.missing.push_back((layer_id, started, details));
                        continue;
                    }
                    Ok(Lookup::Found(fetched)) => {
                        return Poll::Ready(Some(LayerResult {
                            layer_id,
                            result: Ok(*fetched),
                            elapsed: started.elapsed(),
                        }));
                    }
                    Err(error) => {
                        return Poll::Ready(Some(LayerResult {
                            layer_id,
                            result: Err(error),
                            elapsed: started.elapsed(),
                        }));
                    }
                }
            }
            if let Poll::Ready(Some(result)) = this.fetches.poll_next_unpin(cx) {
                return Poll::Ready(Some(result));
            }
            let idle = this.ids.is_empty()
                && this.missing.is_empty()
                && this.lookups.is_empty()
                && this.fetches.is_empty();
            return if idle {
                Poll::Ready(None)
            } else {
                Poll::Pending
            };
        }
    }
}

impl Koop {
    /// Gets many layers, concurrently, yielding each layer's result as it finishes.
    ///
    /// Duplicate ids are fetched once (in the order of their first appearance). The stages are
    /// bounded by `options` ([`MirrorOptions`]); every layer shares this `Koop`'s connection pool
    /// and cache. A failed layer never stops the others: its error is its result. Sum the
    /// results with [`MirrorSummary::add`].
    ///
    /// ```no_run
    /// use futures::StreamExt;
    /// # async fn run(koop: koop::Koop) {
    /// let mut summary = koop::MirrorSummary::default();
    /// let mut results = koop.mirror([50772, 51571, 50772], koop::MirrorOptions::default(), &koop::Quiet);
    /// while let Some(result) = results.next().await {
    ///     summary.add(result);
    /// }
    /// println!("{} downloaded, {} cached, {} failed", summary.downloaded, summary.cached, summary.failed.len());
    /// # }
    /// ```
    pub fn mirror<'a>(
        &'a self,
        layer_ids: impl IntoIterator<Item = u64>,
        options: MirrorOptions,
        observer: &'a dyn Observer,
    ) -> impl Stream<Item = LayerResult> + Send + 'a {
        self.mirror_stream(layer_ids, HashSet::new(), options, observer)
    }

    fn mirror_stream<'a>(
        &'a self,
        layer_ids: impl IntoIterator<Item = u64>,
        unchanged: HashSet<u64>,
        options: MirrorOptions,
        observer: &'a dyn Observer,
    ) -> Mirror<'a> {
        let mut seen = HashSet::new();
        let ids = layer_ids
            .into_iter()
            .filter(|id| seen.insert(*id))
            .collect();
        Mirror {
            koop: self,
            observer,
            options,
            limits: Limits {
                exports: Some(Arc::new(Semaphore::new(options.exports.max(1)))),
                downloads: Some(Arc::new(Semaphore::new(options.downloads.max(1)))),
            },
            ids,
            unchanged,
            missing: VecDeque::new(),
            lookups: FuturesUnordered::new(),
            fetches: FuturesUnordered::new(),
        }
    }
}

/// What the catalog told a planned mirror run ([`Koop::plan_mirror`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CatalogCheck {
    /// The catalog was not asked: no complete run of this domain is recorded (or koop is
    /// offline). Every layer is looked up.
    NotAsked {
        /// Why, for the run's report.
        reason: String,
    },
    /// The catalog listed what changed since the last complete run.
    Asked {
        /// When the last complete run started, by the site's clock.
        since: SystemTime,
        /// Listed layers the catalog reported changed (each is looked up).
        changed: usize,
        /// Catalog pages read (API requests).
        pages: usize,
    },
    /// The site cannot say what changed; every layer is looked up.
    Unsupported {
        /// Why, for the run's report.
        reason: String,
    },
}

/// A mirror run of one domain planned from the site's catalog: which listed layers need a look.
/// Holds the domain's mirror lock (a second run of the same domain on the same cache waits for
/// this one) until [`Koop::finish_mirror`] or drop.
#[derive(Debug)]
pub struct MirrorRun {
    layer_ids: Vec<u64>,
    unchanged: HashSet<u64>,
    started_at: SystemTime,
    check: CatalogCheck,
    lock: EntryLock,
}

impl MirrorRun {
    /// What the catalog said.
    pub fn check(&self) -> &CatalogCheck {
        &self.check
    }

    /// Listed layers the catalog reported unchanged.
    pub fn unchanged(&self) -> usize {
        self.unchanged.len()
    }

    /// The layers listed, without duplicates, in order.
    pub fn layer_ids(&self) -> &[u64] {
        &self.layer_ids
    }
}

/// What a mirror run would do for one layer ([`Koop::plan_layer`]): nothing is exported,
/// linked or written to find it out.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LayerPlan {
    /// The catalog reported it unchanged and the cache holds it: no request.
    Unchanged {
        /// The cached file.
        path: std::path::PathBuf,
    },
    /// Its current version is cached: one details request, no export.
    Cached {
        /// The current version.
        version_id: u64,
        /// The cached file.
        path: std::path::PathBuf,
    },
    /// Its current version changed only metadata: the cached data would be linked under it.
    Link {
        /// The current version.
        version_id: u64,
    },
    /// Its current version would be built from the cached earlier version and the WFS
    /// changeset between the two: no export.
    Changeset {
        /// The current version.
        version_id: u64,
        /// The cached version the changeset would be applied to.
        from_version: u64,
    },
    /// Its current version would be exported and downloaded.
    Export {
        /// The current version.
        version_id: u64,
        /// Its kind (`vector`, `grid`, …).
        kind: String,
        /// Its title.
        title: String,
        /// Why not from a changeset (no earlier version cached, no changeset service, …).
        reason: String,
    },
}

impl LayerPlan {
    /// `unchanged`, `cached`, `link`, `changeset` or `export`, as `koop mirror --dry-run` prints
    /// it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Unchanged { .. } => "unchanged",
            Self::Cached { .. } => "cached",
            Self::Link { .. } => "link",
            Self::Changeset { .. } => "changeset",
            Self::Export { .. } => "export",
        }
    }
}

/// What a run's start is taken as when the site sends no `Date`: the local clock, less a
/// margin for a local clock ahead of the site's.
const UNDATED_MARGIN: Duration = Duration::from_secs(300);

impl Koop {
    /// Plans a mirror run of `layer_ids`: takes the domain's mirror lock (waiting for another
    /// run of the same domain on this cache), then, when a complete run is recorded, asks the
    /// catalog once what changed since it started (`GET data/?updated_at.after=…`, every page).
    /// Layers that run got and the catalog does not list are answered from the cache without a
    /// request of their own, when it holds them; the others (changed, or new to the list) are
    /// looked up as [`Koop::mirror`] does. When the site
    /// cannot say ([`CatalogCheck::Unsupported`]) every layer is looked up.
    ///
    /// Run it with [`Koop::mirror_run`]; record it with [`Koop::finish_mirror`] when every
    /// layer succeeded, so the next run asks only about what changed after this one started.
    ///
    /// # Errors
    ///
    /// [`Error::Cache`] when the lock cannot be taken; [`Error::Api`] for a failure of the
    /// catalog request other than the site not supporting it (401, rate limit, transport);
    /// an interruption while waiting for the lock.
    pub async fn plan_mirror(&self, layer_ids: impl IntoIterator<Item = u64>) -> Result<MirrorRun> {
        let mut seen = HashSet::new();
        let layer_ids: Vec<u64> = layer_ids
            .into_iter()
            .filter(|id| seen.insert(*id))
            .collect();
        let lock = self.mirror_lock().await?;
        let Some(connection) = self.connection().filter(|_| !self.is_offline()) else {
            return Ok(MirrorRun {
                layer_ids,
                unchanged: HashSet::new(),
                started_at: SystemTime::now(),
                check: CatalogCheck::NotAsked {
                    reason: "offline".to_owned(),
                },
                lock,
            });
        };
        let undated = || SystemTime::now() - UNDATED_MARGIN;
        // The site's clock at the start, less a second: `Date` counts whole seconds.
        let dated = |time: Option<SystemTime>| {
            time.map_or_else(undated, |time| time - Duration::from_secs(1))
        };
        let Some(state) = self.cache().mirror_state(self.domain()) else {
            let started_at = dated(connection.server_time().await);
            return Ok(MirrorRun {
                layer_ids,
                unchanged: HashSet::new(),
                started_at,
                check: CatalogCheck::NotAsked {
                    reason: "no complete run of this domain is recorded in the cache".to_owned(),
                },
                lock,
            });
        };
        let since = state.last_complete_run_started_at;
        match connection.catalog_changes_since(since).await? {
            CatalogChanges::Changed {
                ids,
                server_time,
                pages,
            } => {
                // Only layers the last complete run got were current when it started.
                let unchanged: HashSet<u64> = layer_ids
                    .iter()
                    .copied()
                    .filter(|id| state.layer_ids.contains(id) && !ids.contains(id))
                    .collect();
                Ok(MirrorRun {
                    check: CatalogCheck::Asked {
                        since,
                        changed: layer_ids.iter().filter(|id| ids.contains(id)).count(),
                        pages,
                    },
                    layer_ids,
                    unchanged,
                    started_at: dated(server_time),
                    lock,
                })
            }
            CatalogChanges::Unsupported { reason } => Ok(MirrorRun {
                layer_ids,
                unchanged: HashSet::new(),
                started_at: undated(),
                check: CatalogCheck::Unsupported { reason },
                lock,
            }),
            _ => Ok(MirrorRun {
                layer_ids,
                unchanged: HashSet::new(),
                started_at: undated(),
                check: CatalogCheck::Unsupported {
                    reason: "the catalog answered in a way this koop does not know".to_owned(),
                },
                lock,
            }),
        }
    }

    /// What `run` would do for `layer_id`, without exporting, linking or writing anything: from
    /// the cache alone for a layer the catalog reported unchanged, else from its details
    /// (`GET layers/{id}/`) and the cache.
    ///
    /// # Errors
    ///
    /// As [`Koop::layer_details`]; [`Error::Cache`] when the cache cannot be read.
    pub async fn plan_layer(&self, run: &MirrorRun, layer_id: u64) -> Result<LayerPlan> {
        if run.unchanged.contains(&layer_id)
            && let Some(fetched) = self.fetch_unchanged(layer_id, &koop_export::Quiet)?
        {
            return Ok(LayerPlan::Unchanged { path: fetched.path });
        }
        let details = self.layer_details(layer_id).await?;
        let (key, _) = self.key_for(layer_id, &details)?;
        if let Some(entry) = self.cache().get(&key)? {
            return Ok(LayerPlan::Cached {
                version_id: key.version_id,
                path: entry.path,
            });
        }
        if self.cache().find_same_data(&key)?.is_some() {
            return Ok(LayerPlan::Link {
                version_id: key.version_id,
            });
        }
        let reason = if self.changesets {
            match self.changeset_plan(&key, &details).await {
                Ok(plan) => {
                    return Ok(LayerPlan::Changeset {
                        version_id: key.version_id,
                        from_version: plan.previous.manifest.key.version_id,
                    });
                }
                Err(reason) => reason,
            }
        } else {
            "changesets are turned off".to_owned()
        };
        Ok(LayerPlan::Export {
            version_id: key.version_id,
            kind: details
                .kind
                .as_ref()
                .map_or_else(String::new, ToString::to_string),
            title: details.title,
            reason,
        })
    }

    /// Runs a planned mirror: as [`Koop::mirror`], with the layers the catalog reported
    /// unchanged answered from the cache ([`FetchOutcome::Unchanged`]).
    pub fn mirror_run<'a>(
        &'a self,
        run: &MirrorRun,
        options: MirrorOptions,
        observer: &'a dyn Observer,
    ) -> impl Stream<Item = LayerResult> + Send + 'a {
        self.mirror_stream(
            run.layer_ids.iter().copied(),
            run.unchanged.clone(),
            options,
            observer,
        )
    }

    /// Records a finished run: when `complete` (every layer succeeded, nothing interrupted),
    /// the next run of this domain asks the catalog what changed since this one started.
    /// Otherwise nothing is recorded, and the next run asks from the last complete one.
    /// Releases the domain's mirror lock.
    ///
    /// # Errors
    ///
    /// [`Error::Cache`] when the state file cannot be written.
    pub fn finish_mirror(&self, run: MirrorRun, complete: bool) -> Result<()> {
        let MirrorRun {
            layer_ids,
            started_at,
            lock,
            ..
        } = run;
        if complete && !self.is_offline() {
            let state = MirrorState::new(started_at, layer_ids);
            self.cache()
                .save_mirror_state(self.domain(), &state, &lock)?;
        }
        drop(lock);
        Ok(())
    }

    async fn mirror_lock(&self) -> Result<EntryLock> {
        let mut told = false;
        loop {
            if let Some(lock) = self.cache().try_lock_mirror(self.domain())? {
                return Ok(lock);
            }
            if !told {
                tracing::info!(
                    "another mirror of {} is running on this cache; waiting for it",
                    self.domain()
                );
                told = true;
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
                () = self.cancellation().cancelled() => {
                    return Err(Error::Interrupted {
                        what: format!("waiting for another mirror of {}", self.domain()),
                    });
                }
            }
        }
    }
}
