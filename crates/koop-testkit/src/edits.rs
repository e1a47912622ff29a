//! Versions that edit a fraction of a generated layer's features, and the changesets between
//! them: what Koordinates' WFS changeset service answers for a layer whose new version inserted,
//! updated and deleted some features.
//!
//! A generated point layer or table has, at each content revision, a list of rows derived
//! deterministically from its seed: a full data bump draws new rows; an edit bump
//! ([`crate::BumpKind::Edit`]) inserts, updates and deletes `per_mille` ‰ of the previous
//! revision's rows. The export of a revision and the changeset between two revisions are both
//! computed from these rows, so they agree by construction.

use serde_json::{Value, json};

use crate::geopackage::{GeneratedContent, civil_date};

/// Extent of the generated points, EPSG:2193 metres: mainland New Zealand.
pub(crate) const NZ_BOUNDS_2193: [f64; 4] = [1_090_000.0, 4_750_000.0, 2_090_000.0, 6_190_000.0];

/// A generated point.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PointRow {
    pub(crate) id: i64,
    pub(crate) x: f64,
    pub(crate) y: f64,
    pub(crate) category: String,
    pub(crate) value: f64,
    pub(crate) name: String,
    pub(crate) observed: String,
}

/// A generated table row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TableRow {
    pub(crate) id: i64,
    pub(crate) suburb_locality_id: i64,
    pub(crate) population_estimate: i64,
}

/// The rows of one revision, sorted by `id`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Rows {
    Points(Vec<PointRow>),
    Table(Vec<TableRow>),
}

impl Rows {
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Points(rows) => rows.len(),
            Self::Table(rows) => rows.len(),
        }
    }
}

/// What each content revision of a layer was: `None` for new data (revision 0 and full data
/// bumps), `Some(per_mille)` for an edit of the previous revision.
pub(crate) type History = [Option<u32>];

/// `(inserts, updates, deletes)` of an edit of `per_mille` ‰ of `rows` rows: half the changes
/// are inserts, a quarter updates and a quarter deletes, each at least one.
pub(crate) fn edit_sizes(rows: u64, per_mille: u32) -> (u64, u64, u64) {
    let total = (rows * u64::from(per_mille) / 1000).max(3);
    let inserts = (total / 2).max(1);
    let updates = (total / 4).max(1);
    let deletes = total
        .saturating_sub(inserts + updates)
        .max(1)
        .min(rows.saturating_sub(updates));
    (inserts, updates, deletes)
}

fn point(id: i64, random: &mut fastrand::Rng) -> PointRow {
    let [min_x, min_y, max_x, max_y] = NZ_BOUNDS_2193;
    let x = min_x + random.f64() * (max_x - min_x);
    let y = min_y + random.f64() * (max_y - min_y);
    let value = (random.f64() * 1000.0 * 100.0).round() / 100.0;
    let day = u64::try_from(id).unwrap_or_default() % 9_000;
    PointRow {
        id,
        x,
        y,
        category: format!("c{}", id % 10),
        value,
        name: format!("point {id}"),
        // Dates from 2000-01-01, one day apart, wrapping every 9,000 days.
        observed: civil_date(10_957 + day),
    }
}

pub(crate) fn new_rows(content: GeneratedContent, seed: u64) -> Option<Rows> {
    let mut random = fastrand::Rng::with_seed(seed);
    match content {
        GeneratedContent::Points { count } => Some(Rows::Points(
            (1..=i64::try_from(count).unwrap_or(i64::MAX))
                .map(|id| point(id, &mut random))
                .collect(),
        )),
        GeneratedContent::Table { rows } => Some(Rows::Table(
            (1..=i64::try_from(rows).unwrap_or(i64::MAX))
                .map(|id| TableRow {
                    id,
                    suburb_locality_id: 2000 + id,
                    population_estimate: random.i64(0..40_000),
                })
                .collect(),
        )),
        GeneratedContent::Polygons { .. } => None,
    }
}

