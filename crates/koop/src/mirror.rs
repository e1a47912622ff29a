//! Mirroring many layers at once.

use std::collections::{HashSet, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

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
    /// Bytes of the layers downloaded.
    pub bytes_downloaded: u64,
    /// Layers that failed, with their errors.
    pub failed: Vec<(u64, Error)>,
}

impl MirrorSummary {
    /// Counts one result.
    pub fn add(&mut self, result: LayerResult) {
        match result.result {
            Ok(fetched) => match fetched.outcome {
                FetchOutcome::Downloaded => {
                    self.downloaded += 1;
                    self.bytes_downloaded += fetched.entry.manifest.size;
                }
                FetchOutcome::Cached => self.cached += 1,
                FetchOutcome::Linked => self.linked += 1,
                FetchOutcome::Offline => self.offline += 1,
            },
            Err(error) => self.failed.push((result.layer_id, error)),
        }
    }

    /// Layers that ended with a file on disk.
    pub fn succeeded(&self) -> usize {
        self.downloaded + self.cached + self.linked + self.offline
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
            self.lookups.push(Box::pin(async move {
                let started = Instant::now();
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
            missing: VecDeque::new(),
            lookups: FuturesUnordered::new(),
            fetches: FuturesUnordered::new(),
        }
    }
}
