//! Our answers to the requests behind the reference responses, compared field by field.
//!
//! The allowed differences are the ones the FeatureServer issue chooses (and the crate
//! documentation lists): fields typed from every value (`area_km2` holds 289.9, so it is a
//! Double, not the Integer Koop guessed from the first feature), stable OBJECTID hashes, our own
//! descriptions and the layer's name, PBF offered by the service as by its layers, counts that ignore `resultRecordCount`,
//! `resultOffset` honoured alone, dates as epoch milliseconds in statistics, and error details.

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use crate::compare::{Allowed, differences};
use crate::{fixtures, get_json, sample_server};

const SERVICE: &str = "/file-geojson/rest/services/sample/FeatureServer";

/// Description texts and the layer's name are ours.
const LAYER_INFO: &[Allowed<'static>] = &[
    Allowed::Value("/name"),
    Allowed::Value("/description"),
    Allowed::Value("/supportedPbfFeatureEncodings"),
    Allowed::Value("/fields/4/type"),
];

const QUERY_ALL: &[Allowed<'static>] = &[
    Allowed::Value("/features/*/attributes/OBJECTID"),
    Allowed::Value("/fields/4/type"),
];

fn reference(name: &str) -> Result<Value> {
    let text = std::fs::read_to_string(fixtures().join(name)).with_context(|| name.to_owned())?;
    Ok(serde_json::from_str(&text)?)
}

/// A reference file, the route under the service, the query, and the allowed differences.
type Case = (
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str)>,
    Vec<Allowed<'static>>,
);

