//! Responses: Geoservices errors, and JSON / pretty JSON / JSONP bodies.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use koop_geoservices::QueryError;
use koop_provider::ProviderError;
use serde_json::json;

/// A Geoservices error: answered with HTTP 200 and `{"error": {"code", "message", "details"}}`,
/// as ArcGIS clients expect (and the reference Koop answers).
///
/// Codes: 400 bad request, 403 not permitted, 404 no such layer, 498 invalid or expired
/// token, 499 token required, 500 anything else.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct GeoservicesError {
    /// The Geoservices error code.
    pub code: u16,
    /// What failed.
    pub message: String,
    /// More about it.
    pub details: Vec<String>,
}

impl GeoservicesError {
    /// A 400 error whose details repeat the message.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            code: 400,
            details: vec![message.clone()],
            message,
        }
    }

    /// The error for a provider's error; `had_token` tells an invalid token (498) from a
    /// missing one (499).
    pub(crate) fn from_provider(error: &ProviderError, had_token: bool) -> Self {
        let text = error.message().to_owned();
        let (code, message) = match error {
            ProviderError::InvalidQuery { message, details } => {
                return Self {
                    code: 400,
                    message: message.clone(),
                    details: details.clone(),
                };
            }
            ProviderError::BadRequest { .. } => (400, text.clone()),
            ProviderError::Unauthorized { .. } if had_token => (498, "Invalid token.".to_owned()),
            ProviderError::Unauthorized { .. } => (499, "Token Required".to_owned()),
            ProviderError::Forbidden { .. } => (
                403,
                "You do not have permissions to access this resource or perform this operation."
                    .to_owned(),
            ),
            ProviderError::NotFound { .. } => (404, text.clone()),
            _ => (500, text.clone()),
        };
        Self {
            code,
            message,
            details: vec![text],
        }
    }

    /// The response: HTTP 200 with the error object.
    pub(crate) fn into_response(self) -> Response {
        let body =
            json!({"error": {"code": self.code, "message": self.message, "details": self.details}});
        let mut response = axum::Json(body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        // An error is answered 200 (as ArcGIS clients expect): no cache may keep it.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        response
    }
}

impl From<QueryError> for GeoservicesError {
    fn from(error: QueryError) -> Self {
        Self {
            code: 400,
            message: error.message,
            details: error.details,
        }
    }
}

/// How a body is written: `f=pjson` indents it, `callback` wraps it in a JavaScript call.
#[derive(Debug, Clone, Default)]
pub(crate) struct Encoding {
    pub(crate) pretty: bool,
    pub(crate) callback: Option<String>,
}

impl Encoding {
    /// The body as a response.
    pub(crate) fn respond(&self, body: &impl serde::Serialize) -> Response {
        self.respond_sized(body, 4 * 1024)
    }

    /// The body as a response, written into a buffer of `expected` bytes (pages of features run
    /// to hundreds of kilobytes: sizing the buffer once saves regrowing and copying it).
    pub(crate) fn respond_sized(&self, body: &impl serde::Serialize, expected: usize) -> Response {
        let mut json = Vec::with_capacity(expected);
        let written = if self.pretty {
            serde_json::to_writer_pretty(&mut json, body)
        } else {
            serde_json::to_writer(&mut json, body)
        };
        let json = match written {
            Ok(()) => json,
            Err(error) => {
                return GeoservicesError {
                    code: 500,
                    message: format!("the response could not be written: {error}"),
                    details: Vec::new(),
                }
                .into_response();
            }
        };
        let (content_type, bytes) = match &self.callback {
            Some(callback) => {
                let mut wrapped = Vec::with_capacity(json.len() + callback.len() + 2);
                wrapped.extend_from_slice(callback.as_bytes());
                wrapped.push(b'(');
                wrapped.extend_from_slice(&json);
                wrapped.push(b')');
                ("application/javascript; charset=utf-8", wrapped)
            }
            None => ("application/json; charset=utf-8", json),
        };
        // `nosniff`: a JSONP answer is script only where a page asks for script, and a JSON answer
        // is never read as HTML or script whatever its text.
        (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
            ],
            bytes,
        )
            .into_response()
    }
}
