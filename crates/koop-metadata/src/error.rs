//! The error type of koop-metadata.

use std::path::PathBuf;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong with Dublin Core metadata.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Talking to Koordinates failed.
    #[error(transparent)]
    Api(#[from] koop_api::Error),

    /// The layer has no Dublin Core document.
    #[error(
        "layer {layer_id} on {domain} has no Dublin Core metadata; start from a template (populate_template / --template)"
    )]
    NoMetadata {
        /// Koordinates domain.
        domain: koop_api::Domain,
        /// Layer id.
        layer_id: u64,
    },

    /// A name that is not one of the 15 Dublin Core elements.
    #[error("{name:?} is not a Dublin Core element; the elements are: {}", crate::Element::NAMES.join(", "))]
    UnknownElement {
        /// The name given.
        name: String,
    },

    /// A value holds a character XML 1.0 cannot carry (most control characters).
    #[error("the {element} value holds the character U+{code:04X}, which XML cannot carry")]
    InvalidCharacter {
        /// The element.
        element: &'static str,
        /// The character's code point.
        code: u32,
    },

    /// An `xml:lang` that is not a language tag.
    #[error("{lang:?} is not a language tag such as en or mi-NZ")]
    InvalidLanguage {
        /// The value given.
        lang: String,
    },

    /// `update_source_field` got lists of different lengths; no request was made.
    #[error("{layers} layer id(s) but {versions} version id(s): give one version per layer")]
    MismatchedSourceLists {
        /// Number of layer ids.
        layers: usize,
        /// Number of version ids.
        versions: usize,
    },

    /// The XML is not well-formed, or not readable as Dublin Core.
    #[error("cannot read the Dublin Core XML at line {line}, column {column}: {message}")]
    Xml {
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters.
        column: usize,
        /// What is wrong.
        message: String,
    },

    /// The XML declares a DTD; documents with DTDs or entity declarations are refused (no
    /// external entities, no entity expansion).
    #[error(
        "the Dublin Core XML declares a DTD at line {line}, column {column}; DTDs and entity declarations are refused"
    )]
    Dtd {
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters.
        column: usize,
    },

    /// The document is larger than the bound.
    #[error("the Dublin Core XML is {bytes} bytes, more than the {limit}-byte limit")]
    TooLarge {
        /// Its size, in bytes.
        bytes: usize,
        /// The limit, in bytes.
        limit: usize,
    },

    /// The `source` element is not the CSV koop writes.
    #[error("the source element is not a layer_id,title,version_id,last_updated table: {message}")]
    Source {
        /// What is wrong.
        message: String,
    },

    /// Writing the XML file failed.
    #[error("cannot write the Dublin Core XML to {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
}
