//! Runs a Geoservices query over a provider's features, in one pass and bounded memory: the
//! steps the provider did not apply (`filtersApplied`) are applied here, feature by feature.
//!
//! Memory: a page keeps at most `resultRecordCount` (capped by `maxRecordCount`) features plus
//! one; ordered pages keep at most twice `resultOffset + page + 1`; counts, extents and
//! statistics keep aggregates. Only `returnIdsOnly` and `returnDistinctValues` grow with the
//! answer, as they must.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

use geojson::Feature;
use koop_geoservices::{OutFields, Query, Reprojector, Statistic, StatisticType, Value};
use koop_provider::{Epsg, FieldType, FiltersApplied, QueryAnswer};
use serde_json::{Map, Value as Json};

use crate::esri::{CoordinateMapper, Extent};
use crate::layer::Layer;
use crate::object_id::feature_hash;

/// What a query answers.
#[derive(Debug)]
pub(crate) enum Answer {
    /// `returnCountOnly`: `{count}`.
    Count(u64),
    /// `returnCountOnly` with `returnExtentOnly`: `{count, extent}` (extent in `outSR`, `None`
    /// when nothing matched).
    CountExtent(u64, Option<Extent>),
    /// `returnIdsOnly`.
    Ids(Vec<i64>),
    /// `returnExtentOnly`: the extent in `outSR` (`None` when nothing matched).
    Extent(Option<Extent>),
    /// A page of features, and whether more exist.
    Features {
        /// The page.
        features: Vec<Feature>,
        /// More features match than the page holds.
        exceeded: bool,
    },
    /// `outStatistics`: one row of attributes per group, and whether more groups exist.
    Statistics(Vec<Map<String, Json>>, bool),
    /// `returnDistinctValues`: one row of attributes per distinct combination, and whether
    /// more exist.
    Distinct(Vec<Map<String, Json>>, bool),
}

/// What a page written as it streams does with one feature ([`Engine::step`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Not in the page: filtered out or before `resultOffset`.
    Skip,
    /// Written.
    Write,
    /// The page is full and this feature shows that more exist: stop.
    Full,
}

/// Most features an ordered page may keep in memory (`resultOffset` + page) for a provider
/// that cannot order in its source.
pub(crate) const MAX_ORDERED_IN_MEMORY: u64 = 100_000;

impl Answer {
    /// The answer a provider gave whole (`filtersApplied.all` with a [`QueryAnswer`]).
    pub(crate) fn from_provider(answer: QueryAnswer, query: &Query) -> Self {
        match answer {
            QueryAnswer::ObjectIds(ids) => Self::Ids(ids),
            QueryAnswer::Extent { extent, count } => {
                let extent = extent.map(|[xmin, ymin, xmax, ymax]| Extent {
                    xmin,
                    ymin,
                    xmax,
                    ymax,
                });
                if query.count_only {
                    Self::CountExtent(count.unwrap_or(0), extent)
                } else {
                    Self::Extent(extent)
                }
            }
            QueryAnswer::Rows { rows, exceeded } => {
                if query.statistics.is_empty() {
                    Self::Distinct(rows, exceeded)
                } else {
                    Self::Statistics(rows, exceeded)
                }
            }
        }
    }
}

/// A statistic being computed (Welford's algorithm for the mean and variance).
#[derive(Debug, Clone, Default)]
struct Accumulator {
    count: u64,
    sum: f64,
    mean: f64,
    m2: f64,
    min: Option<Value>,
    max: Option<Value>,
}

impl Accumulator {
    fn add(&mut self, value: Value) {
        if value == Value::Null {
            return;
        }
        self.count += 1;
        if let Value::Number(number) = value {
            self.sum += number;
            let delta = number - self.mean;
            self.mean += delta / self.count as f64;
            self.m2 += delta * (number - self.mean);
        }
        if self
            .min
            .as_ref()
            .is_none_or(|min| sort_order(&value, min) == Ordering::Less)
        {
            self.min = Some(value.clone());
        }
        if self
            .max
            .as_ref()
            .is_none_or(|max| sort_order(&value, max) == Ordering::Greater)
        {
            self.max = Some(value);
        }
    }

