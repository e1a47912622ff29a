//! Geoservices queries answered by SQLite on the cached GeoPackage, so memory stays the size of
//! the answer and a page of a layer of millions of features costs milliseconds.
//!
//! - `where` and `objectIds` become a `WHERE` clause with bound parameters
//!   ([`Predicate::to_sql`]; ids through `json_each`, one parameter however many); the OBJECTID
//!   is the integer primary key, or the GeoPackage fid.
//! - `geometry` filters read candidates from the GeoPackage R-tree (`rtree_<table>_<column>`)
//!   with the filter's envelope in the layer's CRS, then test each candidate exactly in
//!   EPSG:4326. When the filter (intersects, or envelope intersects) is the query's only
//!   condition, pages and counts take the candidates from the R-tree in fid order: a candidate
//!   whose box lies inside the filter's image in the layer's CRS ([`Outline`]) matches without
//!   its row being read, one wholly outside it is dropped; only the page's rows, and the
//!   geometries of the other candidates as far as the page needs, are read. On point layers of
//!   10,000 rows or more the candidates come from a k-d tree copy of the R-tree in memory
//!   ([`crate::spatial`]) once it is built.
//! - Pages: `orderByFields` (then the fid, so pages are stable) with `LIMIT page + 1 OFFSET`:
//!   the extra row tells whether more exist. A page is streamed: its features go to the output
//!   in chunks of [`PAGE_CHUNK`] as they are read, and the output cuts the extra one
//!   (`filtersApplied.limit` is false). A page whose fids are known first (R-tree candidates, an
//!   equality index) reads its second half on another thread when one is free
//!   ([`Plan::stream_page`]).
//! - `returnCountOnly` is `count(*)` (the row count read when the layer was opened, when nothing
//!   filters); `returnIdsOnly` reads one column; `returnExtentOnly` aggregates the R-tree;
//!   `outStatistics` with `groupByFieldsForStatistics` is `GROUP BY` with SQL aggregates, and
//!   `returnDistinctValues` is `SELECT DISTINCT`, both paged like features.
//! - `outFields` and `returnGeometry` choose the columns read; `outSR` is applied while reading.
//!
//! What SQL cannot answer (a computed OBJECTID, statistics under an exact geometry filter) is left
//! to the output and said in `filtersApplied`: the matching rows are streamed in chunks.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use koop::Epsg;
use koop_geoservices::{
    Case, CompareOp, GeometryFilter, Operand, OutFields, Predicate, Query, Reprojector, SpatialRel,
    SqlParam, Statistic, StatisticType, Value, parse_date_ms,
};
use koop_provider::{FiltersApplied, ProviderError, ProviderRequest, QueryAnswer, Row};
use rusqlite::types::{ToSqlOutput, ValueRef};
use serde_json::{Map, Value as Json};

use crate::gpkg::{self, ColumnKind, RowShape, Table, sqlite_error};
use crate::index;
use crate::layer::{LayerState, reproject_box};
use crate::outline::{Outline, Side};
use crate::spatial::SpatialIndex;
use crate::work::Work;

/// What a pushed-down query produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `returnCountOnly`: the count is the answer.
    Count,
    /// One page of features, and whether more exist.
    Page,
    /// `returnIdsOnly`.
    Ids,
    /// `returnExtentOnly` (with the count for `returnCountOnly`).
    Extent,
    /// `outStatistics`.
    Statistics,
    /// `returnDistinctValues`.
    Distinct,
    /// Every matching row, streamed (the output applies what SQL could not).
    Rows,
}

/// A query turned into SQL.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) kind: Kind,
    query: Query,
    /// `WHERE` conditions and their parameters (the R-tree prefilter among them).
    pub(crate) conditions: Vec<String>,
    pub(crate) params: Vec<SqlParam>,
    /// The exact geometry test of R-tree candidates, in EPSG:4326.
    pub(crate) exact: Option<GeometryFilter>,
    /// What each row reads.
    pub(crate) shape: RowShape,
    /// The OBJECTID's SQL, when it has one.
    object_id: Option<String>,
    /// Page size (`resultRecordCount` capped by `maxRecordCount`).
    page: u64,
    /// From the table's CRS to EPSG:4326.
    pub(crate) to_4326: Reprojector,
    /// From the table's CRS to the output CRS, and from EPSG:4326 to it.
    pub(crate) from_source: Reprojector,
    pub(crate) from_4326: Reprojector,
    /// What the answer applied.
    pub(crate) applied: FiltersApplied,
    /// The output CRS, when not EPSG:4326.
    pub(crate) crs: Option<Epsg>,
    /// The row count, when no filter applies (or an index knows it).
    known_count: Option<u64>,
    /// The page's fids (and one more, when more exist), in order, when an equality index chose
    /// them (the offset applied): read by [`Plan::rows_of`], not by `conditions`.
    preselected_fids: Option<Vec<i64>>,
    /// A column whose equality index would answer this query, not built yet.
    pub(crate) index_column: Option<String>,
    /// The R-tree search of a geometry filter that is the query's only condition, with the
    /// box of sure matches: candidates are then taken from the R-tree in fid order and only
    /// the rows of the page (and the geometries of unsure candidates) are read.
    candidates: Option<Candidates>,
}

/// A geometry filter answered from the GeoPackage R-tree: its search box in the layer's CRS and,
/// when the filter is a rectangle, the outline of its image in the layer's CRS. A candidate whose
/// R-tree box (float32, rounded outwards: it holds the geometry) lies inside the outline
/// intersects the filter for sure, one wholly outside it surely does not; the others are tested
/// exactly.
#[derive(Debug)]
struct Candidates {
    rtree: String,
    /// The R-tree in memory, when it is built: searched instead of SQLite's.
    memory: Option<Arc<SpatialIndex>>,
    /// `[min_x, min_y, max_x, max_y]` searched (the filter's envelope reprojected, grown).
    search: [f64; 4],
    /// Where the filter's image lies, when the filter is a rectangle.
    outline: Option<Outline>,
}

impl Candidates {
    /// Where the box `bounds` lies against the filter (always unsure without an outline).
    fn side(&self, bounds: [f64; 4]) -> Side {
        self.outline
            .as_ref()
            .map_or(Side::Unsure, |outline| outline.side(bounds))
    }
}

