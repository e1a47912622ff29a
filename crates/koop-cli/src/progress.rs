//! Progress: one bar per active layer under an overall bar on a terminal, plain log lines
//! otherwise. Bars are tracing spans drawn by tracing-indicatif, so log lines print above them.

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

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// Reports layer events.
pub(crate) struct Reporter {
    bars: bool,
    overall: Span,
    layers: Mutex<HashMap<u64, Span>>,
}

impl Reporter {
    /// A reporter for `total` layers; draws bars when `bars` and stderr is a terminal.
    pub(crate) fn new(total: usize, bars: bool) -> Self {
        let bars = bars && std::io::stderr().is_terminal();
        let overall = tracing::info_span!("koop");
        if bars {
            overall.pb_set_style(&style(
                "{spinner:.green} {pos}/{len} layers [{elapsed}] {wide_bar:.cyan/blue}",
            ));
            overall.pb_set_length(total as u64);
            overall.pb_start();
        }
        Self {
            bars,
            overall,
            layers: Mutex::new(HashMap::new()),
        }
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
            span.pb_set_style(&style("  {spinner} {wide_msg}"));
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
            self.overall.pb_inc(1);
        }
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
                        "  {spinner} {msg:<28!} exporting   [{bar:30.cyan/blue}] {pos:>3}%",
                    ));
                    span.pb_set_length(100);
                    span.pb_set_message(&format!("{layer_id} export {export_id}"));
                });
            }
            LayerEvent::Processing { progress, .. } => {
                let percent = progress.map_or(0, percent);
                self.with_bar(layer_id, |span| span.pb_set_position(percent));
            }
            LayerEvent::Complete { export_id, .. } => {
                tracing::info!("layer {layer_id}: export {export_id} complete");
                self.with_bar(layer_id, |span| {
                    span.pb_set_style(&style(
                        "  {spinner} {msg:<28!} downloading [{bar:30.green/blue}] {bytes}/{total_bytes} {bytes_per_sec}",
                    ));
                    span.pb_set_position(0);
                    span.pb_set_message(&format!("{layer_id} export {export_id}"));
                });
            }
            LayerEvent::Downloading { received, total } => {
                self.with_bar(layer_id, |span| {
                    if let Some(total) = total {
                        span.pb_set_length(total);
                    }
                    span.pb_set_position(received);
                });
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
