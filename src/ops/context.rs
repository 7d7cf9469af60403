//! Build context directories: the main context and named `--build-context` directories.
//!
//! A context vertex opens the directory, reads its `.dockerignore`, and selects the files the
//! build's `COPY`s from it use, as BuildKit's `[internal] load build context` transfers them:
//! the walk and the hashing happen while that vertex runs, its time is theirs, and its status
//! `transferring context: 2.03kB` is the size BuildKit's transfer of the same files would have
//! (`context::transfer`). The selections are memoized ([`file::SelectionMemo`]), so each `COPY`
//! takes its own from there: one selection per `COPY`, and a changed file invalidates only the
//! steps that copy it. A selection that fails here is left to its `COPY`, which reports it with
//! its own Dockerfile line. File hashes are remembered by stat (path, size, mtime, ctime,
//! inode, device) in the store, so an unchanged file is not read again.
//!
//! | cache key input        | in key | why                                                |
//! |------------------------|--------|----------------------------------------------------|
//! | context name           | yes    | keeps two contexts apart                           |
//! | directory path         | no     | host paths never enter keys                        |
//! | file contents          | no     | the `COPY` that uses files hashes exactly those    |

use std::collections::HashSet;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::thread::JoinHandle;

use super::{CacheInput, Environment, file};
use crate::context::content_hash::{HashCache, StatKey};
use crate::context::dockerignore::{DockerIgnore, DockerIgnoreError};
use crate::context::transfer::transfer_size;
use crate::graph::{ContextSource, CopyAction};
use crate::oci::Digest;
use crate::store::file_hashes::{Remembered, RememberedHashes};
use crate::store::{Store, StoreError};

#[derive(Debug)]
pub(crate) struct ContextHandle {
    pub dir: PathBuf,
    pub ignore: DockerIgnore,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ContextError {
    #[error("build context `{path}` is not a directory")]
    NotADirectory { path: String },
    #[error(transparent)]
    Ignore(#[from] DockerIgnoreError),
}

pub(crate) fn cache_inputs(source: &ContextSource) -> Vec<CacheInput> {
    vec![("context".into(), source.name.clone())]
}

pub(crate) fn open(source: &ContextSource) -> Result<ContextHandle, ContextError> {
    if !source.dir.is_dir() {
        return Err(ContextError::NotADirectory { path: source.dir.display().to_string() });
    }
    let (_, ignore) = DockerIgnore::load(&source.dir, source.dockerfile.as_deref())?;
    Ok(ContextHandle { dir: source.dir.clone(), ignore })
}

/// Opens the context and selects what `copies` (the build's `COPY`s from it) use, reporting the
/// transfer as BuildKit does: `transferring context: 2.03kB done`.
pub(crate) fn load(source: &ContextSource, copies: &[CopyAction], environment: &Environment) -> Result<Arc<ContextHandle>, ContextError> {
    let handle = Arc::new(open(source)?);
    let id = format!("transferring {}:", source.name);
    let start = || (environment.status)(&id, 0, None, false);
    let reads = ReadFiles { inner: environment.hash_cache, read: Mutex::new(HashSet::new()), started: Once::new(), start: &start };
    let counting = Environment { hash_cache: &reads, ..*environment };
    let mut selections = Vec::with_capacity(copies.len());
    for copy in copies {
        // A failure is the COPY's to report, at its own line, when it selects again.
        if let Ok(selection) = file::select_context(&handle, &copy.sources, &copy.excludes, copy.parents, &counting) {
            selections.push(selection);
        }
    }
    reads.start();
    let read = reads.read.into_inner().unwrap_or_else(|p| p.into_inner());
    let size = transfer_size(selections.iter().flat_map(|selection| &selection.entries), |entry| read.contains(entry.real.as_os_str()));
    (environment.status)(&id, size, None, true);
    Ok(handle)
}

/// A hash cache that notes the files it did not know: those the selection reads. It also starts
/// the transfer's status, at the first lookup, once the remembered hashes are read: the walk
/// before it runs while they are still being read (the load used to wait for them first), and
/// the wait for them is never the transfer's time (a tiny context shows `transferring context:
/// 40.31kB done` as in BuildKit, without the `0.0s` a wait inside it showed on a loaded
/// machine).
struct ReadFiles<'a> {
    inner: &'a (dyn HashCache + 'a),
    /// Their paths as bytes (a `Path`'s hash splits it into components, for every entry).
    read: Mutex<HashSet<OsString>>,
    started: Once,
    start: &'a (dyn Fn() + Sync),
}

