//! The data catalog (`GET data/`), asked what changed since a time: how a nightly mirror of
//! hundreds of layers learns with one request which of them need a look.

use std::collections::BTreeSet;
use std::time::SystemTime;

use serde::Deserialize;

use crate::connection::KoordinatesConnection;
use crate::error::{Error, Resource, Result};
use crate::lenient::{lenient_string, required_id};

/// Items per catalog page asked for.
const PAGE_SIZE: usize = 100;

/// An entry of the data catalog: the published version of a layer, table, set, document or
/// source (`GET data/`, Koordinates' Data Catalog API).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct CatalogItem {
    /// The item's id (a layer's or table's id is its layer id).
    #[serde(deserialize_with = "required_id")]
    pub id: u64,
    /// `layer`, `table`, `set`, `document`, `source`, … as sent.
    #[serde(default, rename = "type", deserialize_with = "lenient_string")]
    pub item_type: Option<String>,
    /// When the item last changed (RFC 3339 as sent), when the site says.
    #[serde(default, deserialize_with = "lenient_string")]
    pub updated_at: Option<String>,
    /// When its current version was published (RFC 3339 as sent).
    #[serde(default, deserialize_with = "lenient_string")]
    pub published_at: Option<String>,
}

/// What the catalog says changed since a time ([`KoordinatesConnection::catalog_changes_since`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CatalogChanges {
    /// The site filtered its catalog: exactly these items were updated after the time asked
    /// about; every other item is as it was.
    Changed {
        /// The ids of the items listed (layers, tables and anything else the site lists).
        ids: BTreeSet<u64>,
        /// The site's clock when it answered (the first page's `Date` header), when it sent one.
        server_time: Option<SystemTime>,
        /// Catalog pages read.
        pages: usize,
    },
    /// The site cannot say: it refused the filter, ignored it (it listed an item last updated
    /// before the time), or refused the key the catalog scope. Ask each layer instead.
    Unsupported {
        /// Why, for the run's report.
        reason: String,
    },
}

/// `time` as RFC 3339 in UTC, e.g. `2026-12-01T19:30:00.25Z`.
fn rfc3339(time: SystemTime) -> String {
    jiff::Timestamp::try_from(time)
        .map_or_else(|_| "1970-01-01T00:00:00Z".to_owned(), |t| t.to_string())
}

fn parse_time(text: &str) -> Option<SystemTime> {
    text.parse::<jiff::Timestamp>().ok().map(SystemTime::from)
}

impl KoordinatesConnection {
    /// The items of the data catalog updated after `since`: `GET data/?updated_at.after=…`,
    /// following every page link.
    ///
    /// The answer is [`CatalogChanges::Unsupported`] (never an error) when the site cannot
    /// say: it answers the filter with 400, 404 or 405, the key lacks the `catalog` scope
    /// (403), or the site ignores the filter (an item it lists was updated — or, when items
    /// carry no `updated_at`, published — at or before `since`). Reading it as "nothing is
    /// known" is always safe: the caller then asks each layer.
    ///
    /// # Errors
    ///
    /// Transport, authentication (401), rate-limit and server errors after the retry policy;
    /// [`Error::ForeignLink`] if a page link leaves the domain.
    pub async fn catalog_changes_since(&self, since: SystemTime) -> Result<CatalogChanges> {
        let mut url = self.endpoint("data/");
        url.query_pairs_mut()
            .append_pair("updated_at.after", &rfc3339(since))
            .append_pair("page_size", &PAGE_SIZE.to_string());
        let listed = self
            .get_pages_dated::<CatalogItem>(url, Resource::Catalog, "the data catalog", usize::MAX)
            .await;
        let (items, server_time, pages) = match listed {
            Ok(listed) => listed,
            Err(error @ (Error::Rejected { .. } | Error::NotFound { .. })) => {
                return Ok(CatalogChanges::Unsupported {
                    reason: format!("the catalog refused the updated_at.after filter ({error})"),
                });
            }
            Err(error @ Error::Forbidden { .. }) => {
                return Ok(CatalogChanges::Unsupported {
                    reason: format!("the key may not read the catalog ({error})"),
                });
            }
            Err(error) => return Err(error),
        };
        let stale = items.iter().find(|item| {
            let when = item
                .updated_at
                .as_deref()
                .or(item.published_at.as_deref())
                .and_then(parse_time);
            when.is_some_and(|when| when <= since)
        });
        if let Some(stale) = stale {
            return Ok(CatalogChanges::Unsupported {
                reason: format!(
                    "the catalog ignored the updated_at.after filter (it listed item {}, last updated {})",
                    stale.id,
                    stale
                        .updated_at
                        .as_deref()
                        .or(stale.published_at.as_deref())
                        .unwrap_or("earlier")
                ),
            });
        }
        Ok(CatalogChanges::Changed {
            ids: items.iter().map(|item| item.id).collect(),
            server_time,
            pages,
        })
    }

    /// The site's clock: the `Date` header of one small catalog page (`GET data/?page_size=1`),
    /// or `None` when the site sends none or the request fails. A mirror's first run takes its
    /// start time from here, so that the next run's question is asked in the site's own time.
    pub async fn server_time(&self) -> Option<SystemTime> {
        let mut url = self.endpoint("data/");
        url.query_pairs_mut().append_pair("page_size", "1");
        self.get_pages_dated::<serde_json::Value>(url, Resource::Catalog, "the data catalog", 1)
            .await
            .ok()
            .and_then(|(_, date, _)| date)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_and_read_as_rfc3339() {
        let time = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_764_617_400_250);
        let text = rfc3339(time);
        assert_eq!(text, "2025-12-01T19:30:00.25Z");
        assert_eq!(parse_time(&text), Some(time));
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn catalog_items_read_any_shape_of_their_optional_fields() {
        let item: CatalogItem = serde_json::from_str(
            r#"{"id": "7687", "type": "table", "updated_at": null, "published_at": 5, "extra": {}}"#,
        )
        .expect("an item");
        assert_eq!(item.id, 7687);
        assert_eq!(item.item_type.as_deref(), Some("table"));
        assert_eq!(item.updated_at, None);
    }
}
