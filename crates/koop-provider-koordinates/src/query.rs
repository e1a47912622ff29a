//! Geoservices queries answered by SQLite on the cached GeoPackage, so memory stays flat and a
//! page of a layer of millions of features costs milliseconds.
//!
//! - `where` and `objectIds` become a `WHERE` clause with bound parameters
//!   ([`Predicate::to_sql`]); `orderByFields` an `ORDER BY` (then `fid`, so pages are stable);
//!   `resultOffset` and `resultRecordCount` (capped by `maxRecordCount`) `LIMIT`/`OFFSET`, with
//!   one row more to tell whether more features exist.
//! - `geometry` filters read candidates from the GeoPackage R-tree (`rtree_<table>_<column>`)
//!   with the filter's envelope in the layer's CRS, then test each candidate exactly in
//!   EPSG:4326.
//! - `returnCountOnly` is `count(*)` (the table's row count, read when the layer was opened,
//!   when nothing filters).
//! - `outFields` and `returnGeometry` choose the columns read; `outSR` is applied while reading.
//!
//! What cannot be pushed down is left to the output and said in `filtersApplied`: a `where`
//! that names a computed `OBJECTID` (a hash of the whole feature), ordering by it, and the
//! shaping of ids, extents, statistics and distinct values (the matching rows are streamed).

use geozero::ToGeo;
use geozero::wkb::GpkgWkb;
use rusqlite::types::{ToSqlOutput, ValueRef};

use koop::Epsg;
use koop_geoservices::{
    COMPUTED_OBJECT_ID, GeometryFilter, OutFields, Query, Reprojector, Schema, SqlParam,
};
use koop_provider::{FiltersApplied, ProviderError, ProviderRequest};

use crate::LayerState;
use crate::gpkg::{self, Table, sqlite_error};

/// What a pushed-down query produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `count(*)`: the count is the answer.
    Count,
    /// One page of features, and whether more exist.
    Page,
    /// Every matching row, streamed (the output shapes ids, extents, statistics, or applies
    /// what SQL could not).
    Rows,
}

/// A query turned into SQL.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) kind: Kind,
    sql: String,
    params: Vec<SqlParam>,
    /// Attribute columns read (indices into `table.columns`), in table order.
    columns: Vec<usize>,
    /// Whether the geometry column is read.
    geometry: bool,
    /// The exact geometry test of R-tree candidates, in EPSG:4326.
    exact: Option<GeometryFilter>,
    /// Paging left to Rust (when candidates are tested exactly): rows to skip, page size.
    skip: u64,
    limit: Option<u64>,
    /// From the table's CRS to EPSG:4326.
    to_4326: Reprojector,
    /// From the table's CRS to the output CRS, and from EPSG:4326 to it.
    from_source: Reprojector,
    from_4326: Reprojector,
    /// What the answer applied.
    pub(crate) applied: FiltersApplied,
    /// The output CRS, when not EPSG:4326.
    pub(crate) crs: Option<Epsg>,
    /// The row count, when no filter applies.
    pub(crate) known_count: Option<u64>,
}

/// The schema a query is checked against: the layer's fields; the object id is its `idField`,
/// or a computed `OBJECTID`.
pub(crate) fn schema(state: &LayerState) -> Schema {
    let id_field = state.metadata.id_field.clone();
    Schema {
        fields: state.metadata.fields.clone(),
        object_id_is_attribute: id_field.is_some(),
        object_id: id_field.unwrap_or_else(|| COMPUTED_OBJECT_ID.to_owned()),
    }
}

fn internal(error: impl std::fmt::Display) -> ProviderError {
    ProviderError::internal(error.to_string(), None)
}

/// Points sampled along each edge of a geometry filter's envelope to find its box in another CRS.
const STEPS: u32 = 16;