/// Whether the filter geometry is its own envelope (a rectangle in EPSG:4326, as an envelope
/// given in EPSG:4326 is).
fn is_rectangle(filter: &GeometryFilter) -> bool {
    let geo_types::Geometry::Polygon(polygon) = &filter.geometry else {
        return false;
    };
    let (min, max) = (filter.envelope.min(), filter.envelope.max());
    polygon.interiors().is_empty()
        && polygon.exterior().0.len() == 5
        && polygon.exterior().0.iter().all(|coord| {
            // The same values, copied: exact comparison is what is meant.
            let same = |a: f64, b: f64| a.total_cmp(&b).is_eq();
            (same(coord.x, min.x) || same(coord.x, max.x))
                && (same(coord.y, min.y) || same(coord.y, max.y))
        })
}

/// The R-tree plan of a geometry filter that is a query's only condition, for the relations a
/// box inside the filter decides (`esriSpatialRelIntersects`, `esriSpatialRelEnvelopeIntersects`).
fn candidates(filter: &GeometryFilter, state: &LayerState) -> Option<Candidates> {
    let table = &state.table;
    if !matches!(
        filter.relation,
        SpatialRel::Intersects | SpatialRel::EnvelopeIntersects
    ) {
        return None;
    }
    let rtree = table.rtree.clone()?;
    let memory = state.spatial.ready();
    // Only a geometry inside the filter's envelope can intersect it, but the envelope of one
    // outside may (the two envelopes are taken in different CRSs); points are their envelope.
    let excludes = filter.relation == SpatialRel::Intersects || memory.is_some();
    let outline = if is_rectangle(filter) {
        Outline::new(&filter.envelope, table.srs.unwrap_or(Epsg::WGS84), excludes)
    } else {
        None
    };
    Some(Candidates {
        rtree,
        memory,
        search: search_box(filter, table)?,
        outline,
    })
}

/// `column = literal` (either way round, the column as it is), as the column and the key an
/// equality index looks up; `Some((column, None))` when the literal can match no row of an
/// indexed column (`int_column = 3.5`).
fn equality(query: &Query, table: &Table) -> Option<(String, Option<index::Key>)> {
    let Predicate::Compare { left, op, right } = &query.predicate else {
        return None;
    };
    if *op != CompareOp::Eq {
        return None;
    }
    let ((Operand::Column(column), Operand::Literal(literal))
    | (Operand::Literal(literal), Operand::Column(column))) = (left, right)
    else {
        return None;
    };
    if column.case != Case::Unchanged || column.name == table.fid {
        return None;
    }
    let key = match (table.column_kind(&column.name)?, literal) {
        (ColumnKind::Text, Value::Text(text)) => Some(index::Key::Text(text.clone())),
        (ColumnKind::Integer, Value::Number(number)) => {
            #[allow(
                clippy::cast_possible_truncation,
                reason = "integral and within i64, checked"
            )]
            let integral =
                (number.fract() == 0.0 && number.abs() < 9.0e18).then_some(*number as i64);
            integral.map(index::Key::Integer)
        }
        _ => return None,
    };
    Some((column.name.clone(), key))
}

fn internal(error: impl std::fmt::Display) -> ProviderError {
    ProviderError::internal(error.to_string(), None)
}

/// The `WHERE` conditions of the predicate and `objectIds`, when every column they name has SQL
/// (a computed `OBJECTID` has none).
fn where_conditions(
    query: &Query,
    table: &Table,
    object_id: Option<&str>,
) -> Option<(Vec<String>, Vec<SqlParam>)> {
    let mut conditions = Vec::new();
    let mut params = Vec::new();
    if !query.predicate.is_always_true() {
        let (sql, bound) = query
            .predicate
            .to_sql(&|column| table.sql_column(&column.name))?;
        conditions.push(format!("({sql})"));
        params.extend(bound);
    }
    if let Some(ids) = &query.object_ids {
        let column = object_id?;
        // One parameter however many ids: no SQLite variable limit to chunk under.
        conditions.push(format!("{column} IN (SELECT value FROM json_each(?))"));
        params.push(SqlParam::Text(
            serde_json::to_string(ids).unwrap_or_else(|_| "[]".to_owned()),
        ));
    }
    Some((conditions, params))
}

/// The R-tree prefilter of a geometry filter (candidates whose box meets the filter's envelope
/// in the layer's CRS); `0` for tables, which have no geometry; nothing without an index.
fn spatial_condition(filter: &GeometryFilter, table: &Table) -> Option<(String, Vec<SqlParam>)> {
    if table.geometry.is_none() {
        return Some(("0".to_owned(), Vec::new()));
    }
    let rtree = table.rtree.as_ref()?;
    let [min_x, min_y, max_x, max_y] = search_box(filter, table)?;
    Some((
        format!(
            "{} IN (SELECT id FROM {} WHERE minx <= ? AND maxx >= ? AND miny <= ? AND maxy >= ?)",
            Table::quoted(&table.fid),
            Table::quoted(rtree)
        ),
        vec![
            SqlParam::Real(max_x),
            SqlParam::Real(min_x),
            SqlParam::Real(max_y),
            SqlParam::Real(min_y),
        ],
    ))
}

/// `[min_x, min_y, max_x, max_y]` of the filter's envelope in the layer's CRS, grown by 1 %
/// (the reprojected box's edges are sampled, not exact): what the R-tree is searched with.
fn search_box(filter: &GeometryFilter, table: &Table) -> Option<[f64; 4]> {
    let (min, max) = (filter.envelope.min(), filter.envelope.max());
    let [min_x, min_y, max_x, max_y] = reproject_box(
        [min.x, min.y, max.x, max.y],
        Epsg::WGS84,
        table.srs.unwrap_or(Epsg::WGS84),
    )?;
    let (dx, dy) = ((max_x - min_x) * 0.01 + 1e-9, (max_y - min_y) * 0.01 + 1e-9);
    Some([min_x - dx, min_y - dy, max_x + dx, max_y + dy])
}

/// The attribute columns a page reads: those asked for and the OBJECTID's, unless the OBJECTID
/// is computed (a hash of the whole feature); every column otherwise.
fn read_columns(query: &Query, state: &LayerState) -> Vec<usize> {
    let table = &state.table;
    match (&query.out_fields, state.object_id_sql()) {
        (OutFields::Fields(names), Some(_)) => (0..table.columns.len())
            .filter(|index| {
                let name = &table.columns[*index].name;
                names.contains(name) || state.metadata.id_field.as_deref() == Some(name)
            })
            .collect(),
        _ => (0..table.columns.len()).collect(),
    }
}

/// `ORDER BY` items: `orderByFields`, then the fid so pages are stable.
fn order_items(query: &Query, table: &Table) -> Option<Vec<String>> {
    let mut order = Vec::new();
    for (name, descending) in &query.order_by {
        let sql = table.sql_column(name)?;
        order.push(format!("{sql}{}", if *descending { " DESC" } else { "" }));
    }
    order.push(Table::quoted(&table.fid));
    Some(order)
}

