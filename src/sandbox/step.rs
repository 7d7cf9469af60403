//! The caller's side of a step: take a started runner ([`super::standby`]), send it the step,
//! stream its output, cancel it, read its result.
//!
//! Safe from any thread of the multi-threaded main process: the only process-global effects are a
//! spawn (std's `Command`) and a temp dir. The runner gets `PR_SET_PDEATHSIG = SIGTERM` (fired
//! when the thread that started it dies: the standby thread, or this one, which holds the
//! [`ExitingRunner`] until the runner has exited; in practice when rbuild dies) and its own
//! process group, so a terminal's Ctrl-C reaches rbuild only and rbuild decides what to cancel.
//!
//! Cancel: poll the flag every 50 ms; when set, `SIGTERM` the runner (which kills the container and
//! cleans up), then `SIGKILL` it after [`KILL_GRACE`]: even then the overlay mount vanishes with the
//! runner's mount namespace and the container's init dies by its own PDEATHSIG.

use std::io::Read;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::runner::{RESULT_FILE, RunnerResult};
use super::standby::ExitedRunner;
use super::{SandboxError, StepOutcome, StepSpec, Stream, standby, sys};

/// How long a canceled runner may take to clean up before it is killed.
const KILL_GRACE: Duration = Duration::from_secs(5);
const CANCEL_POLL: Duration = Duration::from_millis(50);

/// See the module docs of [`super`].
pub fn run_step(spec: &StepSpec, output: &mut dyn FnMut(Stream, &[u8]), cancel: &AtomicBool) -> Result<StepOutcome, SandboxError> {
    if cancel.load(Ordering::Relaxed) {
        return Err(SandboxError::Canceled);
    }
    // The runner first: a new one starts while the filter is compiled (the first step's).
    let mut runner = standby::take()?;
    let text = super::seccomp_filter::program(spec.rootfs.is_some()).and_then(|seccomp_filter| {
        let input =
            super::RunnerInput { step: std::borrow::Cow::Borrowed(spec), seccomp_filter: std::borrow::Cow::Borrowed(seccomp_filter) };
        serde_json::to_vec(&input).map_err(|error| SandboxError::InvalidStep { reason: error.to_string() })
    });
    let text = match text {
        Ok(text) => text,
        Err(error) => {
            runner.dismiss();
            return Err(error);
        }
    };
    runner.send_step(&text);
    let standby::Runner { mut process, cgroup, mut stdout, mut stderr, directory, .. } = runner;

    let mut open = [true, true];
    let mut buffer = vec![0u8; 64 * 1024];
    let mut terminated_at: Option<Instant> = None;
    let mut killed = false;
    while open[0] || open[1] {
        if cancel.load(Ordering::Relaxed) && terminated_at.is_none() {
            process.signal(Signal::SIGTERM);
            terminated_at = Some(Instant::now());
        }
        if let Some(at) = terminated_at
            && !killed
            && at.elapsed() > KILL_GRACE
        {
            process.signal(Signal::SIGKILL);
            killed = true;
        }
        let streams = [open[0].then(|| stdout.as_fd()), open[1].then(|| stderr.as_fd())];
        let Ok(events) = sys::poll(streams, Some(CANCEL_POLL.as_millis() as u16)) else {
            continue;
        };
        for (index, stream) in [(0, Stream::Stdout), (1, Stream::Stderr)] {
            if !open[index] || events[index].is_empty() {
                continue;
            }
            let read = if index == 0 { stdout.read(&mut buffer) } else { stderr.read(&mut buffer) };
            match read {
                Ok(0) => open[index] = false,
                Ok(count) => output(stream, &buffer[..count]),
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => open[index] = false,
            }
        }
    }
    // Output closed: the container is gone. A runner writes its result before its output ends
    // (one that ends without it died first). One that ran its step goes on exiting while the
    // caller makes the step's diff.
    let result =
        std::fs::read(directory.path().join(RESULT_FILE)).ok().and_then(|bytes| serde_json::from_slice::<RunnerResult>(&bytes).ok());
    if terminated_at.is_none()
        && let Some(RunnerResult::Exited { exit_code, removed_stubs, unmounted }) = &result
    {
        tracing::debug!(?removed_stubs, exit_code, unmounted, "step finished");
        let exited = ExitedRunner { process, cgroup, _directory: directory };
        return Ok(StepOutcome { exit_code: *exit_code, runner: ExitingRunner { exited: Some(exited), unmounted: *unmounted } });
    }
    // Else wait for the exit here (a cancel, a failure). Its pidfd wakes this loop the moment it
    // exits (a fixed sleep cost a trivial step ~1 ms on average).
    let pidfd = process.exit_descriptor();
    let status = loop {
        match process.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(_) => break None,
        }
        if cancel.load(Ordering::Relaxed) && terminated_at.is_none() {
            process.signal(Signal::SIGTERM);
            terminated_at = Some(Instant::now());
        }
        if terminated_at.is_some_and(|at| at.elapsed() > KILL_GRACE) && !killed {
            process.signal(Signal::SIGKILL);
            killed = true;
        }
        match &pidfd {
            Some(pidfd) => {
                let _ = sys::poll([Some(pidfd.as_fd())], Some(CANCEL_POLL.as_millis() as u16));
            }
            None => std::thread::sleep(Duration::from_millis(2)),
        }
    };

    drop(ExitedRunner { process, cgroup, _directory: directory });
    Err(match result {
        _ if terminated_at.is_some() => SandboxError::Canceled,
        Some(RunnerResult::Canceled) => SandboxError::Canceled,
        Some(RunnerResult::Failed { message }) => SandboxError::Runner { message },
        // (An exited step's result was taken above.)
        Some(RunnerResult::Exited { .. }) | None => SandboxError::Runner {
            message: match status {
                Some(status) => format!("the runner ended without a result ({status})"),
                None => "the runner ended without a result".into(),
            },
        },
    })
}

/// A runner that has reported its step and is exiting (or has exited). Dropping it waits for
/// that exit where the step's overlay goes with it (the runner could not unmount it first):
/// drop it before the step's layer can be a lower directory of another overlay, whose mount
/// would find it still in use as an upper one (a kernel warning; an error with `index=on`).
/// The rest (the wait, when the runner unmounted the overlay itself; its cgroups, its step
/// directory) is left for removal off the step's path ([`super::standby::discard`]).
pub struct ExitingRunner {
    exited: Option<ExitedRunner>,
    /// The runner unmounted the step's overlay before it reported.
    unmounted: bool,
}

impl Drop for ExitingRunner {
    fn drop(&mut self) {
        let Some(mut exited) = self.exited.take() else { return };
        if !self.unmounted {
            let _ = exited.process.wait();
        }
        super::standby::discard(exited);
    }
}
