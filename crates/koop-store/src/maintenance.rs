//! `koop cache ls|verify|gc` on the shared store: what it holds, whether its objects match their
//! manifests, and removing superseded entries and leftovers of interrupted uploads.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{StreamExt, TryStreamExt};
use koop_cache::{GcPolicy, Manifest, ManifestFile};
use object_store::ObjectStoreExt;

use crate::SharedStore;
use crate::error::Result;

/// Objects no manifest names, and leases, untouched for this long belong to uploads that were
/// interrupted and never finished (a lease in use is rewritten every third of its time).
const STALE: Duration = Duration::from_secs(24 * 3600);
/// Manifests read at once.
const READS_IN_FLIGHT: usize = 8;

/// Everything under the store's prefix.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Inventory {
    /// The entries (their manifests), in name order.
    pub entries: Vec<Manifest>,
    /// Manifests that could not be read: `(object, reason)`. Never removed by `gc`.
    pub unreadable: Vec<(String, String)>,
    /// Every object under the prefix (data, manifests, leases), in path order.
    pub objects: Vec<StoredObject>,
}

/// One object of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredObject {
    /// The path relative to the store's prefix (`{stem}.gpkg`, `.leases/{name}.json`, …).
    pub relative: String,
    /// Size in bytes.
    pub size: u64,
    /// Time since it was last written.
    pub age: Duration,
}

/// What [`SharedStore::verify`] found.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct StoreVerifyReport {
    /// Entries whose every object matches its manifest.
    pub ok: Vec<Manifest>,
    /// Entries that do not: the first object missing or different. Their manifests were removed
    /// when asked (so nobody downloads them; the next fetch exports the version again).
    pub corrupt: Vec<(Manifest, String)>,
    /// Manifests that could not be read: `(object, reason)`.
    pub unreadable: Vec<(String, String)>,
}

/// What [`SharedStore::gc`] removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct StoreGcReport {
    /// Entries removed (manifest first, then the objects no other entry shares).
    pub removed: Vec<Manifest>,
    /// Bytes of the objects removed.
    pub bytes: u64,
    /// Objects no manifest names and stale leases, removed: relative paths.
    pub leftovers: Vec<String>,
}

impl SharedStore {
    fn relative(&self, location: &object_store::path::Path) -> Option<String> {
        let parts: Vec<_> = location.prefix_match(&self.prefix)?.collect();
        Some(
            parts
                .iter()
                .map(AsRef::as_ref)
                .collect::<Vec<&str>>()
                .join("/"),
        )
    }