/// Plans `request` (a `query` of the layer in `state`), or says it is not a valid query.
/// Which plan answers `query`: what SQLite can answer whole, a page, or rows for the output.
fn kind_of(
    query: &Query,
    state: &LayerState,
    where_pushed: bool,
    has_object_id: bool,
    no_exact: bool,
) -> Kind {
    let table = &state.table;
    let has_sql = |name: &String| table.sql_column(name).is_some();
    let statistics_pushed = no_exact
        && query
            .statistics
            .iter()
            .all(|statistic| has_sql(&statistic.field))
        && query.group_by.iter().all(has_sql);
    let distinct_names = distinct_names(query, state);

    if !where_pushed {
        Kind::Rows
    } else if query.count_only && !query.extent_only {
        Kind::Count
    } else if query.extent_only {
        Kind::Extent
    } else if query.ids_only && has_object_id {
        Kind::Ids
    } else if !query.statistics.is_empty() && statistics_pushed {
        Kind::Statistics
    } else if query.distinct
        && query.statistics.is_empty()
        && no_exact
        && distinct_names.iter().all(has_sql)
    {
        Kind::Distinct
    } else if query.returns_features() && order_items(query, table).is_some() {
        Kind::Page
    } else {
        Kind::Rows
    }
}

/// What an equality index did for a plan.
#[derive(Default)]
struct Indexed {
    /// The index to build: it would have answered.
    index_column: Option<String>,
    /// The count it answered.
    count: Option<u64>,
    /// The page's fids (and one more, when more exist), when it chose them.
    fids: Option<Vec<i64>>,
}

/// An equality on a large table, answered from an in-memory index when it is built (counts,
/// and pages in fid order: the page's fids, read by [`Plan::rows_of`]), else a build is asked
/// for.
fn indexed(state: &LayerState, query: &Query, kind: Kind, max_record_count: u32) -> Indexed {
    let table = &state.table;
    if table.count < index::MIN_ROWS
        || !matches!(kind, Kind::Count | Kind::Page)
        || !query.order_by.is_empty()
    {
        return Indexed::default();
    }
    let Some((column, key)) = equality(query, table) else {
        return Indexed::default();
    };
    let Some(built) = state.indexes.ready(&column) else {
        return Indexed {
            index_column: Some(column),
            ..Indexed::default()
        };
    };
    let fids = key.as_ref().map_or(&[][..], |key| built.fids(key));
    if kind == Kind::Count {
        return Indexed {
            count: Some(fids.len() as u64),
            ..Indexed::default()
        };
    }
    let page = query.page_size(max_record_count);
    let start = usize::try_from(query.offset)
        .unwrap_or(usize::MAX)
        .min(fids.len());
    let end = usize::try_from(page.saturating_add(1)).map_or(fids.len(), |more| {
        start.saturating_add(more).min(fids.len())
    });
    Indexed {
        fids: Some(fids[start..end].to_vec()),
        ..Indexed::default()
    }
}

pub(crate) fn plan(
    state: &LayerState,
    request: &ProviderRequest,
    max_record_count: u32,
) -> Result<Plan, ProviderError> {
    let table = &state.table;
    let query = Query::parse(&request.query, &state.schema())?;
    let srs = table.srs.unwrap_or(Epsg::WGS84);
    let object_id = state.object_id_sql();
    let pushed = where_conditions(&query, table, object_id.as_deref());
    let where_pushed = pushed.is_some();
    let (mut conditions, mut params) = pushed.unwrap_or_default();
    let exact = query.geometry.clone();
    let mut rtree_only = None;
    if let Some((condition, bound)) = exact
        .as_ref()
        .and_then(|filter| spatial_condition(filter, table))
    {
        if conditions.is_empty()
            && query.order_by.is_empty()
            && let Some(filter) = &exact
        {
            rtree_only = candidates(filter, state);
        }
        conditions.push(condition);
        params.extend(bound);
    }
    let kind = kind_of(
        &query,
        state,
        where_pushed,
        object_id.is_some(),
        exact.is_none(),
    );
    let Indexed {
        index_column,
        count: indexed_count,
        fids: preselected_fids,
    } = if where_pushed && exact.is_none() {
        indexed(state, &query, kind, max_record_count)
    } else {
        Indexed::default()
    };
    let computed_id = object_id.is_none();
    let columns = match kind {
        Kind::Page => read_columns(&query, state),
        Kind::Rows => (0..table.columns.len()).collect(),
        _ => Vec::new(),
    };
    let geometry = table.geometry.is_some()
        && (exact.is_some()
            || match kind {
                Kind::Page => query.return_geometry || computed_id,
                Kind::Rows => true,
                _ => false,
            });
    // outSR while reading, unless a computed object id must hash the EPSG:4326 geometry.
    let project = matches!(kind, Kind::Page | Kind::Extent) && !computed_id;
    let output = if project || kind == Kind::Extent {
        query.out_epsg
    } else {
        Epsg::WGS84
    };
    let reprojector = |from: Epsg, to: Epsg| Reprojector::new(from, to).map_err(internal);
    let unfiltered = conditions.is_empty() && exact.is_none();
    let answered = !matches!(kind, Kind::Rows | Kind::Page);
    Ok(Plan {
        kind,
        page: query.page_size(max_record_count),
        shape: RowShape::new(table, columns, geometry, state.fid_property()),
        object_id,
        conditions,
        params,
        exact,
        to_4326: reprojector(srs, Epsg::WGS84)?,
        from_source: reprojector(srs, output)?,
        from_4326: reprojector(Epsg::WGS84, output)?,
        applied: FiltersApplied {
            where_clause: where_pushed,
            geometry: true,
            offset: kind == Kind::Page,
            // A page streams its rows and one more: the output cuts it and tells whether more
            // exist.
            limit: false,
            projection: project,
            all: answered,
        },
        crs: (output != Epsg::WGS84).then_some(output),
        known_count: indexed_count.or((unfiltered && kind == Kind::Count).then_some(table.count)),
        preselected_fids,
        index_column,
        candidates: rtree_only.filter(|_| matches!(kind, Kind::Page | Kind::Count)),
        query,
    })
}

/// The fields `returnDistinctValues` reads: those asked for, or every field.
fn distinct_names(query: &Query, state: &LayerState) -> Vec<String> {
    match &query.out_fields {
        OutFields::Fields(names) => names.clone(),
        OutFields::All => state
            .metadata
            .fields
            .iter()
            .map(|field| field.name.clone())
            .collect(),
    }
}

