//! Equality indexes kept in memory, per cached layer version and column, for the filters GIS
//! clients repeat on large layers (`category = 'c3'`, `status = 1`): a Koordinates export has no
//! index on its attribute columns, so without one every such page or count scans the table.
//!
//! An index maps each value of one text or integer column to the ascending fids of its rows. It
//! is built in the background (one scan, on a bulk permit) the first time a query could use it,
//! and only for columns of few values ([`MAX_KEYS`]) on tables of at least [`MIN_ROWS`] rows; a
//! column whose values do not all read as its declared kind is never indexed. At most
//! [`MAX_COLUMNS`] columns of a layer are indexed, so memory stays bounded (8 bytes a row a
//! column) whatever a client asks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use koop_provider::ProviderError;
use rusqlite::types::ValueRef;

use crate::gpkg::{self, ColumnKind, Table};

/// Tables smaller than this are scanned: an index would not pay for itself.
pub(crate) const MIN_ROWS: u64 = 10_000;
/// Most distinct values an indexed column may hold.
pub(crate) const MAX_KEYS: usize = 1024;
/// Most columns of one layer that are indexed.
pub(crate) const MAX_COLUMNS: usize = 4;

/// A value of an indexed column, as SQLite compares it with `=`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    Integer(i64),
    Text(String),
}

/// The fids of each value of one column, ascending.
#[derive(Debug, Default)]
pub(crate) struct ColumnIndex {
    fids: HashMap<Key, Vec<i64>>,
}

impl ColumnIndex {
    /// The fids of rows whose column equals `key`, ascending (empty when none does).
    pub(crate) fn fids(&self, key: &Key) -> &[i64] {
        self.fids.get(key).map_or(&[], Vec::as_slice)
    }
}

#[derive(Debug)]
enum Slot {
    Building,
    Ready(Arc<ColumnIndex>),
    Unusable,
}

/// The indexes of one layer version.
#[derive(Debug, Default)]
pub(crate) struct Indexes {
    slots: Mutex<HashMap<String, Slot>>,
}

impl Indexes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The index of `column`, when it is built.
    pub(crate) fn ready(&self, column: &str) -> Option<Arc<ColumnIndex>> {
        match self.lock().get(column) {
            Some(Slot::Ready(index)) => Some(index.clone()),
            _ => None,
        }
    }

    /// Claims the build of `column`'s index: `true` when the caller should build it (no build
    /// ran or runs for it, and fewer than [`MAX_COLUMNS`] are indexed).
    pub(crate) fn claim(&self, column: &str) -> bool {
        let mut slots = self.lock();
        if slots.contains_key(column) {
            return false;
        }
        let used = slots
            .values()
            .filter(|slot| !matches!(slot, Slot::Unusable))
            .count();
        if used >= MAX_COLUMNS {
            slots.insert(column.to_owned(), Slot::Unusable);
            return false;
        }
        slots.insert(column.to_owned(), Slot::Building);
        true
    }

    /// Records the outcome of a claimed build.
    pub(crate) fn finish(&self, column: &str, built: Option<ColumnIndex>) {
        let slot = match built {
            Some(index) => Slot::Ready(Arc::new(index)),
            None => Slot::Unusable,
        };
        self.lock().insert(column.to_owned(), slot);
    }
}

/// Builds the index of `column` (one scan of the table); `None` when the column cannot be
/// indexed (not text or integer, more than [`MAX_KEYS`] values, or values of another kind).
/// Blocking.
///
/// # Errors
///
/// The provider error of a failed read.
pub(crate) fn build(table: &Table, column: &str) -> Result<Option<ColumnIndex>, ProviderError> {
    let Some(kind) = table.column_kind(column) else {
        return Ok(None);
    };
    if !matches!(kind, ColumnKind::Integer | ColumnKind::Text) || column == table.fid {
        return Ok(None);
    }
    let connection = gpkg::open(&table.path)?;
    let error = gpkg::sqlite_error(&table.path);
    let sql = format!(
        "SELECT {}, {} FROM {} ORDER BY {}",
        Table::quoted(&table.fid),
        Table::quoted(column),
        Table::quoted(&table.name),
        Table::quoted(&table.fid)
    );
    let mut statement = connection.prepare(&sql).map_err(&error)?;
    let mut rows = statement.query([]).map_err(&error)?;
    let mut index = ColumnIndex::default();
    while let Some(row) = rows.next().map_err(&error)? {
        let fid: i64 = row.get(0).map_err(&error)?;
        let key = match (kind, row.get_ref(1).map_err(&error)?) {
            (_, ValueRef::Null) => continue,
            (ColumnKind::Integer, ValueRef::Integer(value)) => Key::Integer(value),
            (ColumnKind::Text, ValueRef::Text(bytes)) => match std::str::from_utf8(bytes) {
                Ok(text) => Key::Text(text.to_owned()),
                Err(_) => return Ok(None),
            },
            // A value SQLite would compare by other rules: scan instead.
            _ => return Ok(None),
        };
        if !index.fids.contains_key(&key) && index.fids.len() >= MAX_KEYS {
            return Ok(None);
        }
        index.fids.entry(key).or_default().push(fid);
    }
    for fids in index.fids.values_mut() {
        fids.shrink_to_fit();
    }
    Ok(Some(index))
}
