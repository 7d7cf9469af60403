//! `rbuild build`: the only place where the stages meet. Arguments become a validated
//! [`BuildOptions`] (`build_options.rs`); then parse → lower → solve → export, with progress events throughout and
//! one error path that renders the Dockerfile snippet.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, anyhow};

pub use super::build_options::BuildOptions;
use super::build_options::DOCKERFILE_LIMIT;
use super::resolver::Resolver;
use super::{BuildArgs, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, init_logging};
use crate::dockerfile::diagnostic::{DockerfileError, render_snippet};
use crate::dockerfile::syntax::{Dockerfile, Span, parse};
use crate::exporter::{ExportRequest, export};
use crate::frontend::{FrontendOptions, MainContext, lower};
use crate::oci::{DiffId, stage_cpu};
use crate::ops::OpError;
use crate::ops::context::StoreHashCache;
use crate::progress::{Event, Mode, Progress, Sender, error_text, failed_to_solve};
use crate::remote_cache::{ExportRecord, ExportSet};
use crate::solver::{SolveOptions, Solver};
use crate::store::{LockMode, Store};

/// The stack of the thread that runs a build (see where it starts).
const BUILD_STACK_BYTES: usize = 1 << 30;

/// How a build ended badly.
enum Failure {
    /// With the Dockerfile span to show, if any.
    Build {
        message: String,
        span: Option<Span>,
    },
    Interrupted,
}

pub fn run(args: BuildArgs) -> i32 {
    init_logging(args.root.debug);
    stage_cpu::enable(tracing::enabled!(target: "rbuild::stages", tracing::Level::DEBUG));
    let options = match BuildOptions::from_args(args) {
        Ok(options) => options,
        Err(error) => {
            message!("ERROR: {error:#}");
            return EXIT_USAGE;
        }
    };
    if let Err(error) = remove_stale_files(&options) {
        message!("ERROR: {error:#}");
        return EXIT_FAILED;
    }
    let cancel = Arc::new(AtomicBool::new(false));
    super::interrupt::install(cancel.clone());
    let mode = if options.quiet { Mode::Quiet } else { options.progress.resolve(std::io::stderr().is_terminal()) };
    let progress = Progress::start(mode, Box::new(std::io::stderr()));
    // The parser, the frontend and the graph walk recurse as deep as the Dockerfile nests
    // (`${A:-${B:-...}}` to the 64 KiB line limit, chains of thousands of stages, as BuildKit
    // accepts): a thread with a large stack holds them, where the main thread's 8 MiB
    // overflowed and aborted. The stack is address space; only what is used is memory.
    let outcome = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("build".into())
            .stack_size(BUILD_STACK_BYTES)
            .spawn_scoped(scope, || build(&options, &progress, &cancel))
            .map(|thread| thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .unwrap_or_else(|error| Err(plain_failure(anyhow!("failed to start the build thread: {error}"))))
    });
    progress.finish(outcome.is_err());
    if let Some(stages) = stage_cpu::summary() {
        tracing::debug!(target: "rbuild::stages", "layer CPU seconds: {stages}");
    }
    match outcome {
        Ok(image_id) => {
            if options.outputs.is_empty() {
                message!(
                    "WARNING: No output specified. Build result will only remain in the build cache. \
                     Use -o type=oci,dest=FILE (or type=docker, tar, local) to write it out"
                );
            }
            if options.quiet
                && let Some(image_id) = image_id
            {
                println!("{image_id}");
            }
            0
        }
        Err(Failure::Interrupted) => {
            message!("ERROR: interrupted");
            EXIT_INTERRUPTED
        }
        Err(Failure::Build { message, span }) => {
            if let Some(span) = span {
                let source = String::from_utf8_lossy(options.dockerfile()).replace("\r\n", "\n");
                let source = source.strip_prefix('\u{feff}').unwrap_or(&source);
                {
                    use std::io::Write as _;
                    let _ = write!(std::io::stderr(), "{}", render_snippet(&options.dockerfile_name, source, span));
                }
            }
            message!("{}", failed_to_solve(&message));
            // Interrupted (a step or a registry request canceled by Ctrl-C or SIGTERM), not a
            // failure: the cancel flag alone is also set by a failing step.
            if super::interrupt::received() { EXIT_INTERRUPTED } else { EXIT_FAILED }
        }
    }
}

fn dockerfile_failure(error: DockerfileError) -> Failure {
    Failure::Build { message: error.buildkit_message(), span: error.span }
}