    fn result(&self, kind: StatisticType) -> Json {
        let number =
            |value: f64| serde_json::Number::from_f64(value).map_or(Json::Null, Json::Number);
        match kind {
            StatisticType::Count => Json::from(self.count),
            StatisticType::Sum if self.count > 0 => number(self.sum),
            StatisticType::Avg if self.count > 0 => number(self.mean),
            StatisticType::Var if self.count > 1 => number(self.m2 / (self.count - 1) as f64),
            StatisticType::Stddev if self.count > 1 => {
                number((self.m2 / (self.count - 1) as f64).sqrt())
            }
            StatisticType::Min => self.min.as_ref().map_or(Json::Null, esri_of_value),
            StatisticType::Max => self.max.as_ref().map_or(Json::Null, esri_of_value),
            _ => Json::Null,
        }
    }
}

/// An attribute value as Esri JSON: dates as epoch milliseconds.
fn esri_of_value(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Number(number) => {
            serde_json::Number::from_f64(*number).map_or(Json::Null, Json::Number)
        }
        Value::Text(text) => Json::String(text.clone()),
        Value::Date(ms) => Json::from(*ms),
    }
}

/// SQLite's order of values: NULL first, then numbers and dates, then text.
fn sort_order(a: &Value, b: &Value) -> Ordering {
    fn class(value: &Value) -> u8 {
        match value {
            Value::Null => 0,
            Value::Number(_) | Value::Date(_) => 1,
            Value::Text(_) => 2,
        }
    }
    class(a)
        .cmp(&class(b))
        .then_with(|| a.compare(b).unwrap_or(Ordering::Equal))
}

/// One group of `outStatistics`.
struct Group {
    values: Vec<Json>,
    accumulators: Vec<Accumulator>,
}

enum State {
    /// The provider counted: the answer is known, no feature is needed.
    Counted(u64),
    Count(u64),
    CountExtent(u64, Option<Extent>),
    Extent(Option<Extent>),
    Ids(Vec<i64>),
    Page {
        skip: u64,
        limit: u64,
        seen: u64,
        kept: Vec<Feature>,
        exceeded: bool,
    },
    Ordered {
        skip: u64,
        limit: u64,
        next: u64,
        kept: Vec<(Vec<Value>, u64, Feature)>,
    },
    Statistics {
        groups: Vec<Group>,
        index: HashMap<String, usize>,
    },
    Distinct {
        seen: HashSet<String>,
        rows: Vec<Map<String, Json>>,
        /// Most rows kept: the page (`maxRecordCount` caps it), plus one to tell.
        limit: usize,
    },
}

/// A query being run over features pushed one by one.
pub(crate) struct Engine<'a> {
    query: &'a Query,
    layer: &'a Layer,
    applied: FiltersApplied,
    /// From the data's CRS to EPSG:4326, for geometry filters (when the data is not 4326).
    to_4326: Option<Reprojector>,
    /// From the data's CRS to `outSR`, for extents.
    to_out: CoordinateMapper,
    provider_exceeded: bool,
    /// `objectIds`, for lookups.
    object_ids: Option<HashSet<i64>>,
    /// The page size: `resultRecordCount` capped by `maxRecordCount`.
    page: u64,
    state: State,
}

