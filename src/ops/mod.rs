//! Runs one vertex. Each op lives in its own file and has two entry points: `cache_inputs`,
//! what goes into its cache key (may read files: a `COPY` hashes the context files it uses), and
//! `run`, which produces its [`Output`].
//!
//! Ops never talk to the terminal and never decide about caching: the solver asks for the key,
//! looks it up, and only then runs the op. An op that produces a layer commits it to the store
//! itself (`layer::commit`), so a result in the store is always complete.

pub(crate) mod context;
pub(crate) mod exec;
pub(crate) mod file;
pub(crate) mod git;
mod git_ssh;
mod git_submodule;
pub(crate) mod http;
pub(crate) mod image;
mod incremental_copy;
pub(crate) mod layer;
pub(crate) mod lazy;
mod owner;
mod source;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::context::content_hash::HashCache;
use crate::graph::{Op, Vertex};
use crate::store::Store;

pub(crate) use context::ContextHandle;
pub(crate) use layer::Layer;

/// What a vertex produced.
#[derive(Debug, Clone)]
pub(crate) enum Output {
    /// A filesystem: layers, bottom first.
    Layers(Arc<[Layer]>),
    /// A build context directory, read by the `COPY`s that use it.
    Context(Arc<ContextHandle>),
}

impl Output {
    pub(crate) fn layers(&self) -> &[Layer] {
        match self {
            Output::Layers(layers) => layers,
            Output::Context(_) => &[],
        }
    }

    pub(crate) fn layer_paths(&self) -> Vec<PathBuf> {
        self.layers().iter().map(|layer| layer.path.clone()).collect()
    }
}

/// Everything an op may use besides its inputs.
/// What the ops use that the command line made: the state root, the file-hash cache, the
/// registry client, secrets and SSH sources, an imported cache. `cli` makes it once and the
/// solver hands it to every op, never looking inside, so it needs none of their modules.
#[derive(Clone, Copy)]
pub(crate) struct Resources<'a> {
    pub store: &'a Store,
    pub hash_cache: &'a (dyn HashCache + 'a),
    /// The registry client, when the build pulls images.
    pub registry: Option<&'a crate::registry::Client>,
    /// `--secret` values and `--ssh` sources for RUN mounts.
    pub secrets: &'a exec::Secrets,
    pub ssh: &'a exec::SshSources,
    /// What `--cache-from` offers (records, cache mount contents).
    pub imported: &'a lazy::ImportedCache,
}

/// A running step's output stream, as ops report it.
pub(crate) use crate::sandbox::Stream;

pub(crate) struct Environment<'a> {
    pub store: &'a Store,
    pub hash_cache: &'a (dyn HashCache + 'a),
    pub cancel: &'a AtomicBool,
    pub selections: &'a file::SelectionMemo,
    /// `--secret` values and `--ssh` sources for RUN mounts.
    pub secrets: &'a exec::Secrets,
    pub ssh: &'a exec::SshSources,
    /// The registry client, when the build pulls images.
    pub registry: Option<&'a crate::registry::Client>,
    /// What `--cache-from` offers (cache mount contents, for RUN).
    pub imported: &'a lazy::ImportedCache,
    /// Transfer progress of this vertex: (id, bytes done, total, done).
    pub status: &'a lazy::Status<'a>,
    /// Where a running step's output goes (progress log lines of this vertex).
    pub log: &'a (dyn Fn(Stream, &[u8]) + Sync + 'a),
    /// The vertex ignores the cache (`--no-cache`, `--no-cache-filter`): its cache mounts start
    /// empty, once per build ([`crate::store::cache_mount::FreshMounts`]).
    pub fresh_mounts: Option<&'a crate::store::cache_mount::FreshMounts>,
    /// For a context vertex: the build's `COPY`s from it, whose files its load selects.
    pub context_copies: &'a [crate::graph::CopyAction],
    /// The vertex's new layer goes into an exported image as a gzip blob at the default level:
    /// it is compressed as it is committed ([`layer`]'s one pass).
    pub compress_layer: bool,
}

impl Environment<'_> {
    pub(crate) fn check_canceled(&self) -> Result<(), OpError> {
        if self.cancel.load(Ordering::Relaxed) { Err(OpError::Canceled) } else { Ok(()) }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum OpError {
    #[error("canceled")]
    Canceled,
    #[error("{0} is not supported yet")]
    Unsupported(&'static str),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Image(#[from] image::ImageError),
    #[error(transparent)]
    File(#[from] file::FileError),
    #[error(transparent)]
    Layer(#[from] layer::LayerError),
    #[error(transparent)]
    Context(#[from] context::ContextError),
    #[error(transparent)]
    Exec(#[from] exec::ExecError),
    #[error(transparent)]
    Http(#[from] http::HttpError),
    #[error(transparent)]
    Git(#[from] git::GitError),
    /// A bug: the op panicked. The step fails with the panic's message instead of the build
    /// waiting forever for a result its worker will never send.
    #[error("internal error: {0}")]
    Panicked(String),
}

/// One named input of a cache key, kept in the record so `cache why` can say what changed.
pub(crate) type CacheInput = (String, String);

/// The inputs of a vertex's cache key besides the op kind, given its inputs' keys and outputs.
pub(crate) fn cache_inputs(vertex: &Vertex, inputs: &[(String, Output)], environment: &Environment) -> Result<Vec<CacheInput>, OpError> {
    let input_keys =
        || -> Vec<CacheInput> { inputs.iter().enumerate().map(|(index, (key, _))| (format!("input {index}"), key.clone())).collect() };
    Ok(match &vertex.op {
        Op::Scratch => vec![],
        Op::Image(source) => image::cache_inputs(source),
        Op::Context(source) => context::cache_inputs(source),
        Op::Merge => input_keys(),
        Op::Exec(exec_op) => exec::cache_inputs(vertex, exec_op, inputs, environment)?,
        Op::Http(source) => http::cache_inputs(source, environment)?,
        Op::Git(source) => git::cache_inputs(source, environment)?,
        Op::File { actions } => {
            let mut all = vec![("op".to_string(), vertex.op.definition())];
            all.extend(file::cache_inputs(actions, inputs, environment)?);
            all
        }
    })
}

/// Runs the vertex.
pub(crate) fn run(vertex: &Vertex, inputs: &[Output], environment: &Environment) -> Result<Output, OpError> {
    environment.check_canceled()?;
    match &vertex.op {
        Op::Scratch => Ok(Output::Layers(Arc::from(Vec::new()))),
        Op::Image(source) => match image::run(source, environment) {
            Ok(layers) => Ok(Output::Layers(layers.into())),
            Err(image::ImageError::Canceled) => Err(OpError::Canceled),
            Err(error) => Err(error.into()),
        },
        Op::Context(source) => Ok(Output::Context(context::load(source, environment.context_copies, environment)?)),
        Op::Exec(exec_op) => Ok(Output::Layers(exec::run(vertex, exec_op, inputs, environment)?.into())),
        Op::Http(source) => Ok(Output::Layers(http::run(source, environment)?.into())),
        Op::Git(source) => Ok(Output::Layers(git::run(source, environment)?.into())),
        Op::Merge => {
            let layers: Vec<Layer> = inputs.iter().flat_map(|input| input.layers().iter().cloned()).collect();
            Ok(Output::Layers(layers.into()))
        }
        Op::File { actions } => match file::run(vertex, actions, inputs, environment) {
            Ok(layers) => Ok(Output::Layers(layers.into())),
            Err(OpError::File(file::FileError::Canceled)) => Err(OpError::Canceled),
            Err(error) => Err(error),
        },
    }
}