fn plain_failure(error: anyhow::Error) -> Failure {
    Failure::Build { message: error_text(error.as_ref()), span: None }
}

/// BuildKit's `[internal] load .dockerignore` line, after the metadata lines: the dockerfile
/// frontend reads the ignore file before anything else of the context. The byte count is
/// BuildKit's: the file's size plus its 40-byte stat record, or 2 without a file (measured
/// with the oracle).
fn show_dockerignore_load(options: &BuildOptions, sender: &Sender) {
    // A git context has no ignore file, and BuildKit loads none.
    let MainContext::Directory(context_dir) = &options.context else { return };
    let dockerfile = options.dockerfile_path.as_deref();
    let size = crate::context::dockerignore::DockerIgnore::candidates(context_dir, dockerfile)
        .iter()
        .find_map(|candidate| std::fs::metadata(candidate).ok().filter(std::fs::Metadata::is_file))
        .map_or(2, |metadata| metadata.len() + 40);
    let task = sender.task("[internal] load .dockerignore");
    task.start();
    task.status("transferring context:", size, None, true);
    task.finish();
}

/// The Dockerfile of a git context, from the commit (fetched into the shared repository, where
/// the context's own fetch then finds it); `None` when the commit has no such file.
fn read_git_dockerfile(
    options: &BuildOptions,
    source: &crate::graph::GitSource,
    path: &str,
    store: &Store,
    cancel: &AtomicBool,
) -> Result<Option<Vec<u8>>, Failure> {
    let imported = crate::ops::lazy::ImportedCache::default();
    let resources = crate::ops::Resources {
        store,
        hash_cache: &crate::context::content_hash::NoHashCache,
        registry: None,
        secrets: &options.secrets,
        ssh: &options.ssh,
        imported: &imported,
    };
    match crate::ops::git::read_file(source, path, DOCKERFILE_LIMIT, &resources, cancel) {
        Ok(bytes) => Ok(bytes),
        Err(OpError::Canceled) => Err(Failure::Interrupted),
        Err(error) => Err(plain_failure(anyhow!("failed to read dockerfile: failed to load cache key: {error}"))),
    }
}