impl<'a> Engine<'a> {
    /// A query over features in EPSG `crs`, of which the provider already applied `applied`
    /// and counted `count` (and said whether it paged with `exceeded`).
    ///
    /// # Errors
    ///
    /// A message when `crs` cannot be reprojected to EPSG:4326 or `outSR`.
    pub(crate) fn new(
        query: &'a Query,
        layer: &'a Layer,
        applied: FiltersApplied,
        crs: Epsg,
        count: Option<u64>,
        exceeded: bool,
    ) -> Result<Self, String> {
        let to_4326 = if crs == Epsg::WGS84 {
            None
        } else {
            Some(Reprojector::new(crs, Epsg::WGS84).map_err(|error| error.to_string())?)
        };
        let to_out =
            CoordinateMapper::new(crs, query.out_epsg, None).map_err(|error| error.to_string())?;
        let filtered =
            applied.all || (applied.where_clause && (applied.geometry || query.geometry.is_none()));
        let page = query.page_size(layer.max_record_count);
        let state = if query.count_only && query.extent_only {
            State::CountExtent(0, None)
        } else if query.count_only {
            match count {
                Some(count) if filtered => State::Counted(count),
                _ => State::Count(0),
            }
        } else if query.ids_only {
            State::Ids(Vec::new())
        } else if query.extent_only {
            State::Extent(None)
        } else if !query.statistics.is_empty() {
            State::Statistics {
                groups: Vec::new(),
                index: HashMap::new(),
            }
        } else if query.distinct {
            State::Distinct {
                seen: HashSet::new(),
                rows: Vec::new(),
                limit: usize::try_from(page.saturating_add(1)).unwrap_or(usize::MAX),
            }
        } else {
            let skip = if applied.offset || applied.all {
                0
            } else {
                query.offset
            };
            let limit = if applied.limit || applied.all {
                u64::MAX
            } else {
                page
            };
            if !(query.order_by.is_empty() || applied.offset || applied.all)
                && query.offset.saturating_add(page) > MAX_ORDERED_IN_MEMORY
            {
                return Err(format!(
                    "this layer's provider cannot order its features, and ordering {} of them in memory is more than this server does (resultOffset + resultRecordCount at most {MAX_ORDERED_IN_MEMORY})",
                    query.offset.saturating_add(page)
                ));
            }
            if query.order_by.is_empty() || applied.offset || applied.all {
                State::Page {
                    skip,
                    limit,
                    seen: 0,
                    kept: Vec::new(),
                    exceeded: false,
                }
            } else {
                State::Ordered {
                    skip,
                    limit,
                    next: 0,
                    kept: Vec::new(),
                }
            }
        };
        Ok(Self {
            query,
            layer,
            applied,
            to_4326,
            to_out,
            provider_exceeded: exceeded && (applied.limit || applied.all),
            object_ids: query
                .object_ids
                .as_ref()
                .map(|ids| ids.iter().copied().collect()),
            page,
            state,
        })
    }

    /// Whether the answer is a page of features in the order they arrive (no ordering left to
    /// do here), which can be written as the features come ([`Engine::step`]).
    pub(crate) fn streams_page(&self) -> bool {
        matches!(self.state, State::Page { .. })
    }

    /// For a page written as it streams: what to do with the next feature. Pass over it, write
    /// it, or stop because the page is full and this one shows that more exist. The same rules
    /// as [`Engine::push`] of a page.
    pub(crate) fn step(&mut self, feature: &Feature) -> Step {
        if !self.matches(feature) {
            return Step::Skip;
        }
        self.step_kept()
    }

    /// Whether [`Engine::step`] would pass every feature to the page's count (the provider
    /// applied every filter), so a feature need not be built to be counted
    /// ([`Engine::step_kept`]).
    pub(crate) fn keeps_every_feature(&self) -> bool {
        let attributes = self.applied.where_clause
            || self.applied.all
            || (self.object_ids.is_none() && self.query.predicate.is_always_true());
        let geometry = self.applied.geometry || self.applied.all || self.query.geometry.is_none();
        attributes && geometry
    }

