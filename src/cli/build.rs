//! `rbuild build`: the only place where the stages meet. Arguments become a validated
//! [`BuildOptions`]; then parse → lower → solve → export, with progress events throughout and
//! one error path that renders the Dockerfile snippet.

use std::collections::{BTreeMap, HashSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, anyhow, bail};

use super::resolver::Resolver;
use super::{BuildArgs, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, init_logging};
use crate::context::in_root::read_limited;
use crate::dockerfile::diagnostic::{DockerfileError, render_snippet};
use crate::dockerfile::syntax::{Dockerfile, Span, parse};
use crate::exporter::{ExportRequest, OutputKind, OutputSpec, annotation_flag_keys, export, merge_annotations, parse_output};
use crate::frontend::{FrontendOptions, NamedContext, lower};
use crate::graph::NetworkMode;
use crate::oci::{DiffId, Platform};
use crate::ops::OpError;
use crate::ops::context::StoreHashCache;
use crate::ops::exec::{Secrets, SshSources};
use crate::progress::{Event, Mode, Progress, Sender, error_text, failed_to_solve};
use crate::remote_cache::{CacheExport, CacheImport, ExportRecord, ExportSet, parse_cache_from, parse_cache_to};
use crate::solver::{NoCache, SolveOptions, Solver};
use crate::store::{LockMode, Store};

use super::streamed_context::{StreamedContext, is_git_url, read_dockerfile};

/// Everything a build needs, validated.
pub struct BuildOptions {
    pub context_dir: PathBuf,
    /// The context given as `-` or an http(s) URL: kept (and its directory with it) for the
    /// whole build.
    pub streamed_context: Option<StreamedContext>,
    pub dockerfile_name: String,
    pub dockerfile_path: Option<PathBuf>,
    pub dockerfile_bytes: Vec<u8>,
    pub outputs: Vec<OutputSpec>,
    pub tags: Vec<String>,
    pub target: Option<String>,
    pub build_args: BTreeMap<String, String>,
    pub named_contexts: BTreeMap<String, NamedContext>,
    pub platform: Platform,
    pub progress: Mode,
    pub no_cache: NoCache,
    pub labels: BTreeMap<String, String>,
    pub iidfile: Option<PathBuf>,
    pub metadata_file: Option<PathBuf>,
    pub quiet: bool,
    pub jobs: usize,
    pub root: PathBuf,
    pub source_date_epoch: Option<i64>,
    pub debug_cache: bool,
    pub network: NetworkMode,
    /// `--add-host`: (name, address) lines for /etc/hosts of RUN steps.
    pub extra_hosts: Vec<(String, String)>,
    pub ulimits: Vec<(String, u64, u64)>,
    pub shm_size: Option<u64>,
    /// `--allow network.host`, or `--network host`: `RUN --network=host` may run.
    pub allow_network_host: bool,
    pub secrets: Secrets,
    pub ssh: SshSources,
    pub pull: bool,
    pub registry_config: Option<PathBuf>,
    pub cache_to: Vec<CacheExport>,
    pub cache_from: Vec<CacheImport>,
}

fn key_value(text: &str, what: &str) -> anyhow::Result<(String, String)> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => bail!("invalid {what} `{text}`: expected KEY=VALUE"),
    }
}

/// The most steps run at once (`-j`): one thread each, and 100,000 threads is no build.
const MAX_JOBS: usize = 1024;

/// The stack of the thread that runs a build (see where it starts).
const BUILD_STACK_BYTES: usize = 1 << 30;

/// The largest Dockerfile read (stdin included): more is an error, never a read without end.
const DOCKERFILE_LIMIT: u64 = 16 << 20;
/// The largest secret, BuildKit's (500 KB): secrets live in memory, and a file source such as
/// `/dev/zero` must not read until memory runs out.
const SECRET_LIMIT: u64 = 500 * 1024;

