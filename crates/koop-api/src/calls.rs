//! The API calls: layers, tables, versions, Dublin Core metadata and exports.

use reqwest::Method;
use reqwest::StatusCode;
use reqwest::header;

use crate::connection::{Call, KoordinatesConnection};
use crate::download::ExportDownload;
use crate::error::{Error, Resource, Result};
use crate::export::{Export, ExportRequest, ExportValidation};
use crate::layer::{LayerDetails, LayerVersion};

impl KoordinatesConnection {
    /// Details of a layer at its current (published) version: `GET layers/{id}/`.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] naming the layer when there is no such layer, [`Error::Unauthorized`]
    /// for a bad key, [`Error::Decode`] for a body that is not a layer, and the transport and
    /// server errors of every call.
    pub async fn layer_details(&self, layer_id: u64) -> Result<LayerDetails> {
        self.get_json(
            self.endpoint(&format!("layers/{layer_id}/")),
            Resource::Layer(layer_id),
            &format!("the details of layer {layer_id}"),
        )
        .await
    }

    /// Details of a table (a layer without geometry): `GET tables/{id}/`.
    ///
    /// # Errors
    ///
    /// As [`KoordinatesConnection::layer_details`], naming the table.
    pub async fn table_details(&self, table_id: u64) -> Result<LayerDetails> {
        self.get_json(
            self.endpoint(&format!("tables/{table_id}/")),
            Resource::Table(table_id),
            &format!("the details of table {table_id}"),
        )
        .await
    }

    /// Details of a layer or, when there is no layer with this id, of the table with this id.
    /// A layer costs one request; a table two.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for [`Resource::LayerOrTable`] when neither exists; otherwise as
    /// [`KoordinatesConnection::layer_details`].
    pub async fn item_details(&self, id: u64) -> Result<LayerDetails> {
        match self.layer_details(id).await {
            Err(error) if error.is_not_found() => match self.table_details(id).await {
                Err(error) if error.is_not_found() => Err(Error::NotFound {
                    domain: self.domain().clone(),
                    resource: Resource::LayerOrTable(id),
                }),
                other => other,
            },
            other => other,
        }
    }

    /// Details of a layer at one version: `GET layers/{id}/versions/{vid}/` (the full layer
    /// body, with `version` describing that version).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] naming the layer version; otherwise as
    /// [`KoordinatesConnection::layer_details`].
    pub async fn layer_version(&self, layer_id: u64, version_id: u64) -> Result<LayerDetails> {
        self.get_json(
            self.endpoint(&format!("layers/{layer_id}/versions/{version_id}/")),
            Resource::LayerVersion {
                layer_id,
                version_id,
            },
            &format!("version {version_id} of layer {layer_id}"),
        )
        .await
    }

    /// Every version of a layer, newest first as the server lists them: `GET layers/{id}/versions/`,
    /// following `Link: rel="page-next"` across pages.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] naming the layer; [`Error::ForeignLink`] if a page link leaves the
    /// domain; otherwise as [`KoordinatesConnection::layer_details`].
    pub async fn layer_versions(&self, layer_id: u64) -> Result<Vec<LayerVersion>> {
        self.get_all_pages(
            self.endpoint(&format!("layers/{layer_id}/versions/")),
            Resource::LayerVersions(layer_id),
            &format!("the versions of layer {layer_id}"),
            usize::MAX,
        )
        .await
    }

    /// The Dublin Core XML document of a layer version, fetched from the `metadata.dc` link of its
    /// details. `Ok(None)` when the layer has no Dublin Core document (no link, or 404 on it).
    ///
    /// # Errors
    ///
    /// [`Error::ForeignLink`] when the link is not on this domain (the key is never sent
    /// elsewhere); transport, auth and server errors.
    pub async fn dc_metadata(&self, details: &LayerDetails) -> Result<Option<String>> {
        let layer_id = details.layer_id().unwrap_or_default();
        let resource = Resource::DublinCore(layer_id);
        let Some(link) = details.dc_metadata_url() else {
            return Ok(None);
        };
        let url = self.own_link(link, &resource)?;
        let call = Call::get(url, resource);
        let response = match self.execute(&call).await {
            Ok(response) => response,
            Err(error) if error.is_not_found() => return Ok(None),
            Err(error) => return Err(error),
        };
        let body = self.read_body(response, &call.resource).await?;
        Ok(Some(String::from_utf8_lossy(&body).into_owned()))
    }

    /// Checks an export request: `POST exports/validate/`. The server answers 200 even when the
    /// request is invalid; read [`ExportValidation::is_valid`] and [`ExportValidation::reasons`].
    ///
    /// # Errors
    ///
    /// Transport, auth and server errors; [`Error::Decode`] for an unexpected body.
    pub async fn validate_export(&self, request: &ExportRequest) -> Result<ExportValidation> {
        let url = self.endpoint("exports/validate/");
        let (_, _, body) = self
            .send_json(Method::POST, url.clone(), request, Resource::Exports, true)
            .await?;
        self.decode(&body, "an export validation", &url)
    }

