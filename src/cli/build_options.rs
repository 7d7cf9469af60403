//! `rbuild build`'s options: the command line's arguments read into a validated
//! [`BuildOptions`] (the context, the Dockerfile, outputs, build args, secrets, SSH sources,
//! caches, limits), with the flags' spellings and errors as buildx has them. Nothing here runs
//! a step: a bad flag fails before the build starts (exit code 2).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};

use super::BuildArgs;
use super::streamed_context::{StreamedContext, is_git_url, read_dockerfile};
use crate::context::in_root::read_limited;
use crate::exporter::{OutputKind, OutputSpec, annotation_flag_keys, merge_annotations, parse_output};
use crate::frontend::{MainContext, NamedContext};
use crate::graph::NetworkMode;
use crate::oci::Platform;
use crate::ops::exec::{Secrets, SshSources};
use crate::progress::Mode;
use crate::remote_cache::{CacheExport, CacheImport, parse_cache_from, parse_cache_to};
use crate::solver::NoCache;

/// Everything a build needs, validated.
pub struct BuildOptions {
    pub(crate) context: MainContext,
    /// The context given as `-` or an http(s) URL: kept (and its directory with it) for the
    /// whole build.
    pub streamed_context: Option<StreamedContext>,
    pub dockerfile_name: String,
    pub dockerfile_path: Option<PathBuf>,
    /// The Dockerfile, read before the build; empty for a git context, whose Dockerfile the build
    /// reads from the commit (into `git_dockerfile`).
    pub dockerfile_bytes: Vec<u8>,
    /// With a git context: the Dockerfile's path in the commit (`-f`, or `Dockerfile`).
    pub git_dockerfile_path: Option<String>,
    /// With a git context: the Dockerfile, once the build has read it.
    pub git_dockerfile: std::sync::OnceLock<Vec<u8>>,
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

/// The largest Dockerfile read (stdin included): more is an error, never a read without end.
pub(super) const DOCKERFILE_LIMIT: u64 = 16 << 20;
/// The largest secret, BuildKit's (500 KB): secrets live in memory, and a file source such as
/// `/dev/zero` must not read until memory runs out.
const SECRET_LIMIT: u64 = 500 * 1024;

impl BuildOptions {
    /// The Dockerfile's bytes, wherever they were read from.
    pub(super) fn dockerfile(&self) -> &[u8] {
        self.git_dockerfile.get().map_or(&self.dockerfile_bytes, Vec::as_slice)
    }

    pub fn from_args(args: BuildArgs) -> anyhow::Result<BuildOptions> {
        let context_text = args.context.to_string_lossy().into_owned();
        let git_context = is_git_url(&context_text);
        let mut streamed_context = if context_text == "-" {
            Some(StreamedContext::read(args.file.as_deref(), DOCKERFILE_LIMIT)?)
        } else if git_context {
            None
        } else if context_text.starts_with("http://") || context_text.starts_with("https://") {
            let client = download_client(args.config.as_deref())?;
            Some(StreamedContext::download(&client, &context_text, args.file.as_deref(), DOCKERFILE_LIMIT)?)
        } else {
            None
        };
        let context_path = streamed_context.as_ref().map_or(args.context.as_path(), |streamed| streamed.dir.path());
        // A git context is fetched by the build; its Dockerfile is read there (unless `-f -`).
        let context_dir = if git_context {
            PathBuf::new()
        } else {
            let context_dir = context_path
                .canonicalize()
                .with_context(|| format!("unable to prepare context: path `{}` not found", args.context.display()))?;
            if !context_dir.is_dir() {
                bail!("unable to prepare context: `{}` is not a directory", args.context.display());
            }
            context_dir
        };
        let git_dockerfile_path = match args.file.as_deref() {
            _ if !git_context => None,
            Some("-") => None,
            Some(file) => Some(file.to_string()),
            None => Some("Dockerfile".to_string()),
        };
        let stdin_dockerfile = streamed_context.as_mut().and_then(|streamed| streamed.dockerfile.take());
        // In a downloaded archive, `-f` names a file of the archive, as BuildKit reads it.
        let downloaded = streamed_context.as_ref().is_some_and(|streamed| streamed.url.is_some());
        let (dockerfile_name, dockerfile_path, dockerfile_bytes) = match (stdin_dockerfile, args.file.as_deref()) {
            (Some(bytes), _) => ("Dockerfile".to_string(), None, bytes),
            // Named by its path in the commit, as BuildKit names it (`sub/Dockerfile:1`).
            (None, _) if let Some(path) = &git_dockerfile_path => (path.clone(), None, Vec::new()),
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
        let context = if git_context {
            let source = crate::frontend::git_context_source(&context_text, source_date_epoch)
                .map_err(|message| anyhow!("unable to prepare context: {message}"))?;
            MainContext::Git { url: context_text.clone(), source }
        } else {
            MainContext::Directory(context_dir)
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
            context,
            streamed_context,
            dockerfile_name,
            dockerfile_path,
            dockerfile_bytes,
            git_dockerfile_path,
            git_dockerfile: std::sync::OnceLock::new(),
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

/// A registry client for downloading a context before the build (the build makes its own).
fn download_client(config: Option<&Path>) -> anyhow::Result<crate::registry::Client> {
    let registry_config = crate::registry::RegistryConfig::load(config).context("failed to read the registry configuration")?;
    let credentials = crate::registry::Credentials::load().context("failed to read registry credentials")?;
    crate::registry::Client::new(registry_config, credentials).context("failed to set up the registry client")
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

/// Whether the build writes images and every one of them takes its layers as gzip at the default
/// level with their own times: then the layers are compressed as they are made (one pass), and
/// the export finds their blobs. Any other encoding, or no image, compresses nothing early.
pub(super) fn gzip_image_layers(outputs: &[OutputSpec]) -> bool {
    let images: Vec<&OutputSpec> = outputs.iter().filter(|output| !matches!(output.kind, OutputKind::Local | OutputKind::Tar)).collect();
    !images.is_empty()
        && images.iter().all(|output| {
            output.compression == crate::oci::Compression::Gzip && output.compression_level.is_none() && !output.rewrite_timestamp
        })
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
