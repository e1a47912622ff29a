//! The GeoPackage R-tree of a large point layer, copied into memory as a k-d tree
//! ([geo-index](https://docs.rs/geo-index)), for the envelope and intersects queries GIS clients
//! send as they pan.
//!
//! SQLite answers an R-tree search one row at a time through its virtual-table interface: on a
//! layer of 1,000,000 points, the 6,760 candidates of a 1° × 1° envelope take about 2.3 ms of
//! SQLite alone (`sqlite3` CLI, warm cache), a third of such a page's whole cost. The same search
//! in a packed k-d tree in memory takes a tenth of that.
//!
//! The copy holds each point's R-tree corner (float32, rounded down by GeoPackage: the point lies
//! within one float32 step above it on each axis) and its fid: 20 bytes a row, sorted in place
//! (no copy while it is built). It is built in the background (two scans of the R-tree, on a bulk
//! permit) the first time a query could use it, only for point layers (every R-tree box at most
//! one float32 step wide) of [`MIN_ROWS`] to [`MAX_ROWS`] rows: smaller ones SQLite searches fast
//! enough; larger ones, and boxes of lines and polygons (a packed R-tree of boxes takes three
//! times its own size while it is sorted), would take more memory than a query is worth. Until it
//! is ready, and whenever it cannot be built, queries search SQLite's R-tree as before. It lives
//! as long as the layer version it was built from.

use std::sync::{Arc, Mutex};

use geo_index::kdtree::{KDTree, KDTreeBuilder, KDTreeIndex};
use koop_provider::ProviderError;

use crate::gpkg::{self, Table};
use crate::outline::Side;

/// Tables smaller than this are searched in SQLite: a copy would not pay for itself.
pub(crate) const MIN_ROWS: u64 = crate::index::MIN_ROWS;
/// Tables larger than this are searched in SQLite: the copy would take more than 100 MB.
pub(crate) const MAX_ROWS: u64 = 5_000_000;

/// The points of one layer version, in memory.
#[derive(Debug)]
pub(crate) struct SpatialIndex {
    /// Each point's lower corner in float32: the point lies in the box from it to the next
    /// float32 up on each axis.
    tree: KDTree<f32>,
    /// The fid of each entry, by insertion index.
    fids: Vec<i64>,
}

/// The largest float32 not above `value` (R-tree boxes grow outwards: a box must hold its
/// geometry, a search box its search).
fn down(value: f64) -> f32 {
    #[allow(
        clippy::cast_possible_truncation,
        reason = "rounded to float32 on purpose, then corrected downwards"
    )]
    let near = value as f32;
    if f64::from(near) > value {
        near.next_down()
    } else {
        near
    }
}

/// The smallest float32 not below `value`.
fn up(value: f64) -> f32 {
    #[allow(
        clippy::cast_possible_truncation,
        reason = "rounded to float32 on purpose, then corrected upwards"
    )]
    let near = value as f32;
    if f64::from(near) < value {
        near.next_up()
    } else {
        near
    }
}

