//! A streaming export download.

use bytes::Bytes;
use futures::Stream;
use percent_encoding::percent_decode_str;
use reqwest::header;
use reqwest::{Response, StatusCode};

use koop_types::Domain;

use crate::error::{Error, Resource, Result};

/// The body of an export download, streamed chunk by chunk; memory use does not grow with the
/// size of the export.
#[derive(Debug)]
pub struct ExportDownload {
    response: Response,
    offset: u64,
    total_size: Option<u64>,
    filename: Option<String>,
    domain: Domain,
    export_id: u64,
}

impl ExportDownload {
    pub(crate) fn new(
        response: Response,
        requested_offset: u64,
        domain: Domain,
        export_id: u64,
    ) -> Self {
        let headers = response.headers();
        let content_length = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        let content_range = headers
            .get(header::CONTENT_RANGE)
            .and_then(|value| value.to_str().ok())
            .and_then(parse_content_range);
        let filename = headers
            .get(header::CONTENT_DISPOSITION)
            .and_then(|value| value.to_str().ok())
            .and_then(attachment_filename);
        let (offset, total_size) = if response.status() == StatusCode::PARTIAL_CONTENT {
            match content_range {
                Some((start, total)) => (start, total),
                None => (requested_offset, None),
            }
        } else {
            (0, content_length)
        };
        Self {
            response,
            offset,
            total_size,
            filename,
            domain,
            export_id,
        }
    }

    /// The byte offset in the ZIP where this body starts: the requested offset when the server
    /// honoured the range (206), 0 when it sent the whole file (200).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Size of the whole ZIP in bytes, when the server says (`Content-Range` total or
    /// `Content-Length`).
    pub fn total_size(&self) -> Option<u64> {
        self.total_size
    }

    /// The file name from `Content-Disposition` (`filename*=UTF-8''…` or `filename="…"`), reduced
    /// to its last path component.
    pub fn filename(&self) -> Option<&str> {
        self.filename.as_deref()
    }

    /// The next chunk of the body, `None` at its end.
    ///
    /// # Errors
    ///
    /// [`Error::Transport`] when the connection breaks or stalls past the read timeout; the bytes
    /// received so far stay valid and the download can resume from there.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>> {
        self.response
            .chunk()
            .await
            .map_err(|source| Error::Transport {
                domain: self.domain.clone(),
                resource: Resource::Export(self.export_id),
                source,
            })
    }

    /// The body as a stream of chunks.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes>> + Send {
        futures::stream::unfold(self, |mut download| async move {
            match download.chunk().await {
                Ok(Some(chunk)) => Some((Ok(chunk), download)),
                Ok(None) => None,
                Err(error) => Some((Err(error), download)),
            }
        })
    }
}

/// Parses `Content-Range: bytes start-end/total` into `(start, total)`.
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let range = value.trim().strip_prefix("bytes ")?;
    let (span, total) = range.split_once('/')?;
    let (start, _end) = span.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()))
}

/// The file name of `Content-Disposition: attachment; filename*=UTF-8''name.zip` (RFC 6266),
/// falling back to `filename="name.zip"`; only the last path component is kept.
pub(crate) fn attachment_filename(value: &str) -> Option<String> {
    let mut plain = None;
    let mut extended = None;
    for param in value.split(';').map(str::trim) {
        if let Some(encoded) = param.strip_prefix("filename*=") {
            let encoded = encoded.trim_matches('"');
            let text = encoded
                .split_once("''")
                .map_or(encoded, |(_charset, text)| text);
            extended = percent_decode_str(text)
                .decode_utf8()
                .ok()
                .map(std::borrow::Cow::into_owned);
        } else if let Some(name) = param.strip_prefix("filename=") {
            plain = Some(name.trim_matches('"').to_owned());
        }
    }
    let name = extended.or(plain)?;
    let base = name.rsplit(['/', '\\']).next()?.trim().to_owned();
    (!base.is_empty() && base != "." && base != "..").then_some(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_is_parsed() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }

    #[test]
    fn attachment_filenames_are_decoded_and_reduced() {
        assert_eq!(
            attachment_filename("attachment; filename*=UTF-8''kx-n%C4%81-layer.zip").as_deref(),
            Some("kx-nā-layer.zip")
        );
        assert_eq!(
            attachment_filename(r#"attachment; filename="../../etc/passwd""#).as_deref(),
            Some("passwd")
        );
        assert_eq!(attachment_filename("attachment").as_deref(), None);
        assert_eq!(attachment_filename(r#"attachment; filename="..""#), None);
    }
}
