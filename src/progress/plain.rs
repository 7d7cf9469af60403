//! The plain printer: BuildKit's `--progress=plain` output, line for line.
//!
//! ```text
//! #1 [internal] load build definition from Dockerfile
//! #1 transferring dockerfile: 92B done
//! #1 DONE 0.0s
//!
//! #2 [2/2] RUN make
//! #2 0.312 cc -o app main.c
//! #2 DONE 1.4s
//! ```
//!
//! Output is grouped in blocks, one vertex at a time. While one vertex holds the output, the
//! others' updates wait; the printer switches (closing the interrupted block with `#N ...` and
//! reopening the other with its header) when the holder completes, when a waiting vertex has
//! waited more than 10 s, or when the holder has had the output for longer than its fair share
//! (5 s divided by the share of the others' update rate). This is BuildKit's `textMux` schedule,
//! driven by the reporter's clock; the [`Printer::tick`] calls let a switch happen while no event
//! arrives.
//!
//! Vertices get their `#N` when first printed, so numbers appear in order in the output even
//! when a vertex that started early is shown late.
//!
//! Departures from BuildKit, each a fix of a quirk that cannot be relied upon:
//! - every update is printed at once (BuildKit batches updates for 100 ms, which makes its
//!   output depend on timing even more);
//! - a status line never lands in the middle of an open log line: the line is ended first and
//!   reprinted whole when it continues;
//! - the throttling of status lines is per vertex and status id, not per id alone;
//! - the error summary shows the last ten whole lines (BuildKit's ring can keep fragments);
//! - a vertex's end waits for all its statuses to end, not only those updated last (BuildKit
//!   would print `DONE` twice when a status ends late); at the end of the build it is printed
//!   regardless.

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Write};
use std::time::Duration;

use super::trace::{StatusState, Trace, VertexState};
use super::{
    Event, Printer, Timestamp, elapsed, format_bytes, format_log_time, seconds, split_lines,
    warnings_summary,
};

/// A waiting vertex is shown after this long, whatever the current one does.
const MAX_DELAY: Duration = Duration::from_secs(10);
/// The base time a vertex may hold the output while others wait.
const ANTI_FLICKER: Duration = Duration::from_secs(5);
/// A running transfer's line is reprinted after this long ...
const MIN_TIME_DELTA: Duration = Duration::from_secs(5);
/// ... or after this fraction of its total.
const MIN_PROGRESS_DELTA: f64 = 0.05;

pub struct PlainPrinter {
    out: Output,
    trace: Trace,
    /// What was printed of each vertex, by the trace's slot.
    views: Vec<View>,
    /// Slots with something not printed yet.
    updates: BTreeSet<usize>,
    /// The slot whose block is open.
    current: Option<usize>,
    printed_any: bool,
    last_number: usize,
    /// The last printed state of each status, by slot and status index.
    last_status: HashMap<(usize, usize), (u64, Timestamp)>,
    /// Set by [`Printer::finish`]: a vertex's end is printed even while a status of it is open.
    closing: bool,
}

/// The printing state of one vertex.
#[derive(Default)]
struct View {
    /// `#N`, 0 until first printed.
    number: usize,
    /// Indexes of statuses updated since last printed.
    pending_statuses: BTreeSet<usize>,
    /// Log lines not printed yet, time-prefixed; the last may be open (`logs_partial`) and
    /// its first `logs_offset` bytes already printed.
    logs: Vec<Vec<u8>>,
    logs_partial: bool,
    logs_offset: usize,
    /// Updates since the vertex last held the output, and when the first of them came.
    count: u64,
    last_block_time: Option<Timestamp>,
    /// Whether the outcome line (`DONE`, `CACHED`, ...) of the last run was printed.
    reported: bool,
}

impl View {
    /// Counts an update, remembering when the first unprinted one came.
    fn touch(&mut self, now: Timestamp) {
        if self.count == 0 {
            self.last_block_time = Some(now);
        }
        self.count += 1;
    }

