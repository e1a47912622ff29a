//! The HTTP routes of the fake Koordinates API and of the "object storage" listener.

use std::io::SeekFrom;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State as StateExtractor};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use crate::artifacts::{Artifact, slug};
use crate::bodies;
use crate::catalog::Kind;
use crate::faults::{CatalogFilter, ExportOutcome};
use crate::state::{
    BumpKind, ExportRecord, Listener, RecordedRequest, State, bump, export_state, exportable,
    layer_id_from_item, now_timestamp,
};

type Shared = Arc<State>;

/// Characters escaped in `filename*=UTF-8''…`: all but RFC 5987's `attr-char`.
const ATTR_CHAR_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');
type ApiPath<T> = Path<(String, T)>;

pub(crate) fn api_router(state: Shared) -> Router {
    let api = Router::new()
        .route("/services/api/{version}/layers/{id}/", get(layer_details))
        .route("/services/api/{version}/tables/{id}/", get(table_details))
        .route("/services/api/{version}/data/", get(catalog))
        .route(
            "/services/api/{version}/layers/{id}/versions/",
            get(version_list),
        )
        .route(
            "/services/api/{version}/tables/{id}/versions/",
            get(version_list),
        )
        .route(
            "/services/api/{version}/layers/{id}/versions/{vid}/",
            get(version_details),
        )
        .route(
            "/services/api/{version}/tables/{id}/versions/{vid}/",
            get(version_details),
        )
        .route(
            "/services/api/{version}/layers/{id}/versions/{vid}/metadata/dc/",
            get(dublin_core),
        )
        .route(
            "/services/api/{version}/tables/{id}/versions/{vid}/metadata/dc/",
            get(dublin_core),
        )
        .route(
            "/services/api/{version}/exports/validate/",
            post(validate_export),
        )
        .route(
            "/services/api/{version}/exports/",
            post(create_export).get(list_exports),
        )
        .route(
            "/services/api/{version}/exports/{id}/",
            get(export_details).delete(cancel_export),
        )
        .route(
            "/services/api/{version}/exports/{id}/download/",
            get(download),
        )
        .route("/services/wfs", get(changeset_service))
        .route("/services/wfs/{*type_name}", get(changeset_service))
        .fallback(|| async { not_found() })
        .layer(middleware::from_fn_with_state(state.clone(), api_guard));
    Router::new()
        .merge(api)
        .route("/_testkit/layers/{id}/bump/", post(bump_layer))
        .route("/_testkit/counters/", get(counters))
        // The original Python package "authenticates" its session with this page first.
        .route("/login/", get(login_page))
        .with_state(state)
}

pub(crate) fn storage_router(state: Shared) -> Router {
    Router::new()
        .route("/bucket/{export}/{file}", get(storage_download))
        .with_state(state)
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn not_found() -> Response {
    json_response(StatusCode::NOT_FOUND, &json!({"detail": "Not found."}))
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

fn record(state: &State, listener: Listener, request: &Request) {
    state.record(RecordedRequest {
        listener,
        method: request.method().to_string(),
        path: request
            .uri()
            .path_and_query()
            .map_or_else(String::new, ToString::to_string),
        authorization: header_text(request.headers(), header::AUTHORIZATION),
        range: header_text(request.headers(), header::RANGE),
        at: state.started.elapsed(),
    });
}

/// Records the request, applies injected request faults, then checks the API key.
async fn api_guard(
    StateExtractor(state): StateExtractor<Shared>,
    request: Request,
    next: Next,
) -> Response {
    record(&state, Listener::Api, &request);
    bump(&state.counters.api_requests);
    {
        let mut mutable = state.lock();
        mutable.requests_since_faults = mutable.requests_since_faults.saturating_add(1);
        let seen = mutable.requests_since_faults;
        if let Some(limit) = mutable.request_faults.rate_limit.as_mut()
            && limit.count > 0
        {
            if limit.count != u32::MAX {
                limit.count -= 1;
            }
            let retry_after = limit.retry_after_secs;
            drop(mutable);
            bump(&state.counters.rate_limited);
            let mut response = json_response(
                StatusCode::TOO_MANY_REQUESTS,
                &json!({"detail": format!("Request was throttled. Expected available in {retry_after} seconds.")}),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            return response;
        }
        if let Some(fault) = mutable.request_faults.server_error
            && seen >= fault.on_request
            && seen < fault.on_request.saturating_add(fault.times)
        {
            drop(mutable);
            bump(&state.counters.server_errors);
            let status =
                StatusCode::from_u16(fault.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return json_response(
                status,
                &json!({"error": "injected server error (koop-testkit)"}),
            );
        }
    }
    let refused = state.lock().request_faults.refuse_key_for_exports
        && request.uri().path().contains("/exports/");
    if refused {
        bump(&state.counters.unauthorized);
        return json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"detail": "Invalid API key."}),
        );
    }
    let expected = format!("key {}", state.api_key);
    match request.headers().get(header::AUTHORIZATION) {
        Some(value) if value.as_bytes() == expected.as_bytes() => next.run(request).await,
        Some(_) => {
            bump(&state.counters.unauthorized);
            json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"detail": "Invalid API key."}),
            )
        }
        None => {
            bump(&state.counters.unauthorized);
            json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"detail": "Authentication credentials were not provided."}),
            )
        }
    }
}

