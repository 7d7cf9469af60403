//! The command line: clap definitions, and the one place that joins the stages of a build
//! (`build`). `rbuild -f F .` is `rbuild build -f F .`: `build` is the default subcommand.
//! Flags and their spelling follow `docker buildx build`.

pub mod build;
mod build_options;
pub mod cache;
pub mod completion;
pub mod docs;
pub mod habits;
// The SIGINT/SIGTERM handler: registering it, reading `si_pid` and `_exit` have no safe API.
#[allow(unsafe_code)]
mod interrupt;
pub mod manual;
// `mallopt` has no safe API.
#[allow(unsafe_code)]
pub mod memory;
mod records;
mod resolver;
mod streamed_context;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Exit codes (DESIGN.md section 7).
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_INTERRUPTED: i32 = 130;

#[derive(Debug, Parser)]
#[command(
    name = "rbuild",
    version,
    about = "A daemonless, rootless Dockerfile builder",
    long_about = "rbuild builds Dockerfiles the way BuildKit does, in one process, without a daemon or root.\n\
                  `rbuild [OPTIONS] PATH` is `rbuild build [OPTIONS] PATH`."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a Dockerfile (the default command)
    Build(Box<BuildArgs>),
    /// Manage the build cache
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Print shell completions
    Completion {
        /// The shell to complete for
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct RootArgs {
    /// State directory (cache, blobs, snapshots) [default: $XDG_CACHE_HOME/rbuild, or /var/lib/rbuild for root]
    #[arg(long, env = "RBUILD_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Show debug logs (also RBUILD_LOG=debug)
    #[arg(long)]
    pub debug: bool,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Build context: a directory, `-` (a tar archive or a Dockerfile on stdin), an http(s) URL of one, or a git URL (`URL#REF:SUBDIR`)
    #[arg(value_name = "PATH")]
    pub context: PathBuf,
    /// Name of the Dockerfile (default: PATH/Dockerfile; `-` reads it from stdin)
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub file: Option<String>,
    /// Name and optionally a tag (format: `name:tag`)
    #[arg(short = 't', long = "tag", value_name = "NAME")]
    pub tags: Vec<String>,
    /// Set the target build stage to build
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,
    /// Set build-time variables (`KEY=VALUE`, or `KEY` to take it from the environment)
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    pub build_args: Vec<String>,
    /// Additional build contexts (`name=DIR`, `name=oci-layout://PATH[:tag|@digest]`, `name=docker-image://REF`, `name=URL` or a git URL)
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    pub build_contexts: Vec<String>,
    /// Output destination (`type=oci|docker|tar|local,dest=...`, `PATH` for local, `-` for a tar on stdout)
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    pub outputs: Vec<String>,
    /// Set type of progress output (auto, plain, tty, quiet, rawjson)
    #[arg(long, env = "BUILDKIT_PROGRESS", default_value = "auto", value_name = "MODE", value_parser = completion::PROGRESS, hide_possible_values = true)]
    pub progress: String,
    /// Do not use cache when building the image
    #[arg(long)]
    pub no_cache: bool,
    /// Do not cache specified stages
    #[arg(long, value_name = "STAGE", value_delimiter = ',')]
    pub no_cache_filter: Vec<String>,
    /// Set target platform for build (`os/arch[/variant]`)
    #[arg(long, value_name = "PLATFORM", value_parser = completion::PLATFORM, hide_possible_values = true)]
    pub platform: Option<String>,
    /// Set metadata for an image (`KEY=VALUE`)
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Add annotation to the image (`KEY=VALUE`)
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    pub annotations: Vec<String>,
    /// Write the image ID to a file
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// Write build result metadata to a file
    #[arg(long, value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
    /// Suppress the build output and print image ID on success
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Steps run at the same time [default: 4 × cores, at least 8]
    #[arg(short = 'j', long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Secret to expose to RUN mounts (`id=ID,src=FILE` or `id=ID,env=VAR`)
    #[arg(long = "secret", value_name = "SPEC")]
    pub secrets: Vec<String>,
    /// SSH agent socket or keys to expose to RUN mounts and ssh git sources (`default` or `ID=PATH[,PATH]`)
    #[arg(long = "ssh", value_name = "SPEC")]
    pub ssh: Vec<String>,
    /// Push the image to the registry of each -t name (shorthand for --output=type=registry)
    #[arg(long)]
    pub push: bool,
    /// Always resolve base images again (a resolved tag is otherwise reused, also offline)
    #[arg(long)]
    pub pull: bool,
    /// Export the build cache (e.g. "type=registry,ref=host/app:cache,mode=max", "type=local,dest=DIR")
    #[arg(long = "cache-to", value_name = "SPEC")]
    pub cache_to: Vec<String>,
    /// Import a build cache (e.g. "type=registry,ref=host/app:cache", "type=local,src=DIR", "host/app:cache")
    #[arg(long = "cache-from", value_name = "SPEC")]
    pub cache_from: Vec<String>,
    /// Registry configuration (buildkitd.toml's `[registry."host"]` keys) [default: $XDG_CONFIG_HOME/rbuild/config.toml]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Networking mode for RUN steps: default (the host's), none, host
    #[arg(long, default_value = "default", value_name = "MODE", value_parser = completion::NETWORK, hide_possible_values = true)]
    pub network: String,
    /// Add a host-to-IP mapping to /etc/hosts of RUN steps (format: "host:ip"); repeatable
    #[arg(long = "add-host", value_name = "HOST:IP")]
    pub add_hosts: Vec<String>,
    /// A resource limit of RUN steps (format: "name=soft[:hard]", e.g. "nofile=1024:2048"); repeatable
    #[arg(long = "ulimit", value_name = "NAME=SOFT[:HARD]")]
    pub ulimits: Vec<String>,
    /// Size of /dev/shm in RUN steps (e.g. "128m"; default 64m)
    #[arg(long = "shm-size", value_name = "SIZE")]
    pub shm_size: Option<String>,
    /// Allow extra privileged entitlement: network.host (needed by RUN --network=host); repeatable
    #[arg(long = "allow", value_name = "ENTITLEMENT", value_delimiter = ',')]
    pub allow: Vec<String>,
    /// Say why each step missed the cache (a log line under the step)
    #[arg(long)]
    pub debug_cache: bool,
    #[command(flatten)]
    pub root: RootArgs,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Disk usage
    Du(DuArgs),
    /// Remove build cache
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct DuArgs {
    /// Provide filter values (`type=regular`, `description~=REGEXP`, `id=REGEXP`, `type!=internal`, `until=24h`, ...)
    #[arg(long, value_name = "FILTER")]
    pub filter: Vec<String>,
    /// Format the output (`table`, `pretty` or `json`: one JSON object per line)
    #[arg(long, value_name = "FORMAT", value_parser = completion::DU_FORMAT, hide_possible_values = true)]
    pub format: Option<String>,
    /// Shorthand for `--format=pretty`
    #[arg(long)]
    pub verbose: bool,
    #[command(flatten)]
    pub root: RootArgs,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Include base image layers
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Provide filter values (`until=24h`, `type=regular`, `description~=REGEXP`, `id=REGEXP`, ...)
    #[arg(long, value_name = "FILTER")]
    pub filter: Vec<String>,
    /// Amount of disk space always allowed to keep for cache (e.g. `10GB`)
    #[arg(long, value_name = "BYTES", default_value = "0", value_parser = crate::oci::units::ram_in_bytes)]
    pub reserved_space: u64,
    /// Maximum amount of disk space allowed to keep for cache
    #[arg(long, value_name = "BYTES", default_value = "0", value_parser = crate::oci::units::ram_in_bytes)]
    pub max_used_space: u64,
    /// Target amount of free disk space after pruning
    #[arg(long, value_name = "BYTES", default_value = "0", value_parser = crate::oci::units::ram_in_bytes)]
    pub min_free_space: u64,
    /// Amount of disk space to keep for cache (deprecated: `--reserved-space`)
    #[arg(long, value_name = "BYTES", hide = true, value_parser = crate::oci::units::ram_in_bytes)]
    pub keep_storage: Option<u64>,
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Provide a more verbose output
    #[arg(long)]
    pub verbose: bool,
    #[command(flatten)]
    pub root: RootArgs,
}

/// Whether the command line needs rbuild's namespaces (it builds or touches the state root);
/// completions, help and version print text and start at once.
pub fn needs_sandbox(args: &[std::ffi::OsString]) -> bool {
    let first = args.get(1).map(|arg| arg.to_string_lossy().into_owned());
    !matches!(first.as_deref(), Some("completion" | "help" | "-h" | "--help" | "-V" | "--version"))
}

/// Whether the command may run RUN steps (a build): it gets the fork server of step runners.
pub fn may_run_steps(args: &[std::ffi::OsString]) -> bool {
    needs_sandbox(args) && args.get(1).is_none_or(|first| first != "cache")
}

/// Inserts `build` when the first argument is not a subcommand, so `rbuild -f F .` works.
pub fn with_default_subcommand(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    const KNOWN: &[&str] = &["build", "cache", "completion", "help", "-h", "--help", "-V", "--version"];
    let first = args.get(1).map(|arg| arg.to_string_lossy().into_owned());
    match first {
        Some(first) if KNOWN.contains(&first.as_str()) => args,
        None => args,
        Some(_) => {
            args.insert(1, "build".into());
            args
        }
    }
}

/// Runs a parsed command; returns the exit code.
pub fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Build(args) => build::run(*args),
        Command::Cache { command } => cache::run(command),
        Command::Completion { shell } => {
            let _ = completion::write_script(shell, &mut std::io::stdout().lock());
            0
        }
    }
}

