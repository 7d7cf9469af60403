//! Where a layer's CPU goes: the CPU time of each stage of the one pass that turns a snapshot
//! into a layer (read the files, write the tar, hash, compress, write the blob), summed over the
//! whole process (every layer tar it writes) and said once at its end, for the benchmark to
//! print CPU-seconds per GiB.
//!
//! Off unless asked for (`RBUILD_LOG=rbuild::stages=debug`): then each measured piece of work
//! reads the thread's CPU clock before and after (a system call each, too dear to pay always).
//! Stages nest (the tar writer's write reaches the hash, which reaches the compressor, which
//! reaches the blob file): each stage is charged its own time only, what the stages it reached
//! spent being taken off, so the stages add up to the CPU the pass used. Threads are summed:
//! the compressor's pool shows as the CPU it used, not as wall time.

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A stage of the one pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Reading the files' bytes.
    Read,
    /// Walking the tree and writing tar headers (all the tar writer does itself).
    Tar,
    /// sha256: the diff id, the chunks, the blob.
    Hash,
    /// Cutting chunks, compressing them, checking reused members.
    Compress,
    /// Writing and syncing the blob file.
    Write,
}

const STAGES: [Stage; 5] = [Stage::Read, Stage::Tar, Stage::Hash, Stage::Compress, Stage::Write];

static ENABLED: AtomicBool = AtomicBool::new(false);
/// CPU nanoseconds charged to each stage.
type Ledger = [AtomicU64; 5];
static CPU_NANOS: Ledger = [const { AtomicU64::new(0) }; 5];
/// Bytes of layer tar streams the passes wrote.
static TAR_BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// CPU time spent by the measured work on this thread so far, for enclosing stages to take
    /// off their own.
    static MEASURED: Cell<u64> = const { Cell::new(0) };
}

impl Stage {
    fn index(self) -> usize {
        self as usize
    }

    fn name(self) -> &'static str {
        match self {
            Stage::Read => "read",
            Stage::Tar => "tar",
            Stage::Hash => "hash",
            Stage::Compress => "compress",
            Stage::Write => "write",
        }
    }
}

/// Turns measuring on or off for the process.
pub fn enable(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

/// Runs `work`, charging `stage` with the CPU it used on this thread beyond what stages inside
/// it were charged.
pub fn measure<T>(stage: Stage, work: impl FnOnce() -> T) -> T {
    if !ENABLED.load(Ordering::Relaxed) {
        return work();
    }
    measure_into(&CPU_NANOS, stage, work)
}

fn measure_into<T>(ledger: &Ledger, stage: Stage, work: impl FnOnce() -> T) -> T {
    let measured_before = MEASURED.get();
    let start = thread_cpu_nanos();
    let result = work();
    let inclusive = thread_cpu_nanos().saturating_sub(start);
    let inner = MEASURED.get().saturating_sub(measured_before);
    ledger[stage.index()].fetch_add(inclusive.saturating_sub(inner), Ordering::Relaxed);
    MEASURED.set(measured_before + inclusive);
    result
}

/// Counts a layer tar stream's bytes.
pub fn add_tar_bytes(bytes: u64) {
    if ENABLED.load(Ordering::Relaxed) {
        TAR_BYTES.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// The sums so far, one line: `tar_bytes=N read=S tar=S hash=S compress=S write=S` (seconds of
/// CPU); `None` when measuring is off.
pub fn summary() -> Option<String> {
    if !ENABLED.load(Ordering::Relaxed) {
        return None;
    }
    let mut line = format!("tar_bytes={}", TAR_BYTES.load(Ordering::Relaxed));
    for stage in STAGES {
        let seconds = CPU_NANOS[stage.index()].load(Ordering::Relaxed) as f64 / 1e9;
        line.push_str(&format!(" {}={seconds:.3}", stage.name()));
    }
    Some(line)
}

fn thread_cpu_nanos() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map_or(0, |now| now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64)
}

/// A reader or writer whose reads or writes are charged to a stage.
pub struct Measured<T> {
    pub inner: T,
    pub stage: Stage,
}

impl<R: Read> Read for Measured<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        measure(self.stage, || self.inner.read(buffer))
    }
}

impl<W: Write> Write for Measured<W> {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        measure(self.stage, || self.inner.write(buffer))
    }

    fn flush(&mut self) -> io::Result<()> {
        measure(self.stage, || self.inner.flush())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spin(milliseconds: u64) {
        let start = thread_cpu_nanos();
        while thread_cpu_nanos() - start < milliseconds * 1_000_000 {
            std::hint::black_box(0);
        }
    }

    #[test]
    fn nested_stages_are_charged_their_own_time() {
        let ledger: Ledger = [const { AtomicU64::new(0) }; 5];
        measure_into(&ledger, Stage::Tar, || {
            spin(20);
            measure_into(&ledger, Stage::Hash, || {
                spin(30);
                measure_into(&ledger, Stage::Write, || spin(10));
            });
        });
        let spent = |stage: Stage| ledger[stage.index()].load(Ordering::Relaxed) / 1_000_000;
        assert!((20..28).contains(&spent(Stage::Tar)), "tar {}", spent(Stage::Tar));
        assert!((30..38).contains(&spent(Stage::Hash)), "hash {}", spent(Stage::Hash));
        assert!((10..18).contains(&spent(Stage::Write)), "write {}", spent(Stage::Write));
        assert_eq!(spent(Stage::Compress), 0);
    }
}
