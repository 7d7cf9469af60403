//! Reading caches for `--cache-from`: the manifest and the config only. Blobs stay where they
//! are until a hit needs them (`ops::lazy`); each record's layers remember their source.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::Arc;

use super::CacheError;
use super::format::{CONFIG_MEDIA_TYPE, CacheConfig};
use super::layout::Layout;
use super::spec::{CacheImport, CacheLocation};
use crate::oci::manifest::ImageManifest;
use crate::oci::{Descriptor, Digest, Reference};
use crate::ops::lazy::{BlobSource, ImportedCache, RemoteBlob, RemoteLayer, RemoteRecord};
use crate::progress::{Event, Sender, error_text};
use crate::registry::Client;

/// A cache config is small JSON, but records many steps; this bounds memory all the same.
const CONFIG_LIMIT: usize = 64 << 20;
const MANIFEST_LIMIT: u64 = 4 << 20;

/// Reads every source, in order (the first source's record wins a key). A source that cannot
/// be read is reported on its progress line and skipped: the build goes on without it.
pub(crate) fn import(sources: &[CacheImport], registry: &Arc<Client>, progress: &Sender) -> ImportedCache {
    let mut imported = ImportedCache::default();
    for source in sources {
        let task = progress.task(format!("importing cache manifest from {}", source.location));
        task.start();
        match read(&source.location, registry) {
            Ok((config, blob_source, blobs)) => {
                add(&mut imported, &config, &blob_source, &blobs);
                task.finish();
            }
            Err(error) => {
                tracing::debug!("cache import from {} failed: {error}", source.location);
                let text = error_text(&error);
                // Also in the summary: the tty view shows only that the line failed.
                progress.send(Event::Warning { message: format!("cache import from {} skipped: {text}", source.location) });
                task.fail_message(text);
            }
        }
    }
    imported
}

type Read = (CacheConfig, Arc<dyn BlobSource>, HashMap<Digest, Descriptor>);

fn read(location: &CacheLocation, registry: &Arc<Client>) -> Result<Read, CacheError> {
    let invalid = |message: String| CacheError::Invalid { location: location.to_string(), message };
    let (config_type, config_bytes, layers, source): (String, Vec<u8>, Vec<Descriptor>, Arc<dyn BlobSource>) = match location {
        CacheLocation::Registry { reference } => {
            let parsed = Reference::parse(reference).map_err(|error| invalid(error.to_string()))?;
            let artifact =
                registry.fetch_artifact(&parsed, CONFIG_LIMIT)?.ok_or_else(|| CacheError::NotFound { location: location.to_string() })?;
            let layers = artifact.layers.into_iter().collect();
            let source = Arc::new(RegistrySource { client: registry.clone(), reference: parsed, name: reference.clone() });
            (artifact.config_media_type, artifact.config, layers, source)
        }
        CacheLocation::Local { dir, tag, digest } => {
            let layout = Layout::new(dir);
            let manifest_digest = layout
                .manifest_digest(tag, digest.as_deref())?
                .ok_or_else(|| CacheError::NotFound { location: format!("{}:{}", dir.display(), digest.as_deref().unwrap_or(tag)) })?;
            let manifest: ImageManifest =
                serde_json::from_slice(&layout.read_blob(&manifest_digest, MANIFEST_LIMIT)?).map_err(|error| invalid(error.to_string()))?;
            let config_bytes = layout.read_blob(&manifest.config.digest, CONFIG_LIMIT as u64)?;
            (manifest.config.media_type, config_bytes, manifest.layers, Arc::new(LayoutSource { layout, name: dir.display().to_string() }))
        }
    };
    if config_type != CONFIG_MEDIA_TYPE {
        return Err(invalid(format!("not an rbuild cache (its config is `{config_type}`)")));
    }
    let digests: HashSet<&Digest> = layers.iter().map(|layer| &layer.digest).collect();
    let config = CacheConfig::parse(&config_bytes, &digests).map_err(invalid)?;
    let blobs = layers.iter().map(|layer| (layer.digest.clone(), layer.clone())).collect();
    Ok((config, source, blobs))
}

/// Adds a parsed config's records and mounts (every blob and layer they name is there: checked
/// by [`CacheConfig::parse`]).
fn add(imported: &mut ImportedCache, config: &CacheConfig, source: &Arc<dyn BlobSource>, blobs: &HashMap<Digest, Descriptor>) {
    let remote = |digest: &Digest| RemoteBlob { blob: blobs[digest].clone(), source: source.clone() };
    let layers = config.layers_by_diff_id();
    for record in &config.records {
        if imported.records.contains_key(&record.key) {
            continue;
        }
        let layers = record
            .layers
            .iter()
            .map(|diff_id| {
                let layer = layers[diff_id];
                RemoteLayer { diff_id: diff_id.clone(), created_at: layer.created, blob: remote(&layer.blob) }
            })
            .collect();
        imported
            .records
            .insert(record.key.clone(), RemoteRecord { description: record.description.clone(), inputs: record.inputs.clone(), layers });
    }
    for mount in &config.mounts {
        imported.mounts.entry(mount.id.clone()).or_insert_with(|| remote(&mount.blob));
    }
}

struct RegistrySource {
    client: Arc<Client>,
    reference: Reference,
    name: String,
}

impl BlobSource for RegistrySource {
    fn name(&self) -> &str {
        &self.name
    }

    fn fetch(&self, digest: &Digest, size: u64, out: &mut dyn Write, progress: &mut dyn FnMut(u64, u64)) -> Result<(), String> {
        self.client.fetch_blob(&self.reference, digest, Some(size), out, progress).map_err(|error| error.to_string())
    }

    fn registry_repository(&self) -> Option<(String, String)> {
        Some((self.reference.registry.clone(), self.reference.repository.clone()))
    }
}

struct LayoutSource {
    layout: Layout,
    name: String,
}

impl BlobSource for LayoutSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn fetch(&self, digest: &Digest, _size: u64, out: &mut dyn Write, progress: &mut dyn FnMut(u64, u64)) -> Result<(), String> {
        self.layout
            .copy_blob(digest, out, progress)
            .map_err(|error| format!("failed to read {}: {error}", self.layout.blob_path(digest).display()))
    }
}
