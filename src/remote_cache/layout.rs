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

use serde_json::{Value, json};

use super::CacheError;
use crate::graph::Digest;
use crate::oci::Descriptor;
use crate::oci::media_types::OCI_INDEX;
use crate::ops::image::layout_blob_path;
use crate::store::atomic::replace_file;

const REF_NAME: &str = "org.opencontainers.image.ref.name";

pub(super) struct Layout {
    dir: PathBuf,
}

impl Layout {
    pub(super) fn new(dir: &Path) -> Layout {
        Layout { dir: dir.to_path_buf() }
    }

    pub(super) fn blob_path(&self, digest: &str) -> PathBuf {
        layout_blob_path(&self.dir, digest)
    }

    fn read_error(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
        move |source| CacheError::Read { path: path.display().to_string(), source }
    }

    fn write_error(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
        move |source| CacheError::Write { path: path.display().to_string(), source }
    }

    fn index(&self) -> Result<Option<Value>, CacheError> {
        let path = self.dir.join("index.json");
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|error| CacheError::Invalid { location: path.display().to_string(), message: error.to_string() }),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(Layout::read_error(&path)(error)),
        }
    }

    /// The digest of the manifest tagged `tag`, or `digest` itself when the index lists it.
    /// `None` when the directory has no such cache.
    pub(super) fn manifest_digest(&self, tag: &str, digest: Option<&str>) -> Result<Option<String>, CacheError> {
        let Some(index) = self.index()? else { return Ok(None) };
        let entries = index["manifests"].as_array().cloned().unwrap_or_default();
        let found = entries.iter().find(|entry| match digest {
            Some(digest) => entry["digest"] == digest,
            None => entry["annotations"][REF_NAME] == tag,
        });
        Ok(found.and_then(|entry| entry["digest"].as_str()).map(String::from))
    }

    /// A blob read whole (at most `limit` bytes) and checked against its digest.
    pub(super) fn read_blob(&self, digest: &str, limit: u64) -> Result<Vec<u8>, CacheError> {
        let path = self.blob_path(digest);
        let file = File::open(&path).map_err(Layout::read_error(&path))?;
        let mut bytes = Vec::new();
        file.take(limit + 1).read_to_end(&mut bytes).map_err(Layout::read_error(&path))?;
        let invalid = |message: String| CacheError::Invalid { location: path.display().to_string(), message };
        if bytes.len() as u64 > limit {
            return Err(invalid(format!("larger than {limit} bytes")));
        }
        let actual = Digest::of(&bytes).0;
        if actual != digest {
            return Err(invalid(format!("has digest {actual}, not {digest}")));
        }
        Ok(bytes)
    }

    /// Streams a blob to `out` (the caller checks the digest).
    pub(super) fn copy_blob(&self, digest: &str, out: &mut dyn Write, progress: &mut dyn FnMut(u64, u64)) -> io::Result<()> {
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
        let oci_layout = self.dir.join("oci-layout");
        if !oci_layout.exists() {
            self.write_atomically(&oci_layout, &mut |out| out.write_all(br#"{"imageLayoutVersion":"1.0.0"}"#))?;
        }
        let mut entries: Vec<Value> = self.index()?.and_then(|index| index["manifests"].as_array().cloned()).unwrap_or_default();
        entries.retain(|entry| entry["annotations"][REF_NAME] != tag);
        entries.push(json!({
            "mediaType": manifest.media_type,
            "digest": manifest.digest,
            "size": manifest.size,
            "annotations": { REF_NAME: tag },
        }));
        let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries });
        let bytes = serde_json::to_vec(&index).unwrap_or_default();
        self.write_atomically(&self.dir.join("index.json"), &mut |out| out.write_all(&bytes))?;
        self.remove_unused_blobs(&entries)
    }

    fn remove_unused_blobs(&self, entries: &[Value]) -> Result<(), CacheError> {
        let mut used = HashSet::new();
        for entry in entries {
            let Some(digest) = entry["digest"].as_str() else { continue };
            used.insert(digest.to_string());
            // A manifest that cannot be read keeps everything: never delete what may be in use.
            let Ok(bytes) = fs::read(self.blob_path(digest)) else { return Ok(()) };
            let Ok(manifest) = serde_json::from_slice::<Value>(&bytes) else { return Ok(()) };
            for blob in manifest["layers"].as_array().into_iter().flatten().chain([&manifest["config"]]) {
                if let Some(digest) = blob["digest"].as_str() {
                    used.insert(digest.to_string());
                }
            }
        }
        let blobs = self.dir.join("blobs/sha256");
        let listing = fs::read_dir(&blobs).map_err(Layout::read_error(&blobs))?;
        for entry in listing.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !used.contains(&format!("sha256:{name}")) {
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
