//! The shared store against a real S3-compatible server: moto's server mode, started here on
//! loopback (`moto_server`, installed by `cargo xtask test` into its virtual environment).

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use koop_cache::{Cache, EntryKey, LayerInfo, StagedLayer};
use koop_store::{Error, LeaseState, SharedStore};
use object_store::ObjectStoreExt;

struct Moto(koop_testkit::moto::Moto);

impl Moto {
    async fn start() -> Result<Self> {
        Ok(Self(koop_testkit::moto::Moto::start().await?))
    }

    fn options(&self) -> Vec<(String, String)> {
        self.0.options()
    }

    fn store(&self, prefix: &str) -> Result<SharedStore> {
        Ok(SharedStore::from_url_with(
            &self.0.url(prefix),
            self.options(),
        )?)
    }

    /// The bucket through `object_store` directly, to tamper with objects.
    fn raw(&self) -> Result<Box<dyn object_store::ObjectStore>> {
        let url = url::Url::parse(&format!("s3://{}", self.0.bucket()))?;
        Ok(object_store::parse_url_opts(&url, self.options())?.0)
    }
}

#[tokio::test]
async fn one_of_many_takes_a_lease_and_an_expired_one_is_taken_over() -> Result<()> {
    let moto = Moto::start().await?;
    let store = moto.store("team")?;
    // Eight owners at once: exactly one gets it.
    let attempts = (0..8).map(|index| {
        let store = store.clone();
        async move {
            store
                .lease(
                    "1474_4067_9f14",
                    &format!("owner-{index}"),
                    Duration::from_millis(800),
                )
                .await
        }
    });
    let results = futures::future::join_all(attempts).await;
    let mut held = Vec::new();
    let mut waiting = 0;
    for result in results {
        match result? {
            LeaseState::Acquired(lease) => held.push(lease),
            LeaseState::Held { expires_in, .. } => {
                ensure!(expires_in <= Duration::from_millis(800));
                waiting += 1;
            }
        }
    }
    ensure!(held.len() == 1 && waiting == 7, "{} acquired", held.len());
    let mut first = held.pop().context("one lease")?;
    first.renew().await?;

    // Its holder stops renewing: after the expiry another owner takes it over, and the first
    // can neither renew nor release it away from the new owner.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let LeaseState::Acquired(mut second) = store
        .lease("1474_4067_9f14", "owner-late", Duration::from_secs(30))
        .await?
    else {
        anyhow::bail!("the expired lease was not taken over");
    };
    match first.renew().await {
        Err(Error::LeaseLost { owner, .. }) => {
            ensure!(owner.as_deref() == Some("owner-late"), "{owner:?}");
        }
        other => anyhow::bail!("renewing a lost lease: {other:?}"),
    }
    first.release().await?;
    second.renew().await?;
    ensure!(matches!(
        store.lease("1474_4067_9f14", "owner-0", Duration::from_secs(30)).await?,
        LeaseState::Held { ref owner, .. } if owner == "owner-late"
    ));
    // Released, it is free at once.
    second.release().await?;
    ensure!(matches!(
        store
            .lease("1474_4067_9f14", "owner-0", Duration::from_secs(30))
            .await?,
        LeaseState::Acquired(_)
    ));
    Ok(())
}

fn key() -> Result<EntryKey> {
    Ok(EntryKey {
        domain: koop_types::Domain::parse("data.linz.govt.nz")?,
        layer_id: 1474,
        version_id: 4067,
        data_version: 4067,
        format: "application/x-ogc-gpkg".into(),
        crs: koop_types::Epsg::new(2193)?,
        extent: None,
    })
}

