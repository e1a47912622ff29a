//! A macro for string-valued API enums that keep values this crate does not know yet.
//!
//! The Koordinates API adds kinds, states and formats over time; decoding must never fail on a
//! new value. Each enum gets an `Other(String)` variant that carries the unknown value verbatim
//! and serialises back to it.

/// Declares a string enum with known variants and an `Other(String)` fallback.
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $value:literal $(| $alias:literal)* ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A value this version of koop does not know, kept exactly as the server sent it.
            Other(String),
        }

        impl $name {
            /// The value as the Koordinates API spells it.
            pub fn as_str(&self) -> &str {
                match self {
                    $( Self::$variant => $value, )+
                    Self::Other(value) => value.as_str(),
                }
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = ::std::convert::Infallible;

            fn from_str(value: &str) -> Result<Self, Self::Err> {
                Ok(match value {
                    $( $value $(| $alias)* => Self::$variant, )+
                    other => Self::Other(other.to_owned()),
                })
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = <::std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                Ok(match value.parse::<$name>() {
                    Ok(parsed) => parsed,
                    Err(never) => match never {},
                })
            }
        }
    };
}

pub(crate) use string_enum;
