//! Koordinates' WFS changeset service: the features a layer's versions inserted, updated and
//! deleted between two times, one page at a time (help.koordinates.com, "Use Changesets via
//! WFS"; LINZ Data Service guide, "Changeset URL syntax" and "Changeset dates and timestamps").

use serde::Deserialize;
use url::Url;

use crate::connection::{Call, KoordinatesConnection};
use crate::error::{Error, Resource, Result};
use crate::lenient::lenient_u64;
use koop_types::Epsg;

/// One changeset asked of a layer or table: WFS 2.0 `GetFeature` on `layer-{id}-changeset` (or
/// `table-{id}-changeset`) with `viewparams=from:{from};to:{to}`, GeoJSON output, sorted on the
/// primary key so that pages (`startIndex`/`count`) partition it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangesetQuery {
    /// The layer or table id.
    pub layer_id: u64,
    /// `true` for a table (`table-{id}-changeset`).
    pub table: bool,
    /// Exclusive start: the publication time of the version already held (ISO 8601 as the API
    /// sent it in `published_at`).
    pub from: String,
    /// Inclusive end: the publication time of the version wanted.
    pub to: String,
    /// CRS of the geometries asked for (`srsName`); `None` leaves the layer's own.
    pub crs: Option<Epsg>,
    /// The primary key fields, the `sortBy` of every page.
    pub sort_by: Vec<String>,
    /// Features asked for per page (`count`); a server may return fewer.
    pub page_size: u64,
}

impl ChangesetQuery {
    /// The WFS type name, e.g. `layer-50804-changeset`.
    pub fn type_name(&self) -> String {
        let prefix = if self.table { "table" } else { "layer" };
        format!("{prefix}-{}-changeset", self.layer_id)
    }
}

/// One page of a changeset: GeoJSON features, each with its `__change__` property (`INSERT`,
/// `UPDATE` or `DELETE`) and the feature's attributes and geometry.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ChangesetPage {
    /// The features of the page, as sent.
    pub features: Vec<serde_json::Value>,
    /// Features in the whole changeset (`numberMatched`, else `totalFeatures`), when the server
    /// says.
    pub number_matched: Option<u64>,
    /// Bytes of the page's body.
    pub bytes: u64,
}

#[derive(Deserialize)]
struct PageWire {
    #[serde(default)]
    features: Option<Vec<serde_json::Value>>,
    #[serde(default, rename = "numberMatched", deserialize_with = "lenient_u64")]
    number_matched: Option<u64>,
    #[serde(default, rename = "totalFeatures", deserialize_with = "lenient_u64")]
    total_features: Option<u64>,
}

impl KoordinatesConnection {
    /// The URL of one page of `query`, starting at feature `start_index` (0-based).
    pub fn changeset_url(&self, query: &ChangesetQuery, start_index: u64) -> Url {
        let mut url = self.endpoint(&format!("/services/wfs/{}", query.type_name()));
        {
            let mut pairs = url.query_pairs_mut();
            pairs
                .append_pair("service", "WFS")
                .append_pair("version", "2.0.0")
                .append_pair("request", "GetFeature")
                .append_pair("typeNames", &query.type_name())
                .append_pair("outputFormat", "json")
                .append_pair(
                    "viewparams",
                    &format!("from:{};to:{}", query.from, query.to),
                );
            if !query.sort_by.is_empty() {
                pairs.append_pair("sortBy", &query.sort_by.join(","));
            }
            if let Some(crs) = query.crs {
                pairs.append_pair("srsName", &format!("EPSG:{}", crs.code()));
            }
            pairs
                .append_pair("startIndex", &start_index.to_string())
                .append_pair("count", &query.page_size.to_string());
        }
        url
    }

    /// One page of a changeset: `GET /services/wfs/{type name}?…` on this site, with the key
    /// header and the connection's retry policy (a 5xx is retried as any API request is).
    ///
    /// # Errors
    ///
    /// [`Error::Status`] and the other request errors of the connection; [`Error::Decode`] when
    /// the body is not a GeoJSON feature collection (a WFS exception report, say).
    pub async fn changeset_page(
        &self,
        query: &ChangesetQuery,
        start_index: u64,
    ) -> Result<ChangesetPage> {
        let resource = Resource::Changeset(query.layer_id);
        let call = Call::get(self.changeset_url(query, start_index), resource.clone());
        let response = self.execute(&call).await?;
        let body = self.read_body(response, &resource).await?;
        let page: PageWire = self.decode(&body, "a changeset page", &call.url)?;
        let Some(features) = page.features else {
            return Err(Error::Decode {
                domain: self.domain().clone(),
                what: format!("a changeset page at {}", call.url.path()),
                excerpt: self.redact(&crate::connection::excerpt(&body)),
                source: serde::de::Error::custom("no `features` list"),
            });
        };
        Ok(ChangesetPage {
            features,
            number_matched: page.number_matched.or(page.total_features),
            bytes: body.len() as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_read_every_count_shape() {
        let page: PageWire = serde_json::from_str(
            r#"{"type":"FeatureCollection","features":[],"totalFeatures":"unknown","numberMatched":12}"#,
        )
        .expect("page");
        assert_eq!(page.number_matched, Some(12));
        assert_eq!(page.total_features, None);
    }
}