fn details_of(state: &State, id: &str, tables: bool, version: Option<&str>) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return not_found();
    };
    let mutable = state.lock();
    let Some(entry) = mutable
        .layers
        .get(&id)
        .filter(|entry| (entry.layer.kind == Kind::Table) == tables)
    else {
        return not_found();
    };
    let version = match version {
        None => entry.current(),
        Some(vid) => match entry
            .versions
            .iter()
            .find(|record| Some(record.id) == vid.parse().ok())
        {
            Some(version) => version,
            None => return not_found(),
        },
    };
    let mut body = bodies::layer_details(&state.api_base(), &state.api_origin, entry, version);
    if let Some(faults) = mutable.changeset_faults.get(&id) {
        if faults.report_schema_change
            && let Some(changes) = body.pointer_mut("/data/change_summary/schema_changes")
        {
            changes["added"] = json!([{"name": "added_by_koop_testkit", "type": "string"}]);
        }
        if faults.hide_primary_key {
            body["data"]["primary_key_fields"] = json!([]);
        }
    }
    json_response(StatusCode::OK, &body)
}

async fn layer_details(
    StateExtractor(state): StateExtractor<Shared>,
    Path((_, id)): ApiPath<String>,
) -> Response {
    bump(&state.counters.layer_details);
    details_of(&state, &id, false, None)
}

async fn table_details(
    StateExtractor(state): StateExtractor<Shared>,
    Path((_, id)): ApiPath<String>,
) -> Response {
    bump(&state.counters.layer_details);
    details_of(&state, &id, true, None)
}

async fn version_details(
    StateExtractor(state): StateExtractor<Shared>,
    Path((_, id, vid)): Path<(String, String, String)>,
    request_path: axum::extract::OriginalUri,
) -> Response {
    bump(&state.counters.version_details);
    let tables = request_path.path().contains("/tables/");
    details_of(&state, &id, tables, Some(&vid))
}

#[derive(serde::Deserialize)]
struct PageQuery {
    page: Option<usize>,
}