/// The state root when neither `--root` nor `RBUILD_ROOT` names one
/// ([`crate::store::Store::default_root`]).
pub fn default_root() -> PathBuf {
    crate::store::Store::default_root(crate::sandbox::in_user_namespace())
}

/// Sets up tracing once: `--debug` or `RBUILD_LOG`. An event that cannot be written (stderr a
/// closed pipe, as under `| head`) is dropped: the subscriber's own report of that failure is an
/// `eprintln!`, which panics on the same closed pipe, on whichever thread logged.
pub fn init_logging(debug: bool) {
    let filter = if debug {
        tracing_subscriber::EnvFilter::new("debug")
    } else {
        tracing_subscriber::EnvFilter::try_from_env("RBUILD_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"))
    };
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).log_internal_errors(false).try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_is_the_default_subcommand() {
        let args = |list: &[&str]| list.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        assert_eq!(with_default_subcommand(args(&["rbuild", "-f", "F", "."])), args(&["rbuild", "build", "-f", "F", "."]));
        assert_eq!(with_default_subcommand(args(&["rbuild", "cache", "du"])), args(&["rbuild", "cache", "du"]));
        assert_eq!(with_default_subcommand(args(&["rbuild", "--version"])), args(&["rbuild", "--version"]));
        let cli = Cli::try_parse_from(with_default_subcommand(args(&["rbuild", "-t", "x", "--no-cache-filter", "a,b", "."]))).unwrap();
        let Command::Build(build) = cli.command else { panic!("not build") };
        assert_eq!(build.no_cache_filter, ["a", "b"]);
        assert_eq!(build.tags, ["x"]);
    }
}
