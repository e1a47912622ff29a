//! The `source` element: the layer versions a dataset was derived from, as CSV.

use crate::error::{Error, Result};
use crate::metadata::{DublinCoreMetadata, Element};

/// The header of the `source` CSV.
pub const SOURCE_HEADER: [&str; 4] = ["layer_id", "title", "version_id", "last_updated"];

/// One layer version named in the `source` element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRow {
    /// Layer id.
    pub layer_id: u64,
    /// Layer title at that version.
    pub title: String,
    /// Version id.
    pub version_id: u64,
    /// When that version was published (ISO 8601, as Koordinates gives it).
    pub last_updated: String,
}

fn csv_error(error: &csv::Error) -> Error {
    Error::Source {
        message: error.to_string(),
    }
}

impl DublinCoreMetadata {
    /// Sets the `source` element to `rows` as CSV with the header
    /// `layer_id,title,version_id,last_updated`, quoted where needed (a title with a comma or a
    /// quote survives).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidCharacter`] when a title holds a character XML cannot carry.
    pub fn set_source_rows(&mut self, rows: &[SourceRow]) -> Result<&mut Self> {
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer
            .write_record(SOURCE_HEADER)
            .map_err(|error| csv_error(&error))?;
        for row in rows {
            writer
                .write_record([
                    row.layer_id.to_string(),
                    row.title.clone(),
                    row.version_id.to_string(),
                    row.last_updated.clone(),
                ])
                .map_err(|error| csv_error(&error))?;
        }
        let bytes = writer.into_inner().map_err(|error| Error::Source {
            message: error.to_string(),
        })?;
        let text = String::from_utf8(bytes).map_err(|error| Error::Source {
            message: error.to_string(),
        })?;
        self.set(Element::Source, text.trim_end_matches('\n'))
    }

    /// The rows of the `source` element, as [`DublinCoreMetadata::set_source_rows`] writes them;
    /// empty when there is no `source`.
    ///
    /// # Errors
    ///
    /// [`Error::Source`] when the first `source` value is not that CSV.
    pub fn source_rows(&self) -> Result<Vec<SourceRow>> {
        let Some(text) = self.source() else {
            return Ok(Vec::new());
        };
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let header = reader.headers().map_err(|error| csv_error(&error))?;
        if header.iter().ne(SOURCE_HEADER) {
            return Err(Error::Source {
                message: format!("the header is {:?}", header.iter().collect::<Vec<_>>()),
            });
        }
        let number = |field: &str, what: &str| {
            field.trim().parse::<u64>().map_err(|_| Error::Source {
                message: format!("{what} {field:?} is not a number"),
            })
        };
        reader
            .records()
            .map(|record| {
                let record = record.map_err(|error| csv_error(&error))?;
                let field = |index: usize| record.get(index).unwrap_or_default();
                Ok(SourceRow {
                    layer_id: number(field(0), "layer_id")?,
                    title: field(1).to_owned(),
                    version_id: number(field(2), "version_id")?,
                    last_updated: field(3).to_owned(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_with_commas_and_quotes_survive() -> Result<()> {
        let rows = vec![
            SourceRow {
                layer_id: 50772,
                title: "NZ Parcels, \"primary\"".into(),
                version_id: 4067,
                last_updated: "2025-05-16T22:24:27Z".into(),
            },
            SourceRow {
                layer_id: 1,
                title: "Ōtautahi\nsecond line".into(),
                version_id: 2,
                last_updated: String::new(),
            },
        ];
        let mut metadata = DublinCoreMetadata::new();
        metadata.set_source_rows(&rows)?;
        assert!(
            metadata
                .source()
                .is_some_and(|text| text.starts_with("layer_id,title,version_id,last_updated\n"))
        );
        assert!(
            metadata
                .source()
                .is_some_and(|text| text.contains("\"NZ Parcels, \"\"primary\"\"\""))
        );
        assert_eq!(metadata.source_rows()?, rows);
        let again = DublinCoreMetadata::from_raw_xml(&metadata.as_xml())?;
        assert_eq!(again.source_rows()?, rows);
        Ok(())
    }

    #[test]
    fn a_foreign_source_is_an_error() -> Result<()> {
        let mut metadata = DublinCoreMetadata::new();
        metadata.set_source("Derived from the 1996 survey")?;
        assert!(metadata.source_rows().is_err());
        Ok(())
    }
}
