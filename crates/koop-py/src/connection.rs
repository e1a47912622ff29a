//! `koop.backend.conn.KoordinatesConnection`: an authenticated connection to one Koordinates
//! site, as in the original package.

use std::sync::Mutex;

use koop::{Domain, KoordinatesConnection as Connection};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors;

/// The environment variable the key falls back to.
const API_KEY_ENV: &str = "KOORDINATES_API_KEY";

/// Reads a domain as Python callers give it: `data.linz.govt.nz`, `https://…/`, or
/// `http://127.0.0.1:PORT` for a loopback test server (plain HTTP elsewhere is refused: the key
/// would cross the network unencrypted).
pub(crate) fn parse_domain(text: &str) -> PyResult<Domain> {
    let domain = Domain::parse(text).map_err(|error| {
        errors::configuration(format!("{text:?} is not a Koordinates domain: {error}"))
    })?;
    if domain.is_plain_http() && !domain.is_loopback() {
        return Err(errors::configuration(format!(
            "{text:?} asks for plain HTTP, which would send the API key unencrypted; use https:// (plain http:// is for loopback test servers only)"
        )));
    }
    Ok(domain)
}

/// The key given, else `KOORDINATES_API_KEY`'s value.
pub(crate) fn resolve_api_key(api_key: Option<String>) -> Option<String> {
    api_key.filter(|key| !key.is_empty()).or_else(|| {
        std::env::var(API_KEY_ENV)
            .ok()
            .filter(|key| !key.is_empty())
    })
}

/// A connection to a Koordinates site: the domain, the API version and the key, sent as
/// `Authorization: key …` to that site only.
///
/// `KoordinatesConnection(api_key=None, domain="ttgroup.koordinates.com", api_version="1.x")`:
/// the key falls back to the `KOORDINATES_API_KEY` environment variable; without either,
/// `koop.errors.ConfigurationError` (a `ValueError`, as the original raised) is raised. No
/// request is made until the connection is used. Use it as a context manager, or call
/// `close()` when done.
#[pyclass(module = "koop.backend.conn", subclass)]
pub(crate) struct KoordinatesConnection {
    connection: Connection,
    domain: String,
    api_version: String,
    api_key: String,
    closed: bool,
    session: Mutex<Option<Py<PyAny>>>,
}

impl KoordinatesConnection {
    /// The Rust connection (one pooled HTTP client).
    pub(crate) fn connection(&self) -> &Connection {
        &self.connection
    }
}

#[pymethods]
impl KoordinatesConnection {
    #[new]
    #[pyo3(signature = (api_key=None, domain="ttgroup.koordinates.com", api_version="1.x"))]
    fn new(api_key: Option<String>, domain: &str, api_version: &str) -> PyResult<Self> {
        let site = parse_domain(domain)?;
        let api_key = resolve_api_key(api_key);
        let connection = Connection::builder()
            .api_key(api_key.clone())
            .api_key_env(API_KEY_ENV)
            .site(&site)
            .api_version(api_version)
            .build()
            .map_err(|error| errors::from_api(&error))?;
        Ok(Self {
            connection,
            domain: domain.to_owned(),
            api_version: api_version.to_owned(),
            api_key: api_key.unwrap_or_default(),
            closed: false,
            session: Mutex::new(None),
        })
    }

    /// The Koordinates site, as given (e.g. `"data.linz.govt.nz"`).
    #[getter]
    fn domain(&self) -> &str {
        &self.domain
    }

    /// The API version (`"1.x"`): requests go to `https://{domain}/services/api/v{api_version}/`.
    #[getter]
    fn api_version(&self) -> &str {
        &self.api_version
    }

    /// The API key (as in the original; never shown by `repr`).
    #[getter]
    fn api_key(&self) -> &str {
        &self.api_key
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.closed
    }

    /// A `requests.Session` carrying `Authorization: key …`, for scripts that made their own
    /// requests with the original's `conn.session` (needs the `requests` package; koop itself
    /// does not use it). Made on first use; closed by `close()`.
    #[getter]
    fn session(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let mut slot = self
            .session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(session) = slot.as_ref() {
            return Ok(session.clone_ref(py));
        }
        let requests = py.import("requests").map_err(|_| {
            pyo3::exceptions::PyImportError::new_err(
                "conn.session is a requests.Session and needs the requests package (pip install requests); koop itself does not use it",
            )
        })?;
        let session = requests.getattr("Session")?.call0()?;
        let headers = PyDict::new(py);
        headers.set_item("Authorization", format!("key {}", self.api_key))?;
        session
            .getattr("headers")?
            .call_method1("update", (headers,))?;
        let session = session.unbind();
        *slot = Some(session.clone_ref(py));
        Ok(session)
    }

    /// Releases the connection: closes `session` if one was made. Calling it again does
    /// nothing; koop's own requests still work afterwards, as the original's did.
    fn close(&mut self, py: Python<'_>) -> PyResult<()> {
        self.closed = true;
        let session = self
            .session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(session) = session {
            session.bind(py).call_method0("close")?;
        }
        Ok(())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(
        &mut self,
        py: Python<'_>,
        _exc: &Bound<'_, pyo3::types::PyTuple>,
    ) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "KoordinatesConnection(domain={:?}, api_version={:?})",
            self.domain, self.api_version
        )
    }
}
