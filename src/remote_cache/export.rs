//! Writing a cache for `--cache-to`: the records of this build (all of them with `mode=max`,
//! those of the exported image's steps with `mode=min`), their layer blobs (the blobs the image
//! export used when the compression is the same, so nothing is compressed twice), the cache
//! mounts with `cache-mounts=true`, the config and the manifest; then a push (blobs the
//! registry has are skipped) or an OCI layout directory.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use super::CacheError;
use super::format::{CONFIG_MEDIA_TYPE, CacheConfig, LayerEntry, MountEntry, RecordEntry};
use super::layout::{Layout, sorted_json};
use super::spec::{CacheExport, CacheLocation, CacheMode};
use crate::exporter::image::{Encoding, compress_tree, layer_blob};
use crate::oci::manifest::ImageManifest;
use crate::oci::media_types::OCI_MANIFEST;
use crate::oci::{Descriptor, DiffId, Digest, Reference};
use crate::ops::Layer;
use crate::ops::lazy::{Fetcher, RemoteBlob, Status, fetch_layer_blob};
use crate::progress::{Sender, Task};
use crate::registry::Client;
use crate::store::{CacheKey, Store};

/// One step's result, as the build used it.
#[derive(Debug, Clone)]
pub(crate) struct ExportRecord {
    pub key: CacheKey,
    pub description: String,
    pub inputs: Vec<(String, String)>,
    pub layers: Vec<Layer>,
}

/// What an export needs besides the cache spec.
pub(crate) struct ExportSet<'a> {
    pub records: &'a [ExportRecord],
    /// The diff ids of the exported image, for `mode=min`.
    pub image_layers: &'a [DiffId],
    /// Cache mount directories by id, for `cache-mounts=true`.
    pub mounts: &'a [(String, PathBuf)],
}

/// Writes the cache, on a task of its own in BuildKit's words. The error names the cache, so
/// the task's line and the build's last line say which export failed.
pub(crate) fn export(
    store: &Store,
    registry: &Client,
    spec: &CacheExport,
    set: &ExportSet,
    progress: &Sender,
    cancel: &AtomicBool,
) -> Result<(), CacheError> {
    let name = match spec.location {
        CacheLocation::Registry { .. } => "exporting cache to registry",
        CacheLocation::Local { .. } => "exporting cache to client directory",
    };
    let task = progress.task(name);
    task.start();
    let result = write(store, registry, spec, set, &task, cancel)
        .map_err(|error| CacheError::Export { location: spec.location.to_string(), source: Box::new(error) });
    task.end_with(&result);
    result
}