/// Distinct random indices into `0..len`, `count` of them, avoiding `taken`.
fn pick(random: &mut fastrand::Rng, len: usize, count: u64, taken: &mut [bool]) -> Vec<usize> {
    let mut picked = Vec::new();
    let wanted = usize::try_from(count).unwrap_or(usize::MAX).min(len);
    while picked.len() < wanted && taken.iter().any(|taken| !taken) {
        let index = random.usize(0..len);
        if !taken[index] {
            taken[index] = true;
            picked.push(index);
        }
    }
    picked
}

fn edit(rows: &mut Rows, per_mille: u32, revision: u32, seed: u64) {
    let mut random = fastrand::Rng::with_seed(seed);
    let len = rows.len();
    let (inserts, updates, deletes) = edit_sizes(len as u64, per_mille);
    let mut taken = vec![false; len];
    let to_update = pick(&mut random, len, updates, &mut taken);
    let to_delete = pick(&mut random, len, deletes, &mut taken);
    match rows {
        Rows::Points(points) => {
            for &index in &to_update {
                let row = &mut points[index];
                row.x += random.f64() * 200.0 - 100.0;
                row.y += random.f64() * 200.0 - 100.0;
                row.value = (random.f64() * 1000.0 * 100.0).round() / 100.0;
                row.name = format!("point {} (revision {revision})", row.id);
            }
            let next = points.last().map_or(1, |row| row.id + 1);
            let keep = to_delete.iter().fold(vec![true; len], |mut keep, &index| {
                keep[index] = false;
                keep
            });
            let mut index = 0;
            points.retain(|_| {
                let kept = keep[index];
                index += 1;
                kept
            });
            for id in (next..).take(usize::try_from(inserts).unwrap_or(usize::MAX)) {
                points.push(point(id, &mut random));
            }
        }
        Rows::Table(table) => {
            for &index in &to_update {
                table[index].population_estimate = random.i64(0..40_000);
            }
            let next = table.last().map_or(1, |row| row.id + 1);
            let gone: std::collections::HashSet<usize> = to_delete.into_iter().collect();
            let mut index = 0;
            table.retain(|_| {
                let kept = !gone.contains(&index);
                index += 1;
                kept
            });
            for id in (next..).take(usize::try_from(inserts).unwrap_or(usize::MAX)) {
                table.push(TableRow {
                    id,
                    suburb_locality_id: 2000 + id,
                    population_estimate: random.i64(0..40_000),
                });
            }
        }
    }
}

/// The rows of `revision` of a generated layer, `None` for polygons (whose revisions are drawn
/// anew by the writer).
pub(crate) fn rows(
    content: GeneratedContent,
    layer_id: u64,
    history: &History,
    revision: u32,
) -> Option<Rows> {
    let revision_index = usize::try_from(revision).unwrap_or(usize::MAX);
    // The newest revision at or before `revision` that drew new rows.
    let base = (0..=revision_index.min(history.len().saturating_sub(1)))
        .rev()
        .find(|&index| history.get(index).copied().flatten().is_none())
        .unwrap_or(0);
    let mut rows = new_rows(content, layer_id * 1_000 + base as u64)?;
    for index in base + 1..=revision_index.min(history.len().saturating_sub(1)) {
        if let Some(Some(per_mille)) = history.get(index) {
            let revision = u32::try_from(index).unwrap_or(u32::MAX);
            edit(
                &mut rows,
                *per_mille,
                revision,
                layer_id * 1_000 + 500 + index as u64,
            );
        }
    }
    Some(rows)
}

/// The feature count of `revision`, without drawing its rows.
pub(crate) fn feature_count(
    content: GeneratedContent,
    history: &History,
    revision: u32,
) -> Option<u64> {
    let mut count = match content {
        GeneratedContent::Points { count } => count,
        GeneratedContent::Table { rows } => rows,
        GeneratedContent::Polygons { .. } => return None,
    };
    let last = usize::try_from(revision)
        .unwrap_or(usize::MAX)
        .min(history.len().saturating_sub(1));
    for entry in history.iter().take(last + 1).skip(1) {
        match entry {
            Some(per_mille) => {
                let (inserts, _, deletes) = edit_sizes(count, *per_mille);
                count = count + inserts - deletes;
            }
            None => {
                count = match content {
                    GeneratedContent::Points { count } => count,
                    GeneratedContent::Table { rows } => rows,
                    GeneratedContent::Polygons { .. } => return None,
                };
            }
        }
    }
    Some(count)
}

