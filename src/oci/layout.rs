//! OCI image layouts: the `oci-layout` file, `index.json` and `blobs/<algorithm>/<hex>`. The one
//! reader of the layouts rbuild reads (`oci-layout://` build contexts, a `type=local` cache), and
//! the names and bytes of those it writes (the exporter's OCI and docker archives and
//! directories, the cache's directory); the writers put files in place through `store::atomic`,
//! which this module, under every other, cannot use.
//!
//! Invariants: a blob's file is `blobs/<algorithm>/<hex>` of its [`Digest`], which is checked
//! when read from an index or manifest, so no digest reaches outside the layout (`sha256:../x`
//! from a hostile index is refused before it names a file). A blob read whole is checked against
//! its digest.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::manifest::ImageIndex;
use super::{Digest, DigestHasher};

/// The file that marks a directory as a layout, and its content.
pub(crate) const LAYOUT_FILE: &str = "oci-layout";
pub(crate) const LAYOUT_VERSION: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// The index of the layout's manifests.
pub(crate) const INDEX_FILE: &str = "index.json";
/// The annotation that names a manifest in `index.json` (a tag, or a full name).
pub(crate) const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, thiserror::Error)]
pub(crate) enum LayoutError {
    #[error("failed to read `{path}`")]
    Read { path: PathBuf, source: io::Error },
    #[error("invalid `{path}`")]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("`{path}` is larger than {limit} bytes")]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("`{path}` has digest `{actual}`, not `{expected}`")]
    DigestMismatch { path: PathBuf, expected: Digest, actual: Digest },
}

/// Where blob `digest` is, relative to the layout (`blobs/sha256/<hex>`).
pub(crate) fn blob_name(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm(), digest.hex())
}

/// Where blob `digest` is in the layout directory `layout`.
pub(crate) fn blob_path(layout: &Path, digest: &Digest) -> PathBuf {
    layout.join(blob_name(digest))
}

/// The layout's `index.json`.
pub(crate) fn read_index(layout: &Path) -> Result<ImageIndex, LayoutError> {
    let path = layout.join(INDEX_FILE);
    let bytes = std::fs::read(&path).map_err(|source| LayoutError::Read { path: path.clone(), source })?;
    serde_json::from_slice(&bytes).map_err(|source| LayoutError::Parse { path, source })
}

/// Blob `digest` read whole (at most `limit` bytes) and checked against its digest.
pub(crate) fn read_blob(layout: &Path, digest: &Digest, limit: u64) -> Result<Vec<u8>, LayoutError> {
    let path = blob_path(layout, digest);
    let read_error = |source| LayoutError::Read { path: path.clone(), source };
    let file = File::open(&path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes).map_err(read_error)?;
    if bytes.len() as u64 > limit {
        return Err(LayoutError::TooLarge { path, limit });
    }
    let mut hasher = DigestHasher::for_digest(digest);
    hasher.update(&bytes);
    let actual = hasher.finish();
    if actual != *digest {
        return Err(LayoutError::DigestMismatch { path, expected: digest.clone(), actual });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_name_files_by_algorithm_and_hex() {
        let digest = Digest::sha256_of(b"");
        assert_eq!(blob_name(&digest), format!("blobs/sha256/{}", digest.hex()));
        let path = blob_path(Path::new("/layout"), &digest);
        assert_eq!(path, Path::new("/layout/blobs/sha256").join(digest.hex()));
    }

    #[test]
    fn blobs_are_read_checked_and_bounded() {
        let layout = tempfile::tempdir().unwrap();
        let bytes = b"{}";
        let digest = Digest::sha256_of(bytes);
        let path = blob_path(layout.path(), &digest);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(read_blob(layout.path(), &digest, 2).unwrap(), bytes);
        assert!(matches!(read_blob(layout.path(), &digest, 1), Err(LayoutError::TooLarge { limit: 1, .. })));
        std::fs::write(&path, b"[]").unwrap();
        assert!(matches!(read_blob(layout.path(), &digest, u64::MAX), Err(LayoutError::DigestMismatch { .. })));
        assert!(matches!(read_index(layout.path()), Err(LayoutError::Read { .. })));
        std::fs::write(layout.path().join(INDEX_FILE), r#"{"schemaVersion":2,"manifests":[]}"#).unwrap();
        assert!(read_index(layout.path()).unwrap().manifests.is_empty());
    }
}
