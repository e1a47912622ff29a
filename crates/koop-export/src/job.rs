//! The export job: validate → create → poll → download (with resume).

use std::path::Path;
use std::time::{Duration, Instant};

use koop_api::{Export, ExportState, KoordinatesConnection, LayerDetails};
use tokio::io::{AsyncSeekExt, AsyncWriteExt, BufWriter};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::extract::{Extraction, extract};
use crate::observe::{LayerEvent, Observer};
use crate::spec::{ExportOptions, ExportSpec};

/// Progress is reported about every this many bytes of a download.
const REPORT_EVERY: u64 = 1 << 20;
/// Write buffer of the download: large writes keep `tokio::fs` off the hot path.
const WRITE_BUFFER: usize = 1 << 20;

/// Pages of `GET exports/` searched for an export of the same name before creating one.
const OWN_EXPORT_PAGES: usize = 5;
/// Longest wait for the server to cancel an export when interrupted.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the export a job waits for came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportOrigin {
    /// Created by this job: an interrupted job cancels it on the server.
    Created,
    /// An export of the same name made earlier (by a run that crashed or was killed), still
    /// processing or complete: reused, and left alone when interrupted.
    Reused,
}

/// Runs export jobs against one Koordinates site. Cheap to clone; clones share the connection
/// and the cancellation token.
#[derive(Debug, Clone)]
pub struct Exporter {
    connection: KoordinatesConnection,
    options: ExportOptions,
    cancel: CancellationToken,
}

/// Without `progress`, the wait from `elapsed` to the next look on a grid that holds every
/// whole second (so koop is never later than a one-second poller): every `first_poll` (250 ms)
/// for the first 2 s, every 500 ms to 5 s, then every `slow_poll` (1 s); after two minutes a
/// twentieth of the time waited, up to `max_poll`, so an hour-long export is not asked about
/// thousands of times.
fn without_progress(options: &ExportOptions, elapsed: Duration) -> Duration {
    let step = if elapsed < Duration::from_secs(2) {
        options.first_poll
    } else if elapsed < Duration::from_secs(5) {
        options
            .first_poll
            .max(Duration::from_millis(500))
            .min(options.slow_poll)
    } else if elapsed < Duration::from_secs(120) {
        options.slow_poll
    } else {
        return (elapsed / 20).clamp(options.slow_poll, options.max_poll.max(options.slow_poll));
    };
    if step.is_zero() {
        return options.slow_poll;
    }
    // The next multiple of `step` after `elapsed`.
    let step_ns = step.as_nanos().max(1);
    let next = (elapsed.as_nanos() / step_ns + 1) * step_ns;
    let wait = next - elapsed.as_nanos();
    Duration::from_nanos(u64::try_from(wait).unwrap_or(u64::MAX))
}

/// When to look at a processing export again (`GET exports/{id}/`).
///
/// - With `progress`: the rate since the first look predicts the end. More than `slow_poll`
///   away, the next look is half way there (a longer baseline refines a rate read from coarse
///   progress steps); closer, it is half a `settle_poll` past the end; never more than
///   `max_poll` away. Once the prediction says done and the
///   export is not `complete` yet, looks come `settle_poll` apart, doubling up to `slow_poll`:
///   close to the end, never hammering.
/// - Without `progress`: on a grid that holds every whole second (see `without_progress`).
///
/// The deadline bounds every wait.
#[derive(Debug, Clone)]
pub(crate) struct PollSchedule {
    options: ExportOptions,
    /// The first look that carried a progress: when, and how far.
    first: Option<(Duration, f64)>,
    /// Whether every progress seen was a whole percent: the server rounds it down to 1 %
    /// steps, so the true progress may be up to a step further.
    whole_percents: bool,
    /// The current wait while the prediction says done.
    settling: Option<Duration>,
}

impl PollSchedule {
    pub(crate) fn new(options: ExportOptions) -> Self {
        Self {
            options,
            first: None,
            whole_percents: true,
            settling: None,
        }
    }

    /// The predicted time left, from the progress seen at `elapsed` and the first one seen.
    fn remaining(&mut self, elapsed: Duration, progress: Option<f64>) -> Option<Duration> {
        let done = progress.filter(|done| done.is_finite())?.clamp(0.0, 1.0);
        self.whole_percents &= ((done * 100.0).round() - done * 100.0).abs() < 1e-6;
        let (since, start) = *self.first.get_or_insert((elapsed, done));
        if done >= 1.0 {
            return Some(Duration::ZERO);
        }
        let span = elapsed.saturating_sub(since).as_secs_f64();
        let gained = done - start;
        if span <= 0.0 || gained <= 0.0 {
            return None;
        }
        // The earliest end the progress allows: with whole percents the true progress may be up
        // to a step past the one reported (arriving early costs a settle look; late, the whole
        // overshoot).
        let step = if self.whole_percents { 0.01 } else { 0.0 };
        let left = (1.0 - done - step).max(0.0);
        Some(Duration::from_secs_f64(
            (left * span / gained).min(86_400.0),
        ))
    }