#[tokio::test]
async fn an_entry_round_trips_in_parts_and_a_truncated_object_is_refused() -> Result<()> {
    let moto = Moto::start().await?;
    let store = moto.store("team/cache")?;
    let local = tempfile::tempdir()?;
    let cache = Cache::open(Some(local.path().to_owned()))?;
    let key = key()?;
    // 20 MB: three parts of 8 MiB.
    let content: Vec<u8> = (0..20_000_000_u32)
        .map(|n| (n.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let entry = {
        let lock = cache.try_lock(&key)?.context("unlocked")?;
        let staging = cache.staging(&key)?;
        let path = staging.path().join("layer.gpkg");
        std::fs::write(&path, &content)?;
        let xml = staging.path().join("metadata.xml");
        std::fs::write(&xml, "<metadata/>")?;
        let layer = StagedLayer::File {
            path,
            extension: "gpkg".into(),
            size: content.len() as u64,
            blake3: blake3::hash(&content).to_hex().to_string(),
        };
        let info = LayerInfo {
            title: "NZ Primary Parcels".into(),
            kind: "vector".into(),
            export_id: Some(7),
            ..LayerInfo::default()
        };
        cache.publish(&key, staging, &layer, Some(&xml), &info, &lock)?
    };
    let stem = entry.manifest.entry.clone();
    ensure!(
        store.manifest(&stem).await?.is_none(),
        "an entry before its upload"
    );
    store.upload(cache.root(), &entry.manifest).await?;
    let manifest = store
        .manifest(&stem)
        .await?
        .context("no manifest after the upload")?;
    ensure!(manifest == entry.manifest);
    // No credential in what the store holds.
    let raw = moto.raw()?;
    let manifest_bytes = raw
        .get(&object_store::path::Path::from(format!(
            "team/cache/{stem}.json"
        )))
        .await?
        .bytes()
        .await?;
    ensure!(!String::from_utf8_lossy(&manifest_bytes).contains("koop-test-secret"));

    let elsewhere = tempfile::tempdir()?;
    let downloaded = store.download(&manifest, elsewhere.path()).await?;
    ensure!(downloaded.files.len() == 1);
    ensure!(
        std::fs::read(&downloaded.files[0].1)? == content,
        "different bytes"
    );
    ensure!(downloaded.metadata_xml.is_some());

    // A truncated data object: the download says so and the entry is not used.
    let data = object_store::path::Path::from(format!("team/cache/{stem}.gpkg"));
    raw.put(
        &data,
        object_store::PutPayload::from(content[..1_000_000].to_vec()),
    )
    .await?;
    let again = tempfile::tempdir()?;
    match store.download(&manifest, again.path()).await {
        Err(Error::Corrupt { reason, .. }) => ensure!(reason.contains("bytes"), "{reason}"),
        other => anyhow::bail!("a truncated object was accepted: {other:?}"),
    }
    // Altered in place, same size: the digest says so.
    let mut altered = content.clone();
    altered[12_345] ^= 0xff;
    raw.put(&data, object_store::PutPayload::from(altered))
        .await?;
    match store.download(&manifest, again.path()).await {
        Err(Error::Corrupt { reason, .. }) => ensure!(reason.contains("BLAKE3"), "{reason}"),
        other => anyhow::bail!("an altered object was accepted: {other:?}"),
    }
    // A manifest naming a file outside its entry is refused.
    let mut hostile = manifest.clone();
    hostile.files[0].path = "../../etc/passwd".into();
    raw.put(
        &object_store::path::Path::from(format!("team/cache/{stem}.json")),
        object_store::PutPayload::from(serde_json::to_vec(&hostile)?),
    )
    .await?;
    ensure!(matches!(
        store.manifest(&stem).await,
        Err(Error::Unreadable { .. })
    ));
    Ok(())
}

#[tokio::test]
async fn a_store_that_fails_is_an_error_naming_it_without_credentials() -> Result<()> {
    // Nothing listens here: every request fails (after object_store's retries).
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let store = SharedStore::from_url_with(
        "s3://nobody/team",
        [
            (
                "aws_endpoint".to_owned(),
                format!("http://127.0.0.1:{port}"),
            ),
            ("aws_allow_http".to_owned(), "true".to_owned()),
            ("aws_access_key_id".to_owned(), "koop-test".to_owned()),
            (
                "aws_secret_access_key".to_owned(),
                "koop-test-secret".to_owned(),
            ),
            ("aws_region".to_owned(), "us-east-1".to_owned()),
            ("aws_retry_timeout".to_owned(), "1s".to_owned()),
        ],
    )?;
    let error = store
        .lease("1474_4067_9f14", "owner", Duration::from_secs(5))
        .await
        .err()
        .context("a lease from no server")?;
    let message = format!("{error:#}");
    ensure!(message.contains("s3://nobody/team"), "{message}");
    ensure!(!message.contains("koop-test-secret"), "{message}");
    Ok(())
}
