//! Shared git repositories (`ADD <git URL>`): one bare repository per remote, kept across builds
//! so a fetch brings only what is new.
//!
//! `git-v1/<hex>/` is the repository of the remote whose sha256 (of the remote as written) is
//! `<hex>`; `<hex>.url` names the remote (for `cache du`); `<hex>.lock` is held exclusively by
//! the build that fetches into the repository or reads a checkout from it, so two rbuild processes
//! working on the same remote take turns, and its mtime is the repository's last use. Lock order:
//! the root's lock first, then at most one repository's at a time (`ops::git_submodule` lets the
//! parent's go before holding a submodule's), so no two processes can wait on each other. What is in
//! the repository is `ops::git`'s business; the store owns where it lives, its lock, and its
//! accounting: `cache du` lists it as BuildKit lists its shared repositories (`shared git repo
//! for URL`, type `regular`), `prune` removes it as one item.

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::usage::{Item, tree_size};
use super::{Area, Store, StoreError, atomic, remove_aside};

/// A remote's repository, held exclusively as long as this lives.
pub struct HeldRepository {
    pub directory: PathBuf,
    _lock: File,
}

impl Store {
    /// Holds the repository of `remote` (waiting while another build holds it) and records the
    /// use. The directory may not exist yet: the holder makes it.
    pub fn hold_git_repository(&self, remote: &str) -> Result<HeldRepository, StoreError> {
        let area = self.area(Area::GitRepositories);
        let name = hex::encode(Sha256::digest(remote.as_bytes()));
        let write_error = |path: &Path| {
            let path = path.display().to_string();
            move |source| StoreError::Write { path, source }
        };
        let url_path = area.join(format!("{name}.url"));
        if !url_path.exists() {
            atomic::write_file(&url_path, remote.as_bytes()).map_err(write_error(&url_path))?;
        }
        let lock_path = area.join(format!("{name}.lock"));
        let lock = File::options().create(true).truncate(false).write(true).open(&lock_path).map_err(write_error(&lock_path))?;
        lock.lock().map_err(write_error(&lock_path))?;
        // The lock's mtime is the repository's last use, for `cache du` and `prune --filter until`.
        let _ = lock.set_modified(std::time::SystemTime::now());
        Ok(HeldRepository { directory: area.join(name), _lock: lock })
    }
}

/// The repositories, as `cache du` items.
pub(super) fn items(store: &Store) -> Result<Vec<Item>, StoreError> {
    let area = store.area(Area::GitRepositories);
    let read_error = |source| StoreError::Write { path: area.display().to_string(), source };
    let mut items = Vec::new();
    for entry in fs::read_dir(&area).map_err(read_error)? {
        let path = entry.map_err(read_error)?.path();
        if !path.is_dir() {
            continue;
        }
        let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        let remote = fs::read_to_string(area.join(format!("{name}.url"))).unwrap_or_default();
        let time = |path: &Path| fs::metadata(path).map(|metadata| metadata.mtime()).unwrap_or(0);
        let size = tree_size(&path).map_err(|source| StoreError::Write { path: path.display().to_string(), source })?;
        items.push(Item {
            id: name.clone(),
            kind: "regular",
            description: format!("shared git repo for {remote}"),
            size,
            created_at: time(&path),
            last_used_at: time(&area.join(format!("{name}.lock"))).max(time(&path)),
        });
    }
    Ok(items)
}

/// Whether `item` is a repository (a layer's id is a `sha256:` digest, never a bare name).
pub(super) fn is_repository(store: &Store, item: &Item) -> bool {
    !item.id.contains(':') && store.area(Area::GitRepositories).join(&item.id).is_dir()
}

/// Removes a repository and its files. Only under the exclusive lock of the root.
pub(super) fn remove(store: &Store, item: &Item) -> Result<(), StoreError> {
    let area = store.area(Area::GitRepositories);
    let write_error = |path: &Path, source| StoreError::Write { path: path.display().to_string(), source };
    for suffix in [".url", ".lock"] {
        let path = area.join(format!("{}{suffix}", item.id));
        match fs::remove_file(&path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(write_error(&path, error)),
            _ => {}
        }
    }
    let path = area.join(&item.id);
    remove_aside(store.root(), &path).map_err(|source| write_error(&path, source))
}
