//! The step runner: the single-threaded process that owns one container's whole life, forked by
//! the fork server ([`super::fork_server`]) or, without one, started as `rbuild __run-step <step
//! directory> <cgroup name>`. Its name is `rbuild-runner`; it works in its step directory.
//!
//! It is started before its step is known ([`super::standby`]): what needs no step (the process
//! start, signal handlers, subreaper, private mount namespace, the step directory's mount points)
//! is done while it waits; then it reads its step, a [`RunnerInput`] in JSON, from stdin until the
//! end of the stream. A stream that ends empty dismisses it: it exits 0 and reports nothing.
//!
//! Order: signal handlers → subreaper → private mount namespace (→ as root with cgroup v1: its
//! own cgroups joined and the hierarchies detached, [`super::cgroup`]) → the step (→ fresh network
//! namespace) → overlay mount (or a recursive bind of [`StepSpec::rootfs`] for the copying snapshotter) →
//! (copying snapshotter: the lower directories noted, [`super::rename_guard`]) → USER resolution →
//! stubs and cwd → spec → libcontainer build/start → wait (answering the rename guard's calls; or
//! kill on `SIGTERM`/`SIGINT`/`SIGHUP`) → stub removal → unmount of the root filesystem → result →
//! exit. The result goes to `result.json` next to the
//! spec file; stdout/stderr are the container's own (libcontainer dups them into the init), so
//! nothing else may print there.
//!
//! Invariant: the runner stays single-threaded (libcontainer clones it with raw `clone3`) and the
//! overlay (or the bind of a plain rootfs) is mounted in the runner's own mount namespace, so it
//! vanishes with the runner even when the runner is killed with `SIGKILL`. A cancel or the
//! parent's death (`PR_SET_PDEATHSIG` = `SIGTERM`, set by [`super::step`]) wakes the wait loop
//! through a self-pipe and kills the container's init (pid namespace: everything in it dies).

use std::fs::{self, File};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::mount::{MntFlags, MsFlags, mount};
use nix::poll::PollFlags;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::executor::EnvSafeExecutor;
use super::rename_guard::{LowerDirectories, RenameGuard};
use super::rootfs::Root;
use super::{Network, RunnerInput, SandboxError, StepSpec, network, overlay, spec, sys, user};
use crate::oci::error_text;

pub(crate) const RESULT_FILE: &str = "result.json";
/// A runner's process name (`comm`).
const RUNNER_NAME: &std::ffi::CStr = c"rbuild-runner";

/// What the runner reports to [`super::run_step`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum RunnerResult {
    /// `unmounted`: the root filesystem was unmounted before this result was written (else it
    /// goes with the runner's exit).
    Exited {
        exit_code: i32,
        removed_stubs: Vec<String>,
        unmounted: bool,
    },
    Canceled,
    Failed {
        message: String,
    },
}

/// Waits for a step on stdin, runs it in the private step directory `directory` and (as root
/// with cgroup v1) the cgroups `cgroup` ([`super::cgroup::new_name`]), and exits with the
/// container's code (125 when the runner failed, 130 when canceled; 0 when dismissed).
pub(crate) fn run(directory: &Path, cgroup: &str) -> ! {
    // `SIGTERM` when the thread that started this process dies (in practice, rbuild). Should it
    // have died before this call, the step pipe's end dismisses this runner all the same.
    let _ = sys::set_parent_death_signal(Signal::SIGTERM);
    // Known by its name (a forked runner's command line is rbuild's), working in its directory
    // (where `ps` and the tests find which step directory is its).
    let _ = nix::sys::prctl::set_name(RUNNER_NAME);
    let _ = std::env::set_current_dir(directory);
    let directory = directory.to_path_buf();
    let parent = nix::unistd::getppid();
    let result = match run_step(&directory, cgroup) {
        Ok(Some(result)) => result,
        // Dismissed: nobody waits for a result, and the step directory is the caller's.
        Ok(None) => std::process::exit(0),
        Err(error) => RunnerResult::Failed { message: error_text(&error) },
    };
    let code = match &result {
        RunnerResult::Exited { exit_code, .. } => *exit_code,
        RunnerResult::Canceled => 130,
        RunnerResult::Failed { .. } => 125,
    };
    if nix::unistd::getppid() != parent {
        // rbuild is gone: nobody will read the result or remove the step's temp dir.
        let _ = fs::remove_dir_all(&directory);
    } else if let Ok(text) = serde_json::to_vec(&result) {
        // Whole or not at all: rbuild reads it as soon as the output ends, before this exit.
        let partial = directory.join(format!("{RESULT_FILE}.partial"));
        if fs::write(&partial, text).is_ok() {
            let _ = fs::rename(&partial, directory.join(RESULT_FILE));
        }
    }
    end_output();
    std::process::exit(code)
}

