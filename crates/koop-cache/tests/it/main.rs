//! koop-cache through its public API, on a real file system.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use koop_cache::{Cache, EntryKey, Error, GcPolicy, LayerInfo, StagedFile, StagedLayer};

fn key(version_id: u64, data_version: u64) -> EntryKey {
    EntryKey {
        domain: koop_types::Domain::parse("data.linz.govt.nz").expect("a domain"),
        layer_id: 50772,
        version_id,
        data_version,
        format: "application/x-ogc-gpkg".into(),
        crs: koop_types::Epsg::NZTM2000,
        extent: None,
    }
}

fn info() -> LayerInfo {
    LayerInfo {
        title: "NZ Primary Parcels".into(),
        kind: "vector".into(),
        export_id: Some(7),
        ..LayerInfo::default()
    }
}

/// Publishes a one-file entry with `content` under `key`.
fn publish(cache: &Cache, key: &EntryKey, content: &[u8]) -> Result<koop_cache::CacheEntry> {
    let lock = cache.try_lock(key)?.context("unlocked")?;
    let staging = cache.staging(key)?;
    let path = staging.path().join("layer.gpkg");
    std::fs::write(&path, content)?;
    let xml = staging.path().join("metadata.xml");
    std::fs::write(&xml, "<metadata/>")?;
    let layer = StagedLayer::File {
        path,
        extension: "gpkg".into(),
        size: content.len() as u64,
        blake3: blake3::hash(content).to_hex().to_string(),
    };
    Ok(cache.publish(key, staging, &layer, Some(&xml), &info(), &lock)?)
}

fn staging_is_empty(root: &Path) -> Result<bool> {
    Ok(std::fs::read_dir(root.join(".staging"))?.next().is_none())
}

#[test]
fn a_published_entry_is_found_and_described() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cache = Cache::open(Some(dir.path().join("nested/cache")))?;
    let key = key(100, 100);
    assert!(cache.get(&key)?.is_none());
    let entry = publish(&cache, &key, b"layer bytes")?;
    assert_eq!(
        entry.path,
        cache.root().join(format!("{}.gpkg", key.stem()))
    );
    assert_eq!(std::fs::read(&entry.path)?, b"layer bytes");
    assert_eq!(cache.get(&key)?, Some(entry.clone()));
    let manifest = &entry.manifest;
    assert_eq!(manifest.size, 11);
    assert_eq!(
        manifest.blake3,
        blake3::hash(b"layer bytes").to_hex().to_string()
    );
    assert_eq!(manifest.export_id, Some(7));
    assert_eq!(
        manifest.metadata_xml.as_deref(),
        Some(format!("{}.xml", key.stem()).as_str())
    );
    assert!(cache.root().join(format!("{}.json", key.stem())).exists());
    assert!(staging_is_empty(cache.root())?, "staging is cleaned up");
    // The manifest is plain JSON a user can read.
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(
        cache.root().join(format!("{}.json", key.stem())),
    )?)?;
    assert_eq!(json["key"]["layer_id"], 50772);
    Ok(())
}

#[test]
fn an_unwritable_root_is_an_error_naming_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, "x")?;
    let root = file.join("cache");
    let error = Cache::open(Some(root.clone())).expect_err("a file is in the way");
    assert!(matches!(&error, Error::RootNotWritable { path, .. } if *path == root));
    assert!(error.to_string().contains(&root.display().to_string()));
    Ok(())
}

#[test]
fn a_dropped_staging_leaves_nothing_and_earlier_entries_stay() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cache = Cache::open(Some(dir.path().to_owned()))?;
    let first = publish(&cache, &key(100, 100), b"first")?;
    let second = key(101, 101);
    {
        let _lock = cache.try_lock(&second)?.context("unlocked")?;
        let staging = cache.staging(&second)?;
        std::fs::write(staging.path().join("half.gpkg"), b"half of a layer")?;
        // Interrupted here: the staging guard is dropped without publishing.
    }
    assert!(staging_is_empty(cache.root())?);
    assert!(cache.get(&second)?.is_none());
    assert_eq!(cache.get(&key(100, 100))?, Some(first));
    assert!(cache.verify()?.corrupt.is_empty());
    Ok(())
}