/// A bound parameter as SQLite takes it.
pub(crate) struct Bound<'a>(pub(crate) &'a SqlParam);

impl rusqlite::ToSql for Bound<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self.0 {
            SqlParam::Integer(value) => ToSqlOutput::from(*value),
            SqlParam::Real(value) => ToSqlOutput::from(*value),
            SqlParam::Text(value) => ToSqlOutput::from(value.as_str()),
        })
    }
}

/// Features handed to the output at once while a page is read: small enough that writing
/// starts soon after reading does, large enough that handing over costs little.
const PAGE_CHUNK: usize = 64;

/// Rows of a page from which it is read in two halves at once ([`Plan::stream_page`]).
const SPLIT_ROWS: usize = 256;

/// The second half of a page, read on another thread: its features, its error, or `None`
/// when no pooled connection was free (then nothing was read). Dropped early, it tells the
/// reader to stop.
struct Aside {
    receiver: std::sync::mpsc::Receiver<Option<Result<Vec<Row>, ProviderError>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

/// Features handed to a page's `emit` in chunks of [`PAGE_CHUNK`].
struct Chunks<'a> {
    chunk: Vec<Row>,
    /// The reader still reads.
    open: bool,
    emit: &'a mut dyn FnMut(Vec<Row>) -> bool,
}

impl Chunks<'_> {
    /// Adds a feature; `false` once the reader left.
    fn push(&mut self, feature: Row) -> bool {
        self.chunk.push(feature);
        if self.chunk.len() >= PAGE_CHUNK {
            let full = std::mem::replace(&mut self.chunk, Vec::with_capacity(PAGE_CHUNK));
            self.open = (self.emit)(full);
        }
        self.open
    }

    /// Hands over the last chunk.
    fn finish(mut self) {
        if self.open && !self.chunk.is_empty() {
            (self.emit)(std::mem::take(&mut self.chunk));
        }
    }
}

impl Aside {
    /// Waits for the other thread's answer.
    fn receive(self) -> Option<Result<Vec<Row>, ProviderError>> {
        self.receiver
            .recv()
            .unwrap_or_else(|_| Some(Err(internal("a background task of this server failed"))))
    }
}

impl Drop for Aside {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What running a plan answered.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// `returnCountOnly`.
    Count(u64),
    /// Ids, an extent, statistics or distinct values.
    Answer(QueryAnswer),
}

/// `SELECT fid, geometry (or NULL for a table) FROM table` and `filter` (a `WHERE` clause or
/// nothing).
fn fid_and_geometry(table: &Table, filter: &str) -> String {
    format!(
        "SELECT {}, {} FROM {}{filter}",
        Table::quoted(&table.fid),
        table
            .geometry
            .as_deref()
            .map_or_else(|| "NULL".to_owned(), Table::quoted),
        Table::quoted(&table.name),
    )
}

fn where_sql(conditions: &[String]) -> String {
    if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    }
}

/// `LIMIT ? OFFSET ?` for a page of `page` rows (one more, to tell whether more exist).
fn limit(sql: &mut String, params: &mut Vec<SqlParam>, page: u64, offset: u64) {
    sql.push_str(" LIMIT ? OFFSET ?");
    params.push(SqlParam::Integer(
        i64::try_from(page.saturating_add(1)).unwrap_or(i64::MAX),
    ));
    params.push(SqlParam::Integer(i64::try_from(offset).unwrap_or(i64::MAX)));
}

/// An Esri attribute of a column value: dates as epoch milliseconds, the rest as
/// [`gpkg::json_value`] reads it.
fn esri_value(value: ValueRef<'_>, kind: ColumnKind) -> Json {
    if kind == ColumnKind::Date
        && let ValueRef::Text(text) = value
        && let Some(ms) = parse_date_ms(&String::from_utf8_lossy(text))
    {
        return Json::from(ms);
    }
    gpkg::json_value(value, kind)
}

impl Plan {
    /// Whether the plan searches the layer's R-tree for its candidates (and would search a
    /// copy in memory, were there one).
    pub(crate) fn searches_rtree(&self) -> bool {
        self.candidates
            .as_ref()
            .is_some_and(|candidates| candidates.memory.is_none())
    }

    /// Runs a plan of any kind but [`Kind::Rows`] on a pooled connection, interrupted at
    /// `deadline`. Blocking.
    pub(crate) fn run(
        &self,
        state: &LayerState,
        deadline: Option<Instant>,
    ) -> Result<Outcome, ProviderError> {
        if let Some(count) = self.known_count {
            return Ok(Outcome::Count(count));
        }
        let mut connection = state.connections.get()?;
        gpkg::until_deadline(&mut connection, deadline, |connection| match self.kind {
            Kind::Count => self.count(&state.table, connection).map(Outcome::Count),
            Kind::Page => Err(internal("a page is streamed, not run")),
            Kind::Ids => self.ids(&state.table, connection),
            Kind::Extent => self.extent(&state.table, connection),
            Kind::Statistics => self.statistics(&state.table, connection),
            Kind::Distinct => self.distinct(state, connection),
            Kind::Rows => Err(internal("a stream of rows is read in chunks, not run")),
        })
    }

    /// Visits the rows of `sql` whose geometry passes the exact filter (every row without one),
    /// with the geometry in EPSG:4326 when it was tested; `visit` returns `false` to stop.
    fn each_match(
        &self,
        table: &Table,
        connection: &rusqlite::Connection,
        sql: &str,
        params: &[SqlParam],
        mut visit: impl FnMut(
            &rusqlite::Row<'_>,
            Option<geo_types::Geometry<f64>>,
        ) -> Result<bool, ProviderError>,
    ) -> Result<(), ProviderError> {
        let error = sqlite_error(&table.path);
        let mut statement = gpkg::prepare(connection, sql).map_err(&error)?;
        let mut rows = statement
            .query(rusqlite::params_from_iter(params.iter().map(Bound)))
            .map_err(&error)?;
        while let Some(row) = rows.next().map_err(&error)? {
            let geometry = match &self.exact {
                Some(filter) => {
                    let Some(mut shape) = gpkg::row_geometry(table, row)? else {
                        continue;
                    };
                    if self.to_4326.geometry(&mut shape).is_err() || !filter.matches(&shape) {
                        continue;
                    }
                    Some(shape)
                }
                None => None,
            };
            if !visit(row, geometry)? {
                break;
            }
        }
        Ok(())
    }

    /// `SELECT fid, geometry (when tested exactly) FROM table WHERE …`.
    fn candidates(&self, table: &Table) -> String {
        let geometry = match (&table.geometry, &self.exact) {
            (Some(column), Some(_)) => Table::quoted(column),
            _ => "NULL".to_owned(),
        };
        format!(
            "SELECT {}, {geometry} FROM {}{}",
            Table::quoted(&table.fid),
            Table::quoted(&table.name),
            where_sql(&self.conditions)
        )
    }

