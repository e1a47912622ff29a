//! The Python package `koop-rs` (`import koop`): the API of the original Python package koop
//! (0.0.7) on koop's engine, through PyO3.
//!
//! This crate is the extension module `koop._koop`; the Python files under `python/koop/` give
//! it the original's module layout (`koop`, `koop.backend.conn`, `koop.metadata`) and add
//! `koop.errors`. Build it with maturin (`pip install maturin`, then `maturin build --release`
//! in `crates/koop-py`); `cargo xtask test` builds the wheel, installs it into a fresh virtual
//! environment under `target/` and runs the pytest suite in `crates/koop-py/tests`.
//!
//! Every blocking call releases the GIL, runs on one tokio runtime shared by the process
//! ([`runtime`]), and looks for Ctrl-C every 100 ms: a `KeyboardInterrupt` cancels koop's work
//! as the CLI's Ctrl-C does (exports in processing are cancelled on the server, a partial
//! download stays in staging for the next call to resume) before it is raised.
//!
//! # Example
//!
//! ```python
//! from koop import get_layer_from_id
//!
//! path = get_layer_from_id(50772, domain="data.linz.govt.nz")  # key from KOORDINATES_API_KEY
//! print(path)  # a pathlib.Path to the layer's GeoPackage, cached under KOOPCACHE_DIR
//! ```
#![deny(missing_docs)]

mod connection;
mod errors;
mod fetch;
mod metadata;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::prelude::*;
use tokio_util::sync::CancellationToken;

/// How often a blocking call looks for Ctrl-C (`PyErr_CheckSignals`).
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// How long an interrupted call waits for koop to clean up (cancel exports on the server)
/// before it raises `KeyboardInterrupt` anyway.
const CLEAN_UP_LIMIT: Duration = Duration::from_secs(15);

/// The process's runtime and the process id it was built in.
static RUNTIME: Mutex<Option<(u32, Arc<tokio::runtime::Runtime>)>> = Mutex::new(None);

/// The tokio runtime every call of this process runs on (multi-threaded, at most 4 workers),
/// built on first use. A child made by `fork()` (multiprocessing's default start method on
/// Linux) has no runtime threads, so it builds its own rather than wait on its parent's.
///
/// # Errors
///
/// `KoopError` when the operating system refuses the runtime's threads.
pub fn runtime() -> PyResult<Arc<tokio::runtime::Runtime>> {
    let pid = std::process::id();
    let mut slot = RUNTIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((owner, runtime)) = slot.as_ref()
        && *owner == pid
    {
        return Ok(Arc::clone(runtime));
    }
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("koop")
        .enable_all()
        .build()
        .map_err(|error| errors::koop_error(format!("cannot start koop's runtime: {error}")))?;
    let runtime = Arc::new(runtime);
    if let Some(inherited) = slot.replace((pid, Arc::clone(&runtime))) {
        // Inherited across fork(): its threads do not exist here, and dropping it would wait
        // for them.
        std::mem::forget(inherited);
    }
    Ok(runtime)
}

/// Runs `future` on the shared runtime and waits for it with the GIL released, looking for
/// Ctrl-C every [`SIGNAL_CHECK`]. On Ctrl-C, `cancel` (when given) is cancelled and the call
/// waits up to [`CLEAN_UP_LIMIT`] for the work to stop cleanly; without it, the task is
/// aborted. Then the `KeyboardInterrupt` is raised.
pub(crate) fn wait<T: Send + 'static>(
    py: Python<'_>,
    cancel: Option<&CancellationToken>,
    future: impl Future<Output = T> + Send + 'static,
) -> PyResult<T> {
    let runtime = runtime()?;
    let mut task = runtime.spawn(future);
    loop {
        let waited = py.detach(|| {
            runtime.block_on(async { tokio::time::timeout(SIGNAL_CHECK, &mut task).await })
        });
        match waited {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(_)) => {
                return Err(errors::koop_error(
                    "koop's task stopped without an answer (a panic); please report it",
                ));
            }
            Err(_elapsed) => {
                if let Err(interrupt) = py.check_signals() {
                    match cancel {
                        Some(cancel) => {
                            cancel.cancel();
                            let _ = py.detach(|| {
                                runtime.block_on(async {
                                    tokio::time::timeout(CLEAN_UP_LIMIT, &mut task).await
                                })
                            });
                        }
                        None => task.abort(),
                    }
                    return Err(interrupt);
                }
            }
        }
    }
}

/// The extension module `koop._koop`.
#[pymodule]
fn _koop(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    module.add_class::<connection::KoordinatesConnection>()?;
    module.add_class::<metadata::DublinCoreMetadata>()?;
    module.add_class::<fetch::Koop>()?;
    module.add_class::<fetch::LayerResult>()?;
    module.add_function(wrap_pyfunction!(fetch::get_layer_from_id, module)?)?;
    module.add_function(wrap_pyfunction!(fetch::mirror, module)?)?;
    Ok(())
}
