//! The values every koop crate shares, each with one representation, validated once.
//!
//! - [`Epsg`]: an EPSG code of a coordinate reference system. It displays and serialises as
//!   `EPSG:2193`, so cache manifests and export requests read as the field writes them, and
//!   reads `EPSG:2193`, `2193` or the number 2193.
//! - [`Domain`]: a Koordinates site, `host[:port]` in lower case (`data.linz.govt.nz`), read from
//!   a host name or a URL. It remembers whether the site was named with `http://` (plain HTTP, for
//!   loopback test servers); two domains are equal when their hosts are.
//!
//! The crate depends on nothing of HTTP, SQL or geometry, so every crate, from the REST client to
//! the provider model, can use these types.
//!
//! # Example
//!
//! ```
//! use koop_types::{Domain, Epsg};
//!
//! let crs: Epsg = "EPSG:2193".parse().unwrap();
//! assert_eq!(crs, Epsg::NZTM2000);
//! assert_eq!(crs.to_string(), "EPSG:2193");
//!
//! let domain = Domain::parse("https://Data.LINZ.govt.nz/").unwrap();
//! assert_eq!(domain.as_str(), "data.linz.govt.nz");
//! assert!(!domain.is_plain_http());
//! assert_eq!(Domain::parse("http://127.0.0.1:8080").unwrap().origin(), "http://127.0.0.1:8080");
//! ```
#![deny(missing_docs)]

pub use domain::{Domain, DomainError};
pub use epsg::{Epsg, EpsgError};

mod domain;
mod epsg;
