//! The Geoservices query model: what a FeatureServer `query` asks, parsed and checked once, for
//! the output that answers it over any provider's features and for providers that push it down
//! to their source (the Koordinates provider answers it with SQL on the cached GeoPackage).
//!
//! - [`Query::parse`] reads every parameter of the ArcGIS REST API's "Query (Feature
//!   Service/Layer)" operation that koop supports against the layer's [`Schema`]; a bad one is a
//!   [`QueryError`] naming it (Geoservices error 400).
//! - [`Predicate`]: the `where` clause, parsed with sqlparser and checked against the fields;
//!   evaluated on features in memory ([`Predicate::eval`]) or written as SQLite SQL with bound
//!   parameters ([`Predicate::to_sql`]), never by pasting values into SQL.
//! - [`GeometryFilter`]: the `geometry` filter (Esri JSON or `xmin,ymin,xmax,ymax`) in EPSG:4326,
//!   with its `spatialRel`.
//! - [`Reprojector`]: coordinates between EPSG CRSs with proj4rs (pure Rust); [`epsg_of_wkid`]
//!   maps Esri's well-known ids (102100 is EPSG:3857).
//!
//! Outputs set [`RouteParams::method`](koop_provider::RouteParams) to `query` for queries and
//! `info` for service and layer descriptions. A provider that applies a query itself returns its
//! features with [`FiltersApplied`](koop_provider::FiltersApplied) saying which steps it took (and
//! [`ProviderData::count`](koop_provider::ProviderData) for `returnCountOnly`,
//! [`Metadata::exceeded_transfer_limit`](koop_provider::Metadata) when it paged); the output skips
//! exactly those steps. Such answers depend on the query: a provider that gives them from
//! `get_data` with a `ttl` must put the query parameters in its
//! [`create_key`](koop_provider::Provider::create_key), or cached answers would be given to other
//! queries.
//!
//! # Example
//!
//! ```
//! use std::collections::BTreeMap;
//! use koop_geoservices::{Query, Schema, COMPUTED_OBJECT_ID};
//! use koop_provider::{Field, FieldType};
//!
//! let schema = Schema {
//!     fields: vec![Field::new("name", FieldType::String), Field::new("population", FieldType::Integer)],
//!     object_id: COMPUTED_OBJECT_ID.to_owned(),
//!     object_id_is_attribute: false,
//! };
//! let params: BTreeMap<String, String> = [
//!     ("where", "population > 100000 AND name LIKE 'W%'"),
//!     ("outFields", "name"),
//!     ("resultRecordCount", "10"),
//! ]
//! .into_iter()
//! .map(|(k, v)| (k.to_owned(), v.to_owned()))
//! .collect();
//! let query = Query::parse(&params, &schema).unwrap();
//! let (sql, values) = query.predicate.to_sql(&|column| Some(format!("\"{}\"", column.name))).unwrap();
//! assert_eq!(sql, "(\"population\" > ?) AND (\"name\" GLOB ?)");
//! assert_eq!(values.len(), 2);
//! assert_eq!(query.page_size(2000), 10);
//! ```
#![deny(missing_docs)]

pub use filter::{
    Case, Column, CompareOp, Operand, Predicate, SqlParam, WhereField, WhereLimits, like,
};
pub use geometry::{GeometryFilter, SpatialRel, esri_geometry};
pub use params::{
    COMPUTED_OBJECT_ID, Format, OutFields, Quantization, Query, QueryError, QueryLimits, Schema,
    Statistic, StatisticType, callback,
};
pub use value::{Value, format_date_ms, parse_date_ms};

pub use crs::{ReprojectError, Reprojector, epsg_of_wkid, is_geographic};

mod crs;
mod filter;
mod geometry;
mod params;
mod value;