/// The whole build; returns the image id when an image was written.
fn build(options: &BuildOptions, progress: &Progress, cancel: &Arc<AtomicBool>) -> Result<Option<String>, Failure> {
    let sender = progress.sender();
    if let Some(streamed) = options.streamed_context.as_ref().filter(|streamed| streamed.url.is_some()) {
        // Downloaded before the build started (its Dockerfile is needed first); shown as
        // BuildKit shows a remote context: the download, then the unpacking of an archive.
        let load = sender.task("[internal] load remote build context");
        load.start();
        load.finish();
        if streamed.archive {
            let unpack = sender.task("copy /context /");
            unpack.start();
            unpack.finish();
        }
    }
    let store = Store::open(&options.root, LockMode::Shared)
        .with_context(|| format!("failed to open the state root `{}`", options.root.display()))
        .map_err(plain_failure)?;
    // Read on a thread of its own while the Dockerfile is parsed and lowered.
    let hash_cache = StoreHashCache::load(&store);
    for warning in store.warnings() {
        sender.send(Event::Warning { message: warning.clone() });
    }
    let dockerfile: Dockerfile = if let (MainContext::Git { url, source }, Some(path)) = (&options.context, &options.git_dockerfile_path) {
        // As BuildKit: the Dockerfile comes from the context's commit, shown as its git source
        // (no `load build definition` line).
        let load = sender.task(format!("[internal] load git source {url}"));
        load.start();
        let bytes = match read_git_dockerfile(options, source, path, &store, cancel) {
            Ok(Some(bytes)) => bytes,
            // The source loaded; the file is not in it (BuildKit's words).
            Ok(None) => {
                load.finish();
                let message = format!("failed to read dockerfile: open {path}: no such file or directory");
                return Err(plain_failure(anyhow!(message)));
            }
            Err(failure) => {
                match &failure {
                    Failure::Build { message, .. } => load.fail_message(message.clone()),
                    Failure::Interrupted => load.fail_message("canceled"),
                }
                return Err(failure);
            }
        };
        load.finish();
        let bytes = options.git_dockerfile.get_or_init(|| bytes);
        parse(&options.dockerfile_name, bytes).map_err(dockerfile_failure)?
    } else {
        let load = sender.task(format!("[internal] load build definition from {}", options.dockerfile_name));
        load.start();
        load.status("transferring dockerfile:", options.dockerfile_bytes.len() as u64, None, true);
        match parse(&options.dockerfile_name, &options.dockerfile_bytes) {
            Ok(dockerfile) => {
                load.finish();
                dockerfile
            }
            Err(error) => {
                load.fail_message(error.buildkit_message());
                return Err(dockerfile_failure(error));
            }
        }
    };
    crate::sandbox::sweep_leftovers();
    // The first runner starts now, while the base images are resolved and the graph lowered
    // (a RUN that is cached, or in a stage the target does not need, costs a runner that waits
    // for nothing and is dismissed); the later ones while the step before them runs.
    let runs_steps = dockerfile.instructions.iter().any(|instruction| instruction.keyword == "RUN");
    let kept_filter =
        crate::sandbox::KeptFilter { path: store.seccomp_filter_path(), temporary_directory: store.area(crate::store::Area::Tmp) };
    let standby = crate::sandbox::standby_runners(runs_steps, kept_filter);

    let frontend_options = FrontendOptions {
        dockerfile,
        dockerfile_path: options.dockerfile_path.clone(),
        context: options.context.clone(),
        target: options.target.clone(),
        build_args: options.build_args.clone(),
        named_contexts: options.named_contexts.clone(),
        platform: options.platform.clone(),
        source_date_epoch: options.source_date_epoch,
        labels: options.labels.clone(),
        network: options.network,
        extra_hosts: options.extra_hosts.clone(),
        ulimits: options.ulimits.clone(),
        shm_size: options.shm_size,
        allow_network_host: options.allow_network_host,
    };
    // The registry client is made once; a build that pulls nothing never touches the network.
    let registry_config = crate::registry::RegistryConfig::load(options.registry_config.as_deref())
        .context("failed to read the registry configuration")
        .map_err(plain_failure)?;
    let credentials = crate::registry::Credentials::load().context("failed to read registry credentials").map_err(plain_failure)?;
    let registry = Arc::new(
        crate::registry::Client::new(registry_config, credentials)
            .context("failed to set up the registry client")
            .map_err(plain_failure)?
            .with_cancel(cancel.clone()),
    );
    let resolver =
        Resolver { store: &store, registry: Some(&registry), pull: options.pull, progress: sender.clone(), resolved: Default::default() };
    let plan = lower(&frontend_options, &resolver).map_err(dockerfile_failure)?;
    show_dockerignore_load(options, &sender);
    for warning in &plan.warnings {
        sender.send(Event::Warning { message: warning.clone() });
    }
    tracing::debug!(graph = %plan.graph.dump(&[plan.target]), "lowered");

    let imported = crate::remote_cache::import(&options.cache_from, &registry, &sender);
    let resources = crate::ops::Resources {
        store: &store,
        hash_cache: &hash_cache,
        registry: Some(&registry),
        secrets: &options.secrets,
        ssh: &options.ssh,
        imported: &imported,
    };
    let solver = Solver {
        resources,
        progress: sender.clone(),
        cancel: cancel.clone(),
        options: SolveOptions {
            jobs: options.jobs,
            no_cache: options.no_cache.clone(),
            explain_misses: options.debug_cache,
            gzip_image_layers: super::build_options::gzip_image_layers(&options.outputs),
        },
    };
    let solved = solver.solve(&plan.graph, &[plan.target]);
    drop(standby);
    // Hashes computed so far are worth keeping even when the build failed.
    if let Err(error) = hash_cache.save(&store) {
        tracing::warn!("failed to save file hashes: {error}");
    }
    // 50,000 remembered hashes take milliseconds to free: on a thread of their own, during the
    // export.
    let _ = std::thread::Builder::new().name("free-hashes".into()).spawn(move || drop(hash_cache));
    let solved = match solved {
        Ok(solved) => solved,
        Err(error) => {
            if matches!(error.error, OpError::Canceled) && cancel.load(Ordering::SeqCst) {
                return Err(Failure::Interrupted);
            }
            let span = error
                .vertex
                .and_then(|vertex| plan.graph.vertices[vertex].origin.clone())
                .map(|origin| Span { start_line: origin.start_line, end_line: origin.end_line });
            return Err(Failure::Build { message: error_text(&error.error), span });
        }
    };
    if cancel.load(Ordering::SeqCst) {
        return Err(Failure::Interrupted);
    }
    let layers = solved.outputs[&plan.target].layers().to_vec();
    let result =
        if options.outputs.is_empty() { None } else { Some(export_outputs(options, &store, &registry, &plan, &layers, &sender, cancel)?) };
    export_caches(options, &store, &registry, &plan.graph, &solved, &layers, &sender, cancel)?;
    Ok(result.flatten())
}

