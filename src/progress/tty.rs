//! The tty printer: a live view of the build in BuildKit's style, drawn with indicatif.
//!
//! ```text
//! [+] Building 12.3s (8/10)
//!  => [internal] load build definition from Dockerfile                    0.0s
//!  => => transferring dockerfile: 92B                                     0.0s
//!  => CACHED [1/3] FROM docker.io/library/alpine:3.20                     0.0s
//!  => [2/3] RUN make                                                      3.1s
//!  => => # cc -o app main.c
//! ```
//!
//! One line per vertex in order of appearance, one per status (`=> => id`), the last lines of
//! the output of running vertices (`=> => # line`), and the header with the build time and
//! `(completed/total)`. When the frame is taller than the terminal, the oldest finished lines
//! scroll away first. At the end the live frame is replaced by the full final frame, left on
//! screen, followed by the logs of failed vertices and the warnings.
//!
//! Decision: indicatif draws the live frame (one bar whose message is the whole frame) through
//! a [`TermLike`] over our writer, so the printer works on any writer: a terminal, or a buffer in
//! tests. The final frame is written directly, so it is complete even when taller than the
//! terminal. Colours (blue for done, red for errors, yellow for canceled) follow `NO_COLOR`.
//!
//! `total` counts the solved graph as announced up front ([`Event::Defined`]) and every other
//! vertex seen, as BuildKit does; so a failed build that left steps unrun ends `(6/8)` without
//! `FINISHED`, while one whose every vertex ended (the failed one included) says `FINISHED`
//! (both recorded from BuildKit in `testdata/progress/`).
//!
//! Differences from BuildKit: a failed vertex's summary shows
//! its last ten lines, as in plain mode, where BuildKit's tty mode keeps every line in memory;
//! output is decoded per chunk, so a character split between two chunks shows as `�`.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

use super::trace::Trace;
use super::{Event, Printer, TICK, Timestamp, elapsed, format_bytes, seconds, split_lines, warnings_summary};

/// Size of the terminal as `(rows, columns)`, `None` when unknown.
pub(crate) type SizeSource = fn() -> Option<(u16, u16)>;

/// The size of the terminal on stderr, where the binary writes progress.
pub(crate) fn stderr_size() -> Option<(u16, u16)> {
    console::Term::stderr().size_checked()
}

/// BuildKit's size when the terminal does not say.
const DEFAULT_SIZE: (usize, usize) = (10, 80);
/// Lines of output shown under a running vertex.
const LOG_LINES: usize = 6;
/// Columns the `=> => # ` prefix and margins take from a log line.
const LOG_PADDING: usize = 10;
/// A log line kept for display is cut to this many bytes (keeping its end), so output
/// without newlines (progress bars drawn with `\r`) cannot grow without bound.
const MAX_LOG_LINE: usize = 4096;

const BLUE: &str = "\x1b[34m";
const RED: &str = "\x1b[31m";
const YELLOW: &str = "\x1b[33m";
const FAINT: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

pub(crate) struct TtyPrinter {
    output: Arc<Mutex<Box<dyn Write + Send>>>,
    bar: ProgressBar,
    size: SizeSource,
    color: bool,
    trace: Trace,
    /// The last output lines of each vertex, by the trace's slot.
    screens: Vec<Screen>,
    last_draw: Option<Timestamp>,
}

/// The last lines a running vertex printed, raw (escape sequences are removed when drawn).
#[derive(Default)]
struct Screen {
    lines: VecDeque<String>,
    open: bool,
}

impl Screen {
    fn push(&mut self, data: &[u8]) {
        let text = String::from_utf8_lossy(data);
        let mut first = true;
        let complete = split_lines(text.as_bytes(), |piece| {
            // Cut from valid UTF-8 at a newline, so still valid.
            let piece = std::str::from_utf8(piece).unwrap_or_default();
            match self.lines.back_mut() {
                Some(open_line) if first && self.open => open_line.push_str(piece),
                _ => {
                    self.lines.push_back(piece.to_owned());
                    if self.lines.len() > LOG_LINES {
                        self.lines.pop_front();
                    }
                }
            }
            if let Some(line) = self.lines.back_mut()
                && line.len() > MAX_LOG_LINE
            {
                let mut cut = line.len() - MAX_LOG_LINE;
                while !line.is_char_boundary(cut) {
                    cut += 1;
                }
                line.drain(..cut);
            }
            first = false;
        });
        self.open = !complete;
    }
}

