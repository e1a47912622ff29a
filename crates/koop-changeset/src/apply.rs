//! Applying changeset rows to the staging copy of a GeoPackage, in one SQLite transaction.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, params_from_iter};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::gpkg::{self, FeatureTable, quoted};

/// The temporary index on the primary key of a table whose key is not the FID (dropped before
/// the transaction commits: the built file holds what an export holds).
const KEY_INDEX: &str = "koop_changeset_key";

/// What a build did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Rows inserted.
    pub inserts: u64,
    /// Rows updated.
    pub updates: u64,
    /// Rows deleted.
    pub deletes: u64,
}

/// The open transaction on the staging copy.
pub(crate) struct Applier {
    connection: Connection,
    path: PathBuf,
    layer_id: u64,
    table: FeatureTable,
    /// Indices (into `table.columns`) of the primary key.
    key: Vec<usize>,
    /// Columns an INSERT writes (every column but the FID, unless the FID is the key).
    insert_columns: Vec<usize>,
    /// Columns an UPDATE sets (the insert columns but the key).
    update_columns: Vec<usize>,
    /// The key is the FID (no temporary index needed, no existence check on INSERT).
    key_is_fid: bool,
    pub(crate) counts: Counts,
}

impl Applier {
    /// Opens `path` (the staging copy), checks it can take a changeset keyed on `primary_key`
    /// and begins the transaction.
    pub(crate) fn open(path: &Path, layer_id: u64, primary_key: &[String]) -> Result<Self> {
        let sqlite = |action: &'static str| {
            let path = path.to_path_buf();
            move |source| Error::Sqlite {
                action,
                path,
                source,
            }
        };
        let unsupported = |reason: String| Error::Unsupported { layer_id, reason };
        let connection = Connection::open(path).map_err(sqlite("opening"))?;
        gpkg::register_functions(&connection).map_err(sqlite("registering functions"))?;
        // A failed build discards the file: no journal on disk is needed to undo it, and the
        // cache syncs the file before publishing it.
        connection
            .execute_batch(
                "PRAGMA journal_mode = MEMORY; PRAGMA synchronous = OFF; BEGIN IMMEDIATE;",
            )
            .map_err(sqlite("beginning the transaction"))?;
        let table = FeatureTable::read(&connection)
            .map_err(sqlite("reading the feature table"))?
            .ok_or_else(|| unsupported("it holds no feature or attribute table".to_owned()))?;
        if table.geometry.as_ref().is_some_and(|geometry| geometry.3) {
            return Err(unsupported(
                "its geometries have Z or M values, which koop does not apply from GeoJSON"
                    .to_owned(),
            ));
        }
        if primary_key.is_empty() {
            return Err(unsupported("the layer has no primary key".to_owned()));
        }
        let key = primary_key
            .iter()
            .map(|field| {
                table
                    .columns
                    .iter()
                    .position(|column| column.name.eq_ignore_ascii_case(field))
                    .ok_or_else(|| {
                        unsupported(format!(
                            "its table {} has no column for the primary key field {field}",
                            table.name
                        ))
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let key_is_fid = key.len() == 1 && table.columns[key[0]].rowid;
        let insert_columns: Vec<usize> = (0..table.columns.len())
            .filter(|&index| !table.columns[index].rowid || key_is_fid)
            .collect();
        let update_columns = insert_columns
            .iter()
            .copied()
            .filter(|index| !key.contains(index))
            .collect();
        if !key_is_fid {
            let columns: Vec<String> = key
                .iter()
                .map(|&index| quoted(&table.columns[index].name))
                .collect();
            connection
                .execute_batch(&format!(
                    "CREATE INDEX {} ON {}({})",
                    quoted(KEY_INDEX),
                    quoted(&table.name),
                    columns.join(", ")
                ))
                .map_err(sqlite("indexing the primary key"))?;
        }
        Ok(Self {
            connection,
            path: path.to_path_buf(),
            layer_id,
            table,
            key,
            insert_columns,
            update_columns,
            key_is_fid,
            counts: Counts::default(),
        })
    }

    fn sqlite(&self, action: &'static str) -> impl FnOnce(rusqlite::Error) -> Error + use<> {
        let path = self.path.clone();
        move |source| Error::Sqlite {
            action,
            path,
            source,
        }
    }

    fn mismatch(&self, reason: String) -> Error {
        Error::Mismatch {
            layer_id: self.layer_id,
            reason,
        }
    }

    fn where_key(&self, first_parameter: usize) -> String {
        self.key
            .iter()
            .enumerate()
            .map(|(offset, &index)| {
                format!(
                    "{} = ?{}",
                    quoted(&self.table.columns[index].name),
                    first_parameter + offset
                )
            })
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// The SQL value of `column` in `feature`.
    fn value(
        &self,
        column: usize,
        properties: &HashMap<String, &Value>,
        feature: &Value,
    ) -> Result<SqlValue> {
        let column = &self.table.columns[column];
        if let Some((name, srs_id, geometry_type, _)) = &self.table.geometry
            && name.eq_ignore_ascii_case(&column.name)
        {
            let geometry = feature.get("geometry").unwrap_or(&Value::Null);
            return gpkg::geometry_blob(geometry, *srs_id, geometry_type)
                .map(|blob| blob.map_or(SqlValue::Null, SqlValue::Blob))
                .map_err(|reason| self.mismatch(reason));
        }
        let value = properties.get(&column.name.to_lowercase()).ok_or_else(|| {
            self.mismatch(format!(
                "a row has no value for the field {} (it may be omitted from the service)",
                column.name
            ))
        })?;
        sql_value(&column.declared, value)
            .map_err(|reason| self.mismatch(format!("the field {} holds {reason}", column.name)))
    }

    /// Applies one changeset feature (`properties.__change__` = `INSERT`, `UPDATE` or
    /// `DELETE`).
    pub(crate) fn apply(&mut self, feature: &Value) -> Result<()> {
        let properties: HashMap<String, &Value> = feature
            .get("properties")
            .and_then(Value::as_object)
            .map(|object| {
                object
                    .iter()
                    .map(|(name, value)| (name.to_lowercase(), value))
                    .collect()
            })
            .unwrap_or_default();
        let change = properties
            .get("__change__")
            .and_then(|value| value.as_str())
            .map(str::to_uppercase)
            .ok_or_else(|| self.mismatch("a row has no __change__ value".to_owned()))?;
        let key = self
            .key
            .iter()
            .map(|&index| self.value(index, &properties, feature))
            .collect::<Result<Vec<_>>>()?;
        if key.contains(&SqlValue::Null) {
            return Err(self.mismatch("a row has no primary key value".to_owned()));
        }
        match change.as_str() {
            "DELETE" => self.delete(&key),
            "UPDATE" => self.update(&key, &properties, feature),
            "INSERT" => self.insert(&key, &properties, feature),
            other => Err(self.mismatch(format!("a row has the unknown __change__ {other:?}"))),
        }
    }

    fn delete(&mut self, key: &[SqlValue]) -> Result<()> {
        let table = quoted(&self.table.name);
        let sql = format!("DELETE FROM {table} WHERE {}", self.where_key(1));
        self.change_one(&sql, key, key, "deletes")?;
        self.counts.deletes += 1;
        Ok(())
    }

    /// Runs `sql` with `values`, which must change exactly the one feature `key` names; `verb`
    /// says what the row does, for the error.
    fn change_one(
        &self,
        sql: &str,
        values: &[SqlValue],
        key: &[SqlValue],
        verb: &str,
    ) -> Result<()> {
        let changed = self
            .connection
            .prepare_cached(sql)
            .and_then(|mut statement| statement.execute(params_from_iter(values)))
            .map_err(self.sqlite("changing a feature"))?;
        if changed != 1 {
            return Err(self.mismatch(format!(
                "it {verb} the feature {} that the cached version does not hold",
                describe(key)
            )));
        }
        Ok(())
    }

    fn update(
        &mut self,
        key: &[SqlValue],
        properties: &HashMap<String, &Value>,
        feature: &Value,
    ) -> Result<()> {
        let table = quoted(&self.table.name);
        let mut values = self
            .update_columns
            .iter()
            .map(|&index| self.value(index, properties, feature))
            .collect::<Result<Vec<_>>>()?;
        let sets: Vec<String> = self
            .update_columns
            .iter()
            .enumerate()
            .map(|(offset, &index)| {
                format!(
                    "{} = ?{}",
                    quoted(&self.table.columns[index].name),
                    offset + 1
                )
            })
            .collect();
        let sql = format!(
            "UPDATE {table} SET {} WHERE {}",
            sets.join(", "),
            self.where_key(sets.len() + 1)
        );
        values.extend(key.iter().cloned());
        self.change_one(&sql, &values, key, "updates")?;
        self.counts.updates += 1;
        Ok(())
    }

    fn insert(
        &mut self,
        key: &[SqlValue],
        properties: &HashMap<String, &Value>,
        feature: &Value,
    ) -> Result<()> {
        let table = quoted(&self.table.name);
        if !self.key_is_fid {
            let sql = format!("SELECT 1 FROM {table} WHERE {} LIMIT 1", self.where_key(1));
            let exists = self
                .connection
                .prepare_cached(&sql)
                .and_then(|mut statement| {
                    statement
                        .query_row(params_from_iter(key), |_| Ok(()))
                        .optional()
                })
                .map_err(self.sqlite("looking a feature up"))?;
            if exists.is_some() {
                return Err(self.mismatch(format!(
                    "it inserts the feature {} that the cached version already holds",
                    describe(key)
                )));
            }
        }
        let values = self
            .insert_columns
            .iter()
            .map(|&index| self.value(index, properties, feature))
            .collect::<Result<Vec<_>>>()?;
        let names: Vec<String> = self
            .insert_columns
            .iter()
            .map(|&index| quoted(&self.table.columns[index].name))
            .collect();
        let marks: Vec<String> = (1..=names.len()).map(|n| format!("?{n}")).collect();
        let sql = format!(
            "INSERT INTO {table} ({}) VALUES ({})",
            names.join(", "),
            marks.join(", ")
        );
        self.connection
            .prepare_cached(&sql)
            .and_then(|mut statement| statement.execute(params_from_iter(&values)))
            .map_err(|error| match error {
                rusqlite::Error::SqliteFailure(code, _)
                    if code.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    self.mismatch(format!(
                        "it inserts the feature {} that the cached version already holds",
                        describe(key)
                    ))
                }
                other => self.sqlite("inserting a feature")(other),
            })?;
        self.counts.inserts += 1;
        Ok(())
    }

    /// Keeps the GeoPackage's own records right (feature count, extent, last change), drops the
    /// temporary index, commits, checks the file and closes it. Returns the feature count.
    #[allow(
        clippy::too_many_lines,
        reason = "the closing steps of one transaction, in the order they must run"
    )]
    pub(crate) fn finish(self) -> Result<u64> {
        let table = quoted(&self.table.name);
        let count: i64 = self
            .connection
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
                row.get(0)
            })
            .map_err(self.sqlite("counting the features"))?;
        if !self.key_is_fid {
            self.connection
                .execute_batch(&format!("DROP INDEX {}", quoted(KEY_INDEX)))
                .map_err(self.sqlite("dropping the temporary index"))?;
        }
        let has = |name: &str| -> Result<bool> {
            self.connection
                .query_row(
                    "SELECT 1 FROM sqlite_master WHERE lower(name) = lower(?1)",
                    [name],
                    |_| Ok(()),
                )
                .optional()
                .map(|found| found.is_some())
                .map_err(self.sqlite("reading the schema"))
        };
        if has("gpkg_ogr_contents")? {
            self.connection
                .execute(
                    "UPDATE gpkg_ogr_contents SET feature_count = ?1 WHERE lower(table_name) = lower(?2)",
                    rusqlite::params![count, self.table.name],
                )
                .map_err(self.sqlite("updating gpkg_ogr_contents"))?;
        }
        let rtree = self
            .table
            .geometry
            .as_ref()
            .map(|(column, ..)| format!("rtree_{}_{column}", self.table.name));
        let extent = match &rtree {
            Some(rtree) if has(rtree)? => Some(
                self.connection
                    .query_row(
                        &format!(
                            "SELECT min(minx), min(miny), max(maxx), max(maxy) FROM {}",
                            quoted(rtree)
                        ),
                        [],
                        |row| {
                            Ok([
                                row.get::<_, Option<f64>>(0)?,
                                row.get(1)?,
                                row.get(2)?,
                                row.get(3)?,
                            ])
                        },
                    )
                    .map_err(self.sqlite("reading the extent"))?,
            ),
            _ => None,
        };
        self.connection
            .execute(
                "UPDATE gpkg_contents SET last_change = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
                 WHERE lower(table_name) = lower(?1)",
                [&self.table.name],
            )
            .map_err(self.sqlite("updating gpkg_contents"))?;
        if let Some([min_x, min_y, max_x, max_y]) = extent {
            self.connection
                .execute(
                    "UPDATE gpkg_contents SET min_x = ?1, min_y = ?2, max_x = ?3, max_y = ?4
                     WHERE lower(table_name) = lower(?5)",
                    rusqlite::params![min_x, min_y, max_x, max_y, self.table.name],
                )
                .map_err(self.sqlite("updating the extent"))?;
        }
        self.connection
            .execute_batch("COMMIT")
            .map_err(self.sqlite("committing"))?;
        let report: Vec<String> = self
            .connection
            .prepare("PRAGMA quick_check")
            .and_then(|mut statement| {
                statement
                    .query_map([], |row| row.get::<_, String>(0))?
                    .take(5)
                    .collect()
            })
            .map_err(self.sqlite("checking the result"))?;
        if report != ["ok"] {
            return Err(Error::Corrupt {
                layer_id: self.layer_id,
                report: report.join("; "),
            });
        }
        let path = self.path.clone();
        self.connection
            .close()
            .map_err(|(_, source)| Error::Sqlite {
                action: "closing",
                path: path.clone(),
                source,
            })?;
        Ok(u64::try_from(count).unwrap_or_default())
    }
}

