//! The pages `koop serve` shows a person: `GET /` lists the layers it serves with the URLs and
//! command lines to use them, and `GET /koordinates/{domain}/{layer}/map` previews a layer on a
//! map. Leaflet 1.9.4 is vendored (`assets/leaflet`, BSD-2-Clause, its licence beside it) and
//! served from `/assets/leaflet/`: no CDN, so the pages work offline; the OpenStreetMap basemap
//! is added only when the browser is online (and the page is not asked `?basemap=off`), with its
//! attribution.
//!
//! Everything shown is escaped (maud): titles come from the Koordinates site.

use std::collections::BTreeMap;
use std::path::Path;

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use koop::{Cache, Domain};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::progress::human_bytes;

/// What the pages know: the cache and the layers `koop serve` was told to serve.
#[derive(Clone)]
pub(crate) struct Site {
    /// The cache, opened once when the server starts (`None` when it cannot be: the page then
    /// lists the listed layers alone).
    pub(crate) cache: Option<Cache>,
    /// Domains served.
    pub(crate) domains: Vec<Domain>,
    /// Layers listed with `--layers`, fetched on demand.
    pub(crate) listed: Vec<(Domain, u64)>,
    /// Feature counts already read, by GeoPackage: an entry never changes, and a page of
    /// hundreds of layers must not open hundreds of files for every visitor.
    pub(crate) counts: std::sync::Arc<
        std::sync::Mutex<std::collections::HashMap<std::path::PathBuf, Option<u64>>>,
    >,
}

/// One layer as the landing page lists it.
struct Row {
    domain: String,
    layer_id: u64,
    title: String,
    kind: String,
    version: Option<u64>,
    features: Option<u64>,
    crs: Option<String>,
    size: Option<u64>,
}

/// The number of features of a cached GeoPackage: GDAL's `gpkg_ogr_contents` when it is
/// there, else a count of the first features table (the rows of a table).
fn feature_count(path: &Path) -> Option<u64> {
    let connection =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()?;
    let recorded: Option<i64> = connection
        .query_row(
            "SELECT feature_count FROM gpkg_ogr_contents WHERE feature_count IS NOT NULL LIMIT 1",
            [],
            |row| row.get(0),
        )
        .ok();
    if let Some(count) = recorded {
        return u64::try_from(count).ok();
    }
    let table: String = connection
        .query_row(
            "SELECT table_name FROM gpkg_contents WHERE data_type IN ('features', 'attributes') LIMIT 1",
            [],
            |row| row.get(0),
        )
        .ok()?;
    let quoted = format!("\"{}\"", table.replace('"', "\"\""));
    let count: i64 = connection
        .query_row(&format!("SELECT count(*) FROM {quoted}"), [], |row| {
            row.get(0)
        })
        .ok()?;
    u64::try_from(count).ok()
}

impl Site {
    /// The routes: `/`, the map pages and Leaflet.
    pub(crate) fn router(self) -> axum::Router {
        axum::Router::new()
            .route("/", get(landing))
            .route("/koordinates/{host}/{id}/map", get(map))
            .route("/assets/leaflet/{*file}", get(asset))
            .with_state(self)
    }

    /// The feature count of a cached GeoPackage, read once.
    fn count(&self, file: std::path::PathBuf) -> Option<u64> {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = counts.get(&file) {
            return *count;
        }
        let count = feature_count(&file);
        counts.insert(file, count);
        count
    }

    /// The newest cached entry of each layer, then the listed layers not cached.
    fn rows(&self) -> Vec<Row> {
        let mut newest: BTreeMap<(String, u64), Row> = BTreeMap::new();
        let entries = self
            .cache
            .as_ref()
            .and_then(|cache| cache.list().ok())
            .unwrap_or_default();
        for entry in entries {
            let manifest = &entry.manifest;
            let key = (
                manifest.key.domain.as_str().to_owned(),
                manifest.key.layer_id,
            );
            if !self.domains.iter().any(|domain| domain.as_str() == key.0) {
                continue;
            }
            if newest
                .get(&key)
                .is_some_and(|row| row.version >= Some(manifest.key.version_id))
            {
                continue;
            }
            // The file to open; a GeoPackage has features to count.
            let file = entry
                .path
                .extension()
                .is_some_and(|ext| ext.eq_ignore_ascii_case("gpkg"))
                .then(|| entry.path.clone());
            newest.insert(
                key.clone(),
                Row {
                    domain: key.0,
                    layer_id: key.1,
                    title: manifest.title.clone(),
                    kind: manifest.kind.clone(),
                    version: Some(manifest.key.version_id),
                    features: file.and_then(|file| self.count(file)),
                    crs: Some(manifest.key.crs.to_string()),
                    size: Some(manifest.size),
                },
            );
        }
        for (domain, layer_id) in &self.listed {
            newest
                .entry((domain.as_str().to_owned(), *layer_id))
                .or_insert_with(|| Row {
                    domain: domain.as_str().to_owned(),
                    layer_id: *layer_id,
                    title: String::new(),
                    kind: String::new(),
                    version: None,
                    features: None,
                    crs: None,
                    size: None,
                });
        }
        newest.into_values().collect()
    }
}