/// Ends the step's output (the container is gone): rbuild goes on from the end of both streams,
/// while this process's exit tears its mount namespace down.
fn end_output() {
    sys::point_at_null(&[1, 2]);
}

/// Reads the step from stdin, a pipe from rbuild (the spec holds `env=` secrets: never a file),
/// until the end of the stream; an empty stream is `None`, the dismissal. A signal meanwhile
/// (rbuild ending) also dismisses.
fn read_step(wake_read: &OwnedFd) -> Result<Option<Vec<u8>>, SandboxError> {
    let stdin = std::io::stdin();
    let mut text = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let events = match sys::poll([Some(stdin.as_fd()), Some(wake_read.as_fd())], None) {
            Ok(events) => events,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(error) => return Err(SandboxError::syscall("wait for the step", error)),
        };
        if events[1].contains(PollFlags::POLLIN) {
            return Ok(None);
        }
        if events[0].is_empty() {
            continue;
        }
        match std::io::Read::read(&mut stdin.lock(), &mut buffer) {
            Ok(0) => return Ok((!text.is_empty()).then_some(text)),
            Ok(count) => text.extend_from_slice(&buffer[..count]),
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(SandboxError::io("read the step", error)),
        }
    }
}

fn install_signal_handlers() -> Result<OwnedFd, SandboxError> {
    let read = sys::wake_pipe().map_err(|error| SandboxError::syscall("create the wake pipe", error))?;
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        sys::wake_on(signal).map_err(|error| SandboxError::syscall("install a signal handler", error))?;
    }
    Ok(read)
}

fn run_step(directory: &Path, cgroup: &str) -> Result<Option<RunnerResult>, SandboxError> {
    let wake_read = install_signal_handlers()?;
    let _ = sys::become_subreaper();
    super::userns::private_mount_namespace("create the step's mount namespace")?;
    let rootfs = directory.join("rootfs");
    let scratch = directory.join("overlay");
    for path in [&rootfs, &scratch] {
        super::create_directory(path)?;
    }
    // Without a devices cgroup (and outside a user namespace) no device node of the root
    // filesystem may open: layers and earlier steps could have made any.
    let device_guard = device_guard();
    if device_guard == spec::DeviceGuard::DevicesCgroup {
        super::cgroup::enter_own(directory, cgroup)?;
    }

    let Some(text) = read_step(&wake_read)? else { return Ok(None) };
    let input: RunnerInput<'static> =
        serde_json::from_slice(&text).map_err(|error| SandboxError::InvalidStep { reason: format!("unreadable step spec: {error}") })?;
    let step = input.step.into_owned();
    if !step.cwd.starts_with('/') || step.args.is_empty() {
        return Err(SandboxError::InvalidStep { reason: format!("cwd `{}` must be absolute and args non-empty", step.cwd) });
    }
    if step.network == Network::None {
        network::enter_isolated_network()?;
    }
    // Inherited groups (the host's, or rbuild's) must not leak into a step without supplementary
    // groups: libcontainer calls setgroups only for a non-empty list. Denied with a single-id
    // map, where there is nothing to drop.
    let _ = nix::unistd::setgroups(&[]);

    let confinement = Confinement { device_guard, cgroup: cgroup.to_string(), seccomp_filter: input.seccomp_filter.into_owned().into() };
    let nodev = confinement.device_guard == spec::DeviceGuard::NoMknod;
    match &step.rootfs {
        None => overlay::mount_overlay(&step.lowers, &step.upper, &step.work, &rootfs, &scratch, nodev)?,
        Some(source) => bind_rootfs(source, &rootfs, nodev)?,
    }
    let mut result = run_mounted(&step, directory, &rootfs, &wake_read, &confinement);
    // Unmounted before the result, not in this process's exit: the container is gone (its
    // mount namespace with it), so this is the overlay's last use, and its upper directory is
    // free to be the next step's lower at once, while this process exits (its mount namespace's
    // teardown, 0.6 ms, was the next step's wait). Volatile, the overlay does not sync on its
    // way out; the unmount costs 0.1 ms. What is left of the step directory is the caller's to
    // remove, and the overlay's workdir.
    let _ = std::env::set_current_dir("/");
    if let Ok(RunnerResult::Exited { unmounted, .. }) = &mut result {
        *unmounted = nix::mount::umount2(&rootfs, MntFlags::empty()).is_ok();
    }
    result.map(Some)
}