impl BuildOptions {
    pub fn from_args(args: BuildArgs) -> anyhow::Result<BuildOptions> {
        let context_text = args.context.to_string_lossy().into_owned();
        let mut streamed_context = if context_text == "-" {
            Some(StreamedContext::read(args.file.as_deref(), DOCKERFILE_LIMIT)?)
        } else if is_git_url(&context_text) {
            bail!("unable to prepare context: git repositories (`{context_text}`) are not supported as build contexts yet")
        } else if context_text.starts_with("http://") || context_text.starts_with("https://") {
            let client = download_client(args.config.as_deref())?;
            Some(StreamedContext::download(&client, &context_text, args.file.as_deref(), DOCKERFILE_LIMIT)?)
        } else {
            None
        };
        let context_path = streamed_context.as_ref().map_or(args.context.as_path(), |streamed| streamed.dir.path());
        let context_dir = context_path
            .canonicalize()
            .with_context(|| format!("unable to prepare context: path `{}` not found", args.context.display()))?;
        if !context_dir.is_dir() {
            bail!("unable to prepare context: `{}` is not a directory", args.context.display());
        }
        let stdin_dockerfile = streamed_context.as_mut().and_then(|streamed| streamed.dockerfile.take());
        // In a downloaded archive, `-f` names a file of the archive, as BuildKit reads it.
        let downloaded = streamed_context.as_ref().is_some_and(|streamed| streamed.url.is_some());
        let (dockerfile_name, dockerfile_path, dockerfile_bytes) = match (stdin_dockerfile, args.file.as_deref()) {
            (Some(bytes), _) => ("Dockerfile".to_string(), None, bytes),
            (None, Some("-")) => ("Dockerfile".to_string(), None, read_dockerfile(std::io::stdin().lock(), DOCKERFILE_LIMIT)?),
            (None, file) => {
                let path = match file {
                    Some(file) if downloaded => context_dir.join(file),
                    Some(file) => PathBuf::from(file),
                    None => context_dir.join("Dockerfile"),
                };
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "Dockerfile".into());
                // Read as BuildKit does, from its directory: a link that leaves it leads nowhere.
                let directory = path.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(Path::new("."));
                let bytes = crate::context::in_root::read_file(directory, &name, DOCKERFILE_LIMIT)
                    .with_context(|| format!("failed to read Dockerfile `{}`", path.display()))?
                    .ok_or_else(|| anyhow!("failed to read dockerfile: open {name}: no such file or directory (`{}`)", path.display()))?;
                (name, Some(path), bytes)
            }
        };
        let mut outputs = Vec::new();
        for output in &args.outputs {
            let output = parse_output(output).map_err(|error| anyhow!("{error}"))?;
            output.check_destination().map_err(|error| anyhow!("{error}"))?;
            outputs.push(output);
        }
        if args.push {
            if args.tags.is_empty() {
                bail!("--push needs an image name: add -t NAME");
            }
            outputs.push(parse_output("type=registry").map_err(|error| anyhow!("{error}"))?);
        }
        check_image_files(&outputs, args.iidfile.is_some(), args.metadata_file.is_some())?;
        let mut build_args = BTreeMap::new();
        for arg in &args.build_args {
            if arg.is_empty() || arg.starts_with('=') {
                bail!("invalid --build-arg `{arg}`: the name is empty (expected KEY=VALUE or KEY)");
            }
            match arg.split_once('=') {
                Some((key, value)) => {
                    build_args.insert(key.to_string(), value.to_string());
                }
                // A bare KEY takes the value from the environment, or is ignored when unset.
                None => {
                    if let Ok(value) = std::env::var(arg) {
                        build_args.insert(arg.clone(), value);
                    }
                }
            }
        }
        let mut named_contexts = BTreeMap::new();
        for context in &args.build_contexts {
            let (name, value) = key_value(context, "build context")?;
            let named = if let Some(rest) = value.strip_prefix("oci-layout://") {
                let (path, selector) = split_layout(rest);
                NamedContext::OciLayout { path: PathBuf::from(path), selector: selector.to_string() }
            } else if let Some(reference) = value.strip_prefix("docker-image://") {
                NamedContext::DockerImage(reference.to_string())
            } else if is_git_url(&value) {
                NamedContext::Git(value.clone())
            } else if value.starts_with("http://") || value.starts_with("https://") {
                NamedContext::Http(value.clone())
            } else if value.contains("://") {
                bail!("unsupported build context `{value}`: use a directory, oci-layout://PATH, docker-image://REF or an http(s) URL");
            } else {
                let path = PathBuf::from(&value);
                let dir = path.canonicalize().with_context(|| format!("build context `{name}`: `{value}` not found"))?;
                NamedContext::Directory(dir)
            };
            named_contexts.insert(name, named);
        }
        let platform = match &args.platform {
            Some(text) if text.contains(',') => {
                bail!("--platform `{text}` names several platforms: rbuild builds one per run (run it once per platform)")
            }
            Some(text) => Platform::parse(text).ok_or_else(|| anyhow!("invalid platform `{text}`: expected os/arch[/variant]"))?,
            None => Platform::host(),
        };
        let progress: Mode = args.progress.parse().map_err(|error| anyhow!("{error}"))?;
        if args.quiet && !matches!(progress, Mode::Auto | Mode::Quiet) {
            bail!("progress={} and quiet cannot be used together", args.progress);
        }
        let no_cache = if args.no_cache {
            NoCache::All
        } else if !args.no_cache_filter.is_empty() {
            NoCache::Stages(args.no_cache_filter.iter().map(|stage| stage.to_lowercase()).collect::<HashSet<_>>())
        } else {
            NoCache::None
        };
        let mut labels = BTreeMap::new();
        for label in &args.labels {
            let (key, value) = key_value(label, "label")?;
            labels.insert(key, value);
        }
        let mut annotations = BTreeMap::new();
        for annotation in &args.annotations {
            annotations.extend(annotation_flag_keys(annotation).map_err(|error| anyhow!("{error}"))?);
        }
        // A later value for the same key wins, as in buildx's map.
        let annotations: Vec<(String, String)> = annotations.into_iter().collect();
        merge_annotations(&mut outputs, &annotations).map_err(|error| anyhow!("{error}"))?;
        let epoch_text = build_args.get("SOURCE_DATE_EPOCH").cloned().or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok());
        let source_date_epoch = match epoch_text.filter(|text| !text.is_empty()) {
            Some(text) => Some(text.parse::<i64>().map_err(|_| anyhow!("invalid SOURCE_DATE_EPOCH `{text}`: expected seconds"))?),
            None => None,
        };
        for tag in &args.tags {
            crate::oci::Reference::parse(tag).map_err(|error| anyhow!("invalid tag `{tag}`: {error}"))?;
        }
        let network = match args.network.as_str() {
            "default" => NetworkMode::Default,
            "none" => NetworkMode::None,
            "host" => NetworkMode::Host,
            other => bail!("invalid network mode `{other}`: expected default, none or host"),
        };
        let allow_network_host = parse_entitlements(&args.allow)? || network == NetworkMode::Host;
        let extra_hosts = parse_extra_hosts(&args.add_hosts)?;
        let ulimits = args.ulimits.iter().map(|text| parse_ulimit(text)).collect::<anyhow::Result<Vec<_>>>()?;
        let shm_size = match &args.shm_size {
            Some(text) => Some(
                crate::oci::units::ram_in_bytes(text)
                    .ok()
                    .filter(|bytes| *bytes > 0)
                    .ok_or_else(|| anyhow!("invalid --shm-size `{text}`"))?,
            ),
            None => None,
        };
        let secrets = parse_secrets(&args.secrets)?;
        let ssh = parse_ssh(&args.ssh)?;
        // Steps mostly wait (on containers, disks): more run at once than there are cores, so four
        // independent `RUN sleep 2` stages take 2 s on two cores; CPU-heavy work inside a step
        // (hashing, compression) is bounded by rayon's pool of one thread per core anyway.
        let jobs = args.jobs.unwrap_or_else(|| (std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2) * 4).max(8));
        if jobs == 0 {
            bail!("--jobs must be at least 1");
        }
        if jobs > MAX_JOBS {
            bail!("--jobs must be at most {MAX_JOBS}: each job is a thread and may run a container");
        }
        let cache_to = args.cache_to.iter().map(|spec| parse_cache_to(spec)).collect::<Result<Vec<_>, _>>()?;
        let cache_from = args.cache_from.iter().map(|spec| parse_cache_from(spec)).collect::<Result<Vec<_>, _>>()?;
        Ok(BuildOptions {
            context_dir,
            streamed_context,
            dockerfile_name,
            dockerfile_path,
            dockerfile_bytes,
            outputs,
            tags: args.tags,
            target: args.target,
            build_args,
            named_contexts,
            platform,
            progress,
            no_cache,
            labels,
            iidfile: args.iidfile,
            metadata_file: args.metadata_file,
            // buildx prints the image id in quiet mode, however it was chosen.
            quiet: args.quiet || progress == Mode::Quiet,
            jobs,
            root: args.root.root.unwrap_or_else(super::default_root),
            source_date_epoch,
            debug_cache: args.debug_cache,
            network,
            extra_hosts,
            ulimits,
            shm_size,
            allow_network_host,
            secrets,
            ssh,
            pull: args.pull,
            registry_config: args.config,
            cache_to,
            cache_from,
        })
    }
}