impl SpatialIndex {
    /// The entries whose box meets `search` (`[min_x, min_y, max_x, max_y]` in the layer's
    /// CRS) and that `side` does not call [`Side::Outside`], in no particular order (a page sorts
    /// only those it may need), each with whether `side` calls its box [`Side::Inside`] (a sure
    /// match). The same entries as SQLite's R-tree
    /// search of `search`, and possibly a few more whose float32 box touches it only after
    /// rounding: `side` judges the box as the R-tree holds it, so those are never inside.
    pub(crate) fn candidates(
        &self,
        search: [f64; 4],
        side: impl Fn([f64; 4]) -> Side,
    ) -> Vec<(i64, bool)> {
        let [min_x, min_y, max_x, max_y] = search;
        // A point's box [x, x⁺] meets the search when x⁺ ≥ min, so x ≥ the float32 below the
        // search's rounded-down minimum; and x ≤ max.
        let (min_x, min_y) = (down(min_x).next_down(), down(min_y).next_down());
        let (max_x, max_y) = (up(max_x), up(max_y));
        let mut found = Vec::new();
        if self.fids.is_empty() {
            return found;
        }
        let coords = self.tree.coords();
        let indices = self.tree.indices();
        let node_size = usize::from(self.tree.node_size());
        let visit = |position: usize, found: &mut Vec<(i64, bool)>| {
            let (Some(&x), Some(&y)) = (coords.get(2 * position), coords.get(2 * position + 1))
            else {
                return;
            };
            if !(x >= min_x && x <= max_x && y >= min_y && y <= max_y) {
                return;
            }
            let Some(fid) = self.fids.get(indices.get(position)) else {
                return;
            };
            let sure = match side([
                f64::from(x),
                f64::from(y),
                f64::from(x.next_up()),
                f64::from(y.next_up()),
            ]) {
                Side::Inside => true,
                Side::Unsure => false,
                Side::Outside => return,
            };
            found.push((*fid, sure));
        };
        // The k-d tree's layout (kdbush): ranges of positions split at their middle, on x then
        // y in turn; ranges of at most a node's size are searched linearly.
        let mut ranges = vec![(0, indices.len() - 1, 0_u8)];
        while let Some((left, right, axis)) = ranges.pop() {
            if right - left <= node_size {
                for position in left..=right {
                    visit(position, &mut found);
                }
                continue;
            }
            let middle = (left + right) >> 1;
            visit(middle, &mut found);
            let (Some(&x), Some(&y)) = (coords.get(2 * middle), coords.get(2 * middle + 1)) else {
                continue;
            };
            let (at, low, high) = if axis == 0 {
                (x, min_x, max_x)
            } else {
                (y, min_y, max_y)
            };
            if low <= at && middle > left {
                ranges.push((left, middle - 1, 1 - axis));
            }
            if high >= at {
                ranges.push((middle + 1, right, 1 - axis));
            }
        }
        found
    }

    /// Bytes the index holds, about.
    pub(crate) fn bytes(&self) -> usize {
        size_of_val(self.tree.coords())
            + self.fids.len() * size_of::<u32>()
            + self.fids.capacity() * size_of::<i64>()
    }
}

#[derive(Debug, Default)]
enum Slot {
    #[default]
    Absent,
    Building,
    Ready(Arc<SpatialIndex>),
    Unusable,
}

/// The in-memory k-d tree of one layer version's points, once built.
#[derive(Debug, Default)]
pub(crate) struct SpatialSlot {
    slot: Mutex<Slot>,
}

impl SpatialSlot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The index, when it is built.
    pub(crate) fn ready(&self) -> Option<Arc<SpatialIndex>> {
        match &*self.lock() {
            Slot::Ready(index) => Some(index.clone()),
            _ => None,
        }
    }

    /// Claims the build: `true` when the caller should build it (none ran or runs), the
    /// table's size is within [`MIN_ROWS`]..=[`MAX_ROWS`], and its geometry column may hold
    /// points (declared `POINT`, or `GEOMETRY`: then the build finds out).
    pub(crate) fn claim(&self, table: &Table) -> bool {
        let mut slot = self.lock();
        if !matches!(*slot, Slot::Absent) {
            return false;
        }
        let points = table
            .geometry_type_name
            .as_deref()
            .is_none_or(|name| matches!(name, "POINT" | "GEOMETRY"));
        if table.rtree.is_none() || !points || !(MIN_ROWS..=MAX_ROWS).contains(&table.count) {
            *slot = Slot::Unusable;
            return false;
        }
        *slot = Slot::Building;
        true
    }

    /// Records the outcome of a claimed build.
    pub(crate) fn finish(&self, built: Option<SpatialIndex>) {
        *self.lock() = match built {
            Some(index) => Slot::Ready(Arc::new(index)),
            None => Slot::Unusable,
        };
    }
}

