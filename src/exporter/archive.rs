//! OCI image layouts (as a tar or a directory) and docker archives (`docker load`,
//! `podman load`), written from blobs in the store.
//!
//! Archives are deterministic: entries in a fixed order, mode 0644/0755, owner 0, mtime from
//! SOURCE_DATE_EPOCH or 0. A docker archive is an OCI layout plus the `manifest.json` that
//! `docker load` reads, as Docker 25 and BuildKit write it.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;

use super::image::{BuiltImage, copy_blob};
use crate::oci::layout::{INDEX_FILE, LAYOUT_FILE, LAYOUT_VERSION, REF_NAME, blob_name};
use crate::oci::manifest::ImageIndex;
use crate::oci::{Digest, Reference};
use crate::store::Store;
use crate::store::atomic::{replace_file, write_file};

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

/// Writes the layout as a tar stream.
pub(crate) fn write_tar(
    store: &Store,
    image: &BuiltImage,
    names: &[Reference],
    annotations: &BTreeMap<String, String>,
    docker: bool,
    mtime: i64,
    out: &mut dyn Write,
) -> io::Result<()> {
    let mut builder = tar::Builder::new(out);
    builder.mode(tar::HeaderMode::Deterministic);
    for directory in ["blobs/", "blobs/sha256/"] {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_mtime(mtime.max(0) as u64);
        header.set_size(0);
        builder.append_data(&mut header, directory, io::empty())?;
    }
    for (name, content) in layout_files(image, names, annotations, docker) {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_mtime(mtime.max(0) as u64);
        match content {
            Content::Bytes(bytes) => {
                header.set_size(bytes.len() as u64);
                builder.append_data(&mut header, &name, &bytes[..])?;
            }
            Content::Blob(digest, size) => {
                header.set_size(size);
                let blob = store.open_blob(&digest)?;
                builder.append_data(&mut header, &name, blob)?;
            }
        }
    }
    builder.into_inner()?.flush()
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
    let blobs = directory.join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(error(&blobs))?;
    for (name, content) in layout_files(image, names, annotations, false) {
        let path = directory.join(&name);
        match content {
            Content::Bytes(bytes) => write_file(&path, &bytes).map_err(error(&path))?,
            Content::Blob(digest, _) => {
                if path.exists() {
                    continue;
                }
                replace_file(&path, &mut |file| copy_blob(store, &digest, file).map(|_| ())).map_err(error(&path))?;
            }
        }
    }
    Ok(())
}
