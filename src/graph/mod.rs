//! The build graph: plain data, no I/O, no knowledge of Dockerfiles.
//!
//! A [`Graph`] is a DAG of [`Vertex`]es. Each vertex applies one [`Op`] to the outputs of its
//! inputs. Its digest (the shared `oci::Digest`, a sha256) is its identity inside one run: it
//! hashes the op's canonical definition and the digests of the inputs, so two identical
//! vertices (say, two stages that `COPY` the same files onto `scratch`) are added once and run
//! once.
//!
//! The digest is *not* the cache key. Cache keys (see `solver::cache_key`) replace some inputs by
//! what they resolve to at run time, such as the content digest of the context files a `COPY`
//! uses. Vertices refer to each other by [`VertexId`], an index into [`Graph::vertices`]; inputs
//! always have smaller ids than the vertex that uses them, so the vector is in topological order.

mod op;

pub(crate) use op::{
    CacheSharing, Chmod, ContextSource, CopyAction, ExecMount, ExecMountKind, ExecOp, FileAction, GitSource, HttpSource, ImageSource,
    MkdirAction, MkfileAction, NetworkMode, Op, Owner,
};

use std::collections::HashMap;

use crate::oci::{Digest, DigestHasher};

/// Index of a vertex in its graph.
pub(crate) type VertexId = usize;