    /// [`Engine::step`] of a feature the filters keep (when [`Engine::keeps_every_feature`]).
    pub(crate) fn step_kept(&mut self) -> Step {
        let State::Page {
            skip,
            limit,
            seen,
            exceeded,
            ..
        } = &mut self.state
        else {
            return Step::Skip;
        };
        *seen += 1;
        if *seen <= *skip {
            Step::Skip
        } else if *seen - *skip <= *limit {
            Step::Write
        } else {
            *exceeded = true;
            Step::Full
        }
    }

    /// For a page written as it streams: whether more features exist than it holds (seen here,
    /// or said by a provider that applied the limit).
    pub(crate) fn page_exceeded(&self) -> bool {
        matches!(self.state, State::Page { exceeded: true, .. }) || self.provider_exceeded
    }

    /// `false` when no features are needed (the provider already answered).
    pub(crate) fn needs_features(&self) -> bool {
        !matches!(self.state, State::Counted(_))
    }

    /// The object id of a feature: its `idField`, or the computed hash.
    pub(crate) fn object_id(layer: &Layer, feature: &Feature) -> Option<i64> {
        if layer.schema.object_id_is_attribute {
            feature
                .property(&layer.schema.object_id)
                .and_then(Json::as_i64)
        } else {
            Some(feature_hash(feature))
        }
    }

    /// The value of field `name` of `feature`, as `field_type`.
    fn attribute(&self, feature: &Feature, name: &str, field_type: FieldType) -> Value {
        if name == self.layer.schema.object_id && !self.layer.schema.object_id_is_attribute {
            return Value::Number(feature_hash(feature) as f64);
        }
        Value::from_json(feature.property(name), field_type)
    }

    fn field_type(&self, name: &str) -> FieldType {
        self.layer.field_type(name)
    }

    /// Whether the feature passes the filters the provider did not apply.
    fn matches(&self, feature: &Feature) -> bool {
        if !(self.applied.where_clause || self.applied.all) {
            if let Some(ids) = &self.object_ids {
                match Self::object_id(self.layer, feature) {
                    Some(id) if ids.contains(&id) => {}
                    _ => return false,
                }
            }
            if !self.query.predicate.is_always_true() {
                let kept = self
                    .query
                    .predicate
                    .eval(&|column| self.attribute(feature, &column.name, column.field_type));
                if kept != Some(true) {
                    return false;
                }
            }
        }
        if !(self.applied.geometry || self.applied.all)
            && let Some(filter) = &self.query.geometry
        {
            let Some(geometry) = &feature.geometry else {
                return false;
            };
            let Ok(mut geometry) = geo_types::Geometry::<f64>::try_from(&geometry.value) else {
                return false;
            };
            if let Some(reprojector) = &self.to_4326
                && reprojector.geometry(&mut geometry).is_err()
            {
                return false;
            }
            return filter.matches(&geometry);
        }
        true
    }

    fn extend(&self, extent: &mut Option<Extent>, feature: &Feature) {
        if let Some(geometry) = &feature.geometry
            && let Some(mapped) = self.to_out.geometry(&geometry.value)
        {
            Extent::include(extent, &mapped);
        }
    }

    fn sort_keys(&self, feature: &Feature) -> Vec<Value> {
        self.query
            .order_by
            .iter()
            .map(|(name, _)| self.attribute(feature, name, self.field_type(name)))
            .collect()
    }

    fn compare_keys(order_by: &[(String, bool)], a: &[Value], b: &[Value]) -> Ordering {
        for ((_, descending), (a, b)) in order_by.iter().zip(a.iter().zip(b)) {
            let ordering = sort_order(a, b);
            let ordering = if *descending {
                ordering.reverse()
            } else {
                ordering
            };
            if ordering != Ordering::Equal {
                return ordering;
            }
        }
        Ordering::Equal
    }

    fn statistic_row(&self, feature: &Feature) -> (String, Vec<Json>, Vec<Value>) {
        let values: Vec<Json> = self
            .query
            .group_by
            .iter()
            .map(|name| esri_of_value(&self.attribute(feature, name, self.field_type(name))))
            .collect();
        let key = serde_json::to_string(&values).unwrap_or_default();
        let inputs = self
            .query
            .statistics
            .iter()
            .map(|statistic: &Statistic| {
                self.attribute(feature, &statistic.field, statistic.field_type)
            })
            .collect();
        (key, values, inputs)
    }

