//! A page of features written as the provider yields them.
//!
//! A page is read (SQLite, decoding, reprojection: the provider's work) and written (Esri JSON or
//! GeoJSON, then the response compression) by different tasks at once: the first bytes leave
//! while the provider still reads the rest, so on a machine with two cores a page costs about the
//! larger of reading and writing it rather than their sum. Used for pages whose features arrive
//! in their final order (everything but ordering in memory), as JSON, GeoJSON or JSONP.
//!
//! Errors: the response is committed only once its first feature is written (or the page is
//! known to be empty), so a provider error or the request's deadline before that is an ordinary
//! Geoservices error. Past that point the body ends with an error and the connection is closed,
//! which every client reads as a failed request (a truncated JSON document is never completed).
//!
//! Memory: the provider's features are taken as they come and written at once; output the
//! connection has not taken yet waits in the writer (one page's JSON at most, as a page written
//! whole would), so a client that stops reading never makes the provider wait. The writer stops
//! when the client leaves (the body is dropped).
//!
//! `returnIdsOnly` answers are written the same way, [`IDS_PER_CHUNK`] ids at a time from the
//! provider's list: a layer's million ids take their 8 MB list and one chunk, not another
//! 8–11 MB of JSON beside it.

use std::time::Instant;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use koop_geoservices::Query;
use koop_provider::{Epsg, FiltersApplied, ProviderError, ProviderStream, Row};
use tokio::sync::{mpsc, oneshot};

use crate::engine::{Engine, Step};
use crate::layer::Layer;
use crate::render::{PagePieces, RowLayout};
use crate::response::GeoservicesError;

/// Output gathered before it is handed to the response body, in bytes.
const FLUSH_BYTES: usize = 32 * 1024;

/// Chunks of [`FLUSH_BYTES`] waiting for the connection.
const BODY_CHUNKS: usize = 4;

/// Ids written per body chunk: about 32 KiB of JSON.
const IDS_PER_CHUNK: usize = 4096;

