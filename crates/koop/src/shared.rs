//! The team's cache on object storage in front of the local one: a version another machine
//! exported is downloaded instead of exported again, and a version exported here is shared. One
//! machine exports each version's data: it holds a lease on the data name while it works. A
//! share that fails (store error, truncated upload, lease lost) is reported on the layer
//! ([`crate::FetchedLayer::not_shared`]) and publishes nothing in the store.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use koop_cache::{CacheEntry, EntryKey, EntryLock, LayerInfo, StagedFile, StagedLayer};
use koop_export::{FetchOutcome, LayerEvent, Observer};
use koop_store::{Lease, LeaseState, SharedStore};

use crate::error::{Error, Result};
use crate::koop::{FetchedLayer, Koop, finished};

/// How long a lease lasts without renewal (it is renewed every third of it): how long a crashed
/// machine delays the others.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(60);

/// The shared cache of a [`Koop`].
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    pub(crate) store: SharedStore,
    pub(crate) owner: String,
    pub(crate) ttl: Duration,
}

/// What the shared cache says of a version the local cache does not hold.
pub(crate) enum SharedLookup {
    /// It was there: downloaded and published locally.
    Found(Box<FetchedLayer>),
    /// Nobody has it: this machine holds the lease and exports it.
    Export(LeaseGuard),
    /// No shared cache.
    NotShared,
}

/// A lease renewed in the background while the export runs. Dropped without
/// [`LeaseGuard::take`] (the export failed), it is given back at once.
pub(crate) struct LeaseGuard {
    lease: Arc<tokio::sync::Mutex<Option<Lease>>>,
    lost: Arc<AtomicBool>,
    renewer: tokio::task::JoinHandle<()>,
}

impl LeaseGuard {
    fn new(lease: Lease, ttl: Duration) -> Self {
        let lease = Arc::new(tokio::sync::Mutex::new(Some(lease)));
        let lost = Arc::new(AtomicBool::new(false));
        let (shared_lease, flag) = (lease.clone(), lost.clone());
        let renewer = tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                let mut held = shared_lease.lock().await;
                let Some(lease) = held.as_mut() else {
                    return;
                };
                if let Err(error) = lease.renew().await {
                    tracing::warn!("{error}");
                    if matches!(error, koop_store::Error::LeaseLost { .. }) {
                        flag.store(true, Ordering::SeqCst);
                        return;
                    }
                }
            }
        });
        Self {
            lease,
            lost,
            renewer,
        }
    }

    /// Stops renewing and hands the lease over, `None` once lost. Takes the lock first: a
    /// renewal in flight finishes (and records its new ETag) before the renewer is stopped.
    async fn take(&self) -> Option<Lease> {
        let lease = self.lease.lock().await.take();
        self.renewer.abort();
        if self.lost.load(Ordering::SeqCst) {
            return None;
        }
        lease
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        let lease = self.lease.clone();
        let renewer = self.renewer.abort_handle();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    // As in `take`: the lock first, so no renewal is cut off mid-request.
                    let taken = lease.lock().await.take();
                    renewer.abort();
                    if let Some(lease) = taken {
                        let _ = lease.release().await;
                    }
                });
            }
            Err(_) => renewer.abort(),
        }
    }
}

/// Who this process is, in leases: `host/pid`.
pub(crate) fn owner() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "koop".to_owned());
    format!("{host}/{}", std::process::id())
}

fn shared_error(layer_id: u64, error: koop_store::Error) -> Error {
    Error::Shared {
        layer_id,
        source: error,
    }
}