    fn distinct_row(&self, feature: &Feature) -> Map<String, Json> {
        let names: Vec<&str> = match &self.query.out_fields {
            OutFields::All => self
                .layer
                .schema
                .fields
                .iter()
                .map(|field| field.name.as_str())
                .collect(),
            OutFields::Fields(names) => names.iter().map(String::as_str).collect(),
        };
        names
            .into_iter()
            .map(|name| {
                (
                    name.to_owned(),
                    esri_of_value(&self.attribute(feature, name, self.field_type(name))),
                )
            })
            .collect()
    }

    /// Takes one feature; `false` when no more are needed.
    pub(crate) fn push(&mut self, feature: Cow<'_, Feature>) -> bool {
        if !self.needs_features() {
            return false;
        }
        if !self.matches(&feature) {
            return true;
        }
        let mut extent_update = None;
        if matches!(self.state, State::CountExtent(..) | State::Extent(_)) {
            let mut extent = match &self.state {
                State::CountExtent(_, extent) | State::Extent(extent) => *extent,
                _ => None,
            };
            self.extend(&mut extent, &feature);
            extent_update = Some(extent);
        }
        let sort_keys =
            matches!(self.state, State::Ordered { .. }).then(|| self.sort_keys(&feature));
        let statistic_row =
            matches!(self.state, State::Statistics { .. }).then(|| self.statistic_row(&feature));
        let distinct_row =
            matches!(self.state, State::Distinct { .. }).then(|| self.distinct_row(&feature));
        let object_id = matches!(self.state, State::Ids(_))
            .then(|| Self::object_id(self.layer, &feature))
            .flatten();
        let order_by = &self.query.order_by;
        let statistics = &self.query.statistics;
        match &mut self.state {
            State::Counted(_) => return false,
            State::Count(count) => *count += 1,
            State::CountExtent(count, extent) => {
                *count += 1;
                *extent = extent_update.flatten();
            }
            State::Extent(extent) => *extent = extent_update.flatten(),
            State::Ids(ids) => ids.extend(object_id),
            State::Page {
                skip,
                limit,
                seen,
                kept,
                exceeded,
            } => {
                *seen += 1;
                if *seen <= *skip {
                    return true;
                }
                if (kept.len() as u64) < *limit {
                    kept.push(feature.into_owned());
                } else {
                    *exceeded = true;
                    return false;
                }
            }
            State::Ordered {
                skip,
                limit,
                next,
                kept,
            } => {
                kept.push((sort_keys.unwrap_or_default(), *next, feature.into_owned()));
                *next += 1;
                let bound = usize::try_from(skip.saturating_add(*limit).saturating_add(1))
                    .unwrap_or(usize::MAX);
                if kept.len() >= bound.saturating_mul(2).max(1024) {
                    kept.sort_by(|a, b| {
                        Self::compare_keys(order_by, &a.0, &b.0).then(a.1.cmp(&b.1))
                    });
                    kept.truncate(bound);
                }
            }
            State::Statistics { groups, index } => {
                let Some((key, values, inputs)) = statistic_row else {
                    return true;
                };
                let position = *index.entry(key).or_insert_with(|| {
                    groups.push(Group {
                        values,
                        accumulators: vec![Accumulator::default(); statistics.len()],
                    });
                    groups.len() - 1
                });
                for (accumulator, input) in groups[position].accumulators.iter_mut().zip(inputs) {
                    accumulator.add(input);
                }
            }
            State::Distinct { seen, rows, limit } => {
                let Some(row) = distinct_row else {
                    return true;
                };
                let key = serde_json::to_string(&row).unwrap_or_default();
                if seen.insert(key) {
                    rows.push(row);
                    if rows.len() >= *limit {
                        // A page and one more: the answer is exceeded; no more are needed.
                        return false;
                    }
                }
            }
        }
        true
    }