    fn add_log(&mut self, since_start: Duration, data: &[u8]) {
        let mut first = true;
        let logs = &mut self.logs;
        let logs_partial = self.logs_partial;
        let complete = split_lines(data, |piece| {
            match logs.last_mut() {
                Some(open_line) if first && logs_partial => open_line.extend_from_slice(piece),
                _ => {
                    let mut line = format_log_time(since_start).into_bytes();
                    line.push(b' ');
                    line.extend_from_slice(piece);
                    logs.push(line);
                }
            }
            first = false;
        });
        self.logs_partial = !complete;
    }
}

/// Tracks whether the last byte written ended a line, so blocks never run into an open line.
struct Output {
    writer: Box<dyn Write + Send>,
    mid_line: bool,
}

impl Output {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Some(&last) = bytes.last() {
            self.writer.write_all(bytes)?;
            self.mid_line = last != b'\n';
        }
        Ok(())
    }

    fn line(&mut self, text: &str) -> io::Result<()> {
        self.write(format!("{text}\n").as_bytes())
    }

    fn end_line(&mut self) -> io::Result<()> {
        if self.mid_line {
            self.write(b"\n")
        } else {
            Ok(())
        }
    }
}

/// A status line: `sha256:ab.. 1.23MB / 4.56MB 0.5s`, `transferring context: 2.10kB done`.
fn status_line(status: &StatusState) -> String {
    let sizes = match status.total {
        Some(total) if total != 0 => {
            format!(
                " {} / {}",
                format_bytes(status.current),
                format_bytes(total)
            )
        }
        _ if status.current != 0 => format!(" {}", format_bytes(status.current)),
        _ => String::new(),
    };
    let took = seconds(elapsed(
        status.started,
        status.completed.unwrap_or(status.timestamp),
    ));
    let mut time = if took > 0.01 {
        format!(" {took:.1}s")
    } else {
        String::new()
    };
    if status.completed.is_some() {
        time.push_str(" done");
    }
    format!("{}{sizes}{time}", status.id)
}

/// The line that closes a vertex's last block.
fn outcome(vertex: &VertexState, now: Timestamp) -> String {
    if vertex.canceled {
        "CANCELED".to_owned()
    } else if let Some(error) = &vertex.error {
        format!("ERROR: {error}")
    } else if vertex.cached {
        "CACHED".to_owned()
    } else {
        format!("DONE {:.1}s", seconds(vertex.run_time(now)))
    }
}

impl PlainPrinter {
    pub fn new(out: Box<dyn Write + Send>) -> PlainPrinter {
        PlainPrinter {
            out: Output {
                writer: out,
                mid_line: false,
            },
            trace: Trace::default(),
            views: Vec::new(),
            updates: BTreeSet::new(),
            current: None,
            printed_any: false,
            last_number: 0,
            last_status: HashMap::new(),
            closing: false,
        }
    }

    /// Records `event`; returns whether a vertex has something new to print.
    fn record(&mut self, event: &Event, now: Timestamp) -> bool {
        let Some(slot) = self.trace.record(event, now) else {
            return false;
        };
        if self.views.len() <= slot {
            self.views.resize_with(slot + 1, View::default);
        }
        let vertex = &self.trace.vertices[slot];
        let view = &mut self.views[slot];
        match event {
            Event::Started { .. } => view.reported = false,
            Event::Log { bytes, .. } => view.add_log(vertex.since_start(now), bytes),
            Event::Status { id, .. } => {
                if let Some(index) = vertex.statuses.iter().position(|status| status.id == *id) {
                    view.pending_statuses.insert(index);
                }
            }
            _ => {}
        }
        view.touch(now);
        self.updates.insert(slot);
        true
    }

