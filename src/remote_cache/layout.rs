//! The OCI layout directory of `--cache-to type=local,dest=DIR` / `--cache-from type=local,src=DIR`
//! (a directory a CI system saves and restores between jobs).
//!
//! `index.json` lists one manifest per tag (`org.opencontainers.image.ref.name`). An export
//! writes the blobs first (each via a temporary file renamed into place), then replaces
//! `index.json` the same way, then removes the blobs no listed manifest uses: the directory
//! never grows without bound, and a crash at any point leaves the previous cache readable.
//! Exports to one directory take turns on an flock of `DIR/.rbuild-lock`.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::CacheError;
use crate::oci::layout::{self, INDEX_FILE, LAYOUT_FILE, LAYOUT_VERSION, LayoutError, REF_NAME};
use crate::oci::manifest::{ImageIndex, ImageManifest};
use crate::oci::{Descriptor, Digest};
use crate::store::atomic::replace_file;

pub(super) struct Layout {
    dir: PathBuf,
}

impl Layout {
    pub(super) fn new(dir: &Path) -> Layout {
        Layout { dir: dir.to_path_buf() }
    }

    pub(super) fn blob_path(&self, digest: &Digest) -> PathBuf {
        layout::blob_path(&self.dir, digest)
    }

    fn read_error(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
        move |source| CacheError::Read { path: path.display().to_string(), source }
    }

    fn write_error(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
        move |source| CacheError::Write { path: path.display().to_string(), source }
    }

