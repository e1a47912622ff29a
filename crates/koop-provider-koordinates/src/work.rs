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

    /// Counts `features` more held by a stream.
    pub(crate) fn hold(&self, features: usize) {
        self.held.fetch_add(features, Ordering::Relaxed);
    }

    /// Counts `features` a stream no longer holds.
    pub(crate) fn release(&self, features: usize) {
        self.held.fetch_sub(features, Ordering::Relaxed);
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

    /// Runs one chunk of a stream on a blocking thread once a bulk permit is free.
    pub(crate) async fn run_bulk<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, ProviderError> + Send + 'static,
    ) -> Result<T, ProviderError> {
        Self::run_with(&self.bulk, None, work).await
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