/// What a terminal would show of a log line: the text after the last carriage return, without
/// escape sequences or control characters, tabs as spaces.
fn displayed(line: &str) -> String {
    let visible = line.rsplit('\r').find(|segment| !segment.is_empty()).unwrap_or("");
    let mut text = String::with_capacity(visible.len());
    let mut characters = visible.chars().peekable();
    while let Some(character) = characters.next() {
        match character {
            '\x1b' => {
                // CSI sequences end with a byte in `@`..`~`; other escapes are two characters.
                if characters.next_if_eq(&'[').is_some() {
                    for next in characters.by_ref() {
                        if ('@'..='~').contains(&next) {
                            break;
                        }
                    }
                } else {
                    characters.next();
                }
            }
            '\t' => text.push(' '),
            other if other.is_control() => {}
            other => text.push(other),
        }
    }
    text
}

/// One line of the frame before layout.
struct Job {
    name: String,
    status: String,
    duration: Duration,
    completed: bool,
    color: Option<&'static str>,
    /// Log lines drawn under this job, when there is room.
    logs: Vec<String>,
}

/// [`TermLike`] over the shared writer: what indicatif needs to redraw the live frame.
struct Terminal {
    output: Arc<Mutex<Box<dyn Write + Send>>>,
    size: SizeSource,
}

impl fmt::Debug for Terminal {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("Terminal")
    }
}

impl Terminal {
    fn write(&self, text: &str) -> io::Result<()> {
        let mut output = self.output.lock().map_err(|_| io::Error::other("progress output lock poisoned"))?;
        output.write_all(text.as_bytes())
    }

    fn move_cursor(&self, count: usize, direction: char) -> io::Result<()> {
        if count == 0 { Ok(()) } else { self.write(&format!("\x1b[{count}{direction}")) }
    }
}

impl TermLike for Terminal {
    fn width(&self) -> u16 {
        (self.size)().map_or(DEFAULT_SIZE.1 as u16, |(_, columns)| columns)
    }

    fn height(&self) -> u16 {
        (self.size)().map_or(DEFAULT_SIZE.0 as u16, |(rows, _)| rows)
    }

    fn move_cursor_up(&self, count: usize) -> io::Result<()> {
        self.move_cursor(count, 'A')
    }

    fn move_cursor_down(&self, count: usize) -> io::Result<()> {
        self.move_cursor(count, 'B')
    }

    fn move_cursor_right(&self, count: usize) -> io::Result<()> {
        self.move_cursor(count, 'C')
    }

    fn move_cursor_left(&self, count: usize) -> io::Result<()> {
        self.move_cursor(count, 'D')
    }

    fn write_line(&self, line: &str) -> io::Result<()> {
        self.write(&format!("{line}\n"))
    }

    fn write_str(&self, text: &str) -> io::Result<()> {
        self.write(text)
    }

    fn clear_line(&self) -> io::Result<()> {
        self.write("\r\x1b[2K")
    }

    fn flush(&self) -> io::Result<()> {
        let mut output = self.output.lock().map_err(|_| io::Error::other("progress output lock poisoned"))?;
        output.flush()
    }
}

