//! Guards that clean up on drop: the per-data lock and the staging directory.

use std::fs::File;
use std::path::{Path, PathBuf};

/// An exclusive lock on the data of one entry (`{layer_id}_{fingerprint}`), held across processes
/// with the operating system's file lock (`flock` on Unix). Released when dropped, also when the
/// process dies.
///
/// Every version that shares the data shares the lock, so two processes or two tasks asking for
/// the same layer version (or for two versions with the same data) fetch it once.
#[derive(Debug)]
pub struct EntryLock {
    file: File,
    path: PathBuf,
}

impl EntryLock {
    pub(crate) fn new(file: File, path: PathBuf) -> Self {
        Self { file, path }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for EntryLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// A private directory under `{root}/.staging/` where a new entry is built. Removed with
/// everything in it when dropped, unless published: an interrupted or failed fetch leaves no
/// file behind, and nothing half-written is ever visible under an entry's name.
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
}

impl Staging {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The staging directory; write the layer file(s) here.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.dir)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.dir.display(), "could not remove a staging directory: {error}");
        }
    }
}