    /// The answer.
    pub(crate) fn finish(self) -> Answer {
        let order_by = &self.query.order_by;
        match self.state {
            State::Counted(count) | State::Count(count) => Answer::Count(count),
            State::CountExtent(count, extent) => Answer::CountExtent(count, extent),
            State::Extent(extent) => Answer::Extent(extent),
            State::Ids(ids) => Answer::Ids(ids),
            State::Page { kept, exceeded, .. } => Answer::Features {
                features: kept,
                exceeded: exceeded || self.provider_exceeded,
            },
            State::Ordered {
                skip,
                limit,
                mut kept,
                ..
            } => {
                kept.sort_by(|a, b| Self::compare_keys(order_by, &a.0, &b.0).then(a.1.cmp(&b.1)));
                let skip = usize::try_from(skip).unwrap_or(usize::MAX);
                let limit = usize::try_from(limit).unwrap_or(usize::MAX);
                let exceeded = kept.len().saturating_sub(skip) > limit;
                Answer::Features {
                    features: kept
                        .into_iter()
                        .skip(skip)
                        .take(limit)
                        .map(|(_, _, feature)| feature)
                        .collect(),
                    exceeded,
                }
            }
            State::Statistics { groups, .. } => {
                let groups = if groups.is_empty() && self.query.group_by.is_empty() {
                    // Statistics of nothing: one row (count 0, the rest null).
                    vec![Group {
                        values: Vec::new(),
                        accumulators: vec![Accumulator::default(); self.query.statistics.len()],
                    }]
                } else {
                    groups
                };
                let mut rows: Vec<Map<String, Json>> = groups
                    .into_iter()
                    .map(|group| {
                        let mut row = Map::new();
                        for (statistic, accumulator) in
                            self.query.statistics.iter().zip(&group.accumulators)
                        {
                            row.insert(
                                statistic.out_name.clone(),
                                accumulator.result(statistic.kind),
                            );
                        }
                        for (name, value) in self.query.group_by.iter().zip(group.values) {
                            row.insert(name.clone(), value);
                        }
                        row
                    })
                    .collect();
                // Groups in the order asked, else in the order of their first features (as the
                // reference Koop answers), then paged.
                if !order_by.is_empty() {
                    let key = |row: &Map<String, Json>| -> Vec<Value> {
                        order_by
                            .iter()
                            .map(|(name, _)| {
                                let value = row.get(name).or_else(|| {
                                    row.iter()
                                        .find(|(key, _)| key.eq_ignore_ascii_case(name))
                                        .map(|(_, value)| value)
                                });
                                Value::from_json(value, FieldType::Double)
                            })
                            .collect()
                    };
                    rows.sort_by(|a, b| Self::compare_keys(order_by, &key(a), &key(b)));
                }
                let skip = usize::try_from(self.query.offset).unwrap_or(usize::MAX);
                let page = usize::try_from(self.page).unwrap_or(usize::MAX);
                let exceeded = rows.len().saturating_sub(skip) > page;
                Answer::Statistics(rows.into_iter().skip(skip).take(page).collect(), exceeded)
            }
            State::Distinct {
                mut rows, limit, ..
            } => {
                let exceeded = rows.len() >= limit;
                rows.truncate(limit.saturating_sub(1));
                if !order_by.is_empty() {
                    rows.sort_by(|a, b| {
                        let key = |row: &Map<String, Json>| -> Vec<Value> {
                            order_by
                                .iter()
                                .map(|(name, _)| Value::from_json(row.get(name), FieldType::Double))
                                .collect()
                        };
                        Self::compare_keys(order_by, &key(a), &key(b))
                    });
                }
                Answer::Distinct(rows, exceeded)
            }
        }
    }
}