fn write(
    store: &Store,
    registry: &Client,
    spec: &CacheExport,
    set: &ExportSet,
    task: &Task,
    cancel: &AtomicBool,
) -> Result<(), CacheError> {
    let status = |id: &str, current, total, done| task.status(id, current, total, done);
    status("preparing build cache for export", 0, None, false);
    let image_layers: HashSet<&DiffId> = set.image_layers.iter().collect();
    let chosen: Vec<&ExportRecord> = set
        .records
        .iter()
        .filter(|record| spec.mode == CacheMode::Max || record.layers.iter().all(|layer| image_layers.contains(&layer.diff_id)))
        .collect();
    let mut layers: BTreeMap<&str, &Layer> = BTreeMap::new();
    for record in &chosen {
        for layer in &record.layers {
            layers.entry(layer.diff_id.as_str()).or_insert(layer);
        }
    }
    let encoding = Encoding {
        compression: spec.compression,
        level: spec.compression_level,
        oci_mediatypes: true,
        epoch: None,
        rewrite_timestamp: false,
        manifest_annotations: BTreeMap::new(),
    };
    let layers: Vec<&Layer> = layers.into_values().collect();
    let blobs: Vec<(Descriptor, DiffId)> =
        layers.par_iter().map(|layer| cache_blob(store, layer, &encoding, cancel, &status)).collect::<Result<_, _>>()?;
    // Blobs of lazy layers, fetched into the store only if the target lacks them.
    let lazy: HashMap<Digest, (&Layer, &RemoteBlob)> =
        layers.iter().filter_map(|layer| layer.remote.as_ref().map(|remote| (remote.blob.digest.clone(), (*layer, remote)))).collect();
    let ensure_stored = |digest: &Digest| -> Result<(), CacheError> {
        if let Some((layer, remote)) = lazy.get(digest)
            && !store.blob_is_intact(digest, remote.blob.size)
        {
            fetch_layer_blob(store, layer, remote, &status).map_err(|error| crate::exporter::image::ImageError::Fetch(error.into()))?;
        }
        Ok(())
    };
    let mut mount_blobs = Vec::new();
    if spec.cache_mounts {
        for (id, dir) in set.mounts.iter().filter(|(_, dir)| dir.is_dir()) {
            let (descriptor, _) = compress_tree(store, dir, spec.compression, spec.compression_level, None, cancel)?;
            mount_blobs.push((id.clone(), descriptor));
        }
    }
    if cancel.load(Ordering::SeqCst) {
        return Err(CacheError::Canceled);
    }
    let config = CacheConfig::new(
        layers
            .iter()
            .zip(&blobs)
            .map(|(layer, (blob, _))| LayerEntry { blob: blob.digest.clone(), diff_id: layer.diff_id.clone(), created: layer.created_at })
            .collect(),
        chosen
            .iter()
            .map(|record| RecordEntry {
                key: record.key.clone(),
                description: record.description.clone(),
                layers: record.layers.iter().map(|layer| layer.diff_id.clone()).collect(),
                inputs: record.inputs.clone(),
            })
            .collect(),
        mount_blobs.iter().map(|(id, blob)| MountEntry { id: id.clone(), blob: blob.digest.clone() }).collect(),
    );
    status("preparing build cache for export", 0, None, true);
    let config_bytes = config.to_bytes();
    let (config_digest, config_size) = store.put_blob(&config_bytes)?;
    let config_descriptor = Descriptor {
        media_type: CONFIG_MEDIA_TYPE.into(),
        digest: config_digest,
        size: config_size,
        annotations: BTreeMap::new(),
        platform: None,
    };
    // The config lists layers by diff id; the manifest lists their blobs in the same order.
    let by_diff_id: std::collections::HashMap<&str, &Descriptor> =
        layers.iter().zip(&blobs).map(|(layer, (blob, _))| (layer.diff_id.as_str(), blob)).collect();
    let mut manifest_layers: Vec<Descriptor> = Vec::new();
    for entry in &config.layers {
        let blob = by_diff_id[entry.diff_id.as_str()];
        if !manifest_layers.iter().any(|existing| existing.digest == blob.digest) {
            manifest_layers.push(blob.clone());
        }
    }
    for (_, blob) in &mount_blobs {
        if !manifest_layers.iter().any(|existing| existing.digest == blob.digest) {
            manifest_layers.push(blob.clone());
        }
    }
    let manifest_bytes = sorted_json(&ImageManifest::new(OCI_MANIFEST, config_descriptor.clone(), manifest_layers.clone()));
    let (manifest_digest, manifest_size) = store.put_blob(&manifest_bytes)?;
    let manifest = Descriptor {
        media_type: OCI_MANIFEST.into(),
        digest: manifest_digest,
        size: manifest_size,
        annotations: BTreeMap::new(),
        platform: None,
    };
    let uploads: Vec<&Descriptor> = manifest_layers.iter().chain([&config_descriptor]).collect();
    let written = match &spec.location {
        CacheLocation::Registry { reference } => {
            push(store, registry, reference, &uploads, &manifest, &mount_sources(&lazy, reference), &ensure_stored, &status)
        }
        CacheLocation::Local { dir, tag, .. } => {
            let layout = Layout::new(dir);
            let _lock = layout.lock()?;
            for blob in &uploads {
                let id = writing(blob);
                status(&id, 0, None, false);
                if !layout.has_blob(blob) {
                    ensure_stored(&blob.digest)?;
                    layout.put_blob(blob, store)?;
                }
                status(&id, 0, None, true);
            }
            let id = format!("writing cache manifest {}", manifest.digest);
            status(&id, 0, None, false);
            layout.put_blob(&manifest, store)?;
            layout.tag(tag, &manifest)?;
            status(&id, 0, None, true);
            Ok(())
        }
    };
    // Mount tars, the config and the manifest have no row: nothing else will use them.
    for (_, blob) in &mount_blobs {
        if store.database().blob(&blob.digest)?.is_none() {
            let _ = std::fs::remove_file(store.blob_path(&blob.digest));
        }
    }
    written
}

