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
//!   output depend on timing even more), but a new status waits those 100 ms, so a quick
//!   transfer or extraction shows once, done, as in BuildKit;
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
use super::{Event, Printer, TICK, Timestamp, elapsed, format_bytes, format_log_time, seconds, split_lines, warnings_summary};

/// A waiting vertex is shown after this long, whatever the current one does.
const MAX_DELAY: Duration = Duration::from_secs(10);
/// The base time a vertex may hold the output while others wait.
const ANTI_FLICKER: Duration = Duration::from_secs(5);
/// A running transfer's line is reprinted after this long ...
const MIN_TIME_DELTA: Duration = Duration::from_secs(5);
/// ... or after this fraction of its total.
const MIN_PROGRESS_DELTA: f64 = 0.05;

pub(crate) struct PlainPrinter {
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
        if self.mid_line { self.write(b"\n") } else { Ok(()) }
    }
}

/// A status line: `sha256:ab.. 1.23MB / 4.56MB 0.5s`, `transferring context: 2.10kB done`.
fn status_line(status: &StatusState) -> String {
    let sizes = match status.total {
        Some(total) if total != 0 => {
            format!(" {} / {}", format_bytes(status.current), format_bytes(total))
        }
        _ if status.current != 0 => format!(" {}", format_bytes(status.current)),
        _ => String::new(),
    };
    let took = seconds(elapsed(status.started, status.completed.unwrap_or(status.timestamp)));
    let mut time = if took > 0.01 { format!(" {took:.1}s") } else { String::new() };
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
    pub(crate) fn new(out: Box<dyn Write + Send>) -> PlainPrinter {
        PlainPrinter {
            out: Output { writer: out, mid_line: false },
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
        let (completed, mut rest): (BTreeSet<usize>, BTreeSet<usize>) =
            self.updates.iter().partition(|&&slot| vertices[slot].is_completed());
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
            stats.push(Stat { slot, block_time, speed, over_limit });
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
        let PlainPrinter { out, trace, views, current, last_status, .. } = self;
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
        let mut held = BTreeSet::new();
        for index in std::mem::take(&mut view.pending_statuses) {
            let status = &vertex.statuses[index];
            // BuildKit batches updates for 100 ms: a status that begins and ends within that
            // shows once, ended (`transferring context: 2.03kB done`, `extracting sha256:..
            // done`). A new one waits as long before it shows open.
            if status.completed.is_none() && elapsed(status.started, now) < TICK && !self.closing {
                held.insert(index);
                continue;
            }
            if status.completed.is_none()
                && let Some(&(last_current, last_timestamp)) = last_status.get(&(slot, index))
            {
                let progress = match status.total {
                    Some(total) if total > 0 => (status.current as f64 - last_current as f64) / total as f64,
                    _ => 0.0,
                };
                if progress < MIN_PROGRESS_DELTA && elapsed(last_timestamp, status.timestamp) < MIN_TIME_DELTA {
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

        let holding = !held.is_empty();
        view.pending_statuses = held;
        *current = Some(slot);
        let open_status = vertex.statuses.iter().any(|status| status.completed.is_none());
        if vertex.is_completed() && (!open_status || self.closing) {
            *current = None;
            view.count = 0;
            view.reported = true;
            out.end_line()?;
            out.line(&format!("#{number} {}", outcome(vertex, now)))?;
        }
        if !holding {
            self.updates.remove(&slot);
        }
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

    fn finish(&mut self, now: Timestamp, build_failed: bool) -> io::Result<()> {
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
        if build_failed {
            self.out.write(&self.trace.error_logs())?;
        }
        self.out.write(warnings_summary(&self.trace.warnings).as_bytes())?;
        self.out.writer.flush()
    }
}

#[cfg(test)]
#[path = "plain_tests.rs"]
mod tests;