    /// The wait before the next look, `elapsed` after creation, with the export's `progress`.
    pub(crate) fn next(&mut self, elapsed: Duration, progress: Option<f64>) -> Duration {
        let remaining = self.remaining(elapsed, progress);
        let options = &self.options;
        let wait = match remaining {
            Some(remaining) if remaining > options.slow_poll => {
                // Far from the end: look half way, where a longer baseline refines the rate
                // (progress is reported in coarse steps).
                self.settling = None;
                (remaining / 2).min(options.max_poll)
            }
            Some(remaining) if remaining > options.settle_poll => {
                self.settling = None;
                // Just past the predicted end: arriving early costs a settle look.
                (remaining + options.settle_poll / 2).min(options.max_poll)
            }
            Some(_) => {
                let wait = self.settling.map_or(options.settle_poll, |wait| {
                    (wait * 2).min(options.slow_poll.max(options.settle_poll))
                });
                self.settling = Some(wait);
                wait
            }
            None => {
                self.settling = None;
                without_progress(options, elapsed)
            }
        };
        wait.min(options.deadline.saturating_sub(elapsed))
    }
}

impl Exporter {
    /// An exporter using `connection` with `options`.
    pub fn new(connection: KoordinatesConnection, options: ExportOptions) -> Self {
        Self {
            connection,
            options,
            cancel: CancellationToken::new(),
        }
    }

