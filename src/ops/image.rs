//! Base images: from registries (`FROM busybox`) and from OCI layout directories
//! (`--build-context name=oci-layout://PATH[:tag|@digest]`).
//!
//! Resolving (at frontend time, through the frontend's `ImageResolver`: [`ResolvedImage`] or
//! [`ResolveError`]) picks the manifest and reads the image config, so the frontend can give
//! its ENV, WORKDIR, USER... to the stage: in a layout, by tag, digest or platform from
//! `index.json`; for a registry, the tag the store resolved before (unless `--pull`), else the
//! registry's answer, whose manifest, config and tag the store then records. Running unpacks
//! each layer into a snapshot named by the image's own diff id and copies the compressed blob
//! into the store, so an export reuses the exact blob (same digest) and never depends on the
//! layout directory again. Every blob is verified against its digest,
//! and every layer against its diff id, while it is read.
//!
//! | cache key input        | in key | why                                        |
//! |------------------------|--------|--------------------------------------------|
//! | manifest digest        | yes    | it pins the layers and the config          |
//! | layout path, tag       | no     | names, not content                         |

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use super::layer::Layer;
use super::{CacheInput, Environment};
use crate::graph::ImageSource;
use crate::oci::image_config::ImageDocument;
use crate::oci::layout::{self, LayoutError, REF_NAME};
use crate::oci::manifest::{ImageIndex, ImageManifest};
use crate::oci::media_types::{OCI_CONFIG, is_index};
use crate::oci::{Descriptor, DiffId, Digest, Hashing, Platform, Reference};
use crate::registry::Client;
use crate::snapshot::extract::{ExtractOptions, Ownership, WhiteoutMode, decompressed, extract};
use crate::store::{BlobRow, LayerRow, PendingRow, Store, now};