/// `{"objectIdFieldName": field, "objectIds": [ids…]}` (wrapped in `callback(…)` for JSONP),
/// written in chunks as the connection takes them.
pub(crate) fn ids(field: &str, ids: Vec<i64>, callback: Option<&str>) -> Response {
    let mut head = Vec::with_capacity(64 + field.len());
    if let Some(callback) = callback {
        head.extend_from_slice(callback.as_bytes());
        head.push(b'(');
    }
    head.extend_from_slice(br#"{"objectIdFieldName":"#);
    // A field name is a JSON string; serializing a &str cannot fail.
    let _ = serde_json::to_writer(&mut head, field);
    head.extend_from_slice(br#","objectIds":["#);
    let tail: &'static [u8] = if callback.is_some() { b"]})" } else { b"]}" };
    let chunks = futures::stream::unfold(
        (Some(head), ids, 0_usize),
        move |(head, ids, start)| async move {
            if start > ids.len() {
                return None;
            }
            let mut out = head.unwrap_or_else(|| Vec::with_capacity(IDS_PER_CHUNK * 12));
            let end = (start + IDS_PER_CHUNK).min(ids.len());
            for (index, id) in ids[start..end].iter().enumerate() {
                if start + index > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(itoa::Buffer::new().format(*id).as_bytes());
            }
            if end == ids.len() {
                out.extend_from_slice(tail);
            }
            let next = if end == ids.len() { ids.len() + 1 } else { end };
            Some((Ok::<_, std::io::Error>(Bytes::from(out)), (None, ids, next)))
        },
    );
    let content_type = if callback.is_some() {
        "application/javascript; charset=utf-8"
    } else {
        "application/json; charset=utf-8"
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        axum::body::Body::from_stream(chunks),
    )
        .into_response()
}

/// A page to write as it streams.
pub(crate) struct StreamedPage {
    pub(crate) layer: Layer,
    pub(crate) query: Query,
    pub(crate) stream: Box<ProviderStream>,
    pub(crate) applied: FiltersApplied,
    pub(crate) crs: Epsg,
    pub(crate) count: Option<u64>,
    pub(crate) exceeded: bool,
    /// Whether the request carried a token (for the error code of a provider's refusal).
    pub(crate) had_token: bool,
    /// The request's deadline: the page stops there.
    pub(crate) deadline: Option<Instant>,
}

/// What the writer says before the response is committed.
type Started = Result<(), GeoservicesError>;

/// The body's chunks, and the writer task (aborted when the body is dropped: the client left).
struct BodyStream {
    chunks: mpsc::Receiver<Result<Bytes, std::io::Error>>,
    _writer: tokio_util::task::AbortOnDropHandle<()>,
}

impl futures::Stream for BodyStream {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.chunks.poll_recv(cx)
    }
}

impl StreamedPage {
    /// The response: its status and headers once the first feature is written, its body as the
    /// rest are. `callback` wraps it in a JSONP call.
    ///
    /// # Errors
    ///
    /// A [`GeoservicesError`] when the provider fails, or the deadline passes, before the first
    /// feature; 400 when the query cannot run over these features, 500 when its `outSR` cannot
    /// be written.
    pub(crate) async fn respond(self) -> Result<Response, GeoservicesError> {
        let callback = self.query.callback.clone();
        let (started_tx, started_rx) = oneshot::channel();
        let (chunks_tx, chunks_rx) = mpsc::channel(BODY_CHUNKS);
        let writer = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
            self.write(started_tx, chunks_tx),
        ));
        match started_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(error),
            Err(_) => {
                return Err(GeoservicesError {
                    code: 500,
                    message: "the page could not be written".to_owned(),
                    details: Vec::new(),
                });
            }
        }
        let content_type = if callback.is_some() {
            "application/javascript; charset=utf-8"
        } else {
            "application/json; charset=utf-8"
        };
        let body = axum::body::Body::from_stream(BodyStream {
            chunks: chunks_rx,
            _writer: writer,
        });
        Ok((
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
            ],
            body,
        )
            .into_response())
    }

    /// Writes the page into `chunks`, saying on `started` when the response may be committed
    /// (or why not).
    async fn write(
        mut self,
        started: oneshot::Sender<Started>,
        chunks: mpsc::Sender<Result<Bytes, std::io::Error>>,
    ) {
        let mut started = Some(started);
        let fail = |started: &mut Option<oneshot::Sender<Started>>, error: GeoservicesError| {
            started.take().map(|sender| sender.send(Err(error)))
        };
        let mut engine = match Engine::new(
            &self.query,
            &self.layer,
            self.applied,
            self.crs,
            self.count,
            self.exceeded,
        ) {
            Ok(engine) => engine,
            Err(message) => {
                fail(&mut started, GeoservicesError::bad_request(message));
                return;
            }
        };
        let mut pieces = match PagePieces::new(&self.layer, &self.query, self.crs) {
            Ok(pieces) => pieces,
            Err(message) => {
                // As a page written whole answers it (`respond`).
                fail(
                    &mut started,
                    GeoservicesError {
                        code: 500,
                        message,
                        details: Vec::new(),
                    },
                );
                return;
            }
        };
        let mut out = Vec::with_capacity(FLUSH_BYTES + 4096);
        if let Some(callback) = &self.query.callback {
            out.extend_from_slice(callback.as_bytes());
            out.push(b'(');
        }
        if let Err(error) = pieces.head(&self.query, &mut out) {
            fail(&mut started, written_error(&error));
            return;
        }
        let (mut items, layout) = items(&mut self.stream, &engine, &pieces);
        let mut deadline = self.deadline.map(timer);
        loop {
            let item = match next_item(&mut items, deadline.as_mut()).await {
                Some(Ok(item)) => item,
                Some(Err(error)) => {
                    let error = GeoservicesError::from_provider(&error, self.had_token);
                    if fail(&mut started, error.clone()).is_none() {
                        tracing::warn!("a streamed page stopped: {}", error.message);
                        let _ = chunks.send(Err(std::io::Error::other(error.message))).await;
                    }
                    return;
                }
                None => break,
            };
            let error = match put(&mut engine, &mut pieces, &item, layout.as_ref(), &mut out) {
                Ok(Step::Skip) => continue,
                Ok(Step::Full) => break,
                Ok(Step::Write) => None,
                Err(error) => Some(error),
            };
            if let Some(error) = error {
                let error = written_error(&error);
                if fail(&mut started, error.clone()).is_none() {
                    let _ = chunks.send(Err(std::io::Error::other(error.message))).await;
                }
                return;
            }
            if let Some(sender) = started.take()
                && sender.send(Ok(())).is_err()
            {
                // The request was dropped before its response was committed.
                return;
            }
            // Never wait for a slow client here: the provider's reading would wait with it. What
            // the connection has not taken yet stays in `out` (a page at most, as a page written
            // whole would), and the next chunk carries it.
            if out.len() >= FLUSH_BYTES {
                match chunks.try_reserve() {
                    Ok(slot) => {
                        let full =
                            std::mem::replace(&mut out, Vec::with_capacity(FLUSH_BYTES + 4096));
                        slot.send(Ok(Bytes::from(full)));
                    }
                    Err(mpsc::error::TrySendError::Full(())) => {}
                    Err(mpsc::error::TrySendError::Closed(())) => return,
                }
            }
        }
        // The stream's own producer may still run ahead: stop it before writing the end.
        drop(items);
        pieces.tail(engine.page_exceeded(), &mut out);
        if self.query.callback.is_some() {
            out.push(b')');
        }
        if let Some(sender) = started.take()
            && sender.send(Ok(())).is_err()
        {
            return;
        }
        let _ = chunks.send(Ok(Bytes::from(out))).await;
    }
}

