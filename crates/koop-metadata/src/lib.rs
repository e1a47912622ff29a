//! Dublin Core metadata of Koordinates layers.
//!
//! [`DublinCoreMetadata`] holds the 15 Dublin Core elements, each with its values in order (an
//! element may repeat; `xml:lang` is kept). It reads a layer's DC document from Koordinates
//! ([`DublinCoreMetadata::from_koordinates`]) or starts a template from its details
//! ([`DublinCoreMetadata::populate_template`]), edits elements by type or by name, builds the
//! `source` element from layer versions as CSV, and reads and writes OAI_DC XML.
//!
//! Writing uses the standard namespaces (`http://www.openarchives.org/OAI/2.0/oai_dc/`,
//! `http://purl.org/dc/elements/1.1/`) and escapes every value; reading matches elements by
//! namespace (also the `https://` form the original Python package wrote, and the un-namespaced
//! form of Koordinates' help pages) and refuses DTDs, so no entity is ever expanded.
//!
//! # Example
//!
//! ```
//! use koop_metadata::{DublinCoreMetadata, Element, Value};
//!
//! # fn main() -> koop_metadata::Result<()> {
//! let mut metadata = DublinCoreMetadata::new();
//! metadata.set_title("NZ Primary Parcels")?;
//! metadata.add(Element::Subject, Value::new("cadastral"))?;
//! metadata.add(Element::Subject, Value::with_lang("whenua", "mi"))?;
//! metadata.edit_by_name([("creator", "Toitū Te Whenua LINZ & partners")])?;
//!
//! let xml = metadata.as_xml();
//! assert!(xml.contains("<dc:creator>Toitū Te Whenua LINZ &amp; partners</dc:creator>"));
//! assert_eq!(DublinCoreMetadata::from_raw_xml(&xml)?, metadata);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub use error::{Error, Result};
pub use metadata::{DublinCoreMetadata, Element, Value};
pub use source::{SOURCE_HEADER, SourceRow};
pub use xml::{DC_NAMESPACE, MAX_XML_BYTES, OAI_DC_NAMESPACE};

mod error;
mod koordinates;
mod metadata;
mod source;
mod xml;