    /// Stops every job of this exporter (and its clones) when `cancel` is cancelled: waiting
    /// jobs cancel the exports they created, downloads stop with their bytes kept on disk, and
    /// each job ends with [`Error::Interrupted`].
    #[must_use]
    pub fn with_cancellation(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// The token that interrupts this exporter's jobs.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// The connection in use.
    pub fn connection(&self) -> &KoordinatesConnection {
        &self.connection
    }

    /// The options in use.
    pub fn options(&self) -> &ExportOptions {
        &self.options
    }

    /// The export to wait for: when `spec` names one, an export of that name for this layer that
    /// is still processing or complete (`GET exports/`, the newest pages); otherwise a new one,
    /// validated (`POST exports/validate/`) and created (`POST exports/`). A new export may
    /// already be complete: Koordinates reuses identical recent exports.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidExport`] with the server's reasons; [`Error::Api`];
    /// [`Error::Interrupted`].
    pub async fn create(
        &self,
        details: &LayerDetails,
        spec: &ExportSpec,
        observer: &dyn Observer,
    ) -> Result<(Export, ExportOrigin)> {
        let layer_id = details.layer_id().unwrap_or_default();
        let interrupted = Error::Interrupted {
            layer_id,
            stage: "creating the export",
            export_id: None,
        };
        if self.cancel.is_cancelled() {
            return Err(interrupted);
        }
        let api = |source| Error::Api { layer_id, source };
        let request = spec.request(details);
        observer.layer_event(layer_id, LayerEvent::Validating);
        // Looking for an earlier export of this version and validating a new one at once: a
        // cold export waits for neither in turn.
        let (existing, validation) = tokio::join!(
            self.own_export(details, spec),
            self.connection.validate_export(&request)
        );
        if let Some(existing) = existing {
            tracing::info!(layer_id, export_id = existing.id, state = %existing.state, "reusing an earlier export of this layer version");
            observer.layer_event(
                layer_id,
                LayerEvent::Reused {
                    export_id: existing.id,
                },
            );
            return Ok((existing, ExportOrigin::Reused));
        }
        let validation = validation.map_err(api)?;
        if !validation.is_valid {
            return Err(Error::InvalidExport {
                layer_id,
                reasons: validation.reasons(),
            });
        }
        if self.cancel.is_cancelled() {
            return Err(interrupted);
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
        Ok((export, ExportOrigin::Created))
    }

    /// An export named as `spec` names it (Koordinates writes it `kx-{name}`), of this layer, in
    /// this CRS, still processing or complete; `None` when there is none or the list cannot be
    /// read (a new export is then made).
    async fn own_export(&self, details: &LayerDetails, spec: &ExportSpec) -> Option<Export> {
        let name = spec.name.as_deref()?.to_ascii_lowercase();
        let exports = match self.connection.recent_exports(OWN_EXPORT_PAGES).await {
            Ok(exports) => exports,
            Err(error) => {
                tracing::debug!("could not list exports to find an earlier one: {error}");
                return None;
            }
        };
        let layer = details.url.trim_end_matches('/');
        exports.into_iter().find(|export| {
            let named = export
                .name
                .as_deref()
                .is_some_and(|given| given.to_ascii_lowercase().contains(&name));
            let same_layer = export.items.as_ref().is_none_or(|items| {
                items
                    .iter()
                    .any(|item| item.item.trim_end_matches('/') == layer)
            });
            let same_crs = export
                .crs
                .as_ref()
                .and_then(koop_api::Crs::epsg)
                .is_none_or(|code| code == spec.crs.code());
            named
                && same_layer
                && same_crs
                && matches!(
                    export.state,
                    ExportState::Processing | ExportState::Complete
                )
        })
    }

    /// Polls `exports/{id}/` until the export is complete. Looks soon after creation, then backs
    /// off, looking sooner when `progress` predicts completion; past the deadline the export is
    /// cancelled on the server.
    ///
    /// Interrupted (see [`Exporter::with_cancellation`]), an export of [`ExportOrigin::Created`]
    /// is cancelled on the server; a reused one is left for a later run.
    ///
    /// # Errors
    ///
    /// [`Error::ExportFailed`] when it ends `error`, `cancelled` or `gone`;
    /// [`Error::DeadlineExceeded`]; [`Error::Interrupted`]; [`Error::Api`].
    pub async fn wait(
        &self,
        layer_id: u64,
        export: Export,
        origin: ExportOrigin,
        observer: &dyn Observer,
    ) -> Result<Export> {
        let started = Instant::now();
        let mut export = export;
        let mut schedule = PollSchedule::new(self.options);
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
                self.cancel_quietly(layer_id, export.id).await;
                return Err(Error::DeadlineExceeded {
                    layer_id,
                    export_id: export.id,
                    waited: elapsed,
                });
            }
            let wait = schedule.next(elapsed, export.progress);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.cancel.cancelled() => {
                    if origin == ExportOrigin::Created {
                        self.cancel_quietly(layer_id, export.id).await;
                    }
                    return Err(Error::Interrupted {
                        layer_id,
                        stage: "waiting for the export",
                        export_id: Some(export.id),
                    });
                }
            }
            export = self
                .connection
                .export(export.id)
                .await
                .map_err(|source| Error::Api { layer_id, source })?;
        }
    }

    /// Cancels an export on the server (`DELETE exports/{id}/`), waiting at most a few seconds;
    /// a failure is logged, not returned: the export then expires on its own.
    async fn cancel_quietly(&self, layer_id: u64, export_id: u64) {
        match tokio::time::timeout(CANCEL_TIMEOUT, self.connection.cancel_export(export_id)).await {
            Ok(Ok(_)) => tracing::info!(layer_id, export_id, "export cancelled on the server"),
            Ok(Err(error)) => {
                tracing::warn!(layer_id, export_id, "could not cancel the export: {error}");
            }
            Err(_) => tracing::warn!(
                layer_id,
                export_id,
                "the server did not answer the cancellation within {}s",
                CANCEL_TIMEOUT.as_secs()
            ),
        }
    }

    /// Downloads a complete export's ZIP to `zip_path`, resuming with a Range request from the
    /// bytes on disk when the connection breaks, up to `resume_attempts` times. A file already at
    /// `zip_path` (the partial download of an interrupted run, of this same export) is resumed
    /// from its length. Returns the size.
    ///
    /// Interrupted, it stops with the bytes received flushed to `zip_path`, for a later call to
    /// resume.
    ///
    /// # Errors
    ///
    /// [`Error::Download`] when every resume failed; [`Error::IncompleteDownload`];
    /// [`Error::Io`] (e.g. a full disk); [`Error::Interrupted`]; [`Error::Api`].
    pub async fn download(
        &self,
        layer_id: u64,
        export: &Export,
        zip_path: &Path,
        observer: &dyn Observer,
    ) -> Result<u64> {
        let io = |action| Error::io(layer_id, action, zip_path);
        let (mut file, mut received) =
            Self::open_download(layer_id, export, zip_path, observer).await?;
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
                Err(DownloadFailure::Interrupted) => {
                    file.flush().await.map_err(io("writing"))?;
                    file.get_mut().sync_all().await.map_err(io("syncing"))?;
                    return Err(Error::Interrupted {
                        layer_id,
                        stage: "downloading",
                        export_id: Some(export.id),
                    });
                }
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
        // No fsync: the ZIP is a staging file, read once and removed; what is published is
        // synced by the cache.
        file.flush().await.map_err(io("writing"))?;
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

    /// The download file, opened to append, and the bytes it already holds (an interrupted run's).
    async fn open_download(
        layer_id: u64,
        export: &Export,
        zip_path: &Path,
        observer: &dyn Observer,
    ) -> Result<(BufWriter<tokio::fs::File>, u64)> {
        let io = |action| Error::io(layer_id, action, zip_path);
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(zip_path)
            .await
            .map_err(io("opening"))?;
        let received = file
            .metadata()
            .await
            .map_err(io("reading the size of"))?
            .len();
        if received > 0 {
            tracing::info!(
                layer_id,
                export_id = export.id,
                received,
                "resuming an interrupted download"
            );
            observer.layer_event(
                layer_id,
                LayerEvent::Resuming {
                    offset: received,
                    attempt: 0,
                },
            );
        }
        Ok((BufWriter::with_capacity(WRITE_BUFFER, file), received))
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
        let mut download = tokio::select! {
            download = self.connection.download_export(export, *received) => {
                download.map_err(DownloadFailure::Api)?
            }
            () = self.cancel.cancelled() => return Err(DownloadFailure::Interrupted),
        };
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
            let next = tokio::select! {
                next = download.chunk() => next,
                () = self.cancel.cancelled() => return Err(DownloadFailure::Interrupted),
            };
            let chunk = match next {
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
        let (export, origin) = self.create(details, spec, observer).await?;
        let export = self.wait(layer_id, export, origin, observer).await?;
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

/// A failed download request: an API error may be resumed, a file error may not; an
/// interruption stops it.
enum DownloadFailure {
    Api(koop_api::Error),
    Io(Error),
    Interrupted,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_progress_looks_fall_on_a_grid_that_holds_every_second() {
        let options = ExportOptions::default();
        let mut schedule = PollSchedule::new(options);
        let mut at = Duration::ZERO;
        let mut looks = Vec::new();
        while at < Duration::from_secs(8) {
            at += schedule.next(at, None);
            looks.push(u64::try_from(at.as_millis()).unwrap_or(u64::MAX));
        }
        assert_eq!(
            looks,
            [
                250, 500, 750, 1000, 1250, 1500, 1750, 2000, 2500, 3000, 3500, 4000, 4500, 5000,
                6000, 7000, 8000
            ]
        );
        // A look a little late still lands back on the grid.
        assert_eq!(
            schedule.next(Duration::from_millis(1030), None),
            Duration::from_millis(220)
        );
        // After two minutes, a twentieth of the wait, at most 15 s.
        assert_eq!(
            schedule.next(Duration::from_secs(200), None),
            Duration::from_secs(10)
        );
        assert_eq!(
            schedule.next(Duration::from_secs(3000), None),
            Duration::from_secs(15)
        );
        assert_eq!(
            schedule.next(Duration::from_millis(3_599_600), None),
            Duration::from_millis(400),
            "never past the deadline"
        );
    }

    #[test]
    fn with_progress_the_next_look_is_just_past_the_predicted_end() {
        let mut schedule = PollSchedule::new(ExportOptions::default());
        // Created at 0 % (the first look), a quarter done after 250 ms: 750 ms to go.
        let first = schedule.next(Duration::ZERO, Some(0.0));
        assert_eq!(
            first,
            Duration::from_millis(250),
            "no rate yet: the grid's first look"
        );
        let aimed = schedule.next(Duration::from_millis(250), Some(0.25));
        assert!((aimed.as_secs_f64() - 0.75).abs() < 1e-3, "{aimed:?}");
        // Arrived a moment early (99 %): looks settle from 20 ms, doubling, up to 1 s.
        let waits: Vec<u64> = (0..7)
            .map(|_| {
                let wait = schedule.next(Duration::from_millis(1010), Some(0.99));
                u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)
            })
            .collect();
        assert_eq!(waits, [20, 40, 80, 160, 320, 640, 1000]);
        // Far from the end: half way (of 7.9 s to go: 80 % less a 1 % step), and never more
        // than 15 s.
        let mut schedule = PollSchedule::new(ExportOptions::default());
        schedule.next(Duration::ZERO, Some(0.0));
        assert_eq!(
            schedule.next(Duration::from_secs(2), Some(0.2)),
            Duration::from_millis(3950)
        );
        assert_eq!(
            schedule.next(Duration::from_secs(10), Some(0.21)),
            Duration::from_secs(15)
        );
        // An export reused after a crash starts part-way: the rate is measured from there.
        let mut schedule = PollSchedule::new(ExportOptions::default());
        schedule.next(Duration::ZERO, Some(0.5));
        let aimed = schedule.next(Duration::from_secs(1), Some(0.8));
        assert!((aimed.as_secs_f64() - 0.643).abs() < 1e-3, "{aimed:?}");
        // Progress in finer steps than whole percents is taken as it is.
        let mut schedule = PollSchedule::new(ExportOptions::default());
        schedule.next(Duration::ZERO, Some(0.0));
        let aimed = schedule.next(Duration::from_millis(250), Some(0.2505));
        assert!((aimed.as_secs_f64() - 0.7584).abs() < 1e-3, "{aimed:?}");
    }
}
