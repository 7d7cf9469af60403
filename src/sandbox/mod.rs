//! Runs one RUN step in a container (youki's `libcontainer`), for root and for unprivileged users.
//!
//! The scheme (DESIGN.md section 5, measured in `shared/notes/sandbox-findings.md`, "B1"):
//!
//! 1. [`enter`] runs first in `main()`, while the process is single-threaded. Not root: rbuild
//!    re-execs itself inside a new user + mount namespace whose maps `newuidmap`/`newgidmap` write
//!    (caller → 0, subordinate ranges above). Root, or the re-exec'd process: a private mount
//!    namespace, and cgroup2 bound over `/sys/fs/cgroup` on hybrid hosts when in a user namespace.
//! 2. [`run_step`] (any thread of the multi-threaded main process) takes a started runner: a
//!    fork of the fork server that `main()` made while single-threaded ([`fork_server`]), or
//!    without one `/proc/self/exe __run-step <step directory> <cgroup name>` ([`standby`]:
//!    started while the step before ran), and writes the
//!    [`StepSpec`] to its stdin, a pipe (it holds `env=` secrets, which never go into a file).
//!    That single-threaded runner ([`maybe_run_step_child`]) owns the
//!    container's whole life: its own mount namespace (so the overlay mount dies with it), a fresh
//!    network namespace with `lo` up for [`Network::None`], the overlay mount, the OCI spec, the
//!    libcontainer calls, the wait, `delete`, the unmount and the clean-up of mount-point stubs.
//!    libcontainer changes the cwd, takes the env lock in its forked children and marks its caller
//!    non-dumpable: all of that stays inside the runner.
//!
//! Ownership: the caller owns `lowers`, `upper` (the diff) and `work` of a [`StepSpec`]; the runner
//! mounts them (the caller removes `work` after the step) and leaves `upper` holding exactly the step's changes in
//! overlay format (whiteouts = char 0/0, opaque dirs = `user.overlay.opaque`). Mount-point stubs
//! the runner had to create (e.g. `/proc`, `/etc/hosts`) are removed again when still empty, as
//! BuildKit does; their parent directories may remain in `upper` as copied-up directories with
//! restored mtimes, which the diff must treat as unchanged when their metadata equals the lower's.
//!
//! Where overlay is not possible ([`snapshotter`] says [`Snapshotter::Copy`]), the caller gives
//! [`StepSpec::rootfs`] instead: a plain directory holding the whole root filesystem (the lowers
//! copied by `snapshot::tree_diff::prepare_rootfs`). The runner binds it recursively as the root,
//! ignores `lowers`, `upper` and `work`, removes its stubs there as in an overlay, and leaves the
//! directory as the step left it; the caller then computes the diff (`snapshot::tree_diff::diff`)
//! into an upper directory.
//! There the runner also keeps the overlay's one rule a plain directory lacks: a directory of the
//! layers below cannot be renamed (EXDEV, [`rename_guard`]).
//!
//! In `main()`, before any thread exists: `sandbox::maybe_run_step_child(&args)` first (the
//! runner is already inside rbuild's namespaces and must not enter new ones), then
//! `sandbox::enter(&args)?` (both take the full `std::env::args_os()`), then
//! `sandbox::start_fork_server()` for a build, then everything else; `sandbox::stop_fork_server()`
//! before the exit.
//!
//! Invariant: no container outlives [`run_step`], and no runner the solve (its exit is waited
//! for by its [`ExitingRunner`], or on the leftovers thread, which the end of standby drains):
//! the runner gets `SIGTERM` when rbuild (or the fork server) dies (`PR_SET_PDEATHSIG`), kills
//! the container (pid namespace: killing its init kills all), and the container's init gets
//! `SIGKILL` if the runner itself dies.

mod cgroup;
mod executor;
mod fork_server;
mod network;
mod overlay;
mod private_dir;
mod rename_guard;
mod rootfs;
mod runner;
mod seccomp;
mod seccomp_filter;
mod spec;
mod standby;
mod step;
// The one file of `sandbox` with `unsafe`: the syscalls nix has no safe call for.
#[allow(unsafe_code)]
mod sys;
mod user;
mod userns;

use std::ffi::OsString;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use overlay::{SNAPSHOTTER_VARIABLE, Snapshotter, overlay_supported, snapshotter};
pub use private_dir::PrivateDir;
use private_dir::memory_file;
pub use seccomp_filter::KeptFilter;

/// The resource limit names `--ulimit` takes (`nofile`, `nproc`, ...), as Docker spells them.
pub fn ulimit_names() -> impl Iterator<Item = &'static str> {
    spec::ULIMITS.iter().map(|(name, _)| *name)
}

/// Removes what killed rbuild processes of this user left outside the state root: private
/// directories in `/dev/shm` (step specs, secrets) and step cgroups. Best effort, cheap; run at
/// the start of every build and by `cache prune`. Returns how many were removed.
pub fn sweep_leftovers() -> usize {
    private_dir::sweep() + cgroup::sweep()
}
pub use fork_server::{start as start_fork_server, stop as stop_fork_server};
pub use standby::{StandbyRunners, discard, set_runner_program, standby_runners};
pub use step::{ExitingRunner, run_step};
pub use userns::{enter, in_user_namespace};

