//! The 15 Dublin Core elements and a metadata record holding their values.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// One value of an element: its text and, optionally, its language (`xml:lang`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Value {
    /// The text, exactly as given.
    pub text: String,
    /// A language tag such as `en` or `mi`, kept from and written to `xml:lang`.
    pub lang: Option<String>,
}

impl Value {
    /// A value without a language.
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            lang: None,
        }
    }

    /// A value in language `lang`.
    pub fn with_lang(text: impl Into<String>, lang: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            lang: Some(lang.into()),
        }
    }
}

/// `true` for the characters XML 1.0 can carry (§2.2 `Char`).
pub(crate) fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

macro_rules! elements {
    ($( $variant:ident $name:literal $getter:ident $setter:ident $doc:literal ),+ $(,)?) => {
        /// The 15 elements of the Dublin Core Metadata Element Set 1.1
        /// (<https://www.dublincore.org/specifications/dublin-core/dces/>), in their usual order.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Element {
            $( #[doc = $doc] $variant, )+
        }

        impl Element {
            /// Every element, in the usual order.
            pub const ALL: [Element; 15] = [$( Element::$variant ),+];
            /// Every element's name, in the usual order.
            pub const NAMES: [&'static str; 15] = [$( $name ),+];

            /// The element's name, e.g. `creator` (the local name of `dc:creator`).
            pub const fn name(self) -> &'static str {
                match self {
                    $( Element::$variant => $name, )+
                }
            }
        }

        impl DublinCoreMetadata {
            $(
                #[doc = concat!("The first `dc:", $name, "` value, if any.")]
                pub fn $getter(&self) -> Option<&str> {
                    self.first(Element::$variant)
                }

                #[doc = concat!("Sets `dc:", $name, "` to this one value (replacing any others).")]
                ///
                /// # Errors
                ///
                /// [`Error::InvalidCharacter`] when the text holds a character XML cannot carry.
                pub fn $setter(&mut self, text: impl Into<String>) -> Result<&mut Self> {
                    self.set(Element::$variant, text)
                }
            )+
        }
    };
}

elements! {
    Title "title" title set_title "A name given to the resource.",
    Creator "creator" creator set_creator "An entity primarily responsible for making the resource.",
    Subject "subject" subject set_subject "The topic of the resource.",
    Description "description" description set_description "An account of the resource.",
    Publisher "publisher" publisher set_publisher "An entity responsible for making the resource available.",
    Contributor "contributor" contributor set_contributor "An entity responsible for making contributions to the resource.",
    Date "date" date set_date "A point or period of time associated with an event in the life cycle of the resource.",
    Type "type" resource_type set_type "The nature or genre of the resource.",
    Format "format" format set_format "The file format, physical medium, or dimensions of the resource.",
    Identifier "identifier" identifier set_identifier "An unambiguous reference to the resource within a given context.",
    Source "source" source set_source "A related resource from which the described resource is derived.",
    Language "language" language set_language "A language of the resource.",
    Relation "relation" relation set_relation "A related resource.",
    Coverage "coverage" coverage set_coverage "The spatial or temporal topic of the resource.",
    Rights "rights" rights set_rights "Information about rights held in and over the resource.",
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Element {
    type Err = Error;

    /// Reads an element name, case-insensitively, with or without the `dc:` prefix.
    fn from_str(name: &str) -> Result<Self> {
        let bare = name.trim();
        let bare = bare.strip_prefix("dc:").unwrap_or(bare);
        Element::ALL
            .into_iter()
            .find(|element| element.name().eq_ignore_ascii_case(bare))
            .ok_or_else(|| Error::UnknownElement {
                name: name.to_owned(),
            })
    }
}

/// A Dublin Core metadata record: for each of the 15 elements, its values in order.
///
/// Dublin Core lets an element repeat (several `dc:subject`, a `dc:title` per language); every
/// value is kept in order and written back in order. The accessor of an element
/// ([`DublinCoreMetadata::title`], …) returns its first value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DublinCoreMetadata {
    values: BTreeMap<Element, Vec<Value>>,
}

impl DublinCoreMetadata {
    /// An empty record.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every value of `element`, in order.
    pub fn values(&self, element: Element) -> &[Value] {
        self.values.get(&element).map_or(&[], Vec::as_slice)
    }

    /// The first value of `element`.
    pub fn first(&self, element: Element) -> Option<&str> {
        self.values(element)
            .first()
            .map(|value| value.text.as_str())
    }

    /// `true` when no element has a value.
    pub fn is_empty(&self) -> bool {
        self.values.values().all(Vec::is_empty)
    }

    /// `(element, value)` for every value, elements in the usual order, values in theirs.
    pub fn iter(&self) -> impl Iterator<Item = (Element, &Value)> {
        self.values
            .iter()
            .flat_map(|(element, values)| values.iter().map(move |value| (*element, value)))
    }

