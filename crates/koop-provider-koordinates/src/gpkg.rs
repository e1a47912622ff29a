//! Reading a cached GeoPackage: its feature table, and its features as GeoJSON in EPSG:4326.

use std::path::{Path, PathBuf};

use geozero::ToGeo;
use geozero::wkb::GpkgWkb;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use koop::Epsg;
use koop_provider::{Field, FieldType, ProviderError};

/// How a column's values become JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColumnKind {
    Integer,
    Real,
    Text,
    Date,
    Boolean,
}

impl ColumnKind {
    pub(crate) fn field_type(self) -> FieldType {
        match self {
            Self::Integer => FieldType::Integer,
            Self::Real => FieldType::Double,
            Self::Date => FieldType::Date,
            Self::Text | Self::Boolean => FieldType::String,
        }
    }

    /// From a SQLite declared type.
    fn from_declared(declared: &str) -> Self {
        let declared = declared.to_ascii_uppercase();
        if declared.contains("BOOL") {
            Self::Boolean
        } else if declared.contains("INT") {
            Self::Integer
        } else if declared.contains("REAL")
            || declared.contains("DOUBLE")
            || declared.contains("FLOAT")
            || declared.contains("NUMERIC")
        {
            Self::Real
        } else if declared.starts_with("DATE") || declared.contains("TIMESTAMP") {
            Self::Date
        } else {
            Self::Text
        }
    }
}

/// An attribute column of the feature table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Column {
    pub(crate) name: String,
    pub(crate) kind: ColumnKind,
}

/// The feature (or attribute) table of a GeoPackage.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Table {
    pub(crate) path: PathBuf,
    pub(crate) name: String,
    /// The `INTEGER PRIMARY KEY` column (GeoPackage's `fid`), the features' GeoJSON `id`.
    pub(crate) fid: String,
    pub(crate) geometry: Option<String>,
    /// The geometry column's type as `gpkg_geometry_columns` names it (`POINT`, `MULTIPOLYGON`,
    /// `GEOMETRY`, …), upper case.
    pub(crate) geometry_type_name: Option<String>,
    /// CRS of the geometries.
    pub(crate) srs: Option<Epsg>,
    /// Attribute columns, in table order, without `fid` and geometry.
    pub(crate) columns: Vec<Column>,
    /// `[min_x, min_y, max_x, max_y]` in the table's CRS, from `gpkg_contents`.
    pub(crate) bounds: Option<[f64; 4]>,
    /// Number of rows.
    pub(crate) count: u64,
    /// The GeoPackage R-tree spatial index of the geometry column (`rtree_<table>_<column>`:
    /// `id` = fid, `minx`, `maxx`, `miny`, `maxy` in the table's CRS), when there is one.
    pub(crate) rtree: Option<String>,
}

/// Reading a cached GeoPackage failed; the path is for the server's log, never the client.
#[derive(Debug, thiserror::Error)]
#[error("reading the GeoPackage {}", path.display())]
pub(crate) struct GeoPackageError {
    path: PathBuf,
    #[source]
    source: rusqlite::Error,
}

/// The error for a failed SQLite call on the GeoPackage at `path`: the client reads what SQLite
/// said, the log also where. A statement interrupted at its request's deadline is
/// [`past_deadline`].
pub(crate) fn sqlite_error(path: &Path) -> impl Fn(rusqlite::Error) -> ProviderError + '_ {
    move |source| {
        if source.sqlite_error_code() == Some(rusqlite::ErrorCode::OperationInterrupted) {
            return past_deadline();
        }
        let message = format!("reading the layer's cached GeoPackage failed: {source}");
        ProviderError::internal(
            message,
            Some(std::sync::Arc::new(GeoPackageError {
                path: path.to_owned(),
                source,
            })),
        )
    }
}

/// Opens a GeoPackage read-only.
pub(crate) fn open(path: &Path) -> Result<Connection, ProviderError> {
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite_error(path))
}

/// Longest SQL whose compiled statement is kept in a connection's statement cache. Queries a
/// client repeats (pages, counts, envelopes) are short; a statement compiled from a long
/// `where` clause can take megabytes, and an attacker can send a new one every time.
const CACHED_SQL_BYTES: usize = 4096;

