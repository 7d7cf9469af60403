//! A layer as ops hand it around, and the one way a new layer enters the store.
//!
//! A layer is a snapshot directory (overlay format) named by its diff id: the digest of the
//! deterministic tar `snapshot::layer_tar` writes from it. Committing computes that digest,
//! moves the directory into place and records the row; an empty directory is no layer at all.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use crate::oci::DiffId;
use crate::snapshot::layer_tar::{LayerTarOptions, write_layer_tar};
use crate::store::usage::tree_size;
use crate::store::{LayerRow, Store, StoreError, now};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layer {
    pub diff_id: DiffId,
    /// The snapshot directory.
    pub path: PathBuf,
    /// When the layer was first made: its history timestamp.
    pub created_at: i64,
    /// Where the layer's blob is when its snapshot is not in the store yet (a step that hit a
    /// `--cache-from` cache): fetched only when something needs it ([`super::lazy`]).
    pub remote: Option<super::lazy::RemoteBlob>,
}

impl Layer {
    /// Whether the snapshot must still be fetched before the layer's files can be read.
    pub(crate) fn is_lazy(&self) -> bool {
        self.remote.is_some() && !self.path.is_dir()
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum LayerError {
    #[error("failed to compute the diff of `{path}`")]
    Diff { path: String, source: crate::snapshot::layer_tar::LayerTarError },
    #[error("failed to measure `{path}`")]
    Size { path: String, source: io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Database(#[from] crate::store::DatabaseError),
}

/// Turns a finished snapshot directory into a layer. An empty directory is an empty layer:
/// BuildKit exports a step with no change as a real (empty) layer too.
pub(crate) fn commit(
    store: &Store,
    directory: tempfile::TempDir,
    description: &str,
    from_image: bool,
    cancel: &AtomicBool,
) -> Result<Layer, LayerError> {
    let path_text = directory.path().display().to_string();
    let sink = super::Cancellable { inner: io::sink(), cancel };
    let summary = write_layer_tar(directory.path(), sink, &LayerTarOptions { clamp_mtime: None })
        .map_err(|source| LayerError::Diff { path: path_text.clone(), source })?;
    let path = store.commit_snapshot(directory, &summary.diff_id)?;
    let size = tree_size(&path).map_err(|source| LayerError::Size { path: path.display().to_string(), source })?;
    let now = now();
    store.database().put_layer(&LayerRow {
        diff_id: summary.diff_id.to_string(),
        size,
        created_at: now,
        last_used_at: now,
        from_image,
        description: description.to_string(),
    })?;
    let created_at = store.database().layer(summary.diff_id.as_str())?.map(|row| row.created_at).unwrap_or(now);
    Ok(Layer { diff_id: summary.diff_id, path, created_at, remote: None })
}

/// The layers of a record (its diff ids as the database keeps them), if every one is still in
/// the store (else the record is a miss; so is one whose diff id is not a digest).
pub(crate) fn load(store: &Store, diff_ids: &[String]) -> Result<Option<Vec<Layer>>, StoreError> {
    let database = store.database();
    let mut layers = Vec::with_capacity(diff_ids.len());
    for text in diff_ids {
        let Ok(diff_id) = DiffId::parse(text) else { return Ok(None) };
        let Some(row) = database.layer(text)? else { return Ok(None) };
        let path = store.snapshot_path(&diff_id);
        if !path.is_dir() {
            return Ok(None);
        }
        layers.push(Layer { diff_id, path, created_at: row.created_at, remote: None });
    }
    Ok(Some(layers))
}