/// `[min_x, min_y, max_x, max_y]` of an EPSG:4326 envelope in EPSG `srs`, from points along its
/// edges, grown by 1 % so the curved edges stay inside; `None` when it cannot be reprojected.
fn envelope_in(filter: &GeometryFilter, srs: Epsg) -> Option<[f64; 4]> {
    let reprojector = Reprojector::new(Epsg::WGS84, srs).ok()?;
    let (min, max) = (filter.envelope.min(), filter.envelope.max());
    let mut bounds = [
        f64::INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NEG_INFINITY,
    ];
    for step in 0..=STEPS {
        let t = f64::from(step) / f64::from(STEPS);
        let x = min.x + (max.x - min.x) * t;
        let y = min.y + (max.y - min.y) * t;
        for (lon, lat) in [(x, min.y), (x, max.y), (min.x, y), (max.x, y)] {
            let (px, py) = reprojector.position(lon, lat).ok()?;
            if !(px.is_finite() && py.is_finite()) {
                return None;
            }
            bounds = [
                bounds[0].min(px),
                bounds[1].min(py),
                bounds[2].max(px),
                bounds[3].max(py),
            ];
        }
    }
    let (dx, dy) = (
        (bounds[2] - bounds[0]) * 0.01 + 1e-9,
        (bounds[3] - bounds[1]) * 0.01 + 1e-9,
    );
    Some([
        bounds[0] - dx,
        bounds[1] - dy,
        bounds[2] + dx,
        bounds[3] + dy,
    ])
}