/// Requests whose answers must match the reference, but for the allowed differences.
#[allow(clippy::too_many_lines, reason = "one entry per reference response")]
fn cases() -> Vec<Case> {
    let prefixed = |prefix: &'static str, allowed: &[Allowed<'static>]| -> Vec<Allowed<'static>> {
        allowed
            .iter()
            .map(|allow| match (prefix, *allow) {
                ("/layers/0", Allowed::Value(path)) => Allowed::Value(match path {
                    "/name" => "/layers/0/name",
                    "/description" => "/layers/0/description",
                    "/supportedPbfFeatureEncodings" => "/layers/0/supportedPbfFeatureEncodings",
                    _ => "/layers/0/fields/4/type",
                }),
                (_, allow) => allow,
            })
            .collect()
    };
    vec![
        (
            "a-server-info.json",
            "",
            vec![("f", "json")],
            vec![
                Allowed::Value("/serviceDescription"),
                Allowed::Value("/description"),
                Allowed::Value("/layers/0/name"),
                // Koop's service says "JSON" while its layers offer PBF; ours says what the
                // layers answer.
                Allowed::Value("/supportedQueryFormats"),
            ],
        ),
        (
            "a-layers.json",
            "/layers",
            vec![("f", "json")],
            prefixed("/layers/0", LAYER_INFO),
        ),
        (
            "a-layer-0.json",
            "/0",
            vec![("f", "json")],
            LAYER_INFO.to_vec(),
        ),
        (
            "a-layer-0-info.json",
            "/0/info",
            vec![],
            LAYER_INFO.to_vec(),
        ),
        ("a-layer-99.json", "/99", vec![("f", "json")], {
            // The id is the one asked for (99), not Koop's 0.
            let mut allowed = LAYER_INFO.to_vec();
            allowed.push(Allowed::Value("/id"));
            allowed
        }),
        ("a-layer-bad-f.json", "/0", vec![("f", "geojson")], vec![]),
        (
            "a-query-all.json",
            "/0/query",
            vec![("where", "1=1"), ("outFields", "*"), ("f", "json")],
            QUERY_ALL.to_vec(),
        ),
        (
            "a-query-no-params.json",
            "/0/query",
            vec![],
            QUERY_ALL.to_vec(),
        ),
        (
            "a-query-where-num.json",
            "/0/query",
            vec![
                ("where", "population > 200000"),
                ("outFields", "name,population"),
            ],
            vec![],
        ),
        (
            "a-query-where-str.json",
            "/0/query",
            vec![("where", "region = 'Auckland'"), ("outFields", "*")],
            QUERY_ALL.to_vec(),
        ),
        (
            "a-query-where-like.json",
            "/0/query",
            vec![
                ("where", "name LIKE 'W%'"),
                ("outFields", "name"),
                ("returnGeometry", "false"),
            ],
            vec![],
        ),
        (
            "a-query-where-in.json",
            "/0/query",
            vec![
                ("where", "fid IN (1,3,5)"),
                ("outFields", "fid,name"),
                ("returnGeometry", "false"),
            ],
            vec![],
        ),
        (
            "a-query-where-date.json",
            "/0/query",
            vec![
                ("where", "surveyed > DATE '2020-01-01'"),
                ("outFields", "name,surveyed"),
                ("returnGeometry", "false"),
            ],
            vec![],
        ),
        (
            "a-query-where-null.json",
            "/0/query",
            vec![
                ("where", "surveyed IS NULL"),
                ("outFields", "name,surveyed"),
                ("returnGeometry", "false"),
            ],
            vec![],
        ),
        (
            "a-query-outfields-oid.json",
            "/0/query",
            vec![("outFields", "OBJECTID,name"), ("returnGeometry", "false")],
            vec![Allowed::Value("/features/*/attributes/OBJECTID")],
        ),
        (
            "a-query-page-1.json",
            "/0/query",
            vec![
                ("outFields", "fid,name"),
                ("resultRecordCount", "2"),
                ("returnGeometry", "false"),
            ],
            vec![],
        ),
        (
            "a-query-page-2.json",
            "/0/query",
            vec![
                ("outFields", "fid,name"),
                ("resultOffset", "2"),
                ("resultRecordCount", "2"),
                ("returnGeometry", "false"),
            ],
            vec![],
        ),
        (
            "a-query-page-3.json",
            "/0/query",
            vec![
                ("outFields", "fid,name"),
                ("resultOffset", "4"),
                ("resultRecordCount", "2"),
                ("returnGeometry", "false"),
            ],
            vec![],
        ),
        (
            "a-query-order.json",
            "/0/query",
            vec![
                ("outFields", "name,population"),
                ("orderByFields", "population DESC"),
                ("returnGeometry", "false"),
            ],
            vec![],
        ),
        (
            "a-query-count.json",
            "/0/query",
            vec![("returnCountOnly", "true")],
            vec![],
        ),
        (
            "a-query-count-where.json",
            "/0/query",
            vec![
                ("where", "population > 200000"),
                ("returnCountOnly", "true"),
            ],
            vec![],
        ),
        (
            "a-query-ids.json",
            "/0/query",
            vec![("returnIdsOnly", "true")],
            vec![Allowed::Value("/objectIds/*")],
        ),
        (
            "a-query-extent.json",
            "/0/query",
            vec![("returnExtentOnly", "true")],
            vec![],
        ),
        (
            "a-query-count-extent.json",
            "/0/query",
            vec![
                ("returnCountOnly", "true"),
                ("returnExtentOnly", "true"),
                ("outSR", "102100"),
            ],
            // ArcGIS gives 102100 with its latest id, 3857.
            vec![Allowed::Presence("/extent/spatialReference/latestWkid")],
        ),
        (
            "a-query-geojson.json",
            "/0/query",
            vec![("f", "geojson")],
            vec![Allowed::Presence("/features/*/id")],
        ),
        (
            "a-query-geojson-filtered.json",
            "/0/query",
            vec![
                ("f", "geojson"),
                ("where", "population > 200000"),
                ("outFields", "name"),
                ("resultRecordCount", "2"),
            ],
            // Koop drops "type" when filtering; koop keeps it, and says more features exist.
            vec![
                Allowed::Presence("/features/*/type"),
                Allowed::Presence("/features/*/id"),
                Allowed::Presence("/properties"),
            ],
        ),
        (
            "a-query-envelope.json",
            "/0/query",
            vec![
                (
                    "geometry",
                    r#"{"xmin":174,"ymin":-42,"xmax":176,"ymax":-36,"spatialReference":{"wkid":4326}}"#,
                ),
                ("geometryType", "esriGeometryEnvelope"),
                ("spatialRel", "esriSpatialRelIntersects"),
                ("outFields", "name"),
                ("returnGeometry", "false"),
            ],
            vec![],
        ),
        (
            "a-query-envelope-csv.json",
            "/0/query",
            vec![
                ("geometry", "174,-42,176,-36"),
                ("outFields", "name"),
                ("returnGeometry", "false"),
            ],
            vec![],
        ),
        (
            "a-query-envelope-3857.json",
            "/0/query",
            vec![
                (
                    "geometry",
                    r#"{"xmin":19369000,"ymin":-5160000,"xmax":19595000,"ymax":-4300000,"spatialReference":{"wkid":3857}}"#,
                ),
                ("inSR", "3857"),
                ("outFields", "name"),
                ("returnGeometry", "false"),
            ],
            vec![],
        ),
        (
            "a-query-outsr-3857.json",
            "/0/query",
            vec![
                ("outSR", "3857"),
                ("outFields", "name"),
                ("resultRecordCount", "2"),
            ],
            vec![],
        ),
        (
            "a-query-outsr-2193.json",
            "/0/query",
            vec![
                ("outSR", "2193"),
                ("outFields", "name"),
                ("resultRecordCount", "2"),
            ],
            vec![],
        ),
        (
            "a-query-precision.json",
            "/0/query",
            vec![
                ("geometryPrecision", "1"),
                ("outFields", "name"),
                ("resultRecordCount", "2"),
            ],
            vec![],
        ),
        (
            "a-query-stats.json",
            "/0/query",
            vec![(
                "outStatistics",
                r#"[{"statisticType":"sum","onStatisticField":"population","outStatisticFieldName":"total_pop"},{"statisticType":"count","onStatisticField":"fid","outStatisticFieldName":"n"},{"statisticType":"max","onStatisticField":"surveyed","outStatisticFieldName":"latest"}]"#,
            )],
            // Koop loses the maximum of a date; koop answers it, typed as a date.
            vec![
                Allowed::Presence("/features/0/attributes/latest"),
                Allowed::Value("/fields/2/type"),
                Allowed::Value("/fields/2/sqlType"),
                Allowed::Presence("/fields/2/length"),
            ],
        ),
        (
            "a-query-stats-groupby.json",
            "/0/query",
            vec![
                (
                    "outStatistics",
                    r#"[{"statisticType":"count","onStatisticField":"fid","outStatisticFieldName":"n"}]"#,
                ),
                ("groupByFieldsForStatistics", "surveyed"),
            ],
            // Dates are epoch milliseconds, as the field's type says.
            vec![Allowed::Value("/features/*/attributes/surveyed")],
        ),
        (
            "a-query-distinct.json",
            "/0/query",
            vec![
                ("returnDistinctValues", "true"),
                ("outFields", "surveyed"),
                ("returnGeometry", "false"),
            ],
            vec![],
        ),
        // pbf is not offered.
        (
            "a-error-bad-f.json",
            "/0/query",
            vec![("f", "xml")],
            vec![Allowed::Value("/error/details/0")],
        ),
        // koop says why the clause is invalid.
        (
            "a-error-bad-where.json",
            "/0/query",
            vec![("where", "foo bar baz")],
            vec![Allowed::Value("/error/details")],
        ),
        (
            "a-error-bad-rrc.json",
            "/0/query",
            vec![("resultRecordCount", "abc")],
            vec![],
        ),
    ]
}

