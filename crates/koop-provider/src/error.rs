//! What a provider can fail with.

use std::sync::Arc;

/// The cause of a [`ProviderError`]: any error, shared so the error stays cheap to clone.
pub type Cause = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// What a provider can fail with; each kind maps to an HTTP status ([`ProviderError::status`]).
///
/// Every variant carries `message`, one line for the client: what failed, for which layer, and
/// what to do, naming the upstream cause (a 401 from Koordinates, a 503) but never a local path or
/// a secret. Variants that wrap a failure keep it as `source`, with its whole chain, for the
/// server's log (as `object_store`'s `Error::Generic { store, source }` does); `Display` shows the
/// message alone and [`std::error::Error::source`] leads to the chain. [`ProviderError::chain`]
/// writes message and causes as one line for logs.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// 400: the request is wrong.
    #[error("{message}")]
    BadRequest {
        /// For the client.
        message: String,
    },
    /// 400: a Geoservices query parameter is wrong (a provider that parses queries itself
    /// reports it with the message and details outputs show).
    #[error("{message}")]
    InvalidQuery {
        /// For the client, e.g. `Invalid "where" parameter: foo bar`.
        message: String,
        /// More about it.
        details: Vec<String>,
    },
    /// 401: a token is required, or the one given is not valid.
    #[error("{message}")]
    Unauthorized {
        /// For the client.
        message: String,
    },
    /// 403: the token does not allow this.
    #[error("{message}")]
    Forbidden {
        /// For the client.
        message: String,
    },
    /// 404: no such layer, or not served here.
    #[error("{message}")]
    NotFound {
        /// For the client.
        message: String,
    },
    /// 501: the provider does not do this (e.g. `authenticate`).
    #[error("{message}")]
    NotSupported {
        /// For the client.
        message: String,
    },
    /// 502: the remote source failed (refused the key, answered 5xx, ended an export in error).
    #[error("{message}")]
    Upstream {
        /// For the client, naming the remote cause.
        message: String,
        /// The failure, with its chain.
        #[source]
        source: Option<Cause>,
    },
    /// 503: the server is not set up for this (e.g. no API key for the domain), the remote source
    /// is rate limiting, or the server is busy.
    #[error("{message}")]
    Unavailable {
        /// For the client.
        message: String,
        /// The failure, with its chain.
        #[source]
        source: Option<Cause>,
    },
    /// 500: anything else (a full disk, an unreadable file).
    #[error("{message}")]
    Internal {
        /// For the client: what failed, without local paths.
        message: String,
        /// The failure, with its chain.
        #[source]
        source: Option<Cause>,
    },
}

impl ProviderError {
    /// A 400 error.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest {
            message: message.into(),
        }
    }

    /// A 400 error of a query parameter, with details.
    pub fn invalid_query(message: impl Into<String>, details: Vec<String>) -> Self {
        Self::InvalidQuery {
            message: message.into(),
            details,
        }
    }

    /// A 401 error.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::Unauthorized {
            message: message.into(),
        }
    }

    /// A 403 error.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::Forbidden {
            message: message.into(),
        }
    }

    /// A 404 error.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound {
            message: message.into(),
        }
    }

    /// A 501 error.
    pub fn not_supported(message: impl Into<String>) -> Self {
        Self::NotSupported {
            message: message.into(),
        }
    }

    /// A 502 error caused by `source`.
    pub fn upstream(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Upstream {
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }

    /// A 503 error, with its cause if there is one.
    pub fn unavailable(message: impl Into<String>, source: Option<Cause>) -> Self {
        Self::Unavailable {
            message: message.into(),
            source,
        }
    }

    /// The 503 error of work stopped at its request's deadline
    /// ([`ProviderRequest::deadline`](crate::ProviderRequest::deadline)): it says to narrow the
    /// query or try again.
    pub fn past_deadline() -> Self {
        Self::unavailable(
            "the query ran past this server's time limit for one request; narrow it (a where clause, a smaller page) or try again",
            None,
        )
    }

    /// A 500 error, with its cause if there is one.
    pub fn internal(message: impl Into<String>, source: Option<Cause>) -> Self {
        Self::Internal {
            message: message.into(),
            source,
        }
    }

    /// The HTTP status of the error.
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest { .. } | Self::InvalidQuery { .. } => 400,
            Self::Unauthorized { .. } => 401,
            Self::Forbidden { .. } => 403,
            Self::NotFound { .. } => 404,
            Self::NotSupported { .. } => 501,
            Self::Upstream { .. } => 502,
            Self::Unavailable { .. } => 503,
            Self::Internal { .. } => 500,
        }
    }

    /// The client's message.
    pub fn message(&self) -> &str {
        match self {
            Self::BadRequest { message }
            | Self::InvalidQuery { message, .. }
            | Self::Unauthorized { message }
            | Self::Forbidden { message }
            | Self::NotFound { message }
            | Self::NotSupported { message }
            | Self::Upstream { message, .. }
            | Self::Unavailable { message, .. }
            | Self::Internal { message, .. } => message,
        }
    }

    /// The details of an invalid query; empty for other errors.
    pub fn details(&self) -> &[String] {
        match self {
            Self::InvalidQuery { details, .. } => details,
            _ => &[],
        }
    }

    /// The message and every cause, `: `-separated, leaving out a cause whose text the line
    /// already holds: the whole chain, for the server's log (never for the client).
    pub fn chain(&self) -> String {
        let mut line = self.message().to_owned();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !line.contains(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            source = cause.source();
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("exporting layer 7 failed")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_chain_is_for_logs_the_message_for_clients() {
        let error = ProviderError::upstream(
            "layer 7: Koordinates answered 503",
            Outer(std::io::Error::other("disk /var/cache/koop full")),
        );
        assert_eq!(error.status(), 502);
        assert_eq!(error.to_string(), "layer 7: Koordinates answered 503");
        assert_eq!(
            error.chain(),
            "layer 7: Koordinates answered 503: exporting layer 7 failed: disk /var/cache/koop full"
        );
        let cloned = error.clone();
        assert!(std::error::Error::source(&cloned).is_some());
        assert_eq!(ProviderError::not_found("no layer").status(), 404);
        let query = ProviderError::invalid_query("Invalid format", vec!["f".into()]);
        assert_eq!(
            (query.status(), query.details()),
            (400, &["f".to_owned()][..])
        );
    }
}
