//! A layer version's GeoPackage built from the cached GeoPackage of an earlier version plus the
//! WFS changeset between the two, instead of a full export.
//!
//! Koordinates publishes, for layers and tables with a primary key, a changeset service
//! (`wfs-changesets` in a layer's `services`): WFS `GetFeature` on `layer-{id}-changeset` with
//! `viewparams=from:{time};to:{time}` lists every feature the versions published in between
//! inserted, updated or deleted (`__change__`), one row per feature (help.koordinates.com, "Use
//! Changesets via WFS"). [`build`] copies the earlier version's GeoPackage (a reflink where the
//! file system has one), reads the changeset page by page (`startIndex` advancing by the
//! features each page actually held, so a server that caps pages truncates nothing) and applies
//! each row by primary key in one SQLite transaction. GDAL's R-tree and feature-count triggers
//! keep the spatial index and `gpkg_ogr_contents` right (the `ST_*` functions they call are
//! registered here); the extent in `gpkg_contents` is refreshed from the R-tree. The result
//! passes SQLite's `quick_check` or the build fails.
//!
//! Any failure is an [`Error`] and leaves the earlier file untouched: the caller discards the
//! copy and exports the layer in full. This crate knows no cache: it reads one file and writes
//! another; deciding when a changeset applies and publishing the result is the facade's job.
//!
//! # Example
//!
//! ```no_run
//! use koop_api::{ChangesetQuery, Epsg, KoordinatesConnection};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let connection = KoordinatesConnection::new(None, Some("data.linz.govt.nz"), None)?;
//! let query = ChangesetQuery {
//!     layer_id: 50804,
//!     table: false,
//!     from: "2025-05-09T22:27:46.308908Z".into(),
//!     to: "2025-05-16T22:27:46.308908Z".into(),
//!     crs: Some(Epsg::NZTM2000),
//!     sort_by: vec!["id".into()],
//!     page_size: 1000,
//! };
//! let build = koop_changeset::build(
//!     &connection,
//!     &query,
//!     "titles-v1.gpkg".as_ref(),
//!     "titles-v2.gpkg".as_ref(),
//! )
//! .await?;
//! println!("+{} ~{} -{}: {} features", build.inserts, build.updates, build.deletes, build.feature_count);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

use std::path::Path;

use koop_api::{ChangesetQuery, KoordinatesConnection};
use serde_json::Value;

pub use apply::Counts;
pub use error::{Error, Result};

mod apply;
mod error;
mod gpkg;

/// Pages read at most (with 1,000 features a page: 100 million changed features).
const MAX_PAGES: u64 = 100_000;

/// What [`build`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChangesetBuild {
    /// Features inserted.
    pub inserts: u64,
    /// Features updated.
    pub updates: u64,
    /// Features deleted.
    pub deletes: u64,
    /// Bytes of the changeset's pages.
    pub bytes: u64,
    /// Pages requested.
    pub pages: u64,
    /// Features in the built GeoPackage's table.
    pub feature_count: u64,
}

enum Message {
    Page(Vec<Value>),
    Finish,
}

/// Builds `target` from `previous` (the GeoPackage of the version published at `query.from`)
/// and the changeset `query` asks for; `query.sort_by` must be the layer's primary key fields.
///
/// `target` is replaced; `previous` is only read. Memory holds at most three pages.
///
/// # Errors
///
/// [`Error::Api`] when a page cannot be fetched (after the connection's retries) or read;
/// [`Error::Unsupported`] when the GeoPackage cannot take a changeset (no feature table, a key
/// column missing, Z or M geometries); [`Error::Mismatch`] when a row does not fit the cached
/// version; [`Error::Io`], [`Error::Sqlite`], [`Error::Corrupt`], [`Error::TooManyPages`].
/// Dropping the future abandons the build; the caller removes `target`.
pub async fn build(
    connection: &KoordinatesConnection,
    query: &ChangesetQuery,
    previous: &Path,
    target: &Path,
) -> Result<ChangesetBuild> {
    let layer_id = query.layer_id;
    let (from, to) = (previous.to_path_buf(), target.to_path_buf());
    blocking(move || {
        let _ = std::fs::remove_file(&to);
        reflink_copy::reflink_or_copy(&from, &to)
            .map(|_| ())
            .map_err(|source| Error::Io {
                action: "copy the cached GeoPackage to",
                path: to,
                source,
            })
    })
    .await?;
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Message>(2);
    let (path, key) = (target.to_path_buf(), query.sort_by.clone());
    let worker = tokio::task::spawn_blocking(move || -> Result<(apply::Counts, u64)> {
        let mut applier = apply::Applier::open(&path, layer_id, &key)?;
        while let Some(message) = receiver.blocking_recv() {
            match message {
                Message::Page(features) => {
                    for feature in &features {
                        applier.apply(feature)?;
                    }
                }
                Message::Finish => {
                    let counts = applier.counts;
                    let feature_count = applier.finish()?;
                    return Ok((counts, feature_count));
                }
            }
        }
        Err(Error::Interrupted { layer_id })
    });
    let fetched = fetch_pages(connection, query, &sender).await;
    let finished = match &fetched {
        Ok(_) => sender.send(Message::Finish).await.is_ok(),
        Err(_) => false,
    };
    drop(sender);
    let outcome = worker.await.unwrap_or(Err(Error::Interrupted { layer_id }));
    // An applier that failed stops taking pages: its error is the one to report; one that was
    // only left without its pages reports the fetch's error.
    let ((pages, bytes), (counts, feature_count)) = match (fetched, outcome) {
        (_, Err(error)) if !matches!(error, Error::Interrupted { .. }) => return Err(error),
        (Err(error), _) | (Ok(_), Err(error)) => return Err(error),
        (Ok(totals), Ok(result)) if finished => (totals, result),
        (Ok(_), Ok(_)) => return Err(Error::Interrupted { layer_id }),
    };
    let file = std::fs::File::open(target).and_then(|file| file.sync_all());
    file.map_err(|source| Error::Io {
        action: "sync",
        path: target.to_path_buf(),
        source,
    })?;
    Ok(ChangesetBuild {
        inserts: counts.inserts,
        updates: counts.updates,
        deletes: counts.deletes,
        bytes,
        pages,
        feature_count,
    })
}

/// Reads the pages of `query` and hands them to the applier; returns `(pages, bytes)`. Stops at
/// the first empty page, or once `numberMatched` features have arrived.
async fn fetch_pages(
    connection: &KoordinatesConnection,
    query: &ChangesetQuery,
    sender: &tokio::sync::mpsc::Sender<Message>,
) -> Result<(u64, u64)> {
    let layer_id = query.layer_id;
    let (mut start, mut pages, mut bytes) = (0_u64, 0_u64, 0_u64);
    loop {
        if pages >= MAX_PAGES {
            return Err(Error::TooManyPages { layer_id, pages });
        }
        let page = connection
            .changeset_page(query, start)
            .await
            .map_err(|source| Error::Api { layer_id, source })?;
        pages += 1;
        bytes += page.bytes;
        let returned = page.features.len() as u64;
        if returned == 0 {
            return Ok((pages, bytes));
        }
        start += returned;
        if sender.send(Message::Page(page.features)).await.is_err() {
            // The applier stopped on an error; the caller reports it.
            return Ok((pages, bytes));
        }
        if page.number_matched.is_some_and(|matched| start >= matched) {
            return Ok((pages, bytes));
        }
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|_| Err(Error::Interrupted { layer_id: 0 }))
}