fn describe(key: &[SqlValue]) -> String {
    key.iter()
        .map(|value| match value {
            SqlValue::Integer(number) => number.to_string(),
            SqlValue::Real(number) => number.to_string(),
            SqlValue::Text(text) => format!("{text:?}"),
            SqlValue::Blob(_) => "(blob)".to_owned(),
            SqlValue::Null => "null".to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// A JSON value as the SQL value of a column declared `declared` (GeoPackage 1.3, §1.1.1.1.3
/// data types). Be liberal: numbers may come as strings and integers as whole floats.
pub(crate) fn sql_value(declared: &str, value: &Value) -> std::result::Result<SqlValue, String> {
    if value.is_null() {
        return Ok(SqlValue::Null);
    }
    let shape = || format!("{value} where a {declared} was expected");
    let integer = || -> Option<i64> {
        match value {
            Value::Number(number) => number.as_i64().or_else(|| {
                number
                    .as_f64()
                    .filter(|float| float.fract() == 0.0 && float.abs() < 9.0e15)
                    .map(|float| {
                        #[allow(
                            clippy::cast_possible_truncation,
                            reason = "a whole number below 2^53 in magnitude, checked above"
                        )]
                        let whole = float as i64;
                        whole
                    })
            }),
            Value::String(text) => text.trim().parse().ok(),
            Value::Bool(flag) => Some(i64::from(*flag)),
            _ => None,
        }
    };
    let text = || match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    if declared == "BOOLEAN" {
        return match value {
            Value::String(text) if text.eq_ignore_ascii_case("true") => Ok(SqlValue::Integer(1)),
            Value::String(text) if text.eq_ignore_ascii_case("false") => Ok(SqlValue::Integer(0)),
            _ => integer()
                .map(|n| SqlValue::Integer(i64::from(n != 0)))
                .ok_or_else(shape),
        };
    }
    if declared == "DATE" {
        // `2024-05-01`, also sent as `2024-05-01Z` or `2024-05-01T00:00:00Z`.
        let text = text();
        let date = text
            .get(..10)
            .filter(|date| date.as_bytes().get(4) == Some(&b'-'));
        return Ok(SqlValue::Text(date.unwrap_or(&text).to_owned()));
    }
    if declared == "DATETIME"
        || declared.contains("CHAR")
        || declared.contains("CLOB")
        || declared.starts_with("TEXT")
    {
        return Ok(SqlValue::Text(text()));
    }
    if declared.contains("INT") {
        return integer().map(SqlValue::Integer).ok_or_else(shape);
    }
    if declared.contains("REAL") || declared.contains("FLOA") || declared.contains("DOUB") {
        return match value {
            Value::Number(number) => number.as_f64().map(SqlValue::Real).ok_or_else(shape),
            Value::String(text) => text.trim().parse().map(SqlValue::Real).map_err(|_| shape()),
            _ => Err(shape()),
        };
    }
    Ok(SqlValue::Text(text()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_take_the_column_type() {
        assert_eq!(sql_value("INTEGER", &json!(7)), Ok(SqlValue::Integer(7)));
        assert_eq!(
            sql_value("MEDIUMINT", &json!("7")),
            Ok(SqlValue::Integer(7))
        );
        assert_eq!(sql_value("INTEGER", &json!(7.0)), Ok(SqlValue::Integer(7)));
        assert!(sql_value("INTEGER", &json!(7.5)).is_err());
        assert_eq!(sql_value("DOUBLE", &json!(1.25)), Ok(SqlValue::Real(1.25)));
        assert_eq!(sql_value("REAL", &json!("2.5")), Ok(SqlValue::Real(2.5)));
        assert_eq!(
            sql_value("TEXT", &json!(12)),
            Ok(SqlValue::Text("12".into()))
        );
        assert_eq!(
            sql_value("TEXT(20)", &json!("a")),
            Ok(SqlValue::Text("a".into()))
        );
        assert_eq!(
            sql_value("DATE", &json!("2024-05-01Z")),
            Ok(SqlValue::Text("2024-05-01".into()))
        );
        assert_eq!(
            sql_value("DATE", &json!("2024-05-01T00:00:00Z")),
            Ok(SqlValue::Text("2024-05-01".into()))
        );
        assert_eq!(sql_value("BOOLEAN", &json!(true)), Ok(SqlValue::Integer(1)));
        assert_eq!(
            sql_value("BOOLEAN", &json!("false")),
            Ok(SqlValue::Integer(0))
        );
        assert_eq!(sql_value("INTEGER", &json!(null)), Ok(SqlValue::Null));
        assert!(sql_value("DOUBLE", &json!([1])).is_err());
    }
}
