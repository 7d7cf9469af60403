//! Step runners started before their step: while one step runs, the next step's runner is
//! already through its process start (a fork of the fork server, [`super::fork_server`], or an
//! exec without one) and its namespace and cgroups, the largest part of a trivial step's time
//! that does not depend on the step.
//!
//! Role: [`take`] hands out a started [`Runner`], the one kept in standby when there is one (else
//! it starts one on the calling thread), and asks the standby thread for the next. That thread
//! starts a runner whenever the slot is empty and a step has asked, so at most one waits at a
//! time; the first as soon as the build is known to have RUN steps ([`standby_runners`]), before
//! the image is resolved and the graph solved. Standby lasts while a [`StandbyRunners`] guard
//! lives (the build, from its Dockerfile's parse to the end of its solve); without one (tests
//! that run steps directly) every step starts its own runner, as before.
//!
//! What a finished step leaves (its runner's cgroups and step directory, its overlay's work
//! directory: a dozen `rmdir` calls, 0.8 ms of a trivial step) is removed by another thread,
//! which runs only on an idle CPU (`SCHED_IDLE`), so it never delays the next step
//! ([`discard`]); the guard's drop removes what is left.
//!
//! A runner waits on its stdin, a pipe whose write end only its [`Runner`] holds: the step is
//! written there ([`Runner::send_step`]), and closing it unused dismisses the runner, which exits
//! 0 without a word ([`super::runner`]). Its stdout and stderr are pipes from the start, so the
//! step's output is read as it comes, as before.
//!
//! Invariants: a runner gets `SIGTERM` when the thread that started it dies (it asks for that
//! first thing); the standby thread never returns, and a step's own thread holds its runner's
//! [`super::ExitingRunner`] until the runner has exited, so either way that is when rbuild dies. A runner that was never given a step is
//! reaped by whoever dismisses it, and its step directory and cgroups removed.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Condvar, Mutex, MutexGuard};

use super::{PrivateDir, RUN_STEP_COMMAND, SandboxError};

/// The program runners are started as; `/proc/self/exe` unless set.
static RUNNER_PROGRAM: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Makes runners start as `program` (an rbuild binary whose `main()` calls
/// [`super::maybe_run_step_child`]) instead of `/proc/self/exe`: for test binaries, which are not
/// rbuild. Effective once, before the first step.
pub fn set_runner_program(program: std::path::PathBuf) {
    let _ = RUNNER_PROGRAM.set(program);
}

/// A started runner process waiting for its step, and its private step directory.
pub(super) struct Runner {
    pub(super) process: RunnerProcess,
    /// The name of its cgroups ([`super::cgroup::new_name`]).
    pub(super) cgroup: String,
    /// `None` once the step was sent.
    step_pipe: Option<File>,
    pub(super) stdout: File,
    pub(super) stderr: File,
    // Last: the directory goes when the runner is done with it.
    pub(super) directory: PrivateDir,
}

impl Runner {
    fn start() -> Result<Runner, SandboxError> {
        // Private to rbuild's user: the runner keeps the container's state and its result here.
        let directory = PrivateDir::new("step").map_err(|error| SandboxError::io("create the step's temp dir", error))?;
        let cgroup = super::cgroup::new_name();
        if RUNNER_PROGRAM.get().is_none() {
            let pipe = || {
                nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|error| SandboxError::syscall("create the runner's pipes", error))
            };
            let ((step_read, step_write), (stdout_read, stdout_write), (stderr_read, stderr_write)) = (pipe()?, pipe()?, pipe()?);
            // A runner that joins cgroups of its own is born in its v2 one ([`super::cgroup`]).
            let joins_cgroups = super::runner::device_guard() == super::spec::DeviceGuard::DevicesCgroup;
            let unified_cgroup = joins_cgroups.then(|| super::cgroup::unified_cgroup(&cgroup)).flatten();
            let request = super::fork_server::RunnerRequest {
                directory: directory.path(),
                cgroup: &cgroup,
                pipes: [step_read.as_fd(), stdout_write.as_fd(), stderr_write.as_fd()],
                unified_cgroup: unified_cgroup.as_ref().map(|unified| unified.as_fd()),
            };
            let forked = super::fork_server::fork_runner(request);
            if unified_cgroup.is_some() && !matches!(forked, Some(Ok(_))) {
                super::cgroup::remove(&cgroup);
            }
            if let Some(forked) = forked {
                let forked = forked.map_err(|error| SandboxError::io("fork the step runner", error))?;
                return Ok(Runner {
                    process: RunnerProcess::Forked { pidfd: forked.pidfd },
                    cgroup,
                    step_pipe: Some(File::from(step_write)),
                    stdout: File::from(stdout_read),
                    stderr: File::from(stderr_read),
                    directory,
                });
            }
        }
        let program = RUNNER_PROGRAM.get().map_or(std::path::Path::new("/proc/self/exe"), |path| path.as_path());
        let mut command = Command::new(program);
        command
            .arg0("rbuild")
            .arg(RUN_STEP_COMMAND)
            .arg(directory.path())
            .arg(&cgroup)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a terminal's Ctrl-C reaches rbuild only, which decides what
            // to cancel. No code between fork and exec, so std spawns with `posix_spawn` (no copy
            // of rbuild's page tables, no copy-on-write faults in its threads afterwards); the
            // runner asks for its `SIGTERM` itself ([`super::runner`]).
            .process_group(0);
        let mut child = command.spawn().map_err(|error| SandboxError::io("start the step runner", error))?;
        let (Some(step_pipe), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(SandboxError::Runner { message: "the runner has no pipes".into() });
        };
        Ok(Runner {
            process: RunnerProcess::Spawned(child),
            cgroup,
            step_pipe: Some(File::from(OwnedFd::from(step_pipe))),
            stdout: File::from(OwnedFd::from(stdout)),
            stderr: File::from(OwnedFd::from(stderr)),
            directory,
        })
    }

    /// Writes the step (JSON of a [`super::RunnerInput`]) and closes the pipe: the runner starts
    /// it. A runner that already died leaves a broken pipe, which is not an error here: its exit
    /// status and missing result say what happened.
    pub(super) fn send_step(&mut self, text: &[u8]) {
        if let Some(mut pipe) = self.step_pipe.take() {
            let _ = pipe.write_all(text);
        }
    }

    /// Ends a runner that got no step: EOF on its stdin, then what [`ExitedRunner`]'s drop does.
    pub(super) fn dismiss(self) {
        let Runner { process, cgroup, step_pipe, directory, .. } = self;
        drop(step_pipe);
        drop(ExitedRunner { process, cgroup, _directory: directory });
    }
}

