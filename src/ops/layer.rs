//! The one way a new layer ([`Layer`], the store's type) enters the store, and a record's
//! layers read back.
//!
//! A layer is a snapshot directory (overlay format) named by its diff id: the digest of the
//! deterministic tar `snapshot::layer_tar` writes from it. Committing computes that digest,
//! moves the directory into place and records the row; an empty directory is no layer at all.
//!
//! **One pass.** A layer the build will export as a gzip blob (the solver knows which: see
//! `Environment::compress_layer`) is compressed by the same pass that computes its diff id:
//! the one tar stream feeds the diff-id hash, the parallel gzip and the blob's hash, and the
//! blob is recorded as the export would record it (gzip, the default level), so the export
//! finds it and reads the layer's files no second time. A layer that is not exported, or not as
//! gzip, is only hashed.

use std::io;
use std::sync::atomic::AtomicBool;

use crate::oci::{Cancellable, Compression, DiffId};
use crate::snapshot::layer_tar::{LayerTarOptions, write_layer_tar};
use crate::snapshot::parallel_gzip::{DEFAULT_GZIP_LEVEL, GzipLayerError, write_gzip_layer};
use crate::store::{BlobRow, LayerKind, LayerRow, PendingRow, Store, StoreError, now};

pub(crate) use crate::store::layer::Layer;

#[derive(Debug, thiserror::Error)]
pub(crate) enum LayerError {
    #[error("failed to compute the diff of `{path}`")]
    Diff { path: String, source: crate::snapshot::layer_tar::LayerTarError },
    #[error("failed to compress `{path}`")]
    Compress { path: String, source: io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Database(#[from] crate::store::DatabaseError),
}

/// Turns a finished snapshot directory into a layer. An empty directory is an empty layer:
/// BuildKit exports a step with no change as a real (empty) layer too. `kind` is what `cache
/// du` calls it (image layers are recorded by `image`, never here). With `gzip_blob`, the
/// layer's gzip blob is written by the same pass (see the module docs).
pub(crate) fn commit(
    store: &Store,
    directory: tempfile::TempDir,
    description: &str,
    kind: LayerKind,
    gzip_blob: bool,
    cancel: &AtomicBool,
) -> Result<Layer, LayerError> {
    let path_text = directory.path().display().to_string();
    let diff_error = |source| LayerError::Diff { path: path_text.clone(), source };
    let compress_error = |source| LayerError::Compress { path: path_text.clone(), source };
    let options = LayerTarOptions { clamp_mtime: None };
    let (summary, blob) = if gzip_blob {
        let (summary, digest, size) =
            write_gzip_layer(store, directory.path(), &options, DEFAULT_GZIP_LEVEL, cancel).map_err(|error| match error {
                GzipLayerError::Tar(source) => diff_error(source),
                GzipLayerError::Compress(source) => compress_error(source),
                GzipLayerError::Store(error) => LayerError::Store(error),
            })?;
        (summary, Some((digest, size)))
    } else {
        let summary = write_layer_tar(directory.path(), Cancellable { inner: io::sink(), cancel }, &options).map_err(diff_error)?;
        (summary, None)
    };
    let path = store.commit_snapshot(directory, &summary.diff_id)?;
    let size = summary.apparent_size;
    let now = now();
    // A layer made before keeps its first creation time (its history timestamp).
    let created_at = store.layer_row(&summary.diff_id)?.map_or(now, |row| row.created_at);
    let mut rows = vec![PendingRow::Layer(LayerRow {
        diff_id: summary.diff_id.clone(),
        size,
        created_at: now,
        last_used_at: now,
        from_image: false,
        description: description.to_string(),
        kind,
    })];
    if let Some((digest, size)) = blob {
        // As the export records a blob it compressed at the default level (-1).
        rows.push(PendingRow::Blob(BlobRow::layer(
            digest,
            summary.diff_id.clone(),
            Compression::Gzip.layer_media_type(true),
            -1,
            size,
            now,
        )));
    }
    store.put_when_synced(rows)?;
    Ok(Layer { diff_id: summary.diff_id, path, created_at, remote: None })
}

/// The layers of a record, if every one is still in the store (else the record is a miss).
pub(crate) fn load(store: &Store, diff_ids: &[DiffId]) -> Result<Option<Vec<Layer>>, StoreError> {
    let mut layers = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let Some(row) = store.layer_row(diff_id)? else { return Ok(None) };
        let path = store.snapshot_path(diff_id);
        if !path.is_dir() {
            return Ok(None);
        }
        layers.push(Layer { diff_id: diff_id.clone(), path, created_at: row.created_at, remote: None });
    }
    Ok(Some(layers))
}