    fn count(
        &self,
        table: &Table,
        connection: &rusqlite::Connection,
    ) -> Result<u64, ProviderError> {
        let error = sqlite_error(&table.path);
        if let Some(candidates) = &self.candidates {
            let found = Self::rtree_candidates(candidates, table, connection)?;
            let unsure: Vec<i64> = found
                .iter()
                .filter(|(_, sure)| !sure)
                .map(|(fid, _)| *fid)
                .collect();
            let sure = found.len() - unsure.len();
            let passed = self.exact_matches(table, connection, &unsure)?;
            return Ok((sure + passed.len()) as u64);
        }
        if self.exact.is_none() {
            let sql = format!(
                "SELECT count(*) FROM {}{}",
                Table::quoted(&table.name),
                where_sql(&self.conditions)
            );
            let mut statement = gpkg::prepare(connection, &sql).map_err(&error)?;
            let count: i64 = statement
                .query_row(
                    rusqlite::params_from_iter(self.params.iter().map(Bound)),
                    |row| row.get(0),
                )
                .map_err(&error)?;
            return Ok(u64::try_from(count).unwrap_or(0));
        }
        let mut count = 0;
        self.each_match(
            table,
            connection,
            &self.candidates(table),
            &self.params,
            |_, _| {
                count += 1;
                Ok(true)
            },
        )?;
        Ok(count)
    }

    /// Runs a [`Kind::Page`] plan on a pooled connection, interrupted at `deadline`, handing
    /// its features to `emit` in chunks of [`PAGE_CHUNK`] as they are read: the page's and one
    /// more when more exist (the output cuts the page and says `exceededTransferLimit`). Stops
    /// early when `emit` returns `false` (the reader left). Blocking.
    ///
    /// A page whose fids are known before its rows are read (an R-tree or equality-index plan)
    /// of at least [`SPLIT_ROWS`] rows is read in two halves at once when a query permit and a
    /// second pooled connection are free right now: the second half on another blocking
    /// thread, handed over when the first is out. One client's page then takes about half the
    /// time on an idle machine; under load no permit is free and nothing is split.
    pub(crate) fn stream_page(
        self: &Arc<Self>,
        state: &LayerState,
        work: &Work,
        deadline: Option<Instant>,
        emit: &mut dyn FnMut(Vec<Row>) -> bool,
    ) -> Result<(), ProviderError> {
        let mut connection = state.connections.get()?;
        gpkg::until_deadline(&mut connection, deadline, |connection| {
            let mut out = Chunks {
                chunk: Vec::with_capacity(PAGE_CHUNK),
                open: true,
                emit,
            };
            let table = &state.table;
            let Some(fids) = self.page_fids(table, connection)? else {
                self.page(table, connection, &mut |feature| out.push(feature))?;
                out.finish();
                return Ok(());
            };
            let middle = fids.len() / 2;
            let aside = if fids.len() >= SPLIT_ROWS {
                self.read_aside(state, work, fids[middle..].to_vec(), deadline)
            } else {
                None
            };
            let first = if aside.is_some() {
                &fids[..middle]
            } else {
                &fids[..]
            };
            self.rows_of(table, connection, first, &mut |feature| out.push(feature))?;
            if let Some(aside) = aside
                && out.open
            {
                match aside.receive() {
                    Some(Ok(features)) => {
                        for feature in features {
                            if !out.push(feature) {
                                break;
                            }
                        }
                    }
                    Some(Err(error)) => return Err(error),
                    // No connection was free after all: read it here.
                    None => {
                        self.rows_of(table, connection, &fids[middle..], &mut |feature| {
                            out.push(feature)
                        })?;
                    }
                }
            }
            out.finish();
            Ok(())
        })
    }

    /// The page's fids (and one more, when more exist), when they are known before its rows
    /// are read: an R-tree plan (candidates tested) or a page an equality index chose.
    fn page_fids(
        &self,
        table: &Table,
        connection: &rusqlite::Connection,
    ) -> Result<Option<Vec<i64>>, ProviderError> {
        if let Some(candidates) = &self.candidates {
            return self.candidate_page(candidates, table, connection).map(Some);
        }
        Ok(self.preselected_fids.clone())
    }

    /// Starts reading the rows of `fids` on another blocking thread, with its own query permit
    /// and pooled connection; `None` when no permit is free now (nothing is started).
    fn read_aside(
        self: &Arc<Self>,
        state: &LayerState,
        work: &Work,
        fids: Vec<i64>,
        deadline: Option<Instant>,
    ) -> Option<Aside> {
        let permit = work.try_query_permit()?;
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (plan, state, stopped) = (self.clone(), state.clone(), stop.clone());
        runtime.spawn_blocking(move || {
            let _permit = permit;
            let read = state.connections.try_get().map(|connection| {
                let mut connection = connection?;
                gpkg::until_deadline(&mut connection, deadline, |connection| {
                    let mut features = Vec::with_capacity(fids.len());
                    plan.rows_of(&state.table, connection, &fids, &mut |feature| {
                        features.push(feature);
                        !stopped.load(std::sync::atomic::Ordering::Relaxed)
                    })?;
                    Ok(features)
                })
            });
            let _ = sender.send(read);
        });
        Some(Aside { receiver, stop })
    }

    /// The features of a page and one more, read by SQL (a plan whose fids are not known
    /// first), to `emit` until it returns `false`.
    fn page(
        &self,
        table: &Table,
        connection: &rusqlite::Connection,
        emit: &mut dyn FnMut(Row) -> bool,
    ) -> Result<(), ProviderError> {
        let mut sql = self.shape.select(table);
        sql.push_str(&where_sql(&self.conditions));
        let order = order_items(&self.query, table).unwrap_or_default();
        let _ = write!(sql, " ORDER BY {}", order.join(", "));
        let mut params = self.params.clone();
        let (skip, exact) = (self.query.offset, self.exact.is_some());
        if !exact {
            limit(&mut sql, &mut params, self.page, self.query.offset);
        }
        let (mut matched, mut emitted) = (0_u64, 0_u64);
        self.each_match(table, connection, &sql, &params, |row, tested| {
            matched += 1;
            if exact && matched <= skip {
                return Ok(true);
            }
            if emitted > self.page {
                return Ok(false);
            }
            emitted += 1;
            let feature = self.row(table, row, tested)?;
            Ok(emit(feature) && emitted <= self.page)
        })
    }

