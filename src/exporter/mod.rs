//! Turns the solved target into the requested outputs: OCI layouts, docker archives, root
//! filesystem tars and directories, and the metadata file.
//!
//! The image (blobs, config, manifest) is assembled once per distinct encoding and shared by
//! every output that uses it. Files are written next to their destination and renamed into
//! place when complete, so a failed export never leaves a truncated archive behind.

pub(crate) mod archive;
pub(crate) mod image;
pub(crate) mod output;
mod push;

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use serde_json::json;

use crate::oci::image_config::ImageDocument;
use crate::oci::{Cancellable, Digest, Reference};
use crate::progress::{Sender, Task};
use crate::snapshot::flatten::{FileMode, flatten};
use crate::snapshot::layer_tar::{LayerTarOptions, write_layer_tar};
use crate::snapshot::view::LayeredView;
use crate::store::Store;
use crate::store::layer::{Layer, LayerFetcher};
use std::sync::atomic::AtomicBool;

pub(crate) use image::{BuiltImage, Encoding};
pub(crate) use output::{Destination, OutputError, OutputKind, OutputSpec, annotation_flag_keys, parse_output};

#[derive(Debug, thiserror::Error)]
pub(crate) enum ExportError {
    #[error(transparent)]
    Image(#[from] image::ImageError),
    #[error(transparent)]
    Archive(#[from] archive::ArchiveError),
    #[error("failed to write `{path}`")]
    Write { path: String, source: io::Error },
    #[error(transparent)]
    Flatten(#[from] crate::snapshot::flatten::FlattenError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("failed to write the root filesystem tar")]
    RootfsTar(#[from] crate::snapshot::layer_tar::LayerTarError),
    #[error(transparent)]
    Reference(#[from] crate::oci::ReferenceError),
    #[error(transparent)]
    Push(#[from] push::PushError),
    #[error("no registry client for a push")]
    NoRegistry,
    #[error("pushing needs an image name: use -t NAME or name=NAME")]
    NoName,
}

/// What the build produced, for `--metadata-file` and `--iidfile`.
#[derive(Debug, Default, Clone)]
pub(crate) struct ExportResult {
    pub image: Option<BuiltImage>,
    pub names: Vec<String>,
}

impl ExportResult {
    /// buildx's metadata keys.
    pub(crate) fn metadata(&self) -> serde_json::Value {
        let Some(image) = &self.image else { return json!({}) };
        let mut metadata = json!({
            "containerimage.config.digest": image.config.digest,
            "containerimage.descriptor": image.manifest,
            "containerimage.digest": image.manifest.digest,
        });
        if !self.names.is_empty() {
            metadata["image.name"] = json!(self.names.join(","));
        }
        metadata
    }

    /// What `--iidfile` and `-q` give: the config digest, as buildx's image id is for every
    /// output that makes an image.
    pub(crate) fn image_id(&self) -> Option<String> {
        Some(self.image.as_ref()?.config.digest.to_string())
    }
}

pub(crate) struct ExportRequest<'a> {
    pub store: &'a Store,
    pub layers: &'a [Layer],
    /// Brings in the layers of imported cache hits that an output needs.
    pub fetcher: &'a dyn LayerFetcher,
    pub document: &'a ImageDocument,
    pub outputs: &'a [OutputSpec],
    /// `-t` names, added to every image output.
    pub tags: &'a [String],
    pub epoch: Option<i64>,
    /// Each output is a task of its own.
    pub progress: &'a Sender,
    /// Set on Ctrl-C: writes stop and the export fails with `interrupted`.
    pub cancel: &'a AtomicBool,
    /// For `type=registry` / `push=true`.
    pub registry: Option<&'a crate::registry::Client>,
}

pub(crate) fn export(request: &ExportRequest) -> Result<ExportResult, ExportError> {
    let mut result = ExportResult::default();
    let mut built: Vec<(String, BuiltImage)> = Vec::new();
    for output in request.outputs {
        let name = match output.kind {
            OutputKind::Oci => "exporting to oci image format",
            OutputKind::Docker => "exporting to docker image format",
            OutputKind::Tar => "exporting to client tarball",
            OutputKind::Local => "exporting to client directory",
            OutputKind::Registry => "exporting to image",
        };
        let task = request.progress.task(name);
        task.start();
        let exported = export_one(request, output, &task, &mut built, &mut result);
        task.end_with(&exported);
        exported?;
    }
    Ok(result)
}

fn export_one(
    request: &ExportRequest,
    output: &OutputSpec,
    task: &Task,
    built: &mut Vec<(String, BuiltImage)>,
    result: &mut ExportResult,
) -> Result<(), ExportError> {
    let destination = output.dest.clone().unwrap_or(Destination::Stdout);
    match output.kind {
        OutputKind::Registry => {
            let image = built_image(request, output, task, built)?;
            let client = request.registry.ok_or(ExportError::NoRegistry)?;
            let names: Vec<&String> = request.tags.iter().chain(&output.names).collect();
            if names.is_empty() {
                return Err(ExportError::NoName);
            }
            for name in names {
                push::push(request.store, client, &image, name, task)?;
                let full = Reference::parse(name)?.stored_name();
                if !result.names.contains(&full) {
                    result.names.push(full);
                }
            }
            result.image = Some(image);
            Ok(())
        }
        OutputKind::Oci | OutputKind::Docker => {
            let image = built_image(request, output, task, built)?;
            let mut names = Vec::new();
            for name in request.tags.iter().chain(&output.names) {
                let reference = Reference::parse(name)?;
                if !names.contains(&reference) {
                    names.push(reference);
                }
            }
            let docker = output.kind == OutputKind::Docker;
            let mtime = request.epoch.unwrap_or(0);
            task.status("sending tarball", 0, None, false);
            match (&destination, output.tar || docker) {
                (Destination::Path(path), false) => {
                    archive::write_directory(request.store, &image, &names, &output.descriptor_annotations, path)?
                }
                (destination, _) => {
                    let identity = archive::identity(&image, &names, &output.descriptor_annotations, docker, mtime);
                    let unchanged = match destination {
                        Destination::Path(path) => written_before(request.store, path, &identity),
                        Destination::Stdout => false,
                    };
                    if !unchanged {
                        write_destination(destination, request.cancel, &mut |out, direct| {
                            archive::write_tar(request.store, &image, &names, &output.descriptor_annotations, docker, mtime, out, direct)
                        })?;
                        if let Destination::Path(path) = destination {
                            remember_written(request.store, path, identity);
                        }
                    }
                }
            }
            task.status("sending tarball", 0, None, true);
            for name in &names {
                let stored = name.stored_name();
                if !result.names.contains(&stored) {
                    result.names.push(stored);
                }
            }
            result.image = Some(image);
            Ok(())
        }
        OutputKind::Tar => {
            let layers = local_layers(request, task)?;
            let view = LayeredView::new(layers.iter().map(|layer| layer.path.clone()));
            let staging = request.store.temp_dir("rootfs-")?;
            let root = staging.path().join("rootfs");
            flatten(&view, &root, FileMode::HardLink)?;
            let clamp = if output.rewrite_timestamp { request.epoch } else { None };
            write_destination(&destination, request.cancel, &mut |out, _| {
                write_layer_tar(&root, out, &LayerTarOptions { clamp_mtime: clamp }).map(|_| ()).map_err(io::Error::other)
            })?;
            let _ = crate::store::remove_tree(staging.path());
            Ok(())
        }
        OutputKind::Local => {
            let Destination::Path(path) = &destination else {
                return Err(ExportError::Write { path: "-".into(), source: io::Error::other("local output needs a directory") });
            };
            let layers = local_layers(request, task)?;
            let view = LayeredView::new(layers.iter().map(|layer| layer.path.clone()));
            // A new destination is made 0700, an existing one keeps its mode and whatever else
            // it holds, as with BuildKit (measured with the oracle).
            if !path.exists() {
                std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
                    .create(path)
                    .map_err(|source| ExportError::Write { path: path.display().to_string(), source })?;
            }
            flatten(&view, path, FileMode::CallerCopy)?;
            Ok(())
        }
    }
}

/// The layers with their files in the store: those of imported cache hits are fetched now.
fn local_layers(request: &ExportRequest, task: &Task) -> Result<Vec<Layer>, ExportError> {
    let status = |id: &str, current, total, done| task.status(id, current, total, done);
    Ok(request.fetcher.materialize(request.layers, request.cancel, &status).map_err(image::ImageError::Fetch)?)
}

/// The image an output asks for: built once per encoding and shared by the outputs that use it.
fn built_image(
    request: &ExportRequest,
    output: &OutputSpec,
    task: &Task,
    built: &mut Vec<(String, BuiltImage)>,
) -> Result<BuiltImage, ExportError> {
    let encoding = Encoding {
        compression: output.compression,
        level: output.compression_level,
        oci_mediatypes: output.oci_mediatypes,
        epoch: request.epoch,
        rewrite_timestamp: output.rewrite_timestamp,
        manifest_annotations: output.manifest_annotations.clone(),
    };
    let key = format!("{encoding:?}");
    task.status("exporting layers", 0, None, false);
    let image = match built.iter().find(|(existing, _)| *existing == key) {
        Some((_, image)) => image.clone(),
        None => {
            let status = |id: &str, current, total, done| task.status(id, current, total, done);
            let image = image::build(request.store, request.fetcher, request.layers, request.document, &encoding, request.cancel, &status)?;
            built.push((key, image.clone()));
            image
        }
    };
    task.status("exporting layers", 0, None, true);
    task.status(&format!("exporting manifest {}", image.manifest.digest), 0, None, true);
    task.status(&format!("exporting config {}", image.config.digest), 0, None, true);
    Ok(image)
}

/// Writes a stream to a file (via a temporary file renamed into place) or to stdout.
/// The key of an output file in the store: its absolute path (the parent resolved, the file
/// itself not, so a symlink there is never taken for its target).
fn output_key(path: &Path) -> Option<String> {
    let parent = path.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(Path::new("."));
    Some(parent.canonicalize().ok()?.join(path.file_name()?).to_string_lossy().into_owned())
}

/// What the store knows of a regular file, from its stat.
fn output_row(path: &Path, identity: Digest) -> Option<crate::store::database::OutputFileRow> {
    let metadata = fs::symlink_metadata(path).ok().filter(fs::Metadata::is_file)?;
    Some(crate::store::database::OutputFileRow { identity, stamp: crate::oci::FileStamp::of(&metadata) })
}

/// Whether `path` is a regular file this store wrote with `identity` and nobody touched since
/// (size, mtime, ctime, inode and device as right after the write; ctime cannot be set back):
/// then writing it again would write the same bytes, and it is kept as it is.
fn written_before(store: &Store, path: &Path, identity: &Digest) -> bool {
    let (Some(key), Some(now)) = (output_key(path), output_row(path, identity.clone())) else { return false };
    store.database().output_file(&key).ok().flatten().is_some_and(|before| before == now)
}

/// Remembers what was just written at `path` (a regular file), for [`written_before`]. A
/// failure to remember only costs a rewrite next time.
fn remember_written(store: &Store, path: &Path, identity: Digest) {
    let Some(key) = output_key(path) else { return };
    let row = output_row(path, identity);
    if let Err(error) = store.database().put_output_file(&key, row.as_ref()) {
        tracing::debug!(%error, "could not remember the output `{key}`");
    }
}

/// What writes an output: into a buffered writer and, for a file, also into the file under it
/// ([`archive::DirectFile`]).
type WriteOutput<'a> = dyn FnMut(&mut dyn Write, Option<&archive::DirectFile>) -> io::Result<()> + 'a;

fn write_destination(destination: &Destination, cancel: &AtomicBool, write: &mut WriteOutput) -> Result<(), ExportError> {
    match destination {
        Destination::Stdout => {
            let stdout = io::stdout();
            let mut lock = Cancellable { inner: io::BufWriter::with_capacity(1 << 20, stdout.lock()), cancel };
            write(&mut lock, None).and_then(|_| lock.flush()).map_err(|source| ExportError::Write { path: "-".into(), source })
        }
        Destination::Path(path) => write_user_file(path, &mut |file| {
            let file = &*file;
            let mut buffered = Cancellable { inner: io::BufWriter::with_capacity(1 << 20, file), cancel };
            write(&mut buffered, Some(&archive::DirectFile { file, cancel })).and_then(|_| buffered.flush())
        })
        .map_err(|source| ExportError::Write { path: path.display().to_string(), source }),
    }
}

/// An archive the user asked for at `path`. A device, fifo or symlink there is written into, as
/// BuildKit's client does (before, `/dev/full` or a symlink was replaced by a regular file); a
/// regular file or a new one is replaced whole (the store's `replace_output_file`, not synced, as
/// BuildKit's client does not sync). The parent must exist.
fn write_user_file(path: &Path, write: &mut dyn FnMut(&mut fs::File) -> io::Result<()>) -> io::Result<()> {
    let written_into = fs::symlink_metadata(path).is_ok_and(|metadata| !metadata.is_file() && !metadata.is_dir());
    if !written_into {
        return crate::store::atomic::replace_output_file(path, write);
    }
    let mut file = fs::OpenOptions::new().write(true).create(true).truncate(true).open(path)?;
    write(&mut file)
}

/// `--annotation` values (as exporter keys, see [`annotation_flag_keys`]) on every output that
/// makes an image; an output's own `annotation*` keys win.
pub(crate) fn merge_annotations(outputs: &mut [OutputSpec], annotations: &[(String, String)]) -> Result<(), OutputError> {
    for output in outputs.iter_mut().filter(|output| !matches!(output.kind, OutputKind::Local | OutputKind::Tar)) {
        for (key, value) in annotations {
            output.add_annotation(key, value.clone(), false)?;
        }
    }
    Ok(())
}
