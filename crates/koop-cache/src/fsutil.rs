//! The file-system primitives every cache write goes through: atomic replace, directory fsync,
//! hashing. `std::fs::rename` is used only here (clippy's `disallowed-methods` enforces it).

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use crate::error::{Error, Result};

/// Moves `from` to `to` atomically (same file system), replacing a file at `to`, then makes the
/// rename durable by syncing `to`'s directory.
#[allow(
    clippy::disallowed_methods,
    reason = "this is the one atomic-rename helper"
)]
pub(crate) fn rename_durable(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(Error::io("moving into place", to))?;
    if let Some(parent) = to.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsync, rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |name| name.to_string_lossy().into_owned());
    let temp = dir.join(format!(".{name}.{}.tmp", fastrand::u64(..)));
    let written = (|| {
        let mut file = File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(source) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(Error::Io {
            action: "writing",
            path: temp,
            source,
        });
    }
    rename_durable(&temp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&temp);
    })
}

/// Flushes a directory's entries (renames, creations) to disk. A no-op where directories cannot
/// be opened for syncing.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    match File::open(dir) {
        Ok(handle) => match handle.sync_all() {
            Ok(()) => Ok(()),
            // Some file systems refuse fsync on directories; the rename is still atomic there.
            Err(error) if error.kind() == std::io::ErrorKind::InvalidInput => Ok(()),
            Err(source) => Err(Error::Io {
                action: "syncing directory",
                path: dir.to_owned(),
                source,
            }),
        },
        Err(_) => Ok(()),
    }
}

/// BLAKE3 (hex) and size of a file, read in 1 MiB blocks.
pub(crate) fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0_u8; 1 << 20];
    let mut size = 0_u64;
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        size += read as u64;
    }
    Ok((hasher.finalize().to_hex().to_string(), size))
}

/// Hard-links `from` to `to`, copying when the file system cannot link; a copy is fsynced (a
/// link shares the synced data of `from`). The caller syncs `to`'s directory.
pub(crate) fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    if std::fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    std::fs::copy(from, to).map_err(Error::io("copying", to))?;
    File::open(to)
        .and_then(|file| file.sync_all())
        .map_err(Error::io("syncing", to))
}

/// Syncs `dir` and every directory under it (their entries: the files created in them), so a
/// directory published by one rename holds its files after a crash.
pub(crate) fn sync_tree(dir: &Path) -> Result<()> {
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).map_err(Error::io("listing", &dir))?;
        for entry in entries {
            let entry = entry.map_err(Error::io("listing", &dir))?;
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                pending.push(entry.path());
            }
        }
        sync_dir(&dir)?;
    }
    Ok(())
}
