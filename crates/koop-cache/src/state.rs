//! What `mirror` remembers between runs, per domain: when its last complete run started, by the
//! site's clock. A small JSON file under `{root}/.state/`, written atomically; a run holds the
//! domain's mirror lock (`{root}/.locks/mirror-{domain}.lock`) while it reads and writes it.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::SystemTime;

use koop_types::Domain;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::guards::EntryLock;
use crate::store::Cache;

const STATE: &str = ".state";

/// The mirror state of one domain.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MirrorState {
    /// When the last run that got every listed layer started, by the site's clock (less a
    /// second: its `Date` header counts whole seconds).
    pub last_complete_run_started_at: SystemTime,
    /// The layers that run got: only these were current when it started. A layer cached by
    /// other means (an older `get`, a run that failed) may be older than that.
    pub layer_ids: BTreeSet<u64>,
}

impl MirrorState {
    /// A state recording a complete run of `layer_ids` that started at `started_at`.
    pub fn new(started_at: SystemTime, layer_ids: impl IntoIterator<Item = u64>) -> Self {
        Self {
            last_complete_run_started_at: started_at,
            layer_ids: layer_ids.into_iter().collect(),
        }
    }
}

/// The file's shape: RFC 3339 text, readable by people and by `jq`.
#[derive(Serialize, Deserialize)]
struct StateFile {
    domain: String,
    last_complete_run_started_at: String,
    #[serde(default)]
    layer_ids: Vec<u64>,
}

impl Cache {
    fn mirror_state_path(&self, domain: &Domain) -> PathBuf {
        self.root().join(STATE).join(format!(
            "mirror-{}.json",
            domain.as_str().replace([':', '/'], "_")
        ))
    }

    /// Takes the mirror lock of `domain` if no other run holds it; `None` if one does.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the lock file cannot be opened or locked.
    pub fn try_lock_mirror(&self, domain: &Domain) -> Result<Option<EntryLock>> {
        self.try_lock_named(&format!(
            "mirror-{}",
            domain.as_str().replace([':', '/'], "_")
        ))
    }

    /// The recorded state of `domain`'s mirror; `None` when no complete run was recorded, or the
    /// file cannot be read (a state that cannot be trusted is no state: the next run asks every
    /// layer, which is always right).
    pub fn mirror_state(&self, domain: &Domain) -> Option<MirrorState> {
        let path = self.mirror_state_path(domain);
        let bytes = std::fs::read(&path).ok()?;
        let file: StateFile = match serde_json::from_slice(&bytes) {
            Ok(file) => file,
            Err(error) => {
                tracing::warn!(
                    "ignoring the unreadable mirror state {}: {error}",
                    path.display()
                );
                return None;
            }
        };
        let started = file
            .last_complete_run_started_at
            .parse::<jiff::Timestamp>()
            .ok()?;
        Some(MirrorState::new(SystemTime::from(started), file.layer_ids))
    }

    /// Records `state` as `domain`'s, atomically (a kill at any moment leaves the old state or
    /// the new one). `_lock` is the domain's mirror lock ([`Cache::try_lock_mirror`]).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the file cannot be written.
    pub fn save_mirror_state(
        &self,
        domain: &Domain,
        state: &MirrorState,
        _lock: &EntryLock,
    ) -> Result<()> {
        let path = self.mirror_state_path(domain);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
        }
        let started = jiff::Timestamp::try_from(state.last_complete_run_started_at).map_or_else(
            |_| "1970-01-01T00:00:00Z".to_owned(),
            |time| time.to_string(),
        );
        let file = StateFile {
            domain: domain.as_str().to_owned(),
            last_complete_run_started_at: started,
            layer_ids: state.layer_ids.iter().copied().collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|source| Error::Manifest {
            entry: path.display().to_string(),
            source,
        })?;
        fsutil::write_atomic(&path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_round_trips_and_a_corrupt_file_is_no_state() -> Result<()> {
        let dir =
            tempfile::tempdir().map_err(Error::io("creating", std::path::Path::new("tmp")))?;
        let cache = Cache::open(Some(dir.path().to_owned()))?;
        let domain = Domain::parse("127.0.0.1:8080").expect("a domain");
        assert_eq!(cache.mirror_state(&domain), None);
        let lock = cache.try_lock_mirror(&domain)?.expect("free");
        assert!(cache.try_lock_mirror(&domain)?.is_none(), "held");
        let started = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_764_617_400_250);
        cache.save_mirror_state(&domain, &MirrorState::new(started, [7, 3, 5]), &lock)?;
        let read = cache.mirror_state(&domain).expect("a state");
        assert_eq!(read, MirrorState::new(started, [3, 5, 7]));
        let path = cache.mirror_state_path(&domain);
        std::fs::write(&path, b"{\"half").map_err(Error::io("writing", &path))?;
        assert_eq!(cache.mirror_state(&domain), None);
        Ok(())
    }
}
