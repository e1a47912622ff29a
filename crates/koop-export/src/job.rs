//! The export job: validate → create → poll → download (with resume).

use std::path::Path;
use std::time::{Duration, Instant};

use koop_api::{Export, ExportState, KoordinatesConnection, LayerDetails};
use tokio::io::{AsyncSeekExt, AsyncWriteExt, BufWriter};

use crate::error::{Error, Result};
use crate::extract::{Extraction, extract};
use crate::observe::{LayerEvent, Observer};
use crate::spec::{ExportOptions, ExportSpec};

/// Progress is reported about every this many bytes of a download.
const REPORT_EVERY: u64 = 1 << 20;
/// Write buffer of the download: large writes keep `tokio::fs` off the hot path.
const WRITE_BUFFER: usize = 1 << 20;

/// Runs export jobs against one Koordinates site. Cheap to clone; clones share the connection.
#[derive(Debug, Clone)]
pub struct Exporter {
    connection: KoordinatesConnection,
    options: ExportOptions,
}

/// The wait before looking at a processing export again: the previous wait grown by
/// `poll_factor` (at least `first_poll`, at most `max_poll`), or sooner when `progress` says the
/// export will finish sooner, but never sooner than `first_poll`.
pub(crate) fn next_poll(
    options: &ExportOptions,
    previous: Duration,
    elapsed: Duration,
    progress: Option<f64>,
) -> Duration {
    let backoff = previous
        .mul_f64(options.poll_factor)
        .clamp(options.first_poll, options.max_poll);
    match progress {
        Some(done) if done > 0.01 && done < 1.0 && !elapsed.is_zero() => {
            let per_second = done / elapsed.as_secs_f64();
            let remaining = Duration::from_secs_f64(((1.0 - done) / per_second).min(86_400.0));
            remaining.clamp(options.first_poll, backoff.max(options.first_poll))
        }
        _ => backoff,
    }
}

impl Exporter {
    /// An exporter using `connection` with `options`.
    pub fn new(connection: KoordinatesConnection, options: ExportOptions) -> Self {
        Self {
            connection,
            options,
        }
    }

    /// The connection in use.
    pub fn connection(&self) -> &KoordinatesConnection {
        &self.connection
    }

    /// The options in use.
    pub fn options(&self) -> &ExportOptions {
        &self.options
    }

    /// Validates (`POST exports/validate/`) and creates (`POST exports/`) an export of the layer.
    /// The returned export may already be complete: Koordinates reuses identical recent exports.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidExport`] with the server's reasons; [`Error::Api`].
    pub async fn create(
        &self,
        details: &LayerDetails,
        spec: &ExportSpec,
        observer: &dyn Observer,
    ) -> Result<Export> {
        let layer_id = details.layer_id().unwrap_or_default();
        let api = |source| Error::Api { layer_id, source };
        let request = spec.request(details);
        observer.layer_event(layer_id, LayerEvent::Validating);
        let validation = self
            .connection
            .validate_export(&request)
            .await
            .map_err(api)?;
        if !validation.is_valid {
            return Err(Error::InvalidExport {
                layer_id,
                reasons: validation.reasons(),
            });
        }
        let export = match self.connection.create_export(&request).await {
            Ok(export) => export,
            Err(koop_api::Error::InvalidExport { reasons, .. }) => {
                return Err(Error::InvalidExport { layer_id, reasons });
            }
            Err(source) => return Err(api(source)),
        };
        tracing::debug!(layer_id, export_id = export.id, state = %export.state, "export created");
        observer.layer_event(
            layer_id,
            LayerEvent::Created {
                export_id: export.id,
                size_estimate: validation
                    .size_estimate_zipped
                    .filter(|bytes| *bytes > 0)
                    .or(export.size_estimate_zipped),
            },
        );
        Ok(export)
    }