#[tokio::test]
async fn answers_match_the_reference_koop_field_by_field() -> Result<()> {
    let base = sample_server().await?;
    let mut failures = Vec::new();
    for (file, route, query, allowed) in cases() {
        let (status, ours) = get_json(&format!("{base}{SERVICE}{route}"), &query).await?;
        ensure!(status == 200, "{file}: HTTP {status}: {ours}");
        for difference in differences(&reference(file)?, &ours, &allowed) {
            failures.push(format!("{file}: {difference}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

#[tokio::test]
async fn where_the_issue_chooses_differently_koop_says_so() -> Result<()> {
    let base = sample_server().await?;
    let query = format!("{base}{SERVICE}/0/query");
    // Counts ignore resultRecordCount (Koop answers 2).
    let (_, count) = get_json(
        &query,
        &[("returnCountOnly", "true"), ("resultRecordCount", "2")],
    )
    .await?;
    assert_eq!(count, serde_json::json!({"count": 5}));
    // resultOffset counts alone (Koop ignores it and answers all five).
    let (_, page) = get_json(
        &query,
        &[
            ("outFields", "fid"),
            ("resultOffset", "3"),
            ("returnGeometry", "false"),
        ],
    )
    .await?;
    assert_eq!(
        page["features"],
        serde_json::json!([{"attributes": {"fid": 4}}, {"attributes": {"fid": 5}}])
    );
    assert_eq!(page["exceededTransferLimit"], false);
    // A count in GeoJSON is a count (Koop answers every feature).
    let (_, count) = get_json(&query, &[("returnCountOnly", "true"), ("f", "geojson")]).await?;
    assert_eq!(count, serde_json::json!({"count": 5}));
    // Statistics give dates as epoch milliseconds, like every Esri JSON date.
    let (_, stats) = get_json(&query, &[
        ("outStatistics", r#"[{"statisticType":"max","onStatisticField":"surveyed","outStatisticFieldName":"latest"},{"statisticType":"avg","onStatisticField":"population","outStatisticFieldName":"mean"},{"statisticType":"stddev","onStatisticField":"population","outStatisticFieldName":"sd"},{"statisticType":"var","onStatisticField":"population","outStatisticFieldName":"v"},{"statisticType":"min","onStatisticField":"name","outStatisticFieldName":"first"}]"#),
    ]).await?;
    let row = &stats["features"][0]["attributes"];
    assert_eq!(row["latest"], 1_678_147_200_000_i64);
    assert_eq!(row["first"], "Auckland");
    let populations = [1_693_000.0, 215_400.0, 389_300.0, 185_300.0, 134_100.0_f64];
    let mean = populations.iter().sum::<f64>() / 5.0;
    let variance = populations.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / 4.0;
    assert!(
        (row["mean"].as_f64().context("mean")? - mean).abs() < 1e-6,
        "{row}"
    );
    assert!(
        (row["v"].as_f64().context("var")? - variance).abs() < 1e-3,
        "{row}"
    );
    assert!(
        (row["sd"].as_f64().context("sd")? - variance.sqrt()).abs() < 1e-6,
        "{row}"
    );
    let (_, grouped) = get_json(&query, &[
        ("outStatistics", r#"[{"statisticType":"count","onStatisticField":"fid","outStatisticFieldName":"n"}]"#),
        ("groupByFieldsForStatistics", "surveyed"),
    ]).await?;
    assert_eq!(
        grouped["features"][0]["attributes"],
        serde_json::json!({"n": 2, "surveyed": 1_678_147_200_000_i64})
    );
    Ok(())
}

#[tokio::test]
async fn object_ids_are_stable_and_select_features() -> Result<()> {
    let base = sample_server().await?;
    let query = format!("{base}{SERVICE}/0/query");
    let (_, all) = get_json(
        &query,
        &[("outFields", "OBJECTID,name"), ("returnGeometry", "false")],
    )
    .await?;
    let ids: Vec<i64> = all["features"]
        .as_array()
        .context("features")?
        .iter()
        .filter_map(|feature| feature["attributes"]["OBJECTID"].as_i64())
        .collect();
    assert_eq!(ids.len(), 5);
    assert!(
        ids.iter().all(|id| (0..=i64::from(i32::MAX)).contains(id)),
        "{ids:?}"
    );
    let (_, again) = get_json(&query, &[("returnIdsOnly", "true")]).await?;
    assert_eq!(
        again["objectIds"],
        serde_json::json!(ids),
        "the same ids on every request"
    );

    // The reference's OBJECTID queries, with our ids.
    let (_, one) = get_json(
        &query,
        &[
            ("where", &format!("OBJECTID = {}", ids[0])),
            ("outFields", "name"),
            ("returnGeometry", "false"),
        ],
    )
    .await?;
    assert!(
        differences(&reference("a-query-oid-where.json")?, &one, &[]).is_empty(),
        "{one}"
    );
    let (_, two) = get_json(
        &query,
        &[
            ("objectIds", &format!("{},{}", ids[0], ids[1])),
            ("outFields", "name"),
            ("returnGeometry", "false"),
        ],
    )
    .await?;
    assert!(
        differences(&reference("a-query-objectids.json")?, &two, &[]).is_empty(),
        "{two}"
    );
    Ok(())
}

#[tokio::test]
async fn pretty_json_jsonp_and_post_bodies() -> Result<()> {
    let base = sample_server().await?;
    let query = format!("{base}{SERVICE}/0/query");
    let client = reqwest::Client::new();

    let pretty = client
        .get(&query)
        .query(&[
            ("f", "pjson"),
            ("resultRecordCount", "1"),
            ("outFields", "name"),
        ])
        .send()
        .await?
        .text()
        .await?;
    let expected = std::fs::read_to_string(fixtures().join("a-query-pjson.txt"))?;
    assert_eq!(
        pretty.trim_end(),
        expected.trim_end(),
        "indented as Koop indents"
    );

    let response = client
        .get(&query)
        .query(&[
            ("callback", "myCb"),
            ("resultRecordCount", "1"),
            ("outFields", "name"),
        ])
        .send()
        .await?;
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok()),
        Some("application/javascript; charset=utf-8")
    );
    let body = response.text().await?;
    let expected = std::fs::read_to_string(fixtures().join("a-query-jsonp.js"))?;
    assert_eq!(body.trim_end(), expected.trim_end());
    let (_, refused) = get_json(&query, &[("callback", "alert(1)//")]).await?;
    assert_eq!(refused["error"]["code"], 400, "{refused}");

    let form = client
        .post(&query)
        .form(&[
            ("where", "population > 200000"),
            ("outFields", "name"),
            ("returnGeometry", "false"),
        ])
        .send()
        .await?
        .json::<Value>()
        .await?;
    assert!(
        differences(&reference("a-query-post.json")?, &form, &[]).is_empty(),
        "{form}"
    );
    let json = client.post(&query).json(&serde_json::json!({"where": "population > 200000", "outFields": "name", "returnGeometry": false})).send().await?.json::<Value>().await?;
    assert!(
        differences(&reference("a-query-post-json.json")?, &json, &[]).is_empty(),
        "{json}"
    );

    let pretty_info = client
        .get(format!("{base}{SERVICE}"))
        .query(&[("f", "pjson")])
        .send()
        .await?
        .text()
        .await?;
    assert!(
        pretty_info.starts_with("{\n  \"currentVersion\": 11.2,\n"),
        "{pretty_info}"
    );
    Ok(())
}

#[tokio::test]
async fn both_route_forms_and_the_rest_routes() -> Result<()> {
    let base = sample_server().await?;
    let (_, seed_form) = get_json(
        &format!("{base}/file-geojson/sample/FeatureServer/0/query"),
        &[("returnCountOnly", "true")],
    )
    .await?;
    assert_eq!(seed_form, serde_json::json!({"count": 5}));
    let (_, current) = get_json(&format!("{base}{SERVICE}"), &[]).await?;
    let (_, seed) = get_json(&format!("{base}/file-geojson/sample/FeatureServer"), &[]).await?;
    assert_eq!(current, seed);

    let (status, map_server) = get_json(
        &format!("{base}/file-geojson/rest/services/sample/MapServer/0"),
        &[],
    )
    .await?;
    assert_eq!(status, 200);
    assert_eq!(map_server, reference("a-error-mapserver.json")?);

    let (_, info) = get_json(&format!("{base}/file-geojson/rest/info"), &[]).await?;
    let allowed = [
        Allowed::Value("/authInfo/isTokenBasedSecurity"),
        Allowed::Presence("/authInfo/tokenServicesUrl"),
    ];
    assert!(
        differences(&reference("a-rest-info.json")?, &info, &allowed).is_empty(),
        "{info}"
    );
    assert_eq!(
        info["authInfo"]["isTokenBasedSecurity"], false,
        "the file provider issues no tokens"
    );

    let (_, token) = get_json(&format!("{base}/file-geojson/rest/generateToken"), &[]).await?;
    assert_eq!(token["error"]["code"], 400, "{token}");

    let (_, missing) = get_json(
        &format!("{base}/file-geojson/rest/services/nowhere/FeatureServer/0"),
        &[],
    )
    .await?;
    assert_eq!(missing["error"]["code"], 404, "{missing}");
    let (_, unknown) = get_json(&format!("{base}{SERVICE}/0/generateRenderer"), &[]).await?;
    assert_eq!(
        unknown["error"]["code"], 400,
        "no classificationDef: {unknown}"
    );
    let (_, unknown) = get_json(&format!("{base}{SERVICE}/0/buffer"), &[]).await?;
    assert_eq!(unknown["error"]["code"], 400, "{unknown}");
    // Koop's classes, labels and colours, value for value.
    let (_, renderer) = get_json(
        &format!("{base}{SERVICE}/0/generateRenderer"),
        &[(
            "classificationDef",
            r#"{"type":"classBreaksDef","classificationField":"population","classificationMethod":"esriClassifyEqualInterval","breakCount":3}"#,
        )],
    )
    .await?;
    let found = differences(&reference("a-generate-renderer.json")?, &renderer, &[]);
    assert!(found.is_empty(), "{found:?}");
    Ok(())
}
