//! OCI image layouts (as a tar or a directory) and docker archives (`docker load`,
//! `podman load`), written from blobs in the store.
//!
//! Archives are deterministic: entries in a fixed order, mode 0644/0755, owner 0, mtime from
//! SOURCE_DATE_EPOCH or 0. A docker archive is an OCI layout plus the `manifest.json` that
//! `docker load` reads, as Docker 25 and BuildKit write it.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use super::image::BuiltImage;
use crate::oci::layout::{INDEX_FILE, LAYOUT_FILE, LAYOUT_VERSION, REF_NAME, blob_name};
use crate::oci::manifest::ImageIndex;
use crate::oci::{Digest, Reference};
use crate::store::Store;
use crate::store::atomic::{replace_output_file, write_file};

#[derive(Debug, thiserror::Error)]
#[error("failed to write `{path}`")]
pub(crate) struct ArchiveError {
    pub path: String,
    #[source]
    pub source: io::Error,
}

#[derive(Serialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: Vec<String>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// `index.json` of the layout: one manifest, named by each reference, its descriptor carrying
/// the `annotation-manifest-descriptor.*` keys.
fn index_json(image: &BuiltImage, names: &[Reference], descriptor_annotations: &BTreeMap<String, String>) -> Vec<u8> {
    let mut described = image.manifest.clone();
    described.annotations.extend(descriptor_annotations.iter().map(|(key, value)| (key.clone(), value.clone())));
    let mut manifests = Vec::new();
    if names.is_empty() {
        manifests.push(described.clone());
    }
    for name in names {
        let mut descriptor = described.clone();
        descriptor.annotations.insert("io.containerd.image.name".into(), name.stored_name());
        descriptor.annotations.insert(REF_NAME.into(), name.manifest_selector().to_string());
        manifests.push(descriptor);
    }
    serde_json::to_vec(&ImageIndex::new(manifests)).unwrap_or_default()
}

/// The files of the layout (name, bytes or blob digest), in archive order.
enum Content {
    Bytes(Vec<u8>),
    Blob(Digest, u64),
}

fn layout_files(image: &BuiltImage, names: &[Reference], annotations: &BTreeMap<String, String>, docker: bool) -> Vec<(String, Content)> {
    let mut files = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for blob in image.blobs() {
        if seen.insert(blob.digest.clone()) {
            files.push((blob_name(&blob.digest), Content::Blob(blob.digest.clone(), blob.size)));
        }
    }
    files.push((INDEX_FILE.into(), Content::Bytes(index_json(image, names, annotations))));
    if docker {
        let manifest = vec![DockerManifestEntry {
            config: blob_name(&image.config.digest),
            repo_tags: names.iter().map(Reference::familiar_name).collect(),
            layers: image.layers.iter().map(|layer| blob_name(&layer.digest)).collect(),
        }];
        files.push(("manifest.json".into(), Content::Bytes(serde_json::to_vec(&manifest).unwrap_or_default())));
    }
    files.push((LAYOUT_FILE.into(), Content::Bytes(LAYOUT_VERSION.to_vec())));
    files
}

/// What [`write_tar`] writes with these arguments, as one digest: the same identity, the same
/// bytes (the layout's files in order, their names and contents, the entries' mtime, docker or
/// OCI). The version tag changes whenever `write_tar` would write other bytes for the same files.
pub(crate) fn identity(
    image: &BuiltImage,
    names: &[Reference],
    annotations: &BTreeMap<String, String>,
    docker: bool,
    mtime: i64,
) -> Digest {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    hasher.update(format!("rbuild.archive.v1 docker={docker} mtime={mtime}\n"));
    for (name, content) in layout_files(image, names, annotations, docker) {
        match content {
            Content::Bytes(bytes) => hasher.update(format!("{name} bytes {}\n", Digest::sha256_of(&bytes).hex())),
            Content::Blob(digest, size) => hasher.update(format!("{name} blob {digest} {size}\n")),
        }
    }
    Digest::from_sha256(hasher)
}