    /// Polls `exports/{id}/` until the export is complete. Looks soon after creation, then backs
    /// off, looking sooner when `progress` predicts completion; past the deadline the export is
    /// cancelled on the server.
    ///
    /// # Errors
    ///
    /// [`Error::ExportFailed`] when it ends `error`, `cancelled` or `gone`;
    /// [`Error::DeadlineExceeded`]; [`Error::Api`].
    pub async fn wait(
        &self,
        layer_id: u64,
        export: Export,
        observer: &dyn Observer,
    ) -> Result<Export> {
        let started = Instant::now();
        let mut export = export;
        let mut delay = Duration::ZERO;
        loop {
            match &export.state {
                ExportState::Complete => {
                    observer.layer_event(
                        layer_id,
                        LayerEvent::Complete {
                            export_id: export.id,
                            size_estimate: export.size_estimate_zipped,
                        },
                    );
                    return Ok(export);
                }
                ExportState::Processing | ExportState::Other(_) => {}
                state => {
                    return Err(Error::ExportFailed {
                        layer_id,
                        export_id: export.id,
                        state: state.clone(),
                    });
                }
            }
            observer.layer_event(
                layer_id,
                LayerEvent::Processing {
                    export_id: export.id,
                    progress: export.progress,
                },
            );
            let elapsed = started.elapsed();
            if elapsed >= self.options.deadline {
                if let Err(error) = self.connection.cancel_export(export.id).await {
                    tracing::warn!(
                        layer_id,
                        export_id = export.id,
                        "could not cancel the export: {error}"
                    );
                }
                return Err(Error::DeadlineExceeded {
                    layer_id,
                    export_id: export.id,
                    waited: elapsed,
                });
            }
            delay = next_poll(&self.options, delay, elapsed, export.progress)
                .min(self.options.deadline.saturating_sub(elapsed));
            tokio::time::sleep(delay).await;
            export = self
                .connection
                .export(export.id)
                .await
                .map_err(|source| Error::Api { layer_id, source })?;
        }
    }

    /// Downloads a complete export's ZIP to `zip_path`, resuming with a Range request from the
    /// bytes on disk when the connection breaks, up to `resume_attempts` times. Returns the size.
    ///
    /// # Errors
    ///
    /// [`Error::Download`] when every resume failed; [`Error::IncompleteDownload`];
    /// [`Error::Io`] (e.g. a full disk); [`Error::Api`].
    pub async fn download(
        &self,
        layer_id: u64,
        export: &Export,
        zip_path: &Path,
        observer: &dyn Observer,
    ) -> Result<u64> {
        let io = |action| Error::io(layer_id, action, zip_path);
        let file = tokio::fs::File::create(zip_path)
            .await
            .map_err(io("creating"))?;
        let mut file = BufWriter::with_capacity(WRITE_BUFFER, file);
        let mut received = 0_u64;
        let mut total = None;
        let mut attempt = 0;
        loop {
            match self
                .download_from(
                    layer_id,
                    export,
                    &mut file,
                    &mut received,
                    &mut total,
                    observer,
                )
                .await
            {
                Ok(()) => break,
                Err(DownloadFailure::Io(error)) => return Err(error),
                Err(DownloadFailure::Api(koop_api::Error::RangeNotSatisfiable { .. }))
                    if total == Some(received) =>
                {
                    break;
                }
                Err(DownloadFailure::Api(source))
                    if source.is_transient() && attempt < self.options.resume_attempts =>
                {
                    attempt += 1;
                    tracing::warn!(
                        layer_id,
                        export_id = export.id,
                        received,
                        attempt,
                        "download broke, resuming: {source}"
                    );
                    observer.layer_event(
                        layer_id,
                        LayerEvent::Resuming {
                            offset: received,
                            attempt,
                        },
                    );
                    tokio::time::sleep(Duration::from_millis(200) * attempt).await;
                }
                Err(DownloadFailure::Api(source)) if attempt > 0 || source.is_transient() => {
                    return Err(Error::Download {
                        layer_id,
                        export_id: export.id,
                        attempts: attempt + 1,
                        source,
                    });
                }
                Err(DownloadFailure::Api(source)) => return Err(Error::Api { layer_id, source }),
            }
        }
        file.flush().await.map_err(io("writing"))?;
        file.get_mut().sync_all().await.map_err(io("syncing"))?;
        if let Some(expected) = total
            && expected != received
        {
            return Err(Error::IncompleteDownload {
                layer_id,
                export_id: export.id,
                expected,
                received,
            });
        }
        Ok(received)
    }