/// `http://host:port` of the request (from `Host`; loopback when it has none).
fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .filter(|host| {
            host.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        })
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

/// A page; `layer` becomes `<body data-layer>`, the FeatureServer layer a map page draws.
fn page(title: &str, head: &Markup, layer: Option<&str>, body: &Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(STYLE)) }
                (head)
            }
            body data-layer=[layer] { (body) }
        }
    }
}

const STYLE: &str = "body{font:15px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.35em .6em;border-bottom:1px solid #ddd;vertical-align:top}\
code{font-size:13px;background:#f4f4f4;padding:.1em .3em;border-radius:3px;word-break:break-all}\
.muted{color:#777}#map{position:absolute;top:3.2em;bottom:0;left:0;right:0}header{height:2.2em}";

async fn landing(State(site): State<Site>, headers: HeaderMap) -> Response {
    let base = base_url(&headers);
    let rows = tokio::task::spawn_blocking(move || site.rows())
        .await
        .unwrap_or_default();
    let body = html! {
        h1 { "koop serve" }
        p class="muted" {
            "Layers of Koordinates sites, served as GeoJSON and as an ArcGIS FeatureServer. "
            "Add a FeatureServer URL to QGIS (ArcGIS REST Server connection), ArcGIS Pro or ArcGIS Online; "
            "give GDAL the query URL."
        }
        @if rows.is_empty() {
            p { "No layer is cached or listed: start koop serve with " code { "--layers 1234,5678" } "." }
        }
        table {
            tr { th { "layer" } th { "title" } th { "kind" } th { "version" } th { "features" } th { "CRS" } th { "cached" } th { "use it" } }
            @for row in &rows {
                @let geojson = format!("{base}/koordinates/{}/{}/geojson", row.domain, row.layer_id);
                @let featureserver = format!("{base}/koordinates/rest/services/{}/{}/FeatureServer", row.domain, row.layer_id);
                @let query = format!("{featureserver}/0/query?where=1%3D1&outFields=*&f=json");
                tr {
                    td { (row.layer_id) br; span class="muted" { (row.domain) } }
                    td { (row.title) }
                    td { (row.kind) }
                    td { @if let Some(version) = row.version { (version) } }
                    td { @if let Some(features) = row.features { (features) } }
                    td { @if let Some(crs) = &row.crs { (crs) } }
                    td {
                        @match row.size {
                            Some(bytes) => { "yes, " (human_bytes(bytes)) }
                            None => { span class="muted" { "not yet: fetched on first use" } }
                        }
                    }
                    td {
                        a href=(format!("/koordinates/{}/{}/map", row.domain, row.layer_id)) { "map" } br;
                        "GeoJSON " code { (geojson) } br;
                        "FeatureServer " code { (featureserver) } br;
                        code { "ogrinfo -ro -al -so \"ESRIJSON:" (query) "\"" } br;
                        code { "ogr2ogr -f GPKG layer-" (row.layer_id) ".gpkg \"ESRIJSON:" (query) "\"" }
                    }
                }
            }
        }
    };
    page("koop serve", &html! {}, None, &body).into_response()
}

