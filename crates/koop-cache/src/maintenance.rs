//! `verify` and `gc`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::fsutil::{hash_file, rename_durable};
use crate::manifest::Manifest;
use crate::store::{Cache, CacheEntry, PARTIAL, QUARANTINE, STAGING};

/// A corrupt entry found by [`Cache::verify`].
#[derive(Debug, Clone, PartialEq)]
pub struct CorruptEntry {
    /// The entry as its manifest describes it.
    pub entry: CacheEntry,
    /// What is wrong: the first file that is missing or differs.
    pub reason: String,
    /// Where its files and manifest were moved (under `.quarantine/`), if they could be.
    pub quarantined_to: Option<PathBuf>,
}

/// What [`Cache::verify`] found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VerifyReport {
    /// Entries whose every file matches its manifest.
    pub ok: Vec<CacheEntry>,
    /// Entries that do not, now quarantined.
    pub corrupt: Vec<CorruptEntry>,
    /// Entries skipped because another process is writing them.
    pub busy: Vec<CacheEntry>,
}

/// Which entries [`Cache::gc`] removes. With every field at its default, only leftovers of
/// interrupted fetches are removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcPolicy {
    /// Keep this many newest versions per layer and domain (by version id), removing older ones.
    /// `Some(1)` drops every superseded version.
    pub keep_newest: Option<usize>,
    /// Remove entries fetched longer ago than this.
    pub max_age: Option<Duration>,
    /// Report what would be removed without removing it.
    pub dry_run: bool,
}

impl GcPolicy {
    /// The indices of the entries of `manifests` this policy removes, layer by layer (domain and
    /// layer id order), newest version first: the versions past the `keep_newest` newest (by
    /// version id), and entries fetched longer ago than `max_age`. The same rule for the local
    /// cache and the shared one.
    pub fn select(&self, manifests: &[&Manifest]) -> Vec<usize> {
        let now = jiff::Timestamp::now();
        let mut by_layer: BTreeMap<(&koop_types::Domain, u64), Vec<usize>> = BTreeMap::new();
        for (index, manifest) in manifests.iter().enumerate() {
            by_layer
                .entry((&manifest.key.domain, manifest.key.layer_id))
                .or_default()
                .push(index);
        }
        let mut doomed = Vec::new();
        for mut indices in by_layer.into_values() {
            indices.sort_by(|&a, &b| {
                let (a, b) = (manifests[a], manifests[b]);
                (b.key.version_id, &b.fetched_at).cmp(&(a.key.version_id, &a.fetched_at))
            });
            // Versions in order, newest first; several entries (CRS, extent) may share a version.
            let mut versions: Vec<u64> = indices
                .iter()
                .map(|&index| manifests[index].key.version_id)
                .collect();
            versions.dedup();
            for index in indices {
                let manifest = manifests[index];
                let rank = versions
                    .iter()
                    .position(|version| *version == manifest.key.version_id)
                    .unwrap_or(0);
                let superseded = self.keep_newest.is_some_and(|keep| rank >= keep);
                let too_old = self.max_age.is_some_and(|max_age| {
                    manifest
                        .fetched_at
                        .parse::<jiff::Timestamp>()
                        .ok()
                        .and_then(|fetched| now.duration_since(fetched).try_into().ok())
                        .is_some_and(|age: Duration| age > max_age)
                });
                if superseded || too_old {
                    doomed.push(index);
                }
            }
        }
        doomed
    }
}

/// What [`Cache::gc`] removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GcReport {
    /// Removed entries.
    pub removed: Vec<CacheEntry>,
    /// Bytes of the removed entries' files. Entries linked to one another share bytes, so the
    /// disk may free less.
    pub bytes: u64,
    /// Staging directories of interrupted fetches and files without a manifest, removed.
    pub leftovers: Vec<PathBuf>,
}

/// Staging directories and kept partial downloads older than this belong to fetches that were
/// interrupted and never resumed.
const STALE_STAGING: Duration = Duration::from_secs(24 * 3600);

