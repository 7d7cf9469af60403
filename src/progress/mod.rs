//! Progress reporting: the only module that writes to the terminal.
//!
//! The build reports its vertices through [`Task`] handles that a cheap, cloneable [`Sender`]
//! hands out (ids allocated by the sender, see `task.rs`); the handles send [`Event`]s, and one
//! reporter thread owns the output and a [`Printer`] that turns events into text. A failure is
//! said by one function, [`error_text`], on the vertex and on the build's last line. Printers: `plain` (BuildKit's
//! `#N` lines, see [`plain`]), `tty` (a live view drawn with indicatif, see [`tty`]), `rawjson`
//! (one BuildKit `SolveStatus`-shaped JSON object per line, see [`rawjson`]) and `quiet` (drains
//! events, prints nothing). The printers share one interpretation of events, the `trace`
//! module's per-vertex state, and keep only their own drawing state beside it.
//!
//! Invariants:
//! - Events carry no clock: the reporter stamps each one with [`Clock::now`] when it receives
//!   it, so every duration shown is measured by one clock on one thread. Tests inject a fake.
//! - Only the reporter thread writes to the output; a printer is never shared.
//! - A write error (closed stderr) silences the printer for the rest of the run, but events are
//!   still drained so senders never block or fail.
//!
//! Decision: a `std::sync::mpsc` channel, unbounded. A bounded channel would slow a build down
//! to the speed of the terminal; an unbounded one can grow if the terminal stalls, which is the
//! smaller evil for a process that ends when the build ends.

mod error;
pub(crate) mod plain;
pub(crate) mod rawjson;
mod task;
mod trace;
pub(crate) mod tty;

pub(crate) use error::{error_text, failed_to_solve};
pub(crate) use task::{GraphTasks, Task};

use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::str::FromStr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::oci::Digest;

/// Identifies a vertex within one build, allocated by the [`Sender`] (see [`Task`]). Small and
/// dense; the plain printer numbers vertices `#1`, `#2`, ... itself, in the order BuildKit
/// would (first shown, first numbered).
pub(crate) type VertexId = usize;

/// Time since the Unix epoch, as read from a [`Clock`].
pub(crate) type Timestamp = Duration;

pub(crate) use crate::oci::Stream;

/// A vertex of the build graph as the solver announces it, before anything runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Definition {
    pub vertex: VertexId,
    pub name: String,
    /// The vertex's content-addressed digest (`sha256:...`): stable across runs, one per vertex.
    pub digest: Digest,
    /// The digests of the vertices it depends on, each announced in the same [`Event::Defined`].
    pub inputs: Vec<Digest>,
}

/// Something that happened during a build, in the order it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// The graph about to be solved, announced once as BuildKit does: `rawjson` prints it (so a
    /// reader can rebuild the graph from the stream) and the live view counts its vertices in
    /// the total of `(completed/total)`. Nothing is printed in plain mode.
    Defined {
        vertices: Vec<Definition>,
    },
    /// A vertex began to run. `name` is what users see, like `[stage-1 2/3] COPY a /b`.
    Started {
        vertex: VertexId,
        name: String,
    },
    /// A vertex was satisfied from the cache and never ran.
    Cached {
        vertex: VertexId,
        name: String,
    },
    /// Output of a running vertex; may end in the middle of a line.
    Log {
        vertex: VertexId,
        stream: Stream,
        bytes: Vec<u8>,
    },
    /// Progress of one transfer or sub-task of a vertex (`id` like `sha256:ab..` or
    /// `transferring context:`).
    Status {
        vertex: VertexId,
        id: String,
        current: u64,
        total: Option<u64>,
        done: bool,
    },
    Finished {
        vertex: VertexId,
    },
    Failed {
        vertex: VertexId,
        error: String,
    },
    Canceled {
        vertex: VertexId,
    },
    /// Printed once, after the build, like BuildKit's lint warnings.
    Warning {
        message: String,
    },
}

impl Event {
    /// The vertex the event is about; none for the graph and for warnings.
    pub(crate) fn vertex(&self) -> Option<VertexId> {
        match self {
            Event::Started { vertex, .. }
            | Event::Cached { vertex, .. }
            | Event::Log { vertex, .. }
            | Event::Status { vertex, .. }
            | Event::Finished { vertex }
            | Event::Failed { vertex, .. }
            | Event::Canceled { vertex } => Some(*vertex),
            Event::Warning { .. } | Event::Defined { .. } => None,
        }
    }
}

