//! `koop.metadata.DublinCoreMetadata`: the original's Dublin Core model, holding koop's record
//! (every value of a repeated element and its `xml:lang` survive a read and a write).

use koop::DublinCoreElement as Element;
use koop::koop_metadata;
use pyo3::exceptions::PyAttributeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyType};

use crate::connection::KoordinatesConnection;
use crate::{errors, wait};

/// The fields in the original's order (its pydantic model's), for `model_dump()` and `repr`.
const FIELDS: [&str; 15] = [
    "title",
    "creator",
    "subject",
    "description",
    "type",
    "source",
    "relation",
    "coverage",
    "publisher",
    "contributor",
    "rights",
    "date",
    "format",
    "identifier",
    "language",
];

/// Dublin Core metadata of a layer: the 15 elements (`title`, `creator`, `subject`,
/// `description`, `type`, `source`, `relation`, `coverage`, `publisher`, `contributor`,
/// `rights`, `date`, `format`, `identifier`, `language`) as attributes holding a `str` or
/// `None` (an element's first value when the document repeats it), read and written as OAI_DC
/// XML.
///
/// `DublinCoreMetadata(title="…", creator="…")` takes any of the elements as keywords.
#[pyclass(module = "koop.metadata")]
#[derive(Clone)]
pub(crate) struct DublinCoreMetadata {
    record: koop::DublinCoreMetadata,
}

fn element(name: &str) -> Option<Element> {
    FIELDS
        .contains(&name)
        .then(|| name.parse::<Element>().ok())
        .flatten()
}

/// A value given from Python as text: `str` as it is, `None` for none, anything else by `str()`.
fn text_of(value: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
    if value.is_none() {
        return Ok(None);
    }
    match value.extract::<String>() {
        Ok(text) => Ok(Some(text)),
        Err(_) => Ok(Some(value.str()?.to_string())),
    }
}

impl DublinCoreMetadata {
    fn set_text(&mut self, name: &str, value: Option<String>) -> PyResult<()> {
        let Some(element) = element(name) else {
            return Err(errors::raise(
                "MetadataError",
                format!(
                    "Field {name} not in model; the Dublin Core elements are {}",
                    FIELDS.join(", ")
                ),
            ));
        };
        let result = match value {
            Some(text) => self.record.set(element, text).map(|_| ()),
            None => self.record.set_values(element, Vec::new()).map(|_| ()),
        };
        result.map_err(|error| errors::from_metadata(&error))
    }

    /// A record made by `work` from the connection, waited for with the GIL released.
    fn fetched<Fut>(
        py: Python<'_>,
        conn: PyRef<'_, KoordinatesConnection>,
        work: impl FnOnce(koop::KoordinatesConnection) -> Fut,
    ) -> PyResult<Self>
    where
        Fut: std::future::Future<Output = koop_metadata::Result<koop::DublinCoreMetadata>>
            + Send
            + 'static,
    {
        let future = work(conn.connection().clone());
        drop(conn);
        wait(py, None, future)?
            .map(|record| Self { record })
            .map_err(|error| errors::from_metadata(&error))
    }

    /// Replaces this record by the one `work` makes from a copy of it, when it succeeds.
    fn edited<Fut>(
        &mut self,
        py: Python<'_>,
        conn: PyRef<'_, KoordinatesConnection>,
        work: impl FnOnce(koop::KoordinatesConnection, koop::DublinCoreMetadata) -> Fut,
    ) -> PyResult<()>
    where
        Fut: std::future::Future<Output = koop_metadata::Result<koop::DublinCoreMetadata>>
            + Send
            + 'static,
    {
        let future = work(conn.connection().clone(), self.record.clone());
        drop(conn);
        self.record = wait(py, None, future)?.map_err(|error| errors::from_metadata(&error))?;
        Ok(())
    }
}

