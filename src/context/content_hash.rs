//! File contents by digest, and a memory of them by stat: what makes an unchanged context
//! file cost one `stat` instead of a read. The selection asks a [`HashCache`] (the store keeps
//! one across builds) before it reads a file, and [`hash_file`] reads it when it must.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::oci::{Digest, DigestHasher, FileStamp};

/// Remembers content digests of files by their stat, across builds.
pub trait HashCache: Sync {
    fn get(&self, key: &StatKey) -> Option<Digest>;
    fn put(&self, key: &StatKey, digest: &Digest);
    /// Waits until lookups can be answered (a cache still being read answers them late).
    fn wait_ready(&self) {}
}

/// What identifies an unchanged file without reading it: its path and its stamp.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StatKey {
    /// Absolute path on the host.
    pub path: PathBuf,
    pub stamp: FileStamp,
}

/// A [`HashCache`] that never hits and stores nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHashCache;

impl HashCache for NoHashCache {
    fn get(&self, _key: &StatKey) -> Option<Digest> {
        None
    }

    fn put(&self, _key: &StatKey, _digest: &Digest) {}
}

/// `sha256:<hex>` of a file's bytes.
pub(super) fn hash_file(path: &Path) -> io::Result<Digest> {
    let mut file = File::open(path)?;
    let mut hasher = DigestHasher::sha256();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        hasher.update(&buffer[..read]);
    }
    Ok(hasher.finish())
}
