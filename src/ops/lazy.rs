//! Layers known by their blob but not yet in the store: the results of steps that hit a cache
//! imported with `--cache-from`.
//!
//! A hit downloads nothing. A lazy layer is fetched only when something needs it:
//! - a step that runs on it needs its files: [`materialize`] fetches the blob, verifies it,
//!   unpacks it into a snapshot and records the layer, like a base image's layer;
//! - an image export needs its compressed blob only: [`fetch_layer_blob`] puts the blob in the
//!   store and records it like a base image's blob, so the export reuses the exact digest.
//!
//! So a build whose every step hits downloads only the blobs of the image it exports.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use super::CacheInput;
use super::image::{ImageError, LayerBlob, archive_ownership, fetch_blob, unpack_layers};
use super::layer::Layer;
use crate::oci::{DiffId, Digest};
use crate::snapshot::extract::{ExtractOptions, WhiteoutMode, decompressed, extract};
use crate::store::layer::{FetchError, LayerFetcher};
use crate::store::{BlobRow, CacheKey, Store, StoreError, now};

pub(crate) use crate::store::layer::{BlobSource, RemoteBlob, Status};

/// The exporter's way to bring lazy layers in ([`LayerFetcher`]): [`materialize`] and
/// [`fetch_layer_blob`] on a store.
pub(crate) struct Fetcher<'a> {
    pub store: &'a Store,
}

impl LayerFetcher for Fetcher<'_> {
    fn materialize(&self, layers: &[Layer], cancel: &AtomicBool, status: &Status) -> Result<Vec<Layer>, FetchError> {
        Ok(materialize(self.store, layers, cancel, status)?)
    }

    fn fetch_blob(&self, layer: &Layer, remote: &RemoteBlob, status: &Status) -> Result<(Digest, u64), FetchError> {
        Ok(fetch_layer_blob(self.store, layer, remote, status)?)
    }
}

/// A cache record offered by an imported cache.
#[derive(Debug, Clone)]
pub(crate) struct RemoteRecord {
    /// The step, as `cache why` and `--debug-cache` name it.
    pub description: String,
    pub inputs: Vec<CacheInput>,
    pub layers: Vec<RemoteLayer>,
}

#[derive(Debug, Clone)]
pub(crate) struct RemoteLayer {
    pub diff_id: DiffId,
    /// When the layer was first made (its history time), on whichever machine made it.
    pub created_at: i64,
    pub blob: RemoteBlob,
}

/// Everything the `--cache-from` sources offer. Where two sources have the same key, the first
/// given wins.
#[derive(Debug, Default)]
pub(crate) struct ImportedCache {
    pub records: HashMap<CacheKey, RemoteRecord>,
    /// `RUN --mount=type=cache` directories by id (exported with `cache-mounts=true`).
    pub mounts: HashMap<String, RemoteBlob>,
}

impl ImportedCache {
    /// The record of `key` and its layers: those the store has as they are, the others lazy.
    pub(crate) fn layers(&self, store: &Store, key: &CacheKey) -> Result<Option<(&RemoteRecord, Vec<Layer>)>, StoreError> {
        let Some(record) = self.records.get(key) else { return Ok(None) };
        let mut layers = Vec::with_capacity(record.layers.len());
        for layer in &record.layers {
            let path = store.snapshot_path(&layer.diff_id);
            let known = store.layer_row(&layer.diff_id)?.filter(|_| path.is_dir());
            layers.push(match known {
                Some(row) => Layer { diff_id: layer.diff_id.clone(), path, created_at: row.created_at, remote: None },
                None => Layer { diff_id: layer.diff_id.clone(), path, created_at: layer.created_at, remote: Some(layer.blob.clone()) },
            });
        }
        Ok(Some((record, layers)))
    }
}