#[test]
fn the_lock_is_exclusive_until_dropped() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cache = Cache::open(Some(dir.path().to_owned()))?;
    let held = cache.try_lock(&key(100, 100))?.context("first taker")?;
    // Another version with the same data shares the lock; other data does not.
    assert!(cache.try_lock(&key(101, 100))?.is_none());
    assert!(cache.try_lock(&key(102, 102))?.is_some());
    drop(held);
    assert!(cache.try_lock(&key(101, 100))?.is_some());
    Ok(())
}

#[test]
fn a_metadata_only_version_shares_the_bytes_of_its_data() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cache = Cache::open(Some(dir.path().to_owned()))?;
    let original = publish(&cache, &key(100, 100), b"layer bytes")?;
    let metadata_only = key(105, 100);
    assert!(cache.get(&metadata_only)?.is_none());
    let source = cache.find_same_data(&metadata_only)?.context("same data")?;
    assert_eq!(source, original);
    assert!(cache.find_same_data(&key(106, 106))?.is_none());

    let lock = cache.try_lock(&metadata_only)?.context("unlocked")?;
    let linked = cache.link(&source, &metadata_only, &lock)?;
    drop(lock);
    assert_eq!(
        linked.path,
        cache.root().join(format!("{}.gpkg", metadata_only.stem()))
    );
    assert_eq!(
        std::fs::metadata(&linked.path)?.ino(),
        std::fs::metadata(&original.path)?.ino()
    );
    assert_eq!(
        linked.manifest.linked_from.as_deref(),
        Some(original.manifest.entry.as_str())
    );
    assert_eq!(linked.manifest.blake3, original.manifest.blake3);
    assert_eq!(cache.get(&metadata_only)?, Some(linked));
    assert_eq!(
        cache
            .newest(&koop_types::Domain::parse("data.linz.govt.nz")?, 50772)?
            .map(|e| e.manifest.key.version_id),
        Some(105)
    );
    assert!(cache.verify()?.corrupt.is_empty());
    Ok(())
}

#[test]
fn a_mosaic_is_published_and_linked_as_a_directory() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cache = Cache::open(Some(dir.path().to_owned()))?;
    let key = EntryKey {
        format: "image/tiff;subtype=geotiff".into(),
        ..key(200, 200)
    };
    let lock = cache.try_lock(&key)?.context("unlocked")?;
    let staging = cache.staging(&key)?;
    let mosaic = staging.path().join("mosaic");
    std::fs::create_dir_all(mosaic.join("tiles"))?;
    let mut files = Vec::new();
    for (name, bytes) in [
        ("tiles/a.tif", &b"tile a"[..]),
        ("tiles/b.tif", b"tile b"),
        (&format!("{}.vrt", key.stem()), b"<VRTDataset/>"),
    ] {
        std::fs::write(mosaic.join(name), bytes)?;
        files.push(StagedFile {
            relative: name.to_owned(),
            size: bytes.len() as u64,
            blake3: blake3::hash(bytes).to_hex().to_string(),
        });
    }
    let layer = StagedLayer::Mosaic {
        dir: mosaic,
        vrt: format!("{}.vrt", key.stem()),
        files,
    };
    let entry = cache.publish(&key, staging, &layer, None, &info(), &lock)?;
    drop(lock);
    assert_eq!(
        entry.path,
        cache
            .root()
            .join(key.stem())
            .join(format!("{}.vrt", key.stem()))
    );
    assert_eq!(entry.manifest.files.len(), 3);
    assert_eq!(entry.manifest.size, 6 + 6 + 13);

    let next = EntryKey {
        version_id: 201,
        ..key.clone()
    };
    let lock = cache.try_lock(&next)?.context("unlocked")?;
    let linked = cache.link(&entry, &next, &lock)?;
    assert_eq!(
        linked.path,
        cache
            .root()
            .join(next.stem())
            .join(format!("{}.vrt", next.stem()))
    );
    assert_eq!(
        std::fs::read(cache.root().join(next.stem()).join("tiles/b.tif"))?,
        b"tile b"
    );
    drop(lock);
    assert_eq!(cache.verify()?.ok.len(), 2);
    Ok(())
}

