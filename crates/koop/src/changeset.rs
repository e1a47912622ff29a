//! Deciding whether a new version can be built from the cached previous one plus its WFS
//! changeset, and building it. Every reason not to is said in words: the run report prints it
//! beside a full export.

use koop_api::{ChangesetQuery, LayerDetails, LayerKind};
use koop_cache::{
    CacheEntry, ChangesetSource, EntryKey, EntryLock, LayerInfo, StagedLayer, Staging,
};
use koop_export::{FetchOutcome, Observer};

use crate::error::{Error, Result};
use crate::koop::{FetchedLayer, Koop, Limits, blocking, finished, kind_of};

/// Features asked for per changeset page.
const PAGE_SIZE: u64 = 1000;

/// Why a version was not built from a changeset.
pub(crate) enum NotBuilt {
    /// The fetch was cancelled: stop, do not export.
    Interrupted(Error),
    /// Export in full, for this reason.
    Because(String),
}

impl From<String> for NotBuilt {
    fn from(reason: String) -> Self {
        Self::Because(reason)
    }
}

/// A changeset that can be asked for: the cached entry it applies to and the request.
pub(crate) struct Plan {
    pub(crate) previous: CacheEntry,
    query: ChangesetQuery,
    expected_features: u64,
}

impl Koop {
    /// What a fetch of a version the cache does not hold tries before exporting: the built
    /// layer to publish, or why the layer is to be exported in full. An error only when the
    /// fetch was cancelled.
    pub(crate) async fn changeset_or_reason(
        &self,
        key: &EntryKey,
        details: &LayerDetails,
        staging: &Staging,
        observer: &dyn Observer,
        limits: &Limits,
    ) -> Result<std::result::Result<(StagedLayer, LayerInfo), String>> {
        if !self.changesets {
            return Ok(Err("changesets are turned off".to_owned()));
        }
        match self
            .update_by_changeset(key, details, staging, observer, limits)
            .await
        {
            Ok(built) => Ok(Ok(built)),
            Err(NotBuilt::Interrupted(error)) => Err(error),
            Err(NotBuilt::Because(reason)) => {
                tracing::info!(layer_id = key.layer_id, "exporting in full: {reason}");
                Ok(Err(reason))
            }
        }
    }

    /// Publishes a layer built from a changeset under `key`, releasing the lock.
    pub(crate) async fn publish_changeset(
        &self,
        key: EntryKey,
        staging: Staging,
        staged: StagedLayer,
        info: LayerInfo,
        lock: EntryLock,
        observer: &dyn Observer,
    ) -> Result<FetchedLayer> {
        let layer_id = key.layer_id;
        let cache = self.cache.clone();
        let entry = blocking(move || {
            let entry = cache.publish(&key, staging, &staged, None, &info, &lock)?;
            drop(lock);
            Ok(entry)
        })
        .await?;
        Ok(finished(observer, layer_id, entry, FetchOutcome::Changeset))
    }

    /// The newest cached entry of an earlier data version of `key`'s layer in the same CRS and
    /// format, uncropped.
    fn previous_entry(&self, key: &EntryKey) -> std::result::Result<CacheEntry, String> {
        self.cache
            .entries_of_layer(&self.domain, key.layer_id)
            .map_err(|error| format!("the cache could not be read: {error}"))?
            .into_iter()
            .find(|entry| {
                let old = &entry.manifest.key;
                old.crs == key.crs
                    && old.extent.is_none()
                    && old.format == key.format
                    && old.data_version < key.data_version
            })
            .ok_or_else(|| "no earlier version of the layer is cached".to_owned())
    }

    /// When `entry`'s version was published: from its manifest, else (written before koop
    /// recorded it) from the version's details.
    async fn published_at(&self, entry: &CacheEntry) -> std::result::Result<String, String> {
        if let Some(from) = entry.manifest.published_at.clone() {
            return Ok(from);
        }
        let connection = self
            .connection
            .as_ref()
            .ok_or_else(|| "offline".to_owned())?;
        connection
            .layer_version(entry.manifest.key.layer_id, entry.manifest.key.version_id)
            .await
            .map_err(|error| format!("the cached version's publication time is unknown: {error}"))?
            .published_at
            .ok_or_else(|| "the cached version has no publication time".to_owned())
    }