fn point_feature(row: &PointRow, change: &str, type_name: &str) -> Value {
    json!({
        "type": "Feature",
        "id": format!("{type_name}.{}", row.id),
        "geometry": {"type": "Point", "coordinates": [row.x, row.y]},
        "geometry_name": "shape",
        "properties": {
            "__change__": change,
            "id": row.id,
            "category": row.category,
            "value": row.value,
            "name": row.name,
            // GeoServer writes dates with a zone designator.
            "observed": format!("{}Z", row.observed),
        },
    })
}

fn table_feature(row: &TableRow, change: &str, type_name: &str) -> Value {
    json!({
        "type": "Feature",
        "id": format!("{type_name}.{}", row.id),
        "geometry": null,
        "properties": {
            "__change__": change,
            "id": row.id,
            "suburb_locality_id": row.suburb_locality_id,
            "population_estimate": row.population_estimate,
        },
    })
}

/// The changeset from revision `from` to revision `to`: one feature per row inserted, updated
/// or deleted, sorted by `id`.
pub(crate) fn changeset(from: &Rows, to: &Rows, type_name: &str) -> Vec<Value> {
    fn diff<T: PartialEq>(
        from: &[T],
        to: &[T],
        id: impl Fn(&T) -> i64,
        feature: impl Fn(&T, &str) -> Value,
    ) -> Vec<Value> {
        let (mut i, mut j) = (0, 0);
        let mut out = Vec::new();
        while i < from.len() || j < to.len() {
            match (from.get(i), to.get(j)) {
                (Some(old), Some(new)) if id(old) == id(new) => {
                    if old != new {
                        out.push(feature(new, "UPDATE"));
                    }
                    i += 1;
                    j += 1;
                }
                (Some(old), Some(new)) if id(old) < id(new) => {
                    out.push(feature(old, "DELETE"));
                    i += 1;
                }
                (Some(old), None) => {
                    out.push(feature(old, "DELETE"));
                    i += 1;
                }
                (_, Some(new)) => {
                    out.push(feature(new, "INSERT"));
                    j += 1;
                }
                (None, None) => break,
            }
        }
        out
    }
    match (from, to) {
        (Rows::Points(from), Rows::Points(to)) => diff(
            from,
            to,
            |row| row.id,
            |row, change| point_feature(row, change, type_name),
        ),
        (Rows::Table(from), Rows::Table(to)) => diff(
            from,
            to,
            |row| row.id,
            |row, change| table_feature(row, change, type_name),
        ),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edit_changes_what_it_says_and_the_changeset_lists_it() {
        let content = GeneratedContent::Points { count: 1000 };
        let history = [None, Some(20)];
        let before = rows(content, 7, &history, 0).expect("rows");
        let after = rows(content, 7, &history, 1).expect("rows");
        let (inserts, updates, deletes) = edit_sizes(1000, 20);
        assert_eq!((inserts, updates, deletes), (10, 5, 5));
        assert_eq!(after.len() as u64, 1000 + inserts - deletes);
        assert_eq!(
            feature_count(content, &history, 1),
            Some(after.len() as u64)
        );
        let changes = changeset(&before, &after, "layer-7-changeset");
        let count = |change: &str| {
            changes
                .iter()
                .filter(|feature| feature["properties"]["__change__"] == change)
                .count() as u64
        };
        assert_eq!(
            (count("INSERT"), count("UPDATE"), count("DELETE")),
            (inserts, updates, deletes)
        );
        // Deterministic: the same revision twice is the same rows.
        assert_eq!(rows(content, 7, &history, 1), Some(after));
    }
}
