//! The Geoservices query model, shared by the FeatureServer output (which runs queries over any
//! provider's features in memory) and by providers that push queries down to their source (the
//! Koordinates provider answers them with SQL on the cached GeoPackage).
//!
//! Outputs set [`RouteParams::method`](crate::RouteParams) to `query` for queries and `info` for
//! service and layer descriptions. A provider that applies a query itself returns its features
//! with [`FiltersApplied`](crate::FiltersApplied) saying which steps it took (and
//! [`ProviderData::count`](crate::ProviderData) for `returnCountOnly`,
//! [`Metadata::exceeded_transfer_limit`](crate::Metadata) when it paged); the output skips
//! exactly those steps. Such answers depend on the query: a provider that gives them from
//! `get_data` with a `ttl` must put the query parameters in its
//! [`create_key`](crate::Provider::create_key), or cached answers would be given to other
//! queries. (The Koordinates provider answers from `get_stream`, which is never cached.)

pub use filter::{Case, Column, CompareOp, Operand, Predicate, SqlParam, WhereField, like};
pub use geometry::{GeometryFilter, SpatialRel, esri_geometry};
pub use params::{
    COMPUTED_OBJECT_ID, Format, OutFields, Query, QueryError, Schema, Statistic, StatisticType,
    callback,
};
pub use value::{Value, format_date_ms, parse_date_ms};

mod filter;
mod geometry;
mod params;
mod value;