/// One page of `items` with `Link: rel="page-next"` and `X-Resource-Range`.
fn paged(state: &State, items: Vec<Value>, page: usize, url: &str) -> Response {
    let total = items.len();
    let page = page.max(1);
    let start = (page - 1) * state.page_size;
    let end = (start + state.page_size).min(total);
    let slice: Vec<Value> = items
        .into_iter()
        .skip(start)
        .take(end.saturating_sub(start))
        .collect();
    let mut response = json_response(StatusCode::OK, &Value::Array(slice));
    let headers = response.headers_mut();
    if let Ok(range) = HeaderValue::from_str(&format!("{start}-{}/{total}", end.saturating_sub(1)))
    {
        headers.insert("X-Resource-Range", range);
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    if end < total
        && let Ok(link) = HeaderValue::from_str(&format!(
            "<{url}{separator}page={}>; rel=\"page-next\"",
            page + 1
        ))
    {
        headers.insert(header::LINK, link);
    }
    response
}

#[derive(serde::Deserialize)]
struct CatalogQuery {
    page: Option<usize>,
    #[serde(rename = "updated_at.after")]
    updated_after: Option<String>,
}

/// `GET data/[?updated_at.after=…]`: the published version of every layer and table, oldest
/// id first, paged; filtered by `updated_at` unless the `catalog_filter` fault says otherwise.
async fn catalog(
    StateExtractor(state): StateExtractor<Shared>,
    Query(query): Query<CatalogQuery>,
) -> Response {
    bump(&state.counters.catalog_pages);
    let base = state.api_base();
    let mode = state.lock().request_faults.catalog_filter;
    let after = match (&query.updated_after, mode) {
        (Some(_), CatalogFilter::Refused) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"updated_at.after": ["Unknown filter."]}),
            );
        }
        (Some(text), CatalogFilter::Honoured) => match text.parse::<jiff::Timestamp>() {
            Ok(after) => Some(after),
            Err(_) => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"updated_at.after": ["Enter a valid date/time."]}),
                );
            }
        },
        _ => None,
    };
    let items: Vec<Value> = {
        let mutable = state.lock();
        let mut entries: Vec<&crate::state::LayerEntry> = mutable.layers.values().collect();
        entries.sort_by_key(|entry| entry.layer.id);
        entries
            .into_iter()
            .filter(|entry| {
                let updated = jiff::Timestamp::try_from(entry.current().updated).ok();
                match (after, updated) {
                    (Some(after), Some(updated)) => updated > after,
                    _ => true,
                }
            })
            .map(|entry| bodies::catalog_item(&base, entry))
            .collect()
    };
    let url = match &query.updated_after {
        Some(text) => format!(
            "{base}data/?updated_at.after={}",
            percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC)
        ),
        None => format!("{base}data/"),
    };
    paged(&state, items, query.page.unwrap_or(1), &url)
}

async fn version_list(
    StateExtractor(state): StateExtractor<Shared>,
    Path((_, id)): ApiPath<String>,
    Query(query): Query<PageQuery>,
) -> Response {
    bump(&state.counters.version_lists);
    let Ok(id) = id.parse::<u64>() else {
        return not_found();
    };
    let base = state.api_base();
    let (items, url) = {
        let mutable = state.lock();
        let Some(entry) = mutable.layers.get(&id) else {
            return not_found();
        };
        let items: Vec<Value> = entry
            .versions
            .iter()
            .rev()
            .map(|version| bodies::version_summary(&base, &entry.layer, version))
            .collect();
        (
            items,
            format!("{}versions/", bodies::layer_url(&base, &entry.layer)),
        )
    };
    paged(&state, items, query.page.unwrap_or(1), &url)
}

async fn dublin_core(
    StateExtractor(state): StateExtractor<Shared>,
    Path((_, id, vid)): Path<(String, String, String)>,
) -> Response {
    bump(&state.counters.dc_documents);
    let (Ok(id), Ok(vid)) = (id.parse::<u64>(), vid.parse::<u64>()) else {
        return not_found();
    };
    let mutable = state.lock();
    let Some(entry) = mutable
        .layers
        .get(&id)
        .filter(|entry| entry.layer.dublin_core)
    else {
        return not_found();
    };
    let Some(version) = entry.versions.iter().find(|version| version.id == vid) else {
        return not_found();
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        bodies::dublin_core(&state.api_origin, entry, version),
    )
        .into_response()
}

/// Validates an export request body: `(validation body, the single valid layer id)`.
fn validate(state: &State, body: &Value) -> (Value, Option<u64>) {
    let base = state.api_base();
    let crs_ok = body["crs"]
        .as_str()
        .and_then(|crs| crs.strip_prefix("EPSG:"))
        .is_some_and(|code| code.parse::<u32>().is_ok());
    let items = body["items"].as_array().cloned().unwrap_or_default();
    let mutable = state.lock();
    let mut all_valid = crs_ok && !items.is_empty();
    let mut valid_layer = None;
    let results: Vec<Value> = items
        .iter()
        .map(|item| {
            let url = item["item"].as_str().unwrap_or_default();
            let mut reasons: Vec<&str> = Vec::new();
            match layer_id_from_item(url).and_then(|id| mutable.layers.get(&id)) {
                None => reasons.push("not-found"),
                Some(entry) => {
                    let mime = body["formats"][entry.layer.kind.as_str()].as_str();
                    if let Err(reason) = exportable(entry.layer.kind, mime) {
                        reasons.push(reason);
                    }
                    if !crs_ok {
                        reasons.push("invalid-crs");
                    }
                    if reasons.is_empty() {
                        valid_layer = Some(entry.layer.id);
                    }
                }
            }
            all_valid &= reasons.is_empty();
            json!({
                "item": url,
                "license": {"id": 1, "title": "Public Domain", "type": "public-domain", "url": format!("{base}licenses/1/")},
                "price": "0.00",
                "currency": null,
                "size_estimate_zipped": if reasons.is_empty() { 1_000_000 } else { 0 },
                "is_valid": reasons.is_empty(),
                "invalid_reasons": reasons,
            })
        })
        .collect();
    let request_reasons: Vec<&str> = if crs_ok { vec![] } else { vec!["invalid-crs"] };
    // The fields the current API sends besides the 2016 fixture's (the original Python
    // package requires them).
    let validation = json!({
        "items": results,
        "size_estimate_zipped": if all_valid { 1_000_000 } else { 0 },
        "is_valid": all_valid,
        "invalid_reasons": request_reasons,
        "suggested_crs": [],
        "suggested_crs_vertical": [],
        "name": "koop-testkit-export",
        "zip_filename": "koop-testkit-export.zip",
        "delivery": {"method": "download"},
        "courier_cost": {},
    });
    (
        validation,
        if all_valid && items.len() == 1 {
            valid_layer
        } else {
            None
        },
    )
}

