//! Build context directories: the main context and named `--build-context` directories.
//!
//! A context vertex only opens the directory and reads its `.dockerignore`; it transfers
//! nothing. Each `COPY` selects and hashes exactly the files it uses (`context::selection`), so
//! a changed file invalidates only the steps that copy it. File hashes are remembered by stat
//! (path, size, mtime, ctime, inode, device) in the store, so an unchanged file is not read again.
//!
//! | cache key input        | in key | why                                                |
//! |------------------------|--------|----------------------------------------------------|
//! | context name           | yes    | keeps two contexts apart                           |
//! | directory path         | no     | host paths never enter keys                        |
//! | file contents          | no     | the `COPY` that uses files hashes exactly those    |

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::CacheInput;
use crate::context::dockerignore::{DockerIgnore, DockerIgnoreError};
use crate::context::content_hash::{HashCache, StatKey};
use crate::graph::ContextSource;
use crate::store::{FileHashRow, Store, StoreError};

#[derive(Debug)]
pub struct ContextHandle {
    pub name: String,
    pub dir: PathBuf,
    pub ignore: DockerIgnore,
    /// The `.dockerignore` file in force, for messages.
    pub ignore_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("build context `{path}` is not a directory")]
    NotADirectory { path: String },
    #[error(transparent)]
    Ignore(#[from] DockerIgnoreError),
}

pub fn cache_inputs(source: &ContextSource) -> Vec<CacheInput> {
    vec![("context".into(), source.name.clone())]
}

pub fn open(source: &ContextSource) -> Result<ContextHandle, ContextError> {
    if !source.dir.is_dir() {
        return Err(ContextError::NotADirectory { path: source.dir.display().to_string() });
    }
    let (ignore_file, ignore) = DockerIgnore::load(&source.dir, source.dockerfile.as_deref())?;
    Ok(ContextHandle { name: source.name.clone(), dir: source.dir.clone(), ignore, ignore_file })
}

/// File hashes remembered in the store's database. Loaded once per build, written once at the
/// end, so hashing threads never wait on SQLite.
pub struct StoreHashCache {
    known: HashMap<String, FileHashRow>,
    fresh: Mutex<Vec<(String, FileHashRow)>>,
}

impl StoreHashCache {
    pub fn load(store: &Store) -> Result<StoreHashCache, StoreError> {
        let known = store.database().all_file_hashes()?;
        Ok(StoreHashCache { known, fresh: Mutex::new(Vec::new()) })
    }

    /// Writes the hashes computed in this build.
    pub fn save(&self, store: &Store) -> Result<(), StoreError> {
        let fresh = std::mem::take(&mut *self.fresh.lock().unwrap_or_else(|p| p.into_inner()));
        store.database().put_file_hashes(&fresh)?;
        Ok(())
    }
}

fn row_matches(row: &FileHashRow, key: &StatKey) -> bool {
    row.size == key.size
        && row.mtime_nanos == key.mtime_nanos
        && row.ctime_nanos == key.ctime_nanos
        && row.inode == key.inode
        && row.device == key.device
}

impl HashCache for StoreHashCache {
    fn get(&self, key: &StatKey) -> Option<String> {
        let row = self.known.get(path_key(&key.path).as_str())?;
        row_matches(row, key).then(|| row.digest.clone())
    }

    fn put(&self, key: &StatKey, digest: &str) {
        let row = FileHashRow {
            size: key.size,
            mtime_nanos: key.mtime_nanos,
            ctime_nanos: key.ctime_nanos,
            inode: key.inode,
            device: key.device,
            digest: digest.to_string(),
        };
        self.fresh.lock().unwrap_or_else(|p| p.into_inner()).push((path_key(&key.path), row));
    }
}

fn path_key(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}
