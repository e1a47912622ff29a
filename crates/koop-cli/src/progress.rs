//! Progress: one bar per active layer under an overall bar on a terminal, plain log lines
//! otherwise. Bars are tracing spans drawn by tracing-indicatif, so log lines print above them;
//! what a command prints while bars are drawn goes through [`out`] and [`err`], which lift the
//! bars, write the line, and draw the bars again below it (a line printed past the bars would be
//! drawn over, and the bars would be redrawn in new places). Finished bars are cleared; a
//! download shows no total until the size is known (the export's estimate, then
//! `Content-Length`), and every bar fits an 80-column terminal with room to spare: a bar as wide
//! as the terminal leaves the cursor in its last column, where the `^C` a terminal echoes wraps
//! to a new line and the bars, cleared one line too low, stay on the screen.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::ProgressStyle;
use koop::{FetchOutcome, LayerEvent, Observer};
use tracing::Span;
use tracing_indicatif::span_ext::IndicatifSpanExt;

/// `1.2 MB`, `330 KB`, `12 B`.
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else if value >= 100.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A progress fraction as a whole percentage, 0–100.
fn percent(done: f64) -> u64 {
    // Clamped to 0–100 first, so the cast neither truncates nor loses a sign.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "clamped to 0–100"
    )]
    let percent = (done.clamp(0.0, 1.0) * 100.0).round() as u64;
    percent
}

/// Writes `line` to standard output, above the bars when they are drawn. A closed pipe
/// (`koop mirror … | head`) is not an error worth a panic: the line is dropped.
pub(crate) fn out(line: impl std::fmt::Display) {
    use std::io::Write;
    tracing_indicatif::suspend_tracing_indicatif(|| {
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    });
}

/// Writes `line` to standard error, above the bars when they are drawn.
pub(crate) fn err(line: impl std::fmt::Display) {
    use std::io::Write;
    tracing_indicatif::suspend_tracing_indicatif(|| {
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    });
}

/// The downloading bar: with the total when it is known, else bytes and speed alone.
fn downloading_style(total_known: bool) -> ProgressStyle {
    if total_known {
        style(
            "  {spinner} {msg:<24!} downloading [{wide_bar:.green/blue}] {bytes}/{total_bytes} {bytes_per_sec}",
        )
    } else {
        style("  {spinner} {msg:<18!} downloading {bytes} {bytes_per_sec}")
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// Keeps the terminal from echoing `^C` while bars are drawn, and restores it when dropped.
///
/// A terminal echoes the `^C` of Ctrl-C where the cursor is, at the end of the last bar, and the
/// bars, cleared from a cursor that is no longer where indicatif left it, stay on the screen (seen
/// in a tmux pane; with `stty -echoctl` they are cleared). Koop stops cleanly on Ctrl-C and says
/// so, so the echo adds nothing. Only `ECHOCTL` is changed, only on a terminal that has it set.
struct EchoGuard {
    #[cfg(unix)]
    saved: Option<rustix::termios::Termios>,
}

impl EchoGuard {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
            let stderr = std::io::stderr();
            let saved = tcgetattr(&stderr)
                .ok()
                .filter(|termios| termios.local_modes.contains(LocalModes::ECHOCTL));
            if let Some(original) = &saved {
                let mut quiet = original.clone();
                quiet.local_modes.remove(LocalModes::ECHOCTL);
                if tcsetattr(&stderr, OptionalActions::Now, &quiet).is_err() {
                    return Self { saved: None };
                }
            }
            Self { saved }
        }
        #[cfg(not(unix))]
        Self {}
    }
}

impl Drop for EchoGuard {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(original) = &self.saved {
            let _ = rustix::termios::tcsetattr(
                std::io::stderr(),
                rustix::termios::OptionalActions::Now,
                original,
            );
        }
    }
}

/// Reports layer events.
pub(crate) struct Reporter {
    bars: bool,
    /// Set while bars are drawn.
    _echo: Option<EchoGuard>,
    overall: Span,
    layers: Mutex<HashMap<u64, Span>>,
    /// Whether a layer's download bar shows a total.
    totals: Mutex<HashMap<u64, bool>>,
}

impl Reporter {
    /// A reporter for `total` layers; draws bars when `bars` and stderr is a terminal.
    pub(crate) fn new(total: usize, bars: bool) -> Self {
        let bars = bars && std::io::stderr().is_terminal();
        let overall = tracing::info_span!("koop");
        if bars {
            overall.pb_set_style(&style(
                "{spinner:.green} {pos}/{len} layers [{elapsed}] {bar:40.cyan/blue}",
            ));
            overall.pb_set_length(total as u64);
            overall.pb_start();
        }
        Self {
            bars,
            _echo: bars.then(EchoGuard::new),
            overall,
            layers: Mutex::new(HashMap::new()),
            totals: Mutex::new(HashMap::new()),
        }
    }