/// Mount points the sandbox creates in the rootfs when the image lacks them (besides the targets
/// of [`StepSpec::mounts`]). The runner already removes those still empty after the step, as
/// BuildKit's stub cleaner does; a diff may filter these paths again as a safety net.
pub const STUBS: &[&str] = &["/etc/hosts", "/etc/resolv.conf"];

/// Mount points of the kernel's file systems, created (0755, root) when the image lacks them and
/// then kept in the step's layer: runc makes them under BuildKit and its stub cleaner leaves them
/// (measured with the oracle: a RUN on an image without `/dev` adds `dev`, `proc` and `sys`).
pub const KEPT_MOUNT_POINTS: &[&str] = &["/proc", "/dev", "/sys"];

/// The hidden subcommand that makes a process the step runner.
pub(crate) const RUN_STEP_COMMAND: &str = "__run-step";

/// One RUN step, as the runner receives it (serialized to a file in the step's temp dir).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepSpec {
    /// Snapshot directories, bottom first; empty = scratch.
    pub lowers: Vec<PathBuf>,
    /// Overlay upperdir: receives the step's changes.
    pub upper: PathBuf,
    /// Overlay workdir, on the same filesystem as `upper`; the caller removes it after the step.
    pub work: PathBuf,
    /// argv, already with the shell for the shell form.
    pub args: Vec<String>,
    /// `KEY=VALUE`, the process environment (plus `HOME` from /etc/passwd when absent, as runc).
    pub env: Vec<String>,
    /// Absolute working directory, created (owned by the user) if missing.
    pub cwd: String,
    /// USER as written: "", "name", "uid", "name:group", "uid:gid".
    pub user: String,
    pub hostname: String,
    pub network: Network,
    pub mounts: Vec<Mount>,
    /// `None`: the root filesystem is the overlay of `lowers`, `upper` and `work`. `Some`: this
    /// absolute directory is the whole root filesystem, bound as it is (the copying snapshotter);
    /// `lowers`, `upper` and `work` are then ignored. The step writes into it directly, and the
    /// runner removes the mount-point stubs it created there, as it does in an overlay.
    #[serde(default)]
    pub rootfs: Option<PathBuf>,
    /// `--ulimit`: (name as Docker spells it, soft, hard), replacing the inherited limits.
    #[serde(default)]
    pub ulimits: Vec<(String, u64, u64)>,
    /// `--shm-size` in bytes; `None`: 64 MiB, as BuildKit.
    #[serde(default)]
    pub shm_size: Option<u64>,
}

/// What [`run_step`] hands the runner on its stdin: the step, and the seccomp filter
/// compiled once per rbuild process ([`seccomp_filter`]).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RunnerInput<'a> {
    pub step: std::borrow::Cow<'a, StepSpec>,
    #[serde(with = "program_text")]
    pub seccomp_filter: std::borrow::Cow<'a, [u8]>,
}

/// The filter as base64 text: as a JSON array of its 10,000 bytes it took about 0.1 ms of CPU a
/// step to write and to read (`perf record`).
mod program_text {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};
    use std::borrow::Cow;

    pub(super) fn serialize<S: Serializer>(program: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(program))
    }

    pub(super) fn deserialize<'de, 'a, D: Deserializer<'de>>(deserializer: D) -> Result<Cow<'a, [u8]>, D::Error> {
        let text = <Cow<'de, str>>::deserialize(deserializer)?;
        STANDARD.decode(text.as_bytes()).map(Cow::Owned).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    /// Share the host's network namespace; /etc/resolv.conf and /etc/hosts are bound read-only.
    Host,
    /// A new network namespace with only `lo`, up.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Absolute path inside the container.
    pub target: String,
    pub kind: MountKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountKind {
    Bind { source: PathBuf, readonly: bool },
    Tmpfs { size: Option<u64> },
}

pub struct StepOutcome {
    /// The container's exit code; 128+N when killed by signal N.
    pub exit_code: i32,
    /// Still exiting: drop after the step's diff is made, before its layer is used.
    pub runner: ExitingRunner,
}

pub use crate::oci::Stream;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("`newuidmap` and `newgidmap` are needed to run rootless with the subordinate ids of `{user}`; install the `uidmap` package")]
    MissingNewIdMap { user: String },
    #[error("rbuild must start single-threaded to enter a user namespace (found {threads} threads)")]
    NotSingleThreaded { threads: usize },
    #[error("failed to {action}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to {action}")]
    Syscall {
        action: String,
        #[source]
        source: nix::Error,
    },
    #[error("`{program}` failed to write the id map of process {pid}: {message}")]
    IdMap { program: String, pid: i32, message: String },
    #[error("unable to find user `{name}`: no matching entries in passwd file")]
    UserNotFound { name: String },
    #[error("unable to find group `{name}`: no matching entries in group file")]
    GroupNotFound { name: String },
    #[error("invalid user `{user}`")]
    InvalidUser { user: String },
    #[error("invalid step: {reason}")]
    InvalidStep { reason: String },
    #[error("failed to build the container spec")]
    Spec(#[source] oci_spec::OciSpecError),
    #[error("container runtime failed: {message}")]
    Container { message: String },
    /// The runner's own error, already worded for the user (`unable to find user ...`).
    #[error("{message}")]
    Runner { message: String },
    #[error("step canceled")]
    Canceled,
    #[error("failed to compile the step's seccomp filter: {message}")]
    SeccompFilter { message: String },
    #[error("unknown snapshotter `{value}` in `RBUILD_SNAPSHOTTER` (expected `overlay` or `copy`)")]
    UnknownSnapshotter { value: String },
}