/// Writes the layout as a tar stream (ustar entries, as `tar::Builder` writes them). With
/// `direct`, the regular file under `out`, a blob whose bytes were checked before is copied into
/// it by the kernel ([`DirectFile`]) instead of read through the hash and written by rbuild.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_tar(
    store: &Store,
    image: &BuiltImage,
    names: &[Reference],
    annotations: &BTreeMap<String, String>,
    docker: bool,
    mtime: i64,
    out: &mut dyn Write,
    direct: Option<&DirectFile>,
) -> io::Result<()> {
    for directory in ["blobs/", "blobs/sha256/"] {
        out.write_all(tar_header(directory, tar::EntryType::Directory, 0o755, 0, mtime)?.as_bytes())?;
    }
    for (name, content) in layout_files(image, names, annotations, docker) {
        match content {
            Content::Bytes(bytes) => {
                out.write_all(tar_header(&name, tar::EntryType::Regular, 0o644, bytes.len() as u64, mtime)?.as_bytes())?;
                out.write_all(&bytes)?;
                pad_block(out, bytes.len() as u64)?;
            }
            Content::Blob(digest, size) => {
                out.write_all(tar_header(&name, tar::EntryType::Regular, 0o644, size, mtime)?.as_bytes())?;
                copy_blob(store, &digest, size, out, direct)?;
                pad_block(out, size)?;
            }
        }
    }
    // The end of the archive: two zero blocks.
    out.write_all(&[0; 1024])?;
    out.flush()
}

/// One ustar header of the layout's tar.
fn tar_header(name: &str, kind: tar::EntryType, mode: u32, size: u64, mtime: i64) -> io::Result<tar::Header> {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_mtime(mtime.max(0) as u64);
    header.set_size(size);
    header.set_path(name)?;
    header.set_cksum();
    Ok(header)
}

/// Zeros up to the next 512-byte block after an entry's `size` bytes.
fn pad_block(out: &mut dyn Write, size: u64) -> io::Result<()> {
    let rest = (512 - size % 512) % 512;
    out.write_all(&[0; 512][..rest as usize])
}

/// The regular file an archive is written to (under its buffered writer): checked blobs are
/// copied into it by the kernel (`copy_file_range`, or its fallbacks in `std::io::copy`), in
/// pieces between which a cancel is seen. On the benchmark's 1 GiB layer, the archive took 2.6 s
/// when every blob was hashed again and copied through rbuild.
pub(crate) struct DirectFile<'a> {
    pub file: &'a File,
    pub cancel: &'a AtomicBool,
}

/// How much the kernel copies between two looks at the cancel flag.
const DIRECT_PIECE: u64 = 64 << 20;

impl DirectFile<'_> {
    /// Copies `length` bytes of `source` from its position: the bytes copied, fewer when the
    /// source ends first.
    pub(crate) fn copy_from(&self, source: &File, length: u64) -> io::Result<u64> {
        let mut target = self.file;
        let mut copied = 0;
        while copied < length {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(io::Error::other("canceled"));
            }
            let piece = io::copy(&mut Read::take(source, (length - copied).min(DIRECT_PIECE)), &mut target)?;
            if piece == 0 {
                break;
            }
            copied += piece;
        }
        Ok(copied)
    }
}

/// Writes the layout as a directory (`tar=false`); an existing layout there gains the image.
pub(crate) fn write_directory(
    store: &Store,
    image: &BuiltImage,
    names: &[Reference],
    annotations: &BTreeMap<String, String>,
    directory: &Path,
) -> Result<(), ArchiveError> {
    let error = |path: &Path| {
        let path = path.display().to_string();
        move |source| ArchiveError { path, source }
    };
    // Nothing cancels a layout directory's copies, as before they were made by the kernel.
    let never = AtomicBool::new(false);
    let blobs = directory.join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(error(&blobs))?;
    for (name, content) in layout_files(image, names, annotations, false) {
        let path = directory.join(&name);
        match content {
            Content::Bytes(bytes) => write_file(&path, &bytes).map_err(error(&path))?,
            Content::Blob(digest, size) => {
                if path.exists() {
                    continue;
                }
                replace_output_file(&path, &mut |file| {
                    let direct = DirectFile { file: &*file, cancel: &never };
                    copy_blob(store, &digest, size, &mut &*file, Some(&direct))
                })
                .map_err(error(&path))?;
            }
        }
    }
    Ok(())
}

/// Copies the blob `digest` of the store, `size` bytes, into `out`, failing on a damaged one
/// ([`Store::open_blob`]) or one of another size: by the kernel into `direct`, the file under
/// `out`, when its bytes were checked before.
fn copy_blob(store: &Store, digest: &Digest, size: u64, out: &mut dyn Write, direct: Option<&DirectFile>) -> io::Result<()> {
    let mut blob = store.open_blob(digest)?;
    let copied = match (direct, blob.checked_file()) {
        (Some(direct), Some(file)) => {
            out.flush()?;
            direct.copy_from(file, size)?
        }
        _ => io::copy(&mut blob, out)?,
    };
    if copied != size {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the blob {digest} in the state root has {copied} bytes where its descriptor says {size}"),
        ));
    }
    Ok(())
}
