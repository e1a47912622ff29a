//! Features streamed in chunks, so a slow reader holds no thread.
//!
//! A stream of a whole layer (the GeoJSON route), or of every row matching a query the output
//! finishes, reads [`CHUNK`] rows at a time in fid order (`WHERE fid > last ORDER BY fid LIMIT`):
//! each chunk is one short blocking call on a pooled connection. While the reader takes one
//! chunk, the next is read (one ahead, so SQLite and the writer overlap); a client that stops
//! reading stops the reading, and holds at most two chunks of features and the position.
//!
//! Memory under many slow readers: every feature read and not yet taken is counted for the
//! whole provider. Past [`HELD_BUDGET`] features, streams read [`SMALL_CHUNK`] rows at a time
//! and nothing ahead, so 600 clients that stop reading hold a few MiB each at most, while one
//! fast reader alone gets full chunks.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use koop_geoservices::{GeometryFilter, Reprojector, SqlParam};
use koop_provider::ProviderError;

use crate::gpkg::{self, RowShape, Table, sqlite_error};
use crate::layer::LayerState;
use crate::query::Bound;
use crate::work::{Held, Work};

/// Rows read per blocking call while the provider's streams hold fewer than [`HELD_BUDGET`]
/// features.
pub(crate) const CHUNK: usize = 256;
/// Rows read per call, without reading ahead, once they hold more.
const SMALL_CHUNK: usize = 16;
/// Features (read, not yet taken by a reader) that all streams of a provider hold before
/// they read small chunks: about 4 MiB of decoded features.
const HELD_BUDGET: usize = 4 * 1024;
/// Longest one chunk may take before SQLite is interrupted (a chunk scans at most `CHUNK` rows
/// of its query, so this bounds only pathological queries).
const CHUNK_DEADLINE: Duration = Duration::from_secs(10);

/// What a chunked stream reads.
pub(crate) struct Rows {
    /// Conditions and their parameters (a query's `WHERE`, possibly empty).
    pub(crate) conditions: Vec<String>,
    pub(crate) params: Vec<SqlParam>,
    /// The exact geometry test of candidates, in EPSG:4326.
    pub(crate) exact: Option<GeometryFilter>,
    /// What each row reads.
    pub(crate) shape: RowShape,
    /// From the table's CRS to EPSG:4326 (for the exact test), and to the output CRS.
    pub(crate) to_4326: Reprojector,
    pub(crate) from_source: Reprojector,
    pub(crate) from_4326: Reprojector,
}

/// The features of one chunk, the last fid read, and whether the table has no more.
pub(crate) type Chunk = (Vec<geojson::Feature>, Option<i64>, bool);

struct Cursor {
    state: LayerState,
    rows: Arc<Rows>,
    work: Work,
    /// The chunk being read ahead, if any, with its count of held features: aborted when
    /// the stream is dropped.
    ahead: Option<tokio_util::task::AbortOnDropHandle<Result<(Chunk, Held), ProviderError>>>,
    done: bool,
    buffer: VecDeque<geojson::Feature>,
    /// The count of `buffer`'s features in [`Work::held`].
    held: Option<Held>,
    /// The fid after which the next chunk starts, when none is being read ahead.
    next: Option<i64>,
}

impl Cursor {
    /// Starts reading the chunk after `after`: [`CHUNK`] rows, or [`SMALL_CHUNK`] while the
    /// provider's streams hold more than [`HELD_BUDGET`] features.
    fn read_ahead(&mut self, after: Option<i64>) {
        let (state, rows, work) = (self.state.clone(), self.rows.clone(), self.work.clone());
        let task = tokio::spawn(async move {
            work.clone()
                .run_bulk(move || {
                    // Decided with the permit held (at most a few chunks are read at once), not
                    // when queued: hundreds of streams queue at once while little is held.
                    let limit = if work.held() > HELD_BUDGET {
                        SMALL_CHUNK
                    } else {
                        CHUNK
                    };
                    let read = chunk(&state, &rows, after, limit)?;
                    let held = work.hold(read.0.len());
                    Ok((read, held))
                })
                .await
        });
        self.ahead = Some(tokio_util::task::AbortOnDropHandle::new(task));
    }

    /// Whether to read the next chunk before the reader has taken this one.
    fn reads_ahead(&self) -> bool {
        self.work.held() <= HELD_BUDGET
    }
}