    fn check(element: Element, value: &Value) -> Result<()> {
        if let Some(bad) = value.text.chars().find(|c| !is_xml_char(*c)) {
            return Err(Error::InvalidCharacter {
                element: element.name(),
                code: u32::from(bad),
            });
        }
        if let Some(lang) = &value.lang {
            let valid = !lang.is_empty()
                && lang.len() <= 35
                && lang.split('-').all(|part| {
                    !part.is_empty()
                        && part.len() <= 8
                        && part.chars().all(|c| c.is_ascii_alphanumeric())
                });
            if !valid {
                return Err(Error::InvalidLanguage { lang: lang.clone() });
            }
        }
        Ok(())
    }

    /// Sets `element` to one value, replacing its others.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidCharacter`] when the text holds a character XML 1.0 cannot carry.
    pub fn set(&mut self, element: Element, text: impl Into<String>) -> Result<&mut Self> {
        self.set_values(element, vec![Value::new(text)])
    }

    /// Sets every value of `element`, in order (an empty list removes the element).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidCharacter`]; [`Error::InvalidLanguage`] for an `xml:lang` that is not a
    /// language tag. On error nothing changes.
    pub fn set_values(&mut self, element: Element, values: Vec<Value>) -> Result<&mut Self> {
        for value in &values {
            Self::check(element, value)?;
        }
        if values.is_empty() {
            self.values.remove(&element);
        } else {
            self.values.insert(element, values);
        }
        Ok(self)
    }

    /// Appends a value to `element`.
    ///
    /// # Errors
    ///
    /// As [`DublinCoreMetadata::set_values`].
    pub fn add(&mut self, element: Element, value: Value) -> Result<&mut Self> {
        Self::check(element, &value)?;
        self.values.entry(element).or_default().push(value);
        Ok(self)
    }

    /// Sets several elements at once, each to one value: the seed's
    /// `edit_metadata_fields(description="…", creator="…")`.
    ///
    /// # Errors
    ///
    /// As [`DublinCoreMetadata::set`]; on error nothing changes.
    pub fn edit_metadata_fields<I, S>(&mut self, fields: I) -> Result<&mut Self>
    where
        I: IntoIterator<Item = (Element, S)>,
        S: Into<String>,
    {
        let fields: Vec<(Element, Value)> = fields
            .into_iter()
            .map(|(element, text)| (element, Value::new(text)))
            .collect();
        for (element, value) in &fields {
            Self::check(*element, value)?;
        }
        for (element, value) in fields {
            self.values.insert(element, vec![value]);
        }
        Ok(self)
    }

    /// Sets elements named by strings (`"creator"`, `"dc:subject"`, any case), as the command
    /// line's `--set creator=…` does.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownElement`] listing the valid names; as [`DublinCoreMetadata::set`]. On
    /// error nothing changes.
    pub fn edit_by_name<'a>(
        &mut self,
        fields: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<&mut Self> {
        let parsed = fields
            .into_iter()
            .map(|(name, text)| Ok((name.parse::<Element>()?, text)))
            .collect::<Result<Vec<_>>>()?;
        self.edit_metadata_fields(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_names_parse_in_any_case_with_or_without_prefix() {
        assert_eq!("creator".parse::<Element>().ok(), Some(Element::Creator));
        assert_eq!("dc:Subject".parse::<Element>().ok(), Some(Element::Subject));
        let error = "author".parse::<Element>().expect_err("not an element");
        assert!(
            error.to_string().contains("title, creator, subject"),
            "{error}"
        );
    }

    #[test]
    fn repeated_values_keep_their_order_and_the_accessor_gives_the_first() -> Result<()> {
        let mut metadata = DublinCoreMetadata::new();
        metadata.add(Element::Subject, Value::new("parcels"))?;
        metadata.add(Element::Subject, Value::with_lang("whenua", "mi"))?;
        assert_eq!(metadata.subject(), Some("parcels"));
        assert_eq!(
            metadata.values(Element::Subject)[1].lang.as_deref(),
            Some("mi")
        );
        metadata.set_subject("only")?;
        assert_eq!(metadata.values(Element::Subject).len(), 1);
        Ok(())
    }

    #[test]
    fn characters_xml_cannot_carry_are_refused_and_nothing_changes() -> Result<()> {
        let mut metadata = DublinCoreMetadata::new();
        metadata.set_title("kept")?;
        let error = metadata
            .edit_metadata_fields([(Element::Title, "bad"), (Element::Creator, "bell \u{7}")])
            .expect_err("BEL");
        assert!(matches!(error, Error::InvalidCharacter { code: 7, .. }));
        assert_eq!(metadata.title(), Some("kept"));
        assert!(metadata.creator().is_none());
        assert!(
            metadata
                .add(Element::Title, Value::with_lang("x", "not a tag"))
                .is_err()
        );
        Ok(())
    }
}