/// How progress is shown (`--progress`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Auto,
    Plain,
    Tty,
    Quiet,
    RawJson,
}

/// The names `--progress` accepts, in the order error messages list them.
const MODE_NAMES: [(&str, Mode); 5] =
    [("auto", Mode::Auto), ("plain", Mode::Plain), ("tty", Mode::Tty), ("quiet", Mode::Quiet), ("rawjson", Mode::RawJson)];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModeError {
    #[error("invalid progress mode `{value}`: expected one of `auto`, `plain`, `tty`, `quiet`, `rawjson`")]
    Unknown { value: String },
}

impl FromStr for Mode {
    type Err = ModeError;

    fn from_str(value: &str) -> Result<Mode, ModeError> {
        MODE_NAMES
            .iter()
            .find(|(name, _)| *name == value)
            .map(|(_, mode)| *mode)
            .ok_or_else(|| ModeError::Unknown { value: value.to_owned() })
    }
}

impl Mode {
    /// The name `--progress` takes for this mode.
    pub fn as_str(self) -> &'static str {
        MODE_NAMES.iter().find(|(_, mode)| *mode == self).map_or("auto", |(name, _)| name)
    }

    /// Replaces `Auto` by what it means here: the live view on a terminal, plain text otherwise.
    pub fn resolve(self, stderr_is_terminal: bool) -> Mode {
        match self {
            Mode::Auto if stderr_is_terminal => Mode::Tty,
            Mode::Auto => Mode::Plain,
            other => other,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Where the reporter reads the time.
pub(crate) trait Clock: Send {
    fn now(&self) -> Timestamp;
}

/// Wall-clock time that never goes backwards: the wall time at creation plus a monotonic
/// [`Instant`] offset, so a clock step during a build cannot produce negative durations.
pub(crate) struct SystemClock {
    wall_at_start: Duration,
    start: Instant,
}

impl SystemClock {
    pub(crate) fn new() -> SystemClock {
        SystemClock { wall_at_start: SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default(), start: Instant::now() }
    }
}

impl Default for SystemClock {
    fn default() -> SystemClock {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        self.wall_at_start + self.start.elapsed()
    }
}

/// Turns events into output. Implementations own their writer; the reporter calls them from
/// one thread, in event order, with the time each event was received.
pub(crate) trait Printer: Send {
    fn event(&mut self, event: Event, now: Timestamp) -> io::Result<()>;
    /// Called when no event arrived for [`TICK`]: lets live views move their clocks and lets the
    /// plain printer switch to a vertex that has waited too long.
    fn tick(&mut self, now: Timestamp) -> io::Result<()>;
    /// The stream ended: flush what is pending and print the summary (warnings, and when the
    /// build failed, the logs of the failed vertices; a vertex may fail without failing the
    /// build, like a cache import).
    fn finish(&mut self, now: Timestamp, build_failed: bool) -> io::Result<()>;
}

/// How long the reporter waits for an event before calling [`Printer::tick`]; BuildKit
/// refreshes its displays at about this rate.
pub(crate) const TICK: Duration = Duration::from_millis(100);

/// Prints nothing; events are still received so senders behave the same in every mode.
pub(crate) struct QuietPrinter;

impl Printer for QuietPrinter {
    fn event(&mut self, _event: Event, _now: Timestamp) -> io::Result<()> {
        Ok(())
    }

    fn tick(&mut self, _now: Timestamp) -> io::Result<()> {
        Ok(())
    }

    fn finish(&mut self, _now: Timestamp, _build_failed: bool) -> io::Result<()> {
        Ok(())
    }
}

enum Message {
    Event(Event),
    Finish { build_failed: bool },
}

/// The sending half: cheap to clone, usable from any thread. Sending never blocks and never
/// fails; events sent after [`Progress::finish`] are dropped. It hands out [`Task`]s, whose
/// ids it allocates from a counter all its clones share.
#[derive(Clone)]
pub(crate) struct Sender {
    channel: mpsc::Sender<Message>,
    next_vertex: Arc<AtomicUsize>,
}

impl Sender {
    pub(crate) fn send(&self, event: Event) {
        // An error means the reporter is gone (finished, or its thread could not start);
        // progress is best effort and must never fail the build.
        let _ = self.channel.send(Message::Event(event));
    }
}

/// A running reporter thread. Dropping it finishes it, like [`Progress::finish`].
pub(crate) struct Progress {
    channel: mpsc::Sender<Message>,
    next_vertex: Arc<AtomicUsize>,
    reporter: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts the reporter writing to `out` (stderr in the binary, a buffer in tests). `Auto`
    /// is resolved against whether stderr is a terminal; callers that know better resolve it
    /// first with [`Mode::resolve`].
    pub(crate) fn start(mode: Mode, out: Box<dyn Write + Send>) -> Progress {
        Progress::start_with_clock(mode, out, Box::new(SystemClock::new()))
    }

    /// Like [`Progress::start`], reading time from `clock`.
    pub(crate) fn start_with_clock(mode: Mode, out: Box<dyn Write + Send>, clock: Box<dyn Clock>) -> Progress {
        let printer: Box<dyn Printer> = match mode.resolve(io::stderr().is_terminal()) {
            Mode::Plain => Box::new(plain::PlainPrinter::new(out)),
            Mode::Tty => Box::new(tty::TtyPrinter::new(out, tty::stderr_size, colors_enabled())),
            Mode::RawJson => Box::new(rawjson::RawJsonPrinter::new(out)),
            Mode::Quiet | Mode::Auto => Box::new(QuietPrinter),
        };
        Progress::start_with_printer(printer, clock)
    }

    /// Starts the reporter thread over any printer.
    pub(crate) fn start_with_printer(printer: Box<dyn Printer>, clock: Box<dyn Clock>) -> Progress {
        let (channel, receiver) = mpsc::channel();
        let reporter = std::thread::Builder::new().name("progress".to_owned()).spawn(move || report(receiver, printer, clock));
        // Without a thread the receiver is dropped with the closure, so every send is a no-op:
        // the build goes on without progress output rather than failing over it.
        Progress { channel, next_vertex: Arc::default(), reporter: reporter.ok() }
    }

    pub(crate) fn sender(&self) -> Sender {
        Sender { channel: self.channel.clone(), next_vertex: self.next_vertex.clone() }
    }

    /// Ends the stream, waits for the reporter, which prints the final summary lines.
    pub(crate) fn finish(mut self, build_failed: bool) {
        self.shut_down(build_failed);
    }

    fn shut_down(&mut self, build_failed: bool) {
        if let Some(reporter) = self.reporter.take() {
            let _ = self.channel.send(Message::Finish { build_failed });
            // A panic in a printer has already been reported by the panic hook; the build
            // result does not depend on progress output.
            let _ = reporter.join();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.shut_down(true);
    }
}

/// The reporter loop: owns the printer until the stream ends.
fn report(receiver: mpsc::Receiver<Message>, mut printer: Box<dyn Printer>, clock: Box<dyn Clock>) {
    let mut writable = true;
    loop {
        let result = match receiver.recv_timeout(TICK) {
            Ok(Message::Event(event)) if writable => printer.event(event, clock.now()),
            Ok(Message::Event(_)) => Ok(()),
            Err(mpsc::RecvTimeoutError::Timeout) if writable => printer.tick(clock.now()),
            Err(mpsc::RecvTimeoutError::Timeout) => Ok(()),
            Ok(Message::Finish { build_failed }) => {
                if writable {
                    let _ = printer.finish(clock.now(), build_failed);
                }
                return;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                if writable {
                    let _ = printer.finish(clock.now(), true);
                }
                return;
            }
        };
        if result.is_err() {
            writable = false;
        }
    }
}

/// Colours follow <https://no-color.org>: any non-empty `NO_COLOR` turns them off.
fn colors_enabled() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
}

/// The warnings summary buildx prints after the progress, or nothing without warnings. buildx
/// says `(use docker --debug to expand)`; the flag named is rbuild's own, whose debug log shows
/// what led to each warning.
fn warnings_summary(warnings: &[String]) -> String {
    if warnings.is_empty() {
        return String::new();
    }
    let count = match warnings.len() {
        1 => "1 warning found".to_owned(),
        count => format!("{count} warnings found"),
    };
    let mut text = format!("\n {count} (use rbuild --debug to expand):\n");
    for message in warnings {
        text.push_str(&format!(" - {message}\n"));
    }
    text
}

/// The block BuildKit prints after the progress for each failed (not canceled) vertex.
fn error_logs_block(name: &str, lines: &[Vec<u8>]) -> Vec<u8> {
    let mut text = format!("------\n > {name}:\n").into_bytes();
    for line in lines {
        text.extend_from_slice(line);
        text.push(b'\n');
    }
    text.extend_from_slice(b"------\n");
    text
}

/// Seconds as a float, for printing.
fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

/// `later - earlier`, zero when the clock says otherwise.
fn elapsed(earlier: Timestamp, later: Timestamp) -> Duration {
    later.saturating_sub(earlier)
}

/// Sizes as BuildKit prints them (decimal units): `512B`, `2.10kB`, `1.23MB`.
fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut unit = 0;
    let mut base: u64 = 1;
    while unit + 1 < UNITS.len() && bytes / base >= 1000 {
        base *= 1000;
        unit += 1;
    }
    if unit == 0 {
        return format!("{bytes}B");
    }
    format!("{:.2}{}", bytes as f64 / base as f64, UNITS[unit])
}

/// The time prefix of a log line: three decimals under 10 s, two under 100 s, then one.
fn format_log_time(since_start: Duration) -> String {
    let value = seconds(since_start);
    let precision = if value < 10.0 {
        3
    } else if value < 100.0 {
        2
    } else {
        1
    };
    format!("{value:.precision$}")
}

/// Splits `data` at newlines, calling `line` for each piece (the last one possibly partial).
/// Returns whether `data` ended with a newline, i.e. no partial line is left open.
fn split_lines(data: &[u8], mut line: impl FnMut(&[u8])) -> bool {
    let mut rest = data;
    while !rest.is_empty() {
        match rest.iter().position(|&byte| byte == b'\n') {
            Some(end) => {
                line(&rest[..end]);
                rest = &rest[end + 1..];
            }
            None => {
                line(rest);
                return false;
            }
        }
    }
    true
}

/// An ISO 8601 time in UTC as Go's `time.RFC3339Nano` prints it.
fn format_rfc3339(time: Timestamp) -> String {
    crate::oci::time::rfc3339_nano(time.as_secs() as i64, time.subsec_nanos())
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::io::{self, Write};
    use std::sync::{Arc, Mutex};

    /// A writer whose bytes the test can read after the printer is done with it.
    #[derive(Clone, Default)]
    pub(crate) struct SharedBuffer(pub Arc<Mutex<Vec<u8>>>);

    impl SharedBuffer {
        pub(crate) fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    impl Write for SharedBuffer {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::SharedBuffer;
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct FakeClock(Arc<AtomicU64>);

    impl Clock for FakeClock {
        fn now(&self) -> Timestamp {
            Duration::from_millis(self.0.load(Ordering::SeqCst))
        }
    }

    #[test]
    fn modes_parse_by_name_and_unknown_names_list_the_choices() {
        assert_eq!("plain".parse(), Ok(Mode::Plain));
        assert_eq!("rawjson".parse(), Ok(Mode::RawJson));
        assert_eq!("auto".parse::<Mode>().map(Mode::as_str), Ok("auto"));
        let error = "fancy".parse::<Mode>().unwrap_err();
        assert_eq!(error.to_string(), "invalid progress mode `fancy`: expected one of `auto`, `plain`, `tty`, `quiet`, `rawjson`");
        for (name, mode) in MODE_NAMES {
            assert_eq!(mode.to_string(), name);
        }
    }

    #[test]
    fn auto_resolves_to_tty_only_on_a_terminal() {
        assert_eq!(Mode::Auto.resolve(true), Mode::Tty);
        assert_eq!(Mode::Auto.resolve(false), Mode::Plain);
        assert_eq!(Mode::Quiet.resolve(true), Mode::Quiet);
        assert_eq!(Mode::Tty.resolve(false), Mode::Tty);
    }

    #[test]
    fn bytes_use_decimal_units_with_two_decimals() {
        assert_eq!(format_bytes(0), "0B");
        assert_eq!(format_bytes(999), "999B");
        assert_eq!(format_bytes(1000), "1.00kB");
        assert_eq!(format_bytes(2100), "2.10kB");
        assert_eq!(format_bytes(1_234_567), "1.23MB");
        assert_eq!(format_bytes(4_560_000_000), "4.56GB");
        // An exact tie rounds to even, as Go's formatting does.
        assert_eq!(format_bytes(1125), "1.12kB");
    }

    #[test]
    fn log_times_lose_decimals_as_they_grow() {
        assert_eq!(format_log_time(Duration::from_millis(312)), "0.312");
        assert_eq!(format_log_time(Duration::from_millis(12_345)), "12.35");
        assert_eq!(format_log_time(Duration::from_millis(123_456)), "123.5");
    }

    #[test]
    fn rfc3339_matches_go_nano_format() {
        assert_eq!(format_rfc3339(Duration::ZERO), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(Duration::new(1_700_000_000, 120_000_000)), "2023-11-14T22:13:20.12Z");
        assert_eq!(format_rfc3339(Duration::new(951_782_400, 5)), "2000-02-29T00:00:00.000000005Z");
    }

    #[test]
    fn warnings_summary_uses_buildx_wording() {
        assert_eq!(warnings_summary(&[]), "");
        assert_eq!(
            warnings_summary(&["One: first (line 2)".to_owned()]),
            "\n 1 warning found (use rbuild --debug to expand):\n - One: first (line 2)\n"
        );
        assert_eq!(
            warnings_summary(&["a".to_owned(), "b".to_owned()]),
            "\n 2 warnings found (use rbuild --debug to expand):\n - a\n - b\n"
        );
    }

    #[test]
    fn progress_thread_renders_events_and_summary_on_finish() {
        let buffer = SharedBuffer::default();
        let time = Arc::new(AtomicU64::new(1_000));
        let progress = Progress::start_with_clock(Mode::Plain, Box::new(buffer.clone()), Box::new(FakeClock(time.clone())));
        let sender = progress.sender();
        let from_thread = sender.clone();
        std::thread::spawn(move || {
            from_thread.send(Event::Cached { vertex: 3, name: "[1/2] FROM alpine".to_owned() });
        })
        .join()
        .unwrap();
        sender.send(Event::Warning { message: "W: careful".to_owned() });
        progress.finish(true);
        assert_eq!(buffer.text(), "#1 [1/2] FROM alpine\n#1 CACHED\n\n 1 warning found (use rbuild --debug to expand):\n - W: careful\n");
        // The reporter is gone: sending is a silent no-op.
        sender.send(Event::Finished { vertex: 3 });
    }

    #[test]
    fn senders_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync + Clone>() {}
        shareable::<Sender>();
    }

    #[test]
    fn tty_mode_into_a_buffer_ends_with_the_final_frame() {
        let buffer = SharedBuffer::default();
        let time = Arc::new(AtomicU64::new(5_000));
        let progress = Progress::start_with_clock(Mode::Tty, Box::new(buffer.clone()), Box::new(FakeClock(time.clone())));
        let sender = progress.sender();
        sender.send(Event::Started { vertex: 0, name: "[1/1] RUN true".to_owned() });
        sender.send(Event::Log { vertex: 0, stream: Stream::Stdout, bytes: b"ok\n".to_vec() });
        std::thread::sleep(Duration::from_millis(250));
        time.store(6_500, Ordering::SeqCst);
        sender.send(Event::Finished { vertex: 0 });
        progress.finish(true);
        let text = buffer.text();
        let final_frame = &text[text.rfind("[+] Building").unwrap()..];
        assert!(final_frame.starts_with("[+] Building 1.5s (1/1) FINISHED\n"), "{text:?}");
        assert!(final_frame.lines().nth(1).unwrap().contains(" => [1/1] RUN true "));
        assert!(final_frame.ends_with(" 1.5s\n") || final_frame.ends_with(" 1.5s\u{1b}[0m\n"));
    }

    #[test]
    fn quiet_mode_drains_events_and_prints_nothing() {
        let buffer = SharedBuffer::default();
        let progress = Progress::start(Mode::Quiet, Box::new(buffer.clone()));
        let sender = progress.sender();
        for vertex in 0..100 {
            sender.send(Event::Started { vertex, name: "x".to_owned() });
            sender.send(Event::Failed { vertex, error: "boom".to_owned() });
        }
        sender.send(Event::Warning { message: "w".to_owned() });
        drop(progress);
        assert_eq!(buffer.text(), "");
    }
}