#[pymethods]
impl DublinCoreMetadata {
    #[new]
    #[pyo3(signature = (**fields))]
    fn new(fields: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let mut metadata = Self {
            record: koop::DublinCoreMetadata::new(),
        };
        if let Some(fields) = fields {
            for (name, value) in fields.iter() {
                let name: String = name.extract()?;
                metadata.set_text(&name, text_of(&value)?)?;
            }
        }
        Ok(metadata)
    }

    /// The 15 element names, as the pydantic model's `model_fields` keys (values are `None`).
    #[classattr]
    fn model_fields(py: Python<'_>) -> PyResult<Py<PyDict>> {
        let fields = PyDict::new(py);
        for name in FIELDS {
            fields.set_item(name, py.None())?;
        }
        Ok(fields.unbind())
    }

    fn __getattr__(&self, name: &str) -> PyResult<Option<String>> {
        match element(name) {
            Some(element) => Ok(self.record.first(element).map(str::to_owned)),
            None => Err(PyAttributeError::new_err(format!(
                "'DublinCoreMetadata' object has no attribute {name:?}"
            ))),
        }
    }

    fn __setattr__(&mut self, name: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
        if element(name).is_none() {
            return Err(PyAttributeError::new_err(format!(
                "'DublinCoreMetadata' has no field {name:?}; the Dublin Core elements are {}",
                FIELDS.join(", ")
            )));
        }
        self.set_text(name, text_of(value)?)
    }

    fn __delattr__(&mut self, name: &str) -> PyResult<()> {
        self.set_text(name, None)
    }

    #[expect(clippy::unused_self, reason = "the slot of dir(instance)")]
    fn __dir__(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let mut names: Vec<String> = FIELDS.iter().map(|name| (*name).to_owned()).collect();
        let class = py.get_type::<Self>();
        for name in class.dir()? {
            names.push(name.extract()?);
        }
        Ok(names)
    }

    fn __eq__(&self, other: &Bound<'_, Self>) -> bool {
        self.record == other.borrow().record
    }

    fn __repr__(&self) -> String {
        let fields: Vec<String> = FIELDS
            .iter()
            .map(|name| {
                let value = element(name).and_then(|element| self.record.first(element));
                match value {
                    Some(text) => format!("{name}={text:?}"),
                    None => format!("{name}=None"),
                }
            })
            .collect();
        format!("DublinCoreMetadata({})", fields.join(", "))
    }

    fn __copy__(&self) -> Self {
        self.clone()
    }

    #[pyo3(signature = (_memo))]
    fn __deepcopy__(&self, _memo: &Bound<'_, PyAny>) -> Self {
        self.clone()
    }

    /// The 15 elements as a dict of `str` or `None`, in the original's field order (pydantic's
    /// `model_dump()`).
    fn model_dump(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        let dump = PyDict::new(py);
        for name in FIELDS {
            let value = element(name).and_then(|element| self.record.first(element));
            dump.set_item(name, value)?;
        }
        Ok(dump.unbind())
    }

    /// The record as an OAI_DC XML document (`<oai_dc:dc>` with one `dc:*` element per value,
    /// text escaped), a `str`.
    fn as_xml(&self) -> String {
        self.record.as_xml()
    }