impl Cache {
    /// Re-hashes every entry's files against its manifest. A corrupt entry (a file missing, of
    /// another size, or with another BLAKE3) is moved with its manifest to `.quarantine/` so the
    /// next fetch downloads it again, and reported. Entries locked by another process are skipped.
    ///
    /// Reads every byte in the cache: minutes for hundreds of GB.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the root cannot be listed or a corrupt entry cannot be moved.
    pub fn verify(&self) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        for entry in self.list()? {
            let Some(lock) = self.try_lock(&entry.manifest.key)? else {
                report.busy.push(entry);
                continue;
            };
            match self.check(&entry) {
                None => report.ok.push(entry),
                Some(reason) => {
                    tracing::warn!(entry = %entry.manifest.entry, "corrupt cache entry: {reason}");
                    let quarantined_to = self.quarantine(&entry.manifest.entry)?;
                    report.corrupt.push(CorruptEntry {
                        entry,
                        reason,
                        quarantined_to: Some(quarantined_to),
                    });
                }
            }
            drop(lock);
        }
        Ok(report)
    }

    /// The first problem with an entry's files, if any.
    fn check(&self, entry: &CacheEntry) -> Option<String> {
        for file in &entry.manifest.files {
            let path = self.root().join(&file.path);
            match hash_file(&path) {
                Err(error) => return Some(format!("{} cannot be read: {error}", file.path)),
                Ok((_, size)) if size != file.size => {
                    return Some(format!("{} is {size} bytes, not {}", file.path, file.size));
                }
                Ok((digest, _)) if digest != file.blake3 => {
                    return Some(format!(
                        "{} has BLAKE3 {digest}, not {}",
                        file.path, file.blake3
                    ));
                }
                Ok(_) => {}
            }
        }
        None
    }

    /// Moves every item of an entry (`{stem}.json` first, so it stops existing at once) into
    /// `.quarantine/{stem}-{timestamp}/`.
    fn quarantine(&self, stem: &str) -> Result<PathBuf> {
        let target = self
            .root()
            .join(QUARANTINE)
            .join(format!("{stem}-{}", jiff::Timestamp::now().as_second()));
        std::fs::create_dir_all(&target).map_err(Error::io("creating", &target))?;
        let mut names = self.items_of(stem)?;
        names.sort_by_key(|name| !is_manifest(name));
        for name in names {
            rename_durable(&self.root().join(&name), &target.join(&name))?;
        }
        Ok(target)
    }

    /// The names in the root that belong to entry `stem`.
    fn items_of(&self, stem: &str) -> Result<Vec<String>> {
        Ok(self
            .file_names()?
            .into_iter()
            .filter(|name| {
                name == stem
                    || name
                        .strip_prefix(stem)
                        .is_some_and(|rest| rest.starts_with('.'))
            })
            .collect())
    }

    /// Removes entries by `policy`, plus leftovers: staging directories older than a day and
    /// entry files that have no manifest. Entries locked by another process are kept.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the root cannot be listed or an entry cannot be removed.
    pub fn gc(&self, policy: &GcPolicy) -> Result<GcReport> {
        let mut report = GcReport::default();
        let entries = self.list()?;
        let manifests: Vec<&Manifest> = entries.iter().map(|entry| &entry.manifest).collect();
        let doomed = policy.select(&manifests);
        let mut entries: Vec<Option<CacheEntry>> = entries.into_iter().map(Some).collect();
        for index in doomed {
            if let Some(entry) = entries.get_mut(index).and_then(Option::take) {
                self.remove(entry, policy.dry_run, &mut report)?;
            }
        }
        self.remove_leftovers(policy.dry_run, &mut report)?;
        Ok(report)
    }

    fn remove(&self, entry: CacheEntry, dry_run: bool, report: &mut GcReport) -> Result<()> {
        let Some(lock) = self.try_lock(&entry.manifest.key)? else {
            return Ok(());
        };
        if !dry_run {
            let mut names = self.items_of(&entry.manifest.entry)?;
            // The manifest goes first: the entry stops existing before its files do.
            names.sort_by_key(|name| !is_manifest(name));
            for name in names {
                remove_path(&self.root().join(name))?;
            }
        }
        drop(lock);
        report.bytes += entry.manifest.size;
        report.removed.push(entry);
        Ok(())
    }

    fn remove_leftovers(&self, dry_run: bool, report: &mut GcReport) -> Result<()> {
        for area in [STAGING, PARTIAL] {
            let Ok(dirs) = std::fs::read_dir(self.root().join(area)) else {
                continue;
            };
            for dir in dirs.flatten() {
                let stale = dir
                    .metadata()
                    .and_then(|meta| meta.modified())
                    .ok()
                    .and_then(|modified| modified.elapsed().ok())
                    .is_some_and(|age| age > STALE_STAGING);
                if stale {
                    if !dry_run {
                        remove_path(&dir.path())?;
                    }
                    report.leftovers.push(dir.path());
                }
            }
        }
        let names = self.file_names()?;
        let stems: Vec<&str> = names
            .iter()
            .filter_map(|name| name.strip_suffix(".json"))
            .collect();
        for name in &names {
            let stem = name.split('.').next().unwrap_or(name);
            let parts: Vec<&str> = stem.split('_').collect();
            let looks_like_entry =
                parts.len() == 3 && parts[..2].iter().all(|part| part.parse::<u64>().is_ok());
            if !looks_like_entry || stems.contains(&stem) {
                continue;
            }
            // A publish in progress holds the data's lock between moving the files and writing
            // the manifest: leave those alone.
            let Some(lock) = self.try_lock_named(&format!("{}_{}", parts[0], parts[2]))? else {
                continue;
            };
            // A publish that finished between the listing and the lock wrote its manifest: the
            // file is an entry's now.
            if self.root().join(format!("{stem}.json")).exists() {
                continue;
            }
            let path = self.root().join(name);
            if !dry_run {
                remove_path(&path)?;
            }
            drop(lock);
            report.leftovers.push(path);
        }
        Ok(())
    }
}

/// Manifests are the `.json` files the cache itself names.
fn is_manifest(name: &str) -> bool {
    Path::new(name).extension().is_some_and(|ext| ext == "json")
}

fn remove_path(path: &Path) -> Result<()> {
    let result = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match result {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(Error::Io {
            action: "removing",
            path: path.to_owned(),
            source: error,
        }),
        _ => Ok(()),
    }
}