impl TtyPrinter {
    /// A printer drawing on `out`, a terminal of the size `size` reports; `color` enables ANSI
    /// colours (cursor movement is used either way).
    pub(crate) fn new(out: Box<dyn Write + Send>, size: SizeSource, color: bool) -> TtyPrinter {
        let output = Arc::new(Mutex::new(out));
        let terminal = Terminal { output: output.clone(), size };
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::term_like(Box::new(terminal)));
        // `{msg}` is a valid template; should indicatif ever reject it, its default style
        // still shows the message.
        if let Ok(style) = ProgressStyle::with_template("{msg}") {
            bar.set_style(style);
        }
        TtyPrinter { output, bar, size, color, trace: Trace::default(), screens: Vec::new(), last_draw: None }
    }

    fn size(&self) -> (usize, usize) {
        (self.size)()
            .filter(|&(rows, columns)| rows > 0 && columns > 0)
            .map_or(DEFAULT_SIZE, |(rows, columns)| (usize::from(rows), usize::from(columns)))
    }

    fn record(&mut self, event: &Event, now: Timestamp) {
        if let (Some(slot), Event::Log { bytes, .. }) = (self.trace.record(event, now), event) {
            if self.screens.len() <= slot {
                self.screens.resize_with(slot + 1, Screen::default);
            }
            self.screens[slot].push(bytes);
        }
    }

    fn jobs(&self, now: Timestamp) -> Vec<Job> {
        let mut jobs = Vec::new();
        for (slot, vertex) in self.trace.vertices.iter().enumerate() {
            let completed = vertex.is_completed();
            let duration = vertex.run_time(now);
            let (prefix, color) = if vertex.canceled {
                ("CANCELED ", YELLOW)
            } else if vertex.error.is_some() {
                ("ERROR ", RED)
            } else if vertex.cached {
                ("CACHED ", BLUE)
            } else {
                ("", BLUE)
            };
            let logs = match self.screens.get(slot) {
                Some(screen) if !completed => {
                    screen.lines.iter().map(|line| displayed(line)).filter(|line| !line.trim().is_empty()).collect()
                }
                _ => Vec::new(),
            };
            jobs.push(Job {
                name: format!("{prefix}{}", vertex.name.replace('\t', " ")),
                status: String::new(),
                duration,
                completed,
                color: completed.then_some(color),
                logs,
            });
            for status in &vertex.statuses {
                let sizes = match status.total {
                    Some(total) if total != 0 => {
                        format!("{} / {}", format_bytes(status.current), format_bytes(total))
                    }
                    _ if status.current != 0 => format_bytes(status.current),
                    _ => String::new(),
                };
                jobs.push(Job {
                    name: format!("=> {}", status.id),
                    status: sizes,
                    duration: elapsed(status.started, status.completed.unwrap_or(now)),
                    completed: status.completed.is_some(),
                    color: status.completed.map(|_| BLUE),
                    logs: Vec::new(),
                });
            }
        }
        jobs
    }

    /// The frame as text lines. The live frame keeps to the terminal's height; the final one
    /// shows everything.
    fn frame(&self, now: Timestamp, final_frame: bool) -> Vec<String> {
        let (height, width) = self.size();
        let total = self.trace.total_count();
        let completed = self.trace.completed_count();
        let build_time = self.trace.start.map_or(Duration::ZERO, |start| elapsed(start, now));
        let finished = if final_frame && completed > 0 && completed == total { " FINISHED" } else { "" };
        let mut header = format!("[+] Building {:.1}s ({completed}/{total}){finished}", seconds(build_time));
        truncate(&mut header, width);
        let mut lines = vec![header];

        let mut jobs = self.jobs(now);
        if final_frame {
            for job in &mut jobs {
                job.logs.clear();
            }
        } else {
            // Log lines only where there is room, as BuildKit does: each shown block costs up to
            // LOG_LINES + 3 rows beyond the running jobs.
            let running = jobs.iter().filter(|job| !job.completed).count();
            let mut free = height.saturating_sub(2 + running);
            let mut log_rows = 0;
            for job in &mut jobs {
                if job.logs.is_empty() {
                    continue;
                }
                if free > LOG_LINES + 3 {
                    free -= LOG_LINES + 3;
                    log_rows += job.logs.len();
                } else {
                    job.logs.clear();
                }
            }
            jobs = wrap_height(jobs, height.saturating_sub(2 + log_rows));
        }

        for job in jobs {
            let time = if job.duration < Duration::from_millis(50) { 0.0 } else { seconds(job.duration) };
            let timer = format!(" {time:3.1}s");
            // Room for the name, as BuildKit counts it (prefix, timer, a newline, a margin).
            let mut left = width as isize - 4 - (timer.len() as isize + 1) - 1;
            let mut show_status = false;
            if !job.status.is_empty() && left + job.status.len() as isize > 20 {
                show_status = true;
                left -= job.status.len() as isize + 1;
            }
            if left < 12 {
                continue;
            }
            let mut name = job.name;
            truncate(&mut name, left as usize);
            let mut line = format!(" => {name}");
            if show_status {
                line.push(' ');
                line.push_str(&job.status);
            }
            let pad = (width as isize - timer.len() as isize - 2).max(0) as usize;
            let used = line.chars().count();
            if used < pad {
                line.push_str(&" ".repeat(pad - used));
            }
            line.push(' ');
            line.push_str(&timer);
            lines.push(self.paint(line, job.color));
            for log in job.logs {
                let mut log = log;
                truncate(&mut log, width.saturating_sub(LOG_PADDING));
                lines.push(self.paint(format!(" => => # {log}"), Some(FAINT)));
            }
        }
        lines
    }

    fn paint(&self, text: String, color: Option<&str>) -> String {
        match color {
            Some(color) if self.color => format!("{color}{text}{RESET}"),
            _ => text,
        }
    }

    fn draw(&mut self, now: Timestamp) {
        self.last_draw = Some(now);
        self.bar.set_message(self.frame(now, false).join("\n"));
    }
}