/// Copies the GeoPackage R-tree of `table` into memory (two scans: its size, then its entries);
/// `None` when the table has no R-tree, holds more than [`MAX_ROWS`] entries, or an entry's box is
/// not finite or wider than a point (a line or polygon: the scan stops there). Blocking.
///
/// # Errors
///
/// The provider error of a failed read.
pub(crate) fn build(table: &Table) -> Result<Option<SpatialIndex>, ProviderError> {
    let Some(rtree) = &table.rtree else {
        return Ok(None);
    };
    let connection = gpkg::open(&table.path)?;
    let error = gpkg::sqlite_error(&table.path);
    let rtree = Table::quoted(rtree);
    let entries: i64 = connection
        .query_row(&format!("SELECT count(*) FROM {rtree}"), [], |row| {
            row.get(0)
        })
        .map_err(&error)?;
    let Ok(entries) = u32::try_from(entries) else {
        return Ok(None);
    };
    if u64::from(entries) > MAX_ROWS {
        return Ok(None);
    }
    let mut building = Building::new(entries);
    let mut statement = connection
        .prepare(&format!("SELECT id, minx, miny, maxx, maxy FROM {rtree}"))
        .map_err(&error)?;
    let mut rows = statement.query([]).map_err(&error)?;
    while let Some(row) = rows.next().map_err(&error)? {
        let fid: i64 = row.get(0).map_err(&error)?;
        let corner = |index| row.get::<_, f64>(index).map_err(&error);
        let entry = [corner(1)?, corner(2)?, corner(3)?, corner(4)?];
        if !building.add(fid, entry) {
            return Ok(None);
        }
    }
    Ok(building.finish())
}

/// A [`SpatialIndex`] being filled with a known number of entries.
struct Building {
    builder: KDTreeBuilder<f32>,
    fids: Vec<i64>,
    entries: usize,
}

impl Building {
    fn new(entries: u32) -> Self {
        Self {
            builder: KDTreeBuilder::new(entries),
            fids: Vec::with_capacity(entries as usize),
            entries: entries as usize,
        }
    }

    /// Adds an entry (its R-tree box, `[min_x, min_y, max_x, max_y]`); `false` when it is one
    /// too many (the file changed between the scans: cached files never do), its box is not
    /// finite, or wider than one float32 step (not a point).
    fn add(&mut self, fid: i64, [min_x, min_y, max_x, max_y]: [f64; 4]) -> bool {
        if self.fids.len() == self.entries
            || !(min_x.is_finite() && min_y.is_finite() && max_x.is_finite() && max_y.is_finite())
        {
            return false;
        }
        let (x, y) = (down(min_x), down(min_y));
        if max_x > f64::from(x.next_up()) || max_y > f64::from(y.next_up()) {
            return false;
        }
        self.builder.add(x, y);
        self.fids.push(fid);
        true
    }