impl SandboxError {
    pub(crate) fn io(action: impl Into<String>, source: std::io::Error) -> Self {
        SandboxError::Io { action: action.into(), source }
    }

    pub(crate) fn syscall(action: impl Into<String>, source: nix::Error) -> Self {
        SandboxError::Syscall { action: action.into(), source }
    }
}

/// `fs::create_dir_all`, its failure a [`SandboxError`] naming the directory.
pub(crate) fn create_directory(path: &std::path::Path) -> Result<(), SandboxError> {
    std::fs::create_dir_all(path).map_err(|error| SandboxError::io(format!("create `{}`", path.display()), error))
}

/// If argv says this process is the hidden step runner (`rbuild __run-step <step directory>
/// <cgroup name>`, the step on stdin), runs the step and exits with the container's code; else
/// returns.
#[allow(clippy::print_stderr)] // a misuse of the hidden subcommand, said before anything else runs
pub fn maybe_run_step_child(args: &[OsString]) {
    if args.get(1).is_some_and(|argument| argument == RUN_STEP_COMMAND) {
        let cgroup = args.get(3).and_then(|name| name.to_str()).filter(|name| cgroup::is_valid_name(name));
        let (Some(directory), Some(cgroup), None) = (args.get(2), cgroup, args.get(4)) else {
            message!("rbuild: `{RUN_STEP_COMMAND}` needs a step directory and a cgroup name, and only those");
            std::process::exit(125);
        };
        runner::run(std::path::Path::new(directory), cgroup);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_spec_round_trips_through_json() {
        let spec = StepSpec {
            lowers: vec![PathBuf::from("/a"), PathBuf::from("/b")],
            upper: PathBuf::from("/u"),
            work: PathBuf::from("/w"),
            args: vec!["/bin/sh".into(), "-c".into(), "echo hi".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            user: "1000:1000".into(),
            hostname: "buildkitsandbox".into(),
            network: Network::None,
            mounts: vec![
                Mount { target: "/cache".into(), kind: MountKind::Tmpfs { size: Some(1 << 20) } },
                Mount { target: "/src".into(), kind: MountKind::Bind { source: PathBuf::from("/host"), readonly: true } },
            ],
            rootfs: None,
            ulimits: vec![("nofile".into(), 1024, 2048)],
            shm_size: Some(1 << 27),
        };
        let text = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<StepSpec>(&text).unwrap(), spec);
        let copying = StepSpec { rootfs: Some(PathBuf::from("/store/tmp/rootfs")), ..spec.clone() };
        let text = serde_json::to_string(&copying).unwrap();
        assert_eq!(serde_json::from_str::<StepSpec>(&text).unwrap(), copying);

        // The runner's input: the filter as text, every byte value back as it was.
        let program: Vec<u8> = (0..=255).chain([0, 255, 7]).collect();
        let input = RunnerInput { step: std::borrow::Cow::Borrowed(&spec), seccomp_filter: std::borrow::Cow::Borrowed(&program) };
        let text = serde_json::to_vec(&input).unwrap();
        assert!(text.len() < 1000, "{} bytes", text.len());
        let read: RunnerInput<'static> = serde_json::from_slice(&text).unwrap();
        assert_eq!((read.step.as_ref(), read.seccomp_filter.as_ref()), (&spec, program.as_slice()));
        assert!(serde_json::from_slice::<RunnerInput<'static>>(br#"{"step":{},"seccomp_filter":"@@"}"#).is_err());
    }

    #[test]
    fn step_specs_without_rootfs_use_the_overlay() {
        let mut value = serde_json::to_value(StepSpec {
            lowers: vec![],
            upper: PathBuf::from("/u"),
            work: PathBuf::from("/w"),
            args: vec!["true".into()],
            env: vec![],
            cwd: "/".into(),
            user: String::new(),
            hostname: String::new(),
            network: Network::Host,
            mounts: vec![],
            rootfs: Some(PathBuf::from("/r")),
            ulimits: vec![],
            shm_size: None,
        })
        .unwrap();
        value.as_object_mut().unwrap().remove("rootfs");
        let spec: StepSpec = serde_json::from_value(value).unwrap();
        assert_eq!(spec.rootfs, None);
    }

    #[test]
    fn non_runner_arguments_return() {
        // Returning (instead of exiting) is the observable behaviour here.
        maybe_run_step_child(&[OsString::from("rbuild"), OsString::from("build")]);
        maybe_run_step_child(&[OsString::from("rbuild")]);
    }
}