fn parse_json(body: &Bytes) -> Result<Value, Box<Response>> {
    serde_json::from_slice(body).map_err(|error| {
        Box::new(json_response(
            StatusCode::BAD_REQUEST,
            &json!({"detail": format!("JSON parse error - {error}")}),
        ))
    })
}

async fn validate_export(StateExtractor(state): StateExtractor<Shared>, body: Bytes) -> Response {
    bump(&state.counters.export_validations);
    let body = match parse_json(&body) {
        Ok(body) => body,
        Err(response) => return *response,
    };
    json_response(StatusCode::OK, &validate(&state, &body).0)
}

async fn create_export(StateExtractor(state): StateExtractor<Shared>, body: Bytes) -> Response {
    let body = match parse_json(&body) {
        Ok(body) => body,
        Err(response) => return *response,
    };
    if body["items"].as_array().map_or(0, Vec::len) > 1 {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"items": ["koop-testkit exports one item at a time"]}),
        );
    }
    let (validation, layer_id) = validate(&state, &body);
    let Some(layer_id) = layer_id else {
        return json_response(StatusCode::BAD_REQUEST, &validation);
    };
    let faults = state.export_faults(layer_id);
    let base = state.api_base();
    let now = Instant::now();
    let record = {
        let mut mutable = state.lock();
        let Some(entry) = mutable.layers.get(&layer_id) else {
            return not_found();
        };
        let revision = entry.current().revision;
        let kind = entry.layer.kind;
        let format = if matches!(kind, Kind::Raster | Kind::Grid) {
            "GTiff"
        } else {
            "GPKG"
        };
        let mut record = ExportRecord {
            id: mutable.next_export_id,
            layer_id,
            revision,
            created: now,
            created_at: now_timestamp(),
            latency: entry.layer.export_latency,
            outcome: faults.outcome,
            cancelled: false,
            crs: body["crs"].as_str().unwrap_or_default().to_owned(),
            formats: body["formats"].clone(),
            extent: body["extent"].clone(),
            item_url: bodies::layer_url(&base, &entry.layer),
            // Koordinates slugifies a requested name behind `kx-`; without one it names the
            // export after the layer and format.
            name: match body["name"].as_str().filter(|name| !name.trim().is_empty()) {
                Some(name) => format!("kx-{}", slug(name)),
                None => format!("kx-{}-{format}", slug(&entry.layer.title)),
            },
            hide_progress: faults.hide_progress,
        };
        // Koordinates reuses an identical recent export: the new one is complete at once.
        let identical = state.reuse_identical_exports
            && faults.outcome == ExportOutcome::Complete
            && mutable.exports.values().any(|other| {
                other.layer_id == record.layer_id
                    && other.revision == record.revision
                    && other.crs == record.crs
                    && other.formats == record.formats
                    && other.extent == record.extent
                    && export_state(other, now).0 == "complete"
            });
        if identical {
            record.latency = Duration::ZERO;
        }
        mutable.next_export_id += 1;
        *mutable.exports_per_layer.entry(layer_id).or_default() += 1;
        mutable.exports.insert(record.id, record.clone());
        record
    };
    bump(&state.counters.exports_created);
    let location = format!("{base}exports/{}/", record.id);
    let mut response = if faults.create_with_location_only {
        (StatusCode::CREATED, "").into_response()
    } else {
        json_response(
            StatusCode::CREATED,
            &bodies::export_body(&base, &record, now, None),
        )
    };
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn find_export(state: &State, id: &str) -> Option<ExportRecord> {
    let id = id.parse::<u64>().ok()?;
    state.lock().exports.get(&id).cloned()
}