/// A prepared statement: from the connection's cache when its SQL is short, else compiled for
/// this call alone (see [`CACHED_SQL_BYTES`]).
pub(crate) enum Prepared<'c> {
    Cached(rusqlite::CachedStatement<'c>),
    Fresh(rusqlite::Statement<'c>),
}

impl<'c> std::ops::Deref for Prepared<'c> {
    type Target = rusqlite::Statement<'c>;

    fn deref(&self) -> &Self::Target {
        match self {
            Self::Cached(statement) => statement,
            Self::Fresh(statement) => statement,
        }
    }
}

impl std::ops::DerefMut for Prepared<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match self {
            Self::Cached(statement) => statement,
            Self::Fresh(statement) => statement,
        }
    }
}

/// Prepares `sql` on `connection`, cached only when short.
pub(crate) fn prepare<'c>(connection: &'c Connection, sql: &str) -> rusqlite::Result<Prepared<'c>> {
    if sql.len() <= CACHED_SQL_BYTES {
        connection.prepare_cached(sql).map(Prepared::Cached)
    } else {
        connection.prepare(sql).map(Prepared::Fresh)
    }
}

/// Connections open at once per GeoPackage, for pages and counts: more would not run faster on
/// a few cores, and each holds a page cache.
const POOLED_CONNECTIONS: usize = 4;

/// Page cache of a pooled connection, in KiB (SQLite's `cache_size` takes negative KiB): enough
/// for the pages one page of features or one R-tree search touches.
const POOLED_CACHE_KIB: i64 = 6 * 1024;

#[derive(Debug, Default)]
struct PoolState {
    idle: Vec<Connection>,
    open: usize,
}

/// Read-only connections to one GeoPackage, reused across requests: each keeps its parsed
/// schema, its prepared statements and its page cache, so a query does not pay for opening the
/// file and re-reading its pages. At most [`POOLED_CONNECTIONS`] are open; further callers wait
/// for one, which bounds memory (4 × 4 MiB of page cache) under any load.
#[derive(Debug)]
pub(crate) struct ConnectionPool {
    path: PathBuf,
    state: std::sync::Mutex<PoolState>,
    returned: std::sync::Condvar,
}

/// A connection borrowed from a [`ConnectionPool`]; it goes back when dropped.
pub(crate) struct PooledConnection<'a> {
    pool: &'a ConnectionPool,
    connection: Option<Connection>,
}

impl std::ops::Deref for PooledConnection<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.connection
            .as_ref()
            .unwrap_or_else(|| unreachable!("a pooled connection is present until dropped"))
    }
}

impl std::ops::DerefMut for PooledConnection<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        self.connection
            .as_mut()
            .unwrap_or_else(|| unreachable!("a pooled connection is present until dropped"))
    }
}

impl Drop for PooledConnection<'_> {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            self.pool.lock().idle.push(connection);
            self.pool.returned.notify_one();
        }
    }
}

impl ConnectionPool {
    /// A pool for the GeoPackage at `path`; nothing is opened yet.
    pub(crate) fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            state: std::sync::Mutex::new(PoolState::default()),
            returned: std::sync::Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An idle connection, a new one, or (when [`POOLED_CONNECTIONS`] are busy) the next one
    /// returned. Blocking.
    pub(crate) fn get(&self) -> Result<PooledConnection<'_>, ProviderError> {
        let mut state = self.lock();
        loop {
            match self.take(state) {
                Ok(taken) => return taken,
                Err(busy) => {
                    state = self
                        .returned
                        .wait(busy)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
            }
        }
    }

    /// An idle connection or a new one; `None` when [`POOLED_CONNECTIONS`] are busy (never
    /// waits: a caller holding a connection may use it to help another, without the risk of
    /// every connection waiting for one more).
    pub(crate) fn try_get(&self) -> Option<Result<PooledConnection<'_>, ProviderError>> {
        self.take(self.lock()).ok()
    }

    /// An idle connection or a new one, else the lock back (every connection is busy).
    fn take<'a>(
        &'a self,
        mut state: std::sync::MutexGuard<'a, PoolState>,
    ) -> Result<Result<PooledConnection<'a>, ProviderError>, std::sync::MutexGuard<'a, PoolState>>
    {
        if let Some(connection) = state.idle.pop() {
            return Ok(Ok(PooledConnection {
                pool: self,
                connection: Some(connection),
            }));
        }
        if state.open >= POOLED_CONNECTIONS {
            return Err(state);
        }
        state.open += 1;
        drop(state);
        let opened = open(&self.path).and_then(|connection| {
            connection
                .pragma_update(None, "cache_size", -POOLED_CACHE_KIB)
                .map_err(sqlite_error(&self.path))?;
            Ok(connection)
        });
        Ok(match opened {
            Ok(connection) => Ok(PooledConnection {
                pool: self,
                connection: Some(connection),
            }),
            Err(error) => {
                self.lock().open -= 1;
                self.returned.notify_one();
                Err(error)
            }
        })
    }
}