/// `--secret id=ID[,src=FILE|,env=VAR][,type=file|env]`, as buildx: without `src` or `env`,
/// the environment variable named like the id, else the file named like it. Values are read
/// now and held in memory.
fn parse_secrets(specs: &[String]) -> anyhow::Result<Secrets> {
    let mut secrets = Secrets::default();
    for spec in specs {
        let mut id = None;
        let mut source = None;
        let mut variable = None;
        let mut kind = None;
        for field in spec.split(',') {
            let (key, value) = field.split_once('=').unwrap_or(("id", field));
            match key {
                "id" => id = Some(value.to_string()),
                "src" | "source" => source = Some(PathBuf::from(value)),
                "env" => variable = Some(value.to_string()),
                "type" => kind = Some(value.to_string()),
                _ => bail!("invalid secret `{spec}`: unknown key `{key}`"),
            }
        }
        let id = id.ok_or_else(|| anyhow!("invalid secret `{spec}`: `id` is required"))?;
        if kind.as_deref() == Some("env") && variable.is_none() {
            variable = Some(source.take().map(|s| s.display().to_string()).unwrap_or_else(|| id.clone()));
        }
        let value = match (source, variable) {
            (Some(path), _) => {
                read_limited(&path, SECRET_LIMIT).with_context(|| format!("failed to read secret `{id}` from `{}`", path.display()))?
            }
            (None, Some(name)) => std::env::var_os(&name)
                .ok_or_else(|| anyhow!("secret `{id}`: environment variable `{name}` is not set"))?
                .into_encoded_bytes(),
            (None, None) => match std::env::var_os(&id) {
                Some(value) => value.into_encoded_bytes(),
                None => read_limited(Path::new(&id), SECRET_LIMIT)
                    .with_context(|| format!("secret `{id}`: no environment variable or file of that name"))?,
            },
        };
        secrets.insert(id, value);
    }
    Ok(secrets)
}

