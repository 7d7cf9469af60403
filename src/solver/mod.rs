//! Schedules a [`Graph`]. One coordinator (the calling thread) owns all mutable state: the
//! ready queue, the results, the count of unfinished inputs. Workers (`--jobs` threads) only
//! compute a vertex's cache key, look it up, run the op on a miss, and send a [`Done`] back.
//!
//! Invariants: a vertex runs at most once per solve (identical vertices were merged when the
//! graph was built); a vertex starts only when all its inputs are done; after the first failure
//! nothing new starts, running ops see the cancel flag, and the solve returns that first error.
//! Every state change is reported on the vertex's `progress` task, whose id the progress sender
//! gives the graph when the solve announces it.

pub(crate) mod cache_key;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use crate::graph::{CopyAction, FileAction, Graph, Op, VertexId};
use crate::oci::Digest;
use crate::ops::lazy::materialize;
use crate::ops::{self, Environment, OpError, Output, file::SelectionMemo};
use crate::progress::{Definition, GraphTasks, Sender, Stream, Task};
use crate::store::{CacheKey, PendingRow, RecordRow, StoreError, now};

/// Which vertices must not be taken from the cache.
#[derive(Debug, Clone, Default)]
pub enum NoCache {
    #[default]
    None,
    All,
    /// `--no-cache-filter`: these stages (names or indexes as written).
    Stages(HashSet<String>),
}

pub(crate) struct SolveOptions {
    pub jobs: usize,
    pub no_cache: NoCache,
    /// Log, under each step that misses, which cache input changed since its last record.
    pub explain_misses: bool,
    /// The targets' images are exported with gzip at the default level: their layers are
    /// compressed as they are made (`ops::layer`'s one pass), not read again by the export.
    pub gzip_image_layers: bool,
}

/// The failure of one vertex.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub(crate) struct SolveError {
    pub vertex: Option<VertexId>,
    #[source]
    pub error: OpError,
}

#[derive(Debug, Default)]
pub(crate) struct Solved {
    pub outputs: HashMap<VertexId, Output>,
    pub keys: HashMap<VertexId, CacheKey>,
    pub cached: HashSet<VertexId>,
}

struct Job {
    vertex: VertexId,
    inputs: Vec<(String, Output)>,
}

struct Done {
    vertex: VertexId,
    result: Result<(CacheKey, Output, bool), OpError>,
}

pub(crate) struct Solver<'a> {
    /// What the ops need, passed through (`resources.store` is the solver's too: cache records;
    /// `resources.imported` the records of `--cache-from`, consulted when the store misses).
    pub resources: ops::Resources<'a>,
    pub progress: Sender,
    pub cancel: Arc<AtomicBool>,
    pub options: SolveOptions,
}

/// Runs one op, turning a panic into that op's failure: the worker lives on and the coordinator
/// gets its [`Done`], so a bug fails the build with a message instead of hanging it.
fn caught<T>(op: impl FnOnce() -> Result<T, OpError>) -> Result<T, OpError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(op)).unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|text| text.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_string());
        Err(OpError::Panicked(message))
    })
}