    /// One request of a download, appending to `file` from `received`.
    async fn download_from(
        &self,
        layer_id: u64,
        export: &Export,
        file: &mut BufWriter<tokio::fs::File>,
        received: &mut u64,
        total: &mut Option<u64>,
        observer: &dyn Observer,
    ) -> std::result::Result<(), DownloadFailure> {
        let io = |action| {
            move |source| {
                DownloadFailure::Io(Error::Io {
                    layer_id,
                    action,
                    path: "the export ZIP".into(),
                    source,
                })
            }
        };
        let mut download = self
            .connection
            .download_export(export, *received)
            .await
            .map_err(DownloadFailure::Api)?;
        if download.offset() != *received {
            // The server ignored the range and sends the whole file again: start over.
            file.flush().await.map_err(io("writing"))?;
            file.get_mut().set_len(0).await.map_err(io("truncating"))?;
            file.get_mut()
                .seek(std::io::SeekFrom::Start(0))
                .await
                .map_err(io("seeking"))?;
            *received = 0;
        }
        if total.is_none() {
            *total = download.total_size();
        }
        let mut reported = *received;
        loop {
            let chunk = match download.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => return Ok(()),
                Err(error) => {
                    // Keep what arrived: the resume starts after it.
                    file.flush().await.map_err(io("writing"))?;
                    return Err(DownloadFailure::Api(error));
                }
            };
            file.write_all(&chunk).await.map_err(io("writing"))?;
            *received += chunk.len() as u64;
            if *received - reported >= REPORT_EVERY {
                reported = *received;
                observer.layer_event(
                    layer_id,
                    LayerEvent::Downloading {
                        received: *received,
                        total: *total,
                    },
                );
            }
        }
    }

    /// Extracts the layer from a downloaded export ZIP into `dir`; see [`extract`].
    ///
    /// # Errors
    ///
    /// As [`extract`].
    pub async fn extract(
        &self,
        layer_id: u64,
        spec: &ExportSpec,
        zip_path: &Path,
        dir: &Path,
        mosaic_name: &str,
        observer: &dyn Observer,
    ) -> Result<Extraction> {
        extract(
            layer_id,
            &spec.format,
            zip_path,
            dir,
            mosaic_name,
            self.options.max_file_bytes,
            observer,
        )
        .await
    }

    /// The whole job for one layer into `dir`: create, wait, download to `dir/export.zip`,
    /// extract, remove the ZIP. `mosaic_name` names the directory and VRT of a multi-tile
    /// raster. Callers that file the result by version should check the layer's version again
    /// between [`Exporter::wait`] and [`Exporter::download`], as `koop` does.
    ///
    /// # Errors
    ///
    /// Any error of the steps.
    pub async fn run(
        &self,
        details: &LayerDetails,
        spec: &ExportSpec,
        dir: &Path,
        mosaic_name: &str,
        observer: &dyn Observer,
    ) -> Result<Extraction> {
        let layer_id = details.layer_id().unwrap_or_default();
        let export = self.create(details, spec, observer).await?;
        let export = self.wait(layer_id, export, observer).await?;
        let zip = dir.join("export.zip");
        self.download(layer_id, &export, &zip, observer).await?;
        let extraction = self
            .extract(layer_id, spec, &zip, dir, mosaic_name, observer)
            .await?;
        tokio::fs::remove_file(&zip)
            .await
            .map_err(Error::io(layer_id, "removing", &zip))?;
        Ok(extraction.with_export_id(export.id))
    }
}

/// A failed download request: an API error may be resumed, a file error may not.
enum DownloadFailure {
    Api(koop_api::Error),
    Io(Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polling_backs_off_and_follows_progress() {
        let options = ExportOptions::default();
        let first = next_poll(&options, Duration::ZERO, Duration::ZERO, Some(0.0));
        assert_eq!(first, Duration::from_millis(250));
        let second = next_poll(&options, first, Duration::from_millis(250), None);
        assert_eq!(second, Duration::from_millis(375));
        let capped = next_poll(
            &options,
            Duration::from_secs(60),
            Duration::from_secs(600),
            None,
        );
        assert_eq!(capped, Duration::from_secs(15));
        // Two thirds done after 2 s: one more second to go, sooner than the 3 s backoff.
        let predicted = next_poll(
            &options,
            Duration::from_secs(2),
            Duration::from_secs(2),
            Some(2.0 / 3.0),
        );
        assert!(
            (predicted.as_secs_f64() - 1.0).abs() < 0.01,
            "{predicted:?}"
        );
        // Nearly done: never sooner than the first poll.
        let floor = next_poll(
            &options,
            Duration::from_secs(1),
            Duration::from_secs(10),
            Some(0.999),
        );
        assert_eq!(floor, Duration::from_millis(250));
        // A slow start predicts far ahead: the backoff still looks sooner.
        let slow = next_poll(
            &options,
            Duration::from_secs(1),
            Duration::from_secs(5),
            Some(0.02),
        );
        assert_eq!(slow, Duration::from_millis(1500));
    }
}
