//! OAI_DC XML: writing with the standard namespaces, reading by namespace.
//!
//! Written: `<oai_dc:dc xmlns:oai_dc="http://www.openarchives.org/OAI/2.0/oai_dc/"
//! xmlns:dc="http://purl.org/dc/elements/1.1/" …>` (OAI-PMH 2.0, §"Metadata Namespaces").
//!
//! Read: elements are matched by namespace, not prefix: the standard `http://purl.org/dc/…`
//! URI, the `https://` form the original Python package writes, and the un-namespaced
//! `<dc><title>…</title></dc>` that Koordinates' help pages show. Unknown elements and attributes
//! are ignored; `xml:lang` is kept. A DTD (and so any entity declaration) is refused, so there
//! is neither XXE nor entity expansion; only the five predefined entities and character
//! references are resolved.

use std::borrow::Cow;
use std::path::Path;

use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

use crate::error::{Error, Result};
use crate::metadata::{DublinCoreMetadata, Element, Value};

/// The OAI_DC container namespace.
pub const OAI_DC_NAMESPACE: &str = "http://www.openarchives.org/OAI/2.0/oai_dc/";
/// The Dublin Core element namespace (DCMES 1.1).
pub const DC_NAMESPACE: &str = "http://purl.org/dc/elements/1.1/";
/// Largest document read, in bytes.
pub const MAX_XML_BYTES: usize = 16 * 1024 * 1024;

const DC_NAMESPACE_HTTPS: &str = "https://purl.org/dc/elements/1.1/";

/// Escapes text content: `&`, `<`, `>`, and `\r` (as `&#13;`, which parsers do not normalise
/// away as they do a raw CR).
fn escape_text(text: &str) -> Cow<'_, str> {
    if !text.contains(['&', '<', '>', '\r']) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '\r' => escaped.push_str("&#13;"),
            other => escaped.push(other),
        }
    }
    Cow::Owned(escaped)
}

impl DublinCoreMetadata {
    /// The record as an OAI_DC XML document (UTF-8), with the standard namespaces, every value
    /// escaped, elements in the usual order and each element's values in theirs.
    pub fn as_xml(&self) -> String {
        let mut xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<oai_dc:dc xmlns:oai_dc=\"{OAI_DC_NAMESPACE}\" xmlns:dc=\"{DC_NAMESPACE}\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:schemaLocation=\"{OAI_DC_NAMESPACE} http://www.openarchives.org/OAI/2.0/oai_dc.xsd\">\n"
        );
        for (element, value) in self.iter() {
            let name = element.name();
            xml.push_str("  <dc:");
            xml.push_str(name);
            if let Some(lang) = &value.lang {
                // Language tags are letters, digits and hyphens: nothing to escape.
                xml.push_str(" xml:lang=\"");
                xml.push_str(lang);
                xml.push('"');
            }
            xml.push('>');
            xml.push_str(&escape_text(&value.text));
            xml.push_str("</dc:");
            xml.push_str(name);
            xml.push_str(">\n");
        }
        xml.push_str("</oai_dc:dc>\n");
        xml
    }

    /// Writes [`DublinCoreMetadata::as_xml`] to `path` atomically: a temporary file in the same
    /// directory, synced, then renamed over `path`. A crash never leaves half a file.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming the path.
    pub fn to_xml(&self, path: &Path) -> Result<()> {
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let dir = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let mut file = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
        std::io::Write::write_all(&mut file, self.as_xml().as_bytes()).map_err(io)?;
        file.as_file().sync_all().map_err(io)?;
        file.persist(path).map_err(|error| io(error.error))?;
        Ok(())
    }

    /// Reads an OAI_DC document (or any document holding Dublin Core elements).
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] past 16 MiB; [`Error::Dtd`] for a document with a DTD;
    /// [`Error::Xml`] with the line and column for malformed XML or an undefined entity.
    pub fn from_raw_xml(xml: &str) -> Result<Self> {
        if xml.len() > MAX_XML_BYTES {
            return Err(Error::TooLarge {
                bytes: xml.len(),
                limit: MAX_XML_BYTES,
            });
        }
        Reader::new(xml).read()
    }
}

/// Which element, if any, an open tag is.
enum Open {
    /// A Dublin Core element being read.
    Element(Element),
    /// An un-namespaced `<dc>` container, whose un-namespaced children are Dublin Core.
    BareContainer,
    /// Anything else.
    Other,
}

struct Reader<'x> {
    xml: &'x str,
    reader: NsReader<&'x [u8]>,
}

impl<'x> Reader<'x> {
    fn new(xml: &'x str) -> Self {
        let mut reader = NsReader::from_reader(xml.as_bytes());
        let config = reader.config_mut();
        config.trim_text(false);
        config.expand_empty_elements = true;
        config.check_end_names = true;
        Self { xml, reader }
    }