    /// Prints what the schedule allows now (BuildKit's `textMux.print`).
    fn print(&mut self, now: Timestamp) -> io::Result<()> {
        let vertices = &self.trace.vertices;
        let (completed, mut rest): (BTreeSet<usize>, BTreeSet<usize>) = self
            .updates
            .iter()
            .partition(|&&slot| vertices[slot].is_completed());
        let current = self.current;

        // Completed vertices first, the open block before the others, then by completion time.
        let mut by_completion: Vec<usize> = completed.iter().copied().collect();
        by_completion.sort_by_key(|&slot| (Some(slot) != current, vertices[slot].stop_time()));
        for slot in by_completion {
            self.print_vertex(slot, now)?;
        }

        if rest.is_empty() {
            let vertices = &self.trace.vertices;
            if current.is_some_and(|slot| vertices[slot].is_running()) {
                return Ok(());
            }
            // Nothing new: reopen any vertex still running, so the output shows what goes on.
            if let Some(slot) = vertices.iter().position(VertexState::is_running) {
                self.print_vertex(slot, now)?;
            }
            return Ok(());
        }

        if let Some(slot) = current.filter(|slot| rest.contains(slot)) {
            self.print_vertex(slot, now)?;
        }

        if let Some(slot) = current {
            rest.insert(slot);
        }
        struct Stat {
            slot: usize,
            block_time: Duration,
            speed: f64,
            over_limit: bool,
        }
        let mut stats: Vec<Stat> = Vec::new();
        let mut fastest: Option<usize> = None;
        for &slot in &rest {
            let view = &self.views[slot];
            let Some(block_start) = view.last_block_time else {
                continue;
            };
            let block_time = elapsed(block_start, now);
            // A real clock always moves between two updates; a floor keeps the rate finite
            // when a test clock does not.
            let speed = view.count as f64 / seconds(block_time).max(1e-9);
            let over_limit = block_time > MAX_DELAY && Some(slot) != current;
            if over_limit || fastest.is_none_or(|index: usize| stats[index].speed < speed) {
                fastest = Some(stats.len());
            }
            stats.push(Stat {
                slot,
                block_time,
                speed,
                over_limit,
            });
        }
        let Some(fastest) = fastest.map(|index| stats[index].slot) else {
            return Ok(());
        };
        let total_speed: f64 = stats.iter().map(|stat| stat.speed).sum();

        if current.is_none_or(|slot| completed.contains(&slot)) {
            return self.print_vertex(fastest, now);
        }
        if let Some(stat) = stats.iter().find(|stat| stat.over_limit) {
            return self.print_vertex(stat.slot, now);
        }
        if let Some(stat) = stats.iter().find(|stat| Some(stat.slot) == current) {
            let share = stat.speed / total_speed;
            if seconds(ANTI_FLICKER) / (1.0 - share) < seconds(stat.block_time) {
                return self.print_vertex(fastest, now);
            }
        }
        Ok(())
    }

    /// Prints the pending updates of one vertex, opening its block if another one is open
    /// (BuildKit's `textMux.printVtx`).
    fn print_vertex(&mut self, slot: usize, now: Timestamp) -> io::Result<()> {
        let PlainPrinter {
            out,
            trace,
            views,
            current,
            last_status,
            ..
        } = self;
        let vertex = &trace.vertices[slot];
        if views[slot].number == 0 {
            self.last_number += 1;
            views[slot].number = self.last_number;
        }
        let number = views[slot].number;

        if *current != Some(slot) {
            if let Some(previous) = *current {
                out.end_line()?;
                let previous = &mut views[previous];
                previous.logs_offset = 0;
                previous.count = 0;
                out.line(&format!("#{} ...", previous.number))?;
            }
            if self.printed_any {
                out.write(b"\n")?;
            }
            self.printed_any = true;
            out.line(&format!("#{number} {}", vertex.name))?;
        }

        let view = &mut views[slot];
        for index in std::mem::take(&mut view.pending_statuses) {
            let status = &vertex.statuses[index];
            if status.completed.is_none()
                && let Some(&(last_current, last_timestamp)) = last_status.get(&(slot, index))
            {
                let progress = match status.total {
                    Some(total) if total > 0 => {
                        (status.current as f64 - last_current as f64) / total as f64
                    }
                    _ => 0.0,
                };
                if progress < MIN_PROGRESS_DELTA
                    && elapsed(last_timestamp, status.timestamp) < MIN_TIME_DELTA
                {
                    continue;
                }
            }
            last_status.insert((slot, index), (status.current, status.timestamp));
            if out.mid_line {
                out.end_line()?;
                view.logs_offset = 0;
            }
            out.line(&format!("#{number} {}", status_line(status)))?;
        }

        let last_index = view.logs.len().saturating_sub(1);
        for (index, line) in view.logs.iter().enumerate() {
            if index == 0 && view.logs_offset > 0 {
                out.write(&line[view.logs_offset.min(line.len())..])?;
            } else {
                out.end_line()?;
                out.write(format!("#{number} ").as_bytes())?;
                out.write(line)?;
            }
            if index != last_index || !view.logs_partial {
                out.write(b"\n")?;
            }
        }
        if view.logs_partial {
            if let Some(open_line) = view.logs.pop() {
                view.logs_offset = open_line.len();
                view.logs = vec![open_line];
            }
        } else {
            view.logs.clear();
            view.logs_offset = 0;
        }

        *current = Some(slot);
        let open_status = vertex
            .statuses
            .iter()
            .any(|status| status.completed.is_none());
        if vertex.is_completed() && (!open_status || self.closing) {
            *current = None;
            view.count = 0;
            view.reported = true;
            out.end_line()?;
            out.line(&format!("#{number} {}", outcome(vertex, now)))?;
        }
        self.updates.remove(&slot);
        Ok(())
    }
}

