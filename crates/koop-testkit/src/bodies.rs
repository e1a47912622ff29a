//! Response bodies shaped like the real ones in the project's fixtures.

use std::fmt::Write as _;
use std::time::Instant;

use serde_json::{Value, json};

use crate::artifacts::slug;
use crate::catalog::{ApiGeneration, Kind, TestLayer};
use crate::state::{ExportRecord, LayerEntry, VersionRecord, export_state};

/// The collection a layer lives in: `tables` for tables, `layers` for everything else.
pub(crate) fn collection(kind: Kind) -> &'static str {
    if kind == Kind::Table {
        "tables"
    } else {
        "layers"
    }
}

pub(crate) fn layer_url(base: &str, layer: &TestLayer) -> String {
    format!("{base}{}/{}/", collection(layer.kind), layer.id)
}

pub(crate) fn version_url(base: &str, layer: &TestLayer, version_id: u64) -> String {
    format!("{}versions/{version_id}/", layer_url(base, layer))
}

pub(crate) fn dc_url(base: &str, layer: &TestLayer, version_id: u64) -> String {
    format!("{}metadata/dc/", version_url(base, layer, version_id))
}

fn export_formats(kind: Kind) -> Value {
    let formats: &[(&str, &str)] = match kind {
        Kind::Vector => &[
            ("Shapefile", "application/x-zipped-shp"),
            ("CSV", "text/csv"),
            ("GeoPackage / SQLite", "application/x-ogc-gpkg"),
            ("KML", "application/vnd.google-earth.kml+xml"),
        ],
        Kind::Table => &[
            ("CSV", "text/csv"),
            ("GeoPackage / SQLite", "application/x-ogc-gpkg"),
        ],
        Kind::Raster => &[
            ("GeoTIFF", "image/tiff;subtype=geotiff"),
            ("GeoJPEG", "image/jpeg"),
            ("KEA", "application/x-hdf;subtype=kea"),
        ],
        Kind::Grid => &[
            ("GeoTIFF", "image/tiff;subtype=geotiff"),
            ("ASCII Grid", "application/x-ogc-aaigrid"),
            ("KEA", "application/x-hdf;subtype=kea"),
        ],
        Kind::PointCloud => &[("LAZ", "application/vnd.laszip")],
    };
    formats
        .iter()
        .map(|(name, mimetype)| json!({"name": name, "mimetype": mimetype}))
        .collect()
}

fn crs_object(epsg: u32) -> Value {
    let name = match epsg {
        2193 => "NZGD2000 / New Zealand Transverse Mercator 2000",
        4326 => "WGS 84",
        4167 => "NZGD2000",
        _ => "",
    };
    let kind = if matches!(epsg, 4326 | 4167) {
        "geographic 2D"
    } else {
        "projected"
    };
    json!({
        "id": format!("EPSG:{epsg}"),
        "url": format!("https://example.invalid/coordinate-systems/EPSG:{epsg}/"),
        "name": name,
        "kind": kind,
        "unit_horizontal": if kind == "projected" { "metre" } else { "degree" },
        "unit_vertical": "",
        "url_external": format!("https://epsg.io/{epsg}"),
        "component_horizontal": null,
        "component_vertical": null,
        "srid": epsg,
    })
}

/// A GeoJSON polygon of `[min_x, min_y, max_x, max_y]` in EPSG:4326.
fn extent_polygon([min_x, min_y, max_x, max_y]: [f64; 4]) -> Value {
    json!({
        "type": "Polygon",
        "coordinates": [[[min_x, min_y], [max_x, min_y], [max_x, max_y], [min_x, max_y], [min_x, min_y]]],
    })
}