/// Cuts `text` to at most `columns` characters.
fn truncate(text: &mut String, columns: usize) {
    if let Some((index, _)) = text.char_indices().nth(columns) {
        text.truncate(index);
    }
}

/// Keeps the last `limit` jobs; running jobs that would scroll away take the place of the
/// oldest finished ones instead (BuildKit's `wrapHeight`).
fn wrap_height(jobs: Vec<Job>, limit: usize) -> Vec<Job> {
    if jobs.len() <= limit {
        return jobs;
    }
    let mut jobs = jobs;
    let kept = jobs.split_off(jobs.len() - limit);
    let invisible: Vec<Job> = jobs.into_iter().filter(|job| !job.completed).collect();
    if invisible.is_empty() {
        return kept;
    }
    let mut to_drop = invisible.len();
    let mut rewrapped = Vec::with_capacity(kept.len());
    for job in kept {
        if !job.completed || to_drop == 0 {
            rewrapped.push(job);
        } else {
            to_drop -= 1;
        }
    }
    let free = limit - rewrapped.len();
    let mut wrapped: Vec<Job> = invisible.into_iter().rev().take(free).collect();
    wrapped.reverse();
    wrapped.extend(rewrapped);
    wrapped
}

impl Printer for TtyPrinter {
    fn event(&mut self, event: Event, now: Timestamp) -> io::Result<()> {
        self.record(&event, now);
        if self.last_draw.is_none_or(|last| elapsed(last, now) >= TICK) {
            self.draw(now);
        }
        Ok(())
    }

    fn tick(&mut self, now: Timestamp) -> io::Result<()> {
        self.draw(now);
        Ok(())
    }