/// Reads the first feature or attribute table of the GeoPackage. Blocking.
pub(crate) fn inspect(path: &Path) -> Result<Table, ProviderError> {
    let connection = open(path)?;
    let error = sqlite_error(path);
    let (name, min_x, min_y, max_x, max_y): (
        String,
        Option<f64>,
        Option<f64>,
        Option<f64>,
        Option<f64>,
    ) = connection
        .query_row(
            "SELECT table_name, min_x, min_y, max_x, max_y FROM gpkg_contents
             WHERE data_type IN ('features', 'attributes') ORDER BY table_name LIMIT 1",
            [],
            |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ))
            },
        )
        .map_err(&error)?;
    let geometry: Option<(String, i64, Option<String>)> = connection
        .query_row(
            "SELECT column_name, srs_id, geometry_type_name FROM gpkg_geometry_columns WHERE table_name = ?1",
            [&name],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2).ok())),
        )
        .ok();
    let mut fid = None;
    let mut columns = Vec::new();
    let mut statement = connection
        .prepare(&format!(
            "PRAGMA table_info(\"{}\")",
            name.replace('"', "\"\"")
        ))
        .map_err(&error)?;
    let mut rows = statement.query([]).map_err(&error)?;
    while let Some(row) = rows.next().map_err(&error)? {
        let column: String = row.get(1).map_err(&error)?;
        let declared: String = row.get(2).map_err(&error)?;
        let primary_key: i64 = row.get(5).map_err(&error)?;
        if primary_key == 1 && declared.eq_ignore_ascii_case("INTEGER") && fid.is_none() {
            fid = Some(column);
        } else if geometry
            .as_ref()
            .is_none_or(|(geometry, ..)| *geometry != column)
        {
            columns.push(Column {
                name: column,
                kind: ColumnKind::from_declared(&declared),
            });
        }
    }
    drop(rows);
    drop(statement);
    let count: i64 = connection
        .query_row(
            &format!("SELECT count(*) FROM \"{}\"", name.replace('"', "\"\"")),
            [],
            |row| row.get(0),
        )
        .map_err(&error)?;
    let rtree = geometry
        .as_ref()
        .map(|(column, ..)| format!("rtree_{name}_{column}"))
        .filter(|rtree| {
            connection
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                    [rtree],
                    |row| row.get::<_, i64>(0),
                )
                .is_ok_and(|found| found == 1)
        });
    Ok(Table {
        rtree,
        path: path.to_owned(),
        fid: fid.unwrap_or_else(|| "rowid".to_owned()),
        geometry: geometry.as_ref().map(|(column, ..)| column.clone()),
        geometry_type_name: geometry
            .as_ref()
            .and_then(|(_, _, kind)| kind.as_ref())
            .map(|kind| kind.to_ascii_uppercase()),
        srs: geometry
            .and_then(|(_, srs, _)| u32::try_from(srs).ok())
            .and_then(|srs| Epsg::new(srs).ok()),
        columns,
        bounds: match (min_x, min_y, max_x, max_y) {
            (Some(a), Some(b), Some(c), Some(d)) => Some([a, b, c, d]),
            _ => None,
        },
        count: u64::try_from(count).unwrap_or(0),
        name,
    })
}

impl Table {
    /// `"name"`, quoted for SQL.
    pub(crate) fn quoted(name: &str) -> String {
        format!("\"{}\"", name.replace('"', "\"\""))
    }