/// Layer details (`layers/{id}/`, `tables/{id}/`, `…/versions/{vid}/`) at `version`.
#[allow(
    clippy::too_many_lines,
    reason = "one JSON literal mirroring the real body field by field"
)]
pub(crate) fn layer_details(
    base: &str,
    html_origin: &str,
    entry: &LayerEntry,
    version: &VersionRecord,
) -> Value {
    let layer = &entry.layer;
    let schema = entry.schema.as_ref();
    let epsg = match (&layer.kind, schema) {
        (Kind::Table, _) | (Kind::PointCloud, None) => None,
        (_, Some(schema)) => schema.srs_id,
        _ => Some(2193),
    };
    let extent = match epsg {
        Some(4326) => schema.and_then(|s| s.bounds).map(extent_polygon),
        Some(_) => Some(extent_polygon([166.4, -47.3, 178.6, -34.4])),
        None => None,
    };
    let fields: Option<Value> = schema.map(|schema| {
        schema
            .fields
            .iter()
            .filter(|(name, _)| name != "fid")
            .map(|(name, kind)| json!({"name": name, "type": kind}))
            .collect()
    });
    let v1 = layer.api_generation == ApiGeneration::V1;
    let this_version = version_url(base, layer, version.id);
    let current = entry.current();
    let mut data = json!({
        "storage": "classic",
        "datasources": format!("{this_version}datasources/"),
        "fields": fields,
        "encoding": null,
        "crs": if v1 { epsg.map_or(Value::Null, |code| json!(format!("EPSG:{code}"))) } else { epsg.map_or(Value::Null, crs_object) },
        "primary_key_fields": schema.map(|s| s.primary_key.clone()).unwrap_or_default(),
        "geometry_field": schema.and_then(|s| s.geometry_field.clone()),
        "geometry_type": schema.and_then(|s| s.geometry_type.clone()).unwrap_or_default(),
        "feature_count": match &layer.content {
            crate::catalog::LayerContent::GeoTiff(tiles) => Some(tiles.len() as u64),
            crate::catalog::LayerContent::Generated(content) => {
                crate::edits::feature_count(*content, &entry.history, version.revision)
                    .or_else(|| schema.and_then(|s| s.feature_count))
            }
            _ => schema.and_then(|s| s.feature_count),
        },
        "extent": extent,
        "raster_resolution": match layer.kind { Kind::Grid => json!(4000.0), Kind::Raster => json!(5000.0), _ => Value::Null },
        "has_z": false,
    });
    if !v1 {
        data["import_version"] = json!(version_url(base, layer, version.data_version));
        data["export_formats"] = export_formats(layer.kind);
        if let Some(summary) = change_summary(entry, version) {
            data["change_summary"] = summary;
        }
    }
    let publisher = if layer.id.is_multiple_of(2) {
        json!(format!("{base}publishers/koop-testkit/"))
    } else {
        json!({"id": "koop-testkit", "name": "koop testkit — Toitū Te Whenua test data", "html_url": html_origin})
    };
    let services = if layer.changesets {
        let type_name = format!(
            "{}-{}-changeset",
            if layer.kind == Kind::Table {
                "table"
            } else {
                "layer"
            },
            layer.id
        );
        json!([
            {"id": "s1", "authority": "koordinates", "key": "export", "short_name": "Export", "label": "Export Service"},
            {"id": "s2", "authority": "koordinates", "key": "wfs-changesets", "short_name": "WFS Changesets", "label": "WFS Changesets",
             "template_urls": [{"name": "WFS Changesets", "service_url": format!("{html_origin}/services;key=[api_token]/wfs/layer-{}?service=WFS&version=2.0.0&request=GetFeature&TypeName={type_name}&OutputFormat=[output_format]&sortBy=[sort_by]&viewparams=from:[start_time];to:[end_time]", layer.id)}]},
        ])
    } else if layer.id.is_multiple_of(2) {
        json!(format!("{}services/", layer_url(base, layer)))
    } else {
        json!([{"id": "s1", "authority": "koordinates", "key": "export", "short_name": "Export", "label": "Export Service"}])
    };
    let metadata = if layer.dublin_core {
        json!({
            "iso": format!("{this_version}metadata/iso/"),
            "dc": dc_url(base, layer, version.id),
            "native": format!("{this_version}metadata/"),
        })
    } else {
        json!({"iso": null, "dc": null, "native": null})
    };
    let title_key = if v1 { "name" } else { "title" };
    let mut body = json!({
        "id": layer.id,
        "url": layer_url(base, layer),
        "type": if layer.kind == Kind::Table { "table" } else { "layer" },
        title_key: layer.title,
        "first_published_at": entry.versions[0].created_at,
        "published_at": version.created_at,
        "description": layer.description,
        "description_html": format!("<p>{}</p>", quick_xml::escape::escape(layer.description.as_str())),
        "group": {"id": 1, "url": format!("{base}groups/1/"), "name": "koop testkit", "country": "NZ"},
        "publisher": publisher,
        "services": services,
        "data": data,
        "url_html": format!("{html_origin}/{}/{}-{}/", if layer.kind == Kind::Table { "table" } else { "layer" }, layer.id, slug(&layer.title)),
        "published_version": version_url(base, layer, current.id),
        "latest_version": version_url(base, layer, current.id),
        "this_version": this_version,
        "kind": layer.kind.as_str(),
        "categories": [{"name": "Test data", "slug": "test-data"}],
        "tags": layer.tags,
        "collected_at": null,
        "created_at": entry.versions[0].created_at,
        "license": {
            "id": 1,
            "title": "Public Domain",
            "type": "public-domain",
            "jurisdiction": "",
            "version": "",
            "url": format!("{base}licenses/1/"),
            "url_html": format!("{html_origin}/license/public-domain/"),
        },
        "metadata": metadata,
        "elevation_field": "",
        "styles": if layer.id.is_multiple_of(2) { json!(format!("{}styles/", layer_url(base, layer))) } else { json!([]) },
        "attachments": [],
        "public_access": "download",
    });
    if !v1 {
        body["version"] = version_summary(base, layer, version);
    }
    body
}