/// `--ssh default` (the agent at $SSH_AUTH_SOCK) or `--ssh ID=PATH[,PATH]` (keys or sockets).
fn parse_ssh(specs: &[String]) -> anyhow::Result<SshSources> {
    let mut ssh = SshSources::default();
    for spec in specs {
        let (id, paths) = match spec.split_once('=') {
            Some((id, paths)) => (id.to_string(), paths.split(',').map(PathBuf::from).collect::<Vec<_>>()),
            None => {
                let socket = std::env::var_os("SSH_AUTH_SOCK").ok_or_else(|| {
                    anyhow!("--ssh {spec}: SSH_AUTH_SOCK is not set (start an agent, or give key files: --ssh {spec}=~/.ssh/id_ed25519)")
                })?;
                (spec.clone(), vec![PathBuf::from(socket)])
            }
        };
        for path in &paths {
            if !path.exists() {
                bail!("--ssh {id}: `{}` not found", path.display());
            }
        }
        ssh.sources.insert(id, paths);
    }
    Ok(ssh)
}

/// `PATH:tag` or `PATH@sha256:...` (a `:` in the last path component starts a tag).
fn split_layout(text: &str) -> (&str, &str) {
    if let Some(at) = text.rfind('@') {
        return (&text[..at], &text[at..]);
    }
    let last_slash = text.rfind('/').map(|i| i + 1).unwrap_or(0);
    match text[last_slash..].rfind(':') {
        Some(colon) => (&text[..last_slash + colon], &text[last_slash + colon..]),
        None => (text, ""),
    }
}

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
    let options = match BuildOptions::from_args(args) {
        Ok(options) => options,
        Err(error) => {
            eprintln!("ERROR: {error:#}");
            return EXIT_USAGE;
        }
    };
    if let Err(error) = remove_stale_files(&options) {
        eprintln!("ERROR: {error:#}");
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
    match outcome {
        Ok(image_id) => {
            if options.outputs.is_empty() {
                eprintln!(
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
            eprintln!("ERROR: interrupted");
            EXIT_INTERRUPTED
        }
        Err(Failure::Build { message, span }) => {
            if let Some(span) = span {
                let source = String::from_utf8_lossy(&options.dockerfile_bytes).replace("\r\n", "\n");
                let source = source.strip_prefix('\u{feff}').unwrap_or(&source);
                eprint!("{}", render_snippet(&options.dockerfile_name, source, span));
            }
            eprintln!("{}", failed_to_solve(&message));
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
    let dockerfile = options.dockerfile_path.as_deref();
    let size = crate::context::dockerignore::DockerIgnore::candidates(&options.context_dir, dockerfile)
        .iter()
        .find_map(|candidate| std::fs::metadata(candidate).ok().filter(std::fs::Metadata::is_file))
        .map_or(2, |metadata| metadata.len() + 40);
    let task = sender.task("[internal] load .dockerignore");
    task.start();
    task.status("transferring context:", size, None, true);
    task.finish();
}

/// A registry client for downloading a context before the build (the build makes its own).
fn download_client(config: Option<&Path>) -> anyhow::Result<crate::registry::Client> {
    let registry_config = crate::registry::RegistryConfig::load(config).context("failed to read the registry configuration")?;
    let credentials = crate::registry::Credentials::load().context("failed to read registry credentials")?;
    crate::registry::Client::new(registry_config, credentials).context("failed to set up the registry client")
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
    let load = sender.task(format!("[internal] load build definition from {}", options.dockerfile_name));
    load.start();
    load.status("transferring dockerfile:", options.dockerfile_bytes.len() as u64, None, true);
    let dockerfile: Dockerfile = match parse(&options.dockerfile_name, &options.dockerfile_bytes) {
        Ok(dockerfile) => dockerfile,
        Err(error) => {
            load.fail_message(error.buildkit_message());
            return Err(dockerfile_failure(error));
        }
    };
    load.finish();

    let store = Store::open(&options.root, LockMode::Shared)
        .with_context(|| format!("failed to open the state root `{}`", options.root.display()))
        .map_err(plain_failure)?;
    for warning in store.warnings() {
        sender.send(Event::Warning { message: warning.clone() });
    }
    crate::sandbox::sweep_leftovers();

    let frontend_options = FrontendOptions {
        dockerfile,
        dockerfile_path: options.dockerfile_path.clone(),
        context_dir: options.context_dir.clone(),
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
    let hash_cache = StoreHashCache::load(&store).context("failed to load file hashes").map_err(plain_failure)?;
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
        options: SolveOptions { jobs: options.jobs, no_cache: options.no_cache.clone(), explain_misses: options.debug_cache },
    };
    let solved = solver.solve(&plan.graph, &[plan.target]);
    // Hashes computed so far are worth keeping even when the build failed.
    if let Err(error) = hash_cache.save(&store) {
        tracing::warn!("failed to save file hashes: {error}");
    }
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
        let Some(row) = store.database().record(key.as_str()).context("failed to read the cache records").map_err(plain_failure)? else {
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

/// `--ulimit name=soft[:hard]` (`-1` is unlimited; without `:hard` both are `soft`), as Docker.
fn parse_ulimit(text: &str) -> anyhow::Result<(String, u64, u64)> {
    let names = || crate::sandbox::ulimit_names().collect::<Vec<_>>().join(", ");
    let invalid = || anyhow!("invalid --ulimit `{text}`: expected name=soft[:hard] with a name of {}", names());
    let (name, values) = text.split_once('=').ok_or_else(invalid)?;
    if !crate::sandbox::ulimit_names().any(|known| known == name) {
        return Err(invalid());
    }
    let value =
        |text: &str| -> anyhow::Result<u64> { if text == "-1" { Ok(u64::MAX) } else { text.parse::<u64>().map_err(|_| invalid()) } };
    let (soft, hard) = match values.split_once(':') {
        Some((soft, hard)) => (value(soft)?, value(hard)?),
        None => (value(values)?, value(values)?),
    };
    if soft > hard {
        bail!("invalid --ulimit `{text}`: the soft limit is above the hard limit");
    }
    Ok((name.to_string(), soft, hard))
}

/// `--add-host host:ip` (an IPv6 address keeps its colons: the name ends at the first one), as
/// buildx; `host=ip` too.
/// `--iidfile` and `--metadata-file` name an image: buildx refuses an image id with a local or
/// tar output (its words), and rbuild refuses both files when no output makes an image at all,
/// where buildx writes an empty id or a file without image keys.
fn check_image_files(outputs: &[OutputSpec], iidfile: bool, metadata_file: bool) -> anyhow::Result<()> {
    let without_image = |output: &OutputSpec| matches!(output.kind, OutputKind::Local | OutputKind::Tar);
    if iidfile && outputs.iter().any(without_image) {
        bail!("local and tar exporters are incompatible with image ID file");
    }
    if outputs.iter().all(without_image) {
        for (flag, given) in [("--iidfile", iidfile), ("--metadata-file", metadata_file)] {
            if given {
                bail!(
                    "{flag} needs an output that makes an image (-o type=oci|docker|registry,... or --push); local and tar outputs and no output make none"
                );
            }
        }
    }
    Ok(())
}

/// `--allow` values, as buildx takes them; true when `network.host` is granted. rbuild runs no
/// insecure or device-holding steps, so those entitlements are refused with what to do instead.
fn parse_entitlements(values: &[String]) -> anyhow::Result<bool> {
    let mut network_host = false;
    for value in values.iter().map(|value| value.trim()).filter(|value| !value.is_empty()) {
        match value {
            "network.host" => network_host = true,
            "security.insecure" => bail!(
                "entitlement `security.insecure` is not supported: rbuild runs every RUN step sandboxed (RUN --security=insecure is refused); leave it out"
            ),
            _ if value == "device" || value.starts_with("device=") => {
                bail!("entitlement `{value}` is not supported: rbuild gives RUN steps no host devices; leave it out")
            }
            _ => bail!("invalid entitlement: {value} (rbuild grants network.host)"),
        }
    }
    Ok(network_host)
}

fn parse_extra_hosts(values: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    values
        .iter()
        .map(|value| {
            let (name, address) = value
                .split_once('=')
                .or_else(|| value.split_once(':'))
                .ok_or_else(|| anyhow!("invalid add-host `{value}`: expected host:ip"))?;
            if name.is_empty() || name.contains(char::is_whitespace) {
                bail!("invalid add-host `{value}`: expected host:ip");
            }
            let parsed: std::net::IpAddr = address.parse().map_err(|_| anyhow!("invalid IP address in add-host: `{address}`"))?;
            Ok((name.to_string(), parsed.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entitlements_grant_network_host_and_refuse_the_rest() {
        let list = |values: &[&str]| values.iter().map(|value| value.to_string()).collect::<Vec<_>>();
        assert!(!parse_entitlements(&[]).unwrap());
        assert!(parse_entitlements(&list(&["network.host"])).unwrap());
        assert!(parse_entitlements(&list(&["", "network.host"])).unwrap());
        assert!(parse_entitlements(&list(&["security.insecure"])).unwrap_err().to_string().contains("sandboxed"));
        assert!(parse_entitlements(&list(&["device=/dev/kvm"])).unwrap_err().to_string().contains("no host devices"));
        assert_eq!(
            parse_entitlements(&list(&["net.host"])).unwrap_err().to_string(),
            "invalid entitlement: net.host (rbuild grants network.host)"
        );
    }

    #[test]
    fn layout_selectors_split_at_the_last_component() {
        assert_eq!(split_layout("/a/b:tag"), ("/a/b", ":tag"));
        assert_eq!(split_layout("/a:b/c"), ("/a:b/c", ""));
        assert_eq!(split_layout("/a/b@sha256:00"), ("/a/b", "@sha256:00"));
        assert_eq!(split_layout("rel"), ("rel", ""));
    }
}
