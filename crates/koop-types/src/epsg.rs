//! EPSG codes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An EPSG code of a coordinate reference system (epsg.org), e.g. 2193 for NZGD2000 / New
/// Zealand Transverse Mercator 2000.
///
/// Displays and serialises as `EPSG:2193`; parses and deserialises from `EPSG:2193` (any case),
/// `2193`, or the JSON number 2193. Esri's well-known ids that are not EPSG codes (102100 for Web
/// Mercator) are mapped by the Geoservices query model, not here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Epsg(u32);

/// Why a text is not an EPSG code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not an EPSG code; give it as EPSG:2193 or 2193")]
pub struct EpsgError {
    /// The text given.
    pub text: String,
}

impl Epsg {
    /// EPSG:4326, WGS 84 longitude/latitude in degrees: GeoJSON's CRS (RFC 7946).
    pub const WGS84: Self = Self(4326);
    /// EPSG:2193, NZGD2000 / New Zealand Transverse Mercator 2000, in metres: koop's default
    /// export CRS.
    pub const NZTM2000: Self = Self(2193);
    /// EPSG:3857, WGS 84 / Pseudo-Mercator (Web Mercator), in metres.
    pub const WEB_MERCATOR: Self = Self(3857);

    /// The code `code`. Every positive number is accepted; whether a transformation knows it is
    /// for the code that uses it to say.
    ///
    /// # Errors
    ///
    /// [`EpsgError`] for 0, which no CRS has.
    pub fn new(code: u32) -> Result<Self, EpsgError> {
        if code == 0 {
            Err(EpsgError {
                text: "0".to_owned(),
            })
        } else {
            Ok(Self(code))
        }
    }

    /// The number, e.g. 2193.
    pub fn code(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Epsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EPSG:{}", self.0)
    }
}

impl FromStr for Epsg {
    type Err = EpsgError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || EpsgError {
            text: text.to_owned(),
        };
        let trimmed = text.trim();
        let digits = match trimmed.get(..5) {
            Some(prefix) if prefix.eq_ignore_ascii_case("EPSG:") => &trimmed[5..],
            _ => trimmed,
        };
        digits
            .trim()
            .parse::<u32>()
            .ok()
            .and_then(|code| Self::new(code).ok())
            .ok_or_else(error)
    }
}

impl Serialize for Epsg {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Epsg {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Number(u32),
            Text(String),
        }
        match Wire::deserialize(deserializer)? {
            Wire::Number(code) => Self::new(code).map_err(serde::de::Error::custom),
            Wire::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_read_in_every_form_and_write_as_epsg_colon() {
        for text in ["EPSG:2193", "epsg:2193", " 2193 ", "EPSG: 2193"] {
            assert_eq!(text.parse::<Epsg>(), Ok(Epsg::NZTM2000), "{text}");
        }
        for bad in ["", "EPSG:", "EPSG:0", "CUSTOM:800217", "-3", "2193.5"] {
            assert!(bad.parse::<Epsg>().is_err(), "{bad}");
        }
        assert_eq!(
            serde_json::to_string(&Epsg::WGS84).expect("JSON"),
            "\"EPSG:4326\""
        );
        for json in ["\"EPSG:4326\"", "4326", "\"4326\""] {
            assert_eq!(serde_json::from_str::<Epsg>(json).expect(json), Epsg::WGS84);
        }
        assert!(serde_json::from_str::<Epsg>("0").is_err());
    }
}