async fn export_details(
    StateExtractor(state): StateExtractor<Shared>,
    Path((_, id)): ApiPath<String>,
) -> Response {
    bump(&state.counters.export_polls);
    match find_export(&state, &id) {
        Some(record) => json_response(
            StatusCode::OK,
            &bodies::export_body(&state.api_base(), &record, Instant::now(), None),
        ),
        None => not_found(),
    }
}

async fn cancel_export(
    StateExtractor(state): StateExtractor<Shared>,
    Path((_, id)): ApiPath<String>,
) -> Response {
    bump(&state.counters.export_cancels);
    let Ok(id) = id.parse::<u64>() else {
        return not_found();
    };
    let now = Instant::now();
    let record = {
        let mut mutable = state.lock();
        let Some(record) = mutable.exports.get_mut(&id) else {
            return not_found();
        };
        if export_state(record, now).0 != "processing" {
            return json_response(StatusCode::CONFLICT, &json!({"errors": ["Can't cancel"]}));
        }
        record.cancelled = true;
        record.clone()
    };
    json_response(
        StatusCode::ACCEPTED,
        &bodies::export_body(&state.api_base(), &record, now, None),
    )
}

async fn list_exports(
    StateExtractor(state): StateExtractor<Shared>,
    Query(query): Query<PageQuery>,
) -> Response {
    bump(&state.counters.export_lists);
    let base = state.api_base();
    let now = Instant::now();
    let items: Vec<Value> = state
        .lock()
        .exports
        .values()
        .rev()
        .map(|record| bodies::export_body(&base, record, now, None))
        .collect();
    paged(
        &state,
        items,
        query.page.unwrap_or(1),
        &format!("{base}exports/"),
    )
}

/// The drop fault of a layer's next download, used up by this call.
fn take_drop(state: &State, layer_id: u64) -> Option<u64> {
    let mut mutable = state.lock();
    let default = mutable.default_export_faults.clone();
    let faults = mutable.export_faults.entry(layer_id).or_insert(default);
    let fault = faults.drop_download.as_mut()?;
    if fault.times == 0 {
        return None;
    }
    fault.times -= 1;
    Some(fault.after_bytes)
}

async fn download(
    StateExtractor(state): StateExtractor<Shared>,
    Path((_, id)): ApiPath<String>,
    headers: HeaderMap,
) -> Response {
    bump(&state.counters.downloads);
    let range = header_text(&headers, header::RANGE);
    if range.is_some() {
        bump(&state.counters.range_requests);
    }
    let Some(record) = find_export(&state, &id) else {
        return not_found();
    };
    if export_state(&record, Instant::now()).0 != "complete" {
        return json_response(
            StatusCode::CONFLICT,
            &json!({"error": format!("export {} is not complete", record.id)}),
        );
    }
    let faults = state.export_faults(record.layer_id);
    if faults.redirect_download {
        let file =
            utf8_percent_encode(&format!("{}.zip", record.name), NON_ALPHANUMERIC).to_string();
        let location = format!(
            "{}/bucket/{}/{file}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=0123abcd",
            state.storage_origin, record.id
        );
        let mut response = StatusCode::FOUND.into_response();
        if let Ok(value) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, value);
        }
        return response;
    }
    serve_export(&state, &record, range.as_deref()).await
}

async fn storage_download(
    StateExtractor(state): StateExtractor<Shared>,
    Path((export, _file)): Path<(String, String)>,
    request: Request,
) -> Response {
    record(&state, Listener::Storage, &request);
    bump(&state.counters.storage_downloads);
    let range = header_text(request.headers(), header::RANGE);
    if range.is_some() {
        bump(&state.counters.range_requests);
    }
    let Some(record) = find_export(&state, &export) else {
        return (StatusCode::NOT_FOUND, "NoSuchKey").into_response();
    };
    serve_export(&state, &record, range.as_deref()).await
}