    /// The feature of a row of [`RowShape::select`]: its geometry (`tested`, in EPSG:4326, when
    /// the exact test read it) in the output CRS, and its values ([`RowShape::values`]).
    fn row(
        &self,
        table: &Table,
        row: &rusqlite::Row<'_>,
        tested: Option<geo_types::Geometry<f64>>,
    ) -> Result<Row, ProviderError> {
        let fid: i64 = row.get(0).map_err(sqlite_error(&table.path))?;
        let (shape, reprojector) = match tested {
            Some(shape) => (Some(shape), &self.from_4326),
            None if self.shape.geometry => (gpkg::row_geometry(table, row)?, &self.from_source),
            None => (None, &self.from_source),
        };
        let geometry = match shape {
            Some(mut shape) => {
                reprojector.geometry(&mut shape).map_err(|cause| {
                    internal(format!("feature {fid} of {}: {cause}", table.name))
                })?;
                Some(geojson::Geometry::from(&shape))
            }
            None => None,
        };
        let values = self.shape.values(table, row)?;
        Ok(Row {
            id: Some(geojson::feature::Id::Number(fid.into())),
            geometry,
            values,
        })
    }

    /// The R-tree's candidates but those surely outside the filter, in no particular order,
    /// each with whether it surely matches ([`Candidates::side`] of its box).
    fn rtree_candidates(
        candidates: &Candidates,
        table: &Table,
        connection: &rusqlite::Connection,
    ) -> Result<Vec<(i64, bool)>, ProviderError> {
        if let Some(memory) = &candidates.memory {
            return Ok(memory.candidates(candidates.search, |bounds| candidates.side(bounds)));
        }
        let error = sqlite_error(&table.path);
        let sql = format!(
            "SELECT id, minx, maxx, miny, maxy FROM {} WHERE minx <= ?1 AND maxx >= ?2 AND miny <= ?3 AND maxy >= ?4",
            Table::quoted(&candidates.rtree)
        );
        let [min_x, min_y, max_x, max_y] = candidates.search;
        let mut statement = gpkg::prepare(connection, &sql).map_err(&error)?;
        let mut rows = statement
            .query(rusqlite::params![max_x, min_x, max_y, min_y])
            .map_err(&error)?;
        let mut found = Vec::new();
        while let Some(row) = rows.next().map_err(&error)? {
            let fid: i64 = row.get(0).map_err(&error)?;
            let corner = |index| row.get::<_, f64>(index).map_err(&error);
            let (a, c, b, d) = (corner(1)?, corner(2)?, corner(3)?, corner(4)?);
            match candidates.side([a, b, c, d]) {
                Side::Inside => found.push((fid, true)),
                Side::Unsure => found.push((fid, false)),
                Side::Outside => {}
            }
        }
        Ok(found)
    }

    /// Of `fids`, those whose geometry passes the exact test.
    fn exact_matches(
        &self,
        table: &Table,
        connection: &rusqlite::Connection,
        fids: &[i64],
    ) -> Result<std::collections::HashSet<i64>, ProviderError> {
        let mut passed = std::collections::HashSet::new();
        if fids.is_empty() {
            return Ok(passed);
        }
        let sql = fid_and_geometry(
            table,
            &format!(
                " WHERE {} IN (SELECT value FROM json_each(?))",
                Table::quoted(&table.fid)
            ),
        );
        let list = SqlParam::Text(serde_json::to_string(fids).unwrap_or_else(|_| "[]".to_owned()));
        let error = sqlite_error(&table.path);
        self.each_match(table, connection, &sql, &[list], |row, _| {
            passed.insert(row.get::<_, i64>(0).map_err(&error)?);
            Ok(true)
        })?;
        Ok(passed)
    }

    /// The fids of a page (and one more, when more exist) of an R-tree plan: sure candidates
    /// are counted without reading them, unsure ones are tested in batches as far as needed.
    fn candidate_page(
        &self,
        candidates: &Candidates,
        table: &Table,
        connection: &rusqlite::Connection,
    ) -> Result<Vec<i64>, ProviderError> {
        let mut found = Self::rtree_candidates(candidates, table, connection)?;
        let skip = self.query.offset;
        let wanted = usize::try_from(self.page.saturating_add(1)).unwrap_or(usize::MAX);
        // Only the first `skip + wanted` matches in fid order can be on the page, and at most the
        // unsure candidates among the first `skip + wanted + unsure` fail: the later ones need
        // no sorting (a 1,000-row page of a 1° envelope sorts 1,000 of its ~6,000 candidates).
        let unsure = found.iter().filter(|(_, sure)| !sure).count();
        let needed = usize::try_from(skip)
            .unwrap_or(usize::MAX)
            .saturating_add(wanted)
            .saturating_add(unsure);
        if needed < found.len() {
            found.select_nth_unstable_by_key(needed, |(fid, _)| *fid);
            found.truncate(needed);
        }
        found.sort_unstable_by_key(|(fid, _)| *fid);
        let (mut matched, mut page) = (0_u64, Vec::new());
        let mut rest = found.as_slice();
        while !rest.is_empty() && page.len() < wanted {
            // Every candidate may match: look at as many as could still be needed.
            let needed = usize::try_from(skip.saturating_sub(matched))
                .unwrap_or(usize::MAX)
                .saturating_add(wanted - page.len())
                .max(64)
                .min(rest.len());
            let (batch, after) = rest.split_at(needed);
            rest = after;
            let unsure: Vec<i64> = batch
                .iter()
                .filter(|(_, sure)| !sure)
                .map(|(fid, _)| *fid)
                .collect();
            let passed = self.exact_matches(table, connection, &unsure)?;
            for (fid, sure) in batch {
                if !(*sure || passed.contains(fid)) {
                    continue;
                }
                matched += 1;
                if matched > skip {
                    page.push(*fid);
                    if page.len() == wanted {
                        break;
                    }
                }
            }
        }
        Ok(page)
    }

    /// The features of `fids` (sorted, already known to match), to `emit` until it returns
    /// `false`.
    fn rows_of(
        &self,
        table: &Table,
        connection: &rusqlite::Connection,
        fids: &[i64],
        emit: &mut dyn FnMut(Row) -> bool,
    ) -> Result<(), ProviderError> {
        if fids.is_empty() {
            return Ok(());
        }
        let fid = Table::quoted(&table.fid);
        // One JSON parameter, not one `?` per fid: SQLite (built with STAT4) re-prepares a
        // statement whose bound values the planner looked at whenever they change, which a list
        // of 1,001 rowid parameters made it do on every page (~15 % of a page's time).
        let sql = format!(
            "{} WHERE {fid} IN (SELECT value FROM json_each(?)) ORDER BY {fid}",
            self.shape.select(table)
        );
        let error = sqlite_error(&table.path);
        let list = serde_json::to_string(fids).unwrap_or_else(|_| "[]".to_owned());
        let mut statement = gpkg::prepare(connection, &sql).map_err(&error)?;
        let mut rows = statement.query([list]).map_err(&error)?;
        while let Some(row) = rows.next().map_err(&error)? {
            if !emit(self.row(table, row, None)?) {
                break;
            }
        }
        Ok(())
    }