    /// Checks every condition of a changeset build against the new version's `details` and the
    /// cache; the plan, or why a full export is needed.
    pub(crate) async fn changeset_plan(
        &self,
        key: &EntryKey,
        details: &LayerDetails,
    ) -> Result<Plan, String> {
        let layer_id = key.layer_id;
        let table = matches!(details.kind, Some(LayerKind::Table));
        if !matches!(details.kind, Some(LayerKind::Vector | LayerKind::Table)) {
            return Err(format!("a {} layer has no changesets", kind_of(details)));
        }
        if key.extent.is_some() {
            return Err(
                "the export is cropped to an extent; changesets update whole layers".into(),
            );
        }
        let previous = self.previous_entry(key)?;
        match details.has_service("wfs-changesets") {
            Some(true) => {}
            Some(false) => return Err("the layer offers no WFS changesets".into()),
            None => {
                return Err(
                    "the layer details link to its services instead of listing them".into(),
                );
            }
        }
        let data = details.data.as_ref();
        let primary_key = data
            .map(|data| data.primary_key_fields.clone())
            .unwrap_or_default();
        if primary_key.is_empty() {
            return Err("the layer has no primary key".into());
        }
        let Some(summary) = data.and_then(|data| data.change_summary.as_ref()) else {
            return Err("the version's details give no change summary".into());
        };
        match &summary.schema_changes {
            Some(changes) if changes.is_empty() => {}
            Some(_) => return Err("the version changed the layer's schema".into()),
            None => {
                return Err(
                    "the version's change summary does not say whether the schema changed".into(),
                );
            }
        }
        let Some(expected_features) = data.and_then(|data| data.feature_count) else {
            return Err(
                "the version's details give no feature count to check a changeset against".into(),
            );
        };
        let changed = summary.inserted.unwrap_or(0)
            + summary.updated.unwrap_or(0)
            + summary.deleted.unwrap_or(0);
        if changed > expected_features.max(1) / 2 {
            return Err(format!(
                "the version changed {changed} of {expected_features} features; a full export is cheaper"
            ));
        }
        let Some(to) = details.published_at.clone() else {
            return Err("the version has no publication time to ask a changeset up to".into());
        };
        let from = self.published_at(&previous).await?;
        Ok(Plan {
            previous,
            query: ChangesetQuery {
                layer_id,
                table,
                from,
                to,
                crs: Some(key.crs),
                sort_by: primary_key,
                page_size: PAGE_SIZE,
            },
            expected_features,
        })
    }

    /// Builds `key`'s GeoPackage in `staging` from the cached previous version and the
    /// changeset, checks it and returns what to publish; holds a download permit while it works.
    async fn update_by_changeset(
        &self,
        key: &EntryKey,
        details: &LayerDetails,
        staging: &Staging,
        observer: &dyn Observer,
        limits: &Limits,
    ) -> std::result::Result<(StagedLayer, LayerInfo), NotBuilt> {
        let layer_id = key.layer_id;
        let plan = self.changeset_plan(key, details).await?;
        let connection = self
            .connection
            .as_ref()
            .ok_or_else(|| "offline".to_owned())?;
        let _permit = tokio::select! {
            permit = limits.download(layer_id, observer) => permit,
            () = self.cancel.cancelled() => {
                return Err(NotBuilt::Interrupted(Self::interrupted(layer_id, "queued for a changeset")));
            }
        };
        let target = staging.path().join(format!("{}.gpkg", key.stem()));
        let built = tokio::select! {
            built = koop_changeset::build(connection, &plan.query, &plan.previous.path, &target) => built,
            () = self.cancel.cancelled() => {
                let _ = std::fs::remove_file(&target);
                return Err(NotBuilt::Interrupted(Self::interrupted(layer_id, "applying a changeset")));
            }
        };
        let discard = |reason: String| {
            let _ = std::fs::remove_file(&target);
            NotBuilt::Because(reason)
        };
        let built = built.map_err(|error| discard(format!("the changeset failed: {error}")))?;
        if built.feature_count != plan.expected_features {
            return Err(discard(format!(
                "the changeset from version {} gives {} features where version {} has {}",
                plan.previous.manifest.key.version_id,
                built.feature_count,
                key.version_id,
                plan.expected_features
            )));
        }
        let path = target.clone();
        let hashed = blocking(move || {
            let mut hasher = blake3::Hasher::new();
            std::fs::File::open(&path)
                .and_then(|file| hasher.update_reader(file).map(|_| ()))
                .map_err(|error| Error::Task(format!("hashing {}: {error}", path.display())))?;
            let size = std::fs::metadata(&path)
                .map_err(|error| Error::Task(format!("reading {}: {error}", path.display())))?
                .len();
            Ok((size, hasher.finalize().to_hex().to_string()))
        })
        .await;
        let (size, blake3) = hashed.map_err(|error| discard(error.to_string()))?;
        tracing::info!(
            layer_id,
            inserts = built.inserts,
            updates = built.updates,
            deletes = built.deletes,
            bytes = built.bytes,
            "built version {} from version {} and its changeset",
            key.version_id,
            plan.previous.manifest.key.version_id
        );
        let staged = StagedLayer::File {
            path: target,
            extension: "gpkg".to_owned(),
            size,
            blake3,
        };
        let info = LayerInfo {
            title: details.title.clone(),
            kind: kind_of(details),
            export_id: None,
            published_at: details.published_at.clone(),
            changeset: Some(ChangesetSource::new(
                plan.previous.manifest.key.version_id,
                plan.previous.manifest.entry.clone(),
                built.inserts,
                built.updates,
                built.deletes,
                built.bytes,
            )),
        };
        Ok((staged, info))
    }
}