    /// The position of attribute column `name` in `columns`.
    pub(crate) fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|column| column.name == name)
    }

    /// The fields of the table, from its declared column types.
    pub(crate) fn fields(&self) -> Vec<Field> {
        self.columns
            .iter()
            .map(|column| Field::new(&column.name, column.kind.field_type()))
            .collect()
    }

    /// `(min, max)` of an integer column, if it has values.
    pub(crate) fn integer_range(
        &self,
        connection: &Connection,
        column: &str,
    ) -> Option<(i64, i64)> {
        let quoted = Self::quoted(column);
        connection
            .query_row(
                &format!(
                    "SELECT min({quoted}), max({quoted}) FROM {}",
                    Self::quoted(&self.name)
                ),
                [],
                |row| Ok((row.get::<_, Option<i64>>(0)?, row.get::<_, Option<i64>>(1)?)),
            )
            .ok()
            .and_then(|range| match range {
                (Some(min), Some(max)) => Some((min, max)),
                _ => None,
            })
    }

    /// The SQL of column `name`: an attribute column or the fid, quoted; `None` otherwise.
    pub(crate) fn sql_column(&self, name: &str) -> Option<String> {
        (name == self.fid || self.column_index(name).is_some()).then(|| Self::quoted(name))
    }

    /// How column `name` reads (the fid is an integer).
    pub(crate) fn column_kind(&self, name: &str) -> Option<ColumnKind> {
        if name == self.fid {
            return Some(ColumnKind::Integer);
        }
        self.column_index(name)
            .map(|index| self.columns[index].kind)
    }
}

/// A column value as JSON.
pub(crate) fn json_value(value: ValueRef<'_>, kind: ColumnKind) -> serde_json::Value {
    match (value, kind) {
        (ValueRef::Null | ValueRef::Blob(_), _) => serde_json::Value::Null,
        (ValueRef::Integer(number), ColumnKind::Boolean) => {
            serde_json::Value::String((number != 0).to_string())
        }
        (ValueRef::Integer(number), ColumnKind::Text | ColumnKind::Date) => {
            serde_json::Value::String(number.to_string())
        }
        (ValueRef::Integer(number), _) => serde_json::Value::from(number),
        (ValueRef::Real(number), ColumnKind::Text) => serde_json::Value::String(number.to_string()),
        (ValueRef::Real(number), _) => serde_json::Number::from_f64(number)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        (ValueRef::Text(text), ColumnKind::Integer) => {
            let text = String::from_utf8_lossy(text);
            text.trim().parse::<i64>().map_or_else(
                |_| serde_json::Value::String(text.into_owned()),
                serde_json::Value::from,
            )
        }
        (ValueRef::Text(text), _) => {
            serde_json::Value::String(String::from_utf8_lossy(text).into_owned())
        }
    }
}

/// What a query reads of each row: `fid`, the geometry (or `NULL`), then these attribute
/// columns; and whether the fid is also a property (when it is the layer's OBJECTID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RowShape {
    /// Attribute columns, indices into `Table::columns`, in the order selected.
    pub(crate) columns: Vec<usize>,
    /// Whether the geometry column is read.
    pub(crate) geometry: bool,
    /// The property name the fid is written under, when the fid is the OBJECTID.
    pub(crate) fid_property: Option<String>,
    /// The properties of a row with every value null, in order: a row's are a copy with its
    /// values set (copying the map's hash table costs less than hashing every name again).
    template: serde_json::Map<String, serde_json::Value>,
    /// The property names, in the template's order (each once).
    names: std::sync::Arc<[String]>,
    /// Where each column's value goes among [`RowShape::names`] (a name read twice: the last
    /// value read wins).
    slots: Vec<usize>,
}

impl RowShape {
    /// Reads `columns` (indices into `table.columns`), the geometry when `geometry`, and the
    /// fid as the property `fid_property` when it is the OBJECTID.
    pub(crate) fn new(
        table: &Table,
        columns: Vec<usize>,
        geometry: bool,
        fid_property: Option<String>,
    ) -> Self {
        let mut template =
            serde_json::Map::with_capacity(columns.len() + usize::from(fid_property.is_some()));
        for name in fid_property
            .iter()
            .chain(columns.iter().map(|index| &table.columns[*index].name))
        {
            template.insert(name.clone(), serde_json::Value::Null);
        }
        let names: std::sync::Arc<[String]> = template.keys().cloned().collect();
        let slots = columns
            .iter()
            .map(|index| {
                let name = &table.columns[*index].name;
                names
                    .iter()
                    .position(|known| known == name)
                    .unwrap_or_default()
            })
            .collect();
        Self {
            columns,
            geometry,
            fid_property,
            template,
            names,
            slots,
        }
    }

    /// Every column, the geometry, and the fid as a property when it is the OBJECTID.
    pub(crate) fn whole(table: &Table, fid_property: Option<String>) -> Self {
        Self::new(
            table,
            (0..table.columns.len()).collect(),
            table.geometry.is_some(),
            fid_property,
        )
    }

