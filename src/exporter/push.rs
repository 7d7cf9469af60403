//! Pushes a built image to a registry: every blob the registry lacks (layers, then the
//! config), then the manifest under the name's tag. Blobs come from the store; the registry
//! client skips those the registry has and mounts those another repository of the same
//! registry has. Progress in BuildKit's words: `pushing layers`, per-blob bytes, `pushing
//! manifest for NAME@DIGEST`.

use std::collections::HashMap;

use super::image::BuiltImage;
use crate::oci::manifest::ImageManifest;
use crate::oci::{Digest, Reference};
use crate::progress::Task;
use crate::registry::Client;
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub(crate) enum PushError {
    #[error("invalid image name `{name}`: {message}")]
    Name { name: String, message: String },
    #[error("failed to push `{name}`: {message}")]
    Push { name: String, message: String },
    #[error("`{name}` was stored as `{actual}`, not `{expected}`")]
    DigestMismatch { name: String, expected: Digest, actual: Digest },
}

/// Layers of base images pulled from the same registry, by digest → their repository, so the
/// push can mount them instead of uploading them.
fn mount_sources(store: &Store, target: &Reference) -> HashMap<Digest, String> {
    let mut sources = HashMap::new();
    let Ok(tags) = store.database().image_tags() else { return sources };
    for (key, manifest_digest) in tags {
        let name = key.split(' ').next().unwrap_or_default();
        let Ok(pulled) = Reference::parse(name) else { continue };
        if pulled.registry != target.registry || pulled.repository == target.repository {
            continue;
        }
        let Ok(bytes) = std::fs::read(store.blob_path(&manifest_digest)) else { continue };
        let Ok(manifest) = serde_json::from_slice::<ImageManifest>(&bytes) else { continue };
        for layer in manifest.layers {
            sources.entry(layer.digest).or_insert_with(|| pulled.repository.clone());
        }
    }
    sources
}

pub(super) fn push(store: &Store, client: &Client, image: &BuiltImage, name: &str, task: &Task) -> Result<(), PushError> {
    let reference = Reference::parse(name).map_err(|error| PushError::Name { name: name.into(), message: error.to_string() })?;
    let failed = |error: crate::registry::RegistryError| PushError::Push { name: name.into(), message: error.to_string() };
    task.status("pushing layers", 0, None, false);
    let mounts = mount_sources(store, &reference);
    for blob in image.layers.iter().chain([&image.config]) {
        let mut open = || -> std::io::Result<Box<dyn std::io::Read + Send + '_>> { Ok(Box::new(store.open_blob(&blob.digest)?)) };
        let mut report = |done: u64, total: u64| task.status(blob.digest.as_str(), done, Some(total), done >= total);
        let mount_from = mounts.get(&blob.digest).map(String::as_str);
        client.push_blob(&reference, &blob.digest, blob.size, mount_from, &mut open, &mut report).map_err(failed)?;
    }
    task.status("pushing layers", 0, None, true);
    let manifest = std::fs::read(store.blob_path(&image.manifest.digest))
        .map_err(|error| PushError::Push { name: name.into(), message: error.to_string() })?;
    let id = format!("pushing manifest for {reference}@{}", image.manifest.digest);
    task.status(&id, 0, None, false);
    let pushed = client.push_manifest(&reference, &image.manifest.media_type, &manifest).map_err(failed)?;
    if pushed != image.manifest.digest {
        return Err(PushError::DigestMismatch { name: name.into(), expected: image.manifest.digest.clone(), actual: pushed });
    }
    task.status(&id, 0, None, true);
    Ok(())
}