    /// Writes `as_xml()` to `path` (a `str` or `os.PathLike`), atomically.
    ///
    /// Raises `koop.errors.MetadataError` when the file cannot be written.
    #[expect(
        clippy::needless_pass_by_value,
        reason = "PyO3 extracts str and os.PathLike as an owned path"
    )]
    fn to_xml(&self, path: std::path::PathBuf) -> PyResult<()> {
        self.record
            .to_xml(&path)
            .map_err(|error| errors::from_metadata(&error))
    }

    /// Reads an OAI_DC (or any Dublin Core) XML document, `str` or `bytes`. Every element the
    /// document repeats keeps all its values; no DTD is read and no entity expanded.
    ///
    /// Raises `koop.errors.MetadataError` for a document that is not well-formed XML.
    #[classmethod]
    fn from_raw_xml(_cls: &Bound<'_, PyType>, xml: &Bound<'_, PyAny>) -> PyResult<Self> {
        let text = if let Ok(bytes) = xml.cast::<PyBytes>() {
            String::from_utf8_lossy(bytes.as_bytes()).into_owned()
        } else {
            xml.extract::<String>()?
        };
        koop::DublinCoreMetadata::from_raw_xml(&text)
            .map(|record| Self { record })
            .map_err(|error| errors::from_metadata(&error))
    }

    /// The Dublin Core document of a layer's current version, from Koordinates
    /// (`GET layers/{id}/`, then its `metadata.dc` link).
    ///
    /// Raises `koop.errors.NotFoundError` for an unknown layer, `MetadataError` when the layer
    /// has no Dublin Core document, `AuthenticationError` for a refused key.
    #[classmethod]
    #[pyo3(signature = (conn, layer_id))]
    fn from_koordinates(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        conn: PyRef<'_, KoordinatesConnection>,
        layer_id: u64,
    ) -> PyResult<Self> {
        Self::fetched(py, conn, move |connection| async move {
            koop::DublinCoreMetadata::from_koordinates(&connection, layer_id).await
        })
    }

    /// A record started from a layer's details: `title`, `type` (the layer's kind), `date`
    /// (published), and where the details have them `description`, `identifier` (the layer's
    /// web page), `publisher` and `rights` (the licence). One request, `GET layers/{id}/`.
    #[classmethod]
    #[pyo3(signature = (conn, layer_id))]
    fn populate_template(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        conn: PyRef<'_, KoordinatesConnection>,
        layer_id: u64,
    ) -> PyResult<Self> {
        Self::fetched(py, conn, move |connection| async move {
            koop::DublinCoreMetadata::populate_template(&connection, layer_id).await
        })
    }

    /// Sets the named elements: `edit_metadata_fields(description="…", creator="…")`. An
    /// unknown name raises `koop.errors.MetadataError` (a `ValueError`, as the original raised)
    /// and changes nothing.
    #[pyo3(signature = (**fields))]
    fn edit_metadata_fields(&mut self, fields: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
        let Some(fields) = fields else {
            return Ok(());
        };
        let mut edited = self.clone();
        for (name, value) in fields.iter() {
            let name: String = name.extract()?;
            edited.set_text(&name, text_of(&value)?)?;
        }
        *self = edited;
        Ok(())
    }

    /// Sets `source` to a CSV table (`layer_id,title,version_id,last_updated`) of the given
    /// versions of the given layers: `layer_ids[i]` at `version_ids[i]`
    /// (`GET layers/{id}/versions/{vid}/`, concurrently). Lists of different lengths raise
    /// `koop.errors.MetadataError` (a `ValueError`) before any request; on any error `source`
    /// is unchanged.
    #[pyo3(signature = (conn, layer_ids, version_ids))]
    fn update_source_field(
        &mut self,
        py: Python<'_>,
        conn: PyRef<'_, KoordinatesConnection>,
        layer_ids: Vec<u64>,
        version_ids: Vec<u64>,
    ) -> PyResult<()> {
        self.edited(py, conn, move |connection, mut record| async move {
            record
                .update_source_field(&connection, &layer_ids, &version_ids)
                .await?;
            Ok(record)
        })
    }

    /// Sets `source` as `update_source_field` does, to the current version of each layer
    /// (`GET layers/{id}/`, concurrently).
    #[pyo3(signature = (conn, layer_ids))]
    fn update_source_with_latest_layer_versions(
        &mut self,
        py: Python<'_>,
        conn: PyRef<'_, KoordinatesConnection>,
        layer_ids: Vec<u64>,
    ) -> PyResult<()> {
        self.edited(py, conn, move |connection, mut record| async move {
            record
                .update_source_with_latest_layer_versions(&connection, &layer_ids)
                .await?;
            Ok(record)
        })
    }
}