    /// `SELECT fid, geometry (or NULL), columns… FROM table`.
    pub(crate) fn select(&self, table: &Table) -> String {
        let mut select = vec![Table::quoted(&table.fid)];
        select.push(match (&table.geometry, self.geometry) {
            (Some(column), true) => Table::quoted(column),
            _ => "NULL".to_owned(),
        });
        select.extend(
            self.columns
                .iter()
                .map(|index| Table::quoted(&table.columns[*index].name)),
        );
        format!(
            "SELECT {} FROM {}",
            select.join(", "),
            Table::quoted(&table.name)
        )
    }

    /// The property names of [`RowShape::values`], in order.
    pub(crate) fn names(&self) -> std::sync::Arc<[String]> {
        self.names.clone()
    }

    /// The property values of a row selected by [`RowShape::select`], one per name of
    /// [`RowShape::names`]: the same as [`RowShape::properties`] without a map.
    pub(crate) fn values(
        &self,
        table: &Table,
        row: &rusqlite::Row<'_>,
    ) -> Result<Vec<serde_json::Value>, ProviderError> {
        let error = sqlite_error(&table.path);
        let mut values = vec![serde_json::Value::Null; self.names.len()];
        if self.fid_property.is_some()
            && let Some(slot) = values.first_mut()
        {
            let fid: i64 = row.get(0).map_err(&error)?;
            *slot = serde_json::Value::from(fid);
        }
        for (offset, (index, slot)) in self.columns.iter().zip(&self.slots).enumerate() {
            let column = &table.columns[*index];
            let value = row.get_ref(2 + offset).map_err(&error)?;
            if let Some(target) = values.get_mut(*slot) {
                *target = json_value(value, column.kind);
            }
        }
        Ok(values)
    }

    /// The properties of a row selected by [`RowShape::select`]: [`RowShape::values`] under
    /// their names.
    pub(crate) fn properties(
        &self,
        table: &Table,
        row: &rusqlite::Row<'_>,
    ) -> Result<serde_json::Map<String, serde_json::Value>, ProviderError> {
        let values = self.values(table, row)?;
        // The template's names are `names`, in the same order.
        let mut properties = self.template.clone();
        for (slot, value) in properties.values_mut().zip(values) {
            *slot = value;
        }
        Ok(properties)
    }
}

/// The geometry of a row selected by [`RowShape::select`], as geo-types in the table's CRS;
/// `None` when not read, null or empty.
pub(crate) fn row_geometry(
    table: &Table,
    row: &rusqlite::Row<'_>,
) -> Result<Option<geo_types::Geometry<f64>>, ProviderError> {
    let error = sqlite_error(&table.path);
    match row.get_ref(1).map_err(&error)? {
        ValueRef::Blob(blob) if !blob.is_empty() => {
            let fid: i64 = row.get(0).map_err(&error)?;
            GpkgWkb(blob).to_geo().map(Some).map_err(|cause| {
                ProviderError::internal(
                    format!(
                        "feature {fid} of {}: unreadable geometry: {cause}",
                        table.name
                    ),
                    None,
                )
            })
        }
        _ => Ok(None),
    }
}

/// A feature with GeoJSON `id` `fid`.
pub(crate) fn feature(
    fid: i64,
    geometry: Option<geojson::Geometry>,
    properties: serde_json::Map<String, serde_json::Value>,
) -> geojson::Feature {
    geojson::Feature {
        bbox: None,
        geometry,
        id: Some(geojson::feature::Id::Number(fid.into())),
        properties: Some(properties),
        foreign_members: None,
    }
}

/// Runs `work` on `connection` with SQLite interrupting it at `deadline` (a progress handler
/// checked every few thousand virtual-machine steps); the handler is removed afterwards.
pub(crate) fn until_deadline<T>(
    connection: &mut Connection,
    deadline: Option<std::time::Instant>,
    work: impl FnOnce(&Connection) -> Result<T, ProviderError>,
) -> Result<T, ProviderError> {
    let Some(deadline) = deadline else {
        return work(connection);
    };
    if std::time::Instant::now() >= deadline {
        return Err(past_deadline());
    }
    let installed = connection
        .progress_handler(4096, Some(move || std::time::Instant::now() >= deadline))
        .is_ok();
    let result = work(connection);
    if installed {
        let _ = connection.progress_handler(0, None::<fn() -> bool>);
    }
    result
}

/// The error of a query stopped at its request's deadline.
pub(crate) fn past_deadline() -> ProviderError {
    ProviderError::past_deadline()
}
