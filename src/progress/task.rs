//! Task handles: how the rest of the build reports a vertex.
//!
//! A [`Task`] is one vertex of the progress display, from the [`Sender`] that made it: callers
//! say what happens ([`Task::start`], [`Task::log`], [`Task::status`]) and how it ends
//! ([`Task::cached`], [`Task::finish`], [`Task::fail`], [`Task::cancel`]); the handle sends the
//! events, with the vertex's id and name, so no caller picks ids or pairs a start with its end.
//!
//! Ids: the sender allocates every id from one counter shared by its clones, so two tasks never
//! share one. Vertices outside the graph (`[internal] load build definition`, metadata,
//! `.dockerignore`, exporters, cache import and export) take the next id when made with
//! [`Sender::task`]. The solved graph is announced once with [`Sender::define_graph`], which
//! takes a block of ids as large as the graph, so graph vertex `index` is always the same id, and
//! hands out its tasks by graph index ([`GraphTasks::task`]). Ids never reach users: the printers
//! number vertices `#1`, `#2`, ... in the order they first show them, as BuildKit does, so the
//! numbers users see depend on the order of events, not on the ids.
//!
//! Invariants: an ending consumes the handle, so a task ends at most once; a task shows only
//! once it started or was cached (a task dropped before that sends nothing), and a failure
//! always shows (failing a task that had not started starts it first, so the error has a line).
//!
//! Decision: dropping a running task cancels it (`#N CANCELED`). A task dropped unfinished is
//! one whose work was abandoned, by an early return or a panic: `DONE` would claim work that
//! never completed, and leaving it open would keep the live view spinning and the plain view's
//! block unclosed. BuildKit, too, marks a vertex whose work stopped half-way as canceled.

use std::sync::atomic::{AtomicU8, Ordering};

use super::{Definition, Event, Sender, Stream, VertexId, error_text};

/// The state of a task, as an [`AtomicU8`] so that [`Task::start`], [`Task::log`] and
/// [`Task::status`] work through a shared reference (a task is shared by the threads of one
/// vertex's work; only its ending needs the handle itself).
const IDLE: u8 = 0;
const RUNNING: u8 = 1;
const ENDED: u8 = 2;

/// One vertex of the progress display. See the module docs.
pub(crate) struct Task {
    /// `None` for a task that is never shown ([`Task::hidden`]).
    sender: Option<Sender>,
    vertex: VertexId,
    name: String,
    state: AtomicU8,
}

/// The tasks of a graph announced by [`Sender::define_graph`]: graph vertex `index` is id
/// `first + index`.
pub(crate) struct GraphTasks {
    sender: Sender,
    first: VertexId,
    size: usize,
}

impl Sender {
    /// A task for a vertex outside the graph, under the next free id. Nothing shows until it
    /// starts.
    pub(crate) fn task(&self, name: impl Into<String>) -> Task {
        let vertex = self.next_vertex.fetch_add(1, Ordering::Relaxed);
        Task::new(self.clone(), vertex, name.into())
    }

    /// Announces the graph about to be solved ([`Event::Defined`]): `size` is the number of
    /// vertices of the graph, and each definition's `vertex` is its index in the graph (below
    /// `size`). Returns the graph's tasks, whose ids are those of the announcement.
    pub(crate) fn define_graph(&self, size: usize, vertices: Vec<Definition>) -> GraphTasks {
        let first = self.next_vertex.fetch_add(size, Ordering::Relaxed);
        let vertices = vertices.into_iter().map(|definition| Definition { vertex: first + definition.vertex, ..definition }).collect();
        self.send(Event::Defined { vertices });
        GraphTasks { sender: self.clone(), first, size }
    }
}

impl GraphTasks {
    /// The task of graph vertex `index`, shown as `name`.
    pub(crate) fn task(&self, index: usize, name: impl Into<String>) -> Task {
        debug_assert!(index < self.size, "graph vertex {index} outside the announced {} vertices", self.size);
        Task::new(self.sender.clone(), self.first + index, name.into())
    }
}

impl Task {
    fn new(sender: Sender, vertex: VertexId, name: String) -> Task {
        Task { sender: Some(sender), vertex, name, state: AtomicU8::new(IDLE) }
    }

    /// A task that is never shown, for work that has no line of its own (a vertex without a
    /// name, such as `scratch`): callers treat every vertex alike.
    pub(crate) fn hidden() -> Task {
        Task { sender: None, vertex: 0, name: String::new(), state: AtomicU8::new(IDLE) }
    }

    fn send(&self, event: Event) {
        if let Some(sender) = &self.sender {
            sender.send(event);
        }
    }