    fn ids(
        &self,
        table: &Table,
        connection: &rusqlite::Connection,
    ) -> Result<Outcome, ProviderError> {
        let column = self
            .object_id
            .clone()
            .unwrap_or_else(|| Table::quoted(&table.fid));
        let geometry = match (&table.geometry, &self.exact) {
            (Some(geometry), Some(_)) => Table::quoted(geometry),
            _ => "NULL".to_owned(),
        };
        let sql = format!(
            "SELECT {column}, {geometry} FROM {}{} ORDER BY {column}",
            Table::quoted(&table.name),
            where_sql(&self.conditions)
        );
        let error = sqlite_error(&table.path);
        let mut ids = Vec::new();
        self.each_match(table, connection, &sql, &self.params, |row, _| {
            ids.push(row.get::<_, i64>(0).map_err(&error)?);
            Ok(true)
        })?;
        Ok(Outcome::Answer(QueryAnswer::ObjectIds(ids)))
    }

    fn extent(
        &self,
        table: &Table,
        connection: &rusqlite::Connection,
    ) -> Result<Outcome, ProviderError> {
        let count = if self.query.count_only {
            Some(self.count(table, connection)?)
        } else {
            None
        };
        let output = self.crs.unwrap_or(Epsg::WGS84);
        let error = sqlite_error(&table.path);
        let grow = |bounds: &mut Option<[f64; 4]>, [a, b, c, d]: [f64; 4]| {
            *bounds = Some(match *bounds {
                Some([x0, y0, x1, y1]) => [x0.min(a), y0.min(b), x1.max(c), y1.max(d)],
                None => [a, b, c, d],
            });
        };
        let extent = match (&table.rtree, &self.exact) {
            (Some(rtree), None) => {
                // The R-tree holds every geometry's box: aggregate it, filtered like the rows.
                let filter = if self.conditions.is_empty() {
                    String::new()
                } else {
                    format!(
                        " WHERE id IN (SELECT {} FROM {}{})",
                        Table::quoted(&table.fid),
                        Table::quoted(&table.name),
                        where_sql(&self.conditions)
                    )
                };
                let srs = table.srs.unwrap_or(Epsg::WGS84);
                let reprojector = Reprojector::new(srs, output).map_err(internal)?;
                if reprojector.is_identity() {
                    // GDAL's fast extent: the boxes' aggregate (float32, rounded outwards).
                    let sql = format!(
                        "SELECT min(minx), min(miny), max(maxx), max(maxy) FROM {}{filter}",
                        Table::quoted(rtree)
                    );
                    let mut statement = gpkg::prepare(connection, &sql).map_err(&error)?;
                    let bounds: (Option<f64>, Option<f64>, Option<f64>, Option<f64>) = statement
                        .query_row(
                            rusqlite::params_from_iter(self.params.iter().map(Bound)),
                            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
                        )
                        .map_err(&error)?;
                    match bounds {
                        (Some(a), Some(b), Some(c), Some(d)) => Some([a, b, c, d]),
                        _ => None,
                    }
                } else {
                    Self::reprojected_boxes(
                        table,
                        connection,
                        rtree,
                        &filter,
                        &self.params,
                        &reprojector,
                    )?
                }
            }
            _ if table.geometry.is_none() => None,
            _ => {
                // Box of each matching geometry, in EPSG:4326.
                let mut bounds = None;
                let sql = fid_and_geometry(table, &where_sql(&self.conditions));
                self.each_match(table, connection, &sql, &self.params, |row, tested| {
                    let shape = match tested {
                        Some(shape) => Some(shape),
                        None => gpkg::row_geometry(table, row)?.and_then(|mut shape| {
                            self.to_4326.geometry(&mut shape).ok().map(|()| shape)
                        }),
                    };
                    if let Some(rect) = shape.as_ref().and_then(geo::BoundingRect::bounding_rect) {
                        grow(
                            &mut bounds,
                            [rect.min().x, rect.min().y, rect.max().x, rect.max().y],
                        );
                    }
                    Ok(true)
                })?;
                bounds.and_then(|bounds| reproject_box(bounds, Epsg::WGS84, output))
            }
        };
        Ok(Outcome::Answer(QueryAnswer::Extent { extent, count }))
    }

    /// The extent in another CRS of the R-tree boxes `filter` selects: each box reprojected (a
    /// point's box is the point), the results joined. (The aggregate's box reprojected is far
    /// larger than the features: one grid's edges are not the other's.)
    fn reprojected_boxes(
        table: &Table,
        connection: &rusqlite::Connection,
        rtree: &str,
        filter: &str,
        params: &[SqlParam],
        reprojector: &Reprojector,
    ) -> Result<Option<[f64; 4]>, ProviderError> {
        let error = sqlite_error(&table.path);
        let sql = format!(
            "SELECT minx, miny, maxx, maxy FROM {}{filter}",
            Table::quoted(rtree)
        );
        let mut statement = gpkg::prepare(connection, &sql).map_err(&error)?;
        let mut rows = statement
            .query(rusqlite::params_from_iter(params.iter().map(Bound)))
            .map_err(&error)?;
        let mut bounds: Option<[f64; 4]> = None;
        while let Some(row) = rows.next().map_err(&error)? {
            let corner = |index| row.get::<_, f64>(index).map_err(&error);
            let (a, b, c, d) = (corner(0)?, corner(1)?, corner(2)?, corner(3)?);
            let point = a.total_cmp(&c).is_eq() && b.total_cmp(&d).is_eq();
            let corners: &[(f64, f64)] = if point {
                &[(a, b)]
            } else {
                &[(a, b), (a, d), (c, b), (c, d)]
            };
            for &(x, y) in corners {
                if let Ok((x, y)) = reprojector.position(x, y)
                    && x.is_finite()
                    && y.is_finite()
                {
                    bounds = Some(match bounds {
                        Some([x0, y0, x1, y1]) => [x0.min(x), y0.min(y), x1.max(x), y1.max(y)],
                        None => [x, y, x, y],
                    });
                }
            }
        }
        Ok(bounds)
    }