async fn serve_export(state: &State, record: &ExportRecord, range: Option<&str>) -> Response {
    let faults = state.export_faults(record.layer_id);
    let (layer, history) = {
        let mutable = state.lock();
        match mutable.layers.get(&record.layer_id) {
            Some(entry) => (entry.layer.clone(), entry.history.clone()),
            None => return not_found(),
        }
    };
    let artifact = match state
        .artifacts
        .zip(&layer, &history, record.revision, faults.zip)
        .await
    {
        Ok(artifact) => artifact,
        Err(error) => {
            return json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"error": format!("koop-testkit could not build the export: {error}")}),
            );
        }
    };
    let drop_after = take_drop(state, record.layer_id);
    serve_file(
        &artifact,
        range,
        drop_after,
        faults.throttle_download,
        &format!("{}.zip", record.name),
    )
    .await
}

/// Parses `bytes=start-` or `bytes=start-end` against `len`: `None` without a usable header,
/// `Some(Err(()))` when unsatisfiable.
fn parse_range(range: Option<&str>, len: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = range?.trim().strip_prefix("bytes=")?;
    let (start, end) = spec.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end = if end.trim().is_empty() {
        len.saturating_sub(1)
    } else {
        end.trim().parse::<u64>().ok()?.min(len.saturating_sub(1))
    };
    if start >= len || end < start {
        return Some(Err(()));
    }
    Some(Ok((start, end)))
}

async fn serve_file(
    artifact: &Artifact,
    range: Option<&str>,
    drop_after: Option<u64>,
    throttle: Option<u64>,
    filename: &str,
) -> Response {
    let len = artifact.served_len;
    let (start, end, partial) = match parse_range(range, len) {
        None => (0, len.saturating_sub(1), false),
        Some(Ok((start, end))) => (start, end, true),
        Some(Err(())) => {
            let mut response = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{len}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return response;
        }
    };
    let body_len = if len == 0 { 0 } else { end - start + 1 };
    let Ok(mut file) = tokio::fs::File::open(&artifact.path).await else {
        return not_found();
    };
    if file.seek(SeekFrom::Start(start)).await.is_err() {
        return not_found();
    }
    let chunk = if throttle.is_some() {
        64 * 1024
    } else {
        256 * 1024
    };
    let stream = ReaderStream::with_capacity(file.take(body_len), chunk);
    let stream: futures::stream::BoxStream<'static, std::io::Result<Bytes>> = match throttle {
        Some(bytes_per_second) => {
            // One chunk, then the time it takes at this rate.
            let pause = Duration::from_secs_f64(chunk as f64 / bytes_per_second.max(1) as f64);
            Box::pin(stream.then(move |item| async move {
                tokio::time::sleep(pause).await;
                item
            }))
        }
        None => Box::pin(stream),
    };
    let body = match drop_after {
        Some(limit) => Body::from_stream(cut_after(stream, limit)),
        None => Body::from_stream(stream),
    };
    let disposition = format!(
        "attachment; filename*=UTF-8''{}",
        utf8_percent_encode(filename, ATTR_CHAR_ESCAPES)
    );
    let mut response = Response::new(body);
    *response.status_mut() = if partial {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zip"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body_len));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    if partial && let Ok(value) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
        headers.insert(header::CONTENT_RANGE, value);
    }
    response
}

/// Passes `limit` bytes of `stream` on, then fails, which makes the server drop the connection.
fn cut_after<S>(stream: S, limit: u64) -> impl Stream<Item = std::io::Result<Bytes>> + Send
where
    S: Stream<Item = std::io::Result<Bytes>> + Send + Unpin + 'static,
{
    futures::stream::unfold(
        (stream, limit, false),
        |(mut stream, remaining, failed)| async move {
            if failed {
                return None;
            }
            if remaining == 0 {
                // Let the bytes already passed on reach the client before the connection drops.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let error = std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "koop-testkit dropped the connection",
                );
                return Some((Err(error), (stream, 0, true)));
            }
            match stream.next().await {
                Some(Ok(mut chunk)) => {
                    let keep = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(chunk.len());
                    chunk.truncate(keep);
                    Some((Ok(chunk), (stream, remaining - keep as u64, false)))
                }
                Some(Err(error)) => Some((Err(error), (stream, remaining, true))),
                None => None,
            }
        },
    )
}

#[derive(serde::Deserialize)]
struct BumpQuery {
    #[serde(default)]
    metadata_only: bool,
    /// An edit of this many thousandths of the features ([`BumpKind::Edit`]).
    #[serde(default)]
    edit_per_mille: Option<u32>,
}