#[test]
fn verify_quarantines_a_corrupt_entry() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cache = Cache::open(Some(dir.path().to_owned()))?;
    let good = publish(&cache, &key(100, 100), b"good bytes")?;
    let bad = publish(&cache, &key(101, 101), b"bad bytes!")?;
    std::fs::write(&bad.path, b"bad bytes?")?;
    let report = cache.verify()?;
    assert_eq!(report.ok, std::slice::from_ref(&good));
    assert_eq!(report.corrupt.len(), 1);
    assert!(
        report.corrupt[0].reason.contains("BLAKE3"),
        "{}",
        report.corrupt[0].reason
    );
    let quarantined = report.corrupt[0].quarantined_to.clone().context("moved")?;
    assert!(
        quarantined
            .join(format!("{}.gpkg", bad.manifest.entry))
            .exists()
    );
    assert!(cache.get(&key(101, 101))?.is_none());
    assert_eq!(cache.list()?, [good]);
    assert!(cache.verify()?.corrupt.is_empty());
    Ok(())
}

#[test]
fn gc_keeps_the_newest_versions_and_removes_leftovers() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cache = Cache::open(Some(dir.path().to_owned()))?;
    publish(&cache, &key(100, 100), b"v100")?;
    publish(&cache, &key(101, 101), b"v101")?;
    let newest = publish(&cache, &key(102, 102), b"v102")?;
    // A file left by a publish interrupted before its manifest, and one being published now.
    let orphan = cache.root().join(format!("{}.gpkg", key(90, 90).stem()));
    std::fs::write(&orphan, b"orphan")?;
    let busy_key = key(95, 95);
    let busy = cache.root().join(format!("{}.gpkg", busy_key.stem()));
    std::fs::write(&busy, b"being published")?;
    let busy_lock = cache.try_lock(&busy_key)?.context("unlocked")?;

    let dry = cache.gc(&GcPolicy {
        keep_newest: Some(1),
        dry_run: true,
        ..GcPolicy::default()
    })?;
    assert_eq!(dry.removed.len(), 2);
    assert_eq!(cache.list()?.len(), 3, "a dry run removes nothing");

    let report = cache.gc(&GcPolicy {
        keep_newest: Some(1),
        ..GcPolicy::default()
    })?;
    let removed: Vec<u64> = report
        .removed
        .iter()
        .map(|entry| entry.manifest.key.version_id)
        .collect();
    assert_eq!(removed, [101, 100]);
    assert_eq!(report.bytes, 8);
    assert_eq!(report.leftovers, std::slice::from_ref(&orphan));
    assert!(!orphan.exists());
    assert!(busy.exists(), "a locked publish is left alone");
    drop(busy_lock);
    assert_eq!(cache.list()?, [newest]);

    let none_left = cache.gc(&GcPolicy {
        max_age: Some(Duration::from_secs(3600)),
        ..GcPolicy::default()
    })?;
    assert!(
        none_left.removed.is_empty(),
        "fresh entries are younger than an hour"
    );
    let all = cache.gc(&GcPolicy {
        max_age: Some(Duration::ZERO),
        ..GcPolicy::default()
    })?;
    assert_eq!(all.removed.len(), 1);
    assert!(cache.list()?.is_empty());
    Ok(())
}
