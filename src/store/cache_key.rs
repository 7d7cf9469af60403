//! Cache keys: the identity of a vertex's result across runs and machines (DESIGN.md section
//! 3), and what the store keeps records by. The solver computes them (`solver::cache_key`);
//! records in the database, in imported caches and in exported ones are named by them.
//!
//! A key is a sha256 digest with a type of its own, so it is never taken for the digest of a
//! blob or a diff id. Database rows and cache configs keep it as its text, checked when read.

use std::fmt;

use crate::oci::{Digest, InvalidDigest};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct CacheKey(Digest);

impl CacheKey {
    /// `digest`, the hash of a vertex's cache inputs, taken as its key.
    pub fn new(digest: Digest) -> CacheKey {
        CacheKey(digest)
    }

    /// A key kept as text (a record row, a cache config), checked as a digest.
    pub fn parse(text: &str) -> Result<CacheKey, InvalidDigest> {
        Digest::parse(text).map(CacheKey)
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(formatter)
    }
}

/// Digests, diff ids and keys named by a word, for tests of what holds them.
#[cfg(test)]
pub(crate) mod test_names {
    use super::CacheKey;
    use crate::oci::{DiffId, Digest};

    pub(crate) fn digest(name: &str) -> Digest {
        Digest::sha256_of(name.as_bytes())
    }

    pub(crate) fn diff_id(name: &str) -> DiffId {
        DiffId::new(digest(name))
    }

    pub(crate) fn key(name: &str) -> CacheKey {
        CacheKey::new(digest(name))
    }
}
