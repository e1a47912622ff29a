//! Features streamed in chunks, so a slow reader holds no thread.
//!
//! A stream of a whole layer (the GeoJSON route), or of every row matching a query the output
//! finishes, reads [`CHUNK`] rows at a time in fid order (`WHERE fid > last ORDER BY fid LIMIT`):
//! each chunk is one short blocking call on a pooled connection, taken when the reader asks for
//! more. A client that stops reading stops the reading; between chunks nothing is held but the
//! position.

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
use crate::work::Work;

/// Rows read per blocking call.
pub(crate) const CHUNK: usize = 256;
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

struct Cursor {
    state: LayerState,
    rows: Arc<Rows>,
    work: Work,
    /// The last fid read; the next chunk starts after it.
    after: Option<i64>,
    done: bool,
    buffer: VecDeque<geojson::Feature>,
}

/// One chunk: the features of up to `CHUNK` rows after `after`, the last fid read, and whether
/// the table has no more. Blocking.
fn chunk(
    state: &LayerState,
    rows: &Rows,
    after: Option<i64>,
) -> Result<(Vec<geojson::Feature>, Option<i64>, bool), ProviderError> {
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
    let _ = write!(sql, " ORDER BY {fid} LIMIT {CHUNK}");
    let mut connection = state.connections.get()?;
    gpkg::until_deadline(
        &mut connection,
        Some(Instant::now() + CHUNK_DEADLINE),
        |connection| {
            let error = sqlite_error(&table.path);
            let mut statement = connection.prepare_cached(&sql).map_err(&error)?;
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
            Ok((features, last, read < CHUNK))
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
    let cursor = Cursor {
        state,
        rows: Arc::new(rows),
        work,
        after: None,
        done: false,
        buffer: VecDeque::new(),
    };
    // Fused: a consumer may poll again after the end.
    Box::pin(futures::stream::StreamExt::fuse(futures::stream::unfold(
        cursor,
        |mut cursor| async move {
            loop {
                if let Some(feature) = cursor.buffer.pop_front() {
                    return Some((Ok(feature), cursor));
                }
                if cursor.done {
                    return None;
                }
                let (state, rows, after) =
                    (cursor.state.clone(), cursor.rows.clone(), cursor.after);
                match cursor
                    .work
                    .run_bulk(move || chunk(&state, &rows, after))
                    .await
                {
                    Ok((features, last, done)) => {
                        cursor.buffer.extend(features);
                        cursor.after = last;
                        cursor.done = done;
                    }
                    Err(error) => {
                        cursor.done = true;
                        cursor.buffer.clear();
                        return Some((Err(error), cursor));
                    }
                }
            }
        },
    )))
}
