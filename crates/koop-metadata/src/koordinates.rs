//! Dublin Core from Koordinates: a layer's document, a template from its details, and the
//! `source` element from layer versions.

use futures::{StreamExt, TryStreamExt};
use koop_api::{KoordinatesConnection, LayerDetails, Linked};

use crate::error::{Error, Result};
use crate::metadata::{DublinCoreMetadata, Element};
use crate::source::SourceRow;

/// Layer versions fetched at once by the `source` builders.
const CONCURRENT_REQUESTS: usize = 8;

// Named async functions rather than closures returning `async` blocks: their futures are
// provably `Send` for every lifetime, so callers can spawn them (the Python bindings do).

/// The source row of one version of a layer (`GET layers/{id}/versions/{vid}/`).
async fn version_row(
    connection: &KoordinatesConnection,
    layer_id: u64,
    version_id: u64,
) -> Result<SourceRow> {
    let details = connection.layer_version(layer_id, version_id).await?;
    Ok(source_row(layer_id, &details, version_id))
}

/// The source row of a layer's current version (`GET layers/{id}/`).
async fn latest_row(connection: &KoordinatesConnection, layer_id: u64) -> Result<SourceRow> {
    let details = connection.item_details(layer_id).await?;
    let version_id = details.version_id().unwrap_or_default();
    Ok(source_row(layer_id, &details, version_id))
}

fn source_row(layer_id: u64, details: &LayerDetails, version_id: u64) -> SourceRow {
    let last_updated = details
        .published_at
        .clone()
        .or_else(|| {
            details
                .version
                .as_ref()
                .and_then(|version| version.created_at.clone())
        })
        .unwrap_or_default();
    SourceRow {
        layer_id,
        title: details.title.clone(),
        version_id,
        last_updated,
    }
}

impl DublinCoreMetadata {
    /// The Dublin Core document of a layer's current version, fetched through the `metadata.dc`
    /// link of its details (`GET layers/{id}/`, then the link).
    ///
    /// # Errors
    ///
    /// [`Error::NoMetadata`] naming the layer when it has no DC document; [`Error::Api`];
    /// the parse errors of [`DublinCoreMetadata::from_raw_xml`].
    pub async fn from_koordinates(
        connection: &KoordinatesConnection,
        layer_id: u64,
    ) -> Result<Self> {
        let details = connection.item_details(layer_id).await?;
        let xml = connection
            .dc_metadata(&details)
            .await?
            .ok_or_else(|| Error::NoMetadata {
                domain: connection.domain().clone(),
                layer_id,
            })?;
        Self::from_raw_xml(&xml)
    }

    /// A record started from a layer's details: title, description, type (the layer kind), date
    /// (published), identifier (the layer's web page, else its API URL), and publisher and rights
    /// (the licence) where the details carry them.
    ///
    /// # Errors
    ///
    /// [`Error::Api`]; [`Error::InvalidCharacter`] if the details hold text XML cannot carry.
    pub async fn populate_template(
        connection: &KoordinatesConnection,
        layer_id: u64,
    ) -> Result<Self> {
        let details = connection.item_details(layer_id).await?;
        let mut metadata = Self::new();
        metadata.set_title(&details.title)?;
        if let Some(description) = details
            .description
            .as_deref()
            .filter(|text| !text.is_empty())
        {
            metadata.set_description(description)?;
        }
        if let Some(kind) = &details.kind {
            metadata.set_type(kind.as_str())?;
        }
        if let Some(date) = &details.published_at {
            metadata.set_date(date)?;
        }
        metadata.set_identifier(details.url_html.as_deref().unwrap_or(&details.url))?;
        let publisher = match &details.publisher {
            Some(Linked::Expanded(publisher)) => publisher.name.clone(),
            _ => None,
        };
        if let Some(publisher) = publisher {
            metadata.set_publisher(publisher)?;
        }
        if let Some(license) = &details.license {
            metadata.set_rights(&license.title)?;
        }
        Ok(metadata)
    }

    /// Sets `source` to the given versions of the given layers: `layer_ids[i]` at
    /// `version_ids[i]`, fetched concurrently (`GET layers/{id}/versions/{vid}/`), written in the
    /// order given. See [`DublinCoreMetadata::set_source_rows`] for the format.
    ///
    /// # Errors
    ///
    /// [`Error::MismatchedSourceLists`] before any request when the lists differ in length;
    /// [`Error::Api`] (a version that does not exist is not found, naming it). On error the
    /// record is unchanged.
    pub async fn update_source_field(
        &mut self,
        connection: &KoordinatesConnection,
        layer_ids: &[u64],
        version_ids: &[u64],
    ) -> Result<&mut Self> {
        if layer_ids.len() != version_ids.len() {
            return Err(Error::MismatchedSourceLists {
                layers: layer_ids.len(),
                versions: version_ids.len(),
            });
        }
        let rows: Vec<SourceRow> =
            futures::stream::iter(layer_ids.iter().copied().zip(version_ids.iter().copied()))
                .map(|(layer_id, version_id)| version_row(connection, layer_id, version_id))
                .buffered(CONCURRENT_REQUESTS)
                .try_collect()
                .await?;
        self.set_source_rows(&rows)
    }

    /// Sets `source` to the current version of each layer (`GET layers/{id}/`, concurrently).
    ///
    /// # Errors
    ///
    /// [`Error::Api`]. On error the record is unchanged.
    pub async fn update_source_with_latest_layer_versions(
        &mut self,
        connection: &KoordinatesConnection,
        layer_ids: &[u64],
    ) -> Result<&mut Self> {
        let rows: Vec<SourceRow> = futures::stream::iter(layer_ids.iter().copied())
            .map(|layer_id| latest_row(connection, layer_id))
            .buffered(CONCURRENT_REQUESTS)
            .try_collect()
            .await?;
        self.set_source_rows(&rows)
    }

    /// The element names, for error messages and help texts.
    pub fn element_names() -> &'static [&'static str] {
        &Element::NAMES
    }
}
