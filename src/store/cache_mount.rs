//! Cache mounts (`RUN --mount=type=cache`): directories in `mounts-v1/` kept across builds, and
//! their lifecycle: where one lives, how it is made (in `tmp/`, renamed into place), its id
//! (`<hex>.id`, for `cache du`), its lock (`<hex>.lock`, whose mtime is the last use) taken by
//! the sharing mode, and emptying it for a build that ignores the cache.
//!
//! What goes into a new mount (nothing, a seed from another stage, an imported cache) is the
//! caller's policy: it fills a staging directory. BuildKit's sharing modes: `shared` mounts are
//! used by many steps at once, `locked` ones by one step at a time (the others wait), and a
//! `private` one that is in use gives the step a fresh empty directory of its own.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{Area, Store, StoreError, atomic, remove_tree};
use crate::oci::Digest;

/// BuildKit's `sharing=` of a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountSharing {
    Shared,
    Locked,
    Private,
}

/// A cache mount held for one step: mount `directory`; the lock (or the private directory)
/// lives as long as this.
pub struct HeldMount {
    pub directory: PathBuf,
    _lock: Option<File>,
    _private: Option<tempfile::TempDir>,
}

impl Store {
    /// The directory of the cache mount keyed `key` (its id, or its id and seed).
    pub fn cache_mount_dir(&self, key: &str) -> PathBuf {
        self.area(Area::Mounts).join(Digest::sha256_of(key.as_bytes()).hex())
    }

    /// Makes the mount `directory` when it does not exist: `fill` makes it at the path it is
    /// given (which does not exist yet), in `tmp/`; it is then renamed into place. Another build
    /// that made it meanwhile wins, and this one's is dropped.
    pub fn make_cache_mount<E: From<StoreError>>(&self, directory: &Path, fill: impl FnOnce(&Path) -> Result<(), E>) -> Result<(), E> {
        if directory.exists() {
            return Ok(());
        }
        let staging = self.temp_dir("cache-")?;
        let fresh = staging.path().join("root");
        fill(&fresh)?;
        let _ = fs::rename(&fresh, directory);
        Ok(())
    }

    /// Holds the mount `directory` (of id `id`) for one step, by `sharing`; records the id and
    /// the time of use.
    pub fn hold_cache_mount(&self, directory: &Path, id: &str, sharing: MountSharing) -> Result<HeldMount, StoreError> {
        let write_error = |path: &Path| {
            let path = path.display().to_string();
            move |source| StoreError::Write { path, source }
        };
        let name = directory.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        let id_path = self.area(Area::Mounts).join(format!("{name}.id"));
        if !id_path.exists() {
            atomic::write_file(&id_path, id.as_bytes()).map_err(write_error(&id_path))?;
        }
        let lock_path = self.area(Area::Mounts).join(format!("{name}.lock"));
        let lock = File::options().create(true).truncate(false).write(true).open(&lock_path).map_err(write_error(&lock_path))?;
        // The lock's mtime is the mount's last use, for `cache du` and `prune --filter until`.
        let _ = lock.set_modified(std::time::SystemTime::now());
        match sharing {
            MountSharing::Shared => lock.lock_shared().map_err(write_error(&lock_path))?,
            MountSharing::Locked => lock.lock().map_err(write_error(&lock_path))?,
            MountSharing::Private => {
                if lock.try_lock().is_err() {
                    // In use: this step gets a fresh private directory.
                    let staging = self.temp_dir("cache-private-")?;
                    let private = staging.path().join("root");
                    fs::create_dir(&private).map_err(write_error(&private))?;
                    return Ok(HeldMount { directory: private, _lock: None, _private: Some(staging) });
                }
            }
        }
        Ok(HeldMount { directory: directory.to_path_buf(), _lock: Some(lock), _private: None })
    }
}

/// Cache mounts emptied in this build. BuildKit v0.32 starts a step that ignores the cache with
/// an empty cache mount, which then replaces the old one (measured with the oracle: after a
/// `--no-cache` build the mount holds only what that build wrote). Each mount is emptied at
/// its first use in the build, so two steps of one build still share it.
#[derive(Default)]
pub struct FreshMounts {
    reset: Mutex<HashSet<PathBuf>>,
}

impl FreshMounts {
    /// Empties the mount `directory` if this build has not yet.
    pub fn reset_once(&self, store: &Store, directory: &Path) -> io::Result<()> {
        let mut reset = self.reset.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !reset.insert(directory.to_path_buf()) || !directory.exists() {
            return Ok(());
        }
        // Moved aside first, so a crash leaves no half-emptied mount behind.
        let trash = store.temp_dir("cache-old-").map_err(io::Error::other)?;
        fs::rename(directory, trash.path().join("old"))?;
        remove_tree(trash.path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LockMode;

    #[test]
    fn mounts_are_made_once_held_by_sharing_and_emptied_once() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path(), LockMode::Shared).unwrap();
        let directory = store.cache_mount_dir("/root/.cache");
        // The name is the sha256 of the key (as the graph's digests name it): mounts made by
        // earlier versions keep their directories.
        assert!(
            directory.ends_with("mounts-v1/ebc372a1c9f0ee32803d1ef5dc06a690f02a9133f92ecab5a21fa9c4bf851f2b"),
            "{}",
            directory.display()
        );
        store
            .make_cache_mount::<StoreError>(&directory, |fresh| {
                fs::create_dir(fresh).unwrap();
                Ok(())
            })
            .unwrap();
        store.make_cache_mount::<StoreError>(&directory, |_| panic!("made twice")).unwrap();
        fs::write(directory.join("kept"), "x").unwrap();

        let first = store.hold_cache_mount(&directory, "/root/.cache", MountSharing::Private).unwrap();
        assert_eq!(first.directory, directory);
        let second = store.hold_cache_mount(&directory, "/root/.cache", MountSharing::Private).unwrap();
        assert_ne!(second.directory, directory, "a busy private mount gives a fresh directory");
        assert_eq!(fs::read_dir(&second.directory).unwrap().count(), 0);
        drop((first, second));
        let id = fs::read_to_string(store.area(Area::Mounts).join(format!("{}.id", directory.file_name().unwrap().to_string_lossy())));
        assert_eq!(id.unwrap(), "/root/.cache");

        let fresh = FreshMounts::default();
        fresh.reset_once(&store, &directory).unwrap();
        assert!(!directory.exists(), "emptied");
        fs::create_dir(&directory).unwrap();
        fs::write(directory.join("new"), "y").unwrap();
        fresh.reset_once(&store, &directory).unwrap();
        assert!(directory.join("new").exists(), "emptied once per build");
    }
}
