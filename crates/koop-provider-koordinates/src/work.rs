//! SQLite work off the async runtime, bounded: every call waits for one of a fixed number of
//! permits before it takes a blocking thread, so no load can grow the blocking pool without end.
//!
//! Two classes, with permits of their own, so that a short query never waits behind bulk work:
//! queries (counts, pages, ids: [`Work::run`]) and the chunks of feature streams
//! ([`Work::run_bulk`]: hundreds of `/geojson` clients starting at once queue among themselves).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use koop_provider::ProviderError;
use tokio::sync::Semaphore;

use crate::gpkg::past_deadline;

/// Permits for blocking SQLite work, shared by every layer of a provider.
#[derive(Debug, Clone)]
pub(crate) struct Work {
    queries: Arc<Semaphore>,
    bulk: Arc<Semaphore>,
    /// Features read by streams and not yet taken by their readers, over every stream of the
    /// provider: what slow readers hold (see [`crate::stream`]).
    held: Arc<AtomicUsize>,
}

impl Work {
    /// At most `queries` query calls and `bulk` stream chunks at once.
    pub(crate) fn new(queries: usize, bulk: usize) -> Self {
        Self {
            queries: Arc::new(Semaphore::new(queries.max(1))),
            bulk: Arc::new(Semaphore::new(bulk.max(1))),
            held: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Features that streams hold for their readers now.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Counts `features` more held by a stream, until the returned guard is dropped or has
    /// given each back with [`Held::take_one`]. A guard travels with its features, so features
    /// dropped anywhere (a stream whose client left, a read-ahead aborted mid-chunk) are no
    /// longer counted.
    pub(crate) fn hold(&self, features: usize) -> Held {
        self.held.fetch_add(features, Ordering::Relaxed);
        Held {
            held: self.held.clone(),
            count: features,
        }
    }

    /// Runs query `work` on a blocking thread once a query permit is free, waiting for one
    /// until `deadline`.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        deadline: Option<std::time::Instant>,
        work: impl FnOnce() -> Result<T, ProviderError> + Send + 'static,
    ) -> Result<T, ProviderError> {
        Self::run_with(&self.queries, deadline, work).await
    }

    /// A query permit, when one is free now (for work that helps a running query and is
    /// worth doing only without waiting).
    pub(crate) fn try_query_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.queries.clone().try_acquire_owned().ok()
    }

    /// Runs one chunk of a stream on a blocking thread once a bulk permit is free.
    pub(crate) async fn run_bulk<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, ProviderError> + Send + 'static,
    ) -> Result<T, ProviderError> {
        Self::run_with(&self.bulk, None, work).await
    }

    /// Builds something once in the background on a bulk permit (an in-memory index; queries
    /// go on without it meanwhile), then hands `finish` what was built: `None` when `build`
    /// found it cannot be built, or failed (logged as a warning naming `what`).
    pub(crate) fn build_in_background<T: Send + 'static>(
        &self,
        what: String,
        build: impl FnOnce() -> Result<Option<T>, ProviderError> + Send + 'static,
        finish: impl FnOnce(Option<T>) + Send + 'static,
    ) {
        let work = self.clone();
        tokio::spawn(async move {
            let outcome = work.run_bulk(build).await.unwrap_or_else(|error| {
                tracing::warn!("{what} could not be built: {error}");
                None
            });
            finish(outcome);
        });
    }

    async fn run_with<T: Send + 'static>(
        permits: &Arc<Semaphore>,
        deadline: Option<std::time::Instant>,
        work: impl FnOnce() -> Result<T, ProviderError> + Send + 'static,
    ) -> Result<T, ProviderError> {
        let acquire = permits.clone().acquire_owned();
        let permit = match deadline {
            Some(deadline) => {
                tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), acquire)
                    .await
                    .map_err(|_| past_deadline())?
            }
            None => acquire.await,
        }
        .map_err(|error| {
            ProviderError::internal("the SQLite work queue closed", Some(Arc::new(error)))
        })?;
        tokio::task::spawn_blocking(move || {
            let result = work();
            drop(permit);
            result
        })
        .await
        .map_err(|error| {
            ProviderError::internal(
                "a background task of this server failed",
                Some(Arc::new(error)),
            )
        })?
    }
}

/// Features a stream holds, counted in [`Work::held`] while this guard lives.
#[derive(Debug)]
pub(crate) struct Held {
    held: Arc<AtomicUsize>,
    count: usize,
}

impl Held {
    /// One feature given to the reader: no longer held.
    pub(crate) fn take_one(&mut self) {
        if self.count > 0 {
            self.count -= 1;
            self.held.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.held.fetch_sub(self.count, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::Work;

    #[test]
    fn held_features_are_counted_until_taken_or_dropped() {
        let work = Work::new(1, 1);
        let mut first = work.hold(10);
        let second = work.hold(5);
        assert_eq!(work.held(), 15);
        for _ in 0..3 {
            first.take_one();
        }
        assert_eq!(work.held(), 12);
        drop(second);
        assert_eq!(work.held(), 7);
        for _ in 0..20 {
            first.take_one();
        }
        assert_eq!(work.held(), 0, "never below what was held");
        drop(first);
        assert_eq!(work.held(), 0);
    }

    #[tokio::test]
    async fn a_chunk_whose_reader_left_while_it_was_read_is_not_counted() {
        let work = Work::new(1, 1);
        let (started, started_rx) = std::sync::mpsc::channel();
        let (finish, finish_rx) = std::sync::mpsc::channel::<()>();
        let counted = work.clone();
        let task = tokio::spawn(async move {
            counted
                .clone()
                .run_bulk(move || {
                    let _ = started.send(());
                    let _ = finish_rx.recv();
                    Ok(counted.hold(128))
                })
                .await
        });
        // The client leaves while the blocking read runs: the task is aborted, the read
        // finishes on its thread, and its features are dropped there.
        tokio::task::spawn_blocking(move || started_rx.recv())
            .await
            .ok();
        task.abort();
        let _ = task.await;
        let _ = finish.send(());
        for _ in 0..200 {
            if work.held() == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(work.held(), 0);
    }
}