/// The provider's features as the page reads them, and the layout of its rows when they
/// come as rows: a provider's rows are written as they are when no filter is left to
/// evaluate here; otherwise (and for providers that give features) each is a
/// `geojson::Feature`.
fn items(
    stream: &mut ProviderStream,
    engine: &Engine<'_>,
    pieces: &PagePieces<'_>,
) -> (
    BoxStream<'static, Result<Item, ProviderError>>,
    Option<RowLayout>,
) {
    let rows = if engine.keeps_every_feature() {
        stream.rows.take()
    } else {
        None
    };
    match rows {
        Some(rows) => {
            let layout = pieces.row_layout(rows.names);
            (
                Box::pin(rows.rows.map(|row| row.map(Item::Row))),
                Some(layout),
            )
        }
        None => (
            Box::pin(
                stream
                    .take_features()
                    .map(|feature| feature.map(Item::Feature)),
            ),
            None,
        ),
    }
}

/// Counts `item` on the page ([`Engine::step`]) and writes it when it is on it.
fn put(
    engine: &mut Engine<'_>,
    pieces: &mut PagePieces<'_>,
    item: &Item,
    layout: Option<&RowLayout>,
    out: &mut Vec<u8>,
) -> serde_json::Result<Step> {
    let step = match item {
        Item::Feature(feature) => engine.step(feature),
        Item::Row(_) => engine.step_kept(),
    };
    if matches!(step, Step::Write) {
        match (item, layout) {
            (Item::Row(row), Some(layout)) => pieces.row(row, layout, out)?,
            (Item::Feature(feature), _) => pieces.feature(feature, out)?,
            // Rows come only with their layout (`items`).
            (Item::Row(_), None) => {}
        }
    }
    Ok(step)
}

/// A timer that fires at `deadline`.
fn timer(deadline: Instant) -> std::pin::Pin<Box<tokio::time::Sleep>> {
    Box::pin(tokio::time::sleep_until(tokio::time::Instant::from_std(
        deadline,
    )))
}

/// A feature of the provider's stream, as it gave it.
enum Item {
    Feature(geojson::Feature),
    Row(Row),
}

/// The provider's next feature, or the deadline's error. `deadline` is the request's, armed
/// once for the whole page (a timer per feature would cost a timer-wheel entry each).
async fn next_item(
    items: &mut BoxStream<'static, Result<Item, ProviderError>>,
    deadline: Option<&mut std::pin::Pin<Box<tokio::time::Sleep>>>,
) -> Option<Result<Item, ProviderError>> {
    let Some(deadline) = deadline else {
        return items.next().await;
    };
    tokio::select! {
        biased;
        item = items.next() => item,
        () = deadline.as_mut() => Some(Err(ProviderError::past_deadline())),
    }
}

/// A page that could not be serialized.
fn written_error(error: &serde_json::Error) -> GeoservicesError {
    GeoservicesError {
        code: 500,
        message: format!("the response could not be written: {error}"),
        details: Vec::new(),
    }
}
