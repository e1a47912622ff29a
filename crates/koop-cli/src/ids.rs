//! Reading layer ids from arguments and list files.

use std::fmt;

/// A layer named on the command line or in a list: its id, and the site when it was a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LayerRef {
    pub(crate) id: u64,
    /// The site of a URL, e.g. `data.linz.govt.nz`.
    pub(crate) host: Option<koop::Domain>,
}

/// Why a text is not a layer reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NotALayer(pub(crate) String);

impl fmt::Display for NotALayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot read a layer id from {:?}: give a number such as 50772 or a layer URL such as https://data.linz.govt.nz/layer/50772-nz-primary-parcels/",
            self.0
        )
    }
}

impl std::error::Error for NotALayer {}

/// Reads `50772`, `https://data.linz.govt.nz/layer/50772-nz-primary-parcels/`,
/// `…/table/113761-…/`, or an API URL `…/services/api/v1.x/layers/50772/`.
pub(crate) fn parse_layer_ref(text: &str) -> Result<LayerRef, NotALayer> {
    let text = text.trim();
    if let Ok(id) = text.parse::<u64>() {
        return Ok(LayerRef { id, host: None });
    }
    let not_a_layer = || NotALayer(text.to_owned());
    let url = url::Url::parse(text).map_err(|_| not_a_layer())?;
    let host = url.host_str().ok_or_else(not_a_layer)?;
    let host = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    let host = koop::Domain::parse(&host).map_err(|_| not_a_layer())?;
    let segments: Vec<&str> = url
        .path_segments()
        .map(|segments| segments.filter(|segment| !segment.is_empty()).collect())
        .unwrap_or_default();
    let id = segments
        .windows(2)
        .find_map(|pair| match pair[0] {
            "layer" | "table" | "layers" | "tables" => {
                let digits: String = pair[1].chars().take_while(char::is_ascii_digit).collect();
                digits.parse::<u64>().ok()
            }
            _ => None,
        })
        .ok_or_else(not_a_layer)?;
    Ok(LayerRef {
        id,
        host: Some(host),
    })
}

/// One line of a list file that names a layer, or does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListLine {
    /// 1-based line number.
    pub(crate) number: usize,
    pub(crate) layer: Result<LayerRef, NotALayer>,
}

/// Reads a list: one layer per line; blank lines and `#` comments (whole-line or trailing) are
/// skipped.
pub(crate) fn parse_list(text: &str) -> Vec<ListLine> {
    text.lines()
        .enumerate()
        .filter_map(|(index, line)| {
            let content = line.split('#').next().unwrap_or_default().trim();
            (!content.is_empty()).then(|| ListLine {
                number: index + 1,
                layer: parse_layer_ref(content),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_urls_name_layers() {
        assert_eq!(
            parse_layer_ref(" 50772 "),
            Ok(LayerRef {
                id: 50772,
                host: None
            })
        );
        for (url, host) in [
            (
                "https://data.linz.govt.nz/layer/50772-nz-primary-parcels/",
                "data.linz.govt.nz",
            ),
            (
                "https://data.linz.govt.nz/layer/50772-nz-primary-parcels/data/",
                "data.linz.govt.nz",
            ),
            (
                "https://data.linz.govt.nz/services/api/v1.x/layers/50772/",
                "data.linz.govt.nz",
            ),
            ("http://127.0.0.1:8080/layer/50772/", "127.0.0.1:8080"),
        ] {
            assert_eq!(
                parse_layer_ref(url),
                Ok(LayerRef {
                    id: 50772,
                    host: Some(koop::Domain::parse(host).expect("a domain"))
                }),
                "{url}"
            );
        }
        assert_eq!(
            parse_layer_ref("https://data.linz.govt.nz/table/113761-suburb-locality-population/")
                .map(|layer| layer.id),
            Ok(113_761)
        );
    }

    #[test]
    fn other_texts_do_not() {
        for text in [
            "abc",
            "-3",
            "https://data.linz.govt.nz/set/7364-nz-suburbs/",
            "https://example.com/",
            "50772abc",
        ] {
            let error = parse_layer_ref(text).expect_err(text);
            assert!(error.to_string().contains("cannot read a layer id"));
        }
    }

    #[test]
    fn lists_skip_comments_and_blank_lines() {
        let lines = parse_list("# parcels\n50772\n\n  51571   # titles\nnope\n");
        let numbers: Vec<usize> = lines.iter().map(|line| line.number).collect();
        assert_eq!(numbers, [2, 4, 5]);
        assert_eq!(lines[1].layer.as_ref().map(|layer| layer.id), Ok(51571));
        assert!(lines[2].layer.is_err());
    }
}