/// A runner that exits: its drop waits for that (a spawned runner's status is kept once waited
/// for), then removes its cgroups (empty once it is gone, and its container's) and its step
/// directory.
pub(super) struct ExitedRunner {
    pub(super) process: RunnerProcess,
    pub(super) cgroup: String,
    // After the wait: the runner's mounts were made under it.
    pub(super) _directory: PrivateDir,
}

impl Drop for ExitedRunner {
    fn drop(&mut self) {
        if self.process.wait().is_ok() {
            super::cgroup::remove(&self.cgroup);
        }
    }
}

/// A runner's process: forked by the fork server ([`super::fork_server`]), or started as a
/// program (rbuild's child).
pub(super) enum RunnerProcess {
    /// The kernel reaps it; its pidfd says when it is gone and takes its signals.
    Forked {
        pidfd: OwnedFd,
    },
    Spawned(Child),
}

impl RunnerProcess {
    /// Sends `signal` (to this process only, even once its pid is reused).
    pub(super) fn signal(&mut self, signal: nix::sys::signal::Signal) {
        match self {
            RunnerProcess::Forked { pidfd, .. } => {
                let _ = super::sys::pidfd_send_signal(pidfd.as_fd(), signal);
            }
            // Our own child, not yet reaped: the pid is still its.
            RunnerProcess::Spawned(child) => {
                let _ = super::sys::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal);
            }
        }
    }

    /// Whether it has exited, and with what status when that is known (a forked runner's is
    /// not: the kernel reaped it).
    pub(super) fn try_wait(&mut self) -> std::io::Result<Option<Option<std::process::ExitStatus>>> {
        match self {
            RunnerProcess::Forked { pidfd, .. } => {
                let exited = super::sys::poll([Some(pidfd.as_fd())], Some(0)).map_err(std::io::Error::from)?[0]
                    .intersects(nix::poll::PollFlags::POLLIN | nix::poll::PollFlags::POLLHUP);
                Ok(exited.then_some(None))
            }
            RunnerProcess::Spawned(child) => Ok(child.try_wait()?.map(Some)),
        }
    }

    /// Waits for its exit (a spawned runner's status is kept once waited for).
    pub(super) fn wait(&mut self) -> std::io::Result<()> {
        match self {
            RunnerProcess::Forked { pidfd, .. } => loop {
                match super::sys::poll([Some(pidfd.as_fd())], None) {
                    Ok(events) if !events[0].is_empty() => return Ok(()),
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(error) => return Err(error.into()),
                }
            },
            RunnerProcess::Spawned(child) => child.wait().map(drop),
        }
    }

    /// A descriptor readable once it has exited, when there is one.
    pub(super) fn exit_descriptor(&self) -> Option<OwnedFd> {
        match self {
            RunnerProcess::Forked { pidfd, .. } => pidfd.try_clone().ok(),
            RunnerProcess::Spawned(child) => super::sys::pidfd_open(nix::unistd::Pid::from_raw(child.id() as i32)),
        }
    }
}

struct State {
    /// A [`StandbyRunners`] guard lives.
    enabled: bool,
    /// A step took a runner since the standby thread last started one.
    wanted: bool,
    ready: Option<Runner>,
    thread_started: bool,
    /// For the leftovers thread to drop: what a finished step leaves behind, whose drop removes
    /// it (an exited runner, a work directory).
    leftovers: Vec<Box<dyn Send>>,
    /// How many of those it is removing now.
    removing: usize,
    leftovers_thread_started: bool,
}

