//! A layer as the stages hand it around: a snapshot directory of the store named by its diff
//! id, or one known only by its blob in an imported cache (lazy) until something needs it.
//!
//! The type lives here, beside the snapshots it names, so that ops (which make layers) and the
//! exporter (which writes them out) share it without the exporter reaching up into ops. Bringing
//! a lazy layer in needs ops' unpacking; the exporter asks for it through [`LayerFetcher`],
//! which ops implement and `cli` hands over (as `ops::lazy::Fetcher`).

use std::error::Error;
use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::oci::{Descriptor, DiffId, Digest};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layer {
    pub diff_id: DiffId,
    /// The snapshot directory.
    pub path: PathBuf,
    /// When the layer was first made: its history timestamp.
    pub created_at: i64,
    /// Where the layer's blob is when its snapshot is not in the store yet (a step that hit a
    /// `--cache-from` cache): fetched only when something needs it (`ops::lazy`).
    pub remote: Option<RemoteBlob>,
}

impl Layer {
    /// Whether the snapshot must still be fetched before the layer's files can be read.
    pub(crate) fn is_lazy(&self) -> bool {
        self.remote.is_some() && !self.path.is_dir()
    }
}

/// Where the blobs of an imported cache are read from: a registry repository or an OCI layout.
pub(crate) trait BlobSource: Send + Sync {
    /// Names the source in messages: the reference, or the directory.
    fn name(&self) -> &str;
    /// Writes the bytes of blob `digest` to `out`, reporting (bytes done, total).
    fn fetch(&self, digest: &Digest, size: u64, out: &mut dyn Write, progress: &mut dyn FnMut(u64, u64)) -> Result<(), String>;
    /// (registry, repository) for a registry source: a push to another repository of the same
    /// registry can mount the blob instead of uploading it.
    fn registry_repository(&self) -> Option<(String, String)> {
        None
    }
}

/// A blob and the source that has it.
#[derive(Clone)]
pub(crate) struct RemoteBlob {
    pub blob: Descriptor,
    pub source: Arc<dyn BlobSource>,
}

impl fmt::Debug for RemoteBlob {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} from {}", self.blob.digest, self.source.name())
    }
}

impl PartialEq for RemoteBlob {
    fn eq(&self, other: &RemoteBlob) -> bool {
        self.blob.digest == other.blob.digest
    }
}

impl Eq for RemoteBlob {}

/// Transfer progress: (id, bytes done, total, done).
pub(crate) type Status<'a> = dyn Fn(&str, u64, Option<u64>, bool) + Sync + 'a;

/// Why a lazy layer could not be brought in; its text is the fetcher's error's, said as it is.
pub(crate) type FetchError = Box<dyn Error + Send + Sync>;

/// Brings lazy layers in for the exporter (implemented by `ops::lazy::Fetcher`).
pub(crate) trait LayerFetcher: Sync {
    /// The layers with every lazy one fetched, unpacked and recorded; the others as they are.
    fn materialize(&self, layers: &[Layer], cancel: &AtomicBool, status: &Status) -> Result<Vec<Layer>, FetchError>;
    /// The compressed blob of a lazy layer, fetched into the store: its digest and size.
    fn fetch_blob(&self, layer: &Layer, remote: &RemoteBlob, status: &Status) -> Result<(Digest, u64), FetchError>;
}