/// Where a vertex comes from in the Dockerfile, for error snippets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    pub start_line: usize,
    pub end_line: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct Vertex {
    pub op: Op,
    pub inputs: Vec<VertexId>,
    /// The progress name, e.g. `[stage-1 2/3] COPY a /b`.
    pub name: String,
    pub origin: Option<Origin>,
    /// The stage this vertex belongs to (for `--no-cache-filter`), if any.
    pub stage: Option<String>,
    pub digest: Digest,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct Graph {
    pub vertices: Vec<Vertex>,
    by_digest: HashMap<Digest, VertexId>,
}

impl Graph {
    pub(crate) fn new() -> Graph {
        Graph::default()
    }

    /// Adds a vertex, or returns the id of an identical one already in the graph.
    ///
    /// Identity is the op and the inputs, not the name: the first name wins, as BuildKit shows
    /// a deduplicated vertex once.
    pub(crate) fn add(
        &mut self,
        op: Op,
        inputs: Vec<VertexId>,
        name: impl Into<String>,
        origin: Option<Origin>,
        stage: Option<String>,
    ) -> VertexId {
        let mut hasher = DigestHasher::sha256();
        hasher.update(b"rbuild.vertex.v1\0");
        hasher.update(op.definition().as_bytes());
        for input in &inputs {
            hasher.update(b"\0input\0");
            hasher.update(self.vertices[*input].digest.as_str().as_bytes());
        }
        let digest = hasher.finish();
        if let Some(existing) = self.by_digest.get(&digest) {
            return *existing;
        }
        let id = self.vertices.len();
        self.vertices.push(Vertex { op, inputs, name: name.into(), origin, stage, digest: digest.clone() });
        self.by_digest.insert(digest, id);
        id
    }

    /// The vertices `targets` depend on (themselves included), in topological order.
    pub(crate) fn reachable(&self, targets: &[VertexId]) -> Vec<VertexId> {
        let reached = self.reach(targets, |vertex| &vertex.inputs);
        (0..self.vertices.len()).filter(|id| reached[*id]).collect()
    }

    /// Which vertices `targets` reach, following from each vertex the inputs `next` gives.
    fn reach(&self, targets: &[VertexId], next: impl Fn(&Vertex) -> &[VertexId]) -> Vec<bool> {
        let mut reached = vec![false; self.vertices.len()];
        let mut stack: Vec<VertexId> = targets.to_vec();
        while let Some(id) = stack.pop() {
            if reached[id] {
                continue;
            }
            reached[id] = true;
            stack.extend(next(&self.vertices[id]).iter().copied());
        }
        reached
    }

    /// The vertices whose new layer is one of the targets' image layers: a target, and from a
    /// RUN or file op its base (input 0), from a merge every input. A COPY's source, a mount or
    /// an image's other inputs give files, not layers.
    pub(crate) fn image_chain(&self, targets: &[VertexId]) -> Vec<bool> {
        self.reach(targets, |vertex| match &vertex.op {
            Op::Exec(_) | Op::File { .. } => &vertex.inputs[..vertex.inputs.len().min(1)],
            Op::Merge => &vertex.inputs,
            _ => &[],
        })
    }

    /// A stable text dump, one vertex a line, for snapshot tests and `rbuild debug graph`.
    pub(crate) fn dump(&self, targets: &[VertexId]) -> String {
        let mut out = String::new();
        for id in self.reachable(targets) {
            let vertex = &self.vertices[id];
            let inputs: Vec<String> = vertex.inputs.iter().map(|input| format!("v{input}")).collect();
            out.push_str(&format!(
                "v{id} [{}] {} <- [{}]\n    {}\n",
                vertex.name,
                vertex.op.kind(),
                inputs.join(", "),
                vertex.op.definition()
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_vertices_are_added_once() {
        let mut graph = Graph::new();
        let scratch = graph.add(Op::Scratch, vec![], "scratch", None, None);
        let again = graph.add(Op::Scratch, vec![], "another name", None, None);
        assert_eq!(scratch, again);
        let mkdir =
            Op::File { actions: vec![FileAction::Mkdir(MkdirAction { path: "/app".into(), mode: 0o755, owner: None, timestamp: None })] };
        let first = graph.add(mkdir.clone(), vec![scratch], "WORKDIR /app", None, None);
        let second = graph.add(mkdir, vec![scratch], "WORKDIR /app", None, None);
        assert_eq!(first, second);
        assert_eq!(graph.vertices.len(), 2);
        assert_eq!(graph.reachable(&[first]), vec![scratch, first]);
    }

    #[test]
    fn digest_depends_on_inputs() {
        let mut graph = Graph::new();
        let scratch = graph.add(Op::Scratch, vec![], "scratch", None, None);
        let image = graph.add(
            Op::Image(ImageSource::OciLayout { path: "/x".into(), manifest_digest: Digest::sha256_of(b"m"), reference: "x".into() }),
            vec![],
            "image",
            None,
            None,
        );
        let op = Op::Merge;
        let a = graph.add(op.clone(), vec![scratch, image], "merge", None, None);
        let b = graph.add(op, vec![image, scratch], "merge", None, None);
        assert_ne!(a, b);
    }

    /// A file op's base is in the chain, what it copies from is not; a merge brings all.
    #[test]
    fn the_image_chain_follows_bases_not_sources() {
        let mut graph = Graph::new();
        let mkdir = |path: &str| Op::File {
            actions: vec![FileAction::Mkdir(MkdirAction { path: path.into(), mode: 0o755, owner: None, timestamp: None })],
        };
        let scratch = graph.add(Op::Scratch, vec![], "scratch", None, None);
        let other_stage = graph.add(mkdir("/other"), vec![scratch], "other", None, None);
        let base = graph.add(mkdir("/base"), vec![scratch], "base", None, None);
        let copy = graph.add(mkdir("/copy"), vec![base, other_stage], "COPY --from=other", None, None);
        let linked = graph.add(mkdir("/linked"), vec![scratch], "COPY --link", None, None);
        let merged = graph.add(Op::Merge, vec![copy, linked], "merge", None, None);
        let chain = graph.image_chain(&[merged]);
        let in_chain: Vec<VertexId> = (0..graph.vertices.len()).filter(|id| chain[*id]).collect();
        assert_eq!(in_chain, vec![scratch, base, copy, linked, merged]);
        assert!(!chain[other_stage]);
    }
}