#[derive(Debug, thiserror::Error)]
pub(crate) enum ImageError {
    #[error("failed to read OCI layout `{path}`")]
    Read { path: String, source: io::Error },
    #[error("invalid OCI layout `{path}`: {message}")]
    Invalid { path: String, message: String },
    #[error("`{reference}` not found in OCI layout `{path}`")]
    NotFound { path: String, reference: String },
    #[error("no manifest for platform `{platform}` in `{reference}`")]
    NoPlatform { reference: String, platform: String },
    #[error("blob `{expected}` of `{path}` has digest `{actual}`")]
    DigestMismatch { path: String, expected: Digest, actual: Digest },
    #[error("failed to unpack layer `{digest}`")]
    Extract { digest: Digest, source: crate::snapshot::extract::ExtractError },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Database(#[from] crate::store::DatabaseError),
    #[error("canceled")]
    Canceled,
    #[error("failed to pull `{reference}`: {message}")]
    Pull { reference: String, message: String },
}

/// Why a base image could not be resolved: the error of the frontend's `ImageResolver`, shown
/// with the span of the `FROM` or `--from` that named the image.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ResolveError {
    #[error(transparent)]
    Layout(#[from] ImageError),
    #[error("invalid image config in `{path}`: {error}")]
    LayoutConfig { path: String, error: serde_json::Error },
    #[error(transparent)]
    Reference(#[from] crate::oci::ReferenceError),
    #[error("failed to resolve source metadata for {name}: {cause}")]
    Metadata { name: String, cause: MetadataError },
}

/// Why a registry image's manifest and config could not be had (from the store or the registry).
#[derive(Debug, thiserror::Error)]
pub(crate) enum MetadataError {
    #[error(transparent)]
    Database(#[from] crate::store::DatabaseError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("no registry configuration")]
    NoRegistry,
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    #[error("the registry's manifest or config does not match its digest")]
    DigestMismatch,
    #[error("invalid image config: {0}")]
    Config(serde_json::Error),
}

/// A base image, resolved before lowering: what the frontend needs to build a stage on it.
#[derive(Debug, Clone)]
pub(crate) struct ResolvedImage {
    pub source: ImageSource,
    /// How progress names it, e.g. `docker.io/library/busybox:latest@sha256:...`.
    pub display: String,
    pub config: ImageDocument,
}

/// Picks a manifest in the layout at `path` and reads its config. `selector` is `:tag`,
/// `@sha256:...` or empty.
pub(crate) fn resolve_oci_layout(path: &Path, selector: &str, platform: &Platform) -> Result<ResolvedImage, ResolveError> {
    let (reference, manifest_digest, config) = choose_in_layout(path, selector, platform)?;
    let config = serde_json::from_slice(&config).map_err(|error| ResolveError::LayoutConfig { path: path.display().to_string(), error })?;
    Ok(ResolvedImage {
        display: format!("{reference}@{manifest_digest}"),
        source: ImageSource::OciLayout { path: path.to_path_buf(), manifest_digest, reference },
        config,
    })
}

/// The manifest `selector` picks in the layout at `path` (for the platform, in a nested index):
/// the reference as users see it, the manifest's digest, and its raw config.
fn choose_in_layout(path: &Path, selector: &str, platform: &Platform) -> Result<(String, Digest, Vec<u8>), ImageError> {
    let path_text = path.display().to_string();
    let unreadable = |message: &str| ImageError::Invalid { path: path_text.clone(), message: message.into() };
    let index = layout::read_index(path).map_err(|error| match error {
        LayoutError::Parse { .. } => unreadable(PARSE_FAILED),
        _ => unreadable(READ_FAILED),
    })?;
    let (tag, digest) = if let Some(digest) = selector.strip_prefix('@') {
        (None, Some(digest.to_string()))
    } else if let Some(tag) = selector.strip_prefix(':') {
        (Some(tag.to_string()), None)
    } else {
        (None, None)
    };
    let reference = format!("oci-layout://{path_text}{selector}");
    let manifests = &index.manifests;
    let chosen = manifests.iter().find(|descriptor| {
        if let Some(digest) = &digest {
            return descriptor.digest == digest.as_str();
        }
        let name = descriptor.annotations.get(REF_NAME).map(String::as_str);
        match (&tag, name) {
            (Some(tag), Some(name)) => name == tag || name.ends_with(&format!(":{tag}")),
            (Some(_), None) => false,
            (None, name) => manifests.len() == 1 || name == Some("latest") || name.is_some_and(|n| n.ends_with(":latest")),
        }
    });
    let Some(descriptor) = chosen else {
        return Err(ImageError::NotFound { path: path_text, reference });
    };
    let mut digest = descriptor.digest.clone();
    let mut media_type = descriptor.media_type.clone();
    // Nested indexes: pick the platform.
    for _ in 0..4 {
        if !is_index(&media_type) {
            break;
        }
        let bytes = read_blob(path, &digest)?;
        let nested: ImageIndex = serde_json::from_slice(&bytes).map_err(|_| unreadable(PARSE_FAILED))?;
        // The best entry by containerd's rules (oci::Platform), as from a registry.
        let found = nested
            .manifests
            .into_iter()
            .filter_map(|candidate| Some((candidate.platform.as_ref()?.match_rank(platform)?, candidate)))
            .min_by_key(|(rank, _)| *rank)
            .map(|(_, candidate)| candidate);
        let Some(found) = found else {
            return Err(ImageError::NoPlatform { reference, platform: platform.to_string() });
        };
        digest = found.digest;
        media_type = found.media_type;
    }
    let manifest_bytes = read_blob(path, &digest)?;
    let manifest: ImageManifest = serde_json::from_slice(&manifest_bytes).map_err(|_| unreadable(PARSE_FAILED))?;
    let config = read_blob(path, &manifest.config.digest)?;
    Ok((reference, digest, config))
}

/// A registry image for the platform: the store's resolved tag unless `pull`, else the
/// registry's (its manifest, config and tag then recorded in the store). Manifest and config
/// from the store are read whole and checked against their digests: a damaged one is fetched
/// again.
pub(crate) fn resolve_registry(
    store: &Store,
    registry: Option<&Client>,
    reference: &Reference,
    platform: &Platform,
    pull: bool,
) -> Result<ResolvedImage, ResolveError> {
    let name = reference.to_string();
    let (manifest_digest, config) = registry_metadata(store, registry, reference, &name, platform, pull)
        .map_err(|cause| ResolveError::Metadata { name: name.clone(), cause })?;
    Ok(ResolvedImage {
        source: ImageSource::Registry { reference: name.clone(), manifest_digest: manifest_digest.clone() },
        display: format!("{name}@{manifest_digest}"),
        config,
    })
}

/// The manifest digest and the config of a registry image (see [`resolve_registry`]).
fn registry_metadata(
    store: &Store,
    registry: Option<&Client>,
    reference: &Reference,
    name: &str,
    platform: &Platform,
    pull: bool,
) -> Result<(Digest, ImageDocument), MetadataError> {
    let key = format!("{name} {platform}");
    let known = if pull { None } else { store.database().image_tag(&key)? };
    let cached = known.and_then(|(manifest, config, _)| {
        store.read_blob(&manifest)?;
        Some((manifest, store.read_blob(&config)?))
    });
    let (manifest_digest, config_bytes) = match cached {
        Some((manifest, bytes)) => (manifest, bytes),
        None => {
            let client = registry.ok_or(MetadataError::NoRegistry)?;
            let resolved = client.resolve(reference, &platform.os, &platform.architecture, platform.variant.as_deref())?;
            let (manifest, _) = store.put_blob(&resolved.manifest)?;
            let (config, _) = store.put_blob(&resolved.config)?;
            if manifest != resolved.manifest_digest || config != resolved.config_digest {
                return Err(MetadataError::DigestMismatch);
            }
            let now = now();
            let mut database = store.database();
            for (digest, size, media_type) in
                [(&manifest, resolved.manifest.len(), resolved.manifest_media_type.as_str()), (&config, resolved.config.len(), OCI_CONFIG)]
            {
                database.put_blob(&BlobRow::metadata(digest.clone(), size as u64, media_type, now))?;
            }
            database.put_image_tag(&key, &manifest, &config, now)?;
            (manifest, resolved.config)
        }
    };
    let config = serde_json::from_slice(&config_bytes).map_err(MetadataError::Config)?;
    Ok((manifest_digest, config))
}

// What a layout that cannot be read or parsed is called: the words of oci-spec's reader, which
// read layouts before `oci::layout` did, kept so that messages stay as they were.
const READ_FAILED: &str = "io operation failed";
const PARSE_FAILED: &str = "serde failed";

/// Reads a small blob of a layout and checks its digest.
fn read_blob(layout: &Path, digest: &Digest) -> Result<Vec<u8>, ImageError> {
    layout::read_blob(layout, digest, u64::MAX).map_err(|error| match error {
        LayoutError::Read { path, source } => ImageError::Read { path: path.display().to_string(), source },
        LayoutError::DigestMismatch { path, expected, actual } => {
            ImageError::DigestMismatch { path: path.display().to_string(), expected, actual }
        }
        other => ImageError::Invalid { path: layout.display().to_string(), message: other.to_string() },
    })
}

pub(crate) fn cache_inputs(source: &ImageSource) -> Vec<CacheInput> {
    match source {
        ImageSource::OciLayout { manifest_digest, .. } | ImageSource::Registry { manifest_digest, .. } => {
            vec![("image".into(), manifest_digest.to_string())]
        }
    }
}

/// Unpacks the image's layers into the store (each once: a known diff id is reused).
pub(crate) fn run(source: &ImageSource, environment: &Environment) -> Result<Vec<Layer>, ImageError> {
    let (path, manifest_digest, reference) = match source {
        ImageSource::OciLayout { path, manifest_digest, reference } => (path, manifest_digest, reference),
        ImageSource::Registry { reference, manifest_digest } => return pull(reference, manifest_digest, environment),
    };
    let manifest_bytes = read_blob(path, manifest_digest)?;
    let manifest: ImageManifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|_| ImageError::Invalid { path: path.display().to_string(), message: PARSE_FAILED.into() })?;
    let config_bytes = read_blob(path, &manifest.config.digest)?;
    import_layers(environment, reference, &config_bytes, &manifest.layers, &|digest, out| {
        let layer_path = layout::blob_path(path, digest);
        let mut file = File::open(&layer_path).map_err(|source| ImageError::Read { path: layer_path.display().to_string(), source })?;
        io::copy(&mut file, out).map_err(|source| ImageError::Read { path: layer_path.display().to_string(), source })?;
        Ok(())
    })
}

/// The layers of a registry image: the manifest and config come from the store (the resolver
/// put them there), the layer blobs from the registry, each only when its diff id is new.
fn pull(reference: &str, manifest_digest: &Digest, environment: &Environment) -> Result<Vec<Layer>, ImageError> {
    let store = environment.store;
    let read = |digest: &Digest| -> Result<Vec<u8>, ImageError> {
        let path = store.blob_path(digest);
        let bytes = std::fs::read(&path).map_err(|source| ImageError::Read { path: path.display().to_string(), source })?;
        let actual = Digest::sha256_of(&bytes);
        if actual != *digest {
            return Err(ImageError::DigestMismatch { path: path.display().to_string(), expected: digest.clone(), actual });
        }
        Ok(bytes)
    };
    let invalid = |message: String| ImageError::Invalid { path: reference.to_string(), message };
    // The resolver read this manifest from the registry (`AnyManifest`) before it stored it.
    let manifest: ImageManifest = serde_json::from_slice(&read(manifest_digest)?).map_err(|error| invalid(error.to_string()))?;
    let config_bytes = read(&manifest.config.digest)?;
    let descriptors = manifest.layers;
    let client = environment.registry.ok_or_else(|| invalid("no registry client".into()))?;
    let parsed = Reference::parse(reference).map_err(|error| invalid(error.to_string()))?;
    let sizes: std::collections::HashMap<Digest, u64> = descriptors.iter().map(|d| (d.digest.clone(), d.size)).collect();
    import_layers(environment, reference, &config_bytes, &descriptors, &|digest, out| {
        let size = sizes.get(digest).copied();
        let mut progress = |done: u64, total: u64| (environment.status)(digest.as_str(), done, Some(total), done >= total && total > 0);
        client
            .fetch_blob(&parsed, digest, size, out, &mut progress)
            .map_err(|error| ImageError::Pull { reference: reference.to_string(), message: error.to_string() })
    })
}

/// Blobs fetched at the same time when an image is pulled.
const PARALLEL_FETCHES: usize = 4;

/// One blob into the store, verified against its digest.
pub(crate) fn fetch_blob(
    store: &Store,
    reference: &str,
    digest: &Digest,
    fetch: &(dyn Fn(&Digest, &mut dyn io::Write) -> Result<(), ImageError> + Sync),
) -> Result<(Digest, u64), ImageError> {
    let mut writer = store.blob_writer()?;
    fetch(digest, &mut writer)?;
    let (stored_digest, size) = writer.finish()?;
    if stored_digest != *digest {
        let _ = std::fs::remove_file(store.blob_path(&stored_digest));
        return Err(ImageError::DigestMismatch { path: reference.to_string(), expected: digest.clone(), actual: stored_digest });
    }
    Ok((stored_digest, size))
}

/// Brings an image's layers into the store, wherever the blobs come from: `fetch` writes a
/// blob's bytes; they land in the store's blobs (verified against the digest), are unpacked
/// into a snapshot (verified against the config's diff id) and recorded. A layer whose diff id
/// the store already has is not fetched at all.
pub(crate) fn import_layers(
    environment: &Environment,
    reference: &str,
    config_bytes: &[u8],
    descriptors: &[Descriptor],
    fetch: &(dyn Fn(&Digest, &mut dyn io::Write) -> Result<(), ImageError> + Sync),
) -> Result<Vec<Layer>, ImageError> {
    let invalid = |message: String| ImageError::Invalid { path: reference.to_string(), message };
    /// The one part of a base image's config the layers need.
    #[derive(serde::Deserialize)]
    struct LayerIds {
        rootfs: Option<DiffIds>,
    }
    #[derive(serde::Deserialize)]
    struct DiffIds {
        diff_ids: Option<Vec<DiffId>>,
    }
    let config: LayerIds = serde_json::from_slice(config_bytes).map_err(|error| invalid(error.to_string()))?;
    let diff_ids = config.rootfs.and_then(|rootfs| rootfs.diff_ids).unwrap_or_default();
    if diff_ids.len() != descriptors.len() {
        return Err(invalid(format!("{} layers but {} diff ids", descriptors.len(), diff_ids.len())));
    }
    let blobs: Vec<LayerBlob> = descriptors
        .iter()
        .zip(diff_ids)
        .map(|(blob, diff_id)| LayerBlob {
            blob: blob.clone(),
            diff_id,
            created_at: None,
            from_image: true,
            description: format!("{reference} layer"),
        })
        .collect();
    unpack_layers(environment.store, environment.cancel, reference, &blobs, fetch, environment.status)
}

/// A layer blob to bring into the store, and what to record about its layer.
#[derive(Debug, Clone)]
pub(crate) struct LayerBlob {
    pub blob: Descriptor,
    pub diff_id: DiffId,
    /// The layer's creation time when known (a cached step's), else now.
    pub created_at: Option<i64>,
    pub from_image: bool,
    pub description: String,
}

/// A blob in the store: (its stored digest, its size).
type FetchedBlob = (Digest, u64);

/// Fetches (a few at once), verifies, unpacks and records the layers the store lacks; `name`
/// names where they come from in errors. Each unpacking is a status `extracting <blob digest>`,
/// bottom layer first, as BuildKit shows it under the `FROM` (no sizes; recorded from BuildKit
/// in `testdata/progress/extracting`).
pub(crate) fn unpack_layers(
    store: &Store,
    cancel: &AtomicBool,
    name: &str,
    layers: &[LayerBlob],
    fetch: &(dyn Fn(&Digest, &mut dyn io::Write) -> Result<(), ImageError> + Sync),
    status: &super::lazy::Status,
) -> Result<Vec<Layer>, ImageError> {
    let invalid = |message: String| ImageError::Invalid { path: name.to_string(), message };
    let check_canceled = || if cancel.load(Ordering::Relaxed) { Err(ImageError::Canceled) } else { Ok(()) };
    // Which layers the store lacks; their blobs are fetched at the same time, on plain threads
    // (a fetch mostly waits on the network), a few at once.
    let mut known = Vec::with_capacity(layers.len());
    for layer in layers {
        let row = store.layer_row(&layer.diff_id)?;
        known.push(row.filter(|_| store.snapshot_path(&layer.diff_id).is_dir()));
    }
    let missing: Vec<usize> = (0..layers.len()).filter(|index| known[*index].is_none()).collect();
    let mut fetched: std::collections::HashMap<usize, FetchedBlob> = std::collections::HashMap::new();
    for batch in missing.chunks(PARALLEL_FETCHES) {
        check_canceled()?;
        let results: Vec<(usize, Result<FetchedBlob, ImageError>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = batch
                .iter()
                .map(|&index| {
                    let digest = layers[index].blob.digest.clone();
                    (index, scope.spawn(move || fetch_blob(store, name, &digest, fetch)))
                })
                .collect();
            handles
                .into_iter()
                .map(|(index, handle)| {
                    let result = handle.join().unwrap_or_else(|_| Err(invalid("a fetch thread panicked".into())));
                    (index, result)
                })
                .collect()
        });
        for (index, result) in results {
            fetched.insert(index, result?);
        }
    }
    let mut unpacked = Vec::new();
    for (index, layer) in layers.iter().enumerate() {
        check_canceled()?;
        let diff_id = &layer.diff_id;
        let blob_digest = layer.blob.digest.clone();
        if let Some(row) = &known[index] {
            unpacked.push(Layer { diff_id: diff_id.clone(), path: store.snapshot_path(diff_id), created_at: row.created_at, remote: None });
            continue;
        }
        let Some((stored_digest, size)) = fetched.remove(&index) else {
            return Err(invalid(format!("layer {blob_digest} was not fetched")));
        };
        let extracting = format!("extracting {blob_digest}");
        status(&extracting, 0, None, false);
        let directory = store.temp_dir("layer-")?;
        let read_error = |source| ImageError::Read { path: stored_digest.to_string(), source };
        let blob = File::open(store.blob_path(&stored_digest)).map_err(read_error)?;
        let reader = decompressed(blob).map_err(read_error)?;
        let mut hashing = Hashing::sha256(reader);
        extract(&mut hashing, directory.path(), &ExtractOptions { whiteouts: WhiteoutMode::ToOverlay, ownership: archive_ownership() })
            .map_err(|source| ImageError::Extract { digest: blob_digest.clone(), source })?;
        // Tar readers stop at the end-of-archive marker; hash any padding after it too.
        io::copy(&mut hashing, &mut io::sink()).map_err(read_error)?;
        let (_, actual, _) = hashing.finish();
        if actual != *diff_id.digest() {
            return Err(ImageError::DigestMismatch { path: name.to_string(), expected: diff_id.digest().clone(), actual });
        }
        let snapshot = store.commit_snapshot(directory, diff_id)?;
        status(&extracting, 0, None, true);
        let now = now();
        let size_on_disk = crate::store::usage::tree_size(&snapshot)
            .map_err(|source| ImageError::Read { path: snapshot.display().to_string(), source })?;
        // A layer made before keeps its first creation time (its history timestamp).
        let created_at = store.layer_row(diff_id)?.map_or(layer.created_at.unwrap_or(now), |row| row.created_at);
        store.put_when_synced(vec![
            PendingRow::Layer(LayerRow {
                diff_id: diff_id.clone(),
                size: size_on_disk,
                created_at: layer.created_at.unwrap_or(now),
                last_used_at: now,
                from_image: layer.from_image,
                description: layer.description.clone(),
                kind: crate::store::LayerKind::Regular,
            }),
            PendingRow::Blob(BlobRow::layer(stored_digest.clone(), diff_id.clone(), &layer.blob.media_type, -1, size, now)),
        ])?;
        unpacked.push(Layer { diff_id: diff_id.clone(), path: snapshot, created_at, remote: None });
    }
    Ok(unpacked)
}

/// Root keeps the owners of an archive; an unprivileged user (outside a user namespace) keeps
/// what it can.
pub(super) fn archive_ownership() -> Ownership {
    if nix::unistd::geteuid().is_root() { Ownership::FromArchive } else { Ownership::BestEffort }
}
