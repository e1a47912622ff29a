//! Leases: which machine exports a layer version. A lease is the object
//! `.leases/{data name}.json` holding `{"owner", "expires_at_ms"}`, created only if absent and
//! updated only on the ETag its holder last saw.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use crate::SharedStore;
use crate::error::{Error, Result};

#[derive(Debug, Serialize, Deserialize)]
struct LeaseBody {
    owner: String,
    expires_at_ms: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// The answer to [`SharedStore::lease`].
#[derive(Debug)]
pub enum LeaseState {
    /// This owner holds the lease: export, publish, then [`Lease::release`].
    Acquired(Lease),
    /// Another owner holds an unexpired lease: wait for the entry's manifest (or for the lease
    /// to expire, then ask again).
    Held {
        /// Who holds it.
        owner: String,
        /// Time left before it expires and may be taken over.
        expires_in: Duration,
    },
}

/// A held lease on one data name. Renew it before `ttl` passes; release it when done. Dropping
/// it without releasing leaves it to expire.
#[derive(Debug)]
pub struct Lease {
    store: SharedStore,
    path: ObjectPath,
    name: String,
    owner: String,
    ttl: Duration,
    version: UpdateVersion,
}

impl SharedStore {
    fn lease_path(&self, name: &str) -> ObjectPath {
        self.path(&format!(".leases/{name}.json"))
    }

    fn lease_body(owner: &str, ttl: Duration) -> PutPayload {
        let expires_at_ms =
            now_ms().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        let body = LeaseBody {
            owner: owner.to_owned(),
            expires_at_ms,
        };
        PutPayload::from(serde_json::to_vec(&body).unwrap_or_default())
    }

    /// Writes a lease of `owner` for `ttl` under the condition `mode`: its new version, or `None`
    /// when another owner's write came first.
    async fn put_lease(
        &self,
        path: &ObjectPath,
        owner: &str,
        ttl: Duration,
        mode: PutMode,
        action: &'static str,
    ) -> Result<Option<UpdateVersion>> {
        match self
            .store
            .put_opts(path, Self::lease_body(owner, ttl), PutOptions::from(mode))
            .await
        {
            Ok(result) => Ok(Some(result.into())),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(None),
            Err(source) => Err(self.failed(action, path, source)),
        }
    }

    /// Takes the lease on `name` (an entry's data name) for `owner` for `ttl`: creates it if
    /// absent; takes it over if its holder let it expire (a conditional update on the ETag read,
    /// so two machines taking over at once cannot both win); otherwise says who holds it.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] when the store fails; [`Error::Unreadable`] when the lease object is not
    /// one koop wrote.
    pub async fn lease(&self, name: &str, owner: &str, ttl: Duration) -> Result<LeaseState> {
        let path = self.lease_path(name);
        for _ in 0..8 {
            if let Some(version) = self
                .put_lease(&path, owner, ttl, PutMode::Create, "create the lease")
                .await?
            {
                return Ok(LeaseState::Acquired(
                    self.held(path, name, owner, ttl, version),
                ));
            }
            let current = match self.store.get(&path).await {
                Ok(current) => current,
                // Released between the two requests: try to create it again.
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(source) => return Err(self.failed("read the lease", &path, source)),
            };
            let version = UpdateVersion {
                e_tag: current.meta.e_tag.clone(),
                version: current.meta.version.clone(),
            };
            let bytes = current
                .bytes()
                .await
                .map_err(|source| self.failed("read the lease", &path, source))?;
            let body: LeaseBody =
                serde_json::from_slice(&bytes).map_err(|error| Error::Unreadable {
                    location: self.location.clone(),
                    object: path.to_string(),
                    reason: error.to_string(),
                })?;
            let now = now_ms();
            if body.expires_at_ms > now && body.owner != owner {
                return Ok(LeaseState::Held {
                    owner: body.owner,
                    expires_in: Duration::from_millis(body.expires_at_ms - now),
                });
            }
            // Expired (or ours from an earlier run): take it over, unless someone else does first.
            if let Some(version) = self
                .put_lease(
                    &path,
                    owner,
                    ttl,
                    PutMode::Update(version),
                    "take over the lease",
                )
                .await?
            {
                tracing::info!(
                    lease = name,
                    previous = body.owner,
                    "took over an expired lease"
                );
                return Ok(LeaseState::Acquired(
                    self.held(path, name, owner, ttl, version),
                ));
            }
        }
        // Eight races lost in a row: report the lease as held by whoever holds it now.
        Ok(LeaseState::Held {
            owner: "another owner".to_owned(),
            expires_in: ttl,
        })
    }

    fn held(
        &self,
        path: ObjectPath,
        name: &str,
        owner: &str,
        ttl: Duration,
        version: UpdateVersion,
    ) -> Lease {
        Lease {
            store: self.clone(),
            path,
            name: name.to_owned(),
            owner: owner.to_owned(),
            ttl,
            version,
        }
    }

    pub(crate) fn failed(
        &self,
        action: &'static str,
        object: &ObjectPath,
        source: object_store::Error,
    ) -> Error {
        Error::Store {
            location: self.location.clone(),
            action,
            object: object.to_string(),
            source: Box::new(source),
        }
    }
}

impl Lease {
    /// The data name the lease is for.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Extends the lease by its time to live, on the condition that nobody took it over.
    ///
    /// # Errors
    ///
    /// [`Error::LeaseLost`] when another owner took it over (its ETag changed) or it was
    /// removed; [`Error::Store`] when the store fails.
    pub async fn renew(&mut self) -> Result<()> {
        let renewed = self
            .store
            .store
            .put_opts(
                &self.path,
                SharedStore::lease_body(&self.owner, self.ttl),
                PutOptions::from(PutMode::Update(self.version.clone())),
            )
            .await;
        match renewed {
            Ok(result) => {
                self.version = result.into();
                Ok(())
            }
            Err(
                object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. },
            ) => {
                let owner = match self.store.store.get(&self.path).await {
                    Ok(current) => current
                        .bytes()
                        .await
                        .ok()
                        .and_then(|bytes| serde_json::from_slice::<LeaseBody>(&bytes).ok())
                        .map(|body| body.owner),
                    Err(_) => None,
                };
                Err(Error::LeaseLost {
                    location: self.store.location.clone(),
                    name: self.name.clone(),
                    owner,
                })
            }
            Err(source) => Err(self.store.failed("renew the lease", &self.path, source)),
        }
    }

    /// Gives the lease up (after the entry's manifest is published, or on failure, so that
    /// another machine may try at once). A lease already lost is left to its new owner.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] when the store fails.
    pub async fn release(self) -> Result<()> {
        // Only while it is still ours: a conditional "expire now" instead of a delete, which S3
        // cannot make conditional.
        let body = LeaseBody {
            owner: self.owner.clone(),
            expires_at_ms: 0,
        };
        let released = self
            .store
            .store
            .put_opts(
                &self.path,
                PutPayload::from(serde_json::to_vec(&body).unwrap_or_default()),
                PutOptions::from(PutMode::Update(self.version.clone())),
            )
            .await;
        match released {
            Ok(_)
            | Err(
                object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. },
            ) => Ok(()),
            Err(source) => Err(self.store.failed("release the lease", &self.path, source)),
        }
    }
}