impl Koop {
    /// Looks `key` up in the shared cache (holding the local lock `lock`): downloads it when it
    /// is there, or when another version with the same data is (a version that changed only
    /// metadata; its link is shared too); otherwise takes the lease on the data to export it,
    /// waiting while another machine holds it. An entry whose objects do not match its manifest
    /// is exported again (and replaced when shared).
    pub(crate) async fn shared_lookup(
        &self,
        key: &EntryKey,
        lock: &EntryLock,
        observer: &dyn Observer,
    ) -> Result<SharedLookup> {
        let Some(shared) = &self.shared else {
            return Ok(SharedLookup::NotShared);
        };
        let layer_id = key.layer_id;
        let data_name = key.data_name();
        let mut told = false;
        // Set once a shared entry of this data failed its check: export instead.
        let mut damaged = false;
        loop {
            // The first look also asks for another version with the same data (a listing); while
            // waiting on another machine's lease, only this entry's manifest is read.
            if !damaged
                && let Some(found) = self.shared_download(key, lock, observer, !told).await?
            {
                match found {
                    Ok(fetched) => return Ok(SharedLookup::Found(Box::new(fetched))),
                    Err(reason) => {
                        tracing::warn!(layer_id, "exporting it again: {reason}");
                        damaged = true;
                    }
                }
            }
            match shared
                .store
                .lease(&data_name, &shared.owner, shared.ttl)
                .await
                .map_err(|error| shared_error(layer_id, error))?
            {
                LeaseState::Acquired(lease) => {
                    // Published between the look and the lease: use it.
                    if !damaged
                        && let Some(Ok(fetched)) =
                            self.shared_download(key, lock, observer, true).await?
                    {
                        let _ = lease.release().await;
                        return Ok(SharedLookup::Found(Box::new(fetched)));
                    }
                    return Ok(SharedLookup::Export(LeaseGuard::new(lease, shared.ttl)));
                }
                LeaseState::Held { owner, expires_in } => {
                    if !told {
                        tracing::info!(
                            layer_id,
                            "{owner} is exporting it; waiting for the shared cache"
                        );
                        observer.layer_event(layer_id, LayerEvent::WaitingForOtherFetch);
                        told = true;
                    }
                    let pause = expires_in
                        .min(Duration::from_millis(500))
                        .max(Duration::from_millis(50));
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = self.cancel.cancelled() => {
                            return Err(Self::interrupted(layer_id, "waiting for another machine's export"));
                        }
                    }
                }
            }
        }
    }

    /// The entry `key` from the shared cache, or (with `same_data`) another entry there with the
    /// same data (downloaded, published locally under `key`, and its link shared): `None` when
    /// the store has neither; `Some(Err(why))` when it has one whose objects do not match its
    /// manifest.
    async fn shared_download(
        &self,
        key: &EntryKey,
        lock: &EntryLock,
        observer: &dyn Observer,
        same_data: bool,
    ) -> Result<Option<std::result::Result<FetchedLayer, String>>> {
        let Some(shared) = &self.shared else {
            return Ok(None);
        };
        let layer_id = key.layer_id;
        let stem = key.stem();
        let (manifest, linked) = match shared
            .store
            .manifest(&stem)
            .await
            .map_err(|error| shared_error(layer_id, error))?
        {
            Some(manifest) => (manifest, false),
            None if !same_data => return Ok(None),
            None => match shared
                .store
                .same_data(&stem)
                .await
                .map_err(|error| shared_error(layer_id, error))?
            {
                Some(manifest) => (manifest, true),
                None => return Ok(None),
            },
        };
        match self.download_shared(key, &manifest, lock, observer).await {
            Ok(fetched) => {
                if linked {
                    match shared
                        .store
                        .put_link(&fetched.entry.manifest, &manifest)
                        .await
                    {
                        Ok(_) => tracing::info!(
                            layer_id,
                            "shared as a link to {} (a version that changed only metadata)",
                            manifest.entry
                        ),
                        Err(error) => tracing::warn!(layer_id, "link not shared: {error}"),
                    }
                }
                Ok(Some(Ok(fetched)))
            }
            Err(Error::Shared {
                source: error @ koop_store::Error::Corrupt { .. },
                ..
            }) => Ok(Some(Err(error.to_string()))),
            Err(error) => Err(error),
        }
    }

    /// After a version that changed only metadata was linked locally to `source`, shares the
    /// link (a manifest pointing at the shared objects of `source`) when the shared cache holds
    /// `source`'s data; best effort: without it, another machine finds the data by its name.
    pub(crate) async fn share_link(&self, entry: &CacheEntry, source: &CacheEntry) {
        let Some(shared) = &self.shared else {
            return;
        };
        let layer_id = entry.manifest.key.layer_id;
        let owner = source
            .manifest
            .linked_from
            .clone()
            .unwrap_or_else(|| source.manifest.entry.clone());
        let shared_source = match shared.store.manifest(&owner).await {
            Ok(Some(manifest)) => manifest,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(layer_id, "link not shared: {error}");
                return;
            }
        };
        if let Err(error) = shared.store.put_link(&entry.manifest, &shared_source).await {
            tracing::warn!(layer_id, "link not shared: {error}");
        }
    }

    /// The newest version of `layer_id` in the shared cache in this `Koop`'s CRS and extent,
    /// downloaded into the local cache; `None` when the shared cache holds none (or there is
    /// no shared cache). Makes no request to Koordinates.
    pub(crate) async fn shared_newest(
        &self,
        layer_id: u64,
        observer: &dyn Observer,
    ) -> Result<Option<FetchedLayer>> {
        let Some(shared) = &self.shared else {
            return Ok(None);
        };
        let extent = self.extent.as_ref().map(ToString::to_string);
        let newest = shared
            .store
            .entries_of_layer(layer_id)
            .await
            .map_err(|error| shared_error(layer_id, error))?
            .into_iter()
            .filter(|manifest| {
                manifest.key.domain == self.domain
                    && manifest.key.crs == self.crs
                    && manifest.key.extent == extent
            })
            .max_by_key(|manifest| manifest.key.version_id);
        let Some(manifest) = newest else {
            return Ok(None);
        };
        let key = manifest.key.clone();
        let lock = self.lock(&key, observer).await?;
        if let Some(entry) = self.cache.get(&key)? {
            return Ok(Some(finished(
                observer,
                layer_id,
                entry,
                FetchOutcome::Offline,
            )));
        }
        self.download_shared(&key, &manifest, &lock, observer)
            .await
            .map(Some)
    }

    async fn download_shared(
        &self,
        key: &EntryKey,
        manifest: &koop_cache::Manifest,
        lock: &EntryLock,
        observer: &dyn Observer,
    ) -> Result<FetchedLayer> {
        let layer_id = key.layer_id;
        let Some(shared) = &self.shared else {
            return Err(Error::Task("no shared cache".to_owned()));
        };
        let staging = self.cache.staging(key)?;
        let downloaded = shared
            .store
            .download(manifest, staging.path())
            .await
            .map_err(|error| shared_error(layer_id, error))?;
        // The entry whose objects these are: this one, or the one a link points at.
        let owner = manifest
            .path
            .split(['/', '.'])
            .next()
            .unwrap_or(&manifest.entry)
            .to_owned();
        let stem = key.stem();
        let staged = if let Some(vrt) = manifest.path.strip_prefix(&format!("{owner}/")) {
            StagedLayer::Mosaic {
                dir: staging.path().join(&owner),
                vrt: vrt.replace(&owner, &stem),
                files: manifest
                    .files
                    .iter()
                    .map(|file| StagedFile {
                        relative: file
                            .path
                            .strip_prefix(&format!("{owner}/"))
                            .unwrap_or(&file.path)
                            .to_owned(),
                        size: file.size,
                        blake3: file.blake3.clone(),
                    })
                    .collect(),
            }
        } else {
            let file = manifest.files.first().ok_or_else(|| {
                Error::Task(format!("the shared manifest of {stem} lists no file"))
            })?;
            StagedLayer::File {
                path: staging.path().join(&file.path),
                extension: file
                    .path
                    .rsplit_once('.')
                    .map_or_else(String::new, |(_, extension)| extension.to_owned()),
                size: file.size,
                blake3: file.blake3.clone(),
            }
        };
        let info = LayerInfo {
            title: manifest.title.clone(),
            kind: manifest.kind.clone(),
            export_id: manifest.export_id,
            published_at: manifest.published_at.clone(),
            changeset: manifest.changeset.clone(),
        };
        let entry = self.cache.publish(
            key,
            staging,
            &staged,
            downloaded.metadata_xml.as_deref(),
            &info,
            lock,
        )?;
        tracing::info!(
            layer_id,
            bytes = downloaded.bytes,
            "downloaded from the shared cache"
        );
        Ok(finished(observer, layer_id, entry, FetchOutcome::Shared))
    }

    /// Shares a version exported (or built) here: uploads the entry, its manifest last, if the
    /// lease is still ours; then gives the lease back. A failure leaves the local entry valid and
    /// the shared cache without the entry (another machine will export it): the answer says why
    /// (`None` once shared).
    pub(crate) async fn share(&self, entry: &CacheEntry, guard: LeaseGuard) -> Option<String> {
        let shared = self.shared.as_ref()?;
        let layer_id = entry.manifest.key.layer_id;
        let Some(mut lease) = guard.take().await else {
            let reason = format!(
                "another machine took over the lease on it in the shared cache {}",
                shared.store.location()
            );
            tracing::warn!(layer_id, "not shared: {reason}");
            return Some(reason);
        };
        // Check, right before publishing, that the lease is still ours.
        if let Err(error) = lease.renew().await {
            tracing::warn!(layer_id, "not shared: {error}");
            return Some(error.to_string());
        }
        let outcome = shared
            .store
            .upload(self.cache.root(), &entry.manifest)
            .await
            .err()
            .map(|error| {
                tracing::warn!(layer_id, "not shared: {error}");
                error.to_string()
            });
        if let Err(error) = lease.release().await {
            tracing::warn!(layer_id, "{error}");
        }
        outcome
    }
}
