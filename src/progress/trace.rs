//! What the printers know about a build: the state of each vertex, rebuilt from events.
//!
//! [`Trace::record`] is the one place where an [`Event`] is interpreted; printers keep only
//! what they need to draw on top of it. Invariants: vertices keep the order in which they first
//! appeared; a vertex's runs (intervals) are in time order and only the last may be open; events
//! for a vertex that never started nor was cached are dropped, as BuildKit drops them (there is
//! no name to show).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use super::{Definition, Event, Timestamp, VertexId, elapsed, error_logs_block, format_log_time, split_lines};

#[derive(Default)]
pub(super) struct Trace {
    /// In order of first appearance; indexes into this are called slots.
    pub(super) vertices: Vec<VertexState>,
    slots: HashMap<VertexId, usize>,
    /// When the first vertex started: the start of the build as the user sees it.
    pub(super) start: Option<Timestamp>,
    pub(super) warnings: Vec<String>,
    /// The graph's vertices as announced by [`Event::Defined`], by id; a vertex may be defined
    /// and never start (the build failed first).
    defined: HashMap<VertexId, Definition>,
}

pub(super) struct VertexState {
    pub(super) name: String,
    pub(super) intervals: Vec<Interval>,
    pub(super) cached: bool,
    pub(super) error: Option<String>,
    pub(super) canceled: bool,
    /// In order of first appearance.
    pub(super) statuses: Vec<StatusState>,
    pub(super) tail: LogTail,
}

pub(super) struct Interval {
    pub(super) start: Timestamp,
    pub(super) stop: Option<Timestamp>,
}

pub(super) struct StatusState {
    pub(super) id: String,
    pub(super) current: u64,
    pub(super) total: Option<u64>,
    pub(super) started: Timestamp,
    /// When the last update came.
    pub(super) timestamp: Timestamp,
    pub(super) completed: Option<Timestamp>,
}

impl VertexState {
    fn new(name: String) -> VertexState {
        VertexState {
            name,
            intervals: Vec::new(),
            cached: false,
            error: None,
            canceled: false,
            statuses: Vec::new(),
            tail: LogTail::default(),
        }
    }

    pub(super) fn is_started(&self) -> bool {
        !self.intervals.is_empty()
    }

    pub(super) fn is_completed(&self) -> bool {
        self.intervals.last().is_some_and(|interval| interval.stop.is_some())
    }

    pub(super) fn is_running(&self) -> bool {
        self.is_started() && !self.is_completed()
    }

    pub(super) fn stop_time(&self) -> Option<Timestamp> {
        self.intervals.last().and_then(|interval| interval.stop)
    }

    /// Time spent running, over all runs; a run still open counts until `now`.
    pub(super) fn run_time(&self, now: Timestamp) -> Duration {
        self.intervals.iter().map(|interval| elapsed(interval.start, interval.stop.unwrap_or(now))).sum()
    }

    /// Time from the start of the current run to `now`: what a log line's prefix shows.
    pub(super) fn since_start(&self, now: Timestamp) -> Duration {
        self.intervals.last().map_or(Duration::ZERO, |interval| elapsed(interval.start, now))
    }

    /// Ends the current run at `now`, or records an empty run for a vertex that never started.
    fn complete(&mut self, now: Timestamp) {
        match self.intervals.last_mut() {
            Some(interval) if interval.stop.is_none() => interval.stop = Some(now),
            _ => self.intervals.push(Interval { start: now, stop: Some(now) }),
        }
    }
}

impl Trace {
    fn slot_or_insert(&mut self, vertex: VertexId, name: &str) -> usize {
        if let Some(&slot) = self.slots.get(&vertex) {
            name.clone_into(&mut self.vertices[slot].name);
            return slot;
        }
        self.vertices.push(VertexState::new(name.to_owned()));
        self.slots.insert(vertex, self.vertices.len() - 1);
        self.vertices.len() - 1
    }