    fn finish(&mut self, now: Timestamp, build_failed: bool) -> io::Result<()> {
        self.bar.finish_and_clear();
        let mut text = self.frame(now, true).join("\n");
        text.push('\n');
        let mut text = text.into_bytes();
        if build_failed {
            text.extend_from_slice(&self.trace.error_logs());
        }
        text.extend_from_slice(warnings_summary(&self.trace.warnings).as_bytes());
        let mut output = self.output.lock().map_err(|_| io::Error::other("progress output lock poisoned"))?;
        output.write_all(&text)?;
        output.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::super::Stream;
    use super::super::test_support::SharedBuffer;
    use super::*;

    fn small_terminal() -> Option<(u16, u16)> {
        Some((24, 60))
    }

    fn short_terminal() -> Option<(u16, u16)> {
        Some((12, 60))
    }

    fn no_terminal() -> Option<(u16, u16)> {
        None
    }

    fn at(millis: u64) -> Timestamp {
        Duration::from_secs(1_700_000_000) + Duration::from_millis(millis)
    }

    fn build_events(printer: &mut TtyPrinter) {
        let events = vec![
            (0, Event::Started { vertex: 1, name: "[internal] load build definition from Dockerfile".into() }),
            (0, Event::Status { vertex: 1, id: "transferring dockerfile:".into(), current: 92, total: None, done: true }),
            (30, Event::Finished { vertex: 1 }),
            (40, Event::Cached { vertex: 2, name: "[1/2] FROM docker.io/library/alpine:3.20".into() }),
            (50, Event::Started { vertex: 3, name: "[2/2] RUN make\ttest".into() }),
            (150, Event::Log { vertex: 3, stream: Stream::Stderr, bytes: b"\x1b[1mcc\x1b[0m -o app\n50%\r100%\n".to_vec() }),
        ];
        for (millis, event) in events {
            printer.event(event, at(millis)).unwrap();
        }
    }

    #[test]
    fn live_frame_shows_vertices_statuses_and_recent_logs() {
        let printer = {
            let mut printer = TtyPrinter::new(Box::new(io::sink()), small_terminal, false);
            build_events(&mut printer);
            printer
        };
        let frame = printer.frame(at(1_350), false);
        let expected_lines = [
            "[+] Building 1.4s (2/3)",
            " => [internal] load build definition from Dockerfile   0.0s",
            " => => transferring dockerfile: 92B                    0.0s",
            " => CACHED [1/2] FROM docker.io/library/alpine:3.20    0.0s",
            " => [2/2] RUN make test                                1.3s",
            " => => # cc -o app",
            " => => # 100%",
        ];
        assert_eq!(frame, expected_lines);
        for line in &frame[1..5] {
            assert_eq!(line.chars().count(), 59, "{line:?}");
        }
    }

    #[test]
    fn final_frame_is_complete_colored_and_followed_by_errors_and_warnings() {
        let buffer = SharedBuffer::default();
        let mut printer = TtyPrinter::new(Box::new(buffer.clone()), no_terminal, true);
        build_events(&mut printer);
        printer.tick(at(200)).unwrap();
        printer.event(Event::Failed { vertex: 3, error: "exit code: 2".into() }, at(2_050)).unwrap();
        printer.event(Event::Warning { message: "W: careful".into() }, at(2_060)).unwrap();
        printer.finish(at(2_100), true).unwrap();
        let text = buffer.text();
        let summary = format!(
            "[+] Building 2.1s (3/3) FINISHED\n\
             {BLUE} => [internal] load build definition from Dockerfile                       0.0s{RESET}\n\
             {BLUE} => => transferring dockerfile: 92B                                        0.0s{RESET}\n\
             {BLUE} => CACHED [1/2] FROM docker.io/library/alpine:3.20                        0.0s{RESET}\n\
             {RED} => ERROR [2/2] RUN make test                                              2.0s{RESET}\n\
             ------\n > [2/2] RUN make\ttest:\n0.100 \x1b[1mcc\x1b[0m -o app\n0.100 50%\r100%\n------\n\
             \n 1 warning found (use rbuild --debug to expand):\n - W: careful\n"
        );
        assert!(text.ends_with(&summary), "{text:?}");
        // The live frames came before, drawn by indicatif.
        assert!(text.len() > summary.len());
    }

    /// BuildKit (`testdata/progress/failed-tty`): a failure that leaves announced steps unrun
    /// ends `[+] Building 0.1s (6/8)`, no `FINISHED`; a failure once every vertex ended ends
    /// `(5/5) FINISHED`.
    #[test]
    fn total_counts_the_announced_graph_and_finished_needs_every_vertex_ended() {
        use super::super::Definition;
        let definition = |vertex: usize, name: &str| Definition {
            vertex,
            name: name.into(),
            digest: crate::oci::Digest::parse(&format!("sha256:{vertex:064}")).unwrap(),
            inputs: vec![],
        };
        let buffer = SharedBuffer::default();
        let mut printer = TtyPrinter::new(Box::new(buffer.clone()), no_terminal, false);
        let events = vec![
            Event::Defined {
                vertices: vec![
                    definition(1, "[a 1/1] RUN sleep 2"),
                    definition(2, "[b 1/1] RUN exit 1"),
                    definition(3, "[stage-2 1/1] COPY --from=a /x /x"),
                ],
            },
            Event::Started { vertex: 1, name: "[a 1/1] RUN sleep 2".into() },
            Event::Started { vertex: 2, name: "[b 1/1] RUN exit 1".into() },
            Event::Failed { vertex: 2, error: "exit code: 1".into() },
            Event::Canceled { vertex: 1 },
        ];
        for event in events {
            printer.event(event, at(100)).unwrap();
        }
        assert_eq!(printer.frame(at(100), false)[0], "[+] Building 0.0s (2/3)");
        printer.finish(at(100), true).unwrap();
        let text = buffer.text();
        let final_frame = &text[text.rfind("[+] Building").unwrap()..];
        assert!(final_frame.starts_with("[+] Building 0.0s (2/3)\n"), "{final_frame:?}");

        // Every announced vertex ended, one of them failed: FINISHED all the same.
        let buffer = SharedBuffer::default();
        let mut printer = TtyPrinter::new(Box::new(buffer.clone()), no_terminal, false);
        printer.event(Event::Defined { vertices: vec![definition(2, "[b 1/1] RUN exit 1")] }, at(0)).unwrap();
        printer.event(Event::Started { vertex: 2, name: "[b 1/1] RUN exit 1".into() }, at(0)).unwrap();
        printer.event(Event::Failed { vertex: 2, error: "exit code: 1".into() }, at(100)).unwrap();
        printer.finish(at(100), true).unwrap();
        let text = buffer.text();
        let final_frame = &text[text.rfind("[+] Building").unwrap()..];
        assert!(final_frame.starts_with("[+] Building 0.1s (1/1) FINISHED\n"), "{final_frame:?}");
    }

    #[test]
    fn writing_into_a_buffer_without_a_terminal_does_not_panic() {
        let buffer = SharedBuffer::default();
        let mut printer = TtyPrinter::new(Box::new(buffer.clone()), no_terminal, false);
        for vertex in 0..40 {
            let now = at(vertex as u64 * 150);
            printer.event(Event::Started { vertex, name: format!("[{vertex}/40] RUN step {vertex}") }, now).unwrap();
            printer.event(Event::Log { vertex, stream: Stream::Stdout, bytes: b"\xff\xfe bytes\n".to_vec() }, now).unwrap();
            printer.tick(now).unwrap();
        }
        for vertex in 0..40 {
            printer.event(Event::Finished { vertex }, at(6_000)).unwrap();
        }
        printer.finish(at(6_000), true).unwrap();
        let text = buffer.text();
        let final_frame = &text[text.rfind("[+] Building").unwrap()..];
        assert!(final_frame.starts_with("[+] Building 6.0s (40/40) FINISHED\n"));
        assert_eq!(final_frame.lines().count(), 41);
    }

    #[test]
    fn live_frame_keeps_running_jobs_when_it_must_scroll() {
        let mut printer = TtyPrinter::new(Box::new(io::sink()), short_terminal, false);
        printer.event(Event::Started { vertex: 0, name: "long running".into() }, at(0)).unwrap();
        for vertex in 1..20 {
            printer.event(Event::Cached { vertex, name: format!("cached {vertex}") }, at(0)).unwrap();
        }
        let frame = printer.frame(at(500), false);
        assert_eq!(frame.len(), 11);
        assert!(frame[1].starts_with(" => long running "));
        assert!(frame[10].starts_with(" => CACHED cached 19 "));
    }

    #[test]
    fn displayed_log_lines_drop_escapes_and_carriage_return_history() {
        assert_eq!(displayed("\x1b[32mgreen\x1b[0m\tok"), "green ok");
        assert_eq!(displayed("10%\r20%\r"), "20%");
        assert_eq!(displayed("bell\x07"), "bell");
    }
}