    fn index(&self) -> Result<Option<ImageIndex>, CacheError> {
        match layout::read_index(&self.dir) {
            Ok(index) => Ok(Some(index)),
            Err(LayoutError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(cache_error(error)),
        }
    }

    /// The digest of the manifest tagged `tag`, or `digest` itself when the index lists it.
    /// `None` when the directory has no such cache.
    pub(super) fn manifest_digest(&self, tag: &str, digest: Option<&str>) -> Result<Option<Digest>, CacheError> {
        let Some(index) = self.index()? else { return Ok(None) };
        let found = index.manifests.into_iter().find(|entry| match digest {
            Some(digest) => entry.digest == digest,
            None => entry.annotations.get(REF_NAME).is_some_and(|name| name == tag),
        });
        Ok(found.map(|entry| entry.digest))
    }

    /// A blob read whole (at most `limit` bytes) and checked against its digest.
    pub(super) fn read_blob(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>, CacheError> {
        layout::read_blob(&self.dir, digest, limit).map_err(cache_error)
    }

    /// Streams a blob to `out` (the caller checks the digest).
    pub(super) fn copy_blob(&self, digest: &Digest, out: &mut dyn Write, progress: &mut dyn FnMut(u64, u64)) -> io::Result<()> {
        let mut file = File::open(self.blob_path(digest))?;
        let total = file.metadata()?.len();
        let mut buffer = vec![0u8; 1 << 20];
        let mut done = 0u64;
        loop {
            let count = file.read(&mut buffer)?;
            if count == 0 {
                break;
            }
            out.write_all(&buffer[..count])?;
            done += count as u64;
            progress(done, total);
        }
        Ok(())
    }

    /// Takes the directory's export lock (created with the directory).
    pub(super) fn lock(&self) -> Result<File, CacheError> {
        fs::create_dir_all(self.dir.join("blobs/sha256")).map_err(Layout::write_error(&self.dir))?;
        let path = self.dir.join(".rbuild-lock");
        let file = File::options().create(true).truncate(false).write(true).open(&path).map_err(Layout::write_error(&path))?;
        file.lock().map_err(Layout::write_error(&path))?;
        Ok(file)
    }

    /// Whether the directory has the blob (with its size).
    pub(super) fn has_blob(&self, descriptor: &Descriptor) -> bool {
        fs::metadata(self.blob_path(&descriptor.digest)).is_ok_and(|metadata| metadata.len() == descriptor.size)
    }

    /// Writes a blob of the store unless the directory has it already (a damaged one fails,
    /// see `Store::open_blob`).
    pub(super) fn put_blob(&self, descriptor: &Descriptor, store: &crate::store::Store) -> Result<(), CacheError> {
        let target = self.blob_path(&descriptor.digest);
        if self.has_blob(descriptor) {
            return Ok(());
        }
        let source = store.blob_path(&descriptor.digest);
        let mut input = store.open_blob(&descriptor.digest).map_err(Layout::read_error(&source))?;
        self.write_atomically(&target, &mut |out| io::copy(&mut input, out).map(|_| ()))
    }

    /// Points `tag` at `manifest` (other tags stay), then removes unused blobs.
    pub(super) fn tag(&self, tag: &str, manifest: &Descriptor) -> Result<(), CacheError> {
        let oci_layout = self.dir.join(LAYOUT_FILE);
        if !oci_layout.exists() {
            self.write_atomically(&oci_layout, &mut |out| out.write_all(LAYOUT_VERSION))?;
        }
        let mut entries = self.index()?.map(|index| index.manifests).unwrap_or_default();
        entries.retain(|entry| entry.annotations.get(REF_NAME).is_none_or(|name| name != tag));
        let mut entry = Descriptor::new(manifest.media_type.clone(), manifest.digest.clone(), manifest.size);
        entry.annotations.insert(REF_NAME.into(), tag.into());
        entries.push(entry);
        let index = ImageIndex::new(entries);
        let bytes = sorted_json(&index);
        self.write_atomically(&self.dir.join(INDEX_FILE), &mut |out| out.write_all(&bytes))?;
        self.remove_unused_blobs(&index.manifests)
    }

    fn remove_unused_blobs(&self, entries: &[Descriptor]) -> Result<(), CacheError> {
        let mut used = HashSet::new();
        for entry in entries {
            used.insert(entry.digest.clone());
            // A manifest that cannot be read keeps everything: never delete what may be in use.
            let Ok(bytes) = fs::read(self.blob_path(&entry.digest)) else { return Ok(()) };
            let Ok(manifest) = serde_json::from_slice::<ImageManifest>(&bytes) else { return Ok(()) };
            used.extend(manifest.layers.into_iter().chain([manifest.config]).map(|blob| blob.digest));
        }
        // Only `blobs/sha256` is cleaned: rbuild writes no other algorithm.
        let used_names: HashSet<&str> = used.iter().filter(|digest| digest.algorithm() == "sha256").map(Digest::hex).collect();
        let blobs = self.dir.join("blobs/sha256");
        let listing = fs::read_dir(&blobs).map_err(Layout::read_error(&blobs))?;
        for entry in listing.flatten() {
            if !used_names.contains(entry.file_name().to_string_lossy().as_ref()) {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    fn write_atomically(&self, target: &Path, write: &mut dyn FnMut(&mut File) -> io::Result<()>) -> Result<(), CacheError> {
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(Layout::write_error(target))?;
        }
        replace_file(target, write).map_err(Layout::write_error(target))
    }
}

/// A layout that cannot be read, in the cache's words (a blob's path names the cache).
fn cache_error(error: LayoutError) -> CacheError {
    let invalid = |path: PathBuf, message: String| CacheError::Invalid { location: path.display().to_string(), message };
    match error {
        LayoutError::Read { path, source } => CacheError::Read { path: path.display().to_string(), source },
        LayoutError::Parse { path, source } => invalid(path, source.to_string()),
        LayoutError::TooLarge { path, limit } => invalid(path, format!("larger than {limit} bytes")),
        LayoutError::DigestMismatch { path, expected, actual } => invalid(path, format!("has digest {actual}, not {expected}")),
    }
}

/// A cache manifest or index as rbuild has always written it: through a JSON map, so every
/// object's keys are sorted (unlike an image's manifest, which has BuildKit's field order).
/// Changing these bytes would change the digest of every cache exported.
pub(super) fn sorted_json(document: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_value(document).and_then(|value| serde_json::to_vec(&value)).unwrap_or_default()
}