static STATE: Mutex<State> = Mutex::new(State {
    enabled: false,
    wanted: false,
    ready: None,
    thread_started: false,
    leftovers: Vec::new(),
    removing: 0,
    leftovers_thread_started: false,
});
static CHANGED: Condvar = Condvar::new();

fn state() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Keeps a runner in standby while it lives; the one waiting when it drops is dismissed.
pub struct StandbyRunners {
    /// The thread preparing what every step needs, when the build has steps.
    preparing: Option<std::thread::JoinHandle<()>>,
}

/// See the module docs. `runs_steps`: the build has RUN steps (cached or not). Then the first
/// runner starts at once, and what every step needs is prepared on a thread of its own: the
/// snapshotter's probe and the seccomp filter (compiling it is 15 ms of CPU; `kept_filter`
/// keeps it between builds). Both were the first step's wait.
pub fn standby_runners(runs_steps: bool, kept_filter: super::KeptFilter) -> StandbyRunners {
    {
        let mut state = state();
        state.enabled = true;
        if runs_steps {
            ask_for_runner(&mut state);
        }
    }
    super::seccomp_filter::keep_in(kept_filter);
    let preparing = runs_steps
        .then(|| {
            std::thread::Builder::new()
                .name("prepare-steps".into())
                .spawn(|| {
                    // Errors are the steps' to report, when they ask for the same.
                    if let Ok(snapshotter) = super::snapshotter() {
                        let _ = super::seccomp_filter::program(snapshotter == super::Snapshotter::Copy);
                    }
                })
                .ok()
        })
        .flatten();
    StandbyRunners { preparing }
}

impl Drop for StandbyRunners {
    fn drop(&mut self) {
        // The probe's directory is removed before rbuild goes.
        if let Some(preparing) = self.preparing.take() {
            let _ = preparing.join();
        }
        let (ready, leftovers) = {
            let mut state = state();
            state.enabled = false;
            while state.removing > 0 {
                state = CHANGED.wait(state).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            (state.ready.take(), std::mem::take(&mut state.leftovers))
        };
        drop(leftovers);
        if let Some(runner) = ready {
            runner.dismiss();
        }
    }
}

/// Drops `value` (what a finished step leaves behind: its drop removes it) on the leftovers
/// thread while standby lasts, off the next step's path; else here.
pub fn discard(value: impl Send + 'static) {
    let leftover: Box<dyn Send> = Box::new(value);
    {
        let mut state = state();
        if state.enabled {
            if !state.leftovers_thread_started {
                state.leftovers_thread_started = std::thread::Builder::new().name("step-leftovers".into()).spawn(remove_leftovers).is_ok();
            }
            if state.leftovers_thread_started {
                state.leftovers.push(leftover);
                CHANGED.notify_all();
                return;
            }
        }
    }
    drop(leftover);
}

/// A started runner for one step: the standby one if it is ready, else a new one.
pub(super) fn take() -> Result<Runner, SandboxError> {
    let ready = {
        let mut state = state();
        let ready = state.ready.take();
        if state.enabled {
            ask_for_runner(&mut state);
        }
        ready
    };
    match ready {
        Some(runner) => Ok(runner),
        None => Runner::start(),
    }
}

/// Asks the standby thread (started now if need be) for a runner.
fn ask_for_runner(state: &mut State) {
    state.wanted = true;
    if !state.thread_started {
        state.thread_started = std::thread::Builder::new().name("standby-runner".into()).spawn(keep_one_ready).is_ok();
    }
    CHANGED.notify_all();
}

/// The leftovers thread: removes what steps left, on a CPU nothing else wants. Never returns.
fn remove_leftovers() {
    if let Err(error) = super::sys::run_only_when_idle() {
        tracing::debug!(%error, "step leftovers removed at normal priority");
    }
    loop {
        let leftovers = {
            let mut state = state();
            while state.leftovers.is_empty() {
                state = CHANGED.wait(state).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            let leftovers = std::mem::take(&mut state.leftovers);
            state.removing = leftovers.len();
            leftovers
        };
        drop(leftovers);
        state().removing = 0;
        CHANGED.notify_all();
    }
}

/// The standby thread: starts a runner whenever a step took one and the slot is empty. Never
/// returns (its runners' `SIGTERM` comes with its death).
fn keep_one_ready() {
    loop {
        {
            let mut state = state();
            let wanted = |state: &State| state.enabled && state.wanted && state.ready.is_none();
            while !wanted(&state) {
                state = CHANGED.wait(state).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            state.wanted = false;
        }
        let runner = match Runner::start() {
            Ok(runner) => runner,
            Err(error) => {
                tracing::debug!(%error, "no standby runner");
                continue;
            }
        };
        let unwanted = {
            let mut state = state();
            if state.enabled && state.ready.is_none() {
                state.ready = Some(runner);
                None
            } else {
                Some(runner)
            }
        };
        if let Some(runner) = unwanted {
            runner.dismiss();
        }
    }
}