    /// Applies `event`; returns the slot of the vertex it changed, `None` when it changed no
    /// vertex (a warning, a repeated start, an event for an unknown vertex).
    pub(super) fn record(&mut self, event: &Event, now: Timestamp) -> Option<usize> {
        if let Event::Warning { message } = event {
            self.warnings.push(message.clone());
            return None;
        }
        if let Event::Defined { vertices } = event {
            for definition in vertices {
                self.defined.insert(definition.vertex, definition.clone());
            }
            return None;
        }
        if let Event::Started { vertex, name } | Event::Cached { vertex, name } = event {
            self.start.get_or_insert(now);
            self.slot_or_insert(*vertex, name);
        }
        let vertex = event.vertex()?;
        let slot = *self.slots.get(&vertex)?;
        let state = &mut self.vertices[slot];
        match event {
            Event::Started { .. } => {
                if state.is_running() {
                    return None;
                }
                state.intervals.push(Interval { start: now, stop: None });
                state.cached = false;
                state.error = None;
                state.canceled = false;
            }
            Event::Cached { .. } => {
                state.complete(now);
                state.cached = true;
            }
            Event::Log { bytes, .. } => {
                if bytes.is_empty() {
                    return None;
                }
                let since_start = state.since_start(now);
                state.tail.push(since_start, bytes);
            }
            Event::Status { id, current, total, done, .. } => {
                let index = match state.statuses.iter().position(|status| status.id == *id) {
                    Some(index) => index,
                    None => {
                        state.statuses.push(StatusState {
                            id: id.clone(),
                            current: *current,
                            total: *total,
                            started: now,
                            timestamp: now,
                            completed: None,
                        });
                        state.statuses.len() - 1
                    }
                };
                let status = &mut state.statuses[index];
                status.current = *current;
                status.total = *total;
                status.timestamp = now;
                status.completed = if *done { Some(status.completed.unwrap_or(now)) } else { None };
            }
            Event::Finished { .. } => {
                if !state.is_running() {
                    return None;
                }
                state.complete(now);
            }
            Event::Failed { error, .. } => {
                state.complete(now);
                state.error = Some(error.clone());
            }
            Event::Canceled { .. } => {
                state.complete(now);
                state.canceled = true;
            }
            Event::Warning { .. } | Event::Defined { .. } => return None,
        }
        Some(slot)
    }

    /// How a vertex was announced, if it was part of the solved graph.
    pub(super) fn definition(&self, vertex: VertexId) -> Option<&Definition> {
        self.defined.get(&vertex)
    }

    /// Every vertex of the build: those seen and those announced but not started yet, as
    /// BuildKit counts the `total` of `(completed/total)`.
    pub(super) fn total_count(&self) -> usize {
        let waiting = self.defined.keys().filter(|vertex| !self.slots.contains_key(vertex)).count();
        self.vertices.len() + waiting
    }

    pub(super) fn completed_count(&self) -> usize {
        self.vertices.iter().filter(|vertex| vertex.is_completed()).count()
    }

    /// BuildKit's summary of failures: for each failed (not canceled) vertex, its last lines.
    pub(super) fn error_logs(&self) -> Vec<u8> {
        let mut text = Vec::new();
        for vertex in &self.vertices {
            if vertex.error.is_some() && !vertex.canceled {
                text.extend_from_slice(&error_logs_block(&vertex.name, &vertex.tail.lines()));
            }
        }
        text
    }
}

/// The most recent log lines of a vertex, each prefixed with its time like BuildKit's
/// (`0.312 text`); the last one may still be open. Bounded, so a chatty step costs no memory.
#[derive(Debug, Default)]
pub(super) struct LogTail {
    lines: VecDeque<Vec<u8>>,
    open: bool,
}

impl LogTail {
    /// How many lines BuildKit keeps to show after a failure.
    const CAPACITY: usize = 10;

