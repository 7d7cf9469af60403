//! Step runners forked from a small process that rbuild makes at its start, instead of started
//! as new programs.
//!
//! Why: a runner started as `/proc/self/exe` paid for `execve`, the dynamic linking of a 26 MB
//! binary and its libraries, and the page faults of its relocations, then its exit: 3.3 ms of
//! CPU per RUN step (`perf stat`), beside the step on a two-core machine, where every
//! millisecond of CPU showed in the step's time (a non-PIE build, 0.9 ms cheaper to start,
//! made each step 0.9 ms faster). A fork of a process that has done nothing yet costs a tenth.
//!
//! How: [`start`] runs in `main()` after [`super::enter`], while rbuild is still single-threaded
//! (a fork of a multi-threaded process could inherit a lock some other thread held). The child,
//! the fork server, waits on its end of a socket pair. [`fork_runner`] sends it a step
//! directory, the name of the runner's cgroups and the runner's three pipe ends (SCM_RIGHTS),
//! with the runner's cgroup v2 directory when rbuild made one ([`super::cgroup`]); it forks (into
//! that cgroup: `clone3` with `CLONE_INTO_CGROUP`), and the new process puts the pipes on its
//! stdin, stdout and stderr, closes everything else, takes its own process group and becomes the
//! runner ([`super::runner::run`], which never returns). The server
//! answers with the runner's pid and a pidfd of it. The kernel reaps the runners (the server
//! ignores `SIGCHLD`): rbuild sees their exit through the pidfd and signals them through it, so
//! a reused pid is never hit. A runner that must report why it ended has no exit status here;
//! its result file says what happened.
//!
//! Invariants: the server dies with rbuild's main thread (`PR_SET_PDEATHSIG`, and the socket's
//! end), and each runner with the server (its own `PR_SET_PDEATHSIG`, set first thing by the
//! runner): no runner outlives rbuild. The server holds nothing of rbuild's open (its stdin,
//! stdout and stderr are `/dev/null`) and has its own process group, as each runner has.
//! Without a server (a test binary, a failed fork) runners are started as programs, as before.

use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::sync::Mutex;

use nix::sys::signal::Signal;
use nix::unistd::ForkResult;

use super::sys;

/// rbuild's end of the socket to the fork server and the server's pid, while there is one.
static SERVER: Mutex<Option<(OwnedFd, nix::unistd::Pid)>> = Mutex::new(None);

fn server() -> std::sync::MutexGuard<'static, Option<(OwnedFd, nix::unistd::Pid)>> {
    SERVER.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Makes the fork server; call while single-threaded, after [`super::enter`]. Without one,
/// runners start as programs (and the reason is logged).
pub fn start() {
    if let Err(error) = try_start() {
        tracing::debug!(%error, "no fork server: step runners start as programs");
    }
}

fn try_start() -> Result<(), super::SandboxError> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
        .map_err(|error| super::SandboxError::syscall("create the fork server's socket", error))?;
    // Above stdin, stdout and stderr, which the server replaces (rbuild may start without them).
    let theirs = theirs.try_clone().map_err(|error| super::SandboxError::io("place the fork server's socket", error))?;
    let parent = nix::unistd::getpid();
    match sys::fork_single_threaded()? {
        ForkResult::Child => {
            drop(ours);
            serve(theirs.as_fd(), parent)
        }
        ForkResult::Parent { child } => {
            drop(theirs);
            *server() = Some((ours, child));
            Ok(())
        }
    }
}

/// A runner forked by the server: its pid and a pidfd of it.
pub(super) struct Forked {
    pub pid: u32,
    pub pidfd: OwnedFd,
}

/// What the server needs to fork a runner.
pub(super) struct RunnerRequest<'a> {
    /// The step directory.
    pub directory: &'a Path,
    /// The name of the runner's cgroups ([`super::cgroup::new_name`]).
    pub cgroup: &'a str,
    /// Its stdin, stdout and stderr.
    pub pipes: [BorrowedFd<'a>; 3],
    /// Its cgroup v2 directory, to be born in.
    pub unified_cgroup: Option<BorrowedFd<'a>>,
}