/// A layer's blob for the cache: the one the store has with this compression, or, for a lazy
/// layer whose blob has it, that blob as it is (not downloaded: the target may have it).
fn cache_blob(
    store: &Store,
    layer: &Layer,
    encoding: &Encoding,
    cancel: &AtomicBool,
    status: &Status,
) -> Result<(Descriptor, DiffId), CacheError> {
    let compression = encoding.compression.name();
    if let Some(remote) = &layer.remote
        && layer.is_lazy()
        && crate::oci::Compression::of_media_type(&remote.blob.media_type) == encoding.compression
        && store.database().blob_for(&layer.diff_id, compression, encoding.level.map(i64::from).unwrap_or(-1))?.is_none()
    {
        let descriptor = Descriptor {
            media_type: remote.blob.media_type.clone(),
            digest: remote.blob.digest.clone(),
            size: remote.blob.size,
            annotations: BTreeMap::new(),
            platform: None,
        };
        return Ok((descriptor, layer.diff_id.clone()));
    }
    Ok(layer_blob(store, &Fetcher { store }, layer, encoding, cancel, status)?)
}

/// Lazy layers whose blobs are in another repository of the target's registry: mounted, not
/// uploaded (and so never downloaded).
fn mount_sources(lazy: &HashMap<Digest, (&Layer, &RemoteBlob)>, reference: &str) -> HashMap<Digest, String> {
    let Ok(target) = Reference::parse(reference) else { return HashMap::new() };
    lazy.iter()
        .filter_map(|(digest, (_, remote))| {
            let (registry, repository) = remote.source.registry_repository()?;
            (registry == target.registry && repository != target.repository).then(|| (digest.clone(), repository))
        })
        .collect()
}

/// BuildKit's status line for a cache blob.
fn writing(blob: &Descriptor) -> String {
    let what = if blob.media_type == CONFIG_MEDIA_TYPE { "config" } else { "layer" };
    format!("writing {what} {}", blob.digest)
}

#[allow(clippy::too_many_arguments)]
fn push(
    store: &Store,
    registry: &Client,
    reference: &str,
    uploads: &[&Descriptor],
    manifest: &Descriptor,
    mounts: &HashMap<Digest, String>,
    ensure_stored: &(dyn Fn(&Digest) -> Result<(), CacheError> + Sync),
    status: &Status,
) -> Result<(), CacheError> {
    let invalid = |message: String| CacheError::Invalid { location: reference.to_string(), message };
    let target = Reference::parse(reference).map_err(|error| invalid(error.to_string()))?;
    for blob in uploads {
        let path = store.blob_path(&blob.digest);
        // Opened only when the registry lacks the blob and cannot mount it.
        let mut open = || -> std::io::Result<Box<dyn std::io::Read + Send>> {
            ensure_stored(&blob.digest).map_err(std::io::Error::other)?;
            Ok(Box::new(File::open(&path)?))
        };
        let id = writing(blob);
        let mut report = |done: u64, total: u64| status(&id, done, Some(total), done >= total);
        let mount_from = mounts.get(&blob.digest).map(String::as_str);
        registry.push_blob(&target, &blob.digest, blob.size, mount_from, &mut open, &mut report)?;
        status(&id, blob.size, Some(blob.size), true);
    }
    let manifest_bytes = std::fs::read(store.blob_path(&manifest.digest))
        .map_err(|source| CacheError::Read { path: manifest.digest.to_string(), source })?;
    let id = format!("writing cache manifest {}", manifest.digest);
    status(&id, 0, None, false);
    let pushed = registry.push_manifest(&target, OCI_MANIFEST, &manifest_bytes)?;
    if pushed != manifest.digest {
        return Err(invalid(format!("the registry stored the manifest as {pushed}, not {}", manifest.digest)));
    }
    status(&id, 0, None, true);
    Ok(())
}
