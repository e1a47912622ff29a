//! SQLite work off the async runtime, bounded: every call waits for one of a fixed number of
//! permits before it takes a blocking thread, so no load can grow the blocking pool without end
//! or starve a short query behind slow ones.

use std::sync::Arc;

use koop_provider::ProviderError;
use tokio::sync::Semaphore;

use crate::gpkg::past_deadline;

/// Permits for blocking SQLite work, shared by every layer of a provider.
#[derive(Debug, Clone)]
pub(crate) struct Work {
    permits: Arc<Semaphore>,
}

impl Work {
    /// At most `threads` SQLite calls at once.
    pub(crate) fn new(threads: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(threads.max(1))),
        }
    }

    /// Runs `work` on a blocking thread once a permit is free, waiting for one until
    /// `deadline`.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        deadline: Option<std::time::Instant>,
        work: impl FnOnce() -> Result<T, ProviderError> + Send + 'static,
    ) -> Result<T, ProviderError> {
        let acquire = self.permits.clone().acquire_owned();
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