/// Brings the lazy layers among `layers` into the store; the others pass through as they are.
pub(crate) fn materialize(store: &Store, layers: &[Layer], cancel: &AtomicBool, status: &Status) -> Result<Vec<Layer>, ImageError> {
    let lazy: Vec<bool> = layers.iter().map(Layer::is_lazy).collect();
    if !lazy.contains(&true) {
        return Ok(layers.to_vec());
    }
    let mut sources: HashMap<Digest, RemoteBlob> = HashMap::new();
    let mut wanted = Vec::new();
    for (layer, _) in layers.iter().zip(&lazy).filter(|(_, lazy)| **lazy) {
        let Some(remote) = &layer.remote else { continue };
        sources.insert(remote.blob.digest.clone(), remote.clone());
        wanted.push(LayerBlob {
            blob: remote.blob.clone(),
            diff_id: layer.diff_id.clone(),
            created_at: Some(layer.created_at),
            from_image: false,
            description: format!("imported from {}", remote.source.name()),
        });
    }
    let fetch = |digest: &Digest, out: &mut dyn Write| -> Result<(), ImageError> {
        let remote =
            sources.get(digest).ok_or_else(|| ImageError::Pull { reference: digest.to_string(), message: "unknown blob".into() })?;
        fetch_remote(remote, out, status)
    };
    let name = wanted.first().map(|layer| sources[&layer.blob.digest].source.name().to_string()).unwrap_or_default();
    let mut unpacked = unpack_layers(store, cancel, &name, &wanted, &fetch, status)?.into_iter();
    let mut result = Vec::with_capacity(layers.len());
    for (layer, lazy) in layers.iter().zip(lazy) {
        let fetched = if lazy { unpacked.next() } else { None };
        result.push(fetched.unwrap_or_else(|| layer.clone()));
    }
    Ok(result)
}

/// The compressed blob of a lazy layer, fetched into the store and recorded like a base
/// image's blob (level -1), so every export with its compression reuses the same digest.
/// Returns the blob's digest and size.
pub(crate) fn fetch_layer_blob(store: &Store, layer: &Layer, remote: &RemoteBlob, status: &Status) -> Result<(Digest, u64), ImageError> {
    // The row is the blob's: it was looked up by its digest.
    let known = store.database().blob(&remote.blob.digest)?;
    if let Some(row) = known.filter(|row| store.blob_is_intact(&remote.blob.digest, row.size)) {
        return Ok((remote.blob.digest.clone(), row.size));
    }
    let fetch = |_: &Digest, out: &mut dyn Write| fetch_remote(remote, out, status);
    let (digest, size) = fetch_blob(store, remote.source.name(), &remote.blob.digest, &fetch)?;
    store.database().put_blob(&BlobRow::layer(digest.clone(), layer.diff_id.clone(), &remote.blob.media_type, -1, size, now()))?;
    Ok((digest, size))
}

/// Unpacks a cache mount's tar blob into `directory` (which must not exist yet). The blob is
/// verified against its digest before anything is unpacked, and not kept.
pub(crate) fn unpack_mount(store: &Store, remote: &RemoteBlob, directory: &Path, status: &Status) -> Result<(), ImageError> {
    let fetch = |_: &Digest, out: &mut dyn Write| fetch_remote(remote, out, status);
    let (digest, _) = fetch_blob(store, remote.source.name(), &remote.blob.digest, &fetch)?;
    let blob_path = store.blob_path(&digest);
    let unpacked = (|| {
        let read_error = |source| ImageError::Read { path: blob_path.display().to_string(), source };
        let reader = decompressed(File::open(&blob_path).map_err(read_error)?).map_err(read_error)?;
        extract(reader, directory, &ExtractOptions { whiteouts: WhiteoutMode::Literal, ownership: archive_ownership() })
            .map_err(|source| ImageError::Extract { digest: digest.clone(), source })
    })();
    // A blob without a row would wait for `prune`; this one is of no further use.
    if store.database().blob(&digest)?.is_none() {
        let _ = std::fs::remove_file(&blob_path);
    }
    unpacked.map(|_| ())
}

fn fetch_remote(remote: &RemoteBlob, out: &mut dyn Write, status: &Status) -> Result<(), ImageError> {
    let digest = &remote.blob.digest;
    let mut progress = |done: u64, total: u64| status(digest.as_str(), done, Some(total), done >= total && total > 0);
    remote
        .source
        .fetch(digest, remote.blob.size, out, &mut progress)
        .map_err(|message| ImageError::Pull { reference: remote.source.name().into(), message })
}