/// Binds the plain directory `source` (recursively) at `target`: the copying snapshotter's
/// rootfs. A mount rather than `source` itself, so the rootfs is a mount point as libcontainer
/// expects, and so it goes away with the runner's mount namespace like the overlay does.
fn bind_rootfs(source: &Path, target: &Path, nodev: bool) -> Result<(), SandboxError> {
    let is_directory = fs::symlink_metadata(source).is_ok_and(|metadata| metadata.is_dir());
    if !source.is_absolute() || !is_directory {
        return Err(SandboxError::InvalidStep { reason: format!("rootfs `{}` must be an absolute directory", source.display()) });
    }
    mount(Some(source), target, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
        .map_err(|error| SandboxError::syscall(format!("bind rootfs `{}` on `{}`", source.display(), target.display()), error))?;
    if nodev {
        mount(None::<&str>, target, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NODEV, None::<&str>)
            .map_err(|error| SandboxError::syscall(format!("remount `{}` nodev", target.display()), error))?;
    }
    Ok(())
}

fn run_mounted(
    step: &StepSpec,
    directory: &Path,
    rootfs: &Path,
    wake_read: &OwnedFd,
    confinement: &Confinement,
) -> Result<RunnerResult, SandboxError> {
    // Before the stubs and the working directory exist: those are the step's, as in an overlay.
    let lowers = step.rootfs.is_some().then(|| LowerDirectories::record(rootfs)).transpose()?;
    let root = Root::open(rootfs)?;
    let identity =
        user::resolve(&step.user, root.read_to_string("/etc/passwd")?.as_deref(), root.read_to_string("/etc/group")?.as_deref())?;
    let mut stubs = Vec::new();
    let mut outcome = (|| {
        for (destination, kind) in spec::stub_destinations(step) {
            let created = root.create_stub(&destination, kind)?;
            if !super::KEPT_MOUNT_POINTS.contains(&destination.as_str()) {
                stubs.extend(created);
            }
        }
        root.create_dir_all(&step.cwd, (identity.uid, identity.gid))?;
        run_container(step, &identity, directory, root.path(), wake_read, confinement, lowers)
    })();
    let removed = root.remove_stubs(&stubs);
    if let Ok(RunnerResult::Exited { removed_stubs, .. }) = &mut outcome {
        *removed_stubs = removed;
    }
    outcome
}

/// What keeps the step in: the device guard, the cgroups and the seccomp filter.
struct Confinement {
    device_guard: spec::DeviceGuard,
    /// The name of the container's cgroups.
    cgroup: String,
    seccomp_filter: std::sync::Arc<[u8]>,
}

/// How host devices are kept out ([`spec::DeviceGuard`]): by the user namespace, else by a
/// cgroup v1 devices controller when the host has one mounted, else by taking CAP_MKNOD away.
pub(crate) fn device_guard() -> spec::DeviceGuard {
    if super::userns::in_user_namespace() {
        return spec::DeviceGuard::UserNamespace;
    }
    let devices_controller =
        nix::sys::statfs::statfs("/sys/fs/cgroup/devices").is_ok_and(|stat| stat.filesystem_type() == nix::sys::statfs::CGROUP_SUPER_MAGIC);
    if devices_controller { spec::DeviceGuard::DevicesCgroup } else { spec::DeviceGuard::NoMknod }
}

/// Whether `id` is inside the ranges of a /proc/self/{uid,gid}_map.
fn id_mapped(map: &str, id: u32) -> bool {
    map.lines().any(|line| {
        let fields: Vec<u64> = line.split_whitespace().filter_map(|field| field.parse().ok()).collect();
        matches!(fields[..], [inside, _, count] if (inside..inside + count).contains(&u64::from(id)))
    })
}

fn container_error(error: impl std::error::Error) -> SandboxError {
    SandboxError::Container { message: error_text(&error) }
}

fn run_container(
    step: &StepSpec,
    identity: &user::Identity,
    directory: &Path,
    rootfs: &Path,
    wake_read: &OwnedFd,
    confinement: &Confinement,
    lowers: Option<LowerDirectories>,
) -> Result<RunnerResult, SandboxError> {
    let (mut rename_guard, notification_socket) = match lowers.map(RenameGuard::new).transpose()? {
        Some((guard, socket)) => (Some(guard), Some(socket)),
        None => (None, None),
    };
    let id = format!("rbuild-{}", std::process::id());
    let cgroups_path = super::cgroup::path_of(&confinement.cgroup);
    let bundle = directory.join("bundle");
    let state = directory.join("state");
    for path in [&bundle, &state] {
        super::create_directory(path)?;
    }
    let environment = spec::Environment {
        rootfs,
        cgroups_path: &cgroups_path,
        tty_group_mapped: fs::read_to_string("/proc/self/gid_map").is_ok_and(|map| id_mapped(&map, 5)),
        setgroups_allowed: fs::read_to_string("/proc/self/setgroups").map_or(true, |text| text.trim() != "deny"),
        device_guard: confinement.device_guard,
    };
    let oci_spec = spec::build(step, identity, &environment)?;
    // The OCI spec holds the process environment, `env=` secrets included: libcontainer reads
    // `config.json` by path, so that is a link to a memory file of this process.
    let spec_text = serde_json::to_vec(&oci_spec).map_err(|error| SandboxError::InvalidStep { reason: error.to_string() })?;
    let spec_memory =
        super::memory_file("config.json", &spec_text).map_err(|error| SandboxError::io("keep the container spec in memory", error))?;
    let spec_link = format!("/proc/{}/fd/{}", std::process::id(), spec_memory.as_raw_fd());
    std::os::unix::fs::symlink(&spec_link, bundle.join("config.json"))
        .map_err(|error| SandboxError::io(format!("link `{}`", bundle.join("config.json").display()), error))?;

    let stdin = File::open("/dev/null").map_err(|error| SandboxError::io("open `/dev/null`", error))?;
    let duplicate = |fd: std::os::fd::BorrowedFd<'_>| {
        fd.try_clone_to_owned().map_err(|error| SandboxError::io("duplicate the output descriptors", error))
    };
    let (stdout, stderr) = (duplicate(std::io::stdout().as_fd())?, duplicate(std::io::stderr().as_fd())?);
    let mut container = ContainerBuilder::new(id, SyscallType::default())
        .with_executor(EnvSafeExecutor {
            seccomp_filter: confinement.seccomp_filter.clone(),
            notification_socket: notification_socket.as_ref().map(AsRawFd::as_raw_fd),
        })
        .with_root_path(&state)
        .map_err(container_error)?
        .with_stdin(OwnedFd::from(stdin))
        .with_stdout(stdout)
        .with_stderr(stderr)
        .as_init(&bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(container_error)?;
    // The init has its copy: the guard must see the end of the stream when the init dies.
    drop(notification_socket);
    let result = start_and_wait(&mut container, wake_read, rename_guard.as_mut());
    // Reaped, its pid namespace gone: only the cgroups are left, which the runner's reaper
    // removes (the state directory goes with the step's).
    if result.is_err()
        && let Err(error) = container.delete(true)
    {
        tracing::debug!(%error, "container delete failed");
    }
    result
}

fn start_and_wait(
    container: &mut libcontainer::container::Container,
    wake_read: &OwnedFd,
    mut rename_guard: Option<&mut RenameGuard>,
) -> Result<RunnerResult, SandboxError> {
    let pid = container.pid().ok_or_else(|| SandboxError::Container { message: "the container has no init process".into() })?;
    if let Err(error) = container.start() {
        let _ = sys::kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
        return Err(container_error(error));
    }
    let pidfd = sys::pidfd_open(pid);
    let mut canceled = false;
    let mut reaped = None;
    loop {
        // Without a pidfd (old kernel) poll only the wake pipe, with a timeout to check the child.
        let timeout = if pidfd.is_some() { None } else { Some(50) };
        let guard_descriptor = rename_guard.as_deref().and_then(RenameGuard::descriptor);
        let events = match sys::poll([pidfd.as_ref().map(AsFd::as_fd), Some(wake_read.as_fd()), guard_descriptor], timeout) {
            Ok(events) => events,
            Err(nix::errno::Errno::EINTR) => [PollFlags::empty(); 3],
            Err(_) => break,
        };
        if let Some(guard) = rename_guard.as_deref_mut()
            && !events[2].is_empty()
        {
            guard.on_ready(events[2].intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL));
        }
        if !canceled && events[1].contains(PollFlags::POLLIN) {
            canceled = true;
            let _ = sys::kill(pid, Signal::SIGKILL);
        }
        if pidfd.is_some() {
            if events[0].contains(PollFlags::POLLIN) {
                break;
            }
        } else if let Ok(status) = waitpid(pid, Some(WaitPidFlag::WNOHANG))
            && status != WaitStatus::StillAlive
        {
            reaped = Some(Ok(status));
            break;
        }
    }
    drop(pidfd);
    let status = reaped.unwrap_or_else(|| {
        loop {
            match waitpid(pid, None) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => break other,
            }
        }
    });
    // The init's orphans (none expected: the pid namespace ends with it) are ours as subreaper.
    while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
    if canceled {
        return Ok(RunnerResult::Canceled);
    }
    let exit_code = match status {
        Ok(WaitStatus::Exited(_, code)) => code,
        Ok(WaitStatus::Signaled(_, signal, _)) => 128 + signal as i32,
        Ok(_) | Err(_) => 255,
    };
    Ok(RunnerResult::Exited { exit_code, removed_stubs: Vec::new(), unmounted: false })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_maps_are_read_as_ranges() {
        let map = "         0       1001          1\n         1     100000      65536\n";
        assert!(id_mapped(map, 0));
        assert!(id_mapped(map, 5));
        assert!(id_mapped(map, 65536));
        assert!(!id_mapped(map, 65537));
        assert!(!id_mapped("0 1001 1\n", 5));
    }

    #[test]
    fn a_rootfs_must_be_an_absolute_directory() {
        let target = tempfile::tempdir().unwrap();
        let file = tempfile::NamedTempFile::new().unwrap();
        for source in [Path::new("relative/dir"), file.path(), Path::new("/nonexistent-rbuild-rootfs")] {
            let error = bind_rootfs(source, target.path(), false).unwrap_err();
            assert!(matches!(error, SandboxError::InvalidStep { .. }), "{source:?}: {error}");
        }
    }

    #[test]
    fn the_error_text_joins_sources() {
        let error = SandboxError::io("read `x`", std::io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(error_text(&error), "failed to read `x`: No such file or directory (os error 2)");
    }
}