    fn lock_totals(&self) -> std::sync::MutexGuard<'_, HashMap<u64, bool>> {
        self.totals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn with_bar(&self, layer_id: u64, update: impl FnOnce(&Span)) {
        if !self.bars {
            return;
        }
        let mut layers = self
            .layers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let span = layers.entry(layer_id).or_insert_with(|| {
            let span = tracing::info_span!(parent: &self.overall, "layer", id = layer_id);
            span.pb_set_style(&style("  {spinner} {msg:60!}"));
            span.pb_start();
            span
        });
        update(span);
    }

    fn finish(&self, layer_id: u64) {
        if self.bars {
            let mut layers = self
                .layers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            layers.remove(&layer_id);
            self.lock_totals().remove(&layer_id);
            self.overall.pb_inc(1);
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        // The layers' bars first, then the overall bar: a child span keeps its parent open.
        self.layers
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        let overall = std::mem::replace(&mut self.overall, Span::none());
        drop(overall);
    }
}

impl Observer for Reporter {
    fn layer_event(&self, layer_id: u64, event: LayerEvent) {
        match event {
            LayerEvent::Details { title, .. } => {
                self.with_bar(layer_id, |span| {
                    span.pb_set_message(&format!("{layer_id} {title}"));
                });
            }
            LayerEvent::WaitingForOtherFetch => {
                tracing::info!(
                    "layer {layer_id}: another koop is fetching the same data; waiting for it"
                );
                self.with_bar(layer_id, |span| {
                    span.pb_set_message(&format!(
                        "{layer_id} waiting for another fetch of the same data"
                    ));
                });
            }
            LayerEvent::QueuedForExport => {
                self.with_bar(layer_id, |span| {
                    span.pb_set_message(&format!("{layer_id} waiting for an export slot"));
                });
            }
            LayerEvent::QueuedForDownload => {
                self.with_bar(layer_id, |span| {
                    span.pb_set_message(&format!("{layer_id} waiting for a download slot"));
                });
            }
            LayerEvent::Finished { outcome, bytes } => {
                if outcome == FetchOutcome::Downloaded {
                    tracing::info!("layer {layer_id}: downloaded {}", human_bytes(bytes));
                }
                self.finish(layer_id);
            }
            other => self.export_event(layer_id, other),
        }
    }
}

impl Reporter {
    fn export_event(&self, layer_id: u64, event: LayerEvent) {
        match event {
            LayerEvent::Created { export_id, .. } => {
                tracing::info!("layer {layer_id}: export {export_id} created");
                self.with_bar(layer_id, |span| {
                    span.pb_set_style(&style(
                        "  {spinner} {msg:<24!} exporting   [{bar:25.cyan/blue}] {pos:>3}%",
                    ));
                    span.pb_set_length(100);
                    span.pb_set_message(&format!("{layer_id} export {export_id}"));
                });
            }
            LayerEvent::Processing { progress, .. } => {
                let percent = progress.map_or(0, percent);
                self.with_bar(layer_id, |span| span.pb_set_position(percent));
            }
            LayerEvent::Complete {
                export_id,
                size_estimate,
            } => {
                tracing::info!("layer {layer_id}: export {export_id} complete");
                self.with_bar(layer_id, |span| {
                    // The export's estimate until the download says its length.
                    span.pb_set_style(&downloading_style(size_estimate.is_some()));
                    if let Some(estimate) = size_estimate {
                        span.pb_set_length(estimate);
                    }
                    span.pb_set_position(0);
                    span.pb_set_message(&format!("{layer_id} export {export_id}"));
                });
                self.lock_totals().insert(layer_id, size_estimate.is_some());
            }
            LayerEvent::Downloading { received, total } => {
                let shown = self.lock_totals().get(&layer_id).copied().unwrap_or(false);
                self.with_bar(layer_id, |span| {
                    if let Some(total) = total {
                        if !shown {
                            span.pb_set_style(&downloading_style(true));
                        }
                        span.pb_set_length(total);
                    }
                    span.pb_set_position(received);
                });
                if total.is_some() && !shown {
                    self.lock_totals().insert(layer_id, true);
                }
            }
            LayerEvent::Resuming { offset, attempt } => {
                tracing::warn!(
                    "layer {layer_id}: download broke after {}; resuming (attempt {attempt})",
                    human_bytes(offset)
                );
            }
            LayerEvent::Extracting { entry } => {
                self.with_bar(layer_id, |span| {
                    span.pb_set_message(&format!("{layer_id} extracting {entry}"));
                });
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(330_000), "330 KB");
        assert_eq!(human_bytes(1_234_567), "1.2 MB");
        assert_eq!(human_bytes(5_000_000_000), "5.0 GB");
    }
}