impl ReadFiles<'_> {
    fn start(&self) {
        self.started.call_once(|| {
            self.inner.wait_ready();
            (self.start)();
        });
    }
}

impl HashCache for ReadFiles<'_> {
    fn get(&self, key: &StatKey) -> Option<Digest> {
        self.start();
        let digest = self.inner.get(key);
        if digest.is_none() {
            self.read.lock().unwrap_or_else(|p| p.into_inner()).insert(key.path.as_os_str().to_owned());
        }
        digest
    }

    fn put(&self, key: &StatKey, digest: &Digest) {
        self.inner.put(key, digest);
    }

    fn wait_ready(&self) {
        self.start();
    }
}

/// File hashes remembered in the store ([`crate::store::file_hashes`]). Read once per build, on
/// a thread of their own from when the store is opened (while the Dockerfile is parsed and
/// lowered, and the context walked), and written once at the end, when the build hashed files.
pub(crate) struct StoreHashCache {
    known: OnceLock<RememberedHashes>,
    loading: Mutex<Option<JoinHandle<RememberedHashes>>>,
    fresh: Mutex<Vec<(Vec<u8>, Remembered)>>,
}

impl StoreHashCache {
    /// Starts reading the hashes; the first lookup waits for them.
    pub(crate) fn load(store: &Store) -> StoreHashCache {
        let path = store.file_hashes_path();
        let cache = StoreHashCache { known: OnceLock::new(), loading: Mutex::new(None), fresh: Mutex::new(Vec::new()) };
        let reading = path.clone();
        match std::thread::Builder::new().name("file-hashes".into()).spawn(move || RememberedHashes::read(&reading)) {
            Ok(handle) => *cache.loading.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle),
            Err(_) => {
                let _ = cache.known.set(RememberedHashes::read(&path));
            }
        }
        cache
    }

    /// The remembered hashes. Those that cannot be read only cost reading the files again.
    fn known(&self) -> &RememberedHashes {
        self.known.get_or_init(|| {
            let loading = self.loading.lock().unwrap_or_else(|p| p.into_inner()).take();
            loading.and_then(|handle| handle.join().ok()).unwrap_or_default()
        })
    }

    /// Writes the hashes computed in this build beside those remembered; nothing when it
    /// computed none.
    pub(crate) fn save(&self, store: &Store) -> Result<(), StoreError> {
        let fresh = std::mem::take(&mut *self.fresh.lock().unwrap_or_else(|p| p.into_inner()));
        if fresh.is_empty() {
            return Ok(());
        }
        store.save_file_hashes(self.known(), fresh)
    }
}

impl HashCache for StoreHashCache {
    fn get(&self, key: &StatKey) -> Option<Digest> {
        let remembered = self.known().get(key.path.as_os_str().as_bytes())?;
        (remembered.stamp == key.stamp).then(|| Digest::from_sha256_bytes(&remembered.sha256))
    }

    fn put(&self, key: &StatKey, digest: &Digest) {
        // Files are hashed with sha256; anything else is not remembered.
        let Some(sha256) = digest.sha256_bytes() else { return };
        let remembered = Remembered { stamp: key.stamp, sha256 };
        self.fresh.lock().unwrap_or_else(|p| p.into_inner()).push((key.path.as_os_str().as_bytes().to_vec(), remembered));
    }

    fn wait_ready(&self) {
        self.known();
    }
}