/// The map page's script: the layer's extent from its FeatureServer description, then its
/// features as GeoJSON in pages of 2,000 (at most 20,000 drawn: a huge layer shows its extent
/// and a sample), attributes on click. Errors are shown on the page and set `data-error`.
const MAP_JS: &str = r#"
const layerUrl = document.body.dataset.layer;
const map = L.map('map', { preferCanvas: true });
map.setView([-41, 174], 5);
const params = new URLSearchParams(location.search);
if (navigator.onLine && params.get('basemap') !== 'off') {
  L.tileLayer('https://tile.openstreetmap.org/{z}/{x}/{y}.png', {
    maxZoom: 19,
    attribution: '&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> contributors'
  }).addTo(map);
}
const style = { color: '#c2185b', weight: 2, fillColor: '#e91e63', fillOpacity: 0.5, radius: 5 };
const drawn = L.geoJSON(null, {
  style: () => style,
  pointToLayer: (feature, latlng) => L.circleMarker(latlng, style),
  onEachFeature: (feature, layer) => {
    const rows = Object.entries(feature.properties || {}).map(([key, value]) => {
      const cell = (text) => { const td = document.createElement('td'); td.textContent = String(text); return td; };
      const tr = document.createElement('tr'); tr.append(cell(key), cell(value)); return tr;
    });
    const table = document.createElement('table'); table.append(...rows);
    layer.bindPopup(table);
  }
}).addTo(map);
const status = document.getElementById('status');
const fail = (error) => { status.textContent = 'error: ' + error; document.body.dataset.error = String(error); };
async function load() {
  const info = await (await fetch(layerUrl + '?f=json')).json();
  if (info.error) throw new Error(info.error.message);
  const e = info.extent;
  if (e && isFinite(e.xmin) && (e.spatialReference || {}).wkid === 4326) {
    map.fitBounds([[e.ymin, e.xmin], [e.ymax, e.xmax]]);
  }
  const page = 2000, most = 20000;
  let count = 0;
  for (let offset = 0; offset < most; offset += page) {
    const url = layerUrl + '/query?where=1%3D1&outFields=*&outSR=4326&f=geojson&resultOffset=' + offset + '&resultRecordCount=' + page;
    const answer = await (await fetch(url)).json();
    if (answer.error) throw new Error(answer.error.message);
    drawn.addData(answer);
    count += answer.features.length;
    status.textContent = count + ' features';
    if (!answer.exceededTransferLimit && !(answer.properties || {}).exceededTransferLimit) break;
    if (answer.features.length === 0) break;
  }
  if (count >= most) status.textContent = count + ' features drawn (a sample of a larger layer)';
  if (!(e && (e.spatialReference || {}).wkid === 4326) && count > 0) map.fitBounds(drawn.getBounds());
  document.body.dataset.drawn = String(count);
}
load().catch(fail);
"#;

async fn map(State(site): State<Site>, UrlPath((host, id)): UrlPath<(String, String)>) -> Response {
    let Ok(layer_id) = id.parse::<u64>() else {
        return (StatusCode::NOT_FOUND, "not a layer id").into_response();
    };
    let Some(domain) = site.domains.iter().find(|domain| domain.as_str() == host) else {
        return (
            StatusCode::NOT_FOUND,
            "this server does not serve that site",
        )
            .into_response();
    };
    let layer = format!(
        "/koordinates/rest/services/{}/{layer_id}/FeatureServer/0",
        domain.as_str()
    );
    let title = format!("layer {layer_id} of {}", domain.as_str());
    let head = html! {
        link rel="stylesheet" href="/assets/leaflet/leaflet.css";
        script src="/assets/leaflet/leaflet.js" {}
    };
    let body = html! {
        header {
            a href="/" { "koop serve" } " · " (title) " · " span id="status" class="muted" { "loading…" }
        }
        div id="map" {}
        script { (PreEscaped(MAP_JS)) }
    };
    page(&title, &head, Some(&layer), &body).into_response()
}

/// The vendored Leaflet files.
fn leaflet(file: &str) -> Option<(&'static [u8], &'static str)> {
    Some(match file {
        "leaflet.js" => (
            include_bytes!("../../assets/leaflet/leaflet.js").as_slice(),
            "text/javascript; charset=utf-8",
        ),
        "leaflet.css" => (
            include_bytes!("../../assets/leaflet/leaflet.css").as_slice(),
            "text/css; charset=utf-8",
        ),
        "LICENSE" => (
            include_bytes!("../../assets/leaflet/LICENSE").as_slice(),
            "text/plain; charset=utf-8",
        ),
        "images/layers.png" => (
            include_bytes!("../../assets/leaflet/images/layers.png").as_slice(),
            "image/png",
        ),
        "images/layers-2x.png" => (
            include_bytes!("../../assets/leaflet/images/layers-2x.png").as_slice(),
            "image/png",
        ),
        "images/marker-icon.png" => (
            include_bytes!("../../assets/leaflet/images/marker-icon.png").as_slice(),
            "image/png",
        ),
        "images/marker-icon-2x.png" => (
            include_bytes!("../../assets/leaflet/images/marker-icon-2x.png").as_slice(),
            "image/png",
        ),
        "images/marker-shadow.png" => (
            include_bytes!("../../assets/leaflet/images/marker-shadow.png").as_slice(),
            "image/png",
        ),
        _ => return None,
    })
}

async fn asset(UrlPath(file): UrlPath<String>) -> Response {
    match leaflet(&file) {
        Some((bytes, content_type)) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=86400"),
                ),
            ],
            bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}
