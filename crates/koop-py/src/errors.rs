//! Rust errors as the exceptions of `koop.errors` (defined in `python/koop/errors.py`, so that
//! they can also derive from the built-in exceptions the original package raised: `ValueError`
//! for a missing key or a bad argument, `LookupError` for an unknown layer).

use std::error::Error as StdError;

use koop::koop_api;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

/// An instance of `koop.errors.{class}` with `message`, ready to raise.
pub(crate) fn raise(class: &str, message: impl Into<String>) -> PyErr {
    let message = message.into();
    Python::attach(|py| {
        let made = py
            .import("koop.errors")
            .and_then(|module| module.getattr(class))
            .and_then(|class| class.call1((message.clone(),)));
        match made {
            Ok(instance) => PyErr::from_value(instance),
            // The extension loaded without its Python package: still a clear error.
            Err(_) => PyRuntimeError::new_err(message),
        }
    })
}

/// `koop.errors.KoopError` with `message`.
pub(crate) fn koop_error(message: impl Into<String>) -> PyErr {
    raise("KoopError", message)
}

/// `koop.errors.ConfigurationError` (also a `ValueError`) with `message`.
pub(crate) fn configuration(message: impl Into<String>) -> PyErr {
    raise("ConfigurationError", message)
}

/// The error's message and the causes its message does not already say, `: `-joined.
pub(crate) fn message(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

/// The first `koop_api::Error` in an error's chain, itself included.
fn api_error<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a koop_api::Error> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(api) = error.downcast_ref::<koop_api::Error>() {
            return Some(api);
        }
        current = error.source();
    }
    None
}

/// The `koop.errors` class of an error of the Koordinates client.
fn api_class(error: &koop_api::Error) -> &'static str {
    match error {
        koop_api::Error::MissingApiKey { .. }
        | koop_api::Error::InvalidApiKey
        | koop_api::Error::InvalidDomain { .. } => "ConfigurationError",
        koop_api::Error::Unauthorized { .. } | koop_api::Error::Forbidden { .. } => {
            "AuthenticationError"
        }
        koop_api::Error::NotFound { .. } => "NotFoundError",
        koop_api::Error::RateLimited { .. } => "RateLimitError",
        _ => "ApiError",
    }
}

/// The `koop.errors` class of an error of the facade.
fn koop_class(error: &koop::Error) -> &'static str {
    match error {
        koop::Error::Api(api) => api_class(api),
        koop::Error::Export(export) => match api_error(export) {
            Some(api) => api_class(api),
            None => "ExportError",
        },
        koop::Error::Cache(_) => "CacheError",
        koop::Error::NotCached { .. } | koop::Error::Offline { .. } => "NotCachedError",
        koop::Error::NoVersion { .. } => "NotFoundError",
        koop::Error::VersionKeptChanging { .. } | koop::Error::KindNotAllowed { .. } => {
            "ExportError"
        }
        _ => "KoopError",
    }
}

/// A facade error as the exception of its kind, carrying its message.
pub(crate) fn from_koop(error: &koop::Error) -> PyErr {
    raise(koop_class(error), message(error))
}

/// A Dublin Core error as the exception of its kind, carrying its message.
pub(crate) fn from_metadata(error: &koop::koop_metadata::Error) -> PyErr {
    let class = match error {
        koop::koop_metadata::Error::Api(api) => api_class(api),
        _ => "MetadataError",
    };
    raise(class, message(error))
}

/// A client error as the exception of its kind, carrying its message.
pub(crate) fn from_api(error: &koop_api::Error) -> PyErr {
    raise(api_class(error), message(error))
}