/// The `WHERE` conditions of the predicate and `objectIds`, when every column they name is a
/// table column (a computed `OBJECTID` is not).
fn where_conditions(
    query: &Query,
    schema: &Schema,
    table: &Table,
) -> Option<(Vec<String>, Vec<SqlParam>)> {
    let mut conditions = Vec::new();
    let mut params = Vec::new();
    if !query.predicate.is_always_true() {
        let (sql, bound) = query.predicate.to_sql(&|column| {
            table
                .column_index(&column.name)
                .map(|_| Table::quoted(&column.name))
        })?;
        conditions.push(format!("({sql})"));
        params.extend(bound);
    }
    if let Some(ids) = &query.object_ids {
        if !schema.object_id_is_attribute {
            return None;
        }
        let placeholders = vec!["?"; ids.len()].join(", ");
        conditions.push(format!(
            "{} IN ({placeholders})",
            Table::quoted(&schema.object_id)
        ));
        params.extend(ids.iter().map(|id| SqlParam::Integer(*id)));
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
    let [min_x, min_y, max_x, max_y] = envelope_in(filter, table.srs.unwrap_or(Epsg::WGS84))?;
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

/// The attribute columns read: all of them, unless a page asks for some and the object id is
/// an attribute (a computed one hashes the whole feature).
fn read_columns(query: &Query, kind: Kind, schema: &Schema, table: &Table) -> Vec<usize> {
    match (&query.out_fields, kind, schema.object_id_is_attribute) {
        (OutFields::Fields(names), Kind::Page, true) => (0..table.columns.len())
            .filter(|index| {
                let name = &table.columns[*index].name;
                names.contains(name) || *name == schema.object_id
            })
            .collect(),
        (_, Kind::Count, _) => Vec::new(),
        _ => (0..table.columns.len()).collect(),
    }
}

/// `ORDER BY`: a page's `orderByFields`, then `fid` so pages are stable.
fn order_by(query: &Query, kind: Kind, table: &Table) -> String {
    let mut order: Vec<String> = if kind == Kind::Page {
        query
            .order_by
            .iter()
            .map(|(name, descending)| {
                format!(
                    "{}{}",
                    Table::quoted(name),
                    if *descending { " DESC" } else { "" }
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    order.push(Table::quoted(&table.fid));
    format!(" ORDER BY {}", order.join(", "))
}

/// `SELECT fid, geometry (or NULL), columns… FROM table`.
fn select(table: &Table, columns: &[usize], geometry: bool) -> String {
    let mut select = vec![Table::quoted(&table.fid)];
    select.push(match (&table.geometry, geometry) {
        (Some(column), true) => Table::quoted(column),
        _ => "NULL".to_owned(),
    });
    select.extend(
        columns
            .iter()
            .map(|index| Table::quoted(&table.columns[*index].name)),
    );
    format!(
        "SELECT {} FROM {}",
        select.join(", "),
        Table::quoted(&table.name)
    )
}

/// Plans `request` (a `query` of the layer in `state`), or says it is not a valid query.
pub(crate) fn plan(
    state: &LayerState,
    request: &ProviderRequest,
    max_record_count: u32,
) -> Result<Plan, ProviderError> {
    let table = &state.table;
    let schema = schema(state);
    let query = Query::parse(&request.query, &schema)?;
    let srs = table.srs.unwrap_or(Epsg::WGS84);
    let pushed = where_conditions(&query, &schema, table);
    let where_pushed = pushed.is_some();
    let (mut conditions, mut params) = pushed.unwrap_or_default();
    let exact = query.geometry.clone();
    if let Some((condition, bound)) = exact
        .as_ref()
        .and_then(|filter| spatial_condition(filter, table))
    {
        conditions.push(condition);
        params.extend(bound);
    }
    let order_pushed = where_pushed
        && query
            .order_by
            .iter()
            .all(|(name, _)| table.column_index(name).is_some());
    let kind = if query.count_only && !query.extent_only && where_pushed {
        Kind::Count
    } else if query.returns_features() && order_pushed {
        Kind::Page
    } else {
        Kind::Rows
    };
    let computed_id = !schema.object_id_is_attribute;
    let columns = read_columns(&query, kind, &schema, table);
    let geometry = table.geometry.is_some()
        && (exact.is_some()
            || match kind {
                Kind::Count => false,
                Kind::Page => query.return_geometry || computed_id,
                Kind::Rows => true,
            });
    // outSR while reading, unless a computed object id must hash the EPSG:4326 geometry.
    let project = kind == Kind::Page && !computed_id;
    let output = if project { query.out_epsg } else { Epsg::WGS84 };
    let reprojector = |from: Epsg, to: Epsg| Reprojector::new(from, to).map_err(internal);

    let counts_in_sql = kind == Kind::Count && exact.is_none();
    let mut sql = if counts_in_sql {
        format!("SELECT count(*) FROM {}", Table::quoted(&table.name))
    } else {
        select(table, &columns, geometry)
    };
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    if !counts_in_sql {
        sql.push_str(&order_by(&query, kind, table));
    }
    let page = query.page_size(max_record_count);
    let (mut skip, mut limit) = (0, None);
    if kind == Kind::Page {
        limit = Some(page);
        if exact.is_some() {
            // Candidates are tested in Rust: page there.
            skip = query.offset;
        } else {
            // One row more than the page tells whether more features exist.
            sql.push_str(" LIMIT ? OFFSET ?");
            params.push(SqlParam::Integer(
                i64::try_from(page.saturating_add(1)).unwrap_or(i64::MAX),
            ));
            params.push(SqlParam::Integer(
                i64::try_from(query.offset).unwrap_or(i64::MAX),
            ));
        }
    }
    let unfiltered = counts_in_sql && conditions.is_empty();
    Ok(Plan {
        kind,
        sql,
        params,
        columns,
        geometry,
        exact,
        skip,
        limit,
        to_4326: reprojector(srs, Epsg::WGS84)?,
        from_source: reprojector(srs, output)?,
        from_4326: reprojector(Epsg::WGS84, output)?,
        applied: FiltersApplied {
            where_clause: where_pushed,
            geometry: true,
            offset: kind == Kind::Page,
            limit: kind == Kind::Page,
            projection: project,
            all: kind == Kind::Count,
        },
        crs: (output != Epsg::WGS84).then_some(output),
        known_count: unfiltered.then_some(table.count),
    })
}

/// A bound parameter as SQLite takes it.
struct Bound<'a>(&'a SqlParam);

impl rusqlite::ToSql for Bound<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self.0 {
            SqlParam::Integer(value) => ToSqlOutput::from(*value),
            SqlParam::Real(value) => ToSqlOutput::from(*value),
            SqlParam::Text(value) => ToSqlOutput::from(value.as_str()),
        })
    }
}

/// What running a plan found.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Matching rows (for counts), or rows sent.
    pub(crate) count: u64,
    /// More rows match than the page holds.
    pub(crate) exceeded: bool,
}

impl Plan {
    /// Runs the plan on `table` (with a connection of `connections`), handing each resulting feature to `send` until it returns
    /// `false`. Blocking.
    pub(crate) fn run(
        &self,
        table: &Table,
        connections: &gpkg::ConnectionPool,
        mut send: impl FnMut(geojson::Feature) -> bool,
    ) -> Result<Outcome, ProviderError> {
        if let Some(count) = self.known_count {
            return Ok(Outcome {
                count,
                exceeded: false,
            });
        }
        // Pages and counts are short: they borrow a pooled connection. Streams of rows last as
        // long as their reader, so they open their own rather than hold one of the pool's.
        let (pooled, own);
        let connection: &rusqlite::Connection = if self.kind == Kind::Rows {
            own = gpkg::open(&table.path)?;
            &own
        } else {
            pooled = connections.get()?;
            &pooled
        };
        let error = sqlite_error(&table.path);
        let mut statement = connection.prepare_cached(&self.sql).map_err(&error)?;
        let mut rows = statement
            .query(rusqlite::params_from_iter(self.params.iter().map(Bound)))
            .map_err(&error)?;
        let mut outcome = Outcome::default();
        if self.kind == Kind::Count && self.exact.is_none() {
            if let Some(row) = rows.next().map_err(&error)? {
                let count: i64 = row.get(0).map_err(&error)?;
                outcome.count = u64::try_from(count).unwrap_or(0);
            }
            return Ok(outcome);
        }
        let mut matched: u64 = 0;
        while let Some(row) = rows.next().map_err(&error)? {
            let fid: i64 = row.get(0).map_err(&error)?;
            let mut geometry = match row.get_ref(1).map_err(&error)? {
                ValueRef::Blob(blob) if self.geometry && !blob.is_empty() => {
                    Some(GpkgWkb(blob).to_geo().map_err(|cause| {
                        internal(format!("feature {fid} of {}: {cause}", table.name))
                    })?)
                }
                _ => None,
            };
            let mut in_4326 = false;
            if let Some(filter) = &self.exact {
                let Some(shape) = &mut geometry else {
                    continue;
                };
                if self.to_4326.geometry(shape).is_err() {
                    continue;
                }
                in_4326 = true;
                if !filter.matches(shape) {
                    continue;
                }
            }
            matched += 1;
            if self.kind == Kind::Count {
                continue;
            }
            if matched <= self.skip {
                continue;
            }
            if let Some(limit) = self.limit
                && outcome.count >= limit
            {
                outcome.exceeded = true;
                break;
            }
            let geometry = match geometry {
                Some(mut shape) => {
                    let reprojector = if in_4326 {
                        &self.from_4326
                    } else {
                        &self.from_source
                    };
                    reprojector.geometry(&mut shape).map_err(|cause| {
                        internal(format!("feature {fid} of {}: {cause}", table.name))
                    })?;
                    Some(geojson::Geometry::from(&shape))
                }
                None => None,
            };
            let properties = gpkg::properties(table, row, self.columns.iter().copied(), 2)?;
            outcome.count += 1;
            if !send(gpkg::feature(fid, geometry, properties)) {
                break;
            }
        }
        if self.kind == Kind::Count {
            outcome.count = matched;
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use koop_testkit::GeneratedContent;

    use super::*;
    use koop_provider::{Field, FieldType, Metadata};

    /// A generated layer of `count` points (EPSG:2193, `id` = fid) as the provider holds it.
    fn points(dir: &std::path::Path, count: u64, id_field: bool) -> anyhow::Result<LayerState> {
        let path = dir.join("points.gpkg");
        GeneratedContent::Points { count }.generate(&path, 7)?;
        let table = gpkg::inspect(&path)?;
        let metadata = Metadata {
            id_field: id_field.then(|| "id".to_owned()),
            fields: table.fields(),
            ..Metadata::default()
        };
        Ok(LayerState {
            connections: Arc::new(gpkg::ConnectionPool::new(&path)),
            table: Arc::new(table),
            metadata,
            checked: Instant::now(),
        })
    }

    fn request(pairs: &[(&str, &str)]) -> ProviderRequest {
        let mut request = ProviderRequest::default();
        request.params.method = Some("query".to_owned());
        request.query = pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        request
    }

    fn run(plan: &Plan, table: &Table) -> anyhow::Result<(Vec<geojson::Feature>, Outcome)> {
        let mut features = Vec::new();
        let outcome = plan.run(table, &gpkg::ConnectionPool::new(&table.path), |feature| {
            features.push(feature);
            true
        })?;
        Ok((features, outcome))
    }

    #[test]
    fn pages_are_read_with_limit_and_offset() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let state = points(dir.path(), 500, true)?;
        let page = super::plan(
            &state,
            &request(&[
                ("where", "category = 'c3'"),
                ("outFields", "id,name"),
                ("resultOffset", "10"),
                ("resultRecordCount", "20"),
                ("returnGeometry", "false"),
            ]),
            2000,
        )?;
        assert_eq!(page.kind, Kind::Page);
        assert!(page.sql.ends_with("LIMIT ? OFFSET ?"), "{}", page.sql);
        assert!(!page.sql.contains("c3"), "values are bound: {}", page.sql);
        assert!(page.applied.where_clause && page.applied.offset && page.applied.limit);
        let (features, outcome) = run(&page, &state.table)?;
        let ids: Vec<i64> = features
            .iter()
            .filter_map(|feature| feature.property("id").and_then(serde_json::Value::as_i64))
            .collect();
        assert_eq!(ids, (0..20).map(|n| 103 + 10 * n).collect::<Vec<_>>());
        assert!(outcome.exceeded, "50 match, 30 were read");
        assert!(features.iter().all(|feature| feature.geometry.is_none()));
        let names: Vec<&String> = features[0]
            .properties
            .iter()
            .flatten()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(names, ["id", "name"], "only the columns asked for");

        // The last page: exactly what is left, and no more.
        let page = super::plan(
            &state,
            &request(&[
                ("where", "category = 'c3'"),
                ("resultOffset", "40"),
                ("resultRecordCount", "10"),
            ]),
            2000,
        )?;
        let (features, outcome) = run(&page, &state.table)?;
        assert_eq!((features.len(), outcome.exceeded), (10, false));
        // maxRecordCount caps the page.
        let page = super::plan(&state, &request(&[("resultRecordCount", "400")]), 100)?;
        let (features, outcome) = run(&page, &state.table)?;
        assert_eq!((features.len(), outcome.exceeded), (100, true));
        Ok(())
    }

    #[test]
    fn counts_are_counted_in_sqlite_or_known() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let state = points(dir.path(), 300, true)?;
        let all = super::plan(
            &state,
            &request(&[("where", "1=1"), ("returnCountOnly", "true")]),
            2000,
        )?;
        assert_eq!((all.kind, all.known_count), (Kind::Count, Some(300)));
        assert!(all.applied.all);
        let some = super::plan(
            &state,
            &request(&[("where", "id <= 42"), ("returnCountOnly", "true")]),
            2000,
        )?;
        assert!(some.sql.starts_with("SELECT count(*)"), "{}", some.sql);
        assert_eq!(run(&some, &state.table)?.1.count, 42);
        let near = super::plan(
            &state,
            &request(&[("geometry", "165,-48,180,-33"), ("returnCountOnly", "true")]),
            2000,
        )?;
        assert!(near.sql.contains("rtree_points_geom"), "{}", near.sql);
        assert_eq!(run(&near, &state.table)?.1.count, 300, "all of New Zealand");
        Ok(())
    }

    #[test]
    fn what_sqlite_cannot_answer_is_left_to_the_output() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        // Without an idField the object id is a hash of the feature: SQL cannot filter on it.
        let state = points(dir.path(), 50, false)?;
        let by_hash = super::plan(&state, &request(&[("where", "OBJECTID = 12345")]), 2000)?;
        assert_eq!(by_hash.kind, Kind::Rows);
        assert!(!by_hash.applied.where_clause && !by_hash.applied.limit);
        let (features, _) = run(&by_hash, &state.table)?;
        assert_eq!(
            features.len(),
            50,
            "every row, whole, for the output to hash"
        );
        assert!(features.iter().all(|feature| {
            feature.geometry.is_some()
                && feature
                    .properties
                    .as_ref()
                    .is_some_and(|p| p.len() == state.table.columns.len())
        }));
        let statistics = super::plan(
            &state,
            &request(&[
                (
                    "outStatistics",
                    r#"[{"statisticType":"sum","onStatisticField":"value"}]"#,
                ),
                ("where", "id > 25"),
            ]),
            2000,
        )?;
        assert_eq!(statistics.kind, Kind::Rows);
        assert!(statistics.applied.where_clause);
        assert_eq!(run(&statistics, &state.table)?.0.len(), 25);
        let invalid = super::plan(
            &state,
            &request(&[("where", "id = 1 OR 1 = (SELECT 1)")]),
            2000,
        );
        assert!(
            matches!(invalid, Err(ProviderError::InvalidQuery { .. })),
            "{invalid:?}"
        );
        // Field types are those of the metadata.
        assert!(
            state
                .metadata
                .fields
                .contains(&Field::new("observed", FieldType::Date))
        );
        Ok(())
    }
}