/// `POST /_testkit/layers/{id}/bump/[?metadata_only=true | ?edit_per_mille=N]`: a new version, for manual use.
/// The request counters, as JSON: what out-of-process tests (pytest) read.
async fn counters(StateExtractor(state): StateExtractor<Shared>) -> Response {
    match serde_json::to_value(state.counters.snapshot()) {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(_) => not_found(),
    }
}

/// The site's sign-in page, as Koordinates answers it to anyone (200, HTML).
async fn login_page() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<!doctype html><title>Sign in</title><form method=post></form>",
    )
        .into_response()
}

async fn bump_layer(
    StateExtractor(state): StateExtractor<Shared>,
    Path(id): Path<String>,
    Query(query): Query<BumpQuery>,
) -> Response {
    let kind = if query.metadata_only {
        BumpKind::MetadataOnly
    } else if let Some(per_mille) = query.edit_per_mille {
        BumpKind::Edit { per_mille }
    } else {
        BumpKind::Data
    };
    match id
        .parse::<u64>()
        .ok()
        .and_then(|id| state.bump_version(id, kind))
    {
        Some(version) => json_response(StatusCode::OK, &json!({"version": version})),
        None => not_found(),
    }
}

/// A WFS exception report (OGC 09-025r2 §7.5, OWS 1.1 `ExceptionReport`).
fn wfs_exception(code: &str, locator: &str, text: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ows:ExceptionReport xmlns:ows=\"http://www.opengis.net/ows/1.1\" version=\"2.0.0\"><ows:Exception exceptionCode=\"{code}\" locator=\"{locator}\"><ows:ExceptionText>{}</ows:ExceptionText></ows:Exception></ows:ExceptionReport>",
        quick_xml::escape::escape(text)
    );
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "application/xml")],
        body,
    )
        .into_response()
}

/// The content revision a layer had at `time`: that of its newest version created at or before
/// it; `None` before its first version.
fn revision_at(entry: &crate::state::LayerEntry, time: jiff::Timestamp) -> Option<u32> {
    entry
        .versions
        .iter()
        .rfind(|version| {
            version
                .created_at
                .parse::<jiff::Timestamp>()
                .is_ok_and(|created| created <= time)
        })
        .map(|version| version.revision)
}