    fn statistics(
        &self,
        table: &Table,
        connection: &rusqlite::Connection,
    ) -> Result<Outcome, ProviderError> {
        let column = |name: &str| table.sql_column(name).unwrap_or_default();
        let mut select: Vec<String> = self
            .query
            .group_by
            .iter()
            .map(|name| column(name))
            .collect();
        for statistic in &self.query.statistics {
            let field = column(&statistic.field);
            let number = format!("CAST({field} AS REAL)");
            select.push(match statistic.kind {
                StatisticType::Count => format!("count({field})"),
                StatisticType::Sum => format!("sum({number})"),
                StatisticType::Min => format!("min({field})"),
                StatisticType::Max => format!("max({field})"),
                StatisticType::Avg => format!("avg({number})"),
                // Sample variance from the sums: (Σx² − (Σx)²/n) / (n − 1).
                StatisticType::Var | StatisticType::Stddev => format!(
                    "CASE WHEN count({field}) > 1 THEN (sum({number} * {number}) - sum({number}) * sum({number}) / count({field})) / (count({field}) - 1) END"
                ),
            });
        }
        let mut sql = format!(
            "SELECT {} FROM {}{}",
            select.join(", "),
            Table::quoted(&table.name),
            where_sql(&self.conditions)
        );
        if !self.query.group_by.is_empty() {
            let groups: Vec<String> = self
                .query
                .group_by
                .iter()
                .map(|name| column(name))
                .collect();
            let _ = write!(sql, " GROUP BY {}", groups.join(", "));
            let order: Vec<String> = if self.query.order_by.is_empty() {
                // In the order of each group's first feature, as the reference Koop answers.
                vec![format!("min({})", Table::quoted(&table.fid))]
            } else {
                self.query
                    .order_by
                    .iter()
                    .map(|(name, descending)| {
                        let sql = self
                            .query
                            .statistics
                            .iter()
                            .position(|statistic| statistic.out_name.eq_ignore_ascii_case(name))
                            .map_or_else(
                                || column(name),
                                |index| format!("{}", self.query.group_by.len() + index + 1),
                            );
                        format!("{sql}{}", if *descending { " DESC" } else { "" })
                    })
                    .collect()
            };
            let _ = write!(sql, " ORDER BY {}", order.join(", "));
        }
        let groups = self.query.group_by.len();
        self.attribute_rows(connection, table, sql, |row, error| {
            let mut attributes = Map::new();
            for (index, statistic) in self.query.statistics.iter().enumerate() {
                let value = row.get_ref(groups + index).map_err(error)?;
                attributes.insert(
                    statistic.out_name.clone(),
                    statistic_value(statistic, value, table),
                );
            }
            for (index, name) in self.query.group_by.iter().enumerate() {
                let value = row.get_ref(index).map_err(error)?;
                let kind = table.column_kind(name).unwrap_or(ColumnKind::Text);
                attributes.insert(name.clone(), esri_value(value, kind));
            }
            Ok(attributes)
        })
    }

    /// Runs `sql` (this query's parameters, its page and offset appended) and reads up to a
    /// page of rows with `read`; one row more than the page means `exceededTransferLimit`.
    fn attribute_rows(
        &self,
        connection: &rusqlite::Connection,
        table: &Table,
        mut sql: String,
        read: impl Fn(
            &rusqlite::Row<'_>,
            &dyn Fn(rusqlite::Error) -> ProviderError,
        ) -> Result<Map<String, Json>, ProviderError>,
    ) -> Result<Outcome, ProviderError> {
        let mut params = self.params.clone();
        limit(&mut sql, &mut params, self.page, self.query.offset);
        let error = sqlite_error(&table.path);
        let mut statement = gpkg::prepare(connection, &sql).map_err(&error)?;
        let mut rows = statement
            .query(rusqlite::params_from_iter(params.iter().map(Bound)))
            .map_err(&error)?;
        let (mut out, mut exceeded) = (Vec::new(), false);
        while let Some(row) = rows.next().map_err(&error)? {
            if out.len() as u64 >= self.page {
                exceeded = true;
                break;
            }
            out.push(read(row, &error)?);
        }
        Ok(Outcome::Answer(QueryAnswer::Rows {
            rows: out,
            exceeded,
        }))
    }

    fn distinct(
        &self,
        state: &LayerState,
        connection: &rusqlite::Connection,
    ) -> Result<Outcome, ProviderError> {
        let table = &state.table;
        let names = distinct_names(&self.query, state);
        let columns: Vec<String> = names
            .iter()
            .map(|name| table.sql_column(name).unwrap_or_default())
            .collect();
        let order: Vec<String> = if self.query.order_by.is_empty() {
            columns.clone()
        } else {
            self.query
                .order_by
                .iter()
                .filter_map(|(name, descending)| {
                    Some(format!(
                        "{}{}",
                        table.sql_column(name)?,
                        if *descending { " DESC" } else { "" }
                    ))
                })
                .collect()
        };
        let sql = format!(
            "SELECT DISTINCT {} FROM {}{} ORDER BY {}",
            columns.join(", "),
            Table::quoted(&table.name),
            where_sql(&self.conditions),
            order.join(", ")
        );
        self.attribute_rows(connection, table, sql, |row, error| {
            let mut attributes = Map::new();
            for (index, name) in names.iter().enumerate() {
                let value = row.get_ref(index).map_err(error)?;
                let kind = table.column_kind(name).unwrap_or(ColumnKind::Text);
                attributes.insert(name.clone(), esri_value(value, kind));
            }
            Ok(attributes)
        })
    }
}

/// A statistic's value: a date's minimum or maximum as epoch milliseconds, numbers as numbers.
fn statistic_value(statistic: &Statistic, value: ValueRef<'_>, table: &Table) -> Json {
    let kind = table
        .column_kind(&statistic.field)
        .unwrap_or(ColumnKind::Text);
    let value = match (statistic.kind, value) {
        (StatisticType::Stddev, ValueRef::Real(variance)) => {
            return serde_json::Number::from_f64(variance.max(0.0).sqrt())
                .map_or(Json::Null, Json::Number);
        }
        (StatisticType::Min | StatisticType::Max, value) => return esri_value(value, kind),
        (_, value) => value,
    };
    match value {
        ValueRef::Integer(number) => Json::from(number),
        ValueRef::Real(number) => {
            serde_json::Number::from_f64(number).map_or(Json::Null, Json::Number)
        }
        ValueRef::Text(text) => Json::String(String::from_utf8_lossy(text).into_owned()),
        ValueRef::Null | ValueRef::Blob(_) => Json::Null,
    }
}