    /// Lists every object under the prefix and reads every manifest.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store) when listing fails.
    pub async fn inventory(&self) -> Result<Inventory> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let listed: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&self.prefix))
            .try_collect()
            .await
            .map_err(|source| self.failed("list", &self.prefix, source))?;
        let mut objects = Vec::new();
        for meta in listed {
            let Some(relative) = self.relative(&meta.location) else {
                continue;
            };
            let written = u64::try_from(meta.last_modified.timestamp()).unwrap_or(0);
            objects.push(StoredObject {
                relative,
                size: meta.size,
                age: Duration::from_secs(now.saturating_sub(written)),
            });
        }
        objects.sort_by(|a, b| a.relative.cmp(&b.relative));
        let stems: Vec<String> = objects
            .iter()
            .filter_map(|object| object.relative.strip_suffix(".json"))
            .filter(|stem| !stem.contains('/') && crate::entry::data_name_of(stem).is_some())
            .map(str::to_owned)
            .collect();
        let read: Vec<(String, Result<Option<Manifest>>)> = futures::stream::iter(stems)
            .map(|stem| async move {
                let manifest = self.manifest(&stem).await;
                (stem, manifest)
            })
            .buffered(READS_IN_FLIGHT)
            .collect()
            .await;
        let mut inventory = Inventory {
            objects,
            ..Inventory::default()
        };
        for (stem, manifest) in read {
            match manifest {
                Ok(Some(manifest)) => inventory.entries.push(manifest),
                // Removed since the listing.
                Ok(None) => {}
                Err(error) => inventory
                    .unreadable
                    .push((format!("{stem}.json"), error.to_string())),
            }
        }
        Ok(inventory)
    }

    /// Reads every object of every entry back and checks its size and BLAKE3 against the
    /// manifest; with `remove_corrupt`, removes the manifest of an entry that does not match (its
    /// objects are left for [`SharedStore::gc`]).
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store) when listing fails or a manifest cannot be removed. An object that
    /// cannot be read is reported in [`StoreVerifyReport::corrupt`] only when it is missing;
    /// other read failures are errors (the store, not the entry, is at fault).
    pub async fn verify(&self, remove_corrupt: bool) -> Result<StoreVerifyReport> {
        let inventory = self.inventory().await?;
        let mut report = StoreVerifyReport {
            unreadable: inventory.unreadable,
            ..StoreVerifyReport::default()
        };
        for manifest in inventory.entries {
            match self.check_entry(&manifest).await? {
                None => report.ok.push(manifest),
                Some(reason) => {
                    if remove_corrupt {
                        let path = self.manifest_path(&manifest.entry);
                        self.store
                            .delete(&path)
                            .await
                            .map_err(|source| self.failed("remove", &path, source))?;
                    }
                    report.corrupt.push((manifest, reason));
                }
            }
        }
        Ok(report)
    }

    /// `None` when every object of `manifest` matches it; else what differs first.
    async fn check_entry(&self, manifest: &Manifest) -> Result<Option<String>> {
        for file in &manifest.files {
            if let Some(reason) = self.check_object(file).await? {
                return Ok(Some(reason));
            }
        }
        Ok(None)
    }

    async fn check_object(&self, file: &ManifestFile) -> Result<Option<String>> {
        let path = self.path(&file.path);
        let found = match self.store.get(&path).await {
            Ok(found) => found,
            Err(object_store::Error::NotFound { .. }) => {
                return Ok(Some(format!("{} is missing", file.path)));
            }
            Err(source) => return Err(self.failed("read", &path, source)),
        };
        Ok(self
            .stream_checked(&path, found, file, None)
            .await?
            .map(|reason| format!("{}: {reason}", file.path)))
    }

    /// Removes the entries `policy` selects (the same rule as the local cache's
    /// [`koop_cache::Cache::gc`]): each manifest first, so the entry stops existing before its
    /// objects do; then the objects no remaining manifest names (data shared with a linked
    /// version stays). Objects no manifest names that are older than a day (interrupted or
    /// truncated uploads) and leases untouched for a day go too.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store).
    pub async fn gc(&self, policy: &GcPolicy) -> Result<StoreGcReport> {
        let inventory = self.inventory().await?;
        let manifests: Vec<&Manifest> = inventory.entries.iter().collect();
        let doomed = policy.select(&manifests);
        let mut report = StoreGcReport::default();
        let mut named: HashSet<String> = HashSet::new();
        let mut kept: HashSet<String> = HashSet::new();
        for (index, manifest) in inventory.entries.iter().enumerate() {
            let objects = manifest
                .files
                .iter()
                .map(|file| file.path.clone())
                .chain(manifest.metadata_xml.clone());
            if doomed.contains(&index) {
                named.extend(objects);
            } else {
                kept.extend(objects);
            }
            // Manifests are removed on their own, first.
            kept.insert(format!("{}.json", manifest.entry));
        }
        // Unreadable manifests and whatever they might name are left alone.
        let unreadable: Vec<String> = inventory
            .unreadable
            .iter()
            .filter_map(|(object, _)| object.strip_suffix(".json").map(str::to_owned))
            .collect();
        for index in doomed {
            let manifest = &inventory.entries[index];
            if !policy.dry_run {
                let path = self.manifest_path(&manifest.entry);
                self.store
                    .delete(&path)
                    .await
                    .map_err(|source| self.failed("remove", &path, source))?;
            }
            report.removed.push(manifest.clone());
        }
        for object in &inventory.objects {
            let relative = &object.relative;
            if kept.contains(relative)
                || unreadable
                    .iter()
                    .any(|stem| relative.starts_with(stem.as_str()))
            {
                continue;
            }
            let of_removed = named.contains(relative);
            let stale = object.age > STALE;
            if !of_removed && !stale {
                continue;
            }
            if !policy.dry_run {
                let path = self.path(relative);
                match self.store.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(source) => return Err(self.failed("remove", &path, source)),
                }
            }
            if of_removed {
                report.bytes += object.size;
            } else {
                report.leftovers.push(relative.clone());
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use crate::entry::data_name_of;

    #[test]
    fn data_names_come_from_entry_names_alone() {
        assert_eq!(
            data_name_of("1474_4067_9f14ab").as_deref(),
            Some("1474_9f14ab")
        );
        for bad in [
            "1474_9f14",
            "a_1_b",
            "1474_x_ab",
            "1474_1_",
            "1_2_3_4",
            ".leases",
        ] {
            assert_eq!(data_name_of(bad), None, "{bad}");
        }
    }
}