    /// 1-based line and column (in characters) of a byte offset.
    fn position(&self, offset: u64) -> (usize, usize) {
        let offset = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.xml.len());
        let before = self.xml.get(..offset).unwrap_or(self.xml);
        let line = before.matches('\n').count() + 1;
        let column = before
            .rsplit('\n')
            .next()
            .map_or(0, |text| text.chars().count())
            + 1;
        (line, column)
    }

    fn error(&self, offset: u64, message: impl Into<String>) -> Error {
        let (line, column) = self.position(offset);
        Error::Xml {
            line,
            column,
            message: message.into(),
        }
    }

    fn read(mut self) -> Result<DublinCoreMetadata> {
        let mut state = State::default();
        loop {
            let offset = self.reader.buffer_position();
            let (namespace, event) = match self.reader.read_resolved_event() {
                Ok((namespace, event)) => (namespace_of(&namespace), event),
                Err(error) => {
                    return Err(self.error(self.reader.error_position(), error.to_string()));
                }
            };
            match event {
                Event::DocType(_) => {
                    let (line, column) = self.position(offset);
                    return Err(Error::Dtd { line, column });
                }
                Event::Start(start) => self.open(&mut state, &namespace, &start, offset)?,
                Event::End(_) => self.close(&mut state, offset)?,
                Event::Text(text) => state.push(&text.xml10_content()),
                Event::CData(data) => state.push(&data.xml10_content()),
                Event::GeneralRef(reference) => {
                    let text = self.resolve(&reference, offset)?;
                    state.push(&text);
                }
                Event::Eof => break,
                _ => {}
            }
        }
        if !state.open.is_empty() {
            return Err(self.error(
                self.reader.buffer_position(),
                "the document ends inside an element",
            ));
        }
        Ok(state.metadata)
    }

    /// An opening tag: a Dublin Core element starts a value (with its `xml:lang`).
    fn open(
        &self,
        state: &mut State,
        namespace: &Namespace,
        start: &BytesStart<'_>,
        offset: u64,
    ) -> Result<()> {
        let local = start.local_name().as_ref().to_owned();
        let in_bare_container = matches!(state.open.last(), Some(Open::BareContainer));
        let kind = match namespace {
            _ if state.current.is_some() => Open::Other,
            Namespace::DublinCore => local.parse().map_or(Open::Other, Open::Element),
            Namespace::None if in_bare_container => {
                local.parse().map_or(Open::Other, Open::Element)
            }
            Namespace::None if local == "dc" => Open::BareContainer,
            _ => Open::Other,
        };
        if let Open::Element(element) = kind {
            let mut lang = None;
            for attribute in start.attributes().with_checks(true) {
                let attribute = attribute.map_err(|error| self.error(offset, error.to_string()))?;
                if attribute.key.as_ref() == "xml:lang" {
                    let text = attribute
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .map_err(|error| self.error(offset, error.to_string()))?;
                    lang = Some(text.trim().to_owned()).filter(|text| !text.is_empty());
                }
            }
            state.current = Some((
                element,
                Value {
                    text: String::new(),
                    lang,
                },
                state.open.len(),
            ));
        }
        state.open.push(kind);
        Ok(())
    }

    /// A closing tag: the value whose element it closes is complete.
    fn close(&self, state: &mut State, offset: u64) -> Result<()> {
        state.open.pop();
        if let Some((element, value, depth)) = state.current.take() {
            if depth == state.open.len() {
                state
                    .metadata
                    .add(element, value)
                    .map_err(|error| self.error(offset, error.to_string()))?;
            } else {
                state.current = Some((element, value, depth));
            }
        }
        Ok(())
    }

    /// The text of `&…;`: a character reference or one of the five predefined entities.
    fn resolve(&self, reference: &BytesRef<'_>, offset: u64) -> Result<String> {
        let name = reference.xml10_content();
        if reference.is_char_ref() {
            return match reference.resolve_char_ref() {
                Ok(Some(c)) => Ok(c.to_string()),
                _ => Err(self.error(offset, format!("invalid character reference &{name};"))),
            };
        }
        quick_xml::escape::resolve_predefined_entity(&name)
            .map(str::to_owned)
            .ok_or_else(|| {
                self.error(
                    offset,
                    format!(
                        "undefined entity &{name}; (only the five predefined entities are allowed)"
                    ),
                )
            })
    }
}

/// What the reader has seen so far.
#[derive(Default)]
struct State {
    metadata: DublinCoreMetadata,
    open: Vec<Open>,
    /// The value being read: its element, text so far, and the depth it opened at.
    current: Option<(Element, Value, usize)>,
}

impl State {
    fn push(&mut self, text: &str) {
        if let Some((_, value, _)) = self.current.as_mut() {
            value.text.push_str(text);
        }
    }
}

/// The namespaces that matter when reading.
enum Namespace {
    /// The Dublin Core element namespace, in its `http` or `https` form.
    DublinCore,
    /// No namespace.
    None,
    /// Any other.
    Other,
}

fn namespace_of(resolved: &ResolveResult<'_>) -> Namespace {
    match resolved {
        ResolveResult::Bound(namespace) => {
            let uri = namespace.as_ref();
            if uri == DC_NAMESPACE || uri == DC_NAMESPACE_HTTPS {
                Namespace::DublinCore
            } else {
                Namespace::Other
            }
        }
        ResolveResult::Unbound => Namespace::None,
        ResolveResult::Unknown(_) => Namespace::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_escaping_keeps_carriage_returns() {
        assert_eq!(
            escape_text("a & <b> \"c\" 'd'"),
            "a &amp; &lt;b&gt; \"c\" 'd'"
        );
        assert_eq!(escape_text("line\r\nnext"), "line&#13;\nnext");
        assert!(matches!(escape_text("plain ā"), Cow::Borrowed(_)));
    }
}