    /// The index; `None` when fewer entries came than announced.
    fn finish(self) -> Option<SpatialIndex> {
        (self.fids.len() == self.entries && !self.fids.is_empty()).then(|| SpatialIndex {
            tree: self.builder.finish(),
            fids: self.fids,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic stream of numbers in 0..1 (xorshift).
    struct Numbers(u64);

    impl Numbers {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1_u64 << 53) as f64
        }
    }

    /// Candidates beyond the search only by float32 rounding: a step or so.
    fn all_near(found: &[(i64, bool)], points: &[(i64, f64, f64)], search: [f64; 4]) {
        let slack = 1.0;
        for (fid, _) in found {
            let (_, px, py) = points
                .iter()
                .find(|(id, ..)| id == fid)
                .expect("a candidate is a point");
            assert!(
                *px >= search[0] - slack
                    && *px <= search[2] + slack
                    && *py >= search[1] - slack
                    && *py <= search[3] + slack,
                "{fid} far outside {search:?}"
            );
        }
    }

    /// Inside `inside`, outside `beyond`, unsure between.
    fn box_side(inside: [f64; 4], beyond: [f64; 4], [a, b, c, d]: [f64; 4]) -> Side {
        if a >= inside[0] && c <= inside[2] && b >= inside[1] && d <= inside[3] {
            Side::Inside
        } else if c < beyond[0] || a > beyond[2] || d < beyond[1] || b > beyond[3] {
            Side::Outside
        } else {
            Side::Unsure
        }
    }

    #[test]
    fn searches_find_what_a_scan_finds_and_decide_only_points_inside_or_outside() {
        let mut numbers = Numbers(0x9E37_79B9_7F4A_7C15);
        // Points over a projected extent (some exactly on float32 values), fids out of order,
        // entered as GeoPackage's R-tree holds them: float32 boxes rounded outwards.
        let points: Vec<(i64, f64, f64)> = (0..20_000_i64)
            .map(|index| {
                let (x, y) = (
                    1_000_000.0 + numbers.next() * 1_000_000.0,
                    5_000_000.0 + numbers.next() * 1_000_000.0,
                );
                let (x, y) = if index % 5 == 0 {
                    (x.round(), y.round())
                } else {
                    (x, y)
                };
                ((index * 7_919) % 20_011, x, y)
            })
            .collect();
        let mut building = Building::new(u32::try_from(points.len()).expect("20,000 points"));
        for (fid, x, y) in &points {
            let entry = [
                f64::from(down(*x)),
                f64::from(down(*y)),
                f64::from(up(*x)),
                f64::from(up(*y)),
            ];
            assert!(building.add(*fid, entry), "{entry:?}");
        }
        assert!(!building.add(1, [0.0, 0.0, 1.0, 1.0]), "one too many");
        let index = building.finish().expect("every point entered");
        for round in 0..300 {
            let (x, y) = (
                900_000.0 + numbers.next() * 1_100_000.0,
                4_900_000.0 + numbers.next() * 1_100_000.0,
            );
            let (width, height) = (numbers.next() * 300_000.0, numbers.next() * 300_000.0);
            // Some searches start exactly on a point.
            let (x, y) = if round % 10 == 0 {
                (points[round].1, points[round].2)
            } else {
                (x, y)
            };
            let search = [x, y, x + width, y + height];
            let inside = [
                x + width * 0.1,
                y + height * 0.1,
                x + width * 0.9,
                y + height * 0.9,
            ];
            let beyond = [
                x + width * 0.05,
                y + height * 0.05,
                x + width * 0.95,
                y + height * 0.95,
            ];
            let found = index.candidates(search, |bounds| box_side(inside, beyond, bounds));
            let mut found_fids: Vec<i64> = found.iter().map(|(fid, _)| *fid).collect();
            found_fids.sort_unstable();
            assert!(
                found_fids.windows(2).all(|pair| pair[0] < pair[1]),
                "each entry once"
            );
            for (fid, px, py) in &points {
                let meets =
                    *px >= search[0] && *px <= search[2] && *py >= search[1] && *py <= search[3];
                let exactly_inside =
                    *px >= inside[0] && *px <= inside[2] && *py >= inside[1] && *py <= inside[3];
                let within =
                    *px >= beyond[0] && *px <= beyond[2] && *py >= beyond[1] && *py <= beyond[3];
                match found.iter().find(|(found, _)| found == fid) {
                    // Extra candidates are tested exactly; a sure one must be inside.
                    Some((_, sure)) => {
                        assert!(!sure || exactly_inside, "{fid} called sure");
                        assert!(
                            (*px - beyond[0]).min(beyond[2] - *px) > -1.0
                                && (*py - beyond[1]).min(beyond[3] - *py) > -1.0,
                            "{fid} ({px}, {py}) is outside {beyond:?}"
                        );
                    }
                    None => assert!(
                        !(meets && within),
                        "{fid} ({px}, {py}) missing from {search:?}"
                    ),
                }
            }
            all_near(&found, &points, search);
            assert!(
                index
                    .candidates(search, |_| Side::Unsure)
                    .iter()
                    .all(|(_, sure)| !sure),
                "nothing is sure without a box of sure matches"
            );
        }
    }

    #[test]
    fn boxes_wider_than_a_point_are_refused() {
        let mut building = Building::new(2);
        assert!(building.add(1, [10.0, 10.0, 10.0, 10.0]));
        assert!(!building.add(2, [10.0, 10.0, 12.0, 10.0]), "a line");
        assert!(!building.add(2, [f64::NAN, 10.0, 10.0, 10.0]), "not finite");
        assert!(building.finish().is_none(), "fewer entries than announced");
    }

    #[test]
    fn float32_bounds_hold_the_value() {
        for value in [
            0.1,
            -0.1,
            1_682_818.069_249,
            5_460_761.410_740_67,
            -41.000_001,
            0.0,
        ] {
            assert!(f64::from(down(value)) <= value, "{value}");
            assert!(f64::from(up(value)) >= value, "{value}");
            assert!(f64::from(up(value)) - f64::from(down(value)) <= value.abs() * 2e-7);
        }
        // Exactly representable: unchanged.
        assert!(down(0.5).total_cmp(&0.5).is_eq());
        assert!(up(0.5).total_cmp(&0.5).is_eq());
    }
}