    /// The work begins: the vertex shows, with its clock running. Starting a running task does
    /// nothing.
    pub(crate) fn start(&self) {
        if self.state.compare_exchange(IDLE, RUNNING, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            self.send(Event::Started { vertex: self.vertex, name: self.name.clone() });
        }
    }

    /// Output of the work; may end in the middle of a line.
    pub(crate) fn log(&self, stream: Stream, bytes: &[u8]) {
        self.send(Event::Log { vertex: self.vertex, stream, bytes: bytes.to_vec() });
    }

    /// Progress of one transfer or sub-task (`id` like `sha256:ab..` or `transferring context:`).
    pub(crate) fn status(&self, id: &str, current: u64, total: Option<u64>, done: bool) {
        self.send(Event::Status { vertex: self.vertex, id: id.to_owned(), current, total, done });
    }

    /// The result came from the cache; the work never ran.
    pub(crate) fn cached(self) {
        self.end(Event::Cached { vertex: self.vertex, name: self.name.clone() });
    }

    /// The work is done. A task that never started shows as started and done at once.
    pub(crate) fn finish(self) {
        self.start();
        self.end(Event::Finished { vertex: self.vertex });
    }

    /// The work failed with `error`, said as the build's last line says it ([`error_text`]).
    pub(crate) fn fail(self, error: &dyn std::error::Error) {
        self.fail_message(error_text(error));
    }

    /// The work failed; `message` is the error as users read it, for errors that are text
    /// already.
    pub(crate) fn fail_message(self, message: impl Into<String>) {
        self.start();
        self.end(Event::Failed { vertex: self.vertex, error: message.into() });
    }

    /// Finishes or fails the task as `result` says: the ending of work that returns a result.
    pub(crate) fn end_with<T, E: std::error::Error>(self, result: &Result<T, E>) {
        match result {
            Ok(_) => self.finish(),
            Err(error) => self.fail(error),
        }
    }

    /// The work stopped because the build was canceled. A task that never started stays unseen.
    pub(crate) fn cancel(self) {
        if self.state.load(Ordering::Relaxed) == RUNNING {
            self.end(Event::Canceled { vertex: self.vertex });
        }
    }

    fn end(&self, event: Event) {
        if self.state.swap(ENDED, Ordering::Relaxed) != ENDED {
            self.send(event);
        }
    }
}

impl Drop for Task {
    /// See the module docs: an unended task was abandoned, and shows so.
    fn drop(&mut self) {
        if self.state.swap(ENDED, Ordering::Relaxed) == RUNNING {
            self.send(Event::Canceled { vertex: self.vertex });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::SharedBuffer;
    use super::super::{Mode, Progress};
    use super::*;

    fn plain(run: impl FnOnce(&Sender)) -> String {
        let buffer = SharedBuffer::default();
        let progress = Progress::start(Mode::Plain, Box::new(buffer.clone()));
        run(&progress.sender());
        progress.finish(false);
        buffer.text().lines().filter(|line| !line.contains(" DONE ")).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn tasks_take_ids_in_turn_and_graphs_take_a_block() {
        let progress = Progress::start(Mode::Quiet, Box::new(SharedBuffer::default()));
        let sender = progress.sender();
        assert_eq!(sender.task("a").vertex, 0);
        let graph = sender.define_graph(3, Vec::new());
        assert_eq!(graph.task(2, "c").vertex, 3);
        assert_eq!(progress.sender().task("b").vertex, 4);
    }

    #[test]
    fn an_ending_is_sent_once_and_an_unstarted_task_shows_nothing() {
        let text = plain(|sender| {
            let unseen = sender.task("unseen");
            unseen.cancel();
            drop(sender.task("dropped before it started"));
            let task = sender.task("cached");
            task.cached();
        });
        assert_eq!(text, "#1 cached\n#1 CACHED");
    }

    #[test]
    fn a_dropped_running_task_is_canceled_and_a_failure_always_shows() {
        let text = plain(|sender| {
            let running = sender.task("abandoned");
            running.start();
            drop(running);
            let failed = sender.task("failed before it started");
            failed.fail(&std::io::Error::other("boom"));
        });
        assert_eq!(text, "#1 abandoned\n#1 CANCELED\n\n#2 failed before it started\n#2 ERROR: boom");
    }

    #[test]
    fn hidden_tasks_send_nothing() {
        let text = plain(|_| {
            let task = Task::hidden();
            task.start();
            task.log(Stream::Stdout, b"x\n");
            task.finish();
        });
        assert_eq!(text, "");
    }
}