/// `data.change_summary` of a version with new data: what it changed against the previous data
/// revision (an edit's counts, or every feature for new data), with no schema change.
fn change_summary(entry: &LayerEntry, version: &VersionRecord) -> Option<Value> {
    let crate::catalog::LayerContent::Generated(content) = &entry.layer.content else {
        return None;
    };
    if version.revision == 0 {
        return None;
    }
    let previous = crate::edits::feature_count(*content, &entry.history, version.revision - 1)?;
    let (inserted, updated, deleted) = match entry.history.get(version.revision as usize) {
        Some(Some(per_mille)) => crate::edits::edit_sizes(previous, *per_mille),
        _ => (0, previous, 0),
    };
    Some(json!({
        "inserted": inserted,
        "updated": updated,
        "deleted": deleted,
        "schema_changes": {
            "added": [], "changed": [], "removed": [],
            "srid_changed": false, "geometry_type_changed": false, "primary_keys_changed": false,
        },
    }))
}

/// A version summary (`layers/{id}/versions/` items, the `version` object).
pub(crate) fn version_summary(base: &str, layer: &TestLayer, version: &VersionRecord) -> Value {
    json!({
        "id": version.id,
        "url": version_url(base, layer, version.id),
        "status": "ok",
        "created_at": version.created_at,
        "reference": "",
        "progress": 1.0,
        "data_import": version.data_import,
    })
}

/// A catalog entry (`GET data/`): the published version of a layer or table, with when it was
/// last updated (RFC 3339).
pub(crate) fn catalog_item(base: &str, entry: &LayerEntry) -> Value {
    let current = entry.current();
    let updated = jiff::Timestamp::try_from(current.updated)
        .map(|time| time.to_string())
        .unwrap_or_default();
    json!({
        "id": entry.layer.id,
        "url": layer_url(base, &entry.layer),
        "type": if entry.layer.kind == Kind::Table { "table" } else { "layer" },
        "title": entry.layer.title,
        "first_published_at": entry.versions[0].created_at,
        "published_at": current.created_at,
        "updated_at": updated,
    })
}