/// Has the server fork a runner. `None` without a server; an error when the server failed.
pub(super) fn fork_runner(request: RunnerRequest<'_>) -> Option<std::io::Result<Forked>> {
    let server = server();
    let (socket, _) = server.as_ref()?;
    let mut message = request.directory.as_os_str().as_bytes().to_vec();
    message.push(0);
    message.extend_from_slice(request.cgroup.as_bytes());
    let descriptors: Vec<BorrowedFd<'_>> = request.pipes.into_iter().chain(request.unified_cgroup).collect();
    let answer = sys::send_message(socket.as_fd(), &message, &descriptors).and_then(|()| sys::receive_message(socket.as_fd(), 16, 1));
    Some(answer.and_then(|(bytes, descriptors)| {
        let pid = <[u8; 4]>::try_from(bytes.as_slice()).map(u32::from_ne_bytes).ok().filter(|pid| *pid != 0);
        match (pid, descriptors.into_iter().next()) {
            (Some(pid), Some(pidfd)) => Ok(Forked { pid, pidfd }),
            _ => Err(std::io::Error::other("the fork server could not fork a runner")),
        }
    }))
}

/// Ends the fork server (the end of its socket) and waits for it: call before rbuild exits, once
/// its runners are gone. Without this, the server dies with rbuild all the same.
pub fn stop() {
    if let Some((socket, pid)) = server().take() {
        drop(socket);
        let _ = nix::sys::wait::waitpid(pid, None);
    }
}

/// The server's loop: one runner per request, until rbuild closes its end (or dies).
fn serve(socket: BorrowedFd<'_>, parent: nix::unistd::Pid) -> ! {
    let _ = sys::set_parent_death_signal(Signal::SIGKILL);
    let _ = nix::sys::prctl::set_name(c"rbuild-forks");
    if nix::unistd::getppid() != parent {
        sys::exit_now(0);
    }
    // Its own process group: a terminal's Ctrl-C is rbuild's to handle (it cancels the steps);
    // killed by it, the server would take every runner with it. Nothing of rbuild's open: a
    // reader of rbuild's output sees its end when rbuild ends.
    let _ = nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0));
    sys::keep_only_descriptor(socket);
    sys::reap_children_automatically();
    loop {
        let (message, mut descriptors) = match sys::receive_message(socket, 64 * 1024, 4) {
            Ok((bytes, descriptors)) if !bytes.is_empty() => (bytes, descriptors),
            // rbuild's end is closed (an empty message), or the socket failed.
            _ => sys::exit_now(0),
        };
        let unified_cgroup = (descriptors.len() == 4).then(|| descriptors.pop()).flatten();
        let answer = match (message.iter().position(|byte| *byte == 0), <[OwnedFd; 3]>::try_from(descriptors)) {
            (Some(end), Ok(pipes)) => {
                let directory = OsString::from_vec(message[..end].to_vec());
                let cgroup = String::from_utf8_lossy(&message[end + 1..]).into_owned();
                fork_one(Path::new(&directory), &cgroup, pipes, unified_cgroup)
            }
            _ => None,
        };
        let sent = match &answer {
            Some(forked) => sys::send_message(socket, &forked.pid.to_ne_bytes(), &[forked.pidfd.as_fd()]),
            None => sys::send_message(socket, &0_u32.to_ne_bytes(), &[]),
        };
        if sent.is_err() {
            sys::exit_now(0);
        }
    }
}

/// Forks one runner; in the parent, its pid and pidfd (`None` when the fork failed).
fn fork_one(directory: &Path, cgroup: &str, pipes: [OwnedFd; 3], unified_cgroup: Option<OwnedFd>) -> Option<Forked> {
    // The server has one thread, always: the child may run any code. Born in its v2 cgroup
    // when rbuild made one; should that fail, the runner joins it itself.
    let forked = unified_cgroup
        .and_then(|unified| sys::fork_single_threaded_into_cgroup(unified.as_fd()).ok())
        .map_or_else(sys::fork_single_threaded, Ok);
    match forked {
        Ok(ForkResult::Child) => become_runner(directory, cgroup, pipes),
        Ok(ForkResult::Parent { child }) => {
            drop(pipes);
            let pidfd = sys::pidfd_open(child)?;
            Some(Forked { pid: child.as_raw() as u32, pidfd })
        }
        Err(_) => None,
    }
}

/// The forked child: the pipes on 0, 1 and 2, nothing else open, its own process group (a
/// terminal's Ctrl-C reaches rbuild only), `SIGCHLD` back to its default (the runner waits for
/// its container), then the runner.
fn become_runner(directory: &Path, cgroup: &str, pipes: [OwnedFd; 3]) -> ! {
    use std::os::fd::AsRawFd;
    for (target, pipe) in pipes.iter().enumerate() {
        if nix::unistd::dup2(pipe.as_raw_fd(), target as i32).is_err() {
            sys::exit_now(125);
        }
    }
    // The originals (and the server's socket) are among what goes here; 0, 1 and 2 stay.
    std::mem::forget(pipes);
    sys::close_descriptors_from(3);
    sys::default_action(Signal::SIGCHLD);
    let _ = nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0));
    super::runner::run(directory, cgroup)
}