#[allow(
    clippy::too_many_lines,
    reason = "one handler reading the WFS parameters in the order the service checks them"
)]
/// `GET /services/wfs[/…]?request=GetFeature&typeNames=layer-{id}-changeset&viewparams=from:…;to:…`:
/// Koordinates' WFS changeset service, GeoJSON output, paged with `startIndex`/`count` (capped),
/// sorted by `id`.
async fn changeset_service(
    StateExtractor(state): StateExtractor<Shared>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let param = |name: &str| {
        query
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    };
    if !param("request").is_some_and(|request| request.eq_ignore_ascii_case("GetFeature")) {
        return wfs_exception(
            "OperationNotSupported",
            "request",
            "koop-testkit answers GetFeature only",
        );
    }
    let Some(type_name) = param("typeNames").or_else(|| param("typeName")) else {
        return wfs_exception(
            "MissingParameterValue",
            "typeNames",
            "typeNames is required",
        );
    };
    let layer_id = type_name
        .strip_suffix("-changeset")
        .and_then(|rest| {
            rest.strip_prefix("layer-")
                .or_else(|| rest.strip_prefix("table-"))
        })
        .and_then(|id| id.parse::<u64>().ok());
    let Some(layer_id) = layer_id else {
        return wfs_exception(
            "InvalidParameterValue",
            "typeNames",
            &format!("Feature type {type_name} unknown"),
        );
    };
    if !param("outputFormat").is_some_and(|format| {
        matches!(
            format.to_ascii_lowercase().as_str(),
            "json" | "application/json" | "geojson"
        )
    }) {
        return wfs_exception(
            "InvalidParameterValue",
            "outputFormat",
            "koop-testkit writes GeoJSON only (outputFormat=json)",
        );
    }
    if let Some(srs) = param("srsName")
        && !matches!(
            srs.to_ascii_uppercase().as_str(),
            "EPSG:2193" | "URN:OGC:DEF:CRS:EPSG::2193"
        )
    {
        return wfs_exception(
            "InvalidParameterValue",
            "srsName",
            &format!("koop-testkit serves changesets in EPSG:2193 only, not {srs}"),
        );
    }
    let times = param("viewparams").and_then(|view| {
        let mut from = None;
        let mut to = None;
        for part in view.split(';') {
            if let Some(time) = part.strip_prefix("from:") {
                from = time.parse::<jiff::Timestamp>().ok();
            } else if let Some(time) = part.strip_prefix("to:") {
                to = time.parse::<jiff::Timestamp>().ok();
            }
        }
        Some((from?, to?))
    });
    let Some((from, to)) = times else {
        return wfs_exception(
            "InvalidParameterValue",
            "viewparams",
            "viewparams=from:{time};to:{time} is required, with ISO 8601 times",
        );
    };
    let start: usize = param("startIndex")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let (content, history, revisions, faults) = {
        let mutable = state.lock();
        let Some(entry) = mutable
            .layers
            .get(&layer_id)
            .filter(|entry| entry.layer.changesets)
        else {
            return wfs_exception(
                "InvalidParameterValue",
                "typeNames",
                &format!("Feature type {type_name} unknown"),
            );
        };
        let crate::catalog::LayerContent::Generated(content) = entry.layer.content else {
            return wfs_exception(
                "InvalidParameterValue",
                "typeNames",
                &format!("Feature type {type_name} unknown"),
            );
        };
        let faults = mutable
            .changeset_faults
            .get(&layer_id)
            .cloned()
            .unwrap_or_default();
        (
            content,
            entry.history.clone(),
            (revision_at(entry, from), revision_at(entry, to)),
            faults,
        )
    };
    if let Some(delay) = faults.page_delay {
        tokio::time::sleep(delay).await;
    }
    let cap = faults
        .page_cap
        .unwrap_or(crate::faults::DEFAULT_CHANGESET_PAGE_CAP)
        .max(1);
    let count: usize = param("count")
        .or_else(|| param("maxFeatures"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(cap)
        .min(cap);
    if start > 0 && faults.server_error_pages > 0 {
        let mut mutable = state.lock();
        let served = mutable.changeset_errors_served.entry(layer_id).or_default();
        if *served < faults.server_error_pages {
            *served += 1;
            drop(mutable);
            bump(&state.counters.server_errors);
            return json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"error": "injected changeset failure (koop-testkit)"}),
            );
        }
    }
    let (Some(to_revision), from_revision) = (revisions.1, revisions.0) else {
        return wfs_exception(
            "InvalidParameterValue",
            "viewparams",
            "the layer had no version at the `to` time",
        );
    };
    let key = (layer_id, from_revision, to_revision);
    let cached = state.lock().changesets.get(&key).cloned();
    let features = if let Some(features) = cached {
        features
    } else {
        {
            let type_name = type_name.to_owned();
            let computed = tokio::task::spawn_blocking(move || {
                let empty = match crate::edits::rows(content, layer_id, &history, to_revision) {
                    Some(crate::edits::Rows::Points(_)) => crate::edits::Rows::Points(Vec::new()),
                    _ => crate::edits::Rows::Table(Vec::new()),
                };
                let old = from_revision
                    .and_then(|revision| crate::edits::rows(content, layer_id, &history, revision))
                    .unwrap_or(empty);
                let new = crate::edits::rows(content, layer_id, &history, to_revision);
                new.map(|new| crate::edits::changeset(&old, &new, &type_name))
                    .unwrap_or_default()
            })
            .await
            .unwrap_or_default();
            let computed = Arc::new(computed);
            state.lock().changesets.insert(key, computed.clone());
            computed
        }
    };
    let skipped = if faults.leave_out_insert {
        features
            .iter()
            .position(|feature| feature["properties"]["__change__"] == "INSERT")
    } else {
        None
    };
    let total = features.len() - usize::from(skipped.is_some());
    let page: Vec<&Value> = features
        .iter()
        .enumerate()
        .filter(|(index, _)| Some(*index) != skipped)
        .map(|(_, feature)| feature)
        .skip(start)
        .take(count)
        .collect();
    let body = json!({
        "type": "FeatureCollection",
        "features": page,
        "totalFeatures": total,
        "numberMatched": total,
        "numberReturned": page.len(),
        "timeStamp": now_timestamp(),
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::2193"}},
    })
    .to_string();
    bump(&state.counters.changeset_pages);
    state
        .counters
        .changeset_bytes
        .fetch_add(body.len() as u64, std::sync::atomic::Ordering::SeqCst);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}