    fn push(&mut self, since_start: Duration, data: &[u8]) {
        let mut first = true;
        let complete = split_lines(data, |piece| {
            match self.lines.back_mut() {
                Some(open_line) if first && self.open => open_line.extend_from_slice(piece),
                _ => {
                    let mut line = format_log_time(since_start).into_bytes();
                    line.push(b' ');
                    line.extend_from_slice(piece);
                    self.lines.push_back(line);
                    if self.lines.len() > LogTail::CAPACITY {
                        self.lines.pop_front();
                    }
                }
            }
            first = false;
        });
        self.open = !complete;
    }

    pub(super) fn lines(&self) -> Vec<Vec<u8>> {
        self.lines.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::Stream;
    use super::*;

    fn at(millis: u64) -> Timestamp {
        Duration::from_millis(millis)
    }

    #[test]
    fn log_tail_joins_partial_lines_and_keeps_the_last_ten() {
        let mut tail = LogTail::default();
        tail.push(Duration::from_millis(100), b"hel");
        tail.push(Duration::from_millis(200), b"lo\nwor");
        assert_eq!(tail.lines(), vec![b"0.100 hello".to_vec(), b"0.200 wor".to_vec()]);
        for number in 0..12 {
            tail.push(Duration::from_secs(1), format!("{number}\n").as_bytes());
        }
        let lines = tail.lines();
        assert_eq!(lines.len(), 10);
        assert_eq!(lines[0], b"1.000 2".to_vec());
        assert_eq!(lines[9], b"1.000 11".to_vec());
    }

    #[test]
    fn record_tracks_runs_outcomes_and_ignores_unknown_vertices() {
        let mut trace = Trace::default();
        let log = |vertex, text: &str| Event::Log { vertex, stream: Stream::Stdout, bytes: text.as_bytes().to_vec() };
        assert_eq!(trace.record(&log(1, "lost\n"), at(0)), None);
        assert_eq!(trace.record(&Event::Finished { vertex: 1 }, at(0)), None);
        assert_eq!(trace.record(&Event::Started { vertex: 7, name: "a".into() }, at(1_000)), Some(0));
        assert_eq!(trace.record(&Event::Started { vertex: 7, name: "a".into() }, at(1_100)), None);
        assert_eq!(trace.record(&log(7, "x\n"), at(1_250)), Some(0));
        assert_eq!(trace.record(&Event::Cached { vertex: 8, name: "b".into() }, at(1_300)), Some(1));
        assert_eq!(trace.record(&Event::Failed { vertex: 7, error: "boom".into() }, at(2_000)), Some(0));
        assert_eq!(trace.record(&Event::Warning { message: "w".into() }, at(2_000)), None);

        assert_eq!(trace.start, Some(at(1_000)));
        assert_eq!(trace.completed_count(), 2);
        assert_eq!(trace.vertices[0].run_time(at(9_000)), Duration::from_secs(1));
        assert!(trace.vertices[1].cached && trace.vertices[1].is_completed());
        assert_eq!(trace.warnings, ["w"]);
        assert_eq!(trace.error_logs(), b"------\n > a:\n0.250 x\n------\n".to_vec());

        // A second run starts afresh and adds to the run time.
        trace.record(&Event::Started { vertex: 7, name: "a".into() }, at(3_000));
        assert!(trace.vertices[0].is_running() && trace.vertices[0].error.is_none());
        assert_eq!(trace.vertices[0].run_time(at(3_500)), Duration::from_millis(1_500));
    }

    #[test]
    fn statuses_keep_their_start_and_first_completion() {
        let mut trace = Trace::default();
        trace.record(&Event::Started { vertex: 1, name: "pull".into() }, at(0));
        let status = |current, done| Event::Status { vertex: 1, id: "layer".into(), current, total: Some(10), done };
        trace.record(&status(1, false), at(100));
        trace.record(&status(10, true), at(400));
        trace.record(&status(10, true), at(900));
        let layer = &trace.vertices[0].statuses[0];
        assert_eq!((layer.started, layer.timestamp, layer.completed), (at(100), at(900), Some(at(400))));
        assert_eq!(layer.current, 10);
    }
}
