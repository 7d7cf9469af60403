//! Ctrl-C and SIGTERM during a build: the first signal starts one orderly cancel, a second one
//! ends the process at once (exit 130), as `docker buildx build` does. A build already
//! stopping because a step failed still counts the first signal as the first.
//!
//! Role: [`install`] registers the handler for SIGINT and SIGTERM; the build reads the cancel
//! flag it sets.
//!
//! Decision: one signal can arrive twice. Rootless, rbuild runs as the child of a thin waiter
//! (`sandbox::enter`) that passes on the signals sent to it; a signal sent to the whole process
//! group (`kill -INT -PGID`, a CI runner stopping a job) reaches the build directly and again
//! through the waiter. Counting both as two signals skipped the orderly cancel (exit 130 at once,
//! `tmp/` and `/dev/shm` left behind). So a signal from the parent and a signal from anyone else
//! with the same number, within [`TWIN_WINDOW_MS`] of each other, count as one. Two signals of
//! the same kind (two Ctrl-C at a terminal, which the waiter does not pass on) still end the
//! process at once.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};

use super::EXIT_INTERRUPTED;

/// How far apart a signal and its forwarded copy may arrive.
const TWIN_WINDOW_MS: i64 = 1000;

/// How long a signal handler waits for another thread's handler to finish recording the first
/// signal (spins; a few instructions are all it waits for).
const RECORDING_SPINS: u32 = 1 << 20;

static CANCEL: OnceLock<Arc<AtomicBool>> = OnceLock::new();
/// The first signal: its number (claimed first, 0 for none), whether it came from the parent,
/// and when (ms, monotonic); `FIRST_RECORDED` once the other two are written.
static FIRST_SIGNAL: AtomicI32 = AtomicI32::new(0);
static FIRST_FROM_PARENT: AtomicBool = AtomicBool::new(false);
static FIRST_AT_MS: AtomicI64 = AtomicI64::new(0);
static FIRST_RECORDED: AtomicBool = AtomicBool::new(false);
/// Whether the first signal's twin was seen (a third signal is then a second one).
static TWIN_SEEN: AtomicBool = AtomicBool::new(false);
static PARENT: AtomicI32 = AtomicI32::new(0);

/// Sets `cancel` on the first SIGINT or SIGTERM; exits with 130 on a second one.
pub(super) fn install(cancel: Arc<AtomicBool>) {
    let _ = CANCEL.set(cancel);
    PARENT.store(nix::unistd::getppid().as_raw(), Ordering::Relaxed);
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only uses atomics, clock_gettime and _exit (async-signal-safe).
        let _ = unsafe { signal_hook_registry::register_sigaction(signal, handle) };
    }
}

fn handle(info: &libc::siginfo_t) {
    let signal = info.si_signo;
    // SAFETY: si_pid is valid to read for signals sent by kill(2) (SI_USER); for others it is 0
    // or a pid we do not compare equal to the parent's by chance of a kernel sender.
    let sender = if info.si_code == libc::SI_USER { unsafe { info.si_pid() } } else { 0 };
    let from_parent = sender != 0 && sender == PARENT.load(Ordering::Relaxed);
    let now = monotonic_ms();
    let Some(cancel) = CANCEL.get() else { return };
    // The group's signal and the waiter's copy arrive microseconds apart and may be handled on
    // two threads at once: the first is claimed with one compare-and-swap, and a second handler
    // waits until the first is recorded before comparing (a cancel flag set first and the signal
    // recorded after let the twin see a cancel without its first signal and exit at once).
    if FIRST_SIGNAL.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
        FIRST_FROM_PARENT.store(from_parent, Ordering::SeqCst);
        FIRST_AT_MS.store(now, Ordering::SeqCst);
        FIRST_RECORDED.store(true, Ordering::SeqCst);
        cancel.store(true, Ordering::SeqCst);
        return;
    }
    // Bounded: a SIGTERM handled inside the SIGINT handler on the same thread would wait forever.
    let mut spins = 0;
    while !FIRST_RECORDED.load(Ordering::SeqCst) && spins < RECORDING_SPINS {
        std::hint::spin_loop();
        spins += 1;
    }
    let twin = FIRST_SIGNAL.load(Ordering::SeqCst) == signal
        && FIRST_FROM_PARENT.load(Ordering::SeqCst) != from_parent
        && now - FIRST_AT_MS.load(Ordering::SeqCst) <= TWIN_WINDOW_MS;
    if twin && !TWIN_SEEN.swap(true, Ordering::SeqCst) {
        return;
    }
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(EXIT_INTERRUPTED) };
}

/// Whether SIGINT or SIGTERM arrived (the build's cancel flag is also set by a failing step,
/// which is no interruption).
pub(super) fn received() -> bool {
    FIRST_SIGNAL.load(Ordering::SeqCst) != 0
}

/// Milliseconds on the monotonic clock. Async-signal-safe (`clock_gettime`, no allocation), which
/// `std::time::Instant` does not promise.
fn monotonic_ms() -> i64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC);
    now.map_or(0, |now| now.tv_sec() * 1000 + now.tv_nsec() / 1_000_000)
}