/// One chunk: the features of up to `limit` rows after `after`, the last fid read, and whether
/// the table has no more. Blocking.
fn chunk(
    state: &LayerState,
    rows: &Rows,
    after: Option<i64>,
    limit: usize,
) -> Result<Chunk, ProviderError> {
    let table: &Table = &state.table;
    let fid = Table::quoted(&table.fid);
    let mut conditions = rows.conditions.clone();
    let mut params = rows.params.clone();
    if let Some(after) = after {
        conditions.push(format!("{fid} > ?"));
        params.push(SqlParam::Integer(after));
    }
    let mut sql = rows.shape.select(table);
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    let _ = write!(sql, " ORDER BY {fid} LIMIT {limit}");
    let mut connection = state.connections.get()?;
    gpkg::until_deadline(
        &mut connection,
        Some(Instant::now() + CHUNK_DEADLINE),
        |connection| {
            let error = sqlite_error(&table.path);
            let mut statement = gpkg::prepare(connection, &sql).map_err(&error)?;
            let mut result = statement
                .query(rusqlite::params_from_iter(params.iter().map(Bound)))
                .map_err(&error)?;
            let (mut features, mut last, mut read) = (Vec::new(), after, 0_usize);
            while let Some(row) = result.next().map_err(&error)? {
                read += 1;
                let id: i64 = row.get(0).map_err(&error)?;
                last = Some(id);
                let mut shape = if rows.shape.geometry {
                    gpkg::row_geometry(table, row)?
                } else {
                    None
                };
                let mut in_4326 = false;
                if let Some(filter) = &rows.exact {
                    let Some(geometry) = &mut shape else {
                        continue;
                    };
                    if rows.to_4326.geometry(geometry).is_err() || !filter.matches(geometry) {
                        continue;
                    }
                    in_4326 = true;
                }
                let geometry = match shape {
                    Some(mut geometry) => {
                        let reprojector = if in_4326 {
                            &rows.from_4326
                        } else {
                            &rows.from_source
                        };
                        match reprojector.geometry(&mut geometry) {
                            Ok(()) => Some(geojson::Geometry::from(&geometry)),
                            Err(cause) => {
                                return Err(ProviderError::internal(
                                    format!("feature {id} of {}: {cause}", table.name),
                                    None,
                                ));
                            }
                        }
                    }
                    None => None,
                };
                let properties = rows.shape.properties(table, row)?;
                features.push(gpkg::feature(id, geometry, properties));
            }
            Ok((features, last, read < limit))
        },
    )
}

/// The features `rows` selects from the layer of `state`, read a chunk at a time as the stream
/// is polled.
pub(crate) fn features(
    state: LayerState,
    rows: Rows,
    work: Work,
) -> BoxStream<'static, Result<geojson::Feature, ProviderError>> {
    let mut cursor = Cursor {
        state,
        rows: Arc::new(rows),
        work,
        ahead: None,
        done: false,
        buffer: VecDeque::new(),
        held: None,
        next: None,
    };
    cursor.read_ahead(None);
    // Fused: a consumer may poll again after the end.
    Box::pin(futures::stream::StreamExt::fuse(futures::stream::unfold(
        cursor,
        |mut cursor| async move {
            loop {
                if let Some(feature) = cursor.buffer.pop_front() {
                    if let Some(held) = &mut cursor.held {
                        held.take_one();
                    }
                    return Some((Ok(feature), cursor));
                }
                if cursor.done {
                    return None;
                }
                cursor.buffer = VecDeque::new();
                if cursor.ahead.is_none() {
                    let next = cursor.next.take();
                    cursor.read_ahead(next);
                }
                let ahead = cursor.ahead.take()?;
                let read = ahead.await.unwrap_or_else(|error| {
                    Err(ProviderError::internal(
                        "a background task of this server failed",
                        Some(Arc::new(error)),
                    ))
                });
                match read {
                    Ok(((features, last, done), held)) => {
                        // The chunk's own allocation, taken as it is and freed with its
                        // last feature: an emptied buffer keeps no capacity.
                        cursor.buffer = features.into();
                        cursor.held = Some(held);
                        cursor.done = done;
                        if !done {
                            if cursor.reads_ahead() {
                                cursor.read_ahead(last);
                            } else {
                                cursor.next = last;
                            }
                        }
                    }
                    Err(error) => {
                        cursor.done = true;
                        cursor.buffer.clear();
                        cursor.held = None;
                        return Some((Err(error), cursor));
                    }
                }
            }
        },
    )))
}