    /// Creates an export: `POST exports/`. The server answers 201 with the export, or on older
    /// servers with an empty body and a `Location` header, which is then fetched.
    ///
    /// Creating an export is not idempotent, so it is retried only where the server cannot have
    /// acted (429, failure to connect).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidExport`] with the server's reasons when it refuses the request (400 with
    /// a validation body); transport, auth and server errors.
    pub async fn create_export(&self, request: &ExportRequest) -> Result<Export> {
        let url = self.endpoint("exports/");
        let (status, headers, body) = self
            .send_json(Method::POST, url.clone(), request, Resource::Exports, false)
            .await?;
        if body.iter().all(u8::is_ascii_whitespace) {
            let location = headers
                .get(header::LOCATION)
                .and_then(|value| value.to_str().ok())
                .ok_or_else(|| Error::Rejected {
                    domain: self.domain().clone(),
                    resource: Resource::Exports,
                    status: status.as_u16(),
                    message: "the export was created but the response has neither a body nor a Location header".to_owned(),
                })?;
            let url = self.own_link(location, &Resource::Exports)?;
            return self
                .get_json(url, Resource::Exports, "the new export")
                .await;
        }
        self.decode(&body, "the new export", &url)
    }

    /// The current state of an export: `GET exports/{id}/`.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] naming the export; transport, auth and server errors.
    pub async fn export(&self, export_id: u64) -> Result<Export> {
        self.get_json(
            self.endpoint(&format!("exports/{export_id}/")),
            Resource::Export(export_id),
            &format!("export {export_id}"),
        )
        .await
    }

    /// Cancels an export: `DELETE exports/{id}/` (202 with the cancelled export).
    ///
    /// # Errors
    ///
    /// [`Error::Rejected`] with status 409 when the export can no longer be cancelled (the
    /// server says `Can't cancel`); [`Error::NotFound`]; transport, auth and server errors.
    pub async fn cancel_export(&self, export_id: u64) -> Result<Export> {
        let mut call = Call::get(
            self.endpoint(&format!("exports/{export_id}/")),
            Resource::Export(export_id),
        );
        call.method = Method::DELETE;
        let response = self.execute(&call).await?;
        let status = response.status();
        let body = self.read_body(response, &call.resource).await?;
        if status == StatusCode::NO_CONTENT || body.is_empty() {
            return self.export(export_id).await;
        }
        self.decode(&body, &format!("cancelled export {export_id}"), &call.url)
    }

    /// Every export of this account: `GET exports/`, following page links.
    ///
    /// # Errors
    ///
    /// Transport, auth and server errors; [`Error::Decode`] for an unexpected body.
    pub async fn exports(&self) -> Result<Vec<Export>> {
        self.get_all_pages(
            self.endpoint("exports/"),
            Resource::Exports,
            "the export list",
            usize::MAX,
        )
        .await
    }

    /// The account's most recent exports: `GET exports/`, at most `pages` pages (Koordinates
    /// lists the newest first).
    ///
    /// # Errors
    ///
    /// As [`KoordinatesConnection::exports`].
    pub async fn recent_exports(&self, pages: usize) -> Result<Vec<Export>> {
        self.get_all_pages(
            self.endpoint("exports/"),
            Resource::Exports,
            "the export list",
            pages,
        )
        .await
    }

    /// Starts downloading a complete export's ZIP from byte `offset` (0 for the whole file; a
    /// positive offset sends `Range: bytes={offset}-` to resume).
    ///
    /// The download URL answers with a redirect to a presigned object-storage URL on another
    /// host: it is followed, and the `Authorization` header is never sent there. The returned
    /// [`ExportDownload`] says where its bytes start ([`ExportDownload::offset`], 0 when the
    /// server ignored the range) and streams the body.
    ///
    /// # Errors
    ///
    /// [`Error::Rejected`] when the export has no `download_url` yet (it is not complete);
    /// [`Error::RangeNotSatisfiable`] when `offset` is past the end; [`Error::Redirect`] for a
    /// redirect from HTTPS to HTTP; transport, auth and server errors.
    pub async fn download_export(&self, export: &Export, offset: u64) -> Result<ExportDownload> {
        let resource = Resource::Export(export.id);
        let link = export
            .download_url
            .as_deref()
            .ok_or_else(|| Error::Rejected {
                domain: self.domain().clone(),
                resource: resource.clone(),
                status: 0,
                message: format!(
                    "export {} is {} and has no download URL yet; wait until it is complete",
                    export.id, export.state
                ),
            })?;
        let url = self.base_url().join(link).map_err(|_| Error::ForeignLink {
            domain: self.domain().clone(),
            resource: resource.clone(),
            url: link.to_owned(),
        })?;
        let call = Call {
            method: Method::GET,
            url,
            resource,
            json_body: None,
            idempotent: true,
            follow_foreign_redirects: true,
            range_from: Some(offset),
        };
        let response = match self.execute(&call).await {
            Err(Error::Rejected { status: 416, .. }) => {
                return Err(Error::RangeNotSatisfiable {
                    domain: self.domain().clone(),
                    export_id: export.id,
                    offset,
                });
            }
            other => other?,
        };
        Ok(ExportDownload::new(
            response,
            offset,
            self.domain().clone(),
            export.id,
        ))
    }
}