/// An export body (`exports/{id}/`, the create response, list items).
pub(crate) fn export_body(
    base: &str,
    record: &ExportRecord,
    now: Instant,
    size: Option<u64>,
) -> Value {
    let (state, progress) = export_state(record, now);
    let download_url =
        (state == "complete").then(|| format!("{base}exports/{}/download/", record.id));
    json!({
        "id": record.id,
        "name": record.name,
        "created_at": record.created_at,
        "created_via": "API",
        "state": state,
        "url": format!("{base}exports/{}/", record.id),
        "download_url": download_url,
        "extent": record.extent,
        "delivery": {"method": "download"},
        "formats": record.formats,
        "items": [{"item": record.item_url}],
        // v1.x sends the CRS as an object (the original Python package requires one).
        "crs": record
            .crs
            .strip_prefix("EPSG:")
            .and_then(|code| code.parse::<u32>().ok())
            .map_or_else(|| json!(record.crs), crs_object),
        "options": {},
        "user": {
            "id": 1,
            "url": format!("{base}users/1/"),
            "first_name": "koop",
            "last_name": "testkit",
            "country": "NZ",
        },
        "size_estimate_zipped": size.unwrap_or(1_000_000),
        "size_estimate_unzipped": size.unwrap_or(1_000_000),
        "size_complete_zipped": if state == "complete" { size } else { None },
        "size_complete_unzipped": if state == "complete" { size } else { None },
        "is_cropped": !record.extent.is_null(),
        "invoice": null,
        "progress": progress,
    })
}

/// The Dublin Core document of a layer version (OAI_DC), with values that need escaping.
pub(crate) fn dublin_core(
    html_origin: &str,
    entry: &LayerEntry,
    version: &VersionRecord,
) -> String {
    let layer = &entry.layer;
    let escape = |text: &str| quick_xml::escape::escape(text).into_owned();
    let mut elements = vec![
        ("title", None, layer.title.clone()),
        ("title", Some("mi"), format!("{} (reo Māori)", layer.title)),
        (
            "creator",
            None,
            "koop testkit & Toitū Te Whenua <test>".to_owned(),
        ),
    ];
    for tag in &layer.tags {
        elements.push(("subject", None, tag.clone()));
    }
    elements.extend([
        ("description", None, layer.description.clone()),
        (
            "publisher",
            None,
            "koop testkit — \"Toitū Te Whenua\" test data".to_owned(),
        ),
        ("date", None, version.created_at.clone()),
        ("type", None, "Dataset".to_owned()),
        (
            "format",
            None,
            match layer.kind {
                Kind::Raster | Kind::Grid => "GeoTIFF",
                _ => "GeoPackage",
            }
            .to_owned(),
        ),
        (
            "identifier",
            None,
            format!("{html_origin}/layer/{}-{}/", layer.id, slug(&layer.title)),
        ),
        ("language", None, "en".to_owned()),
        ("coverage", None, "Aotearoa New Zealand ✓".to_owned()),
        (
            "rights",
            None,
            "Public Domain — no rights reserved 🗺".to_owned(),
        ),
    ]);
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<oai_dc:dc xmlns:oai_dc=\"http://www.openarchives.org/OAI/2.0/oai_dc/\" xmlns:dc=\"http://purl.org/dc/elements/1.1/\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:schemaLocation=\"http://www.openarchives.org/OAI/2.0/oai_dc/ http://www.openarchives.org/OAI/2.0/oai_dc.xsd\">\n",
    );
    for (name, lang, value) in elements {
        let lang = lang
            .map(|code| format!(" xml:lang=\"{code}\""))
            .unwrap_or_default();
        let _ = writeln!(xml, "  <dc:{name}{lang}>{}</dc:{name}>", escape(&value));
    }
    xml.push_str("</oai_dc:dc>\n");
    xml
}
