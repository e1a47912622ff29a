//! Koordinates domains.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A Koordinates site: `host[:port]` in lower case, e.g. `data.linz.govt.nz`.
///
/// Read by [`Domain::parse`] from a host name (`data.linz.govt.nz`, `127.0.0.1:8080`) or a URL
/// with no path (`https://data.linz.govt.nz/`, `http://127.0.0.1:8080`). A domain named with
/// `http://` is reached over plain HTTP ([`Domain::is_plain_http`]): only loopback test servers
/// should be. Equality, hashing, ordering, `Display` and serialisation use `host[:port]` alone, so
/// the same site named two ways is one key; deserialising reads any form `parse` reads.
#[derive(Debug, Clone)]
pub struct Domain {
    /// `host[:port]`; shared, so a domain in every error and key stays cheap to clone.
    host: std::sync::Arc<str>,
    plain_http: bool,
}

/// Why a text is not a Koordinates domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a Koordinates domain: {reason}")]
pub struct DomainError {
    /// The text given.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Domain {
    /// Reads a domain from a host name with an optional port, or an `https://` or `http://` URL
    /// without path, query, fragment or user information. The host is lower-cased (international
    /// names become their ASCII form).
    ///
    /// # Errors
    ///
    /// [`DomainError`] saying what is wrong: empty, another scheme, a path, user information, no
    /// host.
    pub fn parse(text: &str) -> Result<Self, DomainError> {
        let invalid = |reason: &str| DomainError {
            text: text.to_owned(),
            reason: reason.to_owned(),
        };
        let trimmed = text.trim().trim_end_matches('/');
        if trimmed.is_empty() {
            return Err(invalid("it is empty"));
        }
        let (url, plain_http) = if trimmed.contains("://") {
            let url = url::Url::parse(trimmed).map_err(|error| invalid(&error.to_string()))?;
            let plain_http = match url.scheme() {
                "https" => false,
                "http" => true,
                _ => return Err(invalid("the scheme must be https")),
            };
            (url, plain_http)
        } else {
            let url = url::Url::parse(&format!("https://{trimmed}/"))
                .map_err(|error| invalid(&error.to_string()))?;
            (url, false)
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid("it must not contain user information"));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(invalid(
                "give only the host name, e.g. data.linz.govt.nz, without a path",
            ));
        }
        let host = url
            .host_str()
            .filter(|host| !host.is_empty())
            .ok_or_else(|| invalid("it has no host"))?
            .to_ascii_lowercase();
        let host = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host,
        };
        Ok(Self {
            host: host.into(),
            plain_http,
        })
    }

    /// `host[:port]`, e.g. `data.linz.govt.nz` or `127.0.0.1:8080`.
    pub fn as_str(&self) -> &str {
        &self.host
    }

    /// The host without its port.
    pub fn host(&self) -> &str {
        if self.host.starts_with('[') {
            // An IPv6 literal: `[::1]` or `[::1]:8080`.
            return self
                .host
                .find(']')
                .map_or(&*self.host, |end| &self.host[..=end]);
        }
        self.host
            .split_once(':')
            .map_or(&*self.host, |(host, _)| host)
    }

    /// Whether the domain was named with `http://`: its API is reached over plain HTTP.
    pub fn is_plain_http(&self) -> bool {
        self.plain_http
    }

    /// The same site reached over plain HTTP (`true`) or HTTPS.
    #[must_use]
    pub fn with_plain_http(mut self, plain_http: bool) -> Self {
        self.plain_http = plain_http;
        self
    }

    /// `https://host[:port]`, or `http://…` for a plain-HTTP domain.
    pub fn origin(&self) -> String {
        let scheme = if self.plain_http { "http" } else { "https" };
        format!("{scheme}://{}", self.host)
    }

    /// `true` when the host is a loopback address (`127.*`, `localhost`, `[::1]`).
    pub fn is_loopback(&self) -> bool {
        let host = self.host();
        host.starts_with("127.") || host == "localhost" || host == "[::1]"
    }
}

impl PartialEq for Domain {
    fn eq(&self, other: &Self) -> bool {
        self.host == other.host
    }
}

impl Eq for Domain {}

impl Hash for Domain {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.host.hash(state);
    }
}

impl PartialOrd for Domain {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Domain {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.host.cmp(&other.host)
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.host)
    }
}

impl FromStr for Domain {
    type Err = DomainError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl AsRef<str> for Domain {
    fn as_ref(&self) -> &str {
        &self.host
    }
}

impl Serialize for Domain {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.host)
    }
}

impl<'de> Deserialize<'de> for Domain {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_normalised_and_checked() {
        for (text, host, plain) in [
            ("data.linz.govt.nz", "data.linz.govt.nz", false),
            ("https://Data.LINZ.govt.nz/", "data.linz.govt.nz", false),
            ("  data.linz.govt.nz/ ", "data.linz.govt.nz", false),
            ("127.0.0.1:8080", "127.0.0.1:8080", false),
            ("http://127.0.0.1:8080/", "127.0.0.1:8080", true),
            ("http://[::1]:9000", "[::1]:9000", true),
        ] {
            let domain = Domain::parse(text).expect(text);
            assert_eq!((domain.as_str(), domain.is_plain_http()), (host, plain));
        }
        for bad in [
            "",
            "ftp://data.linz.govt.nz",
            "data.linz.govt.nz/services/api",
            "https://data.linz.govt.nz/layer/1/",
            "user:pw@host",
            "https://user@host",
            "https://host/?q=1",
        ] {
            assert!(Domain::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn one_site_is_one_key() {
        let https = Domain::parse("data.linz.govt.nz").expect("host");
        let named = Domain::parse("https://DATA.linz.govt.nz").expect("url");
        assert_eq!(https, named);
        let plain = Domain::parse("http://127.0.0.1:8080").expect("plain");
        assert_eq!(plain, Domain::parse("127.0.0.1:8080").expect("host"));
        assert_eq!(plain.host(), "127.0.0.1");
        assert!(plain.is_loopback() && !https.is_loopback());
        assert_eq!(plain.origin(), "http://127.0.0.1:8080");
        assert_eq!(https.origin(), "https://data.linz.govt.nz");
        assert_eq!(
            serde_json::to_string(&plain).expect("JSON"),
            "\"127.0.0.1:8080\""
        );
        let read: Domain = serde_json::from_str("\"Data.Linz.Govt.Nz\"").expect("JSON");
        assert_eq!(read.as_str(), "data.linz.govt.nz");
        assert_eq!(Domain::parse("[::1]:80").expect("v6").host(), "[::1]");
    }
}