impl Printer for PlainPrinter {
    fn event(&mut self, event: Event, now: Timestamp) -> io::Result<()> {
        if self.record(&event, now) {
            self.print(now)?;
            self.out.writer.flush()?;
        }
        Ok(())
    }

    fn tick(&mut self, now: Timestamp) -> io::Result<()> {
        if !self.updates.is_empty() {
            self.print(now)?;
            self.out.writer.flush()?;
        }
        Ok(())
    }

    fn finish(&mut self, now: Timestamp) -> io::Result<()> {
        // A vertex that ended while one of its statuses was still open has not printed its end.
        self.closing = true;
        for (slot, vertex) in self.trace.vertices.iter().enumerate() {
            if vertex.is_completed() && !self.views[slot].reported {
                self.updates.insert(slot);
            }
        }
        // Each pass prints at least one vertex with updates; if the schedule holds them all
        // back, the first is forced out.
        while let Some(&first) = self.updates.first() {
            let before = self.updates.len();
            self.print(now)?;
            if self.updates.len() == before {
                self.print_vertex(first, now)?;
            }
        }
        self.out.end_line()?;
        self.out.write(&self.trace.error_logs())?;
        self.out
            .write(warnings_summary(&self.trace.warnings).as_bytes())?;
        self.out.writer.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::SharedBuffer;
    use super::super::{Stream, VertexId};
    use super::*;

    /// Runs `script` (milliseconds since the start, event) through a plain printer and returns
    /// everything it wrote, summary included.
    fn render(script: Vec<(u64, Event)>) -> String {
        let buffer = SharedBuffer::default();
        let mut printer = PlainPrinter::new(Box::new(buffer.clone()));
        let start = Duration::from_secs(1_700_000_000);
        let mut last = start;
        for (millis, event) in script {
            last = start + Duration::from_millis(millis);
            printer.event(event, last).unwrap();
        }
        printer.finish(last).unwrap();
        buffer.text()
    }

    fn started(vertex: VertexId, name: &str) -> Event {
        Event::Started {
            vertex,
            name: name.to_owned(),
        }
    }

    fn log(vertex: VertexId, text: &str) -> Event {
        Event::Log {
            vertex,
            stream: Stream::Stdout,
            bytes: text.as_bytes().to_vec(),
        }
    }

    fn finished(vertex: VertexId) -> Event {
        Event::Finished { vertex }
    }

    fn cached(vertex: VertexId, name: &str) -> Event {
        Event::Cached {
            vertex,
            name: name.to_owned(),
        }
    }

    fn failed(vertex: VertexId, error: &str) -> Event {
        Event::Failed {
            vertex,
            error: error.to_owned(),
        }
    }

    fn warning(message: &str) -> Event {
        Event::Warning {
            message: message.to_owned(),
        }
    }

    fn status(vertex: VertexId, id: &str, current: u64, total: Option<u64>, done: bool) -> Event {
        Event::Status {
            vertex,
            id: id.to_owned(),
            current,
            total,
            done,
        }
    }

    #[test]
    fn a_simple_build_prints_blocks_separated_by_blank_lines() {
        let output = render(vec![
            (
                0,
                started(10, "[internal] load build definition from Dockerfile"),
            ),
            (0, status(10, "transferring dockerfile:", 92, None, true)),
            (20, finished(10)),
            (30, cached(11, "[1/2] FROM docker.io/library/alpine:3.20")),
            (40, started(12, "[2/2] RUN echo hi")),
            (352, log(12, "hi\n")),
            (400, finished(12)),
        ]);
        assert_eq!(
            output,
            "#1 [internal] load build definition from Dockerfile\n\
             #1 transferring dockerfile: 92B done\n\
             #1 DONE 0.0s\n\
             \n\
             #2 [1/2] FROM docker.io/library/alpine:3.20\n\
             #2 CACHED\n\
             \n\
             #3 [2/2] RUN echo hi\n\
             #3 0.312 hi\n\
             #3 DONE 0.4s\n"
        );
    }

    #[test]
    fn partial_lines_are_joined_and_a_last_open_line_is_ended() {
        let output = render(vec![
            (0, started(1, "[1/1] RUN ./build.sh")),
            (100, log(1, "compiling")),
            (200, log(1, " main.c\nlinking")),
            (300, log(1, "\nnext\nno newline")),
            (1500, finished(1)),
        ]);
        // The open line is printed as it comes and continued in place; the vertex's end closes
        // the line before `DONE`.
        assert_eq!(
            output,
            "#1 [1/1] RUN ./build.sh\n\
             #1 0.100 compiling main.c\n\
             #1 0.200 linking\n\
             #1 0.300 next\n\
             #1 0.300 no newline\n\
             #1 DONE 1.5s\n"
        );
    }

    #[test]
    fn an_open_line_of_an_unfinished_vertex_is_flushed_at_the_end() {
        let output = render(vec![
            (0, started(1, "[1/1] RUN x")),
            (5, log(1, "tail without newline")),
        ]);
        assert_eq!(output, "#1 [1/1] RUN x\n#1 0.005 tail without newline\n");
    }

    #[test]
    fn a_vertex_started_while_another_holds_the_output_waits_for_it() {
        let output = render(vec![
            (0, started(1, "[a 2/2] RUN slow")),
            (100, log(1, "a1\n")),
            (200, started(2, "[b 2/2] RUN quick")),
            (300, log(2, "b1\n")),
            (400, log(1, "a2\n")),
            (500, finished(2)),
            (600, finished(1)),
        ]);
        // `b` finishes while `a` holds the output: its completed block is printed at once,
        // interrupting `a` (`#1 ...`), and `a` is reopened with its header afterwards.
        assert_eq!(
            output,
            "#1 [a 2/2] RUN slow\n\
             #1 0.100 a1\n\
             #1 0.400 a2\n\
             #1 ...\n\
             \n\
             #2 [b 2/2] RUN quick\n\
             #2 0.100 b1\n\
             #2 DONE 0.3s\n\
             \n\
             #1 [a 2/2] RUN slow\n\
             #1 DONE 0.6s\n"
        );
    }

    #[test]
    fn a_waiting_vertex_is_shown_after_ten_seconds_and_interrupts_an_open_line() {
        let mut script = vec![
            (0, started(1, "[a 1/1] RUN chatty")),
            (10, started(2, "[b 1/1] RUN quiet")),
            (20, log(2, "b waits\n")),
            (30, log(1, "partial")),
        ];
        // `a` keeps writing every second; `b`'s line has waited since 0.01 s.
        for second in 1..=10u64 {
            script.push((second * 1000 + 30, log(1, &format!(" {second}"))));
        }
        script.push((12_000, finished(2)));
        script.push((12_500, log(1, " end\n")));
        script.push((13_000, finished(1)));
        let output = render(script);
        assert_eq!(
            output,
            "#1 [a 1/1] RUN chatty\n\
             #1 0.030 partial 1 2 3 4 5 6 7 8 9 10\n\
             #1 ...\n\
             \n\
             #2 [b 1/1] RUN quiet\n\
             #2 0.010 b waits\n\
             #2 DONE 12.0s\n\
             \n\
             #1 [a 1/1] RUN chatty\n\
             #1 0.030 partial 1 2 3 4 5 6 7 8 9 10 end\n\
             #1 DONE 13.0s\n"
        );
    }

    #[test]
    fn a_waiting_vertex_is_shown_on_a_tick_without_new_events() {
        let buffer = SharedBuffer::default();
        let mut printer = PlainPrinter::new(Box::new(buffer.clone()));
        let at = |millis: u64| Duration::from_secs(100) + Duration::from_millis(millis);
        printer.event(started(1, "one"), at(0)).unwrap();
        printer.event(log(1, "x\n"), at(100)).unwrap();
        printer.event(started(2, "two"), at(200)).unwrap();
        printer.tick(at(5_000)).unwrap();
        assert_eq!(buffer.text(), "#1 one\n#1 0.100 x\n");
        printer.tick(at(10_300)).unwrap();
        assert_eq!(buffer.text(), "#1 one\n#1 0.100 x\n#1 ...\n\n#2 two\n");
    }

    #[test]
    fn the_next_running_vertex_is_reopened_when_the_current_one_completes() {
        let output = render(vec![
            (0, started(1, "one")),
            (10, started(2, "two")),
            (20, finished(1)),
            (900, finished(2)),
        ]);
        assert_eq!(output, "#1 one\n#1 DONE 0.0s\n\n#2 two\n#2 DONE 0.9s\n");
    }

    #[test]
    fn failure_prints_error_and_the_last_log_lines_after_the_progress() {
        let mut script = vec![(0, started(7, "[2/2] RUN make test"))];
        for line in 1..=12u64 {
            script.push((line * 100, log(7, &format!("line {line}\n"))));
        }
        script.push((1300, log(7, "make: *** [test] Error 2")));
        script.push((
            1400,
            failed(
                7,
                "process \"/bin/sh -c make test\" did not complete successfully: exit code: 2",
            ),
        ));
        let output = render(script);
        let mut expected = String::from("#1 [2/2] RUN make test\n");
        for line in 1..=12u64 {
            expected.push_str(&format!(
                "#1 {}.{:03} line {line}\n",
                line / 10,
                line % 10 * 100
            ));
        }
        expected.push_str("#1 1.300 make: *** [test] Error 2\n");
        expected.push_str(
            "#1 ERROR: process \"/bin/sh -c make test\" did not complete successfully: exit code: 2\n",
        );
        expected.push_str("------\n > [2/2] RUN make test:\n");
        for line in 4..=12u64 {
            expected.push_str(&format!(
                "{}.{:03} line {line}\n",
                line / 10,
                line % 10 * 100
            ));
        }
        expected.push_str("1.300 make: *** [test] Error 2\n------\n");
        assert_eq!(output, expected);
    }

    #[test]
    fn canceled_vertices_print_canceled_and_no_error_block() {
        let output = render(vec![
            (0, started(1, "[a 2/2] RUN sleep 100")),
            (0, started(2, "[b 2/2] RUN false")),
            (500, failed(2, "exit code: 1")),
            (510, Event::Canceled { vertex: 1 }),
        ]);
        assert_eq!(
            output,
            "#1 [a 2/2] RUN sleep 100\n\
             #1 ...\n\
             \n\
             #2 [b 2/2] RUN false\n\
             #2 ERROR: exit code: 1\n\
             \n\
             #1 [a 2/2] RUN sleep 100\n\
             #1 CANCELED\n\
             ------\n > [b 2/2] RUN false:\n------\n"
        );
    }

    #[test]
    fn statuses_show_sizes_times_and_are_throttled_while_running() {
        let layer = |current, done| status(1, "sha256:1234abcd", current, Some(4_560_000), done);
        let output = render(vec![
            (0, started(1, "[1/1] FROM docker.io/library/debian:12")),
            (0, layer(0, false)),
            (500, layer(100_000, false)), // 2% more and 0.5 s later: skipped
            (1_000, layer(1_230_000, false)), // 25% more: printed
            (6_100, layer(1_300_000, false)), // 5 s later: printed
            (7_000, layer(4_560_000, true)), // done: always printed
            (
                7_000,
                status(1, "extracting sha256:1234abcd", 0, None, false),
            ),
            (
                7_300,
                status(1, "extracting sha256:1234abcd", 0, None, true),
            ),
            (7_400, finished(1)),
        ]);
        assert_eq!(
            output,
            "#1 [1/1] FROM docker.io/library/debian:12\n\
             #1 sha256:1234abcd 0B / 4.56MB\n\
             #1 sha256:1234abcd 1.23MB / 4.56MB 1.0s\n\
             #1 sha256:1234abcd 1.30MB / 4.56MB 6.1s\n\
             #1 sha256:1234abcd 4.56MB / 4.56MB 7.0s done\n\
             #1 extracting sha256:1234abcd\n\
             #1 extracting sha256:1234abcd 0.3s done\n\
             #1 DONE 7.4s\n"
        );
    }

    #[test]
    fn a_status_line_does_not_land_inside_an_open_log_line() {
        let output = render(vec![
            (0, started(1, "[internal] load build context")),
            (10, log(1, "half")),
            (20, status(1, "transferring context:", 2100, None, true)),
            (30, log(1, " line\n")),
            (40, finished(1)),
        ]);
        assert_eq!(
            output,
            "#1 [internal] load build context\n\
             #1 0.010 half\n\
             #1 transferring context: 2.10kB done\n\
             #1 0.010 half line\n\
             #1 DONE 0.0s\n"
        );
    }

    #[test]
    fn warnings_are_printed_after_everything_else() {
        let output = render(vec![
            (
                0,
                warning("JSONArgsRecommended: JSON arguments recommended (line 3)"),
            ),
            (0, cached(1, "[1/1] FROM scratch")),
            (
                0,
                warning("StageNameCasing: Stage name 'Build' should be lowercase (line 1)"),
            ),
        ]);
        assert_eq!(
            output,
            "#1 [1/1] FROM scratch\n\
             #1 CACHED\n\
             \n 2 warnings found (use docker --debug to expand):\n\
             \x20- JSONArgsRecommended: JSON arguments recommended (line 3)\n\
             \x20- StageNameCasing: Stage name 'Build' should be lowercase (line 1)\n"
        );
    }

    #[test]
    fn a_vertex_ending_with_an_open_status_prints_its_end_when_the_status_ends_or_at_the_end() {
        let open = |vertex| status(vertex, "exporting layers", 0, None, false);
        let done = |vertex| status(vertex, "exporting layers", 0, None, true);
        let output = render(vec![
            (0, started(1, "exporting to image")),
            (0, open(1)),
            (100, finished(1)),
            (300, done(1)),
            (400, started(2, "exporting cache")),
            (400, open(2)),
            (500, finished(2)),
        ]);
        assert_eq!(
            output,
            "#1 exporting to image\n\
             #1 exporting layers\n\
             #1 exporting layers 0.3s done\n\
             #1 DONE 0.1s\n\
             \n\
             #2 exporting cache\n\
             #2 exporting layers\n\
             #2 DONE 0.1s\n"
        );
    }

    #[test]
    fn events_for_unknown_vertices_are_ignored() {
        let output = render(vec![
            (0, log(9, "lost\n")),
            (0, finished(9)),
            (0, Event::Canceled { vertex: 9 }),
        ]);
        assert_eq!(output, "");
    }
}
