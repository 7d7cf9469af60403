//! Assembles an image from the solved layers: compressed layer blobs, the config and the
//! manifest, all as blobs in the store.
//!
//! A layer is compressed once per (diff id, compression, level): the blob's digest is recorded
//! and reused, so an unchanged layer keeps its digest across builds and exports. Base image
//! layers keep their original blobs (re-compressing would change their digests). Layers are
//! compressed in parallel (rayon). With `rewrite-timestamp` and SOURCE_DATE_EPOCH, layers are
//! re-written with mtimes clamped to the epoch (new diff ids, not memoized).

use std::collections::BTreeMap;
use std::io::{self, Write};

use rayon::prelude::*;

use crate::oci::image_config::{ImageDocument, RootFs};
use crate::oci::manifest::ImageManifest;
use crate::oci::media_types::{DOCKER_CONFIG, DOCKER_MANIFEST, OCI_CONFIG, OCI_MANIFEST};
use crate::oci::time::rfc3339;
use crate::oci::{Cancellable, Compression, Descriptor, DiffId, Platform};
use crate::snapshot::layer_tar::{LayerTarOptions, write_layer_tar};
use crate::snapshot::parallel_gzip::{DEFAULT_GZIP_LEVEL, GzipLayerError, write_gzip_layer};
use crate::store::layer::{FetchError, Layer, LayerFetcher, Status};
use crate::store::{BlobRow, Store, StoreError, now};
use std::path::Path;
use std::sync::atomic::AtomicBool;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ImageError {
    #[error("failed to write the layer of `{tree}`")]
    Layer { tree: String, source: crate::snapshot::layer_tar::LayerTarError },
    #[error("failed to compress the layer of `{tree}`")]
    Compress { tree: String, source: io::Error },
    /// A lazy layer that could not be fetched (said as the fetcher says it).
    #[error(transparent)]
    Fetch(FetchError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Database(#[from] crate::store::DatabaseError),
}

/// How to encode the image.
#[derive(Debug, Clone)]
pub(crate) struct Encoding {
    pub compression: Compression,
    pub level: Option<i32>,
    pub oci_mediatypes: bool,
    /// SOURCE_DATE_EPOCH, used for history times and, with `rewrite_timestamp`, file mtimes.
    pub epoch: Option<i64>,
    pub rewrite_timestamp: bool,
    pub manifest_annotations: BTreeMap<String, String>,
}

/// An image whose blobs are all in the store.
#[derive(Debug, Clone)]
pub(crate) struct BuiltImage {
    pub manifest: Descriptor,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

impl BuiltImage {
    pub(crate) fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.layers.iter().chain([&self.config, &self.manifest])
    }
}

/// One layer blob: (descriptor, diff id). A known blob with the asked compression is reused;
/// a lazy layer (an imported cache hit) gives its own blob when the compression matches, else
/// its files are fetched and compressed.
pub(crate) fn layer_blob(
    store: &Store,
    fetcher: &dyn LayerFetcher,
    layer: &Layer,
    encoding: &Encoding,
    cancel: &AtomicBool,
    status: &Status,
) -> Result<(Descriptor, DiffId), ImageError> {
    let compression = encoding.compression.name();
    let level = encoding.level.map(i64::from).unwrap_or(-1);
    let clamp = if encoding.rewrite_timestamp { encoding.epoch } else { None };
    let media_type = encoding.compression.layer_media_type(encoding.oci_mediatypes).to_string();
    // `rewrite-timestamp` rewrites only the layers builds made: a base image's layer keeps its
    // blob (level -1), whatever its times, as BuildKit does (measured with the oracle).
    if clamp.is_some() {
        let base = store.database().blob_for(&layer.diff_id, compression, -1)?;
        if let Some((digest, blob)) = base.and_then(|blob| Some((store.intact_blob(&blob)?, blob))) {
            return Ok((
                Descriptor { media_type, digest, size: blob.size, annotations: BTreeMap::new(), platform: None },
                layer.diff_id.clone(),
            ));
        }
    }
    if clamp.is_none() {
        let database = store.database();
        // Base image blobs (level -1) are reused whatever level was asked for.
        let existing = match database.blob_for(&layer.diff_id, compression, level)? {
            Some(blob) => Some(blob),
            None => database.blob_for(&layer.diff_id, compression, -1)?,
        };
        drop(database);
        if let Some((digest, blob)) = existing.and_then(|blob| Some((store.intact_blob(&blob)?, blob))) {
            return Ok((
                Descriptor { media_type, digest, size: blob.size, annotations: BTreeMap::new(), platform: None },
                layer.diff_id.clone(),
            ));
        }
        if let Some(remote) =
            layer.remote.as_ref().filter(|remote| Compression::of_media_type(&remote.blob.media_type) == encoding.compression)
        {
            let (digest, size) = fetcher.fetch_blob(layer, remote, status).map_err(ImageError::Fetch)?;
            return Ok((Descriptor { media_type, digest, size, annotations: BTreeMap::new(), platform: None }, layer.diff_id.clone()));
        }
    }
    let materialized;
    let layer = if layer.is_lazy() {
        materialized = fetcher.materialize(std::slice::from_ref(layer), cancel, status).map_err(ImageError::Fetch)?;
        &materialized[0]
    } else {
        layer
    };
    let (descriptor, diff_id) = compress_tree(store, &layer.path, encoding.compression, encoding.level, clamp, cancel)?;
    // Recorded under the diff id of what was written, rewritten times included: a blob in the
    // store has a row, so `cache du` counts it and prune can remove it (a `rewrite-timestamp`
    // export left rowless blobs that du missed).
    let row = BlobRow::layer(descriptor.digest.clone(), diff_id.clone(), &descriptor.media_type, level, descriptor.size, now());
    store.database().put_blob(&row)?;
    Ok((Descriptor { media_type, ..descriptor }, diff_id))
}

/// Writes the deterministic layer tar of the directory `tree`, compressed, as a blob in the
/// store: its (OCI media-typed) descriptor and the tar's diff id.
pub(crate) fn compress_tree(
    store: &Store,
    tree: &Path,
    compression: Compression,
    level: Option<i32>,
    clamp_mtime: Option<i64>,
    cancel: &AtomicBool,
) -> Result<(Descriptor, DiffId), ImageError> {
    let options = LayerTarOptions { clamp_mtime };
    let name = tree.display().to_string();
    let compress_error = |source| ImageError::Compress { tree: name.clone(), source };
    let layer_error = |source| ImageError::Layer { tree: name.clone(), source };
    let (summary, digest, size) = match compression {
        Compression::Gzip => {
            let level = level.map(|l| l.clamp(0, 9) as u32).unwrap_or(DEFAULT_GZIP_LEVEL);
            write_gzip_layer(store, tree, &options, level, cancel).map_err(|error| match error {
                GzipLayerError::Tar(source) => layer_error(source),
                GzipLayerError::Compress(source) => compress_error(source),
                GzipLayerError::Store(error) => ImageError::Store(error),
            })?
        }
        Compression::Zstd => {
            let writer = Cancellable { inner: store.blob_writer()?, cancel };
            let mut encoder = zstd::Encoder::new(writer, level.unwrap_or(3)).map_err(compress_error)?;
            let summary = write_layer_tar(tree, &mut encoder, &options).map_err(layer_error)?;
            let (digest, size) = encoder.finish().map_err(compress_error)?.inner.finish()?;
            (summary, digest, size)
        }
        Compression::Uncompressed => {
            let mut writer = Cancellable { inner: store.blob_writer()?, cancel };
            let summary = write_layer_tar(tree, &mut writer, &options).map_err(layer_error)?;
            writer.flush().map_err(compress_error)?;
            let (digest, size) = writer.inner.finish()?;
            (summary, digest, size)
        }
    };
    let media_type = compression.layer_media_type(true).to_string();
    Ok((Descriptor { media_type, digest, size, annotations: BTreeMap::new(), platform: None }, summary.diff_id))
}

/// Writes the layer blobs, config and manifest of `layers` with the frontend's `document`.
pub(crate) fn build(
    store: &Store,
    fetcher: &dyn LayerFetcher,
    layers: &[Layer],
    document: &ImageDocument,
    encoding: &Encoding,
    cancel: &AtomicBool,
    status: &Status,
) -> Result<BuiltImage, ImageError> {
    let blobs: Vec<(Descriptor, DiffId)> =
        layers.par_iter().map(|layer| layer_blob(store, fetcher, layer, encoding, cancel, status)).collect::<Result<_, _>>()?;
    let mut document = document.clone();
    document.rootfs = RootFs { kind: "layers".into(), diff_ids: blobs.iter().map(|(_, diff_id)| diff_id.clone()).collect() };
    fill_history_times(&mut document, layers, encoding.epoch);
    let config_bytes = serde_json::to_vec(&document).unwrap_or_default();
    let (config_digest, config_size) = store.put_blob(&config_bytes)?;
    let (config_type, manifest_type) = if encoding.oci_mediatypes { (OCI_CONFIG, OCI_MANIFEST) } else { (DOCKER_CONFIG, DOCKER_MANIFEST) };
    let config = Descriptor {
        media_type: config_type.into(),
        digest: config_digest,
        size: config_size,
        annotations: BTreeMap::new(),
        platform: None,
    };
    let layer_descriptors: Vec<Descriptor> = blobs.into_iter().map(|(descriptor, _)| descriptor).collect();
    let manifest = ImageManifest {
        annotations: encoding.manifest_annotations.clone(),
        ..ImageManifest::new(manifest_type, config.clone(), layer_descriptors.clone())
    };
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap_or_default();
    let (manifest_digest, manifest_size) = store.put_blob(&manifest_bytes)?;
    let now = now();
    let mut database = store.database();
    for (digest, size, media_type) in [(&config.digest, config.size, config_type), (&manifest_digest, manifest_size, manifest_type)] {
        database.put_blob(&BlobRow::metadata(digest.clone(), size, media_type, now))?;
    }
    Ok(BuiltImage {
        manifest: Descriptor {
            media_type: manifest_type.into(),
            digest: manifest_digest,
            size: manifest_size,
            annotations: BTreeMap::new(),
            platform: Some(Platform {
                architecture: document.architecture.clone(),
                os: document.os.clone(),
                variant: document.variant.clone(),
            }),
        },
        config,
        layers: layer_descriptors,
    })
}

/// BuildKit's rule: history entries without a time take the creation time of their layer;
/// entries without a layer take the previous entry's time (or the next layer's when first);
/// the image's `created` is the last entry's time. With SOURCE_DATE_EPOCH, the frontend has set
/// every new entry's time and `created` is the epoch.
fn fill_history_times(document: &mut ImageDocument, layers: &[Layer], epoch: Option<i64>) {
    let layer_entries = document.history.iter().filter(|entry| !entry.empty_layer).count();
    // Layers without a history entry of their own (none for Dockerfile builds) are skipped.
    let skip = layers.len().saturating_sub(layer_entries);
    let mut layer_times = layers.iter().skip(skip).map(|layer| layer.created_at);
    let mut pending: Vec<usize> = Vec::new();
    let mut previous: Option<String> = None;
    for index in 0..document.history.len() {
        let with_layer = !document.history[index].empty_layer;
        let layer_time = if with_layer { layer_times.next() } else { None };
        if document.history[index].created.is_none() {
            match (layer_time, &previous) {
                (Some(time), _) => document.history[index].created = Some(rfc3339(time)),
                (None, Some(previous)) => document.history[index].created = Some(previous.clone()),
                (None, None) => pending.push(index),
            }
        }
        if let Some(created) = document.history[index].created.clone() {
            for waiting in pending.drain(..) {
                document.history[waiting].created = Some(created.clone());
            }
            previous = Some(created);
        }
    }
    document.created = match epoch {
        Some(epoch) => Some(rfc3339(epoch)),
        None => previous.or_else(|| layers.last().map(|layer| rfc3339(layer.created_at))),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Digest;
    use crate::oci::image_config::History;

    #[test]
    fn history_times_come_from_layers_and_fill_forward() {
        let mut document = ImageDocument::default();
        for (created_by, empty) in [("ENV A=1", true), ("COPY a / # buildkit", false), ("CMD [\"x\"]", true)] {
            document.history.push(History { created_by: Some(created_by.into()), empty_layer: empty, ..Default::default() });
        }
        let layers = vec![Layer {
            diff_id: DiffId::new(Digest::sha256_of(b"x")),
            path: "/nonexistent".into(),
            created_at: 1_700_000_000,
            remote: None,
        }];
        fill_history_times(&mut document, &layers, None);
        let times: Vec<_> = document.history.iter().map(|entry| entry.created.clone().unwrap()).collect();
        assert_eq!(times, vec!["2023-11-14T22:13:20Z"; 3]);
        assert_eq!(document.created.as_deref(), Some("2023-11-14T22:13:20Z"));
    }
}