/// Writes the `-o` outputs, the metadata file and the iidfile; returns the image id.
#[allow(clippy::too_many_arguments)]
fn export_outputs(
    options: &BuildOptions,
    store: &Store,
    registry: &crate::registry::Client,
    plan: &crate::frontend::Plan,
    layers: &[crate::ops::Layer],
    sender: &Sender,
    cancel: &Arc<AtomicBool>,
) -> Result<Option<String>, Failure> {
    let request = ExportRequest {
        store,
        layers,
        fetcher: &crate::ops::lazy::Fetcher { store },
        document: &plan.image,
        outputs: &options.outputs,
        tags: &options.tags,
        epoch: options.source_date_epoch,
        progress: sender,
        cancel,
        registry: Some(registry),
    };
    let exported = export(&request);
    if cancel.load(Ordering::SeqCst) {
        return Err(Failure::Interrupted);
    }
    let result = exported.map_err(|error| Failure::Build { message: error_text(&error), span: None })?;
    if let Some(path) = &options.metadata_file {
        let text = serde_json::to_string_pretty(&result.metadata()).unwrap_or_default();
        write_file(path, text.as_bytes()).map_err(plain_failure)?;
    }
    let image_id = result.image_id();
    if let (Some(path), Some(image_id)) = (&options.iidfile, &image_id) {
        write_file(path, image_id.as_bytes()).map_err(plain_failure)?;
    }
    Ok(image_id)
}

/// Writes every `--cache-to`: the records of the steps this build used. A failed export fails
/// the build unless its spec says `ignore-error=true`.
#[allow(clippy::too_many_arguments)]
fn export_caches(
    options: &BuildOptions,
    store: &Store,
    registry: &crate::registry::Client,
    graph: &crate::graph::Graph,
    solved: &crate::solver::Solved,
    image_layers: &[crate::ops::Layer],
    sender: &Sender,
    cancel: &Arc<AtomicBool>,
) -> Result<(), Failure> {
    if options.cache_to.is_empty() {
        return Ok(());
    }
    let mut records = Vec::new();
    let mut mounts = Vec::new();
    for (&vertex, key) in &solved.keys {
        let op = &graph.vertices[vertex].op;
        if let crate::graph::Op::Exec(exec) = op {
            for mount in &exec.mounts {
                // Mounts seeded `from` a stage are derived from it: only plain ones travel.
                if let crate::graph::ExecMountKind::Cache { id, from: None, .. } = &mount.kind
                    && !mounts.iter().any(|(known, _)| known == id)
                {
                    mounts.push((id.clone(), store.cache_mount_dir(id)));
                }
            }
        }
        if !crate::solver::is_recorded(op) {
            continue;
        }
        let Some(row) = store.database().record(key).context("failed to read the cache records").map_err(plain_failure)? else {
            continue;
        };
        records.push(ExportRecord {
            key: key.clone(),
            description: row.description,
            inputs: row.inputs,
            layers: solved.outputs[&vertex].layers().to_vec(),
        });
    }
    records.sort_by(|a, b| a.key.cmp(&b.key));
    let image_layers: Vec<DiffId> = image_layers.iter().map(|layer| layer.diff_id.clone()).collect();
    let set = ExportSet { records: &records, image_layers: &image_layers, mounts: &mounts };
    for spec in &options.cache_to {
        let exported = crate::remote_cache::export(store, registry, spec, &set, sender, cancel);
        if cancel.load(Ordering::SeqCst) {
            return Err(Failure::Interrupted);
        }
        match exported {
            Ok(()) => {}
            Err(error) if spec.ignore_error => sender.send(Event::Warning { message: error_text(&error) }),
            Err(error) => return Err(Failure::Build { message: error_text(&error), span: None }),
        }
    }
    Ok(())
}

/// Writes `--iidfile` and `--metadata-file` whole or not at all (a reader never sees half).
fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    crate::store::atomic::write_file(path, bytes).with_context(|| format!("failed to write `{}`", path.display()))
}

/// Removes the `--iidfile` and `--metadata-file` of an earlier build before this one starts, as
/// buildx removes the id file: a failed build leaves no stale id behind.
fn remove_stale_files(options: &BuildOptions) -> anyhow::Result<()> {
    for path in [&options.iidfile, &options.metadata_file].into_iter().flatten() {
        match std::fs::remove_file(path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                return Err(error).with_context(|| format!("failed to remove the earlier `{}`", path.display()));
            }
            _ => {}
        }
    }
    Ok(())
}