impl Solver<'_> {
    pub(crate) fn solve(&self, graph: &Graph, targets: &[VertexId]) -> Result<Solved, SolveError> {
        let needed = graph.reachable(targets);
        let needed_set: HashSet<VertexId> = needed.iter().copied().collect();
        let tasks = self.progress.define_graph(graph.vertices.len(), definitions(graph, &needed));
        let mut waiting: HashMap<VertexId, usize> = HashMap::new();
        let mut dependents: HashMap<VertexId, Vec<VertexId>> = HashMap::new();
        let mut ready = VecDeque::new();
        for &id in &needed {
            let inputs: HashSet<VertexId> = graph.vertices[id].inputs.iter().copied().collect();
            for input in &inputs {
                dependents.entry(*input).or_default().push(id);
            }
            if inputs.is_empty() {
                ready.push_back(id);
            } else {
                waiting.insert(id, inputs.len());
            }
        }
        let selections = SelectionMemo::default();
        let context_copies = context_copies(graph, &needed);
        let fresh_mounts = crate::store::cache_mount::FreshMounts::default();
        let image_chain = if self.options.gzip_image_layers { graph.image_chain(targets) } else { vec![false; graph.vertices.len()] };
        let (job_sender, job_receiver) = mpsc::channel::<Job>();
        let job_receiver = Mutex::new(job_receiver);
        let (done_sender, done_receiver) = mpsc::channel::<Done>();
        let mut solved = Solved::default();
        let mut first_error: Option<SolveError> = None;
        // Rows of the snapshots the ops make are written by a thread of their own once the files
        // are synced, off the steps' path (`store::durable_rows`).
        let store = self.resources.store;
        store.defer_durable_rows();
        std::thread::scope(|scope| {
            let row_writer = std::thread::Builder::new().name("durable-rows".into()).spawn_scoped(scope, || store.write_durable_rows());
            for _ in 0..self.options.jobs.max(1) {
                let done_sender = done_sender.clone();
                let job_receiver = &job_receiver;
                let selections = &selections;
                let fresh_mounts = &fresh_mounts;
                let context_copies = &context_copies;
                let tasks = &tasks;
                let image_chain = &image_chain;
                scope.spawn(move || {
                    loop {
                        let job = match job_receiver.lock() {
                            Ok(receiver) => receiver.recv(),
                            Err(_) => break,
                        };
                        let Ok(job) = job else { break };
                        let copies = context_copies.get(&job.vertex).map_or(&[][..], Vec::as_slice);
                        let compress_layer = image_chain[job.vertex];
                        let result = caught(|| {
                            self.process(graph, tasks, job.vertex, &job.inputs, selections, fresh_mounts, copies, compress_layer)
                        });
                        if done_sender.send(Done { vertex: job.vertex, result }).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(done_sender);
            let mut running = 0usize;
            loop {
                while first_error.is_none() {
                    let Some(id) = ready.pop_front() else { break };
                    let inputs = graph.vertices[id]
                        .inputs
                        .iter()
                        .map(|input| (solved.keys[input].to_string(), solved.outputs[input].clone()))
                        .collect();
                    if job_sender.send(Job { vertex: id, inputs }).is_ok() {
                        running += 1;
                    }
                }
                if running == 0 {
                    break;
                }
                let Ok(done) = done_receiver.recv() else { break };
                running -= 1;
                match done.result {
                    Ok((key, output, cached)) => {
                        solved.keys.insert(done.vertex, key);
                        solved.outputs.insert(done.vertex, output);
                        if cached {
                            solved.cached.insert(done.vertex);
                        }
                        for dependent in dependents.get(&done.vertex).into_iter().flatten() {
                            if !needed_set.contains(dependent) {
                                continue;
                            }
                            if let Some(count) = waiting.get_mut(dependent) {
                                *count -= 1;
                                if *count == 0 {
                                    waiting.remove(dependent);
                                    ready.push_back(*dependent);
                                }
                            }
                        }
                    }
                    Err(OpError::Canceled) => {}
                    Err(error) => {
                        if first_error.is_none() {
                            self.cancel.store(true, Ordering::SeqCst);
                            first_error = Some(SolveError { vertex: Some(done.vertex), error });
                        }
                    }
                }
            }
            drop(job_sender);
            // Every op has returned: the writer writes what is left.
            store.close_durable_rows();
            let written = match row_writer {
                Ok(writer) => writer.join().unwrap_or_else(|_| {
                    Err(StoreError::Write {
                        path: store.root().display().to_string(),
                        source: std::io::Error::other("the row writer panicked"),
                    })
                }),
                // No writer: the rows waited for nothing; write them here.
                Err(_) => store.write_durable_rows(),
            };
            if let Err(error) = written
                && first_error.is_none()
            {
                first_error = Some(SolveError { vertex: None, error: OpError::Store(error) });
            }
        });
        // A 50,000-file context's selections take milliseconds to free: on a thread of their
        // own, while the build goes on to its export.
        let _ = std::thread::Builder::new().name("free-selections".into()).spawn(move || drop(selections));
        if let Some(error) = first_error {
            return Err(error);
        }
        if self.cancel.load(Ordering::SeqCst) {
            return Err(SolveError { vertex: None, error: OpError::Canceled });
        }
        Ok(solved)
    }

    fn skip_cache(&self, graph: &Graph, vertex: VertexId) -> bool {
        match &self.options.no_cache {
            NoCache::None => false,
            NoCache::All => true,
            NoCache::Stages(stages) => graph.vertices[vertex].stage.as_ref().is_some_and(|stage| stages.contains(stage)),
        }
    }

    /// Key, lookup, run: one vertex, on a worker thread, reported on its task (a vertex without
    /// a name is never shown).
    #[allow(clippy::too_many_arguments)]
    fn process(
        &self,
        graph: &Graph,
        tasks: &GraphTasks,
        id: VertexId,
        inputs: &[(String, Output)],
        selections: &SelectionMemo,
        fresh_mounts: &crate::store::cache_mount::FreshMounts,
        context_copies: &[CopyAction],
        compress_layer: bool,
    ) -> Result<(CacheKey, Output, bool), OpError> {
        let vertex = &graph.vertices[id];
        let task = if vertex.name.is_empty() { Task::hidden() } else { tasks.task(id, vertex.name.clone()) };
        let log = |stream: ops::Stream, bytes: &[u8]| {
            let stream = match stream {
                ops::Stream::Stdout => Stream::Stdout,
                ops::Stream::Stderr => Stream::Stderr,
            };
            task.log(stream, bytes);
        };
        let status = |status_id: &str, current: u64, total: Option<u64>, done: bool| task.status(status_id, current, total, done);
        let environment = Environment {
            store: self.resources.store,
            hash_cache: self.resources.hash_cache,
            cancel: &self.cancel,
            selections,
            secrets: self.resources.secrets,
            ssh: self.resources.ssh,
            registry: self.resources.registry,
            imported: self.resources.imported,
            status: &status,
            log: &log,
            fresh_mounts: self.skip_cache(graph, id).then_some(fresh_mounts),
            compress_layer,
            context_copies,
        };
        if self.cancel.load(Ordering::SeqCst) {
            return Err(OpError::Canceled);
        }
        // A registry base shows what it resolved to, cached or not, as BuildKit's FROM does
        // (`resolve REF@DIGEST done`): its vertex starts before the key is looked up.
        if let Op::Image(crate::graph::ImageSource::Registry { reference, manifest_digest }) = &vertex.op {
            task.start();
            task.status(&format!("resolve {reference}@{manifest_digest}"), 0, None, true);
        }
        let cache_inputs = match ops::cache_inputs(vertex, inputs, &environment) {
            Ok(cache_inputs) => cache_inputs,
            Err(error) => {
                task.fail(&error);
                return Err(error);
            }
        };
        let key = cache_key::compute(vertex.op.kind(), &cache_inputs);
        let recorded = is_recorded(&vertex.op);
        if recorded && !self.skip_cache(graph, id) {
            let record = self.resources.store.database().record(&key)?;
            if let Some(record) = record
                && let Some(layers) = ops::layer::load(self.resources.store, &record.layers)?
            {
                self.resources.store.database().touch_record(&key, now())?;
                task.cached();
                return Ok((key, Output::Layers(layers.into()), true));
            }
            if let Some((remote, layers)) = self.resources.imported.layers(self.resources.store, &key)? {
                // Recorded here too: once its layers are fetched, the next build hits locally.
                let now = now();
                self.resources.store.put_when_synced(vec![PendingRow::Record(RecordRow {
                    cache_key: key.clone(),
                    description: remote.description.clone(),
                    layers: layers.iter().map(|layer| layer.diff_id.clone()).collect(),
                    inputs: cache_inputs,
                    created_at: now,
                    last_used_at: now,
                })])?;
                task.cached();
                return Ok((key, Output::Layers(layers.into()), true));
            }
        }
        task.start();
        let result = self.run(vertex, &task, &key, cache_inputs, inputs, &environment);
        match &result {
            Ok(_) => task.finish(),
            Err(OpError::Canceled) => task.cancel(),
            Err(error) => task.fail(error),
        }
        result.map(|output| (key, output, false))
    }

    /// Runs a vertex that missed the cache, on its started task, and records its result.
    fn run(
        &self,
        vertex: &crate::graph::Vertex,
        task: &Task,
        key: &CacheKey,
        cache_inputs: Vec<(String, String)>,
        inputs: &[(String, Output)],
        environment: &Environment,
    ) -> Result<Output, OpError> {
        let recorded = is_recorded(&vertex.op);
        if recorded && self.options.explain_misses {
            for line in self.explain_miss(&vertex.name, &cache_inputs)? {
                task.log(Stream::Stderr, format!("{line}\n").as_bytes());
            }
        }
        // A step that runs needs the files of its inputs: layers of imported cache hits are
        // fetched now.
        let mut input_outputs: Vec<Output> = Vec::with_capacity(inputs.len());
        for (_, output) in inputs {
            input_outputs.push(match output {
                Output::Layers(layers) if layers.iter().any(ops::Layer::is_lazy) => {
                    match materialize(self.resources.store, layers, &self.cancel, environment.status) {
                        Ok(layers) => Output::Layers(layers.into()),
                        Err(ops::image::ImageError::Canceled) => return Err(OpError::Canceled),
                        Err(error) => return Err(OpError::from(error)),
                    }
                }
                output => output.clone(),
            });
        }
        let output = ops::run(vertex, &input_outputs, environment)?;
        if recorded {
            let now = now();
            self.resources.store.put_when_synced(vec![PendingRow::Record(RecordRow {
                cache_key: key.clone(),
                description: cache_key::description(&vertex.name),
                layers: output.layers().iter().map(|layer| layer.diff_id.clone()).collect(),
                inputs: cache_inputs,
                created_at: now,
                last_used_at: now,
            })])?;
        }
        Ok(output)
    }
}

/// For each context vertex of `needed`, the `COPY`s of `needed` that read from it: its load
/// selects their files (see `ops::context`).
fn context_copies(graph: &Graph, needed: &[VertexId]) -> HashMap<VertexId, Vec<CopyAction>> {
    let mut copies: HashMap<VertexId, Vec<CopyAction>> = HashMap::new();
    for &id in needed {
        let vertex = &graph.vertices[id];
        let Op::File { actions } = &vertex.op else { continue };
        for action in actions {
            if let FileAction::Copy(copy) = action
                && let Some(&source) = vertex.inputs.get(copy.source_input)
                && matches!(graph.vertices[source].op, Op::Context(_))
            {
                copies.entry(source).or_default().push(copy.clone());
            }
        }
    }
    copies
}

/// The vertices of `needed` that progress shows (those with a name), as BuildKit announces its
/// graph: each with its digest and the digests of its inputs. A nameless vertex (scratch, the
/// merge of `COPY --link`) is never shown, so a vertex's inputs go through it to the shown
/// vertices it stands on: every input listed is itself in the list.
fn definitions(graph: &Graph, needed: &[VertexId]) -> Vec<Definition> {
    fn shown_inputs(graph: &Graph, id: VertexId, inputs: &mut Vec<Digest>) {
        for &input in &graph.vertices[id].inputs {
            let vertex = &graph.vertices[input];
            if vertex.name.is_empty() {
                shown_inputs(graph, input, inputs);
            } else if !inputs.contains(&vertex.digest) {
                inputs.push(vertex.digest.clone());
            }
        }
    }
    needed
        .iter()
        .filter(|&&id| !graph.vertices[id].name.is_empty())
        .map(|&id| {
            let vertex = &graph.vertices[id];
            let mut inputs = Vec::new();
            shown_inputs(graph, id, &mut inputs);
            Definition { vertex: id, name: vertex.name.clone(), digest: vertex.digest.clone(), inputs }
        })
        .collect()
}

impl Solver<'_> {
    /// Why a step missed: its inputs against the newest record of the same step.
    fn explain_miss(&self, name: &str, inputs: &[(String, String)]) -> Result<Vec<String>, OpError> {
        let description = cache_key::description(name);
        let local = self.resources.store.database().records_described(&description)?;
        // Else the same step in an imported cache: why did this machine miss what CI made?
        let previous = match local.first() {
            Some(record) => &record.inputs,
            None => match self.resources.imported.records.values().find(|record| record.description == description) {
                Some(record) => &record.inputs,
                None => return Ok(vec![format!("cache miss: no earlier record of `{description}`")]),
            },
        };
        let reasons = cache_key::explain_miss(previous, inputs);
        if reasons.is_empty() {
            return Ok(vec!["cache miss: the earlier result is no longer in the store".into()]);
        }
        Ok(reasons.into_iter().map(|reason| format!("cache miss: {reason}")).collect())
    }
}

/// Whether an op's result is kept as a cache record (the ops that make layers).
pub(crate) fn is_recorded(op: &Op) -> bool {
    matches!(op, Op::Image(_) | Op::File { .. } | Op::Exec(_) | Op::Git(_))
}

impl From<crate::store::DatabaseError> for OpError {
    fn from(error: crate::store::DatabaseError) -> OpError {
        OpError::Store(error.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_op_becomes_its_failure_with_the_message() {
        let result: Result<(), OpError> = caught(|| panic!("index {} out of range", 7));
        assert!(matches!(&result, Err(OpError::Panicked(message)) if message == "index 7 out of range"), "{result:?}");
        let result: Result<(), OpError> = caught(|| panic!("static text"));
        assert!(matches!(&result, Err(OpError::Panicked(message)) if message == "static text"), "{result:?}");
        assert_eq!(result.unwrap_err().to_string(), "internal error: static text");
    }

    #[test]
    fn an_op_that_returns_is_passed_through() {
        assert!(matches!(caught(|| Ok::<_, OpError>(5)), Ok(5)));
        assert!(matches!(caught(|| Err::<(), _>(OpError::Canceled)), Err(OpError::Canceled)));
    }
}
