//! Tokens and errors: `rest/info` and `generateToken` for a provider that issues tokens, and
//! the Geoservices codes ArcGIS clients act on (498, 499, 500).

use anyhow::Result;
use async_trait::async_trait;
use koop_featureserver::FeatureServerOutput;
use koop_provider::{
    Credentials, Field, FieldType, Metadata, Provider, ProviderData, ProviderError,
    ProviderRequest, Token,
};
use koop_server::ServerBuilder;

use crate::{get_json, serve};

const TOKEN: &str = "t0k3n-for-analyst";

/// One point, for holders of a token issued to `analyst`.
struct Secured;

#[async_trait]
impl Provider for Secured {
    fn name(&self) -> &str {
        "secured"
    }

    async fn get_data(&self, _request: &ProviderRequest) -> Result<ProviderData, ProviderError> {
        let feature: geojson::Feature = serde_json::from_value(serde_json::json!({
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [174.78, -41.29]},
            "properties": {"name": "Wellington"},
        }))
        .map_err(|error| ProviderError::internal(error.to_string(), None))?;
        Ok(ProviderData {
            features: vec![feature],
            metadata: Metadata {
                fields: vec![Field::new("name", FieldType::String)],
                ..Metadata::default()
            },
            ..ProviderData::default()
        })
    }

    async fn authorize(&self, request: &ProviderRequest) -> Result<(), ProviderError> {
        match request.token.as_deref() {
            Some(TOKEN) => Ok(()),
            Some(_) => Err(ProviderError::unauthorized("the token has expired")),
            None => Err(ProviderError::unauthorized("a token is required")),
        }
    }

    fn authenticates(&self) -> bool {
        true
    }

    async fn authenticate(&self, credentials: &Credentials) -> Result<Token, ProviderError> {
        if credentials.username == "analyst" && credentials.password == "s3cret" {
            Ok(Token {
                token: TOKEN.to_owned(),
                expires: 4_102_444_800_000,
                ssl: false,
            })
        } else {
            Err(ProviderError::unauthorized("invalid username or password"))
        }
    }
}

/// Fails as a provider whose source is broken does.
struct Broken;

#[async_trait]
impl Provider for Broken {
    fn name(&self) -> &str {
        "broken"
    }

    async fn get_data(&self, _request: &ProviderRequest) -> Result<ProviderData, ProviderError> {
        Err(ProviderError::internal(
            "the source database is unreachable",
            None,
        ))
    }
}

#[tokio::test]
async fn tokens_are_issued_required_and_checked() -> Result<()> {
    let base = serve(
        ServerBuilder::default()
            .provider(Secured)
            .provider(Broken)
            .output(FeatureServerOutput::default())
            .build()?,
    )
    .await?;
    let (_, info) = get_json(&format!("{base}/secured/rest/info"), &[]).await?;
    assert_eq!(info["authInfo"]["isTokenBasedSecurity"], true, "{info}");
    assert_eq!(
        info["authInfo"]["tokenServicesUrl"],
        format!("{base}/secured/rest/generateToken"),
        "an absolute URL, from the Host header"
    );

    let generate = format!("{base}/secured/rest/generateToken");
    let (_, refused) = get_json(
        &generate,
        &[("username", "analyst"), ("password", "s3cret")],
    )
    .await?;
    assert_eq!(refused["error"]["code"], 400, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("POST only")),
        "a password in a URL is refused even when right: {refused}"
    );
    let wrong: serde_json::Value = reqwest::Client::new()
        .post(&generate)
        .form(&[("username", "analyst"), ("password", "wrong")])
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(wrong["error"]["code"], 400, "{wrong}");
    let token: serde_json::Value = reqwest::Client::new()
        .post(&generate)
        .form(&[
            ("username", "analyst"),
            ("password", "s3cret"),
            ("f", "json"),
        ])
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        token,
        serde_json::json!({"token": TOKEN, "expires": 4_102_444_800_000_u64, "ssl": false})
    );

    let query = format!("{base}/secured/rest/services/city/FeatureServer/0/query");
    let (status, missing) = get_json(&query, &[]).await?;
    assert_eq!(
        (status, &missing["error"]["code"]),
        (200, &serde_json::json!(499)),
        "{missing}"
    );
    let (_, invalid) = get_json(&query, &[("token", "stolen")]).await?;
    assert_eq!(invalid["error"]["code"], 498, "{invalid}");
    let (_, answer) = get_json(&query, &[("token", TOKEN), ("returnCountOnly", "true")]).await?;
    assert_eq!(answer, serde_json::json!({"count": 1}));
    let bearer: serde_json::Value = reqwest::Client::new()
        .get(format!("{base}/secured/rest/services/city/FeatureServer/0"))
        .bearer_auth(TOKEN)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(bearer["objectIdField"], "OBJECTID", "{bearer}");

    let (status, broken) = get_json(
        &format!("{base}/broken/rest/services/x/FeatureServer/0/query"),
        &[],
    )
    .await?;
    assert_eq!(status, 200);
    assert_eq!(broken["error"]["code"], 500, "{broken}");
    assert!(
        broken["error"]["details"][0]
            .as_str()
            .is_some_and(|text| text.contains("unreachable")),
        "{broken}"
    );
    Ok(())
}
